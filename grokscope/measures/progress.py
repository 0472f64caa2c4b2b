"""Progress measures of Nanda et al. (2023, section 5) and Furuta et al. (2024), as pure functions.

The training loop calls :func:`progress_measures` every ``train.measure_every`` epochs (model in eval mode,
under ``torch.no_grad()``) and stores every returned key as a metric. Formulas, thresholds and the choices
for the paper's ambiguities (A1-A6) are in ``docs/measures.md``; the constants below are the declared values.

Shapes: p is the modulus; N = p*p inputs in ``task.tokens`` order (row-major (a, b), a slow); logit tables
are [N, p] float64; ``W_E`` is [d_vocab, d_model] (only its first p rows, the number tokens, are used);
``W_L = W_out @ W_U[:, :p]`` is [d_mlp, p].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grokscope.measures.fourier import (
    component_norms,
    fourier_transform_2d,
    frequency_norms,
    n_frequencies,
)
from grokscope.models import Model, has_blocks, has_mlp

if TYPE_CHECKING:
    import pandas

    from grokscope.models.mlp import MLPWeights
    from grokscope.models.transformer import MLP

__all__ = [
    "FFS_ETA",
    "KEY_FREQ_RULES",
    "KEY_GAP_FLOOR",
    "KEY_GAP_RATIO",
    "MeasureError",
    "NEURON_FVE_THRESHOLD",
    "W_E_NORM_FRACTION",
    "block_fractions",
    "check_task",
    "cross_entropy",
    "ffs_fcr",
    "fixed_key_measures",
    "gini",
    "grid_order",
    "key_frequencies",
    "key_frequencies_from_logits",
    "key_frequencies_from_norms",
    "key_frequencies_online",
    "label_wave_fit",
    "logit_table",
    "mlp_activations",
    "neuron_energy",
    "neuron_frequency_fractions",
    "neuron_logit_map",
    "number_embedding",
    "post_hook_name",
    "progress_measures",
    "restricted_excluded",
    "sum_sq_weights",
]

# ----------------------------------------------------------------------------- declared thresholds

#: ``W_L_dft`` rule: the key set is the top-m frequencies by norm, m at the largest ratio between consecutive
#: sorted norms; accepted only if that ratio is at least KEY_GAP_RATIO (otherwise: no clear key frequency).
KEY_GAP_RATIO = 2.0
#: Norms below KEY_GAP_FLOOR * max are clamped to it first, so ratios inside numerical noise never win.
KEY_GAP_FLOOR = 1e-4
#: ``W_E_norm`` rule (TransformerLens demo): basis rows i > 0 of F @ W_E with norm > max / 4.
W_E_NORM_FRACTION = 0.25
#: ``neuron_cluster`` rule and the MLP analysis: a neuron belongs to frequency k when >= 85% of its
#: (mean-removed) variance over the p*p grid lies in the 3x3 block {0, 2k-1, 2k}^2 of its 2D DFT.
NEURON_FVE_THRESHOLD = 0.85
#: FFS threshold: a frequency counts as "used" when its W_E norm exceeds FFS_ETA * the largest one.
FFS_ETA = 0.25

#: ``W_L_online`` fallback: with no clear gap, the frequencies whose W_L energy (squared norm) is at least
#: ONLINE_ENERGY_FACTOR times the mean energy over all frequencies (emerging frequencies during training).
ONLINE_ENERGY_FACTOR = 2.0

KEY_FREQ_RULES = ("W_L_dft", "W_L_online", "W_E_norm", "neuron_cluster", "logits_dft")


class MeasureError(ValueError):
    """A model or task the measures cannot handle; the message is one line."""


# ----------------------------------------------------------------------------- inputs


def check_task(task: Any) -> int:
    """Return p if ``task`` is a modular task over the full p*p grid with odd p; raise :class:`MeasureError` otherwise."""
    cfg = getattr(task, "config", None)
    kind = getattr(cfg, "kind", None)
    if kind != "modular" or not hasattr(task, "is_full_grid"):
        raise MeasureError(f"progress measures need a modular task (task.kind='modular'), got kind {kind!r}")
    if not task.is_full_grid:
        raise MeasureError(
            f"progress measures need every one of the p*p pairs as an input; the formula "
            f"{getattr(cfg, 'formula', '?')!r} leaves some out (division by zero), so the Fourier projections are not defined"
        )
    p = task.p
    if p % 2 == 0:
        raise MeasureError(f"progress measures need an odd modulus p, got p={p}")
    return p


def grid_order(task: Any) -> Tensor:
    """Permutation taking task rows to grid rows: grid[i] = rows[perm[i]] with i = a*p + b."""
    perm = torch.empty_like(task.pair_index)
    perm[task.pair_index] = torch.arange(task.pair_index.shape[0])
    return perm


def _mlp_of(model: Model) -> MLP | MLPWeights:
    if has_blocks(model):
        return model.blocks[-1].mlp
    if has_mlp(model):
        return model.mlp
    raise MeasureError(f"{type(model).__name__} has no MLP (expected .blocks[i].mlp or .mlp)")


def post_hook_name(model: Model) -> str:
    """The hook name of the last MLP's activations (``hook_post``) of a transformer or an MLP model."""
    if has_blocks(model):
        return f"blocks.{len(model.blocks) - 1}.mlp.hook_post"
    return "mlp.hook_post"


