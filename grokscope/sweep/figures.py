"""Sweep figures (Plotly) and the sweep report.

* :func:`phase_map`: the four-colour Liu et al. phase diagram over two axes (majority over seeds, the share of
  seeds that agree written in each cell);
* :func:`continuous_map`: grok epoch, gap or final test accuracy over two axes (median over seeds by default;
  cells where no seed reached the threshold are grey and marked "never");
* :func:`line_plot`: a metric along one axis, one line per value of another, mean with a min-max band over seeds;
* :func:`phase_bars`: phase counts along one axis;
* :func:`build_sweep_report` / :func:`write_sweep_report`: all of them in one self-contained HTML page.

Axes beyond the two shown are pooled with the seeds; the caption says so.
"""

from __future__ import annotations

import html
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go

from grokscope.config import field_paths
from grokscope.figures.report import CSS, RENDER_JS, figure_section, plotly_script_tag
from grokscope.store.files import atomic_write_bytes
from grokscope.sweep.figures_recent import recent_figures
from grokscope.sweep.index import SweepIndex, aggregate_seeds, load_sweep
from grokscope.sweep.layout import SweepDir
from grokscope.sweep.outcome import PHASE_COLORS, PHASES

__all__ = ["build_sweep_report", "continuous_map", "line_plot", "phase_bars", "phase_map", "sweep_figures",
           "write_sweep_report"]

METRIC_LABELS = {
    "grok_epoch": "grok epoch (test acc >= 99%)",
    "gap": "gap: test epoch - train epoch (acc >= threshold)",
    "final_test_acc": "final test accuracy",
    "final_train_acc": "final train accuracy",
    "test_epoch": "test epoch (acc >= threshold)",
    "train_epoch": "train epoch (acc >= threshold)",
    "final_test_loss": "final test loss",
}
_LETTER = {"comprehension": "C", "grokking": "G", "memorisation": "M", "confusion": "X"}


def _layout(fig: go.Figure, title: str, height: int = 480) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01, xanchor="left"), height=height,
                      font=dict(family="Helvetica, Arial, sans-serif", size=13, color="#222"), paper_bgcolor="white",
                      plot_bgcolor="white", margin=dict(l=80, r=30, t=70, b=60))
    return fig


def _sort_key(v: Any):
    if isinstance(v, bool):
        return (1, 0.0, str(v))
    if isinstance(v, (int, float)):
        return (0, float(v), "")
    return (1, 0.0, json.dumps(v, default=str))


