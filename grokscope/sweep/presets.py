"""Preset sweeps, each a function returning a :class:`SweepSpec` (``grokscope sweep --list``)."""

from __future__ import annotations

from collections.abc import Callable

from grokscope.config import ExperimentConfig, apply_overrides
from grokscope.presets import first_paragraph, get_preset
from grokscope.sweep.presets_recent import RECENT_SWEEP_PRESETS
from grokscope.sweep.spec import SweepSpec, SweepSpecError, make_spec

__all__ = ["SWEEP_PRESETS", "describe_sweep_presets", "get_sweep_preset", "small_addition"]


def small_addition() -> ExperimentConfig:
    """The small modular-addition setting of the preset sweeps: a+b mod 31 with a 1-layer transformer of width 64
    (4 heads of 16, d_mlp 256), full-batch AdamW lr 1e-2, betas (0.9, 0.98), 10-step warm-up, 2000 epochs, float64
    loss; metrics every 20 epochs, progress measures and checkpoints every 500. Measured here (one seed): with 40%
    of the pairs and weight decay 1 it groks at ~1.5k epochs; with 80% the test accuracy follows within ~100 epochs;
    without weight decay it only memorises."""
    return apply_overrides(get_preset("quick"), {
        "name": "small-addition", "task.p": 31, "task.train_fraction": 0.4, "model.d_model": 64, "model.d_head": 16,
        "model.d_mlp": 256, "optim.lr": 1e-2, "train.epochs": 2000, "train.log_every": 20, "train.measure_every": 500,
        "train.checkpoint_every": 500, "train.checkpoint_early": False,
    })


def wd_fraction() -> SweepSpec:
    """Weight decay x data fraction on small modular addition, 6 x 6 x 2 seeds (Nanda et al. App. D.1, Liu et al.)."""
    return make_spec(
        name="wd-fraction",
        description="Weight decay x training fraction on a+b mod 31 (small-addition setting). Expect: no weight decay, "
        "no grokking (memorisation); smaller weight decay, slower grokking; more data, faster, and at large fractions "
        "comprehension (test follows train within tau).",
        base=small_addition(),
        axes={
            "optim.weight_decay": [0.0, 0.3, 0.6, 1.0, 2.0, 4.0],
            "task.train_fraction": [0.3, 0.4, 0.5, 0.6, 0.7, 0.8],
        },
        seeds=2,
        outcome={"threshold": 0.9, "tau": 200},
    )


def wd_fraction_mini() -> SweepSpec:
    """A 3 x 2 smoke version of wd-fraction on the tiny preset (seconds; for trying the commands)."""
    return make_spec(
        name="wd-fraction-mini",
        description="Smoke test: the tiny preset (a+b mod 13, 50 epochs) over 3 weight decays and 2 fractions.",
        base="tiny",
        axes={"optim.weight_decay": [0.0, 1.0, 3.0], "task.train_fraction": [0.5, 0.8]},
        seeds=1,
        outcome={"threshold": 0.9, "tau": 10},
    )


def lr_wd() -> SweepSpec:
    """Learning rate (log range) x weight decay on small modular addition, 5 x 4 x 2 seeds."""
    return make_spec(
        name="lr-wd",
        description="Learning rate x weight decay on the small-addition setting (Liu et al.'s decoder phase diagram "
        "uses lr x wd).",
        base=small_addition(),
        axes={"optim.lr": {"logspace": [1e-3, 3e-2, 5]}, "optim.weight_decay": [0.0, 0.3, 1.0, 3.0]},
        seeds=2,
        outcome={"threshold": 0.9, "tau": 200},
    )


def omnigrok_init_wd() -> SweepSpec:
    """Omnigrok: initialisation scale x weight decay on small modular addition, 5 x 5 x 2 seeds."""
    return make_spec(
        name="omnigrok-init-wd",
        description="Omnigrok (Liu, Michaud, Tegmark 2023): a large initialisation (alpha > 1) memorises, weight decay "
        "then shrinks the weights toward the Goldilocks norm: grokking; without weight decay a large init stays "
        "memorised.",
        base=small_addition(),
        axes={"model.init_scale": [0.5, 1.0, 2.0, 4.0, 8.0], "optim.weight_decay": [0.0, 0.1, 0.3, 1.0, 3.0]},
        seeds=2,
        outcome={"threshold": 0.9, "tau": 200},
    )


def pair_sparse_parity() -> SweepSpec:
    """PAIR sparse-parity grid: weight decay x hidden width, 5 x 5 x 3 seeds (needs the sparse-parity task)."""
    return make_spec(
        name="pair-sparse-parity",
        description="PAIR sparse parity (30 bits, parity of 3, 1200 training sequences, L1 decay): weight decay x "
        "hidden width. PAIR's grid: wd 0.01..1 x hidden 16..258 x train sizes x 9 seeds; at wd 0.1 with hidden >= 64 "
        "nearly all runs grok, at wd 0.01 with hidden >= 64 all memorise. Seeds set both the init and the data.",
        base=get_preset("pair-sparse-parity"),
        axes={"optim.weight_decay": [0.01, 0.03, 0.1, 0.3, 1.0], "model.d_mlp": [16, 32, 64, 128, 258]},
        seeds=3,
        seed_fields=["model.init_seed", "task.split_seed"],
        outcome={"threshold": 0.9, "tau": 2000},
    )


SWEEP_PRESETS: dict[str, Callable[[], SweepSpec]] = {
    "wd-fraction": wd_fraction,
    "wd-fraction-mini": wd_fraction_mini,
    "lr-wd": lr_wd,
    "omnigrok-init-wd": omnigrok_init_wd,
    "pair-sparse-parity": pair_sparse_parity,
    **RECENT_SWEEP_PRESETS,
}


def get_sweep_preset(name: str) -> SweepSpec:
    try:
        fn = SWEEP_PRESETS[name]
    except KeyError:
        known = ", ".join(SWEEP_PRESETS)
        raise SweepSpecError(f"unknown sweep preset {name!r}; known: {known} (see 'grokscope sweep --list')") from None
    return fn()


def describe_sweep_presets() -> list[tuple[str, str, str]]:
    """(name, one-line description, availability: 'N cells' or the reason it is unavailable)."""
    out = []
    for name, fn in SWEEP_PRESETS.items():
        doc = first_paragraph(fn.__doc__)
        try:
            spec = fn()
            avail = f"{spec.size} cells"
        except SweepSpecError as e:
            avail = "unavailable: " + str(e).split(": ", 1)[-1]
        out.append((name, doc, avail))
    return out
