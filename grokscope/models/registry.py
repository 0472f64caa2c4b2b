"""Your own model by name: a builder registered with :func:`register_model`, which ``model.arch="registered"`` and
``model.name`` select, so a config (and so a sweep cell, a resume, ``Run.load_model``) can build it.

A builder is ``builder(cfg, *, d_vocab, d_vocab_out, n_ctx) -> nn.Module``: ``cfg`` is the run's
:class:`~grokscope.config.ModelConfig` (read the fields you want: ``d_model``, ``d_mlp``, ``n_layers``, ``act_fn``,
``dropout``..., so a sweep over them sweeps your module), the sizes are the task's. The module maps tokens
[batch, n_ctx] to logits [batch, d_vocab_out] or [batch, n_ctx, d_vocab_out], as ``train(model=...)`` takes
(:mod:`grokscope.training.user_model`). grokscope seeds torch's generator with ``cfg.init_seed`` around the call
(the caller's random state is restored after), so the same config builds the same weights in every process, and
multiplies every parameter by ``cfg.init_scale``. Packages register builders through the ``grokscope.models`` entry
point group.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from grokscope.config import ConfigError, ModelConfig
from grokscope.registry import Registry

__all__ = ["ENTRY_POINT_GROUP", "REGISTRY", "ModelBuilder", "build_registered", "register_model", "registered_models",
           "unregister_model"]

ENTRY_POINT_GROUP = "grokscope.models"
ModelBuilder = Callable[..., nn.Module]  # (cfg: ModelConfig, *, d_vocab, d_vocab_out, n_ctx) -> nn.Module
REGISTRY: Registry[ModelBuilder] = Registry("model", "model.name", ENTRY_POINT_GROUP,
                                            "grokscope.models.register_model")


def register_model(name: str, builder: ModelBuilder, *, replace: bool = False) -> ModelBuilder:
    """Register ``builder`` (``(cfg, *, d_vocab, d_vocab_out, n_ctx) -> nn.Module``) under ``name``; returns it. A
    name registered to another builder is an error unless ``replace``. Register at import time (a module's top
    level) so that a sweep's spawned workers, which import your script or package again, find it too."""
    ModelConfig(arch="registered", name=name)  # the name's rules, with the config's message
    return REGISTRY.register(name, builder, replace=replace)


def unregister_model(name: str) -> None:
    """Forget ``name`` (no error when it is not registered)."""
    REGISTRY.unregister(name)


def registered_models() -> tuple[str, ...]:
    """The registered names (entry points included), sorted."""
    return REGISTRY.names()


def build_registered(cfg: ModelConfig, *, d_vocab: int, d_vocab_out: int, n_ctx: int) -> nn.Module:
    """The module ``cfg.name`` names, built with torch's generator seeded by ``cfg.init_seed`` and its parameters
    multiplied by ``cfg.init_scale``. ConfigError (one line) for an unknown name, a builder that fails or returns
    something other than an ``nn.Module``, and ``model.output_scale`` (scale your module's logits yourself)."""
    if cfg.output_scale != 1.0:
        raise ConfigError(f"model.output_scale: applies to grokscope's own models; the registered model {cfg.name!r} "
                          "scales its logits itself")
    builder = REGISTRY.get(cfg.name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        try:
            model = builder(cfg, d_vocab=d_vocab, d_vocab_out=d_vocab_out, n_ctx=n_ctx)
        except ConfigError:
            raise
        except Exception as e:  # the user's builder: one line naming it and what it raised
            first = str(e).splitlines()[0] if str(e) else ""
            raise ConfigError(f"model.name: the builder of {cfg.name!r} failed ({type(e).__name__}: {first})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.name: the builder of {cfg.name!r} returned {type(model).__name__}, not an nn.Module")
    if cfg.init_scale != 1.0:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(cfg.init_scale)
    return model