def _label(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return "(" + ", ".join(_label(x) for x in v) + ")"
    return str(v)


def _values(df, col: str) -> list:
    seen: dict[str, Any] = {}
    for v in df[col]:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        seen.setdefault(json.dumps(v, default=str), v)
    return sorted(seen.values(), key=_sort_key)


def _hashable(df, cols: Sequence[str]):
    """A copy whose list-valued cells (zipped or tuple fields) are tuples, so they can be grouped."""
    out = df.copy()
    for c in cols:
        out[c] = [tuple(v) if isinstance(v, list) else v for v in out[c]]
    return out


def _grid(df, x: str, y: str):
    d = _hashable(df, [x, y])
    xs = _values(df, x)
    ys = _values(df, y)
    xs = [tuple(v) if isinstance(v, list) else v for v in xs]
    ys = [tuple(v) if isinstance(v, list) else v for v in ys]
    return d, xs, ys


def phase_map(df, x: str, y: str, *, title: str | None = None) -> go.Figure:
    """The four-colour phase diagram: ``x`` and ``y`` are axis fields; seeds (and other axes) by majority."""
    d, xs, ys = _grid(df, x, y)
    agg = aggregate_seeds(d, [y, x])
    z, text, hover = [], [], []
    for yv in ys:
        zr: list[int | None] = []
        tr, hr = [], []
        for xv in xs:
            sel = agg[(agg[x] == xv) & (agg[y] == yv)] if len(agg) else agg
            if not len(sel) or not isinstance(sel["phase"].iloc[0], str):
                zr.append(None)
                tr.append("")
                hr.append(f"{x}={_label(xv)}<br>{y}={_label(yv)}<br>no result yet")
                continue
            r = sel.iloc[0]
            zr.append(PHASES.index(r["phase"]))
            n = int(r["n"])
            k = int(r[f"n_{r['phase']}"])
            tr.append(_LETTER[r["phase"]] + (f" {k}/{n}" if n > 1 else ""))
            counts = ", ".join(f"{p} {int(r[f'n_{p}'])}" for p in PHASES if r[f"n_{p}"])
            hr.append(f"{x}={_label(xv)}<br>{y}={_label(yv)}<br><b>{r['phase']}</b> ({counts})")
        z.append(zr)
        text.append(tr)
        hover.append(hr)
    scale = []
    for i, p in enumerate(PHASES):
        scale += [[i / 4, PHASE_COLORS[p]], [(i + 1) / 4, PHASE_COLORS[p]]]
    fig = go.Figure(go.Heatmap(
        z=z, x=[_label(v) for v in xs], y=[_label(v) for v in ys], zmin=-0.5, zmax=3.5, colorscale=scale, text=text,
        texttemplate="%{text}", textfont=dict(color="#888", size=12), customdata=hover,
        hovertemplate="%{customdata}<extra></extra>", xgap=2, ygap=2,
        colorbar=dict(tickvals=[0, 1, 2, 3], ticktext=list(PHASES), title="phase")))
    fig.update_xaxes(type="category", title=x)
    fig.update_yaxes(type="category", title=y)
    return _layout(fig, title or f"Phase diagram: {y} vs {x}")


def continuous_map(df, x: str, y: str, metric: str = "grok_epoch", *, agg: str = "median", title: str | None = None,
                   log_color: bool | None = None) -> go.Figure:
    """``metric`` over two axes, aggregated over seeds by ``agg`` ("median", "mean", "min" or "max") over the seeds
    that have a value; cells with no value (never reached) are grey and marked "never"."""
    import pandas as pd

    d, xs, ys = _grid(df, x, y)
    vals = (pd.to_numeric(d[metric], errors="coerce").astype("float64") if metric in d
            else pd.Series([math.nan] * len(d)))
    d = d.assign(_v=vals.to_numpy())
    z, text, hover = [], [], []
    positive = []
    for yv in ys:
        zr: list[float | None] = []
        tr, hr = [], []
        for xv in xs:
            g = d[(d[x] == xv) & (d[y] == yv)]
            have = g["_v"].dropna()
            n_done = int(g["phase"].notna().sum()) if "phase" in g else len(g)
            if len(have):
                v = float(getattr(have, agg)())
                zr.append(v)
                positive.append(v)
                tr.append(_short(v) + (f" ({len(have)}/{len(g)})" if len(have) < len(g) else ""))
                hr.append(f"{x}={_label(xv)}<br>{y}={_label(yv)}<br>{metric} {agg} {v:.4g} over {len(have)} of "
                          f"{len(g)} seeds")
            else:
                zr.append(None)
                tr.append("never" if n_done else "")
                hr.append(f"{x}={_label(xv)}<br>{y}={_label(yv)}<br>"
                          + ("not reached within the budget" if n_done else "no result yet"))
        z.append(zr)
        text.append(tr)
        hover.append(hr)
    if log_color is None:
        log_color = (metric in ("grok_epoch", "test_epoch", "train_epoch", "final_test_loss") and bool(positive)
                     and min(positive) > 0 and max(positive) / min(positive) > 30)
    zz = [[(math.log10(v) if (log_color and v is not None and v > 0) else v) for v in row] for row in z]
    colorbar = dict(title=("log10 " if log_color else "") + metric)
    accuracy = metric == "final_test_acc"
    fig = go.Figure(go.Heatmap(
        z=zz, x=[_label(v) for v in xs], y=[_label(v) for v in ys], colorscale="RdYlGn" if accuracy else "Viridis",
        reversescale=metric in ("grok_epoch", "gap", "test_epoch", "train_epoch"), text=text, texttemplate="%{text}",
        textfont=dict(size=11), customdata=hover, hovertemplate="%{customdata}<extra></extra>", xgap=2, ygap=2,
        colorbar=colorbar, zmin=0 if accuracy else None, zmax=1 if accuracy else None))
    fig.update_xaxes(type="category", title=x)
    fig.update_yaxes(type="category", title=y)
    fig.update_layout(plot_bgcolor="#d9d9d9")
    return _layout(fig, title or f"{METRIC_LABELS.get(metric, metric)} ({agg} over seeds)")


def _short(v: float) -> str:
    if abs(v) >= 1000:
        return f"{v:.0f}"
    if abs(v) >= 1 or v == 0:
        return f"{v:.3g}"
    return f"{v:.2f}"


def line_plot(df, x: str, metric: str, *, group: str | None = None, title: str | None = None) -> go.Figure:
    """``metric`` against axis ``x`` (numeric axes on a log scale when they span two decades), one line per value
    of ``group``; the line is the mean over seeds with a value, the band their min-max. Points where no seed has
    a value are left out (a cell that never grokked has no grok epoch)."""
    import pandas as pd

    cols = [x] + ([group] if group else [])
    d = _hashable(df, cols)
    d = (d.assign(_v=pd.to_numeric(d[metric], errors="coerce").astype("float64").to_numpy()) if metric in d
         else d.assign(_v=math.nan))
    groups = _values(df, group) if group else [None]
    groups = [tuple(g) if isinstance(g, list) else g for g in groups]
    xs: list[Any] = [tuple(v) if isinstance(v, list) else v for v in _values(df, x)]
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xs)
    fig = go.Figure()
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
               "#7f7f7f"]
    for i, gv in enumerate(groups):
        gd = d if gv is None else d[d[group] == gv]
        px, mean, lo, hi, ns = [], [], [], [], []
        for xv in xs:
            v = gd[gd[x] == xv]["_v"].dropna()
            if not len(v):
                continue
            px.append(xv if numeric else _label(xv))
            mean.append(float(v.mean()))
            lo.append(float(v.min()))
            hi.append(float(v.max()))
            ns.append(len(v))
        if not px:
            continue
        color = palette[i % len(palette)]
        name = "all" if gv is None else f"{group}={_label(gv)}"
        if any(h != l for h, l in zip(hi, lo)):
            fig.add_trace(go.Scatter(x=px + px[::-1], y=hi + lo[::-1], fill="toself", fillcolor=_rgba(color, 0.15),
                                     line=dict(width=0), hoverinfo="skip", showlegend=False, legendgroup=name))
        hover = f"{x}=%{{x}}<br>{metric} mean %{{y:.4g}} over %{{customdata}} seeds<extra>{html.escape(name)}</extra>"
        fig.add_trace(go.Scatter(x=px, y=mean, mode="lines+markers", name=name, line=dict(color=color, width=2),
                                 legendgroup=name, customdata=ns, hovertemplate=hover))
    if numeric and xs and all(v > 0 for v in xs) and max(xs) / min(xs) >= 100:
        fig.update_xaxes(type="log")
    fig.update_xaxes(title=x, showline=True, linecolor="#888", gridcolor="#eee")
    fig.update_yaxes(title=METRIC_LABELS.get(metric, metric), showline=True, linecolor="#888", gridcolor="#eee")
    return _layout(fig, title or f"{METRIC_LABELS.get(metric, metric)} along {x}", height=420)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def phase_bars(df, x: str, *, title: str | None = None) -> go.Figure:
    """Stacked counts of each phase (over seeds and other axes) at every value of axis ``x``."""
    d = _hashable(df, [x])
    xs = [tuple(v) if isinstance(v, list) else v for v in _values(df, x)]
    fig = go.Figure()
    for p in PHASES:
        fig.add_trace(go.Bar(x=[_label(v) for v in xs], y=[int(((d[x] == v) & (d["phase"] == p)).sum()) for v in xs],
                             name=p, marker_color=PHASE_COLORS[p]))
    fig.update_layout(barmode="stack")
    fig.update_xaxes(type="category", title=x)
    fig.update_yaxes(title="cells")
    return _layout(fig, title or f"Phases along {x}", height=400)


