"""The PAIR-explorable MLPs: :class:`MLPModel` for two-operand tasks, :class:`VectorMLP` for sparse parity."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grokscope.config import ModelConfig
from grokscope.models.transformer import Embed, HookedModule, Unembed, activation, init_weights, scale_logits

if TYPE_CHECKING:

    class MLPWeights(nn.Module):
        """What mypy sees of the models' ``mlp``: a bare ``nn.Module`` (at run time it is one) with two parameters."""

        W_in: nn.Parameter
        W_out: nn.Parameter

else:
    MLPWeights = nn.Module


class MLPModel(HookedModule):
    """PAIR-style MLP: hidden = act(W_E[a] @ W_in + W_E[b] @ W_in); logits = hidden @ W_out @ W_U.

    With ``tie_unembed`` the unembedding is W_E[:d_vocab_out].T (no separate W_U). No biases.
    Hooks: ``hook_embed`` [batch, 2, d_model], ``mlp.hook_pre`` / ``mlp.hook_post`` [batch, d_mlp],
    ``hook_mlp_out`` [batch, d_model].

    ``cfg.fixed_embedding="circle"`` (d_model 2): W_E[t] = (cos, sin)(2 pi t / p) / sqrt(p / 2) for the number
    tokens t < p = d_vocab_out (each column of unit norm), 0 for the others, frozen (``requires_grad=False``).
    ``cfg.dropout`` drops hidden activations in training mode (after ``mlp.hook_post``).
    """

    def __init__(self, cfg: ModelConfig, *, d_vocab: int, d_vocab_out: int, n_ctx: int):
        super().__init__()
        self.cfg = cfg
        self.d_vocab, self.d_vocab_out, self.n_ctx = d_vocab, d_vocab_out, n_ctx
        self.embed = Embed(d_vocab, cfg.d_model)
        self.mlp = MLPWeights()
        self.mlp.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.mlp.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        if not cfg.tie_unembed:
            self.unembed = Unembed(cfg.d_model, d_vocab_out)
        init_weights(self, cfg.init_seed)
        if cfg.fixed_embedding == "circle":
            with torch.no_grad():
                self.embed.W_E.copy_(circle_embedding(d_vocab, d_vocab_out))
            self.embed.W_E.requires_grad_(False)

    @property
    def W_E(self) -> Tensor:
        return self.embed.W_E

    @property
    def W_U(self) -> Tensor:
        return self.embed.W_E[: self.d_vocab_out].T if self.cfg.tie_unembed else self.unembed.W_U

    def forward_all(self, tokens: Tensor) -> Tensor:
        """tokens [batch, pos] (only the first two are read) -> logits [batch, 1, d_vocab_out]."""
        return self.forward(tokens)[:, None]

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [batch, pos] -> logits [batch, d_vocab_out]."""
        embed = self.hook("hook_embed", self.embed.W_E[tokens[:, :2]])  # [batch, 2, d_model]
        pre = self.hook("mlp.hook_pre", embed.sum(dim=1) @ self.mlp.W_in)  # [batch, d_mlp]
        post = self.hook("mlp.hook_post", activation(self.cfg.act_fn, pre))
        if self.cfg.dropout > 0:
            post = F.dropout(post, self.cfg.dropout, training=self.training)
        out = self.hook("hook_mlp_out", post @ self.mlp.W_out)  # [batch, d_model]
        return scale_logits(out @ self.W_U, self.cfg.output_scale)


def circle_embedding(d_vocab: int, p: int) -> Tensor:
    """[d_vocab, 2]: rows t < p are (cos, sin)(2 pi t / p) / sqrt(p / 2) (unit-norm columns); other rows 0."""
    t = torch.arange(p, dtype=torch.float64)
    w = torch.zeros(d_vocab, 2, dtype=torch.float64)
    w[:p, 0], w[:p, 1] = torch.cos(2 * math.pi * t / p), torch.sin(2 * math.pi * t / p)
    return w / math.sqrt(p / 2)


class VectorMLP(HookedModule):
    """One hidden layer on the tokens read as numbers (sparse parity): logits = act(x W_in) W_out, no biases
    (the task appends a constant-1 input). ``mlp.W_in`` [n_ctx, d_mlp] ~ N(0, 1/n_ctx), ``mlp.W_out``
    [d_mlp, d_vocab_out] ~ N(0, 1/d_mlp), both times ``cfg.init_scale``; ``d_model`` is unused.
    Hooks: ``mlp.hook_pre`` / ``mlp.hook_post`` [batch, d_mlp].
    """

    def __init__(self, cfg: ModelConfig, *, d_vocab: int, d_vocab_out: int, n_ctx: int):
        super().__init__()
        self.cfg = cfg
        self.d_vocab, self.d_vocab_out, self.n_ctx = d_vocab, d_vocab_out, n_ctx
        self.mlp = MLPWeights()
        gen = torch.Generator().manual_seed(cfg.init_seed)
        w_in = torch.randn(n_ctx, cfg.d_mlp, generator=gen) / math.sqrt(n_ctx)
        w_out = torch.randn(cfg.d_mlp, d_vocab_out, generator=gen) / math.sqrt(cfg.d_mlp)
        self.mlp.W_in = nn.Parameter(w_in * cfg.init_scale)
        self.mlp.W_out = nn.Parameter(w_out * cfg.init_scale)

    def forward_all(self, tokens: Tensor) -> Tensor:
        return self.forward(tokens)[:, None]

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [batch, n_ctx] (numbers) -> logits [batch, d_vocab_out]."""
        x = tokens.to(self.mlp.W_in.dtype)
        pre = self.hook("mlp.hook_pre", x @ self.mlp.W_in)
        post = self.hook("mlp.hook_post", activation(self.cfg.act_fn, pre))
        if self.cfg.dropout > 0:
            post = F.dropout(post, self.cfg.dropout, training=self.training)
        return scale_logits(post @ self.mlp.W_out, self.cfg.output_scale)
