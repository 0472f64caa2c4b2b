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


# --------------------------------------------------------------------------- Muon and fair accelerator comparisons