def number_embedding(model: Model, p: int) -> Tensor:
    """W_E restricted to the number tokens 0..p-1: [p, d_model] float64 (detached)."""
    w_e = model.W_E  # a VectorMLP has none (AttributeError)
    assert isinstance(w_e, Tensor)
    return w_e.detach()[:p].to(torch.float64)


def neuron_logit_map(model: Model, p: int) -> Tensor:
    """W_L = W_out @ W_U[:, :p] (TransformerLens orientation, last layer's MLP): [d_mlp, p] float64.

    The "=" output column of a (p+1)-output head is dropped (ambiguity A5)."""
    w_out = _mlp_of(model).W_out.detach().to(torch.float64)
    w_u = model.W_U  # a VectorMLP has none (AttributeError)
    assert isinstance(w_u, Tensor)
    w_u = w_u.detach()[:, :p].to(torch.float64)
    return w_out @ w_u


def logit_table(model: Model, task: Any, logits: Tensor | None = None) -> Tensor:
    """Logits over every input in grid order (row a*p + b): [p*p, p] float64.

    ``logits`` (optional) is the model's output on ``task.tokens`` in that order, [N, >= p]; columns past p
    (a "=" output) are dropped. Without it, one forward pass over all inputs is run under ``no_grad``, through
    the fast path when it covers the model (the same function; what the training loop's measures read).
    """
    p = task.p
    if logits is None:
        from grokscope.models.fast import fast_forward

        with torch.no_grad():
            logits = (fast_forward(model, task) or model)(task.tokens)
    if logits.shape[0] != task.tokens.shape[0] or logits.shape[1] < p:
        raise MeasureError(f"logits must be [{task.tokens.shape[0]}, {p}] in task.tokens order, got {tuple(logits.shape)}")
    table = logits.detach()[:, :p].to(torch.float64)
    return table[grid_order(task)]


def mlp_activations(model: Model, task: Any) -> Tensor:
    """Last MLP layer's post-activations at the last position, grid order: [p*p, d_mlp] float64."""
    with torch.no_grad():
        _, cache = model.run_with_cache(task.tokens)
    acts = cache[post_hook_name(model)]
    if acts.dim() == 3:
        acts = acts[:, -1]
    return acts.detach().to(torch.float64)[grid_order(task)]


def cross_entropy(table: Tensor, labels: Tensor) -> tuple[float, float]:
    """Mean cross-entropy (float64 log-softmax) and accuracy of logits [n, p] against labels [n]."""
    if table.shape[0] == 0:
        return float("nan"), float("nan")
    table = table.detach()
    logp = F.log_softmax(table.to(torch.float64), dim=-1)
    loss = -logp.gather(1, labels[:, None]).mean()
    acc = (table.argmax(dim=-1) == labels).to(torch.float64).mean()
    return float(loss), float(acc)


