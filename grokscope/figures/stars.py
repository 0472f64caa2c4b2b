"""The PAIR explorable's "star" plots for MLP models (docs/figures.md).

Per checkpoint, collapse the input path H = W_E[:p] @ W_in [p, d_mlp] and the output path O = W_out @ W_U
[d_mlp, p], and take their Fourier coefficients F @ H and F @ O^T ([p basis rows, d_mlp]). At the final
checkpoint each neuron gets the frequency f of its largest non-constant input coefficient; neurons are grouped
by f and sorted by the angle atan2(sin f, cos f). Each group is drawn as dots at (cos f, sin f) of its neurons,
joined in angle order, with a circle at the group's mean radius. Coordinates are divided by that mean radius
(so every panel has the same scale, as the explorable's ±1.2x-mean axes do); the slider scrubs checkpoints.

In a task's group basis (a*b, a/b, ab+a+b: :func:`grokscope.figures.group.run_basis`) H's rows are read in the order
a_order and O's columns in c_order, F is the Fourier basis over Z_n, and the titles name the basis; for an even n
the Nyquist frequency n/2 (a cosine without a sine) is never a group's frequency.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grokscope.figures.data import FigureNotApplicable, FigureUnavailable, as_run, last_step, pick_checkpoints, weights
from grokscope.figures.group import basis_suffix, run_basis
from grokscope.figures.style import PALETTE, add_slider, base_layout
from grokscope.measures import fourier_basis, real_fourier_basis
from grokscope.store.run import Run

MAX_GROUPS = 6


@dataclass(frozen=True)
class StarGroups:
    """Neuron groups by frequency at the final checkpoint: ``groups[i] = (f, neurons in input-angle order,
    the same neurons in output-angle order)``."""

    step: int
    groups: list[tuple[int, np.ndarray, np.ndarray]]


def _coeffs(run: Run, step: int) -> tuple[np.ndarray, np.ndarray]:
    """[p, d_mlp] each; in a task's group basis [n, d_mlp]: H rows a_order, W_L columns c_order, over Z_n."""
    w = weights(run, step)
    basis = run_basis(run)
    if basis is not None:
        F = real_fourier_basis(basis.n).numpy()
        return F @ w.H[basis.a_order], F @ w.W_L[:, basis.c_order].T
    F = fourier_basis(run.config.task.p).numpy()
    return F @ w.H, F @ w.W_L.T  # [p, d_mlp] each


