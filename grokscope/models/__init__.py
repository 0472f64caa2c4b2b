"""Models: the one-layer (or deeper) transformer with TransformerLens names, and the PAIR-style MLP."""

from torch import nn

from grokscope.config import ModelConfig
from grokscope.models.mlp import MLPModel
from grokscope.models.transformer import Transformer, activation, init_weights


def build_model(cfg: ModelConfig, *, d_vocab: int, d_vocab_out: int, n_ctx: int) -> nn.Module:
    """A freshly initialised model (seeded by ``cfg.init_seed``) for a task with these vocabulary sizes."""
    cls = Transformer if cfg.arch == "transformer" else MLPModel
    return cls(cfg, d_vocab=d_vocab, d_vocab_out=d_vocab_out, n_ctx=n_ctx)


__all__ = ["MLPModel", "Transformer", "activation", "build_model", "init_weights"]
