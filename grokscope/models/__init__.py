"""Models: the one-layer (or deeper) transformer with TransformerLens names, and the PAIR-style MLP."""

from torch import nn

from grokscope.config import ModelConfig
from grokscope.models.mlp import MLPModel, VectorMLP, circle_embedding
from grokscope.models.transformer import Transformer, activation, init_weights


def build_model(cfg: ModelConfig, *, d_vocab: int, d_vocab_out: int, n_ctx: int) -> nn.Module:
    """A freshly initialised model (seeded by ``cfg.init_seed``) for a task with these vocabulary sizes."""
    cls = {"transformer": Transformer, "mlp": MLPModel, "vector_mlp": VectorMLP}[cfg.arch]
    return cls(cfg, d_vocab=d_vocab, d_vocab_out=d_vocab_out, n_ctx=n_ctx)


__all__ = ["MLPModel", "Transformer", "VectorMLP", "activation", "build_model", "circle_embedding", "init_weights"]