# ----------------------------------------------------------------------------- Gini, norms, FFS/FCR


def gini(values: Tensor) -> float:
    """Gini coefficient (Hurley & Rickard 2009) of non-negative values (flattened).

    G = 2 * sum_i i * c_(i) / (N * sum c) - (N + 1) / N with c sorted ascending, i = 1..N.
    Constant -> 0; one-hot -> (N - 1) / N; all zeros -> 0.
    """
    c = values.detach().reshape(-1).to(torch.float64).abs().sort().values
    n, total = c.numel(), float(c.sum())
    if n == 0 or total == 0.0:
        return 0.0
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(2.0 * (i * c).sum() / (n * total) - (n + 1) / n)


def sum_sq_weights(model: Model) -> float:
    """Sum over every parameter of its squared entries (W_pos, biases and the "=" row of W_E included)."""
    # numpy's pairwise sum: the same bits whatever torch's thread count (torch splits a large sum by thread)
    with torch.no_grad():
        return float(sum(float(np.sum(w.detach().to(torch.float64).numpy() ** 2)) for w in model.parameters()))


def ffs_fcr(w_e: Tensor, eta: float = FFS_ETA) -> tuple[float, float]:
    """Reconstructed (Furuta-style) Fourier Frequency Sparsity and Fourier Coefficient Ratio of ``W_E[:p]`` [p, d_model].

    With c_k = ||(F W_E)_{cos k}||, s_k = ||(F W_E)_{sin k}|| (norms over d_model), n_k = sqrt(c_k^2 + s_k^2),
    K = (p-1)/2 and the used set U = {k : n_k > eta * max_j n_j}:
    FFS = |U| / K;  FCR = mean over k in U of min(c_k, s_k) / max(c_k, s_k)
    (averaging over U only, so frequencies at the numerical noise floor do not add random ratios).
    An all-zero W_E gives (0, nan).
    """
    comps = component_norms(w_e, dim=0)
    c, s = comps[1::2], comps[2::2]
    n = torch.sqrt(c**2 + s**2)
    if float(n.max()) <= 0:
        return 0.0, float("nan")
    used = n > eta * n.max()
    ffs = float(used.to(torch.float64).mean())
    ratio = torch.minimum(c, s)[used] / torch.maximum(c, s)[used]
    return ffs, float(ratio.mean())


# ----------------------------------------------------------------------------- key frequencies


def key_frequencies_from_norms(
    norms: Tensor, ratio: float = KEY_GAP_RATIO, floor: float = KEY_GAP_FLOOR
) -> list[int]:
    """The ``W_L_dft`` selection on per-frequency norms [(p-1)/2] (index 0 is frequency 1).

    Sort the norms descending (clamped below at ``floor * max``); let m be the position of the largest ratio
    n_(m) / n_(m+1) for m = 1..K-1 (the smallest m on ties). If that ratio is >= ``ratio`` the key set is the m
    largest frequencies, returned sorted ascending; otherwise there is no clear key set and ``[]`` is returned.
    """
    norms = norms.detach().to(torch.float64).reshape(-1)
    if norms.numel() < 2 or float(norms.max()) <= 0:
        return []
    clamped = norms.clamp_min(float(norms.max()) * floor)
    order = torch.argsort(-clamped, stable=True)
    sorted_n = clamped[order]
    ratios = sorted_n[:-1] / sorted_n[1:]
    m = int(torch.argmax(ratios))  # first maximum
    if float(ratios[m]) < ratio:
        return []
    return sorted(int(i) + 1 for i in order[: m + 1])


def _harmonic(k: int, p: int) -> int:
    """The frequency index (1..(p-1)/2) of 2k mod p: cos(2 w_k x) = cos(w_j x) with j = min(2k, p - 2k)."""
    return min(2 * k % p, p - 2 * k % p)


