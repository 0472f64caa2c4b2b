"""Models: the one-layer (or deeper) transformer with TransformerLens names, and the PAIR-style MLP."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from grokscope.config import ConfigError, ModelConfig
from grokscope.models.mlp import MLPModel, VectorMLP, circle_embedding
from grokscope.models.registry import build_registered, register_model, registered_models, unregister_model
from grokscope.models.transformer import Transformer, activation, init_weights

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs from Python 3.13

#: Any model :func:`build_model` makes.
Model = Transformer | MLPModel | VectorMLP


def build_model(cfg: ModelConfig, *, d_vocab: int, d_vocab_out: int, n_ctx: int) -> Model:
    """A freshly initialised model (seeded by ``cfg.init_seed``) for a task with these vocabulary sizes.

    ``cfg.d_vocab_out`` (when set) replaces the task's ``d_vocab_out``; it must hold every label (be at least it).
    ``arch="registered"``: your module (:func:`grokscope.models.registry.build_registered`; typed as a Model for the
    callers, which read it through the module's own forward and state dict)."""
    if cfg.arch == "registered":
        return build_registered(cfg, d_vocab=d_vocab, d_vocab_out=d_vocab_out, n_ctx=n_ctx)  # type: ignore[return-value]
    classes: dict[str, type[Model]] = {"transformer": Transformer, "mlp": MLPModel, "vector_mlp": VectorMLP}
    cls = classes[cfg.arch]
    wanted = getattr(cfg, "d_vocab_out", None)
    if wanted is not None:
        if wanted < d_vocab_out:
            raise ConfigError(f"model.d_vocab_out: the task has {d_vocab_out} output classes, more than {wanted}")
        d_vocab_out = wanted
    return cls(cfg, d_vocab=d_vocab, d_vocab_out=d_vocab_out, n_ctx=n_ctx)


def is_own_model(model: nn.Module) -> TypeIs[Model]:
    """Whether ``model`` is one grokscope builds (a :class:`Transformer`, :class:`MLPModel` or :class:`VectorMLP`),
    whose weights the analyses and figures read by name; your own module (``train(model=...)`` or registered) is not,
    and is read by its logits."""
    return isinstance(model, Transformer | MLPModel | VectorMLP)


def has_blocks(model: nn.Module) -> TypeIs[Transformer]:
    """``hasattr(model, "blocks")``: the analyses' test for a transformer, as a type guard (a duck-typed
    transformer, such as a TransformerLens ``HookedTransformer``, passes too)."""
    return hasattr(model, "blocks")


def has_mlp(model: nn.Module) -> TypeIs[MLPModel | VectorMLP]:
    """``hasattr(model, "mlp")``: a model whose MLP is ``model.mlp`` (not ``model.blocks[i].mlp``), as a type guard."""
    return hasattr(model, "mlp")


__all__ = ["MLPModel", "Model", "Transformer", "VectorMLP", "activation", "build_model", "circle_embedding",
           "has_blocks", "has_mlp", "init_weights", "is_own_model", "register_model", "registered_models",
           "unregister_model"]