# --------------------------------------------------------------------------- all figures of a sweep


def sweep_figures(df, axes: Sequence[str]) -> list[tuple[str, str, str, go.Figure]]:
    """(key, title, caption, figure) for a sweep's frame and its axis fields, in report order."""
    out: list[tuple[str, str, str, go.Figure]] = []
    if df is None or not len(df) or df["phase"].isna().all():
        return out
    axes = [a for a in axes if a in df.columns]
    n_seeds = int(df["seed"].nunique()) if "seed" in df else 1
    pooled = (f" Pooled over {', '.join(axes[2:])} and the seeds." if len(axes) > 2
              else (" Over seeds." if n_seeds > 1 else ""))
    if len(axes) >= 2:
        x, y = axes[0], axes[1]
        out.append(("phase-map", "Phase diagram", "Liu et al. phases (green comprehension, yellow grokking, purple "
                    "memorisation, black confusion); each cell shows the majority phase and how many seeds agree."
                    + pooled, phase_map(df, x, y)))
        out.append(("grok-map", "Grok epoch", "First epoch with test accuracy >= 99%, median over the seeds that "
                    "reached it (count in brackets when not all did); grey: never within the budget." + pooled,
                    continuous_map(df, x, y, "grok_epoch")))
        out.append(("gap-map", "Gap", "test_epoch - train_epoch at the phase threshold, the quantity compared with "
                    "tau; median over seeds." + pooled, continuous_map(df, x, y, "gap")))
        out.append(("acc-map", "Final test accuracy", "Test accuracy at the last logged epoch within the budget, "
                    "median over seeds." + pooled, continuous_map(df, x, y, "final_test_acc")))
        for metric in ("grok_epoch", "final_test_acc"):
            out.append((f"line-{metric}", f"{METRIC_LABELS[metric]} along {x}",
                        f"Mean over seeds (band: min to max), one line per {y}.", line_plot(df, x, metric, group=y)))
    elif len(axes) == 1:
        x = axes[0]
        out.append(("phase-bars", "Phases", "Cells per phase at each value." + pooled, phase_bars(df, x)))
        for metric in ("grok_epoch", "gap", "final_test_acc"):
            out.append((f"line-{metric}", METRIC_LABELS[metric], "Mean over seeds (band: min to max).",
                        line_plot(df, x, metric)))
    return out


