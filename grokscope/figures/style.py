"""One look for every figure: colours, a small template, phase shading and checkpoint sliders."""

from __future__ import annotations

from collections.abc import Sequence

import plotly.graph_objects as go

from grokscope.figures.data import Phase

COLORS = {
    "train": "#1f77b4",
    "test": "#d62728",
    "restricted": "#2ca02c",
    "excluded": "#9467bd",
    "key": "#ff7f0e",
    "other": "#9aa5b1",
    "grok": "#111111",
    "weights": "#8c564b",
    "gini_W_E": "#17becf",
    "gini_W_L": "#e377c2",
    "ffs": "#bcbd22",
    "fcr": "#393b79",
}
PHASE_COLORS = {
    "memorisation": "rgba(31,119,180,0.10)",
    "circuit formation": "rgba(255,127,14,0.12)",
    "cleanup": "rgba(44,160,44,0.12)",
    "generalisation": "rgba(255,127,14,0.12)",
}
# Qualitative palette for frequencies / neuron groups (one colour per key frequency, in order).
PALETTE = ["#ff7f0e", "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22",
           "#7f7f7f"]

AXIS = dict(showline=True, linecolor="#888", gridcolor="#eee", zeroline=False, ticks="outside")
TEMPLATE = go.layout.Template(layout=dict(
    font=dict(family="Helvetica, Arial, sans-serif", size=13, color="#222"), paper_bgcolor="white",
    plot_bgcolor="white", margin=dict(l=70, r=30, t=70, b=60), hovermode="closest",
    legend=dict(bgcolor="rgba(255,255,255,0.8)"), xaxis=AXIS, yaxis=AXIS, colorway=PALETTE,
))


def base_layout(fig: go.Figure, title: str, *, height: int = 450, **kw) -> go.Figure:
    fig.update_layout(template=TEMPLATE, title=dict(text=title, x=0.01, xanchor="left"), height=height, **kw)
    # Subplot axes created by make_subplots do not inherit the template's per-axis style in every version.
    fig.update_xaxes(**AXIS)
    fig.update_yaxes(**AXIS)
    return fig


def shade_phases(fig: go.Figure, phases: Sequence[Phase], grok: int | None, *, label: bool = True) -> None:
    """Shade each phase on every subplot (``vrect`` over all x axes) and draw the grok epoch as a dashed line."""
    span = (max(p.end for p in phases) - min(p.start for p in phases)) if phases else 0.0
    for ph in phases:
        fig.add_vrect(x0=ph.start, x1=ph.end, fillcolor=PHASE_COLORS.get(ph.name, "rgba(120,120,120,0.08)"),
                      line_width=0, layer="below", row="all", col="all")
        if label and span > 0 and (ph.end - ph.start) >= 0.12 * span:  # narrow phases are named in the header
            fig.add_annotation(x=(ph.start + ph.end) / 2, y=0.99, xref="x", yref="y domain", yanchor="top",
                               text=ph.name, showarrow=False, font=dict(size=11, color="#555"))
    if grok is not None:
        fig.add_vline(x=grok, line=dict(color=COLORS["grok"], dash="dash", width=1.2), row="all", col="all")
        fig.add_annotation(x=grok, y=0.0, xref="x", yref="paper", yanchor="bottom", xanchor="left",
                           text=f" grok {grok}", showarrow=False, font=dict(size=11, color=COLORS["grok"]))


def add_slider(fig: go.Figure, labels: Sequence[str], *, prefix: str = "checkpoint: ",
               active: int | None = None) -> None:
    """A slider (and a play button) over ``fig.frames``, whose names are ``labels``."""
    active = len(labels) - 1 if active is None else active
    anim = dict(mode="immediate", frame=dict(duration=0, redraw=True), transition=dict(duration=0))
    play = dict(anim, frame=dict(duration=400, redraw=True), fromcurrent=True)
    fig.update_layout(
        sliders=[dict(active=active, currentvalue=dict(prefix=prefix, font=dict(size=13)), pad=dict(t=45, b=5), x=0.08,
                      len=0.92, steps=[dict(method="animate", label=lab, args=[[lab], anim]) for lab in labels])],
        updatemenus=[dict(type="buttons", direction="left", x=0.0, y=0, xanchor="left", yanchor="top",
                          pad=dict(t=50, r=10), showactive=False,
                          buttons=[dict(label="▶", method="animate", args=[None, play]),
                                   dict(label="❚❚", method="animate", args=[[None], dict(anim, mode="immediate")])])],
    )
