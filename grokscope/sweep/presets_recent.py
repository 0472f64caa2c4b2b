"""Preset sweeps of the grokking results of 2023-2025 (docs/zoo.md, "Recent results"), each a function returning
a :class:`SweepSpec`, registered with :func:`_sweep` under its name with ``_`` read as ``-`` and merged into
:data:`grokscope.sweep.presets.SWEEP_PRESETS`."""

from __future__ import annotations

from collections.abc import Callable

from grokscope.sweep.spec import SweepSpec, make_spec

RECENT_SWEEP_PRESETS: dict[str, Callable[[], SweepSpec]] = {}


def _sweep(fn: Callable[[], SweepSpec]) -> Callable[[], SweepSpec]:
    """Register ``fn`` under its name with ``_`` read as ``-``."""
    RECENT_SWEEP_PRESETS[fn.__name__.replace("_", "-")] = fn
    return fn


# --------------------------------------------------------------------------- circuit efficiency (Varma et al. 2023)


@_sweep
def varma_critical_fraction() -> SweepSpec:
    """Circuit efficiency: the critical data fraction, from scratch, 7 train fractions x 3 seeds on a+b mod 31.

    The varma-parent setting (width 64, wd 1, lr 1e-2) trained 3000 epochs at train fractions 0.2 to 0.6, each seed
    written to the init and the split seed. The critical fraction (docs/zoo.md): where the median final test
    accuracy crosses 50%, interpolated between neighbouring fractions; measured 0.34 (seeds 0, 1)."""
    from grokscope.sweep.spec import make_spec

    return make_spec(
        name="varma-critical-fraction",
        description="Critical data fraction (Varma et al. 2023): varma-parent from scratch over the train fraction, "
        "3000 epochs. Below the critical fraction the test accuracy stays low within the budget; the grok epoch "
        "grows as the fraction falls towards it.",
        base="varma-parent",
        set={"train.epochs": 3000},
        axes={"task.train_fraction": [0.2, 0.25, 0.3, 0.35, 0.4, 0.5, 0.6]},
        seeds=3,
        seed_fields=["model.init_seed", "task.split_seed"],
        outcome={"threshold": 0.9, "tau": 200},
    )


# --------------------------------------------------------------------------- lazy to rich (Kumar et al. 2024)


@_sweep
def lazy_rich() -> SweepSpec:
    """Output scale alpha (lr = 1e-3 / alpha, zipped) without weight decay: rich groks, lazy does not (Kumar et al.)."""
    from grokscope.presets_recent import lazy_rich_config, lazy_rich_lr

    alphas = [0.03, 0.1, 0.3, 3.0, 16.0]
    return make_spec(
        name="lazy-rich",
        description="Output scale x lr(alpha) = 1e-3 / alpha on a+b mod 23 (MLP, StableMax, weight decay 0). "
        "Expect: small alpha (rich) moves its weights and groks; large alpha (lazy) memorises near theta_0.",
        base=lazy_rich_config(1.0),
        axes={"model.output_scale,optim.lr": [[a, lazy_rich_lr(a)] for a in alphas]},
        seeds=1,
        outcome={"threshold": 0.9, "tau": 200},
    )



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

#: The method axis of the fair comparisons: a zipped axis over the fields each method sets (the other methods'
#: fields at their defaults), so every method meets the same lr x wd grid and the same seeds.
METHOD_FIELDS = ("optim.optimizer", "optim.grad_filter", "train.loss", "optim.perp_grad")
METHODS = {
    "adamw": ["adamw", "none", "cross_entropy", False],
    "grokfast-ema": ["adamw", "ema", "cross_entropy", False],
    "stablemax": ["adamw", "none", "stablemax", False],
    "perp-adamw": ["adamw", "none", "cross_entropy", True],
    "muon": ["muon", "none", "cross_entropy", False],
}
FAIR_OUTCOME = {"threshold": 0.9, "tau": 100}


