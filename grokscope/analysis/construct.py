"""Hand-constructed networks and tables with known answers, for tests, docs and teaching.

:func:`quadratic_mlp_addition` builds an :class:`~grokscope.models.MLPModel` (x^2 activation) that computes
a + b mod p exactly with chosen frequencies; :func:`wave_logit_table` builds the ideal logit table
sum_k amplitude * cos(w_k(a+b-c)). :func:`group_transformer` builds a one-layer transformer that computes any task
with a group basis (:mod:`grokscope.measures.bases`) from chosen frequencies of that basis:
:func:`group_network` for a formula (a*b, a/b, ab+a+b in the discrete-log basis). :func:`s5_irrep_transformer`
builds one for composition in S5 from chosen irreducible representations.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import torch
from torch import Tensor

from grokscope.config import ModelConfig
from grokscope.measures.bases import GroupBasis, detect_basis, formula_table
from grokscope.measures.irreps import S5_ORDER, s5_irreps
from grokscope.models import MLPModel, Transformer

__all__ = [
    "group_network", "group_transformer", "quadratic_mlp_addition", "s5_irrep_transformer", "wave_logit_table",
]


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


def group_transformer(p: int, basis: GroupBasis, freqs: Iterable[int], *, scale: float = 4.0,
                      sharp: float = 40.0) -> Transformer:
    """A one-layer transformer (x^2 MLP, no LayerNorm) whose logits over the group's outputs are exactly
    ``scale * sum_k cos(w_k (i + j - m))``, w_k = 2 pi k / n, at the group input (a_order[i], b_order[j]) and output
    c_order[m]; the outside output's logit is 0 (inputs outside the group are not computed).

    Layout of d_model = 3 + 10|K|: the one-hot positions; per token, the waves (cos, sin)(w_k i) of its index as
    operand a and (cos, sin)(w_k j) as operand b (blocks SA, SB: zero for a token outside the group); head 0 (1)
    attends from "=" to position 0 (1) with score ``sharp`` and copies SA (SB) into block A (B); the 8|K| neurons
    (x_c +- y_c)^2, (x_s +- y_s)^2, (x_s +- y_c)^2, (x_c +- y_s)^2 combine into cos and sin of w_k (i + j) (block O),
    which W_U reads against (cos, sin)(w_k m). Every neuron is a degree-2 polynomial of one frequency: its 3x3-block
    fraction is 0.8 (the squares sit at the harmonic 2k) and its ``fve_quadratic`` 1. For an even n, k = n/2 (the
    Nyquist wave (-1)^i, the Legendre symbol in the discrete-log basis) is allowed: its sine is 0, so its two neurons
    (x_c +- y_c)^2 give x_c y_c = cos(pi (i + j)) whole (block {0, n/2}^2) and its six sine neurons are 0.
    """
    freqs = [int(k) for k in freqs]
    if not freqs or any(not 1 <= k <= basis.n // 2 for k in freqs):
        raise ValueError(f"frequencies must be in 1..{basis.n // 2}, got {freqs}")
    n, nk = basis.n, len(freqs)
    sa, sb, blk_a, blk_b, blk_o = (3 + 2 * nk * i for i in range(5))
    d_model, d_head = 3 + 10 * nk, 2 * nk
    cfg = ModelConfig(arch="transformer", d_model=d_model, n_heads=2, d_head=d_head, d_mlp=8 * nk,
                      act_fn="quadratic")
    model = Transformer(cfg, d_vocab=p + 1, d_vocab_out=p, n_ctx=3)
    f64 = torch.float64
    w_e = torch.zeros(p + 1, d_model, dtype=f64)
    w_q = torch.zeros(2, d_model, d_head, dtype=f64)
    w_k = torch.zeros(2, d_model, d_head, dtype=f64)
    w_v = torch.zeros(2, d_model, d_head, dtype=f64)
    w_o = torch.zeros(2, d_head, d_model, dtype=f64)
    w_in = torch.zeros(d_model, 8 * nk, dtype=f64)
    w_out = torch.zeros(8 * nk, d_model, dtype=f64)
    w_u = torch.zeros(d_model, p, dtype=f64)
    idx = torch.arange(n, dtype=f64)
    root = math.sqrt(sharp * math.sqrt(d_head))
    eye = torch.eye(d_head, dtype=f64)
    combos = [(1, 1, 0, 0), (1, -1, 0, 0), (0, 0, 1, 1), (0, 0, 1, -1)]  # (x_c, y_c, x_s, y_s) weights
    cross = [((1, 1), "sc"), ((1, -1), "sc"), ((1, 1), "cs"), ((1, -1), "cs")]
    for q, k in enumerate(freqs):
        c, s = torch.cos(2 * math.pi * k * idx / n), torch.sin(2 * math.pi * k * idx / n)
        w_e[basis.a_order, sa + 2 * q], w_e[basis.a_order, sa + 2 * q + 1] = c, s
        w_e[basis.b_order, sb + 2 * q], w_e[basis.b_order, sb + 2 * q + 1] = c, s
        w_u[blk_o + 2 * q, basis.c_order], w_u[blk_o + 2 * q + 1, basis.c_order] = scale * c, scale * s
        xc, xs, yc, ys = blk_a + 2 * q, blk_a + 2 * q + 1, blk_b + 2 * q, blk_b + 2 * q + 1
        for j, (u, v, x, y) in enumerate(combos):  # cos(x + y) = (n0 - n1 - n2 + n3) / 4
            w_in[xc, 8 * q + j], w_in[yc, 8 * q + j], w_in[xs, 8 * q + j], w_in[ys, 8 * q + j] = u, v, x, y
        w_out[8 * q : 8 * q + 4, blk_o + 2 * q] = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=f64) / 4
        for j, ((u, v), kind) in enumerate(cross):  # sin(x + y) = (n4 - n5 + n6 - n7) / 4
            first, second = (xs, yc) if kind == "sc" else (xc, ys)
            w_in[first, 8 * q + 4 + j], w_in[second, 8 * q + 4 + j] = u, v
        w_out[8 * q + 4 : 8 * q + 8, blk_o + 2 * q + 1] = torch.tensor([1.0, -1.0, 1.0, -1.0], dtype=f64) / 4
    for h, (src, dst) in enumerate(((sa, blk_a), (sb, blk_b))):
        w_q[h, 2, 0], w_k[h, h, 0] = root, root  # "=" (position 2) attends to position h
        w_v[h, src : src + d_head] = eye
        w_o[h, :, dst : dst + d_head] = eye
    return _load_one_layer(model, {"embed.W_E": w_e, "blocks.0.attn.W_Q": w_q, "blocks.0.attn.W_K": w_k,
                                   "blocks.0.attn.W_V": w_v, "blocks.0.attn.W_O": w_o, "blocks.0.mlp.W_in": w_in,
                                   "blocks.0.mlp.W_out": w_out, "unembed.W_U": w_u})


def group_network(formula: str, p: int, freqs: Iterable[int], **kwargs: float) -> tuple[Transformer, GroupBasis]:
    """:func:`group_transformer` for the group basis detected from ``formula``'s table (a*b, a/b, ab+a+b: the
    discrete-log basis; a+b, a-b: the additive one), and that basis. ValueError for a formula without one."""
    basis, why = detect_basis(formula_table(formula, p), p)
    if basis is None or not basis.exact:
        raise ValueError(f"{formula!r} mod {p} has no exact group basis: {why}")
    return group_transformer(p, basis, freqs, **kwargs), basis


def s5_irrep_transformer(irreps: Iterable[str], *, scale: float = 1.0, sharp: float = 40.0) -> Transformer:
    """A one-layer transformer (x^2 MLP, no LayerNorm) for composition in S5 (the ``s5`` task ``x*y``: tokens
    [x, y, =], ``=`` = 120) whose logits are exactly ``scale * sum_rho d_rho * chi_rho(x y c^-1)`` over the chosen
    irreps (names of :data:`grokscope.measures.irreps.IRREP_NAMES`; the argmax is x y when one of them is faithful,
    i.e. any but [5] and [1^5]).

    Layout, with D = sum d_rho^2: d_model = 3 + 3D (the one-hot positions; block S: vec rho(t) of each token; blocks
    A and B, which heads 0 and 1 fill from "=" by copying S of positions 0 and 1 (score ``sharp``)) + D (block O).
    For each rho and (i, j, k), the neurons (A_ij + B_jk)^2 and (A_ij - B_jk)^2 write +-1/4 into O_ik, so
    O = vec(rho(x) rho(y)) = vec rho(x y); W_U[O, c] = scale * d_rho * vec rho(c), so the logit of c is
    scale * d_rho * tr(rho(x y) rho(c)^T). d_mlp = 2 sum d_rho^3.
    """
    names = list(dict.fromkeys(irreps))
    reps = s5_irreps()
    unknown = [n for n in names if n not in reps]
    if not names or unknown:
        raise ValueError(f"irreps must be a non-empty list of {list(reps)}, got {list(irreps)}")
    dims = [reps[n].shape[1] for n in names]
    big_d = sum(d * d for d in dims)
    s_blk, a_blk, b_blk, o_blk = 3, 3 + big_d, 3 + 2 * big_d, 3 + 3 * big_d
    d_model, d_mlp = 3 + 4 * big_d, 2 * sum(d**3 for d in dims)
    cfg = ModelConfig(arch="transformer", d_model=d_model, n_heads=2, d_head=big_d, d_mlp=d_mlp, act_fn="quadratic")
    model = Transformer(cfg, d_vocab=S5_ORDER + 1, d_vocab_out=S5_ORDER, n_ctx=3)
    f64 = torch.float64
    w_e = torch.zeros(S5_ORDER + 1, d_model, dtype=f64)
    w_in = torch.zeros(d_model, d_mlp, dtype=f64)
    w_out = torch.zeros(d_mlp, d_model, dtype=f64)
    w_u = torch.zeros(d_model, S5_ORDER, dtype=f64)
    offset, neuron = 0, 0
    for name, d in zip(names, dims, strict=True):
        vec = reps[name].reshape(S5_ORDER, d * d)
        w_e[:S5_ORDER, s_blk + offset : s_blk + offset + d * d] = vec
        w_u[o_blk + offset : o_blk + offset + d * d] = scale * d * vec.T
        for i, j, k in itertools.product(range(d), repeat=3):
            x, y, o = a_blk + offset + i * d + j, b_blk + offset + j * d + k, o_blk + offset + i * d + k
            for sign in (1.0, -1.0):
                w_in[x, neuron], w_in[y, neuron] = 1.0, sign
                w_out[neuron, o] = sign / 4
                neuron += 1
        offset += d * d
    root = math.sqrt(sharp * math.sqrt(big_d))
    eye = torch.eye(big_d, dtype=f64)
    w_q = torch.zeros(2, d_model, big_d, dtype=f64)
    w_k = torch.zeros(2, d_model, big_d, dtype=f64)
    w_v = torch.zeros(2, d_model, big_d, dtype=f64)
    w_o = torch.zeros(2, big_d, d_model, dtype=f64)
    for h, dst in enumerate((a_blk, b_blk)):
        w_q[h, 2, 0], w_k[h, h, 0] = root, root  # "=" (position 2) attends to position h
        w_v[h, s_blk : s_blk + big_d] = eye
        w_o[h, :, dst : dst + big_d] = eye
    return _load_one_layer(model, {"embed.W_E": w_e, "blocks.0.attn.W_Q": w_q, "blocks.0.attn.W_K": w_k,
                                   "blocks.0.attn.W_V": w_v, "blocks.0.attn.W_O": w_o, "blocks.0.mlp.W_in": w_in,
                                   "blocks.0.mlp.W_out": w_out, "unembed.W_U": w_u})


def _load_one_layer(model: Transformer, weights: dict[str, Tensor]) -> Transformer:
    """Zero every parameter of a one-layer ``model``, then set ``weights`` (state-dict names) and the one-hot
    positions (position i on residual direction i); in eval mode."""
    d_model = model.cfg.d_model
    weights = {**weights, "pos_embed.W_pos": torch.eye(3, d_model, dtype=torch.float64)}
    params = dict(model.named_parameters())
    with torch.no_grad():
        for param in model.parameters():
            param.zero_()
        for name, value in weights.items():
            params[name].copy_(value)
    return model.eval()
