"""Presets of the grokking results of 2023-2025 (docs/zoo.md, "Recent results").

Each entry is a function returning an :class:`ExperimentConfig`, registered with :func:`_preset` under its name
with ``_`` read as ``-`` and merged into :data:`grokscope.presets.PRESETS`. Docstrings start with a one-line
description (shown by ``grokscope presets``), then name the paper's setting, our deviations and what we measured.
"""

from __future__ import annotations

from collections.abc import Callable

from grokscope.config import ExperimentConfig

Preset = Callable[[], ExperimentConfig]
RECENT_PRESETS: dict[str, Preset] = {}


def _preset(fn: Preset) -> Preset:
    """Register ``fn`` under its name with ``_`` read as ``-``."""
    RECENT_PRESETS[fn.__name__.replace("_", "-")] = fn
    return fn


# --------------------------------------------------------------------------- circuit efficiency (Varma et al. 2023)


# --------------------------------------------------------------------------- lazy to rich (Kumar et al. 2024)


# --------------------------------------------------------------------------- Muon and a tuned baseline
