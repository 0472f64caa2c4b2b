"""Figures over training time, from the metrics database: loss/accuracy curves, the progress-measures panel
(Nanda et al. Figure 7), per-frequency excluded loss (Figure 15)."""

from __future__ import annotations

import re
from pathlib import Path

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grokscope.figures.data import FigureUnavailable, as_run, grok_epoch, metrics, phases
from grokscope.figures.group import measures_suffix
from grokscope.figures.style import COLORS, PALETTE, base_layout, shade_phases
from grokscope.measures import names
from grokscope.store.run import Run


def _line(m, col: str, name: str, color: str, **kw) -> go.Scatter:
    s = m[col].dropna()
    return go.Scatter(x=s.index.to_numpy(), y=s.to_numpy(), name=name, meta=col, mode="lines",
                      line=dict(color=color, width=2, **kw.pop("line", {})), **kw)


def curves(run: Run | str | Path, *, log_x: bool = False) -> go.Figure:
    """Train/test loss (log scale) and accuracy over epochs, phases shaded, the grok epoch marked."""
    run = as_run(run)
    m = metrics(run)
    if names.TRAIN_LOSS not in m:
        raise FigureUnavailable("no train_loss column in the metrics")
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss (cross-entropy)", "accuracy"), horizontal_spacing=0.1)
    for split, loss, acc in (("train", names.TRAIN_LOSS, names.TRAIN_ACC), ("test", names.TEST_LOSS, names.TEST_ACC)):
        if loss in m:
            fig.add_trace(_line(m, loss, split, COLORS[split], legendgroup=split), 1, 1)
        if acc in m:
            fig.add_trace(_line(m, acc, split, COLORS[split], legendgroup=split, showlegend=False), 1, 2)
    ph, _ = phases(run, m)
    shade_phases(fig, ph, grok_epoch(run, m))
    base_layout(fig, f"Loss and accuracy — {run.config.name}", height=420)
    fig.update_yaxes(type="log", title_text="loss", exponentformat="power", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[-0.02, 1.02], row=1, col=2)
    fig.update_xaxes(title_text="epoch", type="log" if log_x else "linear")
    return fig


PROGRESS_PANELS = [
    ("losses", "loss (log)", [(names.EXCLUDED_LOSS, "excluded loss", "excluded"),
                              (names.RESTRICTED_LOSS, "restricted loss", "restricted"),
                              (names.TRAIN_LOSS, "train loss", "train"), (names.TEST_LOSS, "test loss", "test")]),
    ("gini", "Gini coefficient", [(names.GINI_W_E, "Gini W_E", "gini_W_E"), (names.GINI_W_L, "Gini W_L", "gini_W_L")]),
    ("weights", "sum of squared weights", [(names.SUM_SQ_WEIGHTS, "Σ θ²", "weights")]),
    ("furuta", "FFS / FCR", [(names.FFS, "FFS (reconstructed)", "ffs"), (names.FCR, "FCR (reconstructed)", "fcr")]),
]
_MEASURED = {names.EXCLUDED_LOSS, names.RESTRICTED_LOSS, names.GINI_W_E, names.GINI_W_L, names.SUM_SQ_WEIGHTS,
             names.FFS, names.FCR}


def progress(run: Run | str | Path) -> go.Figure:
    """The progress measures on one time axis (Figure 7): excluded, restricted, train and test loss; Gini of
    W_E and W_L; sum of squared weights; FFS and FCR (Furuta-style, reconstructed)."""
    run = as_run(run)
    m = _fixed_key_metrics(metrics(run))
    present = [(key, ylab, [s for s in series if s[0] in m and m[s[0]].notna().any()])
               for key, ylab, series in PROGRESS_PANELS]
    if not any(col in _MEASURED for _, _, series in present for col, _, _ in series):
        raise FigureUnavailable("no progress-measure columns in the metrics (train.measure_every = 0, or the run "
                                "predates grokscope.measures)")
    panels = [(k, y, s) for k, y, s in present if s]
    fig = make_subplots(rows=len(panels), cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=[y for _, y, _ in panels])
    for i, (key, _ylab, series) in enumerate(panels, start=1):
        for col, name, color in series:
            line = dict(dash="dot") if col in (names.TRAIN_LOSS, names.TEST_LOSS) else {}
            fig.add_trace(_line(m, col, name, COLORS[color], line=line, legendgroup=key), i, 1)
        if key == "losses":
            fig.update_yaxes(type="log", exponentformat="power", row=i, col=1)
        if key == "furuta":
            fig.update_yaxes(range=[-0.02, 1.05], row=i, col=1)
    ph, _ = phases(run, m)
    shade_phases(fig, ph, grok_epoch(run, m))
    base_layout(fig, f"Progress measures{measures_suffix(run)}", height=230 * len(panels) + 80)
    fig.update_xaxes(title_text="epoch", row=len(panels), col=1)
    return fig


