"""Section 4 of the paper in the task's own group basis (issue 21): a model read through the relabelling of
:class:`~grokscope.measures.bases.GroupBasis` is an additive model over Z_n, and the whole analysis (key frequencies,
restricted and excluded loss, Gini, neuron clusters and FVE, the logit fit, the ablations, the attention fits, the
Table 5 row) runs on that view with n in place of p: :func:`~grokscope.analysis.reverse.analyze_grid`, the one
Section 4 analysis over Z_n for any n. docs/measures/bases.md has the definitions.

:func:`analyze_in_basis` picks the basis (:func:`~grokscope.measures.bases.task_basis`, or the one asked for) and
returns a :class:`BasisAnalysis`: an :class:`~grokscope.analysis.Analysis` with the ``basis`` named. The plain
additive basis of a+b (every order the identity) runs :func:`~grokscope.analysis.analyze_checkpoint` itself, so
addition's numbers are those of the additive analysis, bit for bit.

The view (:func:`~grokscope.analysis.reverse.read_group_grid`): the group inputs (a_order[i], b_order[j]) in group
order i*n + j; the logits of the group's outputs c_order (the softmax is over those n classes: the outside output, 0
for a*b, is left out); W_E rows a_order; W_L columns c_order; the last MLP's activations and the attention to
position 0 at those inputs. Train and test are the task's own split restricted to the group inputs. The model's own
losses (all p classes, every task row) and its loss on the inputs outside the group are reported under
``basis["model"]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import torch

from grokscope.analysis.reverse import Analysis, GroupGrid, analyze_checkpoint, analyze_grid, read_group_grid
from grokscope.measures import check_task, cross_entropy, names
from grokscope.measures.bases import GroupBasis, is_identity, task_basis
from grokscope.measures.grid import on_cpu
from grokscope.models import Model

__all__ = ["BasisAnalysis", "analyze_group", "analyze_in_basis", "basis_summary"]

#: How the group basis treats the inputs and outputs outside the group (written into ``basis["softmax"]``).
SOFTMAX_RULE = ("the basis measures score the group inputs only, with the softmax over the group's n outputs (the "
                "outside output's logit left out); basis['model'] has the model's own losses over all p classes")


@dataclass(frozen=True)
class BasisAnalysis(Analysis):
    """An :class:`~grokscope.analysis.Analysis` in a group basis: every frequency, norm and loss is over Z_n of
    ``basis["n"]`` (``p`` stays the task's modulus). ``basis``: name, n, generator, shift, outside, why, exact, the
    orders, the softmax rule and the model's own losses (``model``); for a task without a group basis, name None."""

    basis: dict[str, Any] = field(default_factory=dict)


def _model_losses(grid: GroupGrid, task: Any) -> dict[str, float]:
    """The model's own cross-entropy (all p classes) on every task row, its split, and the inputs outside the group."""
    labels = task.labels
    out: dict[str, float] = {}
    out["loss"], out["acc"] = cross_entropy(grid.logits, labels)
    out[names.TRAIN_LOSS], out[names.TRAIN_ACC] = cross_entropy(grid.logits[task.train_idx], labels[task.train_idx])
    out[names.TEST_LOSS], out[names.TEST_ACC] = cross_entropy(grid.logits[task.test_idx], labels[task.test_idx])
    outside = torch.ones(labels.shape[0], dtype=torch.bool, device=labels.device)
    outside[grid.rows] = False
    out["n_outside"] = float(outside.sum())
    out["outside_loss"], out["outside_acc"] = cross_entropy(grid.logits[outside], labels[outside])
    return out


def analyze_group(model: Model, task: Any, basis: GroupBasis, *, key_freqs: Any = None, rule: str = "W_L_dft",
                  step: int | None = None) -> BasisAnalysis:
    """The whole analysis (:func:`~grokscope.analysis.reverse.analyze_grid`) of the model read in ``basis``
    (:func:`~grokscope.analysis.reverse.read_group_grid`); frequencies are over Z_n, 1..n//2."""
    model.eval()
    model, task, _ = on_cpu(model, task)  # a model on a device: read through a CPU copy (float64, CPU index tensors)
    grid = read_group_grid(model, task, basis)
    analysis = analyze_grid(model, task, grid, key_freqs=key_freqs, rule=rule, step=step)
    described = {**basis.to_dict(), "softmax": SOFTMAX_RULE, "model": _model_losses(grid, task)}
    return BasisAnalysis(**{f.name: getattr(analysis, f.name) for f in fields(Analysis)}, basis=described)


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
