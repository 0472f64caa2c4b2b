"""Figures of the learned circuit, from checkpoints (and ``analysis.json`` where it helps): Fourier norms of
W_E and W_L (Figure 3), attention and neuron heatmaps over (a, b) (Figures 4, 9, 12), 2D-Fourier logit norms
(Figure 4), neuron clusters and FVE (Figure 5), ablations (Figure 6), constructive interference (Figure 8),
logit coefficients over training (Figure 14)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from grokscope.figures.data import (
    FigureNotApplicable,
    FigureUnavailable,
    analysis,
    as_run,
    find_key,
    grid,
    grid_logits,
    grok_epoch,
    key_frequencies,
    last_step,
    logits_grid,
    metrics_or_empty,
    neuron_frequency_fve,
    phases,
    pick_checkpoints,
    weights,
)
from grokscope.figures.group import (
    FigureBasis,
    basis_suffix,
    component_freqs,
    component_labels,
    group_keys,
    group_neuron_fve,
    group_wave_coefs,
    require_keys,
    run_basis,
    view_grid,
    view_weights,
)
from grokscope.figures.operations import operation_clusters, operation_norms
from grokscope.figures.style import COLORS, PALETTE, add_slider, base_layout, shade_phases
from grokscope.measures import (
    abc_wave_components,
    component_norms,
    fourier_basis,
    fourier_basis_names,
    names,
    real_fourier_basis,
)
from grokscope.store.run import Run

HEATMAP_SCALE = "RdBu_r"


# --------------------------------------------------------------------------- Fourier norms (with slider)


def _odd_p(run: Run) -> int:
    p = run.config.task.p
    if p % 2 == 0:
        raise FigureUnavailable("the Fourier basis over Z_p needs an odd p")
    return p


def _circuit_keys(run: Run) -> list[int]:
    keys, _ = key_frequencies(run)
    if not keys:
        raise FigureUnavailable("no key frequencies found (the run has not formed a Fourier circuit)")
    return keys


def _norm_bars(run: Run, step: int, basis: FigureBasis | None = None) -> tuple[np.ndarray, np.ndarray]:
    if basis is not None:  # W_E rows and W_L columns in group order, components over Z_n
        w_e, w_l = view_weights(run, step, basis)
        f = real_fourier_basis(basis.n).numpy()
        return np.linalg.norm(f @ w_e, axis=1), np.linalg.norm(f @ w_l.T, axis=1)
    w = weights(run, step)
    return (component_norms(torch.from_numpy(w.W_E), dim=0).numpy(),
            component_norms(torch.from_numpy(w.W_L), dim=1).numpy())


def fourier_norms(run: Run | str | Path, step: int | None = None, *, slider: bool = True,
                  max_frames: int = 40) -> go.Figure:
    """Norms of the Fourier components of W_E (over the input axis) and of W_L = W_out W_U (over the output
    axis), key frequencies highlighted. With ``slider``, one frame per checkpoint (up to ``max_frames``). In a
    task's group basis (:func:`~grokscope.figures.group.run_basis`): W_E rows a_order, W_L columns c_order, the
    components over Z_n, the basis in the titles."""
    run = as_run(run)
    if run.config.task.kind == "multi":  # a mixture: each operation in its own basis
        return operation_norms(run, step)
    final = last_step(run, step)
    basis = run_basis(run)
    if basis is None:
        p = _odd_p(run)
        keys, rule = key_frequencies(run)
        labels = fourier_basis_names(p)
        freq_of = [0] + [k for k in range(1, (p - 1) // 2 + 1) for _ in (0, 1)]
    else:
        keys, rule = group_keys(run, basis, final)
        labels, freq_of = component_labels(basis.n), component_freqs(basis.n)
    colors = [COLORS["key"] if f in keys else COLORS["other"] for f in freq_of]
    steps = pick_checkpoints(run, max_frames) if slider and step is None else [final]
    over = "" if basis is None else f" over Z_{basis.n}"
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.16, subplot_titles=(
        f"W_E: norm of each Fourier component{over} (over d_model){basis_suffix(basis)}",
        f"W_L = W_out·W_U: norm of each Fourier component{over} (over neurons){basis_suffix(basis)}"))
    for row, (name, norms) in enumerate(zip(("W_E", "W_L"), _norm_bars(run, steps[-1], basis)), start=1):
        fig.add_trace(go.Bar(x=labels, y=norms, marker_color=colors, name=name, showlegend=False,
                             hovertemplate="%{x}: %{y:.3g}<extra>" + name + "</extra>"), row, 1)
    if len(steps) > 1:
        frames = []
        for s in steps:
            e, l = _norm_bars(run, s, basis)
            frames.append(go.Frame(data=[go.Bar(y=e.astype(np.float32)), go.Bar(y=l.astype(np.float32))], name=str(s),
                                   traces=[0, 1]))
        fig.frames = frames
        add_slider(fig, [str(s) for s in steps])
    title = f"Fourier norms — key frequencies {keys} in orange" if keys else "Fourier norms — no key frequencies found"
    if basis is not None:
        title = title.replace("Fourier norms", f"Fourier norms{basis_suffix(basis)}", 1)
    base_layout(fig, title, height=640, bargap=0.05, margin=dict(b=140))
    fig.update_xaxes(tickangle=-60, tickfont=dict(size=9), showgrid=False)
    fig.update_yaxes(title_text="norm")
    fig.layout.meta = {"key_frequency_rule": rule, "step": steps[-1]}
    if basis is not None:
        fig.layout.meta["basis"] = {"name": basis.name, "n": basis.n, "generator": basis.generator,
                                    "shift": basis.shift, "source": basis.source}
    return fig


# --------------------------------------------------------------------------- heatmaps over (a, b)


def _heat_grid(zs: list[np.ndarray], titles: list[str], title: str, *, cols: int, zmid: float | None = 0.0,
               colorscale=HEATMAP_SCALE, zmin=None, zmax=None, scale: bool = True) -> go.Figure:
    rows = math.ceil(len(zs) / cols)
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=0.16 if rows > 1 else 0.1)
    for i, z in enumerate(zs):
        r, c = divmod(i, cols)
        fig.add_trace(go.Heatmap(z=z.astype(np.float32), colorscale=colorscale, zmid=zmid, zmin=zmin, zmax=zmax,
                                 showscale=scale and i == 0, colorbar=dict(len=0.8, thickness=12),
                                 hovertemplate="a=%{y} b=%{x}: %{z:.3g}<extra></extra>"), r + 1, c + 1)
    base_layout(fig, title, height=320 * rows + 90)
    fig.update_xaxes(showgrid=False, showline=False, ticks="")
    fig.update_xaxes(title_text="b", row=rows)
    fig.update_yaxes(title_text="a", showgrid=False, showline=False, ticks="", autorange="reversed", scaleanchor=None)
    return fig


def attention(run: Run | str | Path, step: int | None = None, *, source: int = 0) -> go.Figure:
    """Attention from the final position '=' to the token a (``source=0``) for every (a, b), one heatmap per
    head (Figures 4 and 12)."""
    run = as_run(run)
    if run.config.model.arch != "transformer":
        raise FigureNotApplicable("attention patterns exist only for transformers")
    s = last_step(run, step)
    g = grid(run, s)
    assert g.attn is not None  # a transformer's grid has attention
    heads = g.attn.shape[2]
    basis = run_basis(run)
    attn = g.attn if basis is None else g.attn[basis.a_order][:, basis.b_order]  # group order (i, j)
    zs = [attn[:, :, h, source] for h in range(heads)]
    what = ["a", "b", "="][source] if source < 3 else str(source)
    return _heat_grid(zs, [f"head {h}" for h in range(heads)],
                      f"Attention from '=' to {what} (step {s}){_grid_note(basis)}",
                      cols=min(heads, 4), zmid=None, colorscale="Viridis", zmin=0, zmax=1)


def _grid_note(basis: FigureBasis | None) -> str:
    """'' for the plain additive basis; else the basis and what the heatmap axes are (group indices i, j)."""
    if basis is None:
        return ""
    return f"{basis_suffix(basis)[:-1]}; axes: group indices i, j of a = a_order[i], b = b_order[j])"


def neuron_activations(run: Run | str | Path, step: int | None = None, neurons: list[int] | None = None, *,
                       n: int = 6) -> go.Figure:
    """Activations of a few MLP neurons (at '=') over every (a, b) (Figures 4 and 9). By default one neuron
    from each of the largest frequency clusters."""
    run = as_run(run)
    s = last_step(run, step)
    g = grid(run, s)
    p = run.config.task.p
    basis = run_basis(run)
    post = g.post if basis is None else view_grid(g.logits, g.post, basis)[1]
    assert post is not None
    if neurons is None:
        freq, fve = neuron_frequency_fve(post, p) if basis is None else group_neuron_fve(post, basis.n)
        order = [int(i) for i in np.argsort(-fve)]
        clusters = _clusters_by_size(freq, fve)
        neurons = []
        for rank in range(n):  # round robin over clusters, best neuron first
            for k in clusters:
                members = [i for i in order if freq[i] == k and fve[i] >= 0.85]
                if rank < len(members) and len(neurons) < n:
                    neurons.append(members[rank])
        neurons += [i for i in order if i not in neurons][: n - len(neurons)]
        titles = [f"neuron {i} (freq {freq[i]}, FVE {fve[i]:.2f})" for i in neurons]
    else:
        titles = [f"neuron {i}" for i in neurons]
    zs = [post[:, :, i] for i in neurons]
    title = f"MLP neuron activations at '=' over (a, b) (step {s}; each panel on its own colour scale)"
    title += _grid_note(basis)
    return _heat_grid(zs, titles, title, cols=3, zmid=None, colorscale="Viridis", scale=False)


def _clusters_by_size(freq: np.ndarray, fve: np.ndarray, threshold: float = 0.85) -> list[int]:
    ks, counts = np.unique(freq[fve >= threshold], return_counts=True)
    return [int(k) for k in ks[np.argsort(-counts)]]


def logit_fourier(run: Run | str | Path, step: int | None = None) -> go.Figure:
    """Norms of the logits in the 2D Fourier basis over (a, b) (norm over the output c): [p, p] heatmap
    (Figure 4, right). Mass on cos/sin(w_k a)·cos/sin(w_k b) at the key frequencies."""
    run = as_run(run)
    s = last_step(run, step)
    basis = run_basis(run)
    p = _odd_p(run) if basis is None else basis.n
    logits = grid_logits(run, s)  # [p, p, p]
    L = torch.from_numpy(logits if basis is None else view_grid(logits, None, basis)[0]).double()
    L = L - L.mean(dim=2, keepdim=True)
    F = fourier_basis(p) if basis is None else real_fourier_basis(p)
    norms = torch.einsum("ia,abc,jb->ijc", F, L, F).norm(dim=2).numpy().astype(np.float32)
    labels = fourier_basis_names(p) if basis is None else component_labels(p)
    heat = go.Heatmap(z=norms, x=labels, y=labels, colorscale="Blues", colorbar=dict(title="norm", thickness=12),
                      hovertemplate="a: %{y}, b: %{x}: %{z:.3g}<extra></extra>")
    fig = go.Figure(heat)
    base_layout(fig, f"Logits in the 2D Fourier basis over (a, b): norm over outputs (step {s}){_grid_note(basis)}",
                height=620,
                margin=dict(l=90, b=90))
    fig.update_xaxes(title_text="Fourier component of b", tickangle=-60, tickfont=dict(size=8), showgrid=False)
    fig.update_yaxes(title_text="Fourier component of a", tickfont=dict(size=8), autorange="reversed", showgrid=False)
    return fig


# --------------------------------------------------------------------------- neuron clusters


def neuron_clusters(run: Run | str | Path, step: int | None = None, *, threshold: float = 0.85) -> go.Figure:
    """Neurons grouped by frequency: each neuron's fraction of variance explained (FVE) by its best frequency
    (3x3 block {const, cos k, sin k}^2 of its 2D DFT), and the cluster sizes (Figure 5)."""
    run = as_run(run)
    if run.config.task.kind == "multi":  # a mixture: each operation in its own basis
        return operation_clusters(run, step, threshold=threshold)
    s = last_step(run, step)
    basis = run_basis(run)
    g = grid(run, s)
    if basis is None:
        freq, fve = neuron_frequency_fve(g.post, _odd_p(run))
    else:
        post = view_grid(g.logits, g.post, basis)[1]
        assert post is not None
        freq, fve = group_neuron_fve(post, basis.n)
    clustered = fve >= threshold
    order = np.lexsort((-fve, np.where(clustered, freq, 10**6)))
    keys = _clusters_by_size(freq, fve, threshold)
    color_of = {k: PALETTE[i % len(PALETTE)] for i, k in enumerate(sorted(keys))}
    fig = make_subplots(rows=1, cols=2, column_widths=[0.68, 0.32], subplot_titles=(
        "FVE of each neuron by its best frequency", f"neurons per frequency (FVE ≥ {threshold:.2f})"))
    colors = [color_of.get(int(freq[i]), COLORS["other"]) if clustered[i] else COLORS["other"] for i in order]
    fig.add_trace(go.Bar(x=np.arange(len(order)), y=fve[order], marker_color=colors,
                         customdata=np.stack([order, freq[order]], axis=1), showlegend=False,
                         hovertemplate="neuron %{customdata[0]}: freq %{customdata[1]}, FVE %{y:.3f}<extra></extra>"),
                  1, 1)
    fig.add_hline(y=threshold, line=dict(color="#555", dash="dash", width=1), row=1, col=1)
    labels = [f"k={k}" for k in sorted(keys)] + ["none"]
    counts = [int(np.sum(clustered & (freq == k))) for k in sorted(keys)] + [int(np.sum(~clustered))]
    fig.add_trace(go.Bar(x=labels, y=counts, marker_color=[color_of[k] for k in sorted(keys)] + [COLORS["other"]],
                         text=counts, textposition="outside", showlegend=False), 1, 2)
    base_layout(fig, f"Neuron clusters: {int(clustered.sum())} of {len(fve)} neurons explained ≥ {threshold:.0%} by "
                f"one frequency (step {s}){basis_suffix(basis)}", height=420, bargap=0)
    fig.update_xaxes(title_text="neurons, sorted by cluster then FVE", row=1, col=1)
    fig.update_yaxes(title_text="fraction of variance", range=[0, 1.02], row=1, col=1)
    fig.update_yaxes(title_text="neurons", row=1, col=2)
    return fig


# --------------------------------------------------------------------------- ablations


def ablations(run: Run | str | Path) -> go.Figure:
    """Loss when frequencies are ablated (Figure 6 / Section 4.4): from ``analysis.json`` when present,
    else the last measured restricted / excluded losses from the metrics."""
    run = as_run(run)
    data = analysis(run)
    bars: list[tuple[str, float]] = []
    source = ""
    if data is not None:
        abl = find_key(data, "ablations", "ablation")
        bars = _ablation_bars(abl)
        source = "analysis.json"
    if not bars:
        m = metrics_or_empty(run)
        have = [c for c in m.columns if m[c].notna().any()]
        row = {}
        for col in (names.TEST_LOSS, names.TRAIN_LOSS, names.RESTRICTED_LOSS, names.EXCLUDED_LOSS):
            if (read := names.read_as(col, have)) is not None:
                row[col] = float(m[read].dropna().iloc[-1])
        labels = {names.TEST_LOSS: "original (test)", names.TRAIN_LOSS: "original (train)",
                  names.RESTRICTED_LOSS: "key freqs only (restricted)",
                  names.EXCLUDED_LOSS: "key freqs removed (excluded, train)"}
        bars = [(labels[k], v) for k, v in row.items()]
        source = "last logged progress measures"
        if not any(k in row for k in (names.RESTRICTED_LOSS, names.EXCLUDED_LOSS)):
            raise FigureUnavailable("no ablation data: run 'grokscope analyze' (analysis.json) or train with progress "
                                    "measures")
    fig = go.Figure(go.Bar(x=[b[0] for b in bars], y=[max(b[1], 1e-30) for b in bars],
                           marker_color=[_ablation_color(b[0]) for b in bars], text=[f"{b[1]:.2e}" for b in bars],
                           textposition="outside", hovertemplate="%{x}: %{y:.3e}<extra></extra>"))
    base_layout(fig, f"Ablations: loss after removing frequencies ({source}){basis_suffix(run_basis(run))}", height=440,
                margin=dict(b=150))
    fig.update_yaxes(type="log", title_text="loss", exponentformat="power")
    fig.update_xaxes(tickangle=-30)
    return fig


def _ablation_color(label: str) -> str:
    low = label.lower()
    if "only" in low or "restricted" in low or "other" in low:
        return COLORS["restricted"]
    if "remov" in low or "excluded" in low or "ablat" in low:
        return COLORS["excluded"]
    return COLORS["train"]


def _ablation_bars(abl) -> list[tuple[str, float]]:
    """Accept {name: loss}, {name: {"loss": x, ...}}, or [{"name"/"label": ..., "loss": ...}, ...]."""
    out: list[tuple[str, float]] = []

    def val(v):
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if isinstance(v, dict):
            for key in ("loss", "test_loss", "value", "full_loss"):
                if isinstance(v.get(key), (int, float)):
                    return float(v[key])
        return None

    if isinstance(abl, dict):
        for name, v in abl.items():
            x = val(v)
            if x is not None and math.isfinite(x):
                out.append((str(name).replace("_", " "), x))
    elif isinstance(abl, list):
        for item in abl:
            if isinstance(item, dict):
                name = item.get("name") or item.get("label") or item.get("ablation")
                x = val(item)
                if name is not None and x is not None and math.isfinite(x):
                    out.append((str(name).replace("_", " "), x))
    return out


# --------------------------------------------------------------------------- constructive interference


def _wave_coefs(logits: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """OLS coefficients alpha_k, beta_k of cos / sin(w_k(a+b-c)) in the logit table, k = 1..(p-1)/2."""
    c, s = abc_wave_components(torch.from_numpy(logits).double())
    scale = math.sqrt(2.0 / p**3)
    return (c * scale).numpy(), (s * scale).numpy()


def interference(run: Run | str | Path, step: int | None = None, a: int = 0, b: int = 0) -> go.Figure:
    """Constructive interference (Figure 8): for input (a, b), the fitted waves alpha_k cos(w_k(a+b-c)) of each
    key frequency over the output c, their sum, and the model's (centred) logits; they agree at c = a+b. In a group
    basis, (a, b) and c are group indices (i, j) and m over Z_n, the waves cos(w_k(i+j−m)), the answer m = i+j."""
    run = as_run(run)
    s = last_step(run, step)
    basis = run_basis(run)
    abc = grid_logits(run, s)  # [p, p, p]
    if basis is None:
        p = _odd_p(run)
        keys = _circuit_keys(run)
        alpha, beta = _wave_coefs(abc, p)
        table = abc
    else:
        p = basis.n
        keys = require_keys(group_keys(run, basis, s)[0])
        table = view_grid(abc, None, basis)[0]
        alpha, beta = group_wave_coefs(table, p)
    c = np.linspace(0, p - 1, 12 * (p - 1) + 1)  # the waves drawn as continuous curves over c
    fig = go.Figure()
    total = np.zeros_like(c)
    for i, k in enumerate(keys):
        w = 2 * math.pi * k / p
        wave = alpha[k - 1] * np.cos(w * (a + b - c)) + beta[k - 1] * np.sin(w * (a + b - c))
        total += wave
        fig.add_trace(go.Scatter(x=c, y=wave.astype(np.float32), mode="lines", name=f"k = {k}",
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=1.5)))
    fig.add_trace(go.Scatter(x=c, y=total.astype(np.float32), mode="lines", name="sum of key waves",
                             line=dict(color="#111", width=3)))
    logits = table[a % p, b % p].astype(np.float64)
    fig.add_trace(go.Scatter(x=np.arange(p), y=logits - logits.mean(), mode="markers", name="model logits (centred)",
                             marker=dict(color=COLORS["test"], size=5)))
    answer = (a + b) % p if run.config.task.formula.replace(" ", "") == "a+b" else int(np.argmax(logits))
    if basis is not None:
        answer = (a + b) % p  # addition in Z_n
    fig.add_vline(x=answer, line=dict(color="#555", dash="dot"))
    if basis is None:
        title = (f"Constructive interference at (a, b) = ({a}, {b}): waves cos(w_k(a+b−c)) peak together at "
                 f"c = {answer} (step {s})")
    else:
        title = (f"Constructive interference at group input (i, j) = ({a}, {b}): waves cos(w_k(i+j−m)) over Z_{p} peak "
                 f"together at m = {answer}, c = {int(basis.c_order[answer])} (step {s}){basis_suffix(basis)}")
    base_layout(fig, title, height=440)
    fig.update_xaxes(title_text="output c" if basis is None else "output index m (c = c_order[m])")
    fig.update_yaxes(title_text="logit contribution")
    return fig


def logit_coefficients(run: Run | str | Path, *, max_frames: int = 40) -> go.Figure:
    """Over training, the size sqrt(alpha_k^2 + beta_k^2) of each key frequency's cos(w_k(a+b-c)) term in the
    logits (Figure 14), one point per checkpoint (up to ``max_frames``)."""
    run = as_run(run)
    final = last_step(run, None)
    basis = run_basis(run)
    steps = pick_checkpoints(run, max_frames)
    if basis is None:
        p = _odd_p(run)
        keys = _circuit_keys(run)
        amp = np.array([np.hypot(*_wave_coefs(logits_grid(run, s), p)) for s in steps])  # [steps, K]
    else:
        keys = require_keys(group_keys(run, basis, final)[0])
        amp = np.array([np.hypot(*group_wave_coefs(view_grid(logits_grid(run, s), None, basis)[0], basis.n))
                        for s in steps])  # [steps, n//2]
    fig = go.Figure()
    for i, k in enumerate(keys):
        fig.add_trace(go.Scatter(x=steps, y=amp[:, k - 1], mode="lines+markers", name=f"k = {k}",
                                 line=dict(color=PALETTE[i % len(PALETTE)], width=2), marker=dict(size=4)))
    others = np.delete(amp, [k - 1 for k in keys], axis=1)
    if others.size:
        fig.add_trace(go.Scatter(x=steps, y=others.max(axis=1), mode="lines", name="largest other k",
                                 line=dict(color=COLORS["other"], dash="dot")))
    ph, _ = phases(run)
    shade_phases(fig, ph, grok_epoch(run), label=False)
    base_layout(fig, "Logit coefficients of cos(w_k(a+b−c)) over training" if basis is None else
                f"Logit coefficients of cos(w_k(i+j−m)) over Z_{basis.n} over training{basis_suffix(basis)}",
                height=420)
    fig.update_xaxes(title_text="epoch")
    fig.update_yaxes(title_text="coefficient (logit units)")
    return fig
