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

#: Config fields that make a training method (an accelerator or a loss) and their plain-AdamW values.
METHOD_DEFAULTS = {"optim.optimizer": "adamw", "optim.grad_filter": "none", "train.loss": "cross_entropy",
                   "optim.perp_grad": False, "optim.decay": "l2", "optim.fixed_norm": False}


def method_axis(spec: SweepSpec):
    """The sweep's method axis: a zipped axis of two or more fields, at least two of them method fields
    (:data:`METHOD_DEFAULTS`); None when there is none. Recognised from the spec, whatever its name."""
    for axis in spec.axes:
        if len(axis.fields) >= 2 and sum(f in METHOD_DEFAULTS for f in axis.fields) >= 2:
            return axis
    return None


def _same(value, default) -> bool:
    if isinstance(default, bool):
        return str(value).strip().lower() in ("false", "0", "0.0", "none", "")
    return str(value) == str(default)


def method_label(values: dict) -> str:
    """A method's name from its field values: the non-AdamW parts joined by '+' ('adamw' when none)."""
    parts = []
    for field, value in values.items():
        default = METHOD_DEFAULTS.get(field)
        if default is None:
            parts.append(f"{field.rpartition('.')[2]}={value}")
        elif not _same(value, default):
            leaf = field.rpartition(".")[2]
            parts.append({"grad_filter": f"grokfast-{value}", "perp_grad": "perp-adamw",
                          "fixed_norm": "fixed-norm"}.get(leaf, str(value)))
    return "+".join(parts) or "adamw"


def method_cells(df, spec: SweepSpec):
    """One row per cell of a method sweep: ``method``, ``point`` (the other axes' values), ``seed``, ``epochs``
    (to 99% test accuracy; NaN when the cell did not get there), ``budget`` (its epochs) and ``final_test_acc``."""
    import pandas as pd

    axis = method_axis(spec)
    others = [f for f in spec.axis_fields if axis is None or f not in axis.fields]
    rows = []
    for _, r in df.iterrows():
        grok = pd.to_numeric(r.get("grok_epoch"), errors="coerce")
        budget = pd.to_numeric(r.get("budget"), errors="coerce")
        rows.append({
            "method": method_label({f: r.get(f) for f in (axis.fields if axis else ())}),
            "point": ", ".join(f"{f.rpartition('.')[2]}={r.get(f):g}" if isinstance(r.get(f), float)
                               else f"{f.rpartition('.')[2]}={r.get(f)}" for f in others),
            "seed": r.get("seed"), "epochs": float(grok) if pd.notna(grok) else math.nan,
            "budget": float(budget) if pd.notna(budget) else float(spec.base.train.epochs),
            "final_test_acc": float(pd.to_numeric(r.get("final_test_acc"), errors="coerce")),
        })
    return pd.DataFrame(rows, columns=["method", "point", "seed", "epochs", "budget", "final_test_acc"])


def _median(values) -> float:
    """Median with a cell that never reached 99% counted as infinitely late."""
    import numpy as np

    return float(np.median([math.inf if math.isnan(v) else v for v in values])) if len(values) else math.nan


def method_summary(cells):
    """Per method (first-appearance order): ``best`` grid point (lowest median epochs to 99% over seeds, cells that
    never got there counted as infinitely late; ties to more seeds there, the lower mean, the higher final test
    accuracy), its ``n`` seeds,
    ``grokked`` count, ``median``, ``q1``, ``q3``, ``min``, ``max`` (of the grokked seeds), and over every cell of
    the method ``median_all``, ``grokked_all`` and ``n_all``."""
    import numpy as np
    import pandas as pd

    def rank(c) -> tuple[float, int, float, float]:
        done, final = c["epochs"].dropna(), c["final_test_acc"].dropna()
        return (_median(list(c["epochs"])), -len(done), float(done.mean()) if len(done) else math.inf,
                -float(final.mean()) if len(final) else 0.0)

    rows = []
    for method, g in cells.groupby("method", sort=False):
        ranks = {p: rank(c) for p, c in g.groupby("point", sort=False)}
        best = min(ranks, key=lambda p: ranks[p])
        b = g[g["point"] == best]["epochs"]
        done = b.dropna()
        q1, q3 = (np.percentile(done, [25, 75]) if len(done) else (math.nan, math.nan))
        rows.append({"method": method, "best": best, "n": len(b), "grokked": len(done), "median": ranks[best][0],
                     "q1": float(q1), "q3": float(q3), "min": float(done.min()) if len(done) else math.nan,
                     "max": float(done.max()) if len(done) else math.nan, "median_all": _median(list(g["epochs"])),
                     "grokked_all": int(g["epochs"].notna().sum()), "n_all": len(g)})
    return pd.DataFrame(rows)


