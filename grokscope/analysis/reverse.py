"""Reverse-engineering of one checkpoint (Nanda et al. 2023, section 4 and appendix C; PAIR star plots).

:func:`analyze_checkpoint` takes a model and a modular task over the full p*p grid and returns an
:class:`Analysis` dataclass (``to_dict()`` is JSON-safe; schema in ``docs/analysis-json.md``). No file I/O.

Shapes: p the modulus; N = p*p; "grid order" means row a*p + b. Logit tables are [N, p] float64;
neuron activations [N, d_mlp]; ``W_E[:p]`` [p, d_model]; ``W_L = W_out @ W_U[:, :p]`` [d_mlp, p].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
from torch import Tensor

from grokscope.measures import (
    KEY_FREQ_RULES,
    NEURON_FVE_THRESHOLD,
    MeasureError,
    block_fractions,
    check_task,
    checked_key_set,
    component_norms,
    cross_entropy,
    ffs_fcr,
    fourier_transform,
    fourier_transform_2d,
    frequency_norms,
    gini,
    grid_order,
    grid_rows,
    inverse_fourier_transform,
    key_frequencies,
    label_wave_fit,
    logit_table,
    mlp_activations,
    n_frequencies,
    names,
    neuron_energy,
    neuron_logit_map,
    number_embedding,
    post_hook_name,
    restricted_excluded,
    sum_sq_weights,
)
from grokscope.models import MLPModel, Model, VectorMLP, has_blocks

__all__ = [
    "AblationRow", "Analysis", "CHOICES", "HeadFit", "LogitFit", "NeuronStats", "SCHEMA_VERSION", "StarNeuron",
    "Table5Row", "analyze_checkpoint", "attention_fits", "block_mask_table", "json_safe", "logit_wave_fit",
    "neuron_polynomial_fits", "star_plot_data",
]

SCHEMA_VERSION = 1

#: How each ambiguity of the paper is resolved (docs/measures.md, "Ambiguities of the paper, and our choices");
#: written into every analysis.json.
CHOICES: dict[str, str] = {
    "A1": "restricted/excluded keep/remove 2 directions per key k, cos/sin(w_k c*) with c* the correct answer "
    "(= cos/sin(w_k(a+b)) for a+b), as in the original code; the ablation table also reports "
    "'keep key a+-b terms' (constant + the 2x2 cos/sin product block of each key k: the paper's 20 terms) and "
    "'keep key 3x3 blocks' (the 113^2-40 ablation)",
    "A2": "restricted loss/acc on all p^2 inputs; excluded loss/acc on train rows; projections fitted on all p^2 "
    "inputs (least squares on the answer's waves, an orthogonal projection for a+b); ablation rows report all "
    "p^2, train and test",
    "A3": "key frequencies by the W_L_dft largest-gap rule (ratio >= 2, floor 1e-4*max) unless given; analysis uses "
    "the analysed checkpoint; progress measures during training track them online by W_L_online (W_L_dft, else "
    "energy >= 2x the mean); the second pass fixes them from the final checkpoint by W_L_dft (columns suffixed "
    "_fixed)",
    "A4": "Gini over the (p-1)/2 per-frequency norms sqrt(cos^2+sin^2) (constant excluded), of F@W_E[:p] over "
    "d_model and of F@W_L^T over d_mlp; candidate frequencies 1..(p-1)/2 (all of them, unlike the code's 1..55)",
    "A5": "outputs restricted to the p number classes (a '=' output column is dropped); 'loss' means all p^2 "
    "inputs unless a name says train/test",
    "A6": "phase boundaries by the rule in grokscope.measures.phases (see docs/measures.md)",
}


# ----------------------------------------------------------------------------- result dataclasses


def json_safe(x: Any) -> Any:
    """JSON-safe copy: tensors to lists, non-finite floats to None, dict keys to str."""
    if isinstance(x, Tensor):
        return json_safe(x.tolist())
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    return x


class _Record:
    """``to_dict()``: the dataclass as JSON-safe nested dicts and lists."""

    def to_dict(self) -> dict[str, Any]:
        return json_safe(asdict(cast(Any, self)))


@dataclass(frozen=True)
class NeuronStats(_Record):
    """Per-neuron fraction of variance explained by a degree-2 polynomial of one frequency (3x3 DFT block)."""

    frequency: list[int]  # [d_mlp] argmax frequency of each neuron (1..(p-1)/2), by the 3x3-block fraction
    fve: list[float]  # [d_mlp] its 3x3-block fraction (the paper's code; used for clusters and the 85% count)
    fve_quadratic: list[float]  # [d_mlp] best fraction with the squares of the same frequency added (all
    # degree-2 polynomials of cos/sin(w_k a), cos/sin(w_k b)); >= fve
    threshold: float
    clusters: dict[int, int]  # frequency -> number of neurons with fve >= threshold
    n_unclustered: int
    n_explained: int  # fve >= threshold
    n_explained_quadratic: int  # fve_quadratic >= threshold
    n_neurons: int


@dataclass(frozen=True)
class LogitFit(_Record):
    """OLS fit of the (row-centred) logits by sum_k alpha_k cos(w_k(c* - c)), c* the answer (a+b for addition)."""

    frequencies: list[int]
    alpha: dict[int, float]  # coefficient of the unnormalised cos wave
    sin_coefficient: dict[int, float]  # the same for sin(w_k(c* - c)) (~0 for a clean model; not in the fit)
    fve: float  # fraction of the row-centred logit variance explained
    fit_loss: float  # cross-entropy of the fitted table, all p^2 inputs
    fit_acc: float


@dataclass(frozen=True)
class AblationRow(_Record):
    name: str
    loss: float  # all p^2 inputs
    acc: float
    train_loss: float
    test_loss: float


@dataclass(frozen=True)
class HeadFit(_Record):
    """Attention from the last position to position 0 as a function of (a, b): best single frequency."""

    layer: int
    head: int
    frequency: int
    fve: float  # energy of the 4 components cos/sin(w_k a), cos/sin(w_k b) / mean-removed energy
    mean: float  # mean attention to position 0


@dataclass(frozen=True)
class StarNeuron(_Record):
    """PAIR star-plot data of one MLP neuron: its frequency and the cos/sin (phase) of its input and output."""

    neuron: int
    frequency: int
    cos_in: float
    sin_in: float
    angle_in: float
    cos_out: float
    sin_out: float
    angle_out: float


@dataclass(frozen=True)
class Table5Row(_Record):
    """One row in the format of the paper's Table 5 (appendix C.2.3)."""

    test_loss: float
    gini_W_E: float
    gini_W_L: float
    key_frequencies: list[int]
    logit_fve: float
    mlp_fve_mean: float
    mlp_fve_std: float


