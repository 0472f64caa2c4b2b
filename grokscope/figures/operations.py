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

from grokscope.figures.data import (
    FigureNotApplicable,
    FigureUnavailable,
    as_run,
    last_step,
    metrics,
    operation_grid,
    weights,
)
from grokscope.figures.group import (
    FigureBasis,
    component_freqs,
    component_labels,
    group_neuron_fve,
    group_wave_coefs,
    operation_bases,
)
from grokscope.figures.style import COLORS, PALETTE, base_layout
from grokscope.measures import key_frequencies_from_norms, real_fourier_basis
from grokscope.measures.bases import group_frequency_norms
from grokscope.store.run import Run

__all__ = ["operation_clusters", "operation_curves", "operation_logit_fit", "operation_norms", "operation_overlap",
           "operation_panel", "subspace_overlap", "wave_fit_share"]


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
        n, a_order, _, c_order = _orders(basis, p)
        f = real_fourier_basis(n).numpy()
        w_e, w_l = w.W_E[a_order], w.W_L[:, c_order]
        keys = _keys(w_l)
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
        _, a, b, _ = _orders(basis, p)
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


def _mixture_ops(run: Run) -> list[tuple[str, FigureBasis | None, str, str]]:
    if run.config.task.kind != "multi":
        raise FigureNotApplicable("drawn per operation for a mixture of operations (task.kind='multi')")
    ops = operation_bases(run)
    if not ops:
        raise FigureUnavailable("the mixture has no operations")
    return ops


