"""AdamW (Loshchilov & Hutter) with decoupled weight decay: the update rule of every grokscope run.

The same numbers as ``torch.optim.AdamW(..., fused=True)`` (it calls the same fused kernel with the same
arguments, so the weights are bitwise those of torch's optimiser), without the ``torch.optim.Optimizer``
machinery around it: that class imports ``torch._dynamo`` on first use, a large part of a command's start-up, for
a compiler grokscope never calls. Where the fused kernel is missing (torch < 2.4 on the CPU) the update is the
textbook single-tensor one, written out below. :func:`grokscope.training.optim.make_optimizer` builds it.

The interface is the part of ``torch.optim.Optimizer`` the loop and the run store use: ``param_groups``
(one group; ``lr`` is set per update), ``state`` (per parameter: ``step``, ``exp_avg``, ``exp_avg_sq``, the
keys torch uses, so resume states stay compatible), ``zero_grad`` and ``step``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

__all__ = ["AdamW", "adamw_update"]


def _fused_kernel():
    return getattr(torch, "_fused_adamw_", None)


class AdamW:
    """AdamW over ``params``: ``lr``, ``betas``, ``eps`` and ``weight_decay`` (decoupled: ``p -= lr * wd * p``)."""

    def __init__(self, params: Iterable[Tensor], *, lr: float, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        params = list(params)
        if not params:
            raise ValueError("AdamW: no parameters to optimise")
        group = dict(params=params, lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay)
        self.param_groups: list[dict[str, Any]] = [group]
        self.state: defaultdict[Tensor, dict[str, Tensor]] = defaultdict(dict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in (p for group in self.param_groups for p in group["params"]):
            if p.grad is not None:
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient (the others, and their state, are left alone)."""
        self.adamw_step(self.param_groups[0])

    def adamw_step(self, group: dict[str, Any]) -> None:
        """The AdamW update of one parameter group (``params``, ``lr``, ``betas``, ``eps``, ``weight_decay``)."""
        params = [p for p in group["params"] if p.grad is not None]
        for p in params:
            state = self.state[p]
            if not state:  # torch's lazy initialisation: a float32 step counter and zero moments
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if params:
            states = [self.state[p] for p in params]
            adamw_update(
                params, [p.grad for p in params], [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states],
                [s["step"] for s in states], lr=group["lr"], betas=group["betas"], eps=group["eps"],
                weight_decay=group["weight_decay"],
            )


def adamw_update(
    params: list[Tensor], grads: list[Tensor], exp_avgs: list[Tensor], exp_avg_sqs: list[Tensor], steps: list[Tensor],
    *, lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
) -> None:
    """One AdamW update in place (``steps``: scalar float32 counters, incremented here). The fused kernel when
    every tensor is on a device that has it, else the single-tensor update."""
    beta1, beta2 = betas
    kernel = _fused_kernel()
    torch._foreach_add_(steps, 1)
    if kernel is not None:
        try:
            kernel(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False, lr=lr, beta1=beta1, beta2=beta2,
                   weight_decay=weight_decay, eps=eps, maximize=False, grad_scale=None, found_inf=None)
            return
        except (RuntimeError, NotImplementedError):  # no fused kernel for this device or dtype
            pass
    for p, g, m, v, s in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        step = float(s)
        p.mul_(1 - lr * weight_decay)
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / math.sqrt(1 - beta2**step)).add_(eps)
        p.addcdiv_(m, denom, value=-lr / (1 - beta1**step))