def star_groups(run: Run, step: int | None = None) -> StarGroups:
    s = last_step(run, step)
    fin, fout = _coeffs(run, s)
    pairs = 2 * ((fin.shape[0] - 1) // 2) + 1  # the cos/sin rows (an even n's Nyquist row has no sine)
    idx = np.argmax(np.abs(fin[1:pairs]), axis=0) + 1  # basis row of each neuron's largest non-constant coefficient
    freq = (idx + 1) // 2
    groups = []
    for f in np.unique(freq):
        members = np.nonzero(freq == f)[0]
        a_in = np.arctan2(fin[2 * f, members], fin[2 * f - 1, members])
        a_out = np.arctan2(fout[2 * f, members], fout[2 * f - 1, members])
        groups.append((int(f), members[np.argsort(a_in)], members[np.argsort(a_out)]))
    groups.sort(key=lambda g: (-len(g[1]), g[0]))
    return StarGroups(step=s, groups=groups[:MAX_GROUPS])


def _points(coef: np.ndarray, f: int, members: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    x, y = coef[2 * f - 1, members], coef[2 * f, members]
    r = float(np.mean(np.hypot(x, y))) or 1.0
    return x / r, y / r, r


def _circle() -> tuple[np.ndarray, np.ndarray]:
    t = np.linspace(0, 2 * math.pi, 73)
    return np.cos(t), np.sin(t)


def star_plots(run: Run | str | Path, *, max_frames: int = 40) -> go.Figure:
    """Input (top) and output (bottom) star plots per frequency group, with a checkpoint slider."""
    run = as_run(run)
    if run.config.model.arch != "mlp":
        raise FigureNotApplicable("star plots are drawn for MLP models (arch='mlp')")
    basis = run_basis(run)
    if basis is None and run.config.task.p % 2 == 0:
        raise FigureUnavailable("the Fourier basis over Z_p needs an odd p")
    groups = star_groups(run).groups
    steps = pick_checkpoints(run, max_frames)
    n = len(groups)
    titles = [f"in · freq {g[0]} ({len(g[1])} neurons)" for g in groups] + [f"out · freq {g[0]}" for g in groups]
    fig = make_subplots(rows=2, cols=n, subplot_titles=titles, horizontal_spacing=0.03, vertical_spacing=0.1)
    cx, cy = _circle()

    def stars(step: int, *, full: bool) -> list[go.Scatter]:
        """One trace per (side, group): the neurons joined in angle order. Frames carry only x, y and hover."""
        cin, cout = _coeffs(run, step)
        out = []
        for side, coef in ((1, cin), (2, cout)):
            for i, (f, m_in, m_out) in enumerate(groups):
                members = m_in if side == 1 else m_out
                x, y, r = _points(coef, f, members)
                hover = "%{text}<br>cos %{x:.2f}, sin %{y:.2f} (× r̄ = " + f"{r:.3g}" + ")<extra></extra>"
                if not full:
                    out.append(go.Scatter(x=np.append(x, x[:1]), y=np.append(y, y[:1]), hovertemplate=hover))
                    continue
                color = PALETTE[i % len(PALETTE)]
                out.append(go.Scatter(x=np.append(x, x[:1]), y=np.append(y, y[:1]), mode="lines+markers",
                                      line=dict(color=color, width=1), marker=dict(color=color, size=8),
                                      text=[f"neuron {j}" for j in members] + [f"neuron {members[0]}"],
                                      hovertemplate=hover, showlegend=False))
        return out

    first = stars(steps[-1], full=True)
    for k, tr in enumerate(first):
        row, col = divmod(k, n)
        fig.add_trace(tr, row + 1, col + 1)
    for k in range(len(first)):  # the unit circle (the group's mean radius), drawn once, not animated
        row, col = divmod(k, n)
        fig.add_trace(go.Scatter(x=cx, y=cy, mode="lines", line=dict(color="#ccc", width=1), hoverinfo="skip",
                                 showlegend=False), row + 1, col + 1)
    if len(steps) > 1:
        fig.frames = [go.Frame(data=stars(s, full=False), name=str(s), traces=list(range(len(first)))) for s in steps]
        add_slider(fig, [str(s) for s in steps])
    base_layout(fig, "Star plots: each neuron's (cos, sin) coefficient at its frequency, scaled by the group's mean "
                f"radius{basis_suffix(basis)}", height=330 * 2 + 150, margin=dict(b=110))
    axes = dict(range=[-1.8, 1.8], showticklabels=False, showgrid=False, zeroline=True, zerolinecolor="#eee",
                showline=False, ticks="")
    fig.update_xaxes(**axes)
    fig.update_yaxes(**axes)
    for i in range(1, 2 * n + 1):
        fig.layout[f"yaxis{'' if i == 1 else i}"].scaleanchor = f"x{'' if i == 1 else i}"
    return fig


def star_trajectory(run: Run | str | Path, *, max_frames: int = 60) -> go.Figure:
    """Each neuron's input (cos, sin) coefficient at its final frequency, traced over checkpoints (unscaled),
    one panel per frequency group; the final position is the larger dot."""
    run = as_run(run)
    if run.config.model.arch != "mlp":
        raise FigureNotApplicable("star trajectories are drawn for MLP models (arch='mlp')")
    groups = star_groups(run).groups
    steps = pick_checkpoints(run, max_frames)
    coefs = [_coeffs(run, s)[0] for s in steps]
    n = len(groups)
    fig = make_subplots(rows=1, cols=n, subplot_titles=[f"freq {g[0]}" for g in groups], horizontal_spacing=0.04)
    for i, (f, members, _) in enumerate(groups):
        for j, neuron in enumerate(members):
            xs = np.array([c[2 * f - 1, neuron] for c in coefs])
            ys = np.array([c[2 * f, neuron] for c in coefs])
            color = PALETTE[j % len(PALETTE)]
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", line=dict(color=color, width=1.2), opacity=0.8,
                                     showlegend=False, text=[f"neuron {neuron}, step {s}" for s in steps],
                                     hovertemplate="%{text}<br>(%{x:.2f}, %{y:.2f})<extra></extra>"), 1, i + 1)
            fig.add_trace(go.Scatter(x=xs[-1:], y=ys[-1:], mode="markers", marker=dict(color=color, size=8),
                                     showlegend=False, hoverinfo="skip"), 1, i + 1)
    base_layout(fig, f"Star trajectories over {len(steps)} checkpoints (input side){basis_suffix(run_basis(run))}",
                height=380)
    fig.update_xaxes(title_text="cos", zeroline=True, zerolinecolor="#ddd")
    fig.update_yaxes(zeroline=True, zerolinecolor="#ddd")
    fig.update_yaxes(title_text="sin", col=1)
    for i in range(1, n + 1):
        fig.layout[f"yaxis{'' if i == 1 else i}"].scaleanchor = f"x{'' if i == 1 else i}"
    return fig