@dataclass(frozen=True)
class Analysis(_Record):
    """Everything :func:`analyze_checkpoint` finds about one checkpoint. ``to_dict()`` is analysis.json."""

    p: int
    arch: str
    formula: str
    step: int | None
    key_frequencies: list[int]
    key_freq_rule: str
    key_frequencies_by_rule: dict[str, list[int]]
    losses: dict[str, float]
    W_E_component_norms: list[float]  # [p] norms of the rows of F @ W_E[:p]
    W_E_frequency_norms: list[float]  # [(p-1)/2]
    W_L_frequency_norms: list[float]  # [(p-1)/2]
    W_L_residual_fraction: float
    gini_W_E: float
    gini_W_L: float
    sum_sq_weights: float
    ffs: float
    fcr: float
    neurons: NeuronStats
    logit_fit: LogitFit
    ablations: list[AblationRow]
    attention: list[HeadFit]
    star: list[StarNeuron]
    table5: Table5Row
    choices: dict[str, str] = field(default_factory=lambda: dict(CHOICES))
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        out["key_frequencies"] = [int(k) for k in self.key_frequencies]
        out[names.RESTRICTED_LOSS] = json_safe(float(self.losses[names.RESTRICTED_LOSS]))
        out[names.TEST_LOSS] = json_safe(float(self.losses[names.TEST_LOSS]))
        return out


# ----------------------------------------------------------------------------- pieces


