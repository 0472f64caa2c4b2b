"""Sweep figures of the grokking results of 2023-2025 (docs/zoo.md, "Recent results"), drawn in the sweep report
after the phase diagrams.

Each figure maker takes the sweep's frame (one row per cell, :func:`grokscope.sweep.index.load_sweep`) and its
:class:`~grokscope.sweep.spec.SweepSpec` and returns ``(key, title, caption, figure)`` tuples, or nothing when the
sweep is not one it applies to. :func:`recent_figures` calls every registered maker.
"""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go

from grokscope.sweep.spec import SweepSpec

Figure = tuple[str, str, str, go.Figure]
FigureMaker = Callable[..., list[Figure]]
_MAKERS: list[FigureMaker] = []


def _maker(fn: FigureMaker) -> FigureMaker:
    _MAKERS.append(fn)
    return fn


def recent_figures(df, spec: SweepSpec) -> list[Figure]:
    """The figures of every registered maker that applies to this sweep, in registration order."""
    if df is None or not len(df):
        return []
    return [fig for make in _MAKERS for fig in make(df, spec)]


# --------------------------------------------------------------------------- Omnigrok's LU curves (Liu et al. 2023)


# --------------------------------------------------------------------------- fair accelerator comparisons