_PER_K = re.compile(r"^excluded_loss_k(\d+)$")  # names.excluded_loss_k(K)


def _fixed_key_metrics(m):
    """The metrics under the fixed-key rule (:func:`grokscope.measures.names.fixed_key_view`): a key set chosen
    afresh at every step makes the curves jump, so the fixed-key columns are plotted under the plain names."""
    view = names.fixed_key_view(m.columns)
    return m[list(view)].rename(columns=view)


def excluded_per_frequency(run: Run | str | Path) -> go.Figure:
    """Excluded loss with one key frequency removed at a time, over training (Figure 15), with the full
    excluded loss and the train loss for reference."""
    run = as_run(run)
    m = _fixed_key_metrics(metrics(run))
    cols = sorted((int(mt.group(1)), c) for c in m.columns if (mt := _PER_K.match(c)) and m[c].notna().any())
    if not cols:
        raise FigureUnavailable("no excluded_loss_k{K} columns in the metrics")
    fig = go.Figure()
    for i, (k, col) in enumerate(cols):
        fig.add_trace(_line(m, col, f"k = {k} removed", PALETTE[i % len(PALETTE)]))
    if names.EXCLUDED_LOSS in m:
        fig.add_trace(_line(m, names.EXCLUDED_LOSS, "all key freqs removed", COLORS["excluded"],
                            line=dict(dash="dash")))
    if names.TRAIN_LOSS in m:
        fig.add_trace(_line(m, names.TRAIN_LOSS, "train loss", COLORS["train"], line=dict(dash="dot")))
    ph, _ = phases(run, m)
    shade_phases(fig, ph, grok_epoch(run, m))
    base_layout(fig, f"Excluded loss per key frequency (train split){measures_suffix(run)}", height=420)
    fig.update_yaxes(type="log", exponentformat="power", title_text="loss")
    fig.update_xaxes(title_text="epoch")
    return fig


EXTRA_SERIES = [(names.ACT_SPARSITY, "activation sparsity"), (names.ABS_WEIGHT_ENTROPY, "absolute weight entropy"),
                (names.WEIGHT_ENTROPY_NORMALISED, "weight entropy (normalised)"),
                (names.LOGIT_EFFICIENCY, "logit norm / parameter norm")]


def extra_measures(run: Run | str | Path) -> go.Figure:
    """The cheap extra measures and the test loss, each drawn as the fraction of its move from its first to its last
    value, (x - x_0) / (x_end - x_0), on one axis: a curve past 0.5 has made half its move (the "half" turn of
    benchmarks/early_measures.py), so which measures move before the test loss reads off the plot."""
    run = as_run(run)
    m = metrics(run)
    cols = [(c, n) for c, n in EXTRA_SERIES if c in m and m[c].notna().sum() >= 2]
    if not cols:
        raise FigureUnavailable("no extra-measure columns in the metrics (train.measure_every = 0, or the run "
                                "predates them)")
    fig = go.Figure()
    for i, (col, name) in enumerate([(names.TEST_LOSS, "test loss"), *cols]):
        s = m[col].dropna() if col in m else None
        if s is None or len(s) < 2 or s.iloc[-1] == s.iloc[0]:
            continue
        frac = (s - s.iloc[0]) / (s.iloc[-1] - s.iloc[0])
        test = col == names.TEST_LOSS
        fig.add_trace(go.Scatter(x=s.index.to_numpy(), y=frac.to_numpy(), name=name, meta=col, mode="lines",
                                 line=dict(color=COLORS["test"] if test else PALETTE[i % len(PALETTE)], width=2,
                                           dash="dot" if test else "solid")))
    fig.add_hline(y=0.5, line=dict(color="#999", dash="dash", width=1))
    ph, _ = phases(run, m)
    shade_phases(fig, ph, grok_epoch(run, m))
    base_layout(fig, "Cheap extra measures: the fraction of each curve's move", height=420)
    fig.update_yaxes(title_text="(x − x_start) / (x_end − x_start)")
    fig.update_xaxes(title_text="epoch")
    return fig


def compare_curves(runs: list[Run | str | Path], metric: str = names.TEST_LOSS) -> go.Figure:
    """One metric of several runs overlaid (log scale for losses)."""
    fig = go.Figure()
    for i, r in enumerate(runs):
        r = as_run(r)
        try:
            m = metrics(r)
        except FigureUnavailable:
            continue
        if metric in m:
            fig.add_trace(_line(m, metric, f"{r.dir.name}", PALETTE[i % len(PALETTE)]))
    if not fig.data:
        raise FigureUnavailable(f"none of the runs has {metric}")
    base_layout(fig, f"{metric} — {len(fig.data)} runs", height=420)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text=metric, type="log" if "loss" in metric else "linear")
    return fig
