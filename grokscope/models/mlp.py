"""The PAIR-explorable MLP for two-operand tasks."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from grokscope.config import ModelConfig
from grokscope.models.transformer import Embed, Unembed, _Hooked, activation, init_weights


class MLPModel(_Hooked):
    """PAIR-style MLP: hidden = act(W_E[a] @ W_in + W_E[b] @ W_in); logits = hidden @ W_out @ W_U.

    With ``tie_unembed`` the unembedding is W_E[:d_vocab_out].T (no separate W_U). No biases.
    Hooks: ``hook_embed`` [batch, 2, d_model], ``mlp.hook_pre`` / ``mlp.hook_post`` [batch, d_mlp],
    ``hook_mlp_out`` [batch, d_model].
    """

    def __init__(self, cfg: ModelConfig, *, d_vocab: int, d_vocab_out: int, n_ctx: int):
        super().__init__()
        self.cfg = cfg
        self.d_vocab, self.d_vocab_out, self.n_ctx = d_vocab, d_vocab_out, n_ctx
        self.embed = Embed(d_vocab, cfg.d_model)
        self.mlp = nn.Module()
        self.mlp.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        self.mlp.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        if not cfg.tie_unembed:
            self.unembed = Unembed(cfg.d_model, d_vocab_out)
        init_weights(self, cfg.init_seed)

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
        out = self.hook("hook_mlp_out", post @ self.mlp.W_out)  # [batch, d_model]
        return out @ self.W_U