def fair_base(p: int = 113, width: int = 128, epochs: int = 1000):
    """The tuned baseline (``tuned-adamw-mlp``) as a sweep base: a+b mod ``p``, 40%, MLP of ``width``, metrics every
    epoch, no progress measures or checkpoints between the ends, stopping at the grok epoch (all a cell reports)."""
    from grokscope.config import apply_overrides
    from grokscope.presets import get_preset

    return apply_overrides(get_preset("tuned-adamw-mlp"), {
        "task.p": p, "model.d_model": width, "model.d_mlp": width, "train.epochs": epochs, "train.log_every": 1,
        "train.measure_every": 0, "train.checkpoint_every": epochs, "train.checkpoint_early": False,
        "train.stop_after_grok": 1.0,
    })


def method_comparison(name: str, description: str, base, *, methods: list[str], lrs: list[float],
                      wds: list[float], seeds: int) -> SweepSpec:
    """``methods`` (keys of :data:`METHODS`) x ``lrs`` x ``wds`` x ``seeds`` (each seed sets the init and the split)."""
    return make_spec(
        name=name, description=description, base=base,
        axes={",".join(METHOD_FIELDS): [METHODS[m] for m in methods], "optim.lr": lrs, "optim.weight_decay": wds},
        seeds=seeds, seed_fields=["model.init_seed", "task.split_seed"], outcome=FAIR_OUTCOME,
    )


@_sweep
def fair_comparison() -> SweepSpec:
    """Accelerators against the tuned AdamW baseline over one budget: 5 methods x 3 lr x 3 wd x 5 seeds, p = 113.

    The grid holds wd 0, the setting StableMax and perpendicular-gradient AdamW were made for (Prieto et al. 2025),
    and the baseline's lr 1.5e-2, wd 1."""
    return method_comparison(
        "fair-comparison",
        "AdamW (tuned baseline), Grokfast EMA, StableMax, perpendicular-gradient AdamW and Muon on a+b mod 113 (40%, "
        "MLP 128): the same lr x wd grid and the same seeds for every method; the report draws epochs to 99% test "
        "accuracy per method (all grid points, and each method's best one).",
        fair_base(), methods=list(METHODS), lrs=[5e-3, 1.5e-2, 3e-2], wds=[0.0, 1.0, 2.0], seeds=5)


@_sweep
def fair_comparison_small() -> SweepSpec:
    """fair-comparison at a size for 2 CPU cores: p = 59, width 64, 2 lr x 2 wd x 5 seeds (the benchmark's default)."""
    return method_comparison(
        "fair-comparison-small",
        "fair-comparison reduced to fit minutes on one core: a+b mod 59 with an MLP of width 64, lr in {1e-2, 2e-2}, "
        "wd in {0, 2} (StableMax and perpendicular-gradient AdamW are meant for wd 0), 5 seeds, 600 epochs at most.",
        fair_base(p=59, width=64, epochs=600), methods=list(METHODS), lrs=[1e-2, 2e-2], wds=[0.0, 2.0], seeds=5)


@_sweep
def muon_vs_adamw() -> SweepSpec:
    """Muon against AdamW, each at its best of the same lr x wd grid (4 x 3 x 5 seeds), p = 113 (Tveit et al. 2025)."""
    return method_comparison(
        "muon-vs-adamw",
        "Tveit et al. (2025): Muon groks sooner than AdamW (mean grok epoch 153 -> 103); a counter-report finds the "
        "gap closes with wider tuning. Both over lr in {1e-2, 2e-2, 4e-2, 8e-2} x wd in {0.5, 1, 2}, 5 seeds, on the "
        "tuned-baseline MLP (a+b mod 113, 40%); compare each one's best grid point.",
        fair_base(), methods=["adamw", "muon"], lrs=[1e-2, 2e-2, 4e-2, 8e-2], wds=[0.5, 1.0, 2.0], seeds=5)
