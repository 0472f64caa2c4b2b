"""The transformer of Nanda et al. (2023) with TransformerLens names, shapes and state-dict keys.

By default no LayerNorm, learned positional embeddings added to the residual stream, untied embed/unembed, and
only the MLP has trainable biases; ``ModelConfig``'s TransformerLens knobs (normalisation, rotary or shortformer
positions, activations, attention-only, parallel blocks, attention scale, d_vocab_out, biases) change that with
TransformerLens's meanings (a rotary model has no ``pos_embed``; its sin/cos tables are non-persistent buffers).
A bias that is not trained (``model.biases``: "mlp", the default, trains ``b_in`` and ``b_out``; "all" every bias,
as TransformerLens does; "none" none) is a zero persistent buffer under its TransformerLens name, so that a
state dict has exactly the keys of a ``HookedTransformer`` (``normalization_type=None``) and loads into
one by name. Shapes (TransformerLens layout)::

    embed.W_E             [d_vocab, d_model]       pos_embed.W_pos        [n_ctx, d_model]
    blocks.L.attn.W_Q/K/V [n_heads, d_model, d_head] blocks.L.attn.W_O    [n_heads, d_head, d_model]
    blocks.L.mlp.W_in     [d_model, d_mlp]         blocks.L.mlp.b_in      [d_mlp]
    blocks.L.mlp.W_out    [d_mlp, d_model]         blocks.L.mlp.b_out     [d_model]
    unembed.W_U           [d_model, d_vocab_out]

Hook names follow TransformerLens (``hook_embed``, ``blocks.0.attn.hook_pattern``, ``blocks.0.mlp.hook_post``, ...).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, overload

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from grokscope.config import ModelConfig

HookFn = Callable[[Tensor, str], Tensor | None]


def activation(name: str, x: Tensor) -> Tensor:
    if name == "relu":
        return F.relu(x)
    if name == "gelu":
        return F.gelu(x)
    if name == "quadratic":
        return x * x
    if name == "gelu_new":  # GPT-2's tanh approximation, as TransformerLens writes it
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))
    if name == "silu":
        return F.silu(x)
    if name == "solu":  # x * softmax(x) over the hidden units (TransformerLens's 'solu', no LayerNorm after)
        return x * F.softmax(x, dim=-1)
    raise ValueError(f"model.act_fn: unknown activation {name!r}")


class HookedModule(nn.Module):
    """Shared hook plumbing: ``self.hook(name, x)`` caches and/or replaces an activation when asked to."""

    # set by every model's __init__
    cfg: ModelConfig
    d_vocab: int
    d_vocab_out: int
    n_ctx: int

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[str, Tensor] | None = None
        self._hooks: dict[str, list[HookFn]] = {}

    def hook(self, name: str, x: Tensor) -> Tensor:
        for fn in self._hooks.get(name, ()):
            out = fn(x, name)
            if out is not None:
                x = out
        if self._cache is not None:
            self._cache[name] = x
        return x

    def run_with_cache(self, tokens: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits at the last position [batch, d_vocab_out] and every hooked activation (full sequence)."""
        self._cache = {}
        try:
            logits = self.forward_all(tokens)[:, -1]
            return logits, self._cache
        finally:
            self._cache = None

    def run_with_hooks(self, tokens: Tensor, fwd_hooks: list[tuple[str, HookFn]]) -> Tensor:
        """Logits at the last position with hook functions applied (a hook returning a tensor replaces the value)."""
        self._hooks = {}
        for name, fn in fwd_hooks:
            self._hooks.setdefault(name, []).append(fn)
        try:
            return self.forward_all(tokens)[:, -1]
        finally:
            self._hooks = {}

    def forward_all(self, tokens: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class LayerNorm(nn.Module):
    """TransformerLens's LN / LNPre / RMS / RMSPre over the last dimension (eps 1e-5); weights ``w``, ``b``."""

    def __init__(self, kind: str, d_model: int):
        super().__init__()
        self.kind = kind
        if kind == "LN":
            self.w = nn.Parameter(torch.ones(d_model))
            self.b = nn.Parameter(torch.zeros(d_model))
        elif kind == "RMS":
            self.w = nn.Parameter(torch.ones(d_model))

    def forward(self, x: Tensor) -> Tensor:
        """x [..., d_model] -> [..., d_model]."""
        if self.kind in ("LN", "LNPre"):
            x = x - x.mean(-1, keepdim=True)
        x = x / (x.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt()
        if self.kind == "LN":
            return x * self.w + self.b
        if self.kind == "RMS":
            return x * self.w
        return x


def _norm(cfg: ModelConfig, d_model: int) -> nn.Module:
    kind = getattr(cfg, "normalization_type", None)
    return nn.Identity() if kind is None else LayerNorm(kind, d_model)


class Embed(nn.Module):
    def __init__(self, d_vocab: int, d_model: int):
        super().__init__()
        self.W_E = nn.Parameter(torch.empty(d_vocab, d_model))


class PosEmbed(nn.Module):
    def __init__(self, n_ctx: int, d_model: int):
        super().__init__()
        self.W_pos = nn.Parameter(torch.empty(n_ctx, d_model))


def rotary_tables(n_ctx: int, rotary_dim: int, base: float) -> tuple[Tensor, Tensor]:
    """(sin, cos), each [n_ctx, rotary_dim], as TransformerLens builds them (GPT-NeoX halves: column j and
    j + rotary_dim/2 share the angle pos / base^(2j / rotary_dim))."""
    pos = torch.arange(n_ctx, dtype=torch.float32)
    freq = base ** (torch.arange(rotary_dim // 2, dtype=torch.float32) / (rotary_dim / 2))
    angles = pos[:, None] / freq.repeat(2)[None, :]  # [n_ctx, rotary_dim]
    return torch.sin(angles), torch.cos(angles)


def apply_rotary(x: Tensor, sin: Tensor, cos: Tensor) -> Tensor:
    """x [batch, pos, head, d_head] with its first ``r`` dims rotated; sin, cos [pos, r] for x's positions.
    TransformerLens's default (not adjacent pairs): dims i and i + r/2 form one pair, (x1, x2) -> (x1 cos - x2 sin,
    x2 cos + x1 sin)."""
    r = sin.shape[-1]
    x_rot, x_pass = x[..., :r], x[..., r:]
    flip = torch.cat([-x_rot[..., r // 2 :], x_rot[..., : r // 2]], dim=-1)
    rotated = x_rot * cos[None, :, None, :] + flip * sin[None, :, None, :]
    return torch.cat([rotated, x_pass], dim=-1)


def add_bias(module: nn.Module, name: str, zeros: Tensor, trained: bool) -> None:
    """A bias under its TransformerLens name: a trained parameter, or a zero persistent buffer (in the state dict
    either way, so a checkpoint always has a ``HookedTransformer``'s keys); ``model.biases`` picks which."""
    if trained:
        module.register_parameter(name, nn.Parameter(zeros))
    else:
        module.register_buffer(name, zeros)


class Attention(nn.Module):
    # registered buffers (nn.Module.__getattr__ would type them Tensor | Module)
    b_Q: Tensor
    b_K: Tensor
    b_V: Tensor
    b_O: Tensor
    mask: Tensor
    rotary_sin: Tensor  # rotary positions only (not in the state dict: a function of the config)
    rotary_cos: Tensor

    def __init__(self, cfg: ModelConfig, n_ctx: int):
        super().__init__()
        h, d, dh = cfg.n_heads, cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.empty(h, d, dh))
        self.W_K = nn.Parameter(torch.empty(h, d, dh))
        self.W_V = nn.Parameter(torch.empty(h, d, dh))
        self.W_O = nn.Parameter(torch.empty(h, dh, d))
        trained = getattr(cfg, "biases", "mlp") == "all"
        for name in ("b_Q", "b_K", "b_V"):
            add_bias(self, name, torch.zeros(h, dh), trained)
        add_bias(self, "b_O", torch.zeros(d), trained)
        self.register_buffer("mask", torch.tril(torch.ones(n_ctx, n_ctx, dtype=torch.bool)), persistent=False)
        self.scale = 1.0 / math.sqrt(dh) if getattr(cfg, "use_attn_scale", True) else 1.0
        self.rotary = getattr(cfg, "positional_embedding_type", "standard") == "rotary"
        if self.rotary:
            sin, cos = rotary_tables(n_ctx, cfg.rotary_dim or dh, cfg.rotary_base)
            self.register_buffer("rotary_sin", sin, persistent=False)
            self.register_buffer("rotary_cos", cos, persistent=False)


class MLP(nn.Module):
    b_in: Tensor  # a parameter, or with model.biases="none" a zero buffer
    b_out: Tensor

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        trained = getattr(cfg, "biases", "mlp") != "none"
        self.W_in = nn.Parameter(torch.empty(cfg.d_model, cfg.d_mlp))
        add_bias(self, "b_in", torch.zeros(cfg.d_mlp), trained)
        self.W_out = nn.Parameter(torch.empty(cfg.d_mlp, cfg.d_model))
        add_bias(self, "b_out", torch.zeros(cfg.d_model), trained)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig, n_ctx: int):
        super().__init__()
        self.ln1 = _norm(cfg, cfg.d_model)
        self.attn = Attention(cfg, n_ctx)
        if not cfg.attn_only:
            self.ln2 = _norm(cfg, cfg.d_model)
            self.mlp = MLP(cfg)


class Unembed(nn.Module):
    b_U: Tensor  # a registered buffer

    def __init__(self, d_model: int, d_vocab_out: int, trained_bias: bool = False):
        super().__init__()
        self.W_U = nn.Parameter(torch.empty(d_model, d_vocab_out))
        add_bias(self, "b_U", torch.zeros(d_vocab_out), trained_bias)


if TYPE_CHECKING:

    class _Blocks(nn.ModuleList):
        """What mypy sees of ``Transformer.blocks``: an ``nn.ModuleList`` of :class:`Block` (at run time it is one)."""

        def __iter__(self) -> Iterator[Block]: ...

        @overload
        def __getitem__(self, idx: slice) -> _Blocks: ...
        @overload
        def __getitem__(self, idx: int) -> Block: ...
        def __getitem__(self, idx: int | slice) -> Block | _Blocks: ...

else:
    _Blocks = nn.ModuleList


class Transformer(HookedModule):
    """A HookedTransformer-compatible attention+MLP transformer (no LayerNorm unless ``cfg.normalization_type``).

    ``cfg.attn_only``: blocks without MLPs (TransformerLens ``attn_only=True``; no ``mlp`` keys or hooks).
    ``cfg.dropout``: dropout on the MLP hidden activations in training mode (after ``mlp.hook_post``).

    ``forward(tokens)`` returns the logits at the last position only: [batch, d_vocab_out].
    ``forward_all(tokens)`` is the plain full-sequence computation: [batch, n_ctx, d_vocab_out].
    """

    def __init__(self, cfg: ModelConfig, *, d_vocab: int, d_vocab_out: int, n_ctx: int):
        super().__init__()
        self.cfg = cfg
        self.d_vocab, self.d_vocab_out, self.n_ctx = d_vocab, d_vocab_out, n_ctx
        self.embed = Embed(d_vocab, cfg.d_model)
        self.pos_type = getattr(cfg, "positional_embedding_type", "standard")
        if self.pos_type != "rotary":  # TransformerLens's rotary model has no pos_embed either
            self.pos_embed = PosEmbed(n_ctx, cfg.d_model)
        self.blocks = _Blocks([Block(cfg, n_ctx) for _ in range(cfg.n_layers)])
        self.ln_final = _norm(cfg, cfg.d_model)
        self.unembed = Unembed(cfg.d_model, d_vocab_out, getattr(cfg, "biases", "mlp") == "all")
        init_weights(self, cfg.init_seed)

    # -- the plain computation, position by position (as TransformerLens computes it) ------------
    def forward_all(self, tokens: Tensor) -> Tensor:
        """tokens [batch, pos] -> logits [batch, pos, d_vocab_out]."""
        resid, pos = self._embed_and_pos(tokens)  # [batch, pos, d_model]
        for i, block in enumerate(self.blocks):
            resid = self._block(i, block, resid, last_only=False, pos=pos)
        return self.hook("hook_logits", scale_logits(self.ln_final(resid) @ self.unembed.W_U + self.unembed.b_U,
                                                     self.cfg.output_scale))

    def forward(self, tokens: Tensor) -> Tensor:
        """tokens [batch, pos] -> logits at the last position [batch, d_vocab_out].

        The last block computes only the last position's query, attention and MLP: the same numbers
        as ``forward_all(tokens)[:, -1]`` for a fraction of the work.
        """
        resid, pos = self._embed_and_pos(tokens)
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            resid = self._block(i, block, resid, last_only=(i == n - 1), pos=pos)
        return scale_logits(self.ln_final(resid[:, -1]) @ self.unembed.W_U + self.unembed.b_U, self.cfg.output_scale)

    def _embed(self, tokens: Tensor) -> Tensor:
        """The residual stream entering block 0 [batch, pos, d_model] (a shortformer's positions are not in it)."""
        return self._embed_and_pos(tokens)[0]

    def _embed_and_pos(self, tokens: Tensor) -> tuple[Tensor, Tensor | None]:
        """(the residual stream [batch, pos, d_model], the shortformer positions [pos, d_model] or None)."""
        embed = self.hook("hook_embed", self.embed.W_E[tokens])  # [batch, pos, d_model]
        if self.pos_type == "rotary":
            return embed, None
        pos = self.hook("hook_pos_embed", self.pos_embed.W_pos[: tokens.shape[1]])  # [pos, d_model]
        if self.pos_type == "shortformer":  # added to the queries' and keys' input in every block instead
            return embed, pos
        return embed + pos, None

    def _block(self, i: int, block: Block, resid: Tensor, *, last_only: bool, pos: Tensor | None = None) -> Tensor:
        attn, name = block.attn, f"blocks.{i}"
        resid = self.hook(f"{name}.hook_resid_pre", resid)  # [batch, pos, d_model]
        x = block.ln1(resid)  # [batch, pos, d_model]; resid itself without normalisation
        x_qk = x if pos is None else x + pos  # shortformer: positions in the queries' and keys' input only
        x_q = x_qk[:, -1:] if last_only else x_qk
        q = self.hook(f"{name}.attn.hook_q", torch.einsum("bpd,hde->bphe", x_q, attn.W_Q) + attn.b_Q)
        k = self.hook(f"{name}.attn.hook_k", torch.einsum("bpd,hde->bphe", x_qk, attn.W_K) + attn.b_K)
        v = self.hook(f"{name}.attn.hook_v", torch.einsum("bpd,hde->bphe", x, attn.W_V) + attn.b_V)
        n_k = resid.shape[1]
        if attn.rotary:  # [batch, pos, head, d_head] rotated by position (the queries sit at the last q.shape[1])
            sin, cos = attn.rotary_sin[:n_k], attn.rotary_cos[:n_k]
            q = self.hook(f"{name}.attn.hook_rot_q", apply_rotary(q, sin[n_k - q.shape[1] :], cos[n_k - q.shape[1] :]))
            k = self.hook(f"{name}.attn.hook_rot_k", apply_rotary(k, sin, cos))
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * attn.scale  # [batch, head, q, k]
        mask = attn.mask[n_k - q.shape[1] : n_k, :n_k]
        scores = self.hook(f"{name}.attn.hook_attn_scores", scores.masked_fill(~mask, float("-inf")))
        pattern = self.hook(f"{name}.attn.hook_pattern", scores.softmax(dim=-1))
        z = self.hook(f"{name}.attn.hook_z", torch.einsum("bhqk,bkhe->bqhe", pattern, v))  # [batch, q, head, d_head]
        attn_out = self.hook(f"{name}.hook_attn_out", torch.einsum("bqhe,hed->bqd", z, attn.W_O) + attn.b_O)
        if self.cfg.attn_only:
            return self.hook(f"{name}.hook_resid_post", resid[:, -q.shape[1] :] + attn_out)
        mlp = block.mlp  # present unless attn_only
        parallel = getattr(self.cfg, "parallel_attn_mlp", False)
        if parallel:  # GPT-J: the MLP reads resid_pre too, both outputs add to it
            resid_mid = resid[:, -q.shape[1] :] + attn_out
            mlp_in = block.ln2(resid[:, -q.shape[1] :])
        else:
            resid_mid = self.hook(f"{name}.hook_resid_mid", resid[:, -q.shape[1] :] + attn_out)
            mlp_in = block.ln2(resid_mid)
        pre = self.hook(f"{name}.mlp.hook_pre", mlp_in @ mlp.W_in + mlp.b_in)  # [batch, q, d_mlp]
        post = self.hook(f"{name}.mlp.hook_post", activation(self.cfg.act_fn, pre))
        if self.cfg.dropout > 0:
            post = F.dropout(post, self.cfg.dropout, training=self.training)
        mlp_out = self.hook(f"{name}.hook_mlp_out", post @ mlp.W_out + mlp.b_out)
        return self.hook(f"{name}.hook_resid_post", resid_mid + mlp_out)

    # -- TransformerLens-style shortcuts -----------------------------------------------------------
    @property
    def W_E(self) -> Tensor:
        return self.embed.W_E

    @property
    def W_U(self) -> Tensor:
        return self.unembed.W_U


def scale_logits(logits: Tensor, scale: float) -> Tensor:
    """``logits * scale`` (``model.output_scale``, Kumar et al. 2024's alpha); ``logits`` itself when the scale is
    1, so a default model computes exactly what it did before the knob existed. Shapes: any."""
    return logits if scale == 1.0 else logits * scale


def init_weights(model: HookedModule, seed: int) -> None:
    """As in the paper's code: every matrix ~ N(0, 1/d_model) except W_U ~ N(0, 1/d_vocab); biases 0.
    ``model.cfg.init_mode == "gpt2"`` (TransformerLens's default): every matrix, W_U too, ~ N(0, 0.64/d_model).

    Parameters are drawn in state-dict order from one generator seeded with ``seed``; then every parameter is
    multiplied by ``model.cfg.init_scale`` (Omnigrok's alpha; skipped at 1).
    """
    gen = torch.Generator().manual_seed(seed)
    d_model = model.cfg.d_model
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.split(".")[-1].startswith("b_"):
                param.zero_()
                continue
            if name.split(".")[-1] in ("w", "b"):  # normalisation: weight 1, bias 0, no draw
                param.fill_(1.0 if name.endswith(".w") else 0.0)
                continue
            std = 1.0 / math.sqrt(model.d_vocab) if name.endswith("W_U") else 1.0 / math.sqrt(d_model)
            if getattr(model.cfg, "init_mode", "nanda") == "gpt2":  # TransformerLens's initializer_range
                std = 0.8 / math.sqrt(d_model)
            param.copy_(torch.randn(param.shape, generator=gen) * std)
        scale = getattr(model.cfg, "init_scale", 1.0)
        if scale != 1.0:
            for param in model.parameters():
                param.mul_(scale)