def key_frequencies_online(norms: Tensor, factor: float = ONLINE_ENERGY_FACTOR) -> list[int]:
    """The ``W_L_online`` selection on per-frequency norms [(p-1)/2]: the ``W_L_dft`` largest-gap set if there
    is a clear gap; otherwise the frequencies with norm^2 >= ``factor`` * mean(norm^2) (often [] early on)."""
    clear = key_frequencies_from_norms(norms)
    if clear:
        return clear
    energy = norms.detach().to(torch.float64).reshape(-1) ** 2
    if energy.numel() == 0 or float(energy.sum()) <= 0:
        return []
    return [int(i) + 1 for i in torch.nonzero(energy >= factor * energy.mean()).reshape(-1)]


def neuron_frequency_fractions(acts: Tensor, p: int, *, quadratic: bool = False) -> Tensor:
    """Fraction of each neuron's variance over the p*p grid explained by one frequency: [(p-1)/2, d_mlp].

    ``acts``: [p*p, d_mlp] (grid order) or [p, p, d_mlp]. The 2D DFT (F A F^T) of each neuron is taken, the
    (0, 0) component (its mean) dropped, and frac_k = energy in {0, 2k-1, 2k}^2 / total energy. That 3x3 block
    (the original code's rule, default) spans the polynomials of degree <= 1 in each of (cos, sin)(w_k a) and
    (cos, sin)(w_k b). ``quadratic=True`` also counts the squares cos^2, sin^2, cos*sin of w_k a and of w_k b,
    i.e. adds the 4 components (0, 2j-1), (0, 2j), (2j-1, 0), (2j, 0) of the harmonic j = 2k mod p: every
    polynomial of degree <= 2 in the four waves. A constant neuron gets 0.
    """
    return block_fractions(neuron_energy(acts, p), p, quadratic=quadratic)


def neuron_energy(acts: Tensor, p: int) -> Tensor:
    """Squared 2D-DFT coefficients of each neuron over the grid, mean component zeroed: [p, p, d_mlp]."""
    energy = fourier_transform_2d(acts.to(torch.float64).reshape(p, p, -1)) ** 2
    energy[0, 0] = 0.0
    return energy


def block_fractions(energy: Tensor, p: int, *, quadratic: bool) -> Tensor:
    """Per key frequency k, each neuron's share of its energy [p, p, d] (from :func:`neuron_energy`) in the 3x3
    block of (const, cos k, sin k) in both inputs (``quadratic``: plus the harmonic 2k on each input alone): [K, d]."""
    total = energy.sum(dim=(0, 1))  # [d]
    fracs = []
    for k in range(1, n_frequencies(p) + 1):
        idx = torch.tensor([0, 2 * k - 1, 2 * k])
        e = energy[idx][:, idx].sum(dim=(0, 1))
        if quadratic:
            j = _harmonic(k, p)
            if j != k:  # (j == k only for p = 3)
                hj = torch.tensor([2 * j - 1, 2 * j])
                e = e + energy[0, hj].sum(dim=0) + energy[hj, 0].sum(dim=0)
        fracs.append(e)
    block = torch.stack(fracs)  # [K, d]
    return torch.where(total > 0, block / total.clamp_min(1e-300), torch.zeros_like(block))


