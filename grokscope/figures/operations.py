"""A mixture of operations (task kind "multi", the ``furuta-multi-*`` presets) drawn per operation, each in its own
table's group basis (:func:`grokscope.figures.group.operation_bases`): the Fourier norms of the shared W_E read
through that operation's a_order and of W_L = W_out·W_U through its c_order, over Z_n of its basis (Z_p, rows in
token order, for the plain additive basis or an operation without a group basis), the basis named in each panel."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from grokscope.figures.data import FigureUnavailable, as_run, last_step, operation_grid, weights
from grokscope.figures.group import component_freqs, component_labels, group_neuron_fve, operation_bases
from grokscope.figures.style import COLORS, PALETTE, base_layout
from grokscope.measures import key_frequencies_from_norms, real_fourier_basis
from grokscope.measures.bases import group_frequency_norms
from grokscope.store.run import Run

__all__ = ["operation_clusters", "operation_norms"]


def operation_norms(run: Run | str | Path, step: int | None = None) -> go.Figure:
    """Per operation of a mixture: norms of each Fourier component of W_E [n, d_model] (rows a_order) and W_L
    [d_mlp, n] (columns c_order) over Z_n of the operation's own basis, its key frequencies (the W_L_dft rule on
    that view) in orange. ``layout.meta["operations"]``: per operation its formula, basis, n and keys."""
    run = as_run(run)
    s = last_step(run, step)
    ops = operation_bases(run)
    if not ops:
        raise FigureUnavailable("the mixture has no operations")
    p = run.config.task.p
    w = weights(run, s)
    titles, bars, meta = [], [], []
    for formula, basis, label, why in ops:
        if basis is None:
            n, a_order, c_order = p, np.arange(p), np.arange(p)
        else:
            n, a_order, c_order = basis.n, basis.a_order, basis.c_order
        f = real_fourier_basis(n).numpy()
        w_e, w_l = w.W_E[a_order], w.W_L[:, c_order]
        keys = key_frequencies_from_norms(group_frequency_norms(torch.from_numpy(np.ascontiguousarray(w_l)), 1))
        colors = [COLORS["key"] if k in keys else COLORS["other"] for k in component_freqs(n)]
        for name, norms in (("W_E", np.linalg.norm(f @ w_e, axis=1)), ("W_L", np.linalg.norm(f @ w_l.T, axis=1))):
            titles.append(f"{formula}: {name} over Z_{n} ({label}); key frequencies {keys}")
            bars.append((name, component_labels(n), norms, colors))
        meta.append({"formula": formula, "basis": None if basis is None else basis.name, "n": n, "keys": keys,
                     "why": why})
    fig = make_subplots(rows=len(bars), cols=1, vertical_spacing=0.3 / len(bars), subplot_titles=titles)
    for row, (name, labels, norms, colors) in enumerate(bars, start=1):
        fig.add_trace(go.Bar(x=labels, y=norms, marker_color=colors, name=name, showlegend=False,
                             hovertemplate="%{x}: %{y:.3g}<extra>" + name + "</extra>"), row, 1)
    base_layout(fig, f"Fourier norms per operation, each in its own basis (step {s})", height=260 * len(bars) + 120,
                bargap=0.05)
    fig.update_xaxes(tickangle=-60, tickfont=dict(size=8), showgrid=False)
    fig.update_yaxes(title_text="norm")
    fig.layout.meta = {"step": s, "operations": meta}
    return fig


def operation_clusters(run: Run | str | Path, step: int | None = None, *, threshold: float = 0.85) -> go.Figure:
    """Per operation of a mixture: the neurons' activations at '=' over that operation's inputs [a, op, b, =], read
    at its group inputs (a_order[i], b_order[j]), each neuron's best frequency over Z_n of the operation's own basis
    and the share of its centred variance in that frequency's block {const, cos k, sin k}^2; one panel per operation
    with the cluster sizes (FVE >= ``threshold``). ``layout.meta["operations"]``: formula, basis, n, clusters."""
    run = as_run(run)
    s = last_step(run, step)
    ops = operation_bases(run)
    if not ops:
        raise FigureUnavailable("the mixture has no operations")
    p = run.config.task.p
    titles, panels, meta = [], [], []
    for i, (formula, basis, label, _why) in enumerate(ops):
        a, b = (np.arange(p), np.arange(p)) if basis is None else (basis.a_order, basis.b_order)
        post = operation_grid(run, s, i).post[a][:, b]
        freq, fve = group_neuron_fve(post, len(a))
        clustered = fve >= threshold
        ks = sorted({int(k) for k in freq[clustered]})
        counts = [int(np.sum(clustered & (freq == k))) for k in ks]
        titles.append(f"{formula} ({label}): {int(clustered.sum())} of {len(fve)}")
        panels.append(([f"k={k}" for k in ks] + ["none"], counts + [int(np.sum(~clustered))]))
        meta.append({"formula": formula, "basis": None if basis is None else basis.name, "n": len(a),
                     "clusters": dict(zip(ks, counts))})
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, horizontal_spacing=0.06)
    for col, (labels, counts) in enumerate(panels, start=1):
        colors = [PALETTE[j % len(PALETTE)] for j in range(len(labels) - 1)] + [COLORS["other"]]
        fig.add_trace(go.Bar(x=labels, y=counts, marker_color=colors, text=counts, textposition="outside",
                             showlegend=False), 1, col)
    base_layout(fig, f"Neuron clusters per operation, each in its own basis: neurons explained ≥ {threshold:.0%} by "
                f"one frequency (step {s})", height=420, bargap=0.1)
    fig.update_yaxes(title_text="neurons", col=1)
    fig.layout.meta = {"step": s, "operations": meta}
    return fig