def _orders(basis: FigureBasis | None, p: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """(n, a_order, b_order, c_order) of an operation's basis; tokens in order over Z_p when it has none."""
    if basis is None:
        return p, np.arange(p), np.arange(p), np.arange(p)
    return basis.n, basis.a_order, basis.b_order, basis.c_order


def _keys(w_l_view: np.ndarray) -> list[int]:
    """Key frequencies by the W_L_dft rule on an operation's view of W_L [d_mlp, n] (columns c_order)."""
    return key_frequencies_from_norms(group_frequency_norms(torch.from_numpy(np.ascontiguousarray(w_l_view)), 1))


def _has_fit(label: str) -> bool:
    """Whether the operation's basis is exact on the input side, so its logits have a wave fit."""
    return not (label.startswith("no group basis") or label.endswith("output side only"))


def operation_curves(run: Run | str | Path) -> go.Figure:
    """Per operation of a mixture: its train (dashed) and test (solid) loss and accuracy over epochs, from the
    metrics' ``{split}_{loss|acc}_op{i}`` columns; each legend entry names the operation and its basis."""
    run = as_run(run)
    ops = _mixture_ops(run)
    m = metrics(run)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss (cross-entropy)", "accuracy"), horizontal_spacing=0.1)
    drawn = 0
    for i, (formula, _basis, label, _why) in enumerate(ops):
        color = PALETTE[i % len(PALETTE)]
        for split, dash in (("test", "solid"), ("train", "dash")):
            for col, what in ((1, "loss"), (2, "acc")):
                name = f"{split}_{what}_op{i}"
                if name not in m:
                    continue
                s = m[name].dropna()
                fig.add_trace(go.Scatter(x=s.index.to_numpy(), y=s.to_numpy(), mode="lines", meta=name,
                                         name=f"{formula} {split} ({label})", legendgroup=f"{i}{split}",
                                         showlegend=col == 1, line=dict(color=color, dash=dash, width=2)), 1, col)
                drawn += 1
    if not drawn:
        raise FigureUnavailable("no per-operation columns (test_acc_op0, ...) in the metrics")
    base_layout(fig, "Loss and accuracy per operation (solid: test, dashed: train)", height=440)
    fig.update_yaxes(type="log", title_text="loss", exponentformat="power", row=1, col=1)
    fig.update_yaxes(title_text="accuracy", range=[-0.02, 1.02], row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    return fig


def wave_fit_share(view: np.ndarray, n: int) -> tuple[np.ndarray, float]:
    """For a group logit table ``view`` [n, n, n] (i, j, m): the amplitude sqrt(alpha_k^2 + beta_k^2) of each wave
    cos/sin(w_k (i + j - m)), k = 1..n//2 ([n//2]), and the share of the table's variance over m (centred) that
    the waves of all k explain (the waves are orthogonal, so the shares add)."""
    alpha, beta = group_wave_coefs(view, n)
    centred = view.astype(np.float64) - view.mean(axis=2, keepdims=True)
    total = float((centred**2).sum())
    sq = np.array([n**3 / (1.0 if 2 * (k + 1) == n else 2.0) for k in range(n // 2)])
    explained = float(((alpha**2 + beta**2) * sq).sum())
    return np.sqrt(alpha**2 + beta**2), (explained / total if total > 0 else 0.0)


def operation_logit_fit(run: Run | str | Path, step: int | None = None) -> go.Figure:
    """Per operation of a mixture: its logits over its inputs [a, op, b, =] read at its group inputs and outputs
    [n, n, n], fitted by the waves cos/sin(w_k (i + j - m)) over Z_n of its own basis: each frequency's amplitude,
    key frequencies (the W_L_dft rule on the operation's view of W_L) in orange, and the share of the centred logits
    the waves explain. An operation whose basis is not exact on the input side (or has none) gets its one-line
    reason. ``layout.meta["operations"]``: formula, basis, n, amplitudes, share, keys or why."""
    run = as_run(run)
    s = last_step(run, step)
    ops = _mixture_ops(run)
    p = run.config.task.p
    w_l_all = weights(run, s).W_L
    titles: list[str] = []
    panels: list[tuple[np.ndarray, list[int]]] = []
    meta: list[dict] = []
    skipped: list[str] = []
    for i, (formula, basis, label, why) in enumerate(ops):
        if not _has_fit(label):
            reason = why.split(":")[0]
            skipped.append(f"{formula} ({label}): no logit fit: {reason}")
            meta.append({"formula": formula, "basis": None, "why": reason})
            continue
        n, a, b, c = _orders(basis, p)
        view = operation_grid(run, s, i).logits[a][:, b][:, :, c]
        amps, share = wave_fit_share(view, n)
        keys = _keys(w_l_all[:, c])
        titles.append(f"{formula}: waves over Z_{n} ({label}); explain {share:.0%}")
        panels.append((amps, keys))
        meta.append({"formula": formula, "basis": None if basis is None else basis.name, "n": n,
                     "amplitudes": amps.tolist(), "share": share, "keys": keys})
    if not panels:
        raise FigureUnavailable("; ".join(skipped))
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=titles, horizontal_spacing=0.06)
    for col, (amps, keys) in enumerate(panels, start=1):
        ks = list(range(1, len(amps) + 1))
        fig.add_trace(go.Bar(x=[f"k={k}" for k in ks], y=amps, showlegend=False,
                             marker_color=[COLORS["key"] if k in keys else COLORS["other"] for k in ks]), 1, col)
    note = ("<br>" + "<br>".join(skipped)) if skipped else ""
    base_layout(fig, f"Logit fit per operation, each in its own basis (step {s}){note}", height=440 + 22 * len(skipped),
                bargap=0.1, margin=dict(t=100 + 24 * len(skipped)))
    fig.update_yaxes(title_text="amplitude", col=1)
    fig.update_xaxes(tickangle=-60, tickfont=dict(size=8))
    fig.layout.meta = {"step": s, "operations": meta, "skipped": skipped}
    return fig


def operation_panel(run: Run | str | Path, op: int, step: int | None = None) -> tuple[str, str, go.Figure]:
    """One operation of a mixture in its own basis: (heading naming the operation and its basis, a one-line caption
    with why that basis, or why none applies, and a figure with the norms of W_E's Fourier components over Z_n
    (rows a_order) and, where the basis is exact on the input side, the amplitudes of its logit waves).
    ``layout.meta``: formula, basis, n, W_E norms, and amplitudes/share or why_no_fit."""
    run = as_run(run)
    s = last_step(run, step)
    formula, basis, label, why = _mixture_ops(run)[op]
    p = run.config.task.p
    n, a, b, c = _orders(basis, p)
    norms = np.linalg.norm(real_fourier_basis(n).numpy() @ weights(run, s).W_E[a], axis=1)
    meta: dict = {"formula": formula, "basis": None if basis is None else basis.name, "label": label, "n": n,
                  "step": s, "W_E_norms": norms.tolist()}
    fit = _has_fit(label)
    reason = why.split(":")[0]
    fig = make_subplots(rows=1, cols=2 if fit else 1, horizontal_spacing=0.08, subplot_titles=(
        f"W_E over Z_{n} ({label})", *([f"logit waves cos/sin(w_k(i+j−m)) over Z_{n}"] if fit else [])))
    fig.add_trace(go.Bar(x=component_labels(n), y=norms, showlegend=False, marker_color=COLORS["other"]), 1, 1)
    if fit:
        view = operation_grid(run, s, op).logits[a][:, b][:, :, c]
        amps, share = wave_fit_share(view, n)
        meta.update(amplitudes=amps.tolist(), share=share)
        fig.add_trace(go.Bar(x=[f"k={k}" for k in range(1, len(amps) + 1)], y=amps, showlegend=False,
                             marker_color=COLORS["key"]), 1, 2)
        caption = (f"{formula} read in the {label}: {reason}. The waves explain {share:.0%} of the centred logits "
                   f"(step {s}).")
    else:
        meta["why_no_fit"] = reason
        caption = f"{formula}: {label}; no logit fit: {reason}."
    base_layout(fig, f"{formula}: W_E spectrum and logit fit in its own basis (step {s})", height=400, bargap=0.05)
    fig.update_xaxes(tickangle=-60, tickfont=dict(size=8), showgrid=False)
    fig.layout.meta = meta
    return f"Operation {formula} ({label})", caption, fig


def subspace_overlap(x: np.ndarray, y: np.ndarray) -> float:
    """Overlap of the row spaces of ``x`` [r, d] and ``y`` [s, d]: the mean of cos^2 of their principal angles,
    ||Q_x^T Q_y||_F^2 / min(rank x, rank y) (1: one space contains the other; 0: orthogonal)."""
    qx, qy = np.linalg.qr(x.T)[0], np.linalg.qr(y.T)[0]
    r = min(np.linalg.matrix_rank(x), np.linalg.matrix_rank(y))
    return float(np.sum((qx.T @ qy) ** 2) / r) if r else 0.0


def operation_overlap(run: Run | str | Path, step: int | None = None) -> go.Figure:
    """Interference between the operations of a mixture in the shared embedding: for each operation with a group
    basis, the subspace of d_model that W_E's key-frequency components over Z_n of its basis span (rows a_order;
    keys by the W_L_dft rule on W_L[:, c_order]), and a heatmap of :func:`subspace_overlap` between operations.
    ``layout.meta``: step, operations (formula, keys), overlap [ops, ops]."""
    run = as_run(run)
    s = last_step(run, step)
    ops = _mixture_ops(run)
    p = run.config.task.p
    w = weights(run, s)
    spans, names, meta = [], [], []
    for formula, basis, label, _why in ops:
        if not _has_fit(label):
            continue
        n, a_order, _, c_order = _orders(basis, p)
        keys = _keys(w.W_L[:, c_order])
        rows = [r for r, k in enumerate(component_freqs(n)) if k in keys]
        if rows:
            spans.append(real_fourier_basis(n).numpy()[rows] @ w.W_E[a_order])
            names.append(f"{formula} ({label})")
            meta.append({"formula": formula, "keys": keys})
    if len(spans) < 2:
        raise FigureUnavailable("fewer than two operations with a group basis and key frequencies")
    z = np.array([[subspace_overlap(x, y) for y in spans] for x in spans])
    fig = go.Figure(go.Heatmap(z=z, x=names, y=names, zmin=0, zmax=1, colorscale="Blues", text=np.round(z, 2),
                               texttemplate="%{text}", colorbar=dict(title="overlap", thickness=12)))
    base_layout(fig, f"Overlap of the operations' key-frequency subspaces of W_E (step {s})", height=460)
    fig.update_yaxes(autorange="reversed")
    fig.layout.meta = {"step": s, "operations": meta, "overlap": z.tolist()}
    return fig
