"""Sweep figures of the grokking results of 2023-2025 (docs/zoo.md, "Recent results"), drawn in the sweep report
after the phase diagrams.

Each figure maker takes the sweep's frame (one row per cell, :func:`grokscope.sweep.index.load_sweep`) and its
:class:`~grokscope.sweep.spec.SweepSpec` and returns ``(key, title, caption, figure)`` tuples, or nothing when the
sweep is not one it applies to. :func:`recent_figures` calls every registered maker.
"""

from __future__ import annotations

import math
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

LU_AXIS = "model.init_scale"


def is_lu_sweep(spec: SweepSpec) -> bool:
    """An Omnigrok landscape sweep: the base holds the weight norm fixed (``optim.fixed_norm``) and an axis varies
    ``model.init_scale`` (which sets the norm). Recognised from the spec, whatever its name."""
    return bool(spec.base.optim.fixed_norm) and LU_AXIS in spec.axis_fields


def lu_points(df):
    """One row per init scale of an LU sweep frame (cells with a final test loss): ``init_scale``, ``norm`` (mean
    ``param_norm`` over seeds, NaN when the measures did not run), ``n`` seeds, and the mean, min and max over seeds
    of ``final_train_loss``, ``final_test_loss`` and ``final_test_acc``; sorted by init scale."""
    import pandas as pd

    cols = ["final_train_loss", "final_test_loss", "final_test_acc", "param_norm"]
    d = df[[LU_AXIS, *[c for c in cols if c in df]]].copy()
    for c in cols:
        d[c] = pd.to_numeric(d[c], errors="coerce").astype("float64") if c in d else float("nan")
    d = d[d["final_test_loss"].notna() & d[LU_AXIS].notna()]
    rows = []
    for scale, g in d.groupby(LU_AXIS, sort=True):
        row = {"init_scale": float(scale), "norm": float(g["param_norm"].mean()), "n": len(g)}
        for c in cols[:3]:
            v = g[c].dropna()
            row[f"{c}_mean"], row[f"{c}_min"], row[f"{c}_max"] = (
                (float(v.mean()), float(v.min()), float(v.max())) if len(v) else (float("nan"),) * 3)
        rows.append(row)
    return pd.DataFrame(rows)


@_maker
def omnigrok_lu_curves(df, spec: SweepSpec) -> list[Figure]:
    """Final train and test loss against the weight norm (log-log): each seed a point, the mean a line; the norm is
    the cells' ``param_norm`` (or the init scale when the measures did not run). [] for any other sweep."""
    if not is_lu_sweep(spec) or "final_test_loss" not in df:
        return []
    pts = lu_points(df)
    if pts.empty:
        return []
    by_norm = bool(pts["norm"].notna().all())
    x_of = dict(zip(pts["init_scale"], pts["norm"] if by_norm else pts["init_scale"]))
    x_title = "weight norm ||theta||_2 (held fixed)" if by_norm else "init scale alpha (the fixed norm is alpha w_1)"
    fig = go.Figure()
    for metric, name, color in (("final_train_loss", "train loss (the L)", "#1f77b4"),
                                ("final_test_loss", "test loss (the U)", "#d62728")):
        cells = df[df[LU_AXIS].isin(list(x_of))]
        ys = [float(v) for v in cells[metric]]
        xs = [x_of[s] for s in cells[LU_AXIS]]
        fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=f"{name}, each seed", legendgroup=name,
                                 marker=dict(color=color, size=6, opacity=0.45), showlegend=False,
                                 hovertemplate="norm %{x:.4g}<br>%{y:.3g}<extra>seed</extra>"))
        fig.add_trace(go.Scatter(x=[x_of[s] for s in pts["init_scale"]], y=pts[f"{metric}_mean"], name=name,
                                 mode="lines+markers", legendgroup=name, line=dict(color=color, width=2),
                                 hovertemplate="norm %{x:.4g}<br>mean %{y:.3g}<extra>" + name + "</extra>"))
    best = int(pts["final_test_loss_mean"].idxmin())
    x_best = x_of[pts["init_scale"][best]]
    interior = 0 < best < len(pts) - 1
    fig.add_vline(x=x_best, line=dict(color="#888", dash="dash", width=1))
    chance = math.log(spec.base.task.p)
    fig.add_hline(y=chance, line=dict(color="#bbb", dash="dot", width=1))
    fig.update_xaxes(type="log", title=x_title, showline=True, linecolor="#888", gridcolor="#eee")
    fig.update_yaxes(type="log", title="final loss (float64 cross-entropy)", showline=True, linecolor="#888",
                     gridcolor="#eee")
    fig.update_layout(title=dict(text="Omnigrok's LU curves: loss against the fixed weight norm", x=0.01),
                      height=460, paper_bgcolor="white", plot_bgcolor="white",
                      font=dict(family="Helvetica, Arial, sans-serif", size=13, color="#222"))
    where = "an intermediate norm (the U has an interior minimum)" if interior else "the edge of the range scanned"
    caption = (f"Final train and test loss of every cell against its weight norm, held fixed during training "
               f"(optim.fixed_norm, no weight decay); points are seeds, lines their mean; dotted: ln p = {chance:.2f} "
               f"(chance). Mean test loss is lowest at norm {x_best:.3g} (init scale "
               f"{pts['init_scale'][best]:.3g}): {where}.")
    return [("omnigrok_lu", "Omnigrok: train and test loss against the weight norm", caption, fig)]


# --------------------------------------------------------------------------- fair accelerator comparisons
