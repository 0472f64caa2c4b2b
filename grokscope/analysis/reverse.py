"""Reverse-engineering of one checkpoint (Nanda et al. 2023, section 4 and appendix C; PAIR star plots) over a cyclic
group Z_n of any order n.

:func:`analyze_grid` is the analysis: key frequencies, restricted and excluded loss, Gini, neuron clusters and FVE,
the logit fit, the ablations, the attention fits, the star plots and the Table 5 row of a model read over an n x n
grid of group inputs (:class:`GroupGrid`, from :func:`read_group_grid`). :func:`analyze_checkpoint` runs it on the
task's own p x p grid (the additive basis of a+b, odd p); :mod:`grokscope.analysis.basis` on a task's group basis
(the discrete-log one of a*b: n = p - 1). Results are the dataclasses of :mod:`grokscope.analysis.records`
(``to_dict()`` is JSON-safe; schema in ``docs/analysis-json.md``). No file I/O.

Every piece works for odd and even n: for odd n each is the paper's computation over Z_p with n for p (the same
operations, so the additive numbers are those of the Z_p code bit for bit); for even n frequency n/2 (the Nyquist)
has a cosine (-1)^x and no sine (:func:`~grokscope.measures.bases.frequency_rows`). Shapes: N = n*n grid inputs in
grid order (row i*n + j; a*p + b on the task's grid); logit tables [N, n] float64; activations [N, d_mlp]; W_E
viewed [n, d_model]; W_L = W_out @ W_U viewed [d_mlp, n].
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from grokscope.analysis.logits import ablation_row, block_mask_table, grid_split, logit_level, logit_wave_fit
from grokscope.analysis.records import (
    CHOICES,
    SCHEMA_VERSION,
    AblationRow,
    Analysis,
    HeadFit,
    LogitFit,
    NeuronStats,
    StarNeuron,
    Table5Row,
    json_safe,
)
from grokscope.measures import (
    FFS_ETA,
    KEY_FREQ_RULES,
    NEURON_FVE_THRESHOLD,
    W_E_NORM_FRACTION,
    MeasureError,
    check_task,
    gini,
    key_frequencies_from_norms,
    key_frequencies_online,
    names,
    neuron_logit_map,
    number_embedding,
    post_hook_name,
    sum_sq_weights,
)
from grokscope.measures.bases import (
    GroupBasis,
    checked_group_keys,
    frequency_rows,
    group_block_fractions,
    group_component_norms,
    group_frequency_norms,
    group_inverse_2d,
    group_neuron_energy,
    group_transform,
    group_transform_2d,
    identity_basis,
)
from grokscope.measures.grid import on_cpu
from grokscope.models import MLPModel, Model, VectorMLP, has_blocks
from grokscope.models.forward import choose_forward

__all__ = [
    "AblationRow", "Analysis", "CHOICES", "GroupGrid", "HeadFit", "LogitFit", "NeuronStats", "SCHEMA_VERSION",
    "StarNeuron", "Table5Row", "analyze_checkpoint", "analyze_grid", "attention_fits", "block_mask_table",
    "grid_attention_fits", "grid_ffs_fcr", "grid_key_frequencies", "json_safe", "logit_wave_fit",
    "neuron_polynomial_fits", "read_group_grid", "star_from_weights", "star_plot_data",
]


# ----------------------------------------------------------------------------- pieces, over Z_n


def neuron_polynomial_fits(acts: Tensor, n: int, freq: Tensor, explained: Tensor) -> Tensor:
    """Replace each explained neuron's activations [N, d_mlp] (grid order) by its projection on its frequency's
    block {0, cos k, sin k}^2 over (i, j). ``freq`` [d_mlp] each neuron's frequency (1..n//2); ``explained``
    [d_mlp] bool. Others are returned unchanged."""
    coef = group_transform_2d(acts.to(torch.float64).reshape(n, n, -1))  # [n, n, d]
    mask = torch.zeros_like(coef)
    mask[0, 0] = 1.0
    for k in sorted(set(int(f) for f in freq[explained])):
        idx = torch.tensor([0, *frequency_rows(k, n)], device=coef.device)
        sub = mask[idx[:, None], idx[None, :]]
        sub[..., (freq == k) & explained] = 1.0
        mask[idx[:, None], idx[None, :]] = sub
    fit = group_inverse_2d(coef * mask).reshape(n * n, -1)
    return torch.where(explained[None, :], fit, acts.to(torch.float64))


def _axis_energy(energy: Tensor, rows: list[int], task_order: bool) -> Tensor:
    """Energy [n, n, d] on the waves of i alone and of j alone at one frequency's basis ``rows``: [d]. Summed term by
    term (``task_order``, the additive code's order) or as the sum over j's waves plus the sum over i's (the same to
    rounding)."""
    if not task_order:
        return energy[0, rows].sum(dim=0) + energy[rows, 0].sum(dim=0)
    out = energy[0, rows[0]]
    for r in rows[1:]:
        out = out + energy[0, r]
    for r in rows:
        out = out + energy[r, 0]
    return out


def grid_attention_fits(patterns: list[Tensor], n: int, *, task_order: bool = False) -> list[HeadFit]:
    """Per layer (``patterns[layer]`` [N, heads]: attention from the last position to position 0 over the grid) and
    head: the frequency k maximising the energy of cos/sin(w_k i), cos/sin(w_k j) over the mean-removed energy.
    ``task_order``: sum the energies in the additive analysis' order (:class:`GroupGrid`)."""
    fits = []
    for layer, pattern in enumerate(patterns):
        to_first = pattern.to(torch.float64)
        energy = group_transform_2d(to_first.reshape(n, n, -1)) ** 2  # [n, n, head]
        mean = to_first.mean(dim=0)
        energy[0, 0] = 0.0
        total = energy.sum(dim=(0, 1))
        per_k = torch.stack([_axis_energy(energy, frequency_rows(k, n), task_order)
                             for k in range(1, n // 2 + 1)])  # [K, head]
        frac = torch.where(total > 0, per_k / total.clamp_min(1e-300), torch.zeros_like(per_k))
        best, arg = frac.max(dim=0)
        fits += [HeadFit(layer, h, int(arg[h]) + 1, float(best[h]), float(mean[h])) for h in range(frac.shape[1])]
    return fits


def attention_fits(model: Model, task: Any) -> list[HeadFit]:
    """:func:`grid_attention_fits` of a transformer over the task's own p x p grid (a*p + b); [] for MLP models."""
    if not has_blocks(model):
        return []
    grid = read_group_grid(model, task, identity_basis(task.p, "the task's own grid"), task_order=True)
    return grid_attention_fits(grid.patterns, task.p, task_order=True)


def _pair_norms(coef: Tensor) -> Tensor:
    """Per-frequency norms [n//2, ...] of basis coefficients [n, ...]: sqrt(cos^2 + sin^2); the Nyquist: |cos|."""
    n = coef.shape[0]
    m = (n - 1) // 2
    pairs = torch.sqrt(coef[1 : 2 * m + 1 : 2] ** 2 + coef[2 : 2 * m + 1 : 2] ** 2)
    return torch.cat([pairs, coef[n - 1 :].abs()]) if n % 2 == 0 else pairs


def star_from_weights(w_e: Tensor, w_in: Tensor, w_l: Tensor) -> list[StarNeuron]:
    """PAIR star plots: per neuron, its frequency and input/output cos, sin and angle. ``w_e`` [n, d_model] (W_E rows
    in grid order), ``w_in`` [d_model, d_mlp], ``w_l`` [d_mlp, n]. Input side H = w_e @ w_in, output side w_l; a
    neuron's frequency is the argmax over k of its per-frequency norm of F @ H; cos/sin are read at frequency f's
    rows of F @ H and F @ w_l^T (the Nyquist has sine 0); angle = atan2(sin, cos)."""
    h = group_transform(w_e.to(torch.float64) @ w_in.to(torch.float64), 0)  # [n, d_mlp]
    o = group_transform(w_l.to(torch.float64).T, 0)  # [n, d_mlp]
    freq = _pair_norms(h).argmax(dim=0) + 1
    out = []
    for j in range(h.shape[1]):
        f = int(freq[j])
        rows = frequency_rows(f, w_e.shape[0])
        ci, co = float(h[rows[0], j]), float(o[rows[0], j])
        si, so = (float(h[rows[1], j]), float(o[rows[1], j])) if len(rows) == 2 else (0.0, 0.0)
        out.append(StarNeuron(j, f, ci, si, math.atan2(si, ci), co, so, math.atan2(so, co)))
    return out


def star_plot_data(model: MLPModel | VectorMLP, p: int) -> list[StarNeuron]:
    """:func:`star_from_weights` of an MLP model over Z_p: W_E[:p], W_in and W_L = W_out @ W_U[:, :p]."""
    return star_from_weights(number_embedding(model, p), model.mlp.W_in.detach(), neuron_logit_map(model, p))


def grid_ffs_fcr(w_e: Tensor, eta: float = FFS_ETA) -> tuple[float, float]:
    """FFS and FCR of the viewed embedding [n, d_model] (:func:`~grokscope.measures.ffs_fcr` over Z_n): FFS = the
    fraction of the n//2 frequencies whose norm exceeds ``eta`` x the largest; FCR = the mean min/max of the cos and
    sin norms over the used frequencies that have both (the Nyquist, a cosine alone, counts for FFS only)."""
    comps = group_component_norms(w_e, 0)
    m = (comps.shape[0] - 1) // 2
    norms = _pair_norms(comps)
    if norms.numel() == 0 or float(norms.max()) <= 0:
        return 0.0, float("nan")
    used = norms > eta * norms.max()
    c, s, pair_used = comps[1 : 2 * m + 1 : 2], comps[2 : 2 * m + 1 : 2], used[:m]
    ratio = torch.minimum(c, s)[pair_used] / torch.maximum(c, s)[pair_used].clamp_min(1e-300)
    return float(used.to(torch.float64).mean()), float(ratio.mean()) if ratio.numel() else float("nan")


# ----------------------------------------------------------------------------- the model over a grid


@dataclass(frozen=True, eq=False)
class GroupGrid:
    """A model read over the n x n grid of ``basis``: the inputs (a_order[i], b_order[j]) in grid order i*n + j, the
    logits of the outputs c_order. ``task_order``: the grid is the task's own (every order the identity, odd p) and
    the losses average the split's rows in the task's order with the additive measures' label fit
    (:func:`~grokscope.measures.restricted_excluded`, what the progress measures compute) and the attention energies
    summed in its order; otherwise in grid order with the group's label fit
    (:func:`~grokscope.measures.bases.group_restricted_excluded`, which takes an even n's Nyquist). The two agree to
    rounding; each keeps its own results bit for bit."""

    basis: GroupBasis
    rows: Tensor  # [N] task rows of the grid inputs
    labels: Tensor  # [N] labels 0..n-1
    train: Tensor  # [N_train] grid positions of the training rows (inside the grid)
    test: Tensor  # [N_test]
    table: Tensor  # [N, n] float64 logits of the outputs c_order
    logits: Tensor  # [N_task, p] float64: the model's own logits over every task row
    acts: Tensor | None  # [N, d_mlp] last MLP's activations at the last position
    patterns: list[Tensor]  # per layer [N, heads]: attention from the last position to position 0
    w_e: Tensor  # [n, d_model] W_E[a_order]
    w_l: Tensor  # [d_mlp, n] W_L[:, c_order]
    task_order: bool = False


def read_group_grid(model: Model, task: Any, basis: GroupBasis, *, task_order: bool = False) -> GroupGrid:
    """One forward pass over the task's tokens, read through ``basis``. :class:`MeasureError` when a grid input is
    not in the task or its answer is not one of the grid's outputs."""
    p = task.p
    rows, labels, train, test = grid_split(task, basis, task_order=task_order)
    with torch.no_grad():
        out = choose_forward(model, task).fn(task.tokens)  # the logits the training loop and logit_table read
        _, cache = model.run_with_cache(task.tokens)
    logits = out.detach()[:, :p].to(torch.float64)
    hook = post_hook_name(model)
    acts = None
    if hook in cache:
        a = cache[hook]
        acts = (a[:, -1] if a.dim() == 3 else a).detach().to(torch.float64)[rows]
    patterns = [cache[f"blocks.{layer}.attn.hook_pattern"][:, :, -1, 0].detach().to(torch.float64)[rows]
                for layer in range(len(model.blocks))] if has_blocks(model) else []
    w_e, w_l = number_embedding(model, p)[basis.a_order], neuron_logit_map(model, p)[:, basis.c_order]
    return GroupGrid(basis, rows, labels, train, test, logits[rows][:, basis.c_order], logits, acts, patterns,
                     w_e, w_l, task_order)


def grid_key_frequencies(rule: str, grid: GroupGrid) -> list[int]:
    """Key frequencies (1..n//2) of a model read over a grid by the named rule of
    :func:`~grokscope.measures.key_frequencies`: ``W_L_dft``/``W_L_online`` on W_L, ``W_E_norm`` on W_E,
    ``neuron_cluster`` on the activations, ``logits_dft`` on the logit table."""
    if rule == "W_L_dft":
        return key_frequencies_from_norms(group_frequency_norms(grid.w_l, 1))
    if rule == "W_L_online":
        return key_frequencies_online(group_frequency_norms(grid.w_l, 1))
    if rule == "W_E_norm":
        comps = group_component_norms(grid.w_e, 0)[1:]
        if float(comps.max()) <= 0:
            return []
        keep = torch.nonzero(comps > W_E_NORM_FRACTION * comps.max()).reshape(-1) + 1
        return sorted({(int(i) + 1) // 2 for i in keep})
    if rule == "neuron_cluster":
        if grid.acts is None:
            return []
        fracs = group_block_fractions(group_neuron_energy(grid.acts, grid.basis.n), grid.basis.n, quadratic=False)
        best, arg = fracs.max(dim=0)
        return sorted({int(k) + 1 for k in arg[best >= NEURON_FVE_THRESHOLD]})
    if rule == "logits_dft":
        return key_frequencies_from_norms(group_frequency_norms(grid.table, 1))
    raise MeasureError(f"unknown key-frequency rule {rule!r}; known: {', '.join(KEY_FREQ_RULES)}")


# ----------------------------------------------------------------------------- the whole analysis


def analyze_grid(model: Model, task: Any, grid: GroupGrid, *, key_freqs: Iterable[int] | None = None,
                 rule: str = "W_L_dft", step: int | None = None) -> Analysis:
    """Section 4 of one checkpoint (model in eval mode) read over ``grid``; frequencies 1..n//2 of its Z_n.

    ``key_freqs`` fixes the key set; otherwise it comes from this checkpoint by ``rule`` (every rule's answer is also
    reported in ``key_frequencies_by_rule``). Raises :class:`~grokscope.measures.MeasureError` (a ValueError)."""
    n, table, labels, acts = grid.basis.n, grid.table, grid.labels, grid.acts
    if acts is None:
        raise MeasureError(f"{type(model).__name__} has no MLP to analyse")
    with torch.no_grad():
        by_rule = {r: grid_key_frequencies(r, grid) for r in KEY_FREQ_RULES}
        if key_freqs is not None:
            freqs, used_rule = checked_group_keys(key_freqs, n), "given"
        elif rule in by_rule:
            freqs, used_rule = by_rule[rule], rule
        else:
            raise MeasureError(f"unknown key-frequency rule {rule!r}; known: {', '.join(KEY_FREQ_RULES)}")
        losses, ablations, logit_fit = logit_level(table, labels, grid.train, grid.test, n, freqs,
                                                   task_order=grid.task_order)

        # Weights: Fourier norms of W_E, W_L, Gini, rank-2K residual.
        we_comp, we_freq = group_component_norms(grid.w_e, 0), group_frequency_norms(grid.w_e, 0)
        wl_freq = group_frequency_norms(grid.w_l, 1)
        wl_energy = wl_freq**2
        total_wl = float(wl_energy.sum())
        key_energy = float(sum(wl_energy[k - 1] for k in freqs)) if freqs else 0.0
        residual = math.sqrt(max(total_wl - key_energy, 0.0) / total_wl) if total_wl > 0 else float("nan")
        ffs, fcr = grid_ffs_fcr(grid.w_e)

        # Neurons.
        energy = group_neuron_energy(acts, n)
        fracs = group_block_fractions(energy, n, quadratic=False)  # [K, d_mlp]
        best, arg = fracs.max(dim=0)
        nfreq, explained = arg + 1, best >= NEURON_FVE_THRESHOLD
        best_quad = group_block_fractions(energy, n, quadratic=True).max(dim=0).values
        del energy
        neurons = NeuronStats(
            frequency=nfreq.tolist(), fve=best.tolist(), fve_quadratic=best_quad.tolist(),
            threshold=NEURON_FVE_THRESHOLD, clusters=dict(sorted(Counter(nfreq[explained].tolist()).items())),
            n_unclustered=int((~explained).sum()), n_explained=int(explained.sum()),
            n_explained_quadratic=int((best_quad >= NEURON_FVE_THRESHOLD).sum()), n_neurons=int(best.numel()),
        )
        alive = acts.var(dim=0) > 0
        key_best = (fracs[torch.tensor([k - 1 for k in freqs], device=fracs.device)].max(dim=0).values[alive] if freqs
                    else torch.zeros(int(alive.sum()), dtype=torch.float64, device=fracs.device))
        mlp_mean = float(key_best.mean()) if key_best.numel() else float("nan")
        mlp_std = float(key_best.std(unbiased=False)) if key_best.numel() else float("nan")

        # Neurons replaced by their polynomial fits.
        fitted = neuron_polynomial_fits(acts, n, nfreq, explained)

        def replace(x: Tensor, name: str) -> Tensor:  # the grid inputs' activations (last position) -> the fits
            x = x.clone()
            last = x[:, -1] if x.dim() == 3 else x
            last[grid.rows] = fitted.to(x.dtype)
            return x

        poly = model.run_with_hooks(task.tokens, fwd_hooks=[(post_hook_name(model), replace)])
        ablations.append(ablation_row("neurons -> polynomial fits", poly.detach()[:, : task.p].to(torch.float64)[
            grid.rows][:, grid.basis.c_order], labels, grid.train, grid.test))

        attention = grid_attention_fits(grid.patterns, n, task_order=grid.task_order)
        star = ([] if has_blocks(model) else
                star_from_weights(grid.w_e, model.mlp.W_in.detach(), grid.w_l))  # type: ignore[union-attr]
        g_we, g_wl = gini(we_freq), gini(wl_freq)
        table5 = Table5Row(losses[names.TEST_LOSS], g_we, g_wl, list(freqs), logit_fit.fve, mlp_mean, mlp_std)

    return Analysis(
        p=task.p, arch=getattr(getattr(model, "cfg", None), "arch", type(model).__name__),
        formula=getattr(task.config, "formula", "?"), step=step, key_frequencies=list(freqs), key_freq_rule=used_rule,
        key_frequencies_by_rule=by_rule, losses=losses, W_E_component_norms=we_comp.tolist(),
        W_E_frequency_norms=we_freq.tolist(), W_L_frequency_norms=wl_freq.tolist(), W_L_residual_fraction=residual,
        gini_W_E=g_we, gini_W_L=g_wl, sum_sq_weights=sum_sq_weights(model), ffs=ffs, fcr=fcr, neurons=neurons,
        logit_fit=logit_fit, ablations=ablations, attention=attention, star=star, table5=table5,
    )


def analyze_checkpoint(
    model: Model,
    task: Any,
    *,
    key_freqs: Iterable[int] | None = None,
    rule: str = "W_L_dft",
    step: int | None = None,
) -> Analysis:
    """Reverse-engineer one checkpoint (model in eval mode) on a modular task over the full p*p grid (odd p), in the
    additive basis of its tokens and answers: :func:`analyze_grid` on the task's own grid (a*p + b).

    ``key_freqs`` fixes the key set; otherwise it comes from this checkpoint by ``rule`` (every rule's answer
    is also reported in ``key_frequencies_by_rule``). A model on a device is read through a CPU copy
    (:func:`~grokscope.measures.grid.on_cpu`: the float64 math, which MPS lacks, and the measures' CPU helpers), so
    its numbers are a CPU analysis' of the same weights. Raises :class:`~grokscope.measures.MeasureError` (a
    ValueError) for a task the analysis cannot handle.
    """
    p = check_task(task)
    model.eval()
    model, task, _ = on_cpu(model, task)  # a model on a device: read through a CPU copy, as the group-basis analysis
    grid = read_group_grid(model, task, identity_basis(p, "the task's own grid"), task_order=True)
    return analyze_grid(model, task, grid, key_freqs=key_freqs, rule=rule, step=step)