def logit_wave_fit(table: Tensor, labels: Tensor, p: int, freqs: Iterable[int]) -> LogitFit:
    """Fit ``table`` [N, p] (labels [N]) by sum_k alpha_k cos(w_k(s_r - c)), s_r the label of row r.

    The waves are orthogonal over rows x outputs and have zero mean over c, so OLS after subtracting each
    row's mean (softmax-invariant) gives alpha_k = <L, cos_k> / (N p / 2) independently per k.
    """
    freqs = sorted(int(k) for k in freqs)
    n = table.shape[0]
    centred = table - table.mean(dim=1, keepdim=True)
    d = (labels[:, None] - torch.arange(p)[None, :]) % p  # s - c
    g = torch.zeros(p, dtype=torch.float64).index_add_(0, d.reshape(-1), centred.reshape(-1))
    dd = torch.arange(p, dtype=torch.float64)
    norm_sq = n * p / 2.0
    alpha, sin_c = {}, {}
    fit = torch.zeros_like(centred)
    for k in freqs:
        cos_d, sin_d = torch.cos(2 * math.pi * k * dd / p), torch.sin(2 * math.pi * k * dd / p)
        alpha[k] = float(cos_d @ g) / norm_sq
        sin_c[k] = float(sin_d @ g) / norm_sq
        fit += alpha[k] * cos_d[d]
    total = float((centred**2).sum())
    fve = 1.0 - float(((centred - fit) ** 2).sum()) / total if total > 0 else float("nan")
    loss, acc = cross_entropy(fit, labels)
    return LogitFit(freqs, alpha, sin_c, fve, loss, acc)


def block_mask_table(table: Tensor, p: int, freqs: Iterable[int], *, product_only: bool) -> Tensor:
    """Keep only the key-frequency parts of a grid table [N, ...] in the 2D (a, b) Fourier basis.

    ``product_only=False``: keep (0,0) and each key k's 3x3 block {0, 2k-1, 2k}^2 (all degree-2 terms).
    ``product_only=True``: keep (0,0) and each key k's 2x2 block {2k-1, 2k}^2, i.e. the constant and
    cos/sin(w_k(a+b)), cos/sin(w_k(a-b)) (the paper's "constant and 20 terms" for 5 key frequencies).
    """
    rest = table.shape[1:]
    grid = table.to(torch.float64).reshape(p, p, *rest)
    coef = fourier_transform_2d(grid)
    mask = torch.zeros(p, p, dtype=torch.float64)
    mask[0, 0] = 1.0
    for k in freqs:
        idx = torch.tensor([2 * k - 1, 2 * k] if product_only else [0, 2 * k - 1, 2 * k])
        mask[idx[:, None], idx[None, :]] = 1.0
    coef = coef * mask.reshape(p, p, *([1] * len(rest)))
    return inverse_fourier_transform(inverse_fourier_transform(coef, 0), 1).reshape(p * p, *rest)


def neuron_polynomial_fits(acts: Tensor, p: int, freq: Tensor, explained: Tensor) -> Tensor:
    """Replace each explained neuron's activations [N, d_mlp] (grid order) by its 3x3-block projection.

    ``freq`` [d_mlp] each neuron's frequency; ``explained`` [d_mlp] bool. Others are returned unchanged.
    """
    grid = acts.to(torch.float64).reshape(p, p, -1)
    coef = fourier_transform_2d(grid)  # [p, p, d]
    mask = torch.zeros_like(coef)
    mask[0, 0] = 1.0
    for k in sorted(set(int(f) for f in freq[explained])):
        idx = torch.tensor([0, 2 * k - 1, 2 * k])
        sel = (freq == k) & explained
        sub = mask[idx[:, None], idx[None, :]]
        sub[..., sel] = 1.0
        mask[idx[:, None], idx[None, :]] = sub
    fit = inverse_fourier_transform(inverse_fourier_transform(coef * mask, 0), 1).reshape(p * p, -1)
    return torch.where(explained[None, :], fit, acts.to(torch.float64))


def attention_fits(model: Model, task: Any) -> list[HeadFit]:
    """Per head: attention from the last position to position 0 over the grid, [p, p] per head; the frequency
    k maximising the energy of cos/sin(w_k a), cos/sin(w_k b) over the mean-removed energy. [] for MLP models."""
    if not has_blocks(model):
        return []
    p = task.p
    grid = grid_order(task)
    with torch.no_grad():
        _, cache = model.run_with_cache(task.tokens)
    fits = []
    for layer in range(len(model.blocks)):
        pattern = cache[f"blocks.{layer}.attn.hook_pattern"]  # [N, head, q, k]
        to_first = pattern[:, :, -1, 0].to(torch.float64)[grid]  # [p*p, head]
        energy = fourier_transform_2d(to_first.reshape(p, p, -1)) ** 2  # [p, p, head]
        mean = to_first.mean(dim=0)
        energy[0, 0] = 0.0
        total = energy.sum(dim=(0, 1))
        per_k = torch.stack([energy[0, 2 * k - 1] + energy[0, 2 * k] + energy[2 * k - 1, 0] + energy[2 * k, 0]
                             for k in range(1, n_frequencies(p) + 1)])  # [K, head]
        frac = torch.where(total > 0, per_k / total.clamp_min(1e-300), torch.zeros_like(per_k))
        best, arg = frac.max(dim=0)
        for h in range(frac.shape[1]):
            fits.append(HeadFit(layer, h, int(arg[h]) + 1, float(best[h]), float(mean[h])))
    return fits