@_maker
def fair_comparison(df, spec: SweepSpec) -> list[Figure]:
    """Epochs to 99% test accuracy per method: each method's best grid point over seeds, and every cell of the
    grid (a box and its points per method; cells that never got there drawn as crosses at their budget). [] for a
    sweep without a method axis."""
    if method_axis(spec) is None or "grok_epoch" not in df:
        return []
    cells = method_cells(df, spec)
    if cells.empty:
        return []
    summary = method_summary(cells)
    layout = dict(height=440, paper_bgcolor="white", plot_bgcolor="white", showlegend=False,
                  font=dict(family="Helvetica, Arial, sans-serif", size=13, color="#222"))
    figures = []
    for key, title, pick in (("fair_best", "each method at its best grid point", "best"),
                             ("fair_all", "every grid point", None)):
        fig = go.Figure()
        for _, s in summary.iterrows():
            g = cells[cells["method"] == s["method"]]
            if pick:
                g = g[g["point"] == s[pick]]
            name = f"{s['method']}<br>({s['best']})" if pick else s["method"]
            done, missed = g[g["epochs"].notna()], g[g["epochs"].isna()]
            fig.add_trace(go.Box(y=done["epochs"], name=name, boxpoints="all", jitter=0.4, pointpos=0,
                                 marker=dict(size=6, opacity=0.6), line=dict(width=1.5),
                                 text=[f"{p}, seed {sd}" for p, sd in zip(done["point"], done["seed"])],
                                 hovertemplate="%{y} epochs<br>%{text}<extra></extra>"))
            if len(missed):
                fig.add_trace(go.Scatter(x=[name] * len(missed), y=missed["budget"], mode="markers",
                                         marker=dict(symbol="x", size=8, color="#d62728"),
                                         text=[f"{p}, seed {sd}" for p, sd in zip(missed["point"], missed["seed"])],
                                         hovertemplate="not at 99% by %{y}<br>%{text}<extra></extra>"))
        fig.update_yaxes(title="epochs to 99% test accuracy", showline=True, linecolor="#888", gridcolor="#eee")
        fig.update_layout(title=dict(text=f"Epochs to 99% test accuracy: {title}", x=0.01), **layout)
        if pick:
            medians = "; ".join(f"{s['method']} {s['median']:g} ({s['grokked']}/{s['n']})"
                                for _, s in summary.iterrows())
            caption = (f"Each method at the grid point where its median over seeds is lowest (the same grid and seeds "
                       f"for every method: a matched tuning budget). Medians (seeds at 99%): {medians}. Crosses: seeds "
                       "that never reached 99% within the budget.")
        else:
            caption = ("Every cell of the grid, per method: how much the method depends on its tuning. Crosses: cells "
                       "that never reached 99% test accuracy within the budget (drawn at the budget).")
        figures.append((key, f"Fair comparison: {title}", caption, fig))
    return figures


# --------------------------------------------------------------------------- circuit efficiency (Varma et al. 2023)

FRACTION_AXIS = "task.train_fraction"


def critical_fraction(fractions: list[float], accs: list[float], level: float = 0.5) -> float | None:
    """The first train fraction (ascending) where the accuracy rises through ``level``, interpolated linearly between
    neighbouring fractions; the smallest fraction when it is already there; None when it never gets there."""
    pts = sorted(zip(fractions, accs))
    if pts and pts[0][1] >= level:
        return pts[0][0]
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        if y0 < level <= y1:
            return x0 + (level - y0) * (x1 - x0) / (y1 - y0)
    return None


@_maker
def varma_critical_fraction_curve(df, spec: SweepSpec) -> list[Figure]:
    """Final test accuracy against the train fraction (each seed a point, the median a line) and the critical data
    fraction where the median crosses 50% (docs/zoo.md, "Circuit efficiency"). Applies to a sweep whose one axis is
    ``task.train_fraction``; [] for any other sweep."""
    import pandas as pd

    if tuple(spec.axis_fields) != (FRACTION_AXIS,) or "final_test_acc" not in df:
        return []
    d = df[[FRACTION_AXIS, "final_test_acc"]].apply(pd.to_numeric, errors="coerce").dropna()
    if d.empty:
        return []
    med = d.groupby(FRACTION_AXIS, sort=True)["final_test_acc"].median()
    crit = critical_fraction([float(f) for f in med.index], [float(a) for a in med.values])
    fig = go.Figure()
    fig.add_scatter(x=d[FRACTION_AXIS], y=d["final_test_acc"], mode="markers", name="a seed", opacity=0.5)
    fig.add_scatter(x=list(med.index), y=list(med.values), mode="lines+markers", name="median")
    fig.add_hline(y=0.5, line_dash="dot")
    if crit is not None and not math.isnan(crit):
        fig.add_vline(x=crit, line_dash="dash", annotation_text=f"critical fraction {crit:.3f}")
    fig.update_layout(xaxis_title="train fraction", yaxis_title="final test accuracy", yaxis_range=[0, 1.05])
    where = "never crosses 50%" if crit is None else f"crosses 50% at train fraction {crit:.3f}"
    caption = (f"Final test accuracy after the budget against the train fraction; the median over seeds {where} "
               "(the critical data fraction of Varma et al. 2023 at this budget).")
    return [("critical-fraction", "Critical data fraction", caption, fig)]
