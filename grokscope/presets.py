"""Named experiment presets. Each preset is a function returning an :class:`ExperimentConfig`."""

from __future__ import annotations

from collections.abc import Callable

from grokscope.config import ConfigError, ExperimentConfig, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from grokscope.presets_recent import RECENT_PRESETS
from grokscope.presets_zoo import MAINLINE_MODEL, ZOO_PRESETS


def nanda_mainline() -> ExperimentConfig:
    """Nanda et al. (2023) mainline: a+b mod 113, 30% data, 1-layer transformer, AdamW wd 1, 40k epochs."""
    return ExperimentConfig(
        name="nanda-mainline",
        task=TaskConfig(formula="a+b", p=113, train_fraction=0.3, split_seed=0),
        model=ModelConfig(**MAINLINE_MODEL),
        optim=OptimConfig(lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98), warmup_steps=10),
        train=TrainConfig(epochs=40_000, loss_dtype="float64", log_every=10, measure_every=100, checkpoint_every=100),
    )


def quick() -> ExperimentConfig:
    """Under a minute on a laptop CPU: the mainline model on a+b mod 53, 40% data, lr 3e-3; groks by ~1.6k epochs."""
    return ExperimentConfig(
        name="quick",
        task=TaskConfig(formula="a+b", p=53, train_fraction=0.4, split_seed=0),
        model=ModelConfig(**MAINLINE_MODEL),
        optim=OptimConfig(lr=3e-3, weight_decay=1.0, betas=(0.9, 0.98), warmup_steps=10),
        train=TrainConfig(epochs=2_500, loss_dtype="float64", log_every=10, measure_every=100, checkpoint_every=100),
    )


def pair_mlp() -> ExperimentConfig:
    """The PAIR explorable's MLP flavour: a+b mod 67, 40% data, embeddings summed into 24 ReLU neurons,
    tied unembedding."""
    return ExperimentConfig(
        name="pair-mlp",
        task=TaskConfig(formula="a+b", p=67, train_fraction=0.4, split_seed=0),
        model=ModelConfig(arch="mlp", d_model=500, d_mlp=24, act_fn="relu", tie_unembed=True, init_seed=0),
        optim=OptimConfig(lr=1e-3, weight_decay=1.0, betas=(0.9, 0.98), warmup_steps=0),
        train=TrainConfig(epochs=50_000, loss_dtype="float64", log_every=100, measure_every=500, checkpoint_every=500),
    )


def tiny() -> ExperimentConfig:
    """Seconds, for tests and smoke checks: a+b mod 13 with a small transformer that memorises (it does not grok)."""
    return ExperimentConfig(
        name="tiny",
        task=TaskConfig(formula="a+b", p=13, train_fraction=0.5, split_seed=0),
        model=ModelConfig(arch="transformer", d_model=32, n_heads=2, d_head=16, d_mlp=64, init_seed=0),
        optim=OptimConfig(lr=1e-2, weight_decay=1.0, warmup_steps=10),
        train=TrainConfig(epochs=50, log_every=5, measure_every=25, checkpoint_every=25),
    )


PRESETS: dict[str, Callable[[], ExperimentConfig]] = {
    "nanda-mainline": nanda_mainline,
    "quick": quick,
    "pair-mlp": pair_mlp,
    "tiny": tiny,
    **ZOO_PRESETS,
    **RECENT_PRESETS,
}


def get_preset(name: str) -> ExperimentConfig:
    """The config of preset ``name`` (raises :class:`ConfigError` naming the known presets)."""
    try:
        return PRESETS[name]()
    except KeyError:
        known = ", ".join(PRESETS)
        raise ConfigError(f"unknown preset {name!r}; known presets: {known} (see 'grokscope presets')") from None


def describe_presets() -> list[tuple[str, str]]:
    """(name, one-line description: the docstring's first paragraph) for every preset."""
    return [(name, first_paragraph(fn.__doc__)) for name, fn in PRESETS.items()]


def first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph as one line (a description wrapped in the source reads unwrapped)."""
    lines = (doc or "").strip().split("\n\n")[0].splitlines()
    return " ".join(line.strip() for line in lines)