def star_plot_data(model: MLPModel | VectorMLP, p: int) -> list[StarNeuron]:
    """PAIR star plots for an MLP model: per neuron, its frequency and input/output cos, sin and angle.

    Input side ``H = W_E[:p] @ W_in`` [p, d_mlp]; output side ``O = W_out @ W_U[:, :p]`` [d_mlp, p]. A neuron's
    frequency f is the argmax over k of its per-frequency norm of F @ H; cos/sin are read at rows 2f-1, 2f
    of F @ H and of F @ O^T; angle = atan2(sin, cos).
    """
    w_in = model.mlp.W_in.detach().to(torch.float64)
    h = fourier_transform(number_embedding(model, p) @ w_in, dim=0)  # [p, d_mlp]
    o = fourier_transform(neuron_logit_map(model, p).T, dim=0)  # [p, d_mlp]
    norms = torch.sqrt(h[1::2] ** 2 + h[2::2] ** 2)  # [K, d_mlp]
    freq = norms.argmax(dim=0) + 1
    out = []
    for n in range(h.shape[1]):
        f = int(freq[n])
        ci, si, co, so = (float(x) for x in (h[2 * f - 1, n], h[2 * f, n], o[2 * f - 1, n], o[2 * f, n]))
        out.append(StarNeuron(n, f, ci, si, math.atan2(si, ci), co, so, math.atan2(so, co)))
    return out


# ----------------------------------------------------------------------------- the whole analysis