# --------------------------------------------------------------------------- the report


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def wall_time(events: list[dict]) -> float:
    """Seconds the driver spent across all its sessions (each from its 'start' to its last event)."""
    total, start, last = 0.0, None, None
    for e in events:
        if e.get("event") == "start":
            if start is not None and last is not None:
                total += last - start
            start = last = e.get("time")
        elif start is not None:
            last = e.get("time", last)
    if start is not None and last is not None:
        total += last - start
    return total


CELL_COLUMNS = ["name", "seed", "status", "phase", "train_epoch", "test_epoch", "gap", "grok_epoch", "final_train_acc",
                "final_test_acc", "final_test_loss", "seconds"]  # the axis fields go after the seed


def _cell_text(column: str, v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) in ("<NA>", "nan"):
        return ""
    if isinstance(v, float):
        return f"{v:.4g}" if column != "seconds" else f"{v:.1f}"
    return _label(v)


def build_sweep_report(sweep_dir: Path | str, *, plotly_src: str | None = None, refresh: bool = True) -> str:
    """The sweep report as HTML text (``plotly_src`` None embeds plotly.js, else references that URL)."""
    sweep = SweepDir(sweep_dir)
    spec = sweep.read_spec()
    df = load_sweep(sweep.path, refresh=refresh)
    figs = sweep_figures(df, spec.axis_fields) + recent_figures(df, spec)
    counts = {p: int((df["phase"] == p).sum()) for p in PHASES}
    status = df["status"].value_counts().to_dict()
    outcome = spec.outcome
    budget = outcome.budget if outcome.budget is not None else spec.base.train.epochs
    if "tau" in df and df["tau"].notna().any():
        tau = df["tau"].dropna().iloc[0]
    else:
        tau = outcome.tau if outcome.tau is not None else max(1, round(budget / 10))
    secs = wall_time(sweep.events())
    cards = [("cells", f"{len(df)}"), ("completed", f"{status.get('completed', 0)}"),
             *[(p, f"{counts[p]}") for p in PHASES], ("wall time", f"{secs / 60:.1f} min" if secs else "-")]
    card_html = "".join(f'<div class="card"><div class="k">{_esc(k)}</div><div class="v">{_esc(v)}</div></div>'
                        for k, v in cards)
    defaults = field_paths(spec.base.__class__())
    base_diff = [(k, v) for k, v in field_paths(spec.base).items() if k != "name" and defaults.get(k) != v]
    axes_rows = "".join(f"<tr><td>{_esc(a.key)}</td><td>"
                        f"{_esc(', '.join(_label(list(v) if len(v) > 1 else v[0]) for v in a.values))}</td></tr>"
                        for a in spec.axes)
    axes_rows += (f"<tr><td>seeds ({_esc(', '.join(spec.seed_fields))})</td>"
                  f"<td>{_esc(', '.join(map(str, spec.seeds)))}</td></tr>")
    rule = (f"Liu et al. phases: an accuracy counts as reached at >= {outcome.threshold:g}; budget {budget} epochs; "
            f"gap threshold tau = {tau} epochs (grokking when test_epoch - train_epoch >= tau; train never reached = "
            f"confusion). Grok epoch: test accuracy >= {outcome.grok_threshold:g}.")
    sections = [figure_section(key, title, caption, fig) for key, title, caption, fig in figs]
    if not sections:
        sections = ['<section class="fig"><p class="note">No finished cells yet: run the sweep first.</p></section>']
    show = [c for c in [*CELL_COLUMNS[:2], *spec.axis_fields, *CELL_COLUMNS[2:]] if c in df]
    rows = []
    for _, r in df[show].iterrows():
        tds = []
        for c in show:
            style = f' style="background:{PHASE_COLORS[r[c]]}33"' if c == "phase" and r[c] in PHASE_COLORS else ""
            tds.append(f"<td{style}>{_esc(_cell_text(c, r[c]))}</td>")
        rows.append("<tr>" + "".join(tds) + "</tr>")
    table = (f'<table class="kv cells"><thead><tr>{"".join(f"<th>{_esc(c)}</th>" for c in show)}</tr></thead>'
             f'<tbody>{"".join(rows)}</tbody></table>')
    plotly_tag = plotly_script_tag(plotly_src)
    base_rows = "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(_label(list(v) if isinstance(v, tuple) else v))}</td></tr>"
                        for k, v in base_diff)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>grokscope sweep — {_esc(spec.name)}</title>
