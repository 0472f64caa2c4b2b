"""Preset sweeps of the grokking results of 2023-2025 (docs/zoo.md, "Recent results"), each a function returning
a :class:`SweepSpec`, registered with :func:`_sweep` under its name with ``_`` read as ``-`` and merged into
:data:`grokscope.sweep.presets.SWEEP_PRESETS`."""

from __future__ import annotations

from collections.abc import Callable

from grokscope.sweep.spec import SweepSpec

RECENT_SWEEP_PRESETS: dict[str, Callable[[], SweepSpec]] = {}


def _sweep(fn: Callable[[], SweepSpec]) -> Callable[[], SweepSpec]:
    """Register ``fn`` under its name with ``_`` read as ``-``."""
    RECENT_SWEEP_PRESETS[fn.__name__.replace("_", "-")] = fn
    return fn


# --------------------------------------------------------------------------- circuit efficiency (Varma et al. 2023)


# --------------------------------------------------------------------------- lazy to rich (Kumar et al. 2024)


# --------------------------------------------------------------------------- Omnigrok's LU curves (Liu et al. 2023)


@_sweep
def omnigrok_lu() -> SweepSpec:
    """Omnigrok's LU curves: the weight norm held fixed (``optim.fixed_norm``, no weight decay) at init scales 0.25 to
    4 (log-spaced, 9 x 3 seeds) on a+b mod 23, half the pairs, the small-addition transformer, lr 1e-2, 3000 epochs.
    The report draws final train and test loss against the norm (the L and the U)."""
    from grokscope.config import apply_overrides
    from grokscope.presets import get_preset
    from grokscope.sweep.spec import make_spec

    base = apply_overrides(get_preset("quick"), {
        "name": "omnigrok-lu", "task.p": 23, "task.train_fraction": 0.5, "model.d_model": 64, "model.d_head": 16,
        "model.d_mlp": 256, "optim.lr": 1e-2, "optim.weight_decay": 0.0, "optim.fixed_norm": True,
        "train.epochs": 3000, "train.log_every": 50, "train.measure_every": 1000, "train.checkpoint_every": 1000,
        "train.checkpoint_early": False,
    })
    return make_spec(
        name="omnigrok-lu",
        description="Omnigrok (Liu, Michaud, Tegmark 2023): at a fixed weight norm w (no weight decay, the norm set by "
        "the init scale) train loss is L-shaped in w and test loss U-shaped: a small norm cannot fit, a large one "
        "memorises, test loss is lowest in between.",
        base=base,
        axes={"model.init_scale": {"logspace": [0.25, 4.0, 9]}},
        seeds=3,
        outcome={"threshold": 0.9, "tau": 300},
    )


# --------------------------------------------------------------------------- Muon and fair accelerator comparisons
