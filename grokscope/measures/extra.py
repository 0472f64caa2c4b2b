"""Cheap extra progress measures proposed since Nanda et al.: activation sparsity and absolute weight entropy
(Golechha 2024, "Progress Measures for Grokking on Real-world Tasks") and the logit norm per parameter norm (our
reading of Varma et al. 2023's "efficiency"). Pure functions: tensors in, numbers out.

:func:`progress_measures <grokscope.measures.progress.progress_measures>` adds :func:`extra_measures` to every
measurement (names in :mod:`grokscope.measures.names`; formulas in ``docs/measures.md``). Sums are numpy's
pairwise sums in float64, so the values do not depend on torch's thread count.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grokscope.measures import names
from grokscope.measures.grid import post_hook_name
from grokscope.models import has_blocks, has_mlp
from grokscope.models.fast import FastPlan, fast_tables, is_fast_eligible, model_tensors
from grokscope.models.transformer import HookedModule, Transformer, activation

__all__ = [
    "ACT_SPARSITY_TAU", "abs_weight_entropy", "activation_sparsity", "extra_measures", "last_mlp_post",
    "logit_efficiency", "normalised_weight_entropy",
]

#: An MLP activation counts as "off" (sparse) when it is <= this: for ReLU exactly the zeros, for GELU the
#: entries whose pre-activation is <= 0 (GELU(x) <= 0 iff x <= 0).
ACT_SPARSITY_TAU = 0.0


def _flat64(values: Iterable[Tensor]) -> np.ndarray:
    parts = [v.detach().reshape(-1).to(torch.float64).cpu().numpy() for v in values]
    return np.concatenate(parts) if parts else np.zeros(0)


def activation_sparsity(acts: Tensor, tau: float = ACT_SPARSITY_TAU) -> float:
    """Fraction of the entries of ``acts`` (any shape; the measures pass the last MLP's post-activations at the
    last position over every input, [N, d_mlp]) that are <= ``tau``. Empty -> nan."""
    a = acts.detach()
    if a.numel() == 0:
        return math.nan
    return int(torch.count_nonzero(a <= tau)) / a.numel()  # an integer count: exact whatever the thread count


def abs_weight_entropy(weights: Iterable[Tensor]) -> float:
    """Golechha's absolute weight entropy H(W) = -sum_i |w_i| ln |w_i| over every entry of every tensor given
    (0 ln 0 = 0), in float64. Not scale-free: multiplying every weight by c gives c H - c ln(c) sum |w|."""
    w = np.abs(_flat64(weights))
    nz = w[w > 0]
    return float(-np.sum(nz * np.log(nz)))


def normalised_weight_entropy(weights: Iterable[Tensor]) -> float:
    """Shannon entropy (nats) of q_i = |w_i| / sum_j |w_j| over every entry of every tensor: ln N for equal
    magnitudes, 0 for one non-zero weight, 0 when all are zero. Scale-free (unchanged by w -> c w), so it reads the
    spread of the weights apart from their norm. Equals H(W) / S + ln S with S = sum |w| and H(W) Golechha's."""
    w = np.abs(_flat64(weights))
    total = float(np.sum(w))
    if total <= 0:
        return 0.0
    q = w[w > 0] / total
    return float(-np.sum(q * np.log(q)))


def logit_efficiency(logits: Tensor, param_norm: float) -> float:
    """||logits||_F / ||theta||_2: the Frobenius norm of the logit table ``logits`` [N, p] (every input, the
    answer columns) per unit of parameter L2 norm ``param_norm``. nan when ``param_norm`` is 0."""
    if not param_norm > 0:
        return math.nan
    x = logits.detach().to(torch.float64).cpu().numpy()
    return float(np.sqrt(np.sum(x * x))) / float(param_norm)


def last_mlp_post(model: nn.Module, task: Any) -> Tensor | None:
    """The last MLP layer's post-activations at the last position over every input of ``task``, [N, d_mlp] (task
    order), under ``no_grad``. The one-layer transformer on [a, b, =] rows is read through the fast path's tables
    (its pre-activation is the first d_mlp columns of the gathered rows: no pass through W_U, no cache of every
    position); other grokscope models by one hooked forward pass; None for a module that has no such hooks (a
    user's module)."""
    with torch.no_grad():
        if is_fast_eligible(model, task):
            assert isinstance(model, Transformer)
            return activation(model.cfg.act_fn, _fast_pre(model, task))
        if not isinstance(model, HookedModule) or not (has_blocks(model) or has_mlp(model)):
            return None
        seen: list[Tensor] = []

        def keep(x: Tensor, name: str) -> None:
            seen.append(x[:, -1] if x.dim() == 3 else x)

        model.run_with_hooks(task.tokens, [(post_hook_name(model), keep)])
    return seen[-1].detach() if seen else None


def _fast_pre(model: Transformer, task: Any) -> Tensor:
    """MLP pre-activations at "=" [N, d_mlp] of a fast-path-eligible transformer (see :mod:`grokscope.models.fast`:
    ``pre = c + sum_h T_2(h) + sum_h A_0h D_0(a)_h + A_1h D_1(b)_h``, the first d_mlp columns of the gathered rows)."""
    tables = fast_tables(model_tensors(model), int(task.p))
    heads = model.cfg.n_heads
    plan = FastPlan(task.tokens.unsqueeze(0), model.d_vocab, heads)
    flat = tables["scores"].reshape(-1, heads)
    s0, s1 = flat[plan.score_a], flat[plan.score_b]  # [N, H]
    pattern = torch.stack([s0, s1, tables["score_eq"].expand_as(s0)], dim=-1).softmax(dim=-1)  # [N, H, 3]
    weights = torch.cat([pattern[..., 0], pattern[..., 1], torch.ones_like(s0[:, :1])], dim=1)  # plan's row order
    z = F.embedding_bag(plan.gather.idx, tables["table"], per_sample_weights=weights, mode="sum")
    return z[:, : model.cfg.d_mlp]


def extra_measures(model: nn.Module, task: Any, logits: Tensor, sum_sq: float) -> dict[str, float]:
    """The extra measures of one model state: ``act_sparsity`` (:func:`activation_sparsity` of the last MLP's
    post-activations at the "=" position over every input of ``task``), ``abs_weight_entropy`` and
    ``weight_entropy_normalised`` over every parameter, and ``logit_efficiency`` (:func:`logit_efficiency` of the
    logits [N, >= p] on ``task.tokens``, answer columns ``:p``, per sqrt(``sum_sq``), ``sum_sq`` being the sum of
    squared parameters the caller already has)."""
    params = [w for w in model.parameters()]
    acts = last_mlp_post(model, task)
    return {
        names.ACT_SPARSITY: math.nan if acts is None else activation_sparsity(acts),
        names.ABS_WEIGHT_ENTROPY: abs_weight_entropy(params),
        names.WEIGHT_ENTROPY_NORMALISED: normalised_weight_entropy(params),
        names.LOGIT_EFFICIENCY: logit_efficiency(logits[:, : task.p], math.sqrt(max(sum_sq, 0.0))),
    }
