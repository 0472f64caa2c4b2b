"""Section 4 of the paper in the task's own group basis (issue 21): a model read through the relabelling of
:class:`~grokscope.measures.bases.GroupBasis` is an additive model over Z_n, and the whole analysis (key frequencies,
restricted and excluded loss, Gini, neuron clusters and FVE, the logit fit, the ablations, the attention fits, the
Table 5 row) runs on that view with n in place of p. docs/measures/bases.md has the definitions.

:func:`analyze_in_basis` picks the basis (:func:`~grokscope.measures.bases.task_basis`, or the one asked for) and
returns a :class:`BasisAnalysis`: an :class:`~grokscope.analysis.Analysis` with the ``basis`` named. The plain
additive basis of a+b (every order the identity) runs :func:`~grokscope.analysis.analyze_checkpoint` itself, so
addition's numbers are those of the additive analysis, bit for bit.

The view (:func:`read_group_grid`): the group inputs (a_order[i], b_order[j]) in group order i*n + j; the logits of
the group's outputs c_order (the softmax is over those n classes: the outside output, 0 for a*b, is left out);
W_E rows a_order; W_L columns c_order; the last MLP's activations and the attention to position 0 at those inputs.
Train and test are the task's own split restricted to the group inputs. The model's own losses (all p classes,
every task row) and its loss on the inputs outside the group are reported under ``basis["model"]``.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from grokscope.analysis.basis_pieces import (
    group_attention_fits,
    group_block_mask_table,
    group_ffs_fcr,
    group_key_frequencies,
    group_logit_fit,
    group_neuron_polynomial_fits,
    group_star_plot_data,
)
from grokscope.analysis.reverse import AblationRow, Analysis, NeuronStats, Table5Row, analyze_checkpoint
from grokscope.measures import (
    KEY_FREQ_RULES,
    NEURON_FVE_THRESHOLD,
    MeasureError,
    check_task,
    cross_entropy,
    gini,
    names,
    neuron_logit_map,
    number_embedding,
    post_hook_name,
    sum_sq_weights,
)
from grokscope.measures.bases import (
    GroupBasis,
    checked_group_keys,
    group_block_fractions,
    group_component_norms,
    group_frequency_norms,
    group_label_wave_fit,
    group_neuron_energy,
    group_restricted_excluded,
    group_rows,
    is_identity,
    task_basis,
)
from grokscope.measures.grid import on_cpu
from grokscope.models import Model, has_blocks
from grokscope.models.forward import choose_forward

__all__ = ["BasisAnalysis", "GroupGrid", "analyze_group", "analyze_in_basis", "basis_summary", "read_group_grid"]

#: How the group basis treats the inputs and outputs outside the group (written into ``basis["softmax"]``).
SOFTMAX_RULE = ("the basis measures score the group inputs only, with the softmax over the group's n outputs (the "
                "outside output's logit left out); basis['model'] has the model's own losses over all p classes")


@dataclass(frozen=True)
class BasisAnalysis(Analysis):
    """An :class:`~grokscope.analysis.Analysis` in a group basis: every frequency, norm and loss is over Z_n of
    ``basis["n"]`` (``p`` stays the task's modulus). ``basis``: name, n, generator, shift, outside, why, exact, the
    orders, the softmax rule and the model's own losses (``model``); for a task without a group basis, name None."""

    basis: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class GroupGrid:
    """A model read over the n x n group grid of ``basis`` (module docstring); N = n*n, group order i*n + j."""

    basis: GroupBasis
    rows: Tensor  # [N] task rows of the group inputs
    labels: Tensor  # [N] group labels 0..n-1
    train: Tensor  # [N] bool, in the task's train split
    test: Tensor  # [N] bool
    table: Tensor  # [N, n] float64 logits of the group outputs c_order
    logits: Tensor  # [N_task, p] float64: the model's own logits over every task row
    acts: Tensor | None  # [N, d_mlp] last MLP's activations at the last position
    patterns: list[Tensor]  # per layer [N, heads]: attention from the last position to position 0
    w_e: Tensor  # [n, d_model] W_E[a_order]
    w_l: Tensor  # [d_mlp, n] W_L[:, c_order]


def read_group_grid(model: Model, task: Any, basis: GroupBasis) -> GroupGrid:
    """One forward pass over the task's tokens, read through ``basis``. :class:`MeasureError` when a group input is
    not in the task or its answer is not a group output."""
    p = task.p
    rows, labels, _ = group_rows(task, basis)
    in_train = torch.zeros(task.labels.shape[0], dtype=torch.bool)
    in_train[task.train_idx] = True
    in_test = torch.zeros_like(in_train)
    in_test[task.test_idx] = True
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
    return GroupGrid(basis, rows, labels, in_train[rows], in_test[rows], logits[rows][:, basis.c_order], logits,
                     acts, patterns, w_e, w_l)


def _model_losses(grid: GroupGrid, task: Any) -> dict[str, float]:
    """The model's own cross-entropy (all p classes) on every task row, its split, and the inputs outside the group."""
    labels = task.labels
    out: dict[str, float] = {}
    out["loss"], out["acc"] = cross_entropy(grid.logits, labels)
    out[names.TRAIN_LOSS], out[names.TRAIN_ACC] = cross_entropy(grid.logits[task.train_idx], labels[task.train_idx])
    out[names.TEST_LOSS], out[names.TEST_ACC] = cross_entropy(grid.logits[task.test_idx], labels[task.test_idx])
    outside = torch.ones(labels.shape[0], dtype=torch.bool)
    outside[grid.rows] = False
    out["n_outside"] = float(outside.sum())
    out["outside_loss"], out["outside_acc"] = cross_entropy(grid.logits[outside], labels[outside])
    return out


def analyze_group(model: Model, task: Any, basis: GroupBasis, *, key_freqs: Any = None, rule: str = "W_L_dft",
                  step: int | None = None) -> BasisAnalysis:
    """The whole analysis of :func:`~grokscope.analysis.analyze_checkpoint` on the model read in ``basis``
    (:func:`read_group_grid`); frequencies are over Z_n, 1..n//2."""
    model.eval()
    model, task, _ = on_cpu(model, task)  # a model on a device: read through a CPU copy (float64, CPU index tensors)
    n = basis.n
    with torch.no_grad():
        grid = read_group_grid(model, task, basis)
        table, labels, acts = grid.table, grid.labels, grid.acts
        if acts is None:
            raise MeasureError(f"{type(model).__name__} has no MLP to analyse")
        by_rule = {r: group_key_frequencies(r, w_e=grid.w_e, w_l=grid.w_l, table=table, acts=acts)
                   for r in KEY_FREQ_RULES}
        if key_freqs is not None:
            freqs, used_rule = checked_group_keys(key_freqs, n), "given"
        elif rule in by_rule:
            freqs, used_rule = by_rule[rule], rule
        else:
            raise MeasureError(f"unknown key-frequency rule {rule!r}; known: {', '.join(KEY_FREQ_RULES)}")
        train_rows, test_rows = torch.nonzero(grid.train).reshape(-1), torch.nonzero(grid.test).reshape(-1)

        def row(name: str, scored: Tensor) -> AblationRow:
            train_loss, _ = cross_entropy(scored[train_rows], labels[train_rows])
            test_loss, _ = cross_entropy(scored[test_rows], labels[test_rows])
            return AblationRow(name, *cross_entropy(scored, labels), train_loss, test_loss)

        measured = group_restricted_excluded(table, labels, train_rows, n, freqs)
        const, key = group_label_wave_fit(table, labels, n, freqs)
        ablations = [row("original", table), row("remove all key freqs", table - key[labels])]
        ablations.append(restricted := row("keep only key freqs (restricted)", (const + key)[labels]))
        ablations.append(row("keep key a+-b terms", group_block_mask_table(table, n, freqs, product_only=True)))
        ablations.append(row("keep key 3x3 blocks", group_block_mask_table(table, n, freqs, product_only=False)))
        for k in freqs:
            _, key_k = group_label_wave_fit(table, labels, n, [k])
            ablations.append(row(f"remove k={k}", table - key_k[labels]))
        whole = ablations[0]
        losses = {"loss": whole.loss, "acc": whole.acc, names.TRAIN_LOSS: whole.train_loss,
                  names.TEST_LOSS: whole.test_loss, names.RESTRICTED_LOSS: restricted.loss,
                  names.RESTRICTED_ACC: restricted.acc, "restricted_test_loss": restricted.test_loss}
        losses.update((name, v) for name, v in measured.items() if name not in losses)

        we_comp, we_freq = group_component_norms(grid.w_e, 0), group_frequency_norms(grid.w_e, 0)
        wl_freq = group_frequency_norms(grid.w_l, 1)
        wl_energy = wl_freq**2
        total_wl = float(wl_energy.sum())
        key_energy = float(sum(wl_energy[k - 1] for k in freqs)) if freqs else 0.0
        residual = math.sqrt(max(total_wl - key_energy, 0.0) / total_wl) if total_wl > 0 else float("nan")
        ffs, fcr = group_ffs_fcr(grid.w_e)

        energy = group_neuron_energy(acts, n)
        fracs = group_block_fractions(energy, n, quadratic=False)
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
        key_best = (fracs[torch.tensor([k - 1 for k in freqs])].max(dim=0).values[alive] if freqs
                    else torch.zeros(int(alive.sum()), dtype=torch.float64))
        mlp_mean = float(key_best.mean()) if key_best.numel() else float("nan")
        mlp_std = float(key_best.std(unbiased=False)) if key_best.numel() else float("nan")

        fitted = group_neuron_polynomial_fits(acts, n, nfreq, explained)

        def replace(x: Tensor, name: str) -> Tensor:  # the group inputs' activations (last position) -> the fits
            x = x.clone()
            last = x[:, -1] if x.dim() == 3 else x
            last[grid.rows] = fitted.to(x.dtype)
            return x

        poly = model.run_with_hooks(task.tokens, fwd_hooks=[(post_hook_name(model), replace)])
        ablations.append(row("neurons -> polynomial fits", poly.detach()[:, : task.p].to(torch.float64)[grid.rows]
                             [:, basis.c_order]))
        logit_fit = group_logit_fit(table, labels, n, freqs)
        star = ([] if has_blocks(model) else
                group_star_plot_data(grid.w_e, model.mlp.W_in.detach(), grid.w_l))  # type: ignore[union-attr]
        g_we, g_wl = gini(we_freq), gini(wl_freq)
        table5 = Table5Row(losses[names.TEST_LOSS], g_we, g_wl, list(freqs), logit_fit.fve, mlp_mean, mlp_std)
        described = {**basis.to_dict(), "softmax": SOFTMAX_RULE, "model": _model_losses(grid, task)}

    return BasisAnalysis(
        p=task.p, arch=getattr(getattr(model, "cfg", None), "arch", type(model).__name__),
        formula=getattr(task.config, "formula", "?"), step=step, key_frequencies=list(freqs), key_freq_rule=used_rule,
        key_frequencies_by_rule=by_rule, losses=losses, W_E_component_norms=we_comp.tolist(),
        W_E_frequency_norms=we_freq.tolist(), W_L_frequency_norms=wl_freq.tolist(), W_L_residual_fraction=residual,
        gini_W_E=g_we, gini_W_L=g_wl, sum_sq_weights=sum_sq_weights(model), ffs=ffs, fcr=fcr, neurons=neurons,
        logit_fit=logit_fit, ablations=ablations, attention=group_attention_fits(grid.patterns, n), star=star,
        table5=table5, basis=described,
    )


def analyze_in_basis(model: Model, task: Any, *, basis: str | GroupBasis | None = None, key_freqs: Any = None,
                     rule: str = "W_L_dft", step: int | None = None) -> BasisAnalysis:
    """Section 4 of one checkpoint in the task's group basis: the detected one, or ``basis`` (``"additive"``,
    ``"dlog"`` or a :class:`~grokscope.measures.bases.GroupBasis`). The plain additive basis (a+b, a collapsing sum
    such as a^2+b, or a task with no group basis, whose reason is kept under ``basis["why"]``) is the additive
    analysis itself (:func:`~grokscope.analysis.analyze_checkpoint`, which needs the full grid and an odd p);
    any other basis runs :func:`analyze_group`. Raises :class:`MeasureError` (a ValueError) when neither applies."""
    chosen: GroupBasis | None
    if isinstance(basis, GroupBasis):
        chosen, why = basis, basis.why
    else:
        chosen, why = task_basis(task, basis)
    if chosen is not None and not is_identity(chosen, task.p):
        return analyze_group(model, task, chosen, key_freqs=key_freqs, rule=rule, step=step)
    check_task(task)
    plain = analyze_checkpoint(model, task, key_freqs=key_freqs, rule=rule, step=step)
    described: dict[str, Any] = {"name": None, "n": task.p, "generator": None, "shift": 0, "outside": None,
                                 "why": why, "exact": False}
    if chosen is not None:
        described = {**chosen.to_dict(), "why": why}
    described["softmax"] = "over all p outputs: the additive analysis as it stands"
    return BasisAnalysis(**{f.name: getattr(plain, f.name) for f in fields(Analysis)}, basis=described)


def basis_summary(basis: dict[str, Any]) -> str:
    """One line naming a basis dict (``BasisAnalysis.basis``): name, group, generator, shift, outside."""
    if not basis:
        return ""
    if basis.get("name") is None:
        return f"basis:      none (additive analysis of tokens and answers): {basis.get('why', '')}"
    text = f"basis:      {basis['name']} over Z_{basis['n']}"
    if basis.get("generator") is not None:
        text += f", generator g = {basis['generator']}"
    if basis.get("shift"):
        text += f", of t + {basis['shift']}"
    if basis.get("outside"):
        text += f"; outside: {basis['outside']}"
    if not basis.get("exact", True):
        text += " (output side only: an operand collapses)"
    return text
