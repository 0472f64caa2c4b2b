"""Plotly figures of the interpretability instruments (:mod:`grokscope.interp`), built from the ``to_dict()``
results (as written by ``grokscope patch|probe|sae`` into the run). :func:`report_specs` lists them for the HTML
report: each one is included when its JSON file exists in the run (that is, when the user asked for it by running
the command)."""

from __future__ import annotations

from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from grokscope.figures.data import FigureNotApplicable

__all__ = ["attribution_scatter", "patch_heatmaps", "probe_curves", "report_specs", "sae_features"]


def patch_heatmaps(data: dict[str, Any]) -> go.Figure:
    """Recovered fraction per (position, head) and per (activation, position); the neuron sweep as bars."""
    sweeps = data.get("sweeps", {})
    panels = [k for k in ("heads", "positions") if k in sweeps]
    has_neurons = "neurons" in sweeps
    cols = len(panels) + (1 if has_neurons else 0)
    if cols == 0:
        raise ValueError("no sweep in the patching results")
    hooks = {k: sweeps[k]["activation"]["hook"] for k in panels}
    titles = [f"{k}: {hooks[k].split(',')[0]}{' ...' if ',' in hooks[k] else ''}" for k in panels]
    if has_neurons:
        titles.append("neurons (sorted; colour = cluster)")
    fig = make_subplots(rows=1, cols=cols, subplot_titles=titles)
    for i, k in enumerate(panels, start=1):
        act = sweeps[k]["activation"]
        rows = [r.replace("blocks.", "") for r in act["row_labels"]]
        fig.add_trace(go.Heatmap(z=act["values"], x=act["col_labels"], y=rows, zmin=-1, zmax=1, colorscale="RdBu",
                                 showscale=(i == 1), name=k,
                                 hovertemplate="%{y} %{x}: %{z:.3f}<extra></extra>"), row=1, col=i)
        fig.update_yaxes(autorange="reversed", row=1, col=i)
    if has_neurons:
        vals = [v[0] for v in sweeps["neurons"]["activation"]["values"]]
        order = sorted(range(len(vals)), key=lambda j: -(vals[j] or 0))
        fig.add_trace(go.Bar(x=list(range(len(order))), y=[vals[j] for j in order], name="neurons", customdata=order,
                             hovertemplate="neuron %{customdata}: %{y:.4f}<extra></extra>"), row=1, col=cols)
    fig.update_layout(title="Activation patching: recovered fraction of the logit difference", height=420,
                      showlegend=False)
    return fig


def attribution_scatter(data: dict[str, Any]) -> go.Figure:
    """Attribution estimate against activation patching for every site of every sweep, with r and speed-up."""
    fig = go.Figure()
    lo, hi = 0.0, 0.0
    for kind, sweep in data.get("sweeps", {}).items():
        patched = [v for row in sweep["activation"]["values"] for v in row]
        estimated = [v for row in sweep["attribution"]["values"] for v in row]
        pts = [(x, y) for x, y in zip(patched, estimated) if x is not None and y is not None]
        if not pts:
            continue
        lo, hi = min([lo] + [min(p) for p in pts]), max([hi] + [max(p) for p in pts])
        r = sweep.get("pearson")
        name = f"{kind} (r={r:.3f}, {sweep['speedup']:.0f}x faster)" if r is not None else kind
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name=name))
    fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", line={"dash": "dash", "color": "grey"},
                             name="y = x"))
    fig.update_layout(title="Attribution patching vs activation patching",
                      xaxis_title="activation patching (recovered)", yaxis_title="attribution estimate", height=450)
    return fig