def key_frequencies(model: Model, task: Any | None = None, rule: str = "W_L_dft", *, p: int | None = None) -> list[int]:
    """Key frequencies of a model by a named rule (sorted ascending list of ints in 1..(p-1)/2).

    - ``"W_L_dft"`` (default): per-frequency norms of W_L along the output axis (F @ W_L^T, norm over neurons),
      selected by :func:`key_frequencies_from_norms` (largest-gap rule, ratio >= KEY_GAP_RATIO).
    - ``"W_L_online"`` (default during training): ``W_L_dft`` when its gap is clear, else the frequencies whose
      W_L energy is >= ONLINE_ENERGY_FACTOR x the mean energy (tracks frequencies while they emerge).
    - ``"W_E_norm"`` (TransformerLens demo): rows i > 0 of F @ W_E[:p] with norm > W_E_NORM_FRACTION * max_{i>0};
      k = ceil(i / 2).
    - ``"neuron_cluster"`` (original code): the distinct argmax frequencies of the neurons whose best 3x3-block
      fraction is >= NEURON_FVE_THRESHOLD; needs ``task`` (one forward pass over the grid).
    - ``"logits_dft"``: per-frequency norms of the logit table along the output axis c (norm over the p*p
      inputs), selected by the same largest-gap rule as ``W_L_dft``; needs ``task`` (one forward pass).
    """
    if p is None:
        if task is None:
            raise MeasureError("key_frequencies needs the task or p")
        p = task.p
    if rule == "W_L_dft":
        return key_frequencies_from_norms(frequency_norms(neuron_logit_map(model, p), dim=1))
    if rule == "W_L_online":
        return key_frequencies_online(frequency_norms(neuron_logit_map(model, p), dim=1))
    if rule == "W_E_norm":
        comps = component_norms(number_embedding(model, p), dim=0)[1:]
        if float(comps.max()) <= 0:
            return []
        keep = torch.nonzero(comps > W_E_NORM_FRACTION * comps.max()).reshape(-1) + 1
        return sorted({(int(i) + 1) // 2 for i in keep})
    if rule == "neuron_cluster":
        if task is None:
            raise MeasureError("the neuron_cluster rule needs the task (it runs the model over the grid)")
        check_task(task)
        fracs = neuron_frequency_fractions(mlp_activations(model, task), p)
        best, arg = fracs.max(dim=0)
        return sorted({int(k) + 1 for k in arg[best >= NEURON_FVE_THRESHOLD]})
    if rule == "logits_dft":
        if task is None:
            raise MeasureError("the logits_dft rule needs the task (it runs the model over the grid)")
        check_task(task)
        return key_frequencies_from_logits(logit_table(model, task))
    raise MeasureError(f"unknown key-frequency rule {rule!r}; known: {', '.join(KEY_FREQ_RULES)}")


def key_frequencies_from_logits(table: Tensor) -> list[int]:
    """The ``logits_dft`` selection on a logit table [n_inputs, p]: largest-gap rule on its per-frequency norms
    along the output axis."""
    return key_frequencies_from_norms(frequency_norms(table.to(torch.float64), dim=1))


# ----------------------------------------------------------------------------- restricted / excluded


def _label_design(p: int, freqs: Iterable[int]) -> Tensor:
    """[p, 1 + 2|K|]: columns 1, cos(w_k s), sin(w_k s) for each k, evaluated at labels s = 0..p-1."""
    s = torch.arange(p, dtype=torch.float64)
    cols = [torch.ones(p, dtype=torch.float64)]
    for k in freqs:
        cols += [torch.cos(2 * math.pi * k * s / p), torch.sin(2 * math.pi * k * s / p)]
    return torch.stack(cols, dim=1)


def _label_sums(table: Tensor, labels: Tensor, p: int) -> tuple[Tensor, Tensor]:
    """Per-label row counts [p] and row sums [p, p_out] of a table [n, p_out] (float64)."""
    counts = torch.bincount(labels, minlength=p)
    table = table.to(torch.float64)
    if bool((counts == counts[0]).all()) and int(counts[0]) > 0:  # uniform (a+b, a-b, ...): gather + reshape
        order = torch.argsort(labels, stable=True)
        sums = table[order].reshape(p, int(counts[0]), -1).sum(dim=1)
    else:
        sums = torch.zeros(p, table.shape[1], dtype=torch.float64).index_add_(0, labels, table)
    return counts.to(torch.float64), sums


def label_wave_fit(
    table: Tensor, labels: Tensor, p: int, freqs: Iterable[int], *, sums: tuple[Tensor, Tensor] | None = None
) -> tuple[Tensor, Tensor]:
    """Least-squares fit of every logit column on the waves of the correct answer over all p*p inputs.

    ``table`` [n, p] and ``labels`` [n] (the full grid). The regressors are 1, cos(w_k s(r)), sin(w_k s(r)) for
    k in ``freqs``, where s(r) is row r's label; for a+b these are exactly the paper's directions
    cos/sin(w_k(a+b)) and the fit is the orthogonal projection (every label occurs p times). Returns
    ``(const, key)``, each [p, p] and indexed by label: the fitted constant part and the fitted key-frequency
    part of the rows whose label is s. ``sums`` may pass precomputed ``_label_sums(table, labels, p)``.
    """
    freqs = list(freqs)
    x = _label_design(p, freqs)  # [p, 1+2K]
    counts, sums_ = sums if sums is not None else _label_sums(table, labels, p)
    gram = x.T @ (counts[:, None] * x)
    beta = torch.linalg.solve(gram, x.T @ sums_)  # [1+2K, p]
    const = x[:, :1] @ beta[:1]
    key = x[:, 1:] @ beta[1:]
    return const, key


def _per_label_scores(rows: Tensor, counts: Tensor) -> tuple[float, float]:
    """CE and accuracy of a table whose row for every input with label s is ``rows[s]`` ([p, p]), weighted by
    the label counts [p]: the same numbers as scoring the expanded [p*p, p] table, for 1/p of the work."""
    s = torch.arange(rows.shape[0])
    ce = -F.log_softmax(rows.to(torch.float64), dim=-1)[s, s]
    hit = (rows.argmax(dim=-1) == s).to(torch.float64)
    total = counts.sum()
    return float((counts * ce).sum() / total), float((counts * hit).sum() / total)


def restricted_excluded(
    table: Tensor, labels: Tensor, train_rows: Tensor, p: int, freqs: list[int], *, per_frequency: bool = True
) -> dict[str, float]:
    """Restricted and excluded loss/accuracy of a grid logit table [p*p, p] (labels [p*p], grid order).

    restricted = constant + key-frequency part of the fit (all p*p inputs);
    excluded = table - key-frequency part (training rows ``train_rows``, indices into the grid);
    per-frequency excluded loss removes one k at a time (fit on {1, cos k, sin k}).
    """
    sums = _label_sums(table, labels, p)
    const, key = label_wave_fit(table, labels, p, freqs, sums=sums)
    out: dict[str, float] = {}
    out["restricted_loss"], out["restricted_acc"] = _per_label_scores(const + key, sums[0])
    tr_labels = labels[train_rows]
    tr_table = table[train_rows]
    out["excluded_loss"], out["excluded_acc"] = cross_entropy(tr_table - key[tr_labels], tr_labels)
    if per_frequency:
        for k in freqs:
            _, key_k = label_wave_fit(table, labels, p, [k], sums=sums)
            out[f"excluded_loss_k{k}"], _ = cross_entropy(tr_table - key_k[tr_labels], tr_labels)
    return out


# ----------------------------------------------------------------------------- the integration point


def progress_measures(
    model: Model,
    task: Any,
    key_freqs: Iterable[int] | None = None,
    logits: Tensor | None = None,
    *,
    rule: str = "W_L_online",
) -> dict[str, float]:
    """All progress measures of one model state, as ``{snake_case_name: float}``.

    ``model``: a :class:`~grokscope.models.Transformer` or :class:`~grokscope.models.MLPModel` (call it in eval
    mode; this function runs under ``no_grad``). ``task``: a modular task over the full p*p grid
    (:class:`MeasureError`, a ValueError, otherwise). ``key_freqs``: fixed key frequencies; ``None`` computes
    them from the current weights by ``rule`` (default ``W_L_online``: no forward pass needed). ``logits``: the
    model's [N, p] output on ``task.tokens`` if the caller already has it (saves the one forward pass).

    Returned keys (stable): restricted_loss, restricted_acc (all p*p inputs);
    excluded_loss, excluded_acc (train rows); excluded_loss_k{K} for each key k (train rows); gini_W_E,
    gini_W_L; sum_sq_weights; ffs, fcr; n_key_freqs; key_freqs_fixed (1.0 if ``key_freqs`` was given, else 0.0).
    """
    p = check_task(task)
    with torch.no_grad():
        fixed = key_freqs is not None
        w_l = neuron_logit_map(model, p)
        if key_freqs is not None:
            freqs = sorted({int(k) for k in key_freqs})
        elif rule == "W_L_dft":
            freqs = key_frequencies_from_norms(frequency_norms(w_l, dim=1))
        elif rule == "W_L_online":
            freqs = key_frequencies_online(frequency_norms(w_l, dim=1))
        else:
            freqs = key_frequencies(model, task, rule)
        bad = [k for k in freqs if not 1 <= k <= n_frequencies(p)]
        if bad:
            raise MeasureError(f"key frequencies must be in 1..{n_frequencies(p)} for p={p}, got {bad}")
        table = logit_table(model, task, logits)
        grid = grid_order(task)
        labels = task.labels[grid]
        inv = torch.empty_like(grid)
        inv[grid] = torch.arange(grid.shape[0])
        train_rows = inv[task.train_idx]  # grid rows of the training examples

        out = restricted_excluded(table, labels, train_rows, p, freqs)
        w_e = number_embedding(model, p)
        out["gini_W_E"] = gini(frequency_norms(w_e, dim=0))
        out["gini_W_L"] = gini(frequency_norms(w_l, dim=1))
        out["sum_sq_weights"] = sum_sq_weights(model)
        out["ffs"], out["fcr"] = ffs_fcr(w_e)
        out["n_key_freqs"] = float(len(freqs))
        out["key_freqs_fixed"] = 1.0 if fixed else 0.0
    return out


ModelSource = Model | Callable[[], Model]


def fixed_key_measures(
    checkpoints: Iterable[tuple[int, ModelSource]],
    task: Any,
    key_freqs: Iterable[int] | None = None,
    *,
    rule: str = "W_L_dft",
    suffix: str = "_fixed",
    final: ModelSource | None = None,
) -> pandas.DataFrame:
    """Second pass: the key-frequency-dependent measures of every checkpoint with ONE key set.

    ``checkpoints``: (step, model) pairs, where a model may also be a zero-argument callable returning one
    (so a caller can load checkpoints lazily). ``key_freqs``: the fixed set; ``None`` takes it from the
    final checkpoint (``final`` if given, else the largest step) by ``rule``. Returns a DataFrame indexed by
    ``step`` with columns restricted_loss, restricted_acc, excluded_loss, excluded_acc, excluded_loss_k{K}
    each followed by ``suffix``; ``df.attrs`` holds ``key_frequencies`` and ``key_freq_rule``.
    """
    import pandas as pd

    check_task(task)
    items = sorted(checkpoints, key=lambda item: item[0])
    if not items:
        raise MeasureError("no checkpoints to measure")

    def load(src: ModelSource) -> Model:
        # mypy would type src as a Module in the first branch (a callable may be a Module)
        return cast(Model, src) if isinstance(src, nn.Module) else src()

    if key_freqs is None:
        key_freqs = key_frequencies(load(final if final is not None else items[-1][1]), task, rule)
        used_rule = f"{rule} (final checkpoint)"
    else:
        used_rule = "given"
    freqs = sorted({int(k) for k in key_freqs})
    rows = []
    for step, src in items:
        model = load(src)
        m = progress_measures(model, task, key_freqs=freqs)
        keep = {k: v for k, v in m.items() if k.startswith(("restricted_", "excluded_"))}
        rows.append({"step": int(step), **{k + suffix: v for k, v in keep.items()}})
    df = pd.DataFrame(rows).set_index("step")
    df.attrs["key_frequencies"] = freqs
    df.attrs["key_freq_rule"] = used_rule
    return df
