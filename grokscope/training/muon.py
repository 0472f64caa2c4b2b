"""Muon on the hidden weight matrices, AdamW on everything else: ``optim.optimizer="muon"``.

Muon (Keller Jordan, 2024) replaces each hidden matrix's update by its momentum, orthogonalised: with gradient G,
momentum buffer B and momentum mu,

    B <- mu B + (1 - mu) G;   U <- (1 - mu) G + mu B (Nesterov);   O <- NS5(U);   W <- W (1 - lr wd) - lr s O

where NS5 is five steps of the quintic Newton-Schulz iteration X <- a X + (b A + c A^2) X, A = X X^T, on
X = U / ||U||_F in bfloat16 (a, b, c = 3.4445, -4.7750, 2.0315), worked on the wide orientation of U, and s the
step scale of ``optim.muon_adjust_lr`` for a matrix read as [in, out] (our layout, x @ W): ``"match_rms_adamw"``
s = 0.2 sqrt(max(in, out)) (Liu et al. 2025, "Muon is scalable for LLM training": AdamW's lr and weight decay
carry over), ``"original"`` s = sqrt(max(1, out / in)), ``"none"`` s = 1. These are the numbers of
``torch.optim.Muon`` (where torch has it; tests compare the two bit for bit), computed here without the
``torch.optim.Optimizer`` machinery (see :mod:`grokscope.training.adamw`), and its state key ``momentum_buffer``.

Which parameters: as the Muon authors advise (and ``torch.optim.Muon``'s docstring), Muon takes the hidden
matrices only: every 2-D parameter except the embeddings and unembedding (``W_E``, ``W_pos``, ``W_U``, or any name
containing ``embed``), plus the attention weights, which TransformerLens stores per head as [n_heads, d_model,
d_head] (``W_Q``, ``W_K``, ``W_V``) or [n_heads, d_head, d_model] (``W_O``) and Muon sees as the one
[d_model, n_heads d_head] (resp. [n_heads d_head, d_model]) matrix of the projection. Everything else (embeddings,
unembedding, biases, norms; a TransformerLens bias ``b_*`` whatever its shape, so ``model.biases="all"``'s per-head
[n_heads, d_head] ``b_Q``, ``b_K``, ``b_V`` too) is updated by AdamW with ``optim.lr``, ``betas``, ``eps`` and
``weight_decay``.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn

from grokscope.training.adamw import AdamW

__all__ = ["NS_COEFFICIENTS", "MuonAdamW", "muon_scale", "muon_update", "newton_schulz", "split_for_muon"]

NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)  # Keller Jordan's quintic, as torch.optim.Muon
NS_STEPS = 5
NS_EPS = 1e-7
EMBEDDING_NAMES = ("W_E", "W_pos", "W_U")
ATTENTION_IN, ATTENTION_OUT = ("W_Q", "W_K", "W_V"), ("W_O",)


def newton_schulz(update: Tensor, steps: int = NS_STEPS, eps: float = NS_EPS) -> Tensor:
    """[m, n] -> [m, n] (bfloat16): the approximate orthogonalisation U S' V^T (S' ~ 1) of ``update`` = U S V^T by
    ``steps`` quintic Newton-Schulz iterations on the wide orientation, after dividing by the Frobenius norm."""
    a, b, c = NS_COEFFICIENTS
    x = update.bfloat16()
    tall = update.size(0) > update.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))
    for _ in range(steps):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    return x.T if tall else x


def muon_scale(fan_in: int, fan_out: int, adjust: str) -> float:
    """The step scale s of a matrix [fan_in, fan_out] (``optim.muon_adjust_lr``)."""
    if adjust == "match_rms_adamw":
        return 0.2 * math.sqrt(max(fan_in, fan_out))
    if adjust == "original":
        return math.sqrt(max(1.0, fan_out / fan_in))
    return 1.0


def as_matrix(name: str, t: Tensor) -> Tensor:
    """The [in, out] matrix of a Muon parameter: itself when 2-D, the attention projection when per head."""
    leaf = name.rpartition(".")[2]
    if t.ndim == 3 and leaf in ATTENTION_IN:  # [h, d_model, d_head] -> [d_model, h d_head]
        return t.permute(1, 0, 2).reshape(t.shape[1], t.shape[0] * t.shape[2])
    if t.ndim == 3 and leaf in ATTENTION_OUT:  # [h, d_head, d_model] -> [h d_head, d_model]
        return t.reshape(t.shape[0] * t.shape[1], t.shape[2])
    return t


def from_matrix(name: str, m: Tensor, like: Tensor) -> Tensor:
    """The inverse of :func:`as_matrix`: ``m`` back in the shape of ``like``."""
    leaf = name.rpartition(".")[2]
    if like.ndim == 3 and leaf in ATTENTION_IN:
        h, d_model, d_head = like.shape
        return m.reshape(d_model, h, d_head).permute(1, 0, 2)
    return m.reshape(like.shape)


Named = list[tuple[str, nn.Parameter]]


def split_for_muon(model: nn.Module) -> tuple[Named, Named]:
    """(Muon's, AdamW's) (name, parameter) pairs of ``model``: the hidden matrices, and the rest (module docstring;
    the weight of any ``nn.Embedding`` of a user's module is an embedding too)."""
    tables = {f"{m}.weight".lstrip(".") for m, mod in model.named_modules() if isinstance(mod, nn.Embedding)}
    muon: Named = []
    adamw: Named = []
    for name, p in model.named_parameters():
        leaf = name.rpartition(".")[2]
        embedding = leaf in EMBEDDING_NAMES or "embed" in name.lower() or name in tables
        attention = p.ndim == 3 and leaf in ATTENTION_IN + ATTENTION_OUT
        bias = leaf.startswith("b_")  # TransformerLens biases: b_Q, b_K, b_V are [n_heads, d_head], still biases
        (muon if not (embedding or bias) and (p.ndim == 2 or attention) else adamw).append((name, p))
    return muon, adamw


def muon_update(params: list[Tensor], grads: list[Tensor], buffers: list[Tensor], names: list[str], *, lr: float,
                weight_decay: float, momentum: float, adjust: str) -> None:
    """One Muon update in place (module docstring) of each parameter, its gradient and momentum buffer."""
    for p, g, buf, name in zip(params, grads, buffers, names):
        buf.lerp_(g, 1 - momentum)
        matrix = as_matrix(name, g.lerp(buf, momentum))
        fan_in, fan_out = matrix.shape
        ortho = from_matrix(name, newton_schulz(matrix), p)
        p.mul_(1 - lr * weight_decay)
        p.add_(ortho, alpha=-lr * muon_scale(fan_in, fan_out, adjust))


class MuonAdamW(AdamW):
    """Two parameter groups: AdamW's (``param_groups[0]``, as :class:`AdamW`) and Muon's (``param_groups[1]``: its
    learning rate is ``lr * lr_scale``, ``lr`` being what the loop sets on every group). ``state`` holds AdamW's
    ``step``/``exp_avg``/``exp_avg_sq`` and Muon's ``momentum_buffer`` per parameter (the run's resume state)."""

    def __init__(self, muon: Named, adamw: Named, *, lr: float,
                 betas: tuple[float, float], eps: float, weight_decay: float, momentum: float, lr_scale: float,
                 adjust: str):
        if not muon:
            raise ValueError("optim.optimizer: 'muon' needs hidden weight matrices, and this model has none")
        self.param_groups: list[dict[str, Any]] = [
            dict(params=[p for _, p in adamw], lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay),
            dict(params=[p for _, p in muon], names=[n for n, _ in muon], lr=lr, lr_scale=lr_scale,
                 weight_decay=weight_decay, momentum=momentum, adjust=adjust),
        ]
        self.state: defaultdict[Tensor, dict[str, Tensor]] = defaultdict(dict)

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter that has a gradient: AdamW's group, then Muon's."""
        self.adamw_step(self.param_groups[0])
        group = self.param_groups[1]
        params, grads, buffers, names = [], [], [], []
        for p, name in zip(group["params"], group["names"]):
            if p.grad is None:
                continue
            if "momentum_buffer" not in self.state[p]:  # torch's lazy initialisation
                self.state[p]["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            buffers.append(self.state[p]["momentum_buffer"])
            names.append(name)
        if params:
            muon_update(params, grads, buffers, names, lr=group["lr"] * group["lr_scale"],
                        weight_decay=group["weight_decay"], momentum=group["momentum"], adjust=group["adjust"])