def probe_curves(data: dict[str, Any]) -> go.Figure:
    """Held-out R^2 of the cos/sin(w_k(a+b)) probes per key frequency over checkpoints (and a, b for reference)."""
    reports = data["reports"]
    steps = [r["step"] for r in reports]
    keys = data.get("key_frequencies") or reports[-1]["key_frequencies"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("cos/sin(w_k (a+b))", "cos/sin(w_k a)  and answer accuracy"))
    for k in keys:
        fig.add_trace(go.Scatter(x=steps, y=[r["r2"].get(f"a+b k={k}") for r in reports], mode="lines+markers",
                                 name=f"a+b, k={k}"), row=1, col=1)
        fig.add_trace(go.Scatter(x=steps, y=[r["r2"].get(f"a k={k}") for r in reports], mode="lines", name=f"a, k={k}",
                                 line={"dash": "dot"}), row=1, col=2)
    fig.add_trace(go.Scatter(x=steps, y=[r["answer_acc"] for r in reports], mode="lines", name="answer probe accuracy",
                             line={"color": "black"}), row=1, col=2)
    fig.update_yaxes(range=[-0.1, 1.05])
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title="Linear probes over training: held-out R^2", height=420)
    return fig


def sae_features(data: dict[str, Any]) -> go.Figure:
    """Per checkpoint: features aligned with each key frequency, and the reconstruction/sparsity numbers."""
    reports = data["reports"]
    keys = data.get("key_frequencies", [])
    x = [str(r["step"]) for r in reports]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("features aligned with one key frequency",
                                                        "each feature's best frequency share"))
    for k in keys:
        counts = [r["features"]["per_key_frequency"].get(str(k), 0) for r in reports]
        fig.add_trace(go.Bar(x=x, y=counts, name=f"k={k}"), row=1, col=1)
    last = reports[0]
    features = last["features"]
    fig.add_trace(go.Scatter(x=features["fve_harmonic"], mode="markers", name=f"step {last['step']}",
                             y=features.get("output_fraction") or [None] * len(features["fve_harmonic"]),
                             text=[f"feature {i}: k={k}" for i, k in enumerate(features["frequency"])],
                             marker={"color": features["frequency"], "colorscale": "Turbo", "showscale": False}),
                  row=1, col=2)
    fig.update_xaxes(title_text="checkpoint", row=1, col=1)
    fig.update_xaxes(title_text="input side: variance in {0,k,2k}^2", row=1, col=2)
    fig.update_yaxes(title_text="output side: logit-effect share", row=1, col=2)
    config = last["config"]
    fig.update_layout(barmode="stack", height=420, title=(
        f"SAE ({config['kind']}, {config['n_features']} features) at step {last['step']}: FVU {last['fvu']:.4f}, "
        f"L0 {last['l0']:.1f}, dead {last['dead']}, spliced test acc {last['accuracy']['spliced']:.4f}"))
    return fig


def report_specs() -> list[tuple[str, str, str, Any]]:
    """(key, title, caption, build(run)) for the report; a figure is not applicable until its command has run."""

    def from_file(name: str, builder, command: str):
        def build(run):
            if not (run.dir / name).is_file():
                raise FigureNotApplicable(f"run 'grokscope {command} {run.dir}' to add it")
            return builder(run.read_json(name))

        return build

    return [
        ("interp_patching", "Activation patching", "Recovered fraction of the logit difference (clean minus corrupted "
         "answer) when one head output, residual-stream position or MLP neuron is patched from the clean run into the "
         "corrupted one (grokscope patch).", from_file("interp_patch.json", patch_heatmaps, "patch")),
        ("interp_attribution", "Attribution patching", "The gradient-based estimate against activation patching for "
         "every site; r is the Pearson correlation, the speed-up the wall-time ratio.",
         from_file("interp_patch.json", attribution_scatter, "patch")),
        ("interp_probes", "Linear probes", "Held-out R² of ridge probes from the MLP activations to cos/sin(w_k(a+b)) "
         "per key frequency over checkpoints (grokscope probe --steps all).",
         from_file("interp_probe.json", probe_curves, "probe")),
        ("interp_sae", "Sparse autoencoder features", "Features of an SAE on the MLP activations that align with one "
         "key frequency (grokscope sae).", from_file("interp_sae.json", sae_features, "sae")),
    ]
