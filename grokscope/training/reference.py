"""The straightforward baseline: the full sequence through every layer, as TransformerLens computes it.

Kept in the repository as the yardstick of ``grokscope bench``: :func:`reference_forward` is written out
independently of :mod:`grokscope.models.transformer` (no hooks, no last-position shortcut), and
:func:`reference_step` is a plain full-batch AdamW step. It reads the weights of a
:class:`~grokscope.models.transformer.Transformer` (any number of layers), so the same initialisation
can be trained by the reference and by grokscope's default path and the results compared.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from grokscope.models.transformer import activation
from grokscope.training.adamw import AdamW

__all__ = ["reference_forward", "reference_step", "reference_eval"]


def reference_forward(model, tokens: Tensor) -> Tensor:
    """Logits at the last position [batch, d_vocab_out], computed for every position and then sliced."""
    n_pos = tokens.shape[1]
    resid = model.embed.W_E[tokens] + model.pos_embed.W_pos[:n_pos]  # [batch, pos, d_model]
    causal = torch.tril(torch.ones(n_pos, n_pos, dtype=torch.bool, device=tokens.device))
    for block in model.blocks:
        attn, mlp = block.attn, block.mlp
        q = torch.einsum("bpd,hde->bphe", resid, attn.W_Q) + attn.b_Q  # [batch, pos, head, d_head]
        k = torch.einsum("bpd,hde->bphe", resid, attn.W_K) + attn.b_K
        v = torch.einsum("bpd,hde->bphe", resid, attn.W_V) + attn.b_V
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~causal, float("-inf"))
        pattern = scores.softmax(dim=-1)  # [batch, head, q, k]
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        attn_out = torch.einsum("bqhe,hed->bqd", z, attn.W_O) + attn.b_O
        resid = resid + attn_out
        pre = resid @ mlp.W_in + mlp.b_in  # [batch, pos, d_mlp]
        resid = resid + activation(model.cfg.act_fn, pre) @ mlp.W_out + mlp.b_out
    logits = resid @ model.unembed.W_U + model.unembed.b_U  # [batch, pos, d_vocab_out]
    return logits[:, -1]


def reference_step(model, opt: torch.optim.Optimizer | AdamW, tokens: Tensor, labels: Tensor, lr: float) -> float:
    """One full-batch AdamW update through :func:`reference_forward`; the loss (float64 cross-entropy) before it."""
    for group in opt.param_groups:
        group["lr"] = lr
    logits = reference_forward(model, tokens)
    loss = F.cross_entropy(logits.to(torch.float64), labels)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def reference_eval(model, tokens: Tensor, labels: Tensor) -> tuple[float, float]:
    """Loss (float64) and accuracy of the reference forward on one split, without gradients."""
    with torch.no_grad():
        logits = reference_forward(model, tokens)
        loss = F.cross_entropy(logits.to(torch.float64), labels).item()
        acc = (logits.argmax(-1) == labels).to(torch.float64).mean().item()
    return loss, acc
