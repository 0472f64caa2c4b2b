"""Progress measures of Nanda et al. (2023, section 5) and Furuta et al. (2024), as pure functions.

The training loop calls :func:`progress_measures` every ``train.measure_every`` epochs (model in eval mode,
under ``torch.no_grad()``) and stores every returned key as a metric (names in :mod:`grokscope.measures.names`).
Formulas, thresholds and the choices for the paper's ambiguities (A1-A6) are in ``docs/measures.md``. The grid
helpers are in :mod:`grokscope.measures.grid`, the key-frequency rules in :mod:`grokscope.measures.keys`.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grokscope.measures import names
from grokscope.measures.bases import (
    GroupBasis,
    checked_group_keys,
    group_component_norms,
    group_frequency_norms,
    group_restricted_excluded,
    group_rows,
    is_identity,
    task_basis,
)
from grokscope.measures.extra import extra_measures
from grokscope.measures.fourier import component_norms, frequency_norms
from grokscope.measures.grid import (
    MeasureError,
    check_task,
    cross_entropy,
    grid_order,
    grid_rows,
    logit_table,
    neuron_logit_map,
    number_embedding,
    on_cpu,
)
from grokscope.measures.keys import (
    checked_key_set,
    key_frequencies,
    key_frequencies_from_logits,
    key_frequencies_from_norms,
    key_frequencies_online,
)
from grokscope.models import Model
from grokscope.models.forward import choose_forward
from grokscope.tasks import task_to

if TYPE_CHECKING:
    import pandas

__all__ = [
    "FFS_ETA", "ModelSource", "ffs_fcr", "ffs_fcr_from_norms", "fixed_key_measures", "gini", "label_wave_fit",
    "logit_measures",
    "measure_basis", "measure_basis_label", "progress_measures", "restricted_excluded", "sum_sq_weights",
]

#: FFS threshold: a frequency counts as "used" when its W_E norm exceeds FFS_ETA * the largest one.
FFS_ETA = 0.25


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
    i = torch.arange(1, n + 1, dtype=torch.float64, device=c.device)
    return float(2.0 * (i * c).sum() / (n * total) - (n + 1) / n)


def sum_sq_weights(model: Model) -> float:
    """Sum over every parameter of its squared entries (W_pos, biases and the "=" row of W_E included)."""
    # numpy's pairwise sum: the same bits whatever torch's thread count (torch splits a large sum by thread)
    with torch.no_grad():
        return float(sum(float(np.sum(w.detach().to(torch.float64).numpy() ** 2)) for w in model.parameters()))


def ffs_fcr_from_norms(c: Tensor, s: Tensor, eta: float = FFS_ETA) -> tuple[float, float]:
    """FFS and FCR from per-frequency cos and sin norms c, s [K] (in any basis): with n_k = sqrt(c_k^2 + s_k^2) and
    the used set U = {k : n_k > eta * max_j n_j}, FFS = |U| / K and FCR = mean over k in U of min(c_k, s_k) /
    max(c_k, s_k) (averaging over U only, so frequencies at the numerical noise floor do not add random ratios).
    All-zero norms give (0, nan)."""
    n = torch.sqrt(c**2 + s**2)
    if n.numel() == 0 or float(n.max()) <= 0:
        return 0.0, float("nan")
    used = n > eta * n.max()
    ratio = torch.minimum(c, s)[used] / torch.maximum(c, s)[used]
    return float(used.to(torch.float64).mean()), float(ratio.mean())


def ffs_fcr(w_e: Tensor, eta: float = FFS_ETA) -> tuple[float, float]:
    """Reconstructed (Furuta-style) Fourier Frequency Sparsity and Fourier Coefficient Ratio of ``W_E[:p]``
    [p, d_model]: :func:`ffs_fcr_from_norms` of c_k = ||(F W_E)_{cos k}||, s_k = ||(F W_E)_{sin k}|| (norms over
    d_model), k = 1..(p-1)/2."""
    comps = component_norms(w_e, dim=0)
    return ffs_fcr_from_norms(comps[1::2], comps[2::2], eta)


# ----------------------------------------------------------------------------- restricted / excluded


def _label_design(p: int, freqs: Iterable[int], device: torch.device | None = None) -> Tensor:
    """[p, 1 + 2|K|]: columns 1, cos(w_k s), sin(w_k s) for each k, evaluated at labels s = 0..p-1."""
    s = torch.arange(p, dtype=torch.float64, device=device)
    cols = [torch.ones(p, dtype=torch.float64, device=device)]
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
        sums = torch.zeros(p, table.shape[1], dtype=torch.float64, device=table.device).index_add_(0, labels, table)
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
    x = _label_design(p, freqs, table.device)  # [p, 1+2K]
    counts, sums_ = sums if sums is not None else _label_sums(table, labels, p)
    gram = x.T @ (counts[:, None] * x)
    beta = torch.linalg.solve(gram, x.T @ sums_)  # [1+2K, p]
    const = x[:, :1] @ beta[:1]
    key = x[:, 1:] @ beta[1:]
    return const, key


def _per_label_scores(rows: Tensor, counts: Tensor) -> tuple[float, float]:
    """CE and accuracy of a table whose row for every input with label s is ``rows[s]`` ([p, p]), weighted by
    the label counts [p]: the same numbers as scoring the expanded [p*p, p] table, for 1/p of the work."""
    s = torch.arange(rows.shape[0], device=rows.device)
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
    out[names.RESTRICTED_LOSS], out[names.RESTRICTED_ACC] = _per_label_scores(const + key, sums[0])
    tr_labels = labels[train_rows]
    tr_table = table[train_rows]
    out[names.EXCLUDED_LOSS], out[names.EXCLUDED_ACC] = cross_entropy(tr_table - key[tr_labels], tr_labels)
    if per_frequency:
        for k in freqs:
            _, key_k = label_wave_fit(table, labels, p, [k], sums=sums)
            out[names.excluded_loss_k(k)], _ = cross_entropy(tr_table - key_k[tr_labels], tr_labels)
    return out


# ----------------------------------------------------------------------------- the task's basis

#: The basis found for each task (and asked-for name), so the training loop detects it once per task.
_BASES: weakref.WeakKeyDictionary[Any, dict[str | None, GroupBasis | None]] = weakref.WeakKeyDictionary()


def measure_basis(task: Any, basis: str | GroupBasis | None = None) -> GroupBasis | None:
    """The group basis the progress measures of ``task`` use: the task's own (:func:`~grokscope.measures.task_basis`),
    a named one (``"additive"`` or ``"dlog"``), or a given :class:`GroupBasis`. ``None`` when they run in the plain
    additive basis of the tokens (a+b, a-b: a and the answer not relabelled, and the measures never read b_order;
    a task without a group: the tokens' order), which is exactly the code path of the additive measures.
    Found once per task (cached on the task object)."""
    if isinstance(basis, GroupBasis):
        return None if _plain(basis, getattr(task, "p", -1)) else basis
    if getattr(getattr(task, "config", None), "kind", None) != "modular" or not hasattr(task, "pair_index"):
        return None  # check_task names the problem
    try:
        cache = _BASES.setdefault(task, {})
    except TypeError:  # a task that cannot be weakly referenced: detect every time
        cache = {}
    if basis not in cache:
        found, _ = task_basis(task, basis)
        cache[basis] = None if found is None or _plain(found, task.p) else found
    return cache[basis]


def measure_basis_label(task: Any, basis: str | GroupBasis | None = None) -> str:
    """The basis of :func:`measure_basis` in words, for a run's meta: ``"additive"`` (the plain measures),
    ``"dlog (g=5, n=52)"`` and so on; the one-line reason when the task has none the measures can take."""
    try:
        chosen = measure_basis(task, basis)
    except MeasureError as e:
        return f"none: {e}"
    if chosen is None:
        return "additive"
    details = [f"g={chosen.generator}"] if chosen.generator is not None else []
    details += [f"shift={chosen.shift}"] if chosen.shift else []
    return f"{chosen.name} ({', '.join([*details, f'n={chosen.n}'])})"


def _plain(basis: GroupBasis, p: int) -> bool:
    """Whether the measures in ``basis`` are the additive ones over Z_p: they read W_E[a_order], W_L[:, c_order] and
    the answers' labels, never b_order, so a-b (b relabelled by -b) is measured exactly as today."""
    ident = torch.arange(p)
    return is_identity(basis, p) or (basis.name == "additive" and basis.n == p and torch.equal(basis.a_order, ident)
                                     and torch.equal(basis.c_order, ident))


def _group_measures(model: Model, task: Any, basis: GroupBasis, key_freqs: Iterable[int] | None,
                    logits: Tensor | None, rule: str) -> dict[str, float]:
    """:func:`progress_measures` read through ``basis`` (over Z_n, frequencies 1..n//2): W_E[a_order] [n, d_model],
    W_L[:, c_order] [d_mlp, n] and the logits of the group inputs on the group outputs [n*n, n]. The inputs and
    outputs outside the group (a = 0, b = 0 and the answer -c in the discrete-log basis) are left out; the
    excluded loss is over the training rows inside the group."""
    p, n = task.p, basis.n
    w_l = neuron_logit_map(model, p)[:, basis.c_order]
    w_e = number_embedding(model, p)[basis.a_order]
    l_norms = group_frequency_norms(w_l, dim=1)
    if key_freqs is not None:
        freqs = checked_group_keys(key_freqs, n)
    elif rule == "W_L_dft":
        freqs = key_frequencies_from_norms(l_norms)
    elif rule == "W_L_online":
        freqs = key_frequencies_online(l_norms)
    else:
        raise MeasureError(f"in the {basis.name} basis the measures take key rule W_L_dft or W_L_online, got {rule!r}")
    rows, labels, train = group_rows(task, basis)
    if logits is None:
        logits = choose_forward(model, task).fn(task.tokens)
    if logits.shape[0] != task.tokens.shape[0] or logits.shape[1] < p:
        raise MeasureError(
            f"logits must be [{task.tokens.shape[0]}, {p}] in task.tokens order, got {tuple(logits.shape)}")
    table = logits.detach()[:, :p].to(torch.float64)[rows][:, basis.c_order]
    out = group_restricted_excluded(table, labels, train, n, freqs)
    out[names.GINI_W_E] = gini(group_frequency_norms(w_e, dim=0))
    out[names.GINI_W_L] = gini(l_norms)
    out[names.SUM_SQ_WEIGHTS] = sum_sq_weights(model)
    comps, m = group_component_norms(w_e, dim=0), (n - 1) // 2  # cos/sin pairs; an even n's Nyquist has no sine
    out[names.FFS], out[names.FCR] = ffs_fcr_from_norms(comps[1 : 2 * m + 1 : 2], comps[2 : 2 * m + 1 : 2])
    out[names.N_KEY_FREQS] = float(len(freqs))
    out[names.KEY_FREQS_FIXED] = 1.0 if key_freqs is not None else 0.0
    return out


# ----------------------------------------------------------------------------- the integration point


def progress_measures(
    model: Model,
    task: Any,
    key_freqs: Iterable[int] | None = None,
    logits: Tensor | None = None,
    *,
    rule: str = "W_L_online",
    basis: str | GroupBasis | None = None,
    extra: bool = True,
) -> dict[str, float]:
    """All progress measures of one model state, as ``{snake_case_name: float}``.

    ``model``: a :class:`~grokscope.models.Transformer` or :class:`~grokscope.models.MLPModel` (call it in eval
    mode; this function runs under ``no_grad``). ``task``: a modular task (:class:`MeasureError`, a ValueError,
    otherwise). ``key_freqs``: fixed key frequencies; ``None`` computes them from the current weights by ``rule``
    (default ``W_L_online``: no forward pass needed). ``logits``: the model's [N, p] output on ``task.tokens`` if
    the caller already has it (saves the one forward pass). ``basis``: the task's own group basis by default
    (:func:`measure_basis`; a+b and a-b: the plain additive measures over the full p*p grid, odd p; a*b, a/b,
    ab+a+b: the discrete-log basis over Z_{p-1}, the zero row and column left out), or ``"additive"``/``"dlog"``
    or a :class:`GroupBasis`; frequencies are then those of that basis's Z_n (1..n//2).

    Returned keys (stable, :mod:`~grokscope.measures.names`): restricted_loss, restricted_acc (all p*p inputs);
    excluded_loss, excluded_acc (train rows); excluded_loss_k{K} for each key k (train rows); gini_W_E,
    gini_W_L; sum_sq_weights; ffs, fcr; n_key_freqs; key_freqs_fixed (1.0 if ``key_freqs`` was given, else 0.0);
    with ``extra`` (default) also act_sparsity, abs_weight_entropy, weight_entropy_normalised and logit_efficiency
    (:func:`~grokscope.measures.extra.extra_measures`; one more hooked forward pass).
    """
    chosen = measure_basis(task, basis)
    if chosen is not None:
        model, task, logits = on_cpu(model, task, logits)
        with torch.no_grad():
            if extra and logits is None:  # the one forward pass the measures would make, shared with the extras
                logits = choose_forward(model, task).fn(task.tokens)
            out = _group_measures(model, task, chosen, key_freqs, logits, rule)
            return _with_extra(out, model, task, logits, extra)
    p = check_task(task)
    model, task, logits = on_cpu(model, task, logits)  # a model on a device: measured through a CPU copy
    with torch.no_grad():
        if extra and logits is None:
            logits = choose_forward(model, task).fn(task.tokens)
        given = key_freqs is not None
        w_l = neuron_logit_map(model, p)
        if key_freqs is not None:
            freqs = checked_key_set(key_freqs, p)
        elif rule == "W_L_dft":
            freqs = key_frequencies_from_norms(frequency_norms(w_l, dim=1))
        elif rule == "W_L_online":
            freqs = key_frequencies_online(frequency_norms(w_l, dim=1))
        else:  # every rule answers in 1..(p-1)/2
            freqs = key_frequencies(model, task, rule)
        table = logit_table(model, task, logits)
        labels = task.labels[grid_order(task)]
        out = restricted_excluded(table, labels, grid_rows(task, task.train_idx), p, freqs)
        w_e = number_embedding(model, p)
        out[names.GINI_W_E] = gini(frequency_norms(w_e, dim=0))
        out[names.GINI_W_L] = gini(frequency_norms(w_l, dim=1))
        out[names.SUM_SQ_WEIGHTS] = sum_sq_weights(model)
        out[names.FFS], out[names.FCR] = ffs_fcr(w_e)
        out[names.N_KEY_FREQS] = float(len(freqs))
        out[names.KEY_FREQS_FIXED] = 1.0 if given else 0.0
        return _with_extra(out, model, task, logits, extra)


def logit_measures(logits: Tensor, task: Any, key_freqs: Iterable[int] | None = None, *,
                   basis: str | GroupBasis | None = None) -> dict[str, float]:
    """The progress measures that read logits only, so they apply to any model (your own module, whose weights have
    no TransformerLens names): restricted_loss, restricted_acc, excluded_loss, excluded_acc, excluded_loss_k{K},
    n_key_freqs and key_freqs_fixed, in the basis :func:`progress_measures` reads the task in. ``logits``: the
    model's [N, >= p] output on ``task.tokens``. ``key_freqs``: fixed keys; None takes them from the logits'
    spectrum (the ``logits_dft`` rule: the weights' rules need W_L)."""
    chosen = measure_basis(task, basis)
    p = task.p if chosen is not None else check_task(task)
    if logits.shape[0] != task.tokens.shape[0] or logits.shape[1] < p:
        raise MeasureError(f"logits must be [{task.tokens.shape[0]}, {p}] in task.tokens order, got "
                           f"{tuple(logits.shape)}")
    logits = logits.detach()[:, :p].to("cpu", torch.float64)  # [N, p]; the measures' float64 on the CPU
    task = task_to(task, "cpu")
    if chosen is not None:
        rows, labels, train = group_rows(task, chosen)
        table, n = logits[rows][:, chosen.c_order], chosen.n  # [n*n, n]
        freqs = (checked_group_keys(key_freqs, n) if key_freqs is not None
                 else key_frequencies_from_norms(group_frequency_norms(table, dim=1)))
        out = group_restricted_excluded(table, labels, train, n, freqs)
    else:
        table = logits[grid_order(task)]  # [p*p, p] in grid order
        freqs = checked_key_set(key_freqs, p) if key_freqs is not None else key_frequencies_from_logits(table)
        out = restricted_excluded(table, task.labels[grid_order(task)], grid_rows(task, task.train_idx), p, freqs)
    out[names.N_KEY_FREQS] = float(len(freqs))
    out[names.KEY_FREQS_FIXED] = 1.0 if key_freqs is not None else 0.0
    return out


def _with_extra(out: dict[str, float], model: Model, task: Any, logits: Tensor | None, extra: bool) -> dict[str, float]:
    """``out`` with the :func:`~grokscope.measures.extra.extra_measures` added when ``extra`` (``logits`` given)."""
    if extra and logits is not None:
        out.update(extra_measures(model, task, logits, out[names.SUM_SQ_WEIGHTS]))
    return out


ModelSource = Model | Callable[[], Model]


def fixed_key_measures(
    checkpoints: Iterable[tuple[int, ModelSource]],
    task: Any,
    key_freqs: Iterable[int] | None = None,
    *,
    rule: str = "W_L_dft",
    suffix: str = names.FIXED_SUFFIX,
    final: ModelSource | None = None,
    basis: str | GroupBasis | None = None,
) -> pandas.DataFrame:
    """Second pass: the key-frequency-dependent measures of every checkpoint with ONE key set.

    ``checkpoints``: (step, model) pairs, where a model may also be a zero-argument callable returning one
    (so a caller can load checkpoints lazily). ``key_freqs``: the fixed set; ``None`` takes it from the
    final checkpoint (``final`` if given, else the largest step) by ``rule``. Returns a DataFrame indexed by
    ``step`` with columns restricted_loss, restricted_acc, excluded_loss, excluded_acc, excluded_loss_k{K}
    each followed by ``suffix``; ``df.attrs`` holds ``key_frequencies``, ``key_freq_rule`` and ``basis`` (its
    name). ``basis``: as in :func:`progress_measures` (the task's own by default; frequencies over its Z_n).
    """
    import pandas as pd

    chosen = measure_basis(task, basis)
    if chosen is None:
        check_task(task)
    items = sorted(checkpoints, key=lambda item: item[0])
    if not items:
        raise MeasureError("no checkpoints to measure")

    def load(src: ModelSource) -> Model:
        # mypy would type src as a Module in the first branch (a callable may be a Module)
        return cast(Model, src) if isinstance(src, nn.Module) else src()

    if key_freqs is None:
        last = load(final if final is not None else items[-1][1])
        if chosen is None:
            key_freqs = key_frequencies(last, task, rule)
        else:
            last.eval()
            key_freqs = [int(k) for k in _nonzero_keys(progress_measures(last, task, rule=rule, basis=chosen))]
        used_rule = f"{rule} (final checkpoint)"
    else:
        used_rule = "given"
    freqs = sorted({int(k) for k in key_freqs})
    rows = []
    for step, src in items:
        measured = progress_measures(load(src), task, key_freqs=freqs, basis=basis if chosen is None else chosen,
                                     extra=False)
        rows.append({"step": int(step), **{k + suffix: v for k, v in measured.items() if names.is_key_dependent(k)}})
    df = pd.DataFrame(rows).set_index("step")
    df.attrs["key_frequencies"] = freqs
    df.attrs["key_freq_rule"] = used_rule
    df.attrs["basis"] = "additive" if chosen is None else chosen.name
    return df


def _nonzero_keys(measured: dict[str, float]) -> list[int]:
    """The key frequencies a measurement used, read back from its excluded_loss_k{K} names."""
    prefix = names.excluded_loss_k(0)[:-1]
    return sorted(int(k[len(prefix):]) for k in measured if k.startswith(prefix) and k[len(prefix):].isdigit())
