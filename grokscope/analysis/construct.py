"""Hand-constructed networks and tables with known answers, for tests, docs and teaching.

:func:`quadratic_mlp_addition` builds an :class:`~grokscope.models.MLPModel` (x^2 activation) that computes
a + b mod p exactly with chosen frequencies; :func:`wave_logit_table` builds the ideal logit table
sum_k amplitude * cos(w_k(a+b-c)).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor

from grokscope.config import ModelConfig
from grokscope.models import MLPModel

__all__ = ["quadratic_mlp_addition", "wave_logit_table"]


def wave_logit_table(p: int, freqs: Iterable[int], amplitude: float = 1.0) -> Tensor:
    """[p*p, p] float64 with row a*p + b, column c: amplitude * sum_k cos(w_k (a + b - c))."""
    idx = torch.arange(p * p)
    s = ((idx // p + idx % p) % p).to(torch.float64)
    c = torch.arange(p, dtype=torch.float64)
    out = torch.zeros(p * p, p, dtype=torch.float64)
    for k in freqs:
        out += amplitude * torch.cos(2 * math.pi * k * (s[:, None] - c[None, :]) / p)
    return out


def quadratic_mlp_addition(p: int, freqs: Iterable[int], *, n_per_freq: int = 5, scale: float = 1.0) -> MLPModel:
    """An MLP model with x^2 activation computing (a + b) mod p exactly (argmax), using frequencies ``freqs``.

    d_model = 2|K| (a cos and a sin dimension per k), d_mlp = n_per_freq * |K| (n_per_freq = 3 or >= 5).
    W_E[a] = (cos w_k a, sin w_k a)_k and W_E["="] = 0; neuron (k, j) reads the direction theta_j = 2 pi j / n
    of frequency k's plane, so pre = cos(w_k a - theta_j) + cos(w_k b - theta_j), and writes
    scale * (cos 2 theta_j, sin 2 theta_j) back into that plane; W_U[:, c] = (cos w_k c, sin w_k c)_k.
    Then logit(c) = scale * sum_k (n/2) (1 + cos(w_k (a - b))) cos(w_k (a + b - c)): every neuron is a degree-2
    polynomial of one frequency, the argmax is always a + b, and the logit-fit FVE is exactly 2/3.
    """
    freqs = [int(k) for k in freqs]
    if n_per_freq == 4 or n_per_freq < 3:
        raise ValueError("n_per_freq must be 3 or >= 5 (evenly spaced x^2 neurons are not exact for 1, 2 or 4)")
    n_k, n = len(freqs), n_per_freq
    cfg = ModelConfig(arch="mlp", d_model=2 * n_k, d_mlp=n * n_k, act_fn="quadratic", n_heads=1, d_head=1)
    model = MLPModel(cfg, d_vocab=p + 1, d_vocab_out=p, n_ctx=3)
    x = torch.arange(p, dtype=torch.float64)
    theta = 2 * math.pi * torch.arange(n, dtype=torch.float64) / n
    w_e = torch.zeros(p + 1, 2 * n_k, dtype=torch.float64)
    w_in = torch.zeros(2 * n_k, n * n_k, dtype=torch.float64)
    w_out = torch.zeros(n * n_k, 2 * n_k, dtype=torch.float64)
    for i, k in enumerate(freqs):
        w = 2 * math.pi * k / p
        w_e[:p, 2 * i], w_e[:p, 2 * i + 1] = torch.cos(w * x), torch.sin(w * x)
        cols = slice(n * i, n * (i + 1))
        w_in[2 * i, cols], w_in[2 * i + 1, cols] = torch.cos(theta), torch.sin(theta)
        w_out[cols, 2 * i], w_out[cols, 2 * i + 1] = scale * torch.cos(2 * theta), scale * torch.sin(2 * theta)
    with torch.no_grad():
        model.embed.W_E.copy_(w_e)
        model.mlp.W_in.copy_(w_in)
        model.mlp.W_out.copy_(w_out)
        model.unembed.W_U.copy_(w_e[:p].T)
    return model.eval()