def analyze_checkpoint(
    model: Model,
    task: Any,
    *,
    key_freqs: Iterable[int] | None = None,
    rule: str = "W_L_dft",
    step: int | None = None,
) -> Analysis:
    """Reverse-engineer one checkpoint (model in eval mode) on a modular task over the full p*p grid.

    ``key_freqs`` fixes the key set; otherwise it comes from this checkpoint by ``rule`` (every rule's answer
    is also reported in ``key_frequencies_by_rule``). Raises :class:`~grokscope.measures.MeasureError`
    (a ValueError) for a task the analysis cannot handle.
    """
    p = check_task(task)
    model.eval()
    with torch.no_grad():
        by_rule = {r: key_frequencies(model, task, r) for r in KEY_FREQ_RULES}
        if key_freqs is not None:
            freqs, used_rule = checked_key_set(key_freqs, p), "given"
        else:
            if rule not in by_rule:
                raise MeasureError(f"unknown key-frequency rule {rule!r}; known: {', '.join(KEY_FREQ_RULES)}")
            freqs, used_rule = by_rule[rule], rule

        labels = task.labels[grid_order(task)]
        train_rows, test_rows = grid_rows(task, task.train_idx), grid_rows(task, task.test_idx)
        table = logit_table(model, task)

        def row(name: str, scored: Tensor) -> AblationRow:
            """Loss and accuracy on all p^2 inputs, the train and the test loss of a grid logit table [N, p]."""
            train_loss, _ = cross_entropy(scored[train_rows], labels[train_rows])
            test_loss, _ = cross_entropy(scored[test_rows], labels[test_rows])
            return AblationRow(name, *cross_entropy(scored, labels), train_loss, test_loss)

        # Restricted / excluded (logit level): the excluded losses are the progress measures'; the restricted loss
        # is its ablation row's score of the expanded table (the measure's per-label sum agrees to rounding).
        measured = restricted_excluded(table, labels, train_rows, p, freqs)
        const, key = label_wave_fit(table, labels, p, freqs)
        ablations = [row("original", table), row("remove all key freqs", table - key[labels])]
        ablations.append(restricted := row("keep only key freqs (restricted)", (const + key)[labels]))
        ablations.append(row("keep key a+-b terms", block_mask_table(table, p, freqs, product_only=True)))
        ablations.append(row("keep key 3x3 blocks", block_mask_table(table, p, freqs, product_only=False)))
        for k in freqs:
            _, key_k = label_wave_fit(table, labels, p, [k])
            ablations.append(row(f"remove k={k}", table - key_k[labels]))
        whole = ablations[0]
        losses = {"loss": whole.loss, "acc": whole.acc, names.TRAIN_LOSS: whole.train_loss,
                  names.TEST_LOSS: whole.test_loss, names.RESTRICTED_LOSS: restricted.loss,
                  names.RESTRICTED_ACC: restricted.acc, "restricted_test_loss": restricted.test_loss}
        losses.update((name, v) for name, v in measured.items() if name not in losses)  # the excluded ones

        # Weights: Fourier norms of W_E, W_L, Gini, rank-2K residual.
        w_e = number_embedding(model, p)
        w_l = neuron_logit_map(model, p)
        we_comp, we_freq, wl_freq = component_norms(w_e, 0), frequency_norms(w_e, 0), frequency_norms(w_l, 1)
        wl_energy = wl_freq**2
        total_wl = float(wl_energy.sum())
        key_energy = float(sum(wl_energy[k - 1] for k in freqs)) if freqs else 0.0
        residual = math.sqrt(max(total_wl - key_energy, 0.0) / total_wl) if total_wl > 0 else float("nan")
        ffs, fcr = ffs_fcr(w_e)

        # Neurons.
        acts = mlp_activations(model, task)  # [N, d_mlp]
        energy = neuron_energy(acts, p)
        fracs = block_fractions(energy, p, quadratic=False)  # [K, d_mlp]
        best, arg = fracs.max(dim=0)
        nfreq = arg + 1
        explained = best >= NEURON_FVE_THRESHOLD
        best_quad = block_fractions(energy, p, quadratic=True).max(dim=0).values
        del energy
        clusters = Counter(nfreq[explained].tolist())
        neurons = NeuronStats(
            frequency=nfreq.tolist(), fve=best.tolist(), fve_quadratic=best_quad.tolist(),
            threshold=NEURON_FVE_THRESHOLD, clusters=dict(sorted(clusters.items())),
            n_unclustered=int((~explained).sum()), n_explained=int(explained.sum()),
            n_explained_quadratic=int((best_quad >= NEURON_FVE_THRESHOLD).sum()), n_neurons=int(best.numel()),
        )
        alive = acts.var(dim=0) > 0
        if freqs:
            key_best = fracs[torch.tensor([k - 1 for k in freqs])].max(dim=0).values[alive]
        else:
            key_best = torch.zeros(int(alive.sum()), dtype=torch.float64)
        mlp_mean = float(key_best.mean()) if key_best.numel() else float("nan")
        mlp_std = float(key_best.std(unbiased=False)) if key_best.numel() else float("nan")

        # Neurons replaced by their polynomial fits.
        fitted = neuron_polynomial_fits(acts, p, nfreq, explained)[task.pair_index]  # task order
        hook = post_hook_name(model)

        def replace(x: Tensor, name: str) -> Tensor:  # the activations (at the last position) -> the fits
            x = x.clone()
            (x[:, -1] if x.dim() == 3 else x)[:] = fitted.to(x.dtype)
            return x

        poly_table = logit_table(model, task, model.run_with_hooks(task.tokens, fwd_hooks=[(hook, replace)]))
        ablations.append(row("neurons -> polynomial fits", poly_table))

        logit_fit = logit_wave_fit(table, labels, p, freqs)
        attention = attention_fits(model, task)
        star = star_plot_data(model, p) if not has_blocks(model) else []
        g_we, g_wl = gini(we_freq), gini(wl_freq)
        table5 = Table5Row(losses[names.TEST_LOSS], g_we, g_wl, list(freqs), logit_fit.fve, mlp_mean, mlp_std)

    return Analysis(
        p=p, arch=getattr(getattr(model, "cfg", None), "arch", type(model).__name__),
        formula=getattr(task.config, "formula", "?"), step=step, key_frequencies=list(freqs), key_freq_rule=used_rule,
        key_frequencies_by_rule=by_rule, losses=losses, W_E_component_norms=we_comp.tolist(),
        W_E_frequency_norms=we_freq.tolist(), W_L_frequency_norms=wl_freq.tolist(), W_L_residual_fraction=residual,
        gini_W_E=g_we, gini_W_L=g_wl, sum_sq_weights=sum_sq_weights(model), ffs=ffs, fcr=fcr, neurons=neurons,
        logit_fit=logit_fit, ablations=ablations, attention=attention, star=star, table5=table5,
    )
