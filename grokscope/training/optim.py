"""The optimiser of every training path: :func:`adamw_hyperparameters` and :func:`make_optimizer` (the one AdamW
construction, or Muon with AdamW: :mod:`grokscope.training.muon`), :func:`lr_at` (the one learning-rate schedule),
and the variants around the AdamW step as small pieces: gradient transforms (after ``backward``, before ``step``)
and weight transforms (after ``step``), in place under no_grad.

* :class:`GradFilter`: Grokfast EMA / moving-average filters (Lee et al. 2024).
* :func:`perpendicular_grad`: the ⊥Grad projection of Prieto et al. (2025).
* :func:`l1_prox`: decoupled L1 decay (soft thresholding).
* :func:`rescale_to_norm`: Omnigrok fixed-norm training.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from grokscope.config import OptimConfig
from grokscope.training.adamw import AdamW
from grokscope.training.muon import MuonAdamW, split_for_muon

__all__ = [
    "GradFilter", "UpdateRules", "adamw_hyperparameters", "global_norm", "l1_prox", "lr_at", "make_optimizer",
    "perpendicular_grad", "rescale_to_norm", "trainable",
]

PERP_EPS = 1e-30


def lr_at(update: int, optim: OptimConfig) -> float:
    """Learning rate of update number ``update`` (0-based): lr * min(update / warmup_steps, 1)."""
    if optim.warmup_steps == 0:
        return optim.lr
    return optim.lr * min(update / optim.warmup_steps, 1.0)


def adamw_hyperparameters(optim: OptimConfig) -> dict[str, Any]:
    """AdamW's ``lr``, ``betas``, ``eps`` and ``weight_decay`` for ``optim``: its own (L2) decay is off when
    ``optim.decay='l1'`` (:class:`UpdateRules` applies that decay after the step)."""
    weight_decay = optim.weight_decay if optim.decay == "l2" else 0.0
    return dict(lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=weight_decay)


def make_optimizer(model: nn.Module, optim: OptimConfig) -> AdamW:
    """AdamW over the model's parameters with :func:`adamw_hyperparameters`; with ``optim.optimizer="muon"``,
    Muon on the hidden matrices and that AdamW on the rest (:class:`~grokscope.training.muon.MuonAdamW`; both
    groups decay by ``weight_decay``, each at its own learning rate)."""
    if optim.optimizer == "muon":
        muon, adamw = split_for_muon(model)
        return MuonAdamW(muon, adamw, **adamw_hyperparameters(optim), momentum=optim.muon_momentum,
                         lr_scale=optim.muon_lr_scale, adjust=optim.muon_adjust_lr)
    return AdamW(model.parameters(), **adamw_hyperparameters(optim))


def trainable(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) for every parameter that trains (frozen embeddings excluded)."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


class GradFilter:
    """Grokfast filter, per parameter, with ``amplification`` the paper's lambda (``optim.filter_lambda``).
    ``"ema"``: mu <- alpha mu + (1 - alpha) g (mu = g at the first call), g <- g + amplification mu. ``"ma"``: append g
    to a window of the last ``window`` gradients; once full, g <- g + amplification mean(window).
    ``state_tensors``/``load_state_tensors`` save and restore the filter exactly."""

    def __init__(self, kind: str, *, alpha: float = 0.98, amplification: float = 2.0, window: int = 100):
        if kind not in ("ema", "ma"):
            raise ValueError(f"optim.grad_filter: unknown filter {kind!r}")
        self.kind, self.alpha, self.amplification, self.window = kind, alpha, amplification, window
        self.ema: dict[str, Tensor] = {}
        self.hist: dict[str, list[Tensor]] = {}

    @classmethod
    def from_config(cls, optim: OptimConfig) -> GradFilter | None:
        if optim.grad_filter == "none":
            return None
        return cls(optim.grad_filter, alpha=optim.filter_alpha, amplification=optim.filter_lambda,
                   window=optim.filter_window)

    @torch.no_grad()
    def apply(self, named: Iterable[tuple[str, nn.Parameter]]) -> None:
        for name, p in named:
            g = p.grad
            if g is None:
                continue
            if self.kind == "ema":
                mu = self.ema.get(name)
                mu = g.detach().clone() if mu is None else mu.mul_(self.alpha).add_(g, alpha=1 - self.alpha)
                self.ema[name] = mu
                g.add_(mu, alpha=self.amplification)
            else:
                h = self.hist.setdefault(name, [])
                h.append(g.detach().clone())
                if len(h) > self.window:
                    h.pop(0)
                if len(h) == self.window:
                    g.add_(torch.stack(h).mean(0), alpha=self.amplification)

    def state_tensors(self) -> dict[str, Tensor]:
        if self.kind == "ema":
            return {f"ema.{n}": t for n, t in self.ema.items()}
        return {f"ma.{n}": torch.stack(h) for n, h in self.hist.items() if h}

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        for key, t in tensors.items():
            kind, _, name = key.partition(".")
            if kind == "ema":
                self.ema[name] = t.clone()
            elif kind == "ma":
                self.hist[name] = [x.clone() for x in t]


@torch.no_grad()
def perpendicular_grad(named: Iterable[tuple[str, nn.Parameter]]) -> None:
    """⊥Grad per tensor: g <- g - (w.g)/(w.w + 1e-30) w, then rescaled so that its norm equals the original ||g||."""
    for _, p in named:
        g = p.grad
        if g is None:
            continue
        w = p.detach()
        norm = g.norm()
        g_perp = g - (w * g).sum() / ((w * w).sum() + PERP_EPS) * w
        perp_norm = g_perp.norm()
        g.copy_(torch.where(perp_norm > 0, g_perp * (norm / perp_norm.clamp_min(1e-300)), g_perp))


@torch.no_grad()
def l1_prox(named: Iterable[tuple[str, nn.Parameter]], threshold: float) -> None:
    """Decoupled L1 decay: w <- sign(w) max(|w| - threshold, 0), threshold = lr * weight_decay."""
    if threshold <= 0:
        return
    for _, p in named:
        p.copy_(torch.sign(p) * (p.abs() - threshold).clamp_min(0))


def global_norm(named: Iterable[tuple[str, nn.Parameter]]) -> float:
    """sqrt of the sum of squares of every given parameter (float64)."""
    with torch.no_grad():
        return float(sum(float((p.detach().to(torch.float64) ** 2).sum()) for _, p in named)) ** 0.5


@torch.no_grad()
def rescale_to_norm(named: list[tuple[str, nn.Parameter]], target: float) -> None:
    """Omnigrok fixed norm: multiply every given parameter by target / (their global L2 norm)."""
    norm = global_norm(named)
    if norm > 0:
        for _, p in named:
            p.mul_(target / norm)


class UpdateRules:
    """The optimiser variants of one config, applied around ``opt.step()`` by the training step:
    ``before_step()`` (Grokfast filter, then ⊥Grad) and ``after_step(lr)`` (L1 prox, then fixed norm).
    With the default config both do nothing."""

    def __init__(self, model: nn.Module, optim: OptimConfig):
        self.params = trainable(model)
        self.grad_filter = GradFilter.from_config(optim)
        self.perp_grad = optim.perp_grad
        self.l1 = optim.weight_decay if optim.decay == "l1" else 0.0
        self.target_norm = global_norm(self.params) if optim.fixed_norm else None  # the initial norm

    @property
    def active(self) -> bool:
        return self.grad_filter is not None or self.perp_grad or self.l1 > 0 or self.target_norm is not None

    def before_step(self) -> None:
        if self.grad_filter is not None:
            self.grad_filter.apply(self.params)
        if self.perp_grad:
            perpendicular_grad(self.params)

    def after_step(self, lr: float) -> None:
        if self.l1 > 0:
            l1_prox(self.params, lr * self.l1)
        if self.target_norm is not None:
            rescale_to_norm(self.params, self.target_norm)

    def state_tensors(self) -> dict[str, Tensor]:
        return {} if self.grad_filter is None else self.grad_filter.state_tensors()

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        if self.grad_filter is not None:
            self.grad_filter.load_state_tensors(tensors)