<style>{CSS}
table.cells {{ font-size: 12px; border-collapse: collapse; }} \
table.cells td, table.cells th {{ padding: 2px 6px; border-bottom: 1px solid #eee; text-align: left; }}
</style>
{plotly_tag}
</head><body>
<header class="top"><h1>Sweep {_esc(spec.name)}</h1><div class="sub">{_esc(spec.description or '')} \
{_esc(str(sweep.path))} · {time.strftime('%Y-%m-%d %H:%M')}</div></header>
<main>
<div class="cards">{card_html}</div>
<p class="small">{_esc(rule)}</p>
<div class="grid2"><div><h3>Axes</h3><table class="kv">{axes_rows}</table></div>
<div><h3>Base config (fields that differ from the defaults)</h3><table class="kv">{base_rows}</table></div></div>
{''.join(sections)}
<section class="fig" id="cells"><h2>Cells</h2><p class="caption">One row per run (index.csv beside this file has every \
column, progress measures included).</p>{table}</section>
<p class="small">Made by grokscope. Figures are interactive: hover for values, drag to zoom, double-click to reset.</p>
</main>
<script>{RENDER_JS}</script>
</body></html>
"""


def write_sweep_report(sweep_dir: Path | str, out: Path | str | None = None) -> Path:
    """Write ``SWEEP/report.html`` (or ``out``) and ``SWEEP/index.csv``; return the report's path."""
    sweep = SweepDir(sweep_dir)
    path = Path(out) if out is not None else sweep.path / "report.html"
    atomic_write_bytes(path, build_sweep_report(sweep.path).encode())
    with SweepIndex(sweep.index_path, readonly=True) as index:
        index.to_csv(sweep.path / "index.csv")
    return path
