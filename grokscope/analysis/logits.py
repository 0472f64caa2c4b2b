"""The half of Section 4 that reads logits only, so it applies to any model that maps tokens to logits: your own
module, a registered one, or grokscope's (whose whole analysis, :func:`~grokscope.analysis.reverse.analyze_grid`,
uses these pieces for its logit-level rows).

Over a grid of Z_n (a task's own p x p grid, or its group basis): the logits' wave fit
(:func:`logit_wave_fit`), the key-frequency block masks (:func:`block_mask_table`), the losses and logit ablations
of :func:`logit_level`, and :func:`analyze_logits`, the analysis.json of a model whose weights grokscope cannot
read (no TransformerLens names): key frequencies from the logits' spectrum, restricted and excluded loss, the
ablations and the logit fit, with the weight and neuron parts listed as skipped. Shapes: N = n*n grid inputs;
tables [N, n] float64; labels [N].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from grokscope.analysis.records import AblationRow, LogitFit, json_safe
from grokscope.measures import (
    check_task,
    cross_entropy,
    key_frequencies_from_norms,
    label_wave_fit,
    names,
    restricted_excluded,
)
from grokscope.measures.bases import (
    GroupBasis,
    checked_group_keys,
    frequency_rows,
    group_frequency_norms,
    group_inverse_2d,
    group_label_wave_fit,
    group_restricted_excluded,
    group_rows,
    group_transform_2d,
    identity_basis,
    is_identity,
    task_basis,
)

__all__ = ["ablation_row", "analyze_logits", "block_mask_table", "grid_split", "logit_level", "logit_wave_fit"]


def logit_wave_fit(table: Tensor, labels: Tensor, n: int, freqs: Iterable[int]) -> LogitFit:
    """Fit ``table`` [N, n] (labels [N]) by sum_k alpha_k cos(w_k(s_r - c)), w_k = 2 pi k / n, s_r row r's label.

    The waves are orthogonal over rows x outputs and have zero mean over c, so OLS after subtracting each row's mean
    (softmax-invariant) gives alpha_k = <L, cos_k> / ||cos_k||^2 independently per k, with ||cos_k||^2 = N n / 2
    (N n for the Nyquist cosine, whose sine coefficient is 0).
    """
    freqs = sorted(int(k) for k in freqs)
    rows = table.shape[0]
    centred = table - table.mean(dim=1, keepdim=True)
    d = (labels[:, None] - torch.arange(n, device=labels.device)[None, :]) % n  # s - c
    g = torch.zeros(n, dtype=torch.float64, device=table.device).index_add_(0, d.reshape(-1), centred.reshape(-1))
    dd = torch.arange(n, dtype=torch.float64, device=table.device)
    alpha, sin_c = {}, {}
    fit = torch.zeros_like(centred)
    for k in freqs:
        norm_sq = rows * n / (1.0 if 2 * k == n else 2.0)
        cos_d, sin_d = torch.cos(2 * math.pi * k * dd / n), torch.sin(2 * math.pi * k * dd / n)
        alpha[k] = float(cos_d @ g) / norm_sq
        sin_c[k] = 0.0 if 2 * k == n else float(sin_d @ g) / norm_sq
        fit += alpha[k] * cos_d[d]
    total = float((centred**2).sum())
    fve = 1.0 - float(((centred - fit) ** 2).sum()) / total if total > 0 else float("nan")
    loss, acc = cross_entropy(fit, labels)
    return LogitFit(freqs, alpha, sin_c, fve, loss, acc)


def block_mask_table(table: Tensor, n: int, freqs: Iterable[int], *, product_only: bool) -> Tensor:
    """Keep only the key-frequency parts of a grid table [N, ...] in the 2D (i, j) Fourier basis over Z_n.

    ``product_only=False``: keep (0,0) and each key k's block {0, cos k, sin k}^2 (all degree-2 terms).
    ``product_only=True``: keep (0,0) and each key k's block {cos k, sin k}^2, i.e. the constant and
    cos/sin(w_k(i+j)), cos/sin(w_k(i-j)) (the paper's "constant and 20 terms" for 5 key frequencies).
    """
    rest = table.shape[1:]
    coef = group_transform_2d(table.to(torch.float64).reshape(n, n, *rest))
    mask = torch.zeros(n, n, dtype=torch.float64, device=coef.device)
    mask[0, 0] = 1.0
    for k in freqs:
        idx = torch.tensor(frequency_rows(k, n) if product_only else [0, *frequency_rows(k, n)], device=coef.device)
        mask[idx[:, None], idx[None, :]] = 1.0
    return group_inverse_2d(coef * mask.reshape(n, n, *([1] * len(rest)))).reshape(n * n, *rest)


def grid_split(task: Any, basis: GroupBasis, *, task_order: bool = False) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(rows [N], labels [N], train, test) of ``basis``'s grid: the task rows of the grid inputs, their labels, and the
    grid positions of the split's rows (in the task's order when ``task_order``, else sorted)."""
    rows, labels, _ = group_rows(task, basis)
    position = torch.full((task.labels.shape[0],), -1, dtype=torch.int64, device=rows.device)
    position[rows] = torch.arange(rows.shape[0], device=rows.device)
    split = []
    for idx in (task.train_idx, task.test_idx):
        pos = position[idx]
        pos = pos[pos >= 0]
        split.append(pos if task_order else pos.sort().values)
    return rows, labels, split[0], split[1]


def ablation_row(name: str, scored: Tensor, labels: Tensor, train: Tensor, test: Tensor) -> AblationRow:
    """Loss and accuracy on every grid input, the train and the test loss of a grid logit table ``scored`` [N, n]
    (labels [N]; train, test: grid positions)."""
    train_loss, _ = cross_entropy(scored[train], labels[train])
    test_loss, _ = cross_entropy(scored[test], labels[test])
    return AblationRow(name, *cross_entropy(scored, labels), train_loss, test_loss)


def logit_level(table: Tensor, labels: Tensor, train: Tensor, test: Tensor, n: int, freqs: list[int], *,
                task_order: bool = False) -> tuple[dict[str, float], list[AblationRow], LogitFit]:
    """The half of Section 4 that reads logits only, so it applies to any model: (losses, ablation rows, logit fit)
    of a grid logit table [N, n] float64 with labels [N], the grid positions of the train and test rows, and the key
    frequencies. Losses: whole, train, test, restricted and the excluded ones; ablations: the original, all key
    frequencies removed, only they kept (restricted), the key a+-b terms, the key 3x3 blocks, each key removed."""
    wave_fit = label_wave_fit if task_order else group_label_wave_fit

    def row(name: str, scored: Tensor) -> AblationRow:
        return ablation_row(name, scored, labels, train, test)

    # Restricted / excluded (logit level): the excluded losses are the progress measures'; the restricted loss
    # is its ablation row's score of the expanded table (the measure's per-label sum agrees to rounding).
    measured = (restricted_excluded if task_order else group_restricted_excluded)(table, labels, train, n, freqs)
    const, key = wave_fit(table, labels, n, freqs)
    ablations = [row("original", table), row("remove all key freqs", table - key[labels])]
    ablations.append(restricted := row("keep only key freqs (restricted)", (const + key)[labels]))
    ablations.append(row("keep key a+-b terms", block_mask_table(table, n, freqs, product_only=True)))
    ablations.append(row("keep key 3x3 blocks", block_mask_table(table, n, freqs, product_only=False)))
    for k in freqs:
        _, key_k = wave_fit(table, labels, n, [k])
        ablations.append(row(f"remove k={k}", table - key_k[labels]))
    whole = ablations[0]
    losses = {"loss": whole.loss, "acc": whole.acc, names.TRAIN_LOSS: whole.train_loss,
              names.TEST_LOSS: whole.test_loss, names.RESTRICTED_LOSS: restricted.loss,
              names.RESTRICTED_ACC: restricted.acc, "restricted_test_loss": restricted.test_loss}
    losses.update((name, v) for name, v in measured.items() if name not in losses)  # the excluded ones
    return losses, ablations, logit_wave_fit(table, labels, n, freqs)


def analyze_logits(forward: Callable[[Tensor], Tensor], task: Any, *, basis: str | None = None,
                   key_freqs: Iterable[int] | None = None, step: int | None = None, why: str = "") -> dict[str, Any]:
    """The analysis.json dict of a model known only by its logits: ``forward`` maps tokens [N, n_ctx] to logits
    [N, >= p] on a modular task, read over the task's group basis (the detected one or ``basis``; the task's own
    grid when that is the additive one). Key frequencies: ``key_freqs``, else the logits' spectrum
    (``logits_dft``). ``why``: why the weight and neuron parts are skipped. MeasureError (a ValueError) for a task
    without a full grid."""
    chosen, basis_why = task_basis(task, basis)
    task_order = chosen is None or is_identity(chosen, task.p)
    if task_order:
        chosen = identity_basis(check_task(task), "the task's own grid")
    assert chosen is not None
    n = chosen.n
    rows, labels, train, test = grid_split(task, chosen, task_order=task_order)
    with torch.no_grad():
        logits = forward(task.tokens).detach()[:, : task.p].to(torch.float64)  # [N_task, p]
        table = logits[rows][:, chosen.c_order]  # [N, n]
        if key_freqs is not None:
            freqs, rule = checked_group_keys(key_freqs, n), "given"
        else:
            freqs, rule = key_frequencies_from_norms(group_frequency_norms(table, 1)), "logits_dft"
        losses, ablations, fit = logit_level(table, labels, train, test, n, freqs, task_order=task_order)
    described = {**chosen.to_dict(), "why": basis_why} if not task_order else {"name": None, "n": n, "why": basis_why}
    return json_safe({
        "level": "logits", "step": step, "task": task.config.kind, "formula": getattr(task.config, "formula", None),
        "p": task.p, "basis": described, "key_frequencies": freqs, "key_freq_rule": rule, "losses": losses,
        "ablations": [a.to_dict() for a in ablations], "logit_fit": fit.to_dict(),
        "skipped": {"weights, neurons and attention (W_E, W_L, Gini, neuron clusters, star plots, attention fits)":
                    why or "the model's weights are not readable by name"},
    })
