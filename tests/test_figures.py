"""Figure builders: each builds from a tiny trained run and holds the expected traces; missing data is a
FigureUnavailable (a note in the report), never a crash."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("plotly")

from figure_runs import copy_run, runs_root  # noqa: E402

import grokscope.figures as gf  # noqa: E402
from grokscope import load_run  # noqa: E402
from grokscope.figures import FigureNotApplicable, FigureUnavailable  # noqa: E402

P = 13


@pytest.fixture(scope="module")
def tiny():
    return load_run(runs_root() / "tiny")


@pytest.fixture(scope="module")
def mlp():
    return load_run(runs_root() / "mlp")


def test_curves_log_loss_and_accuracy(tiny):
    fig = gf.curves(tiny)
    metas = [t.meta for t in fig.data]
    assert metas == ["train_loss", "train_acc", "test_loss", "test_acc"]
    assert fig.layout.yaxis.type == "log"
    assert len(fig.data[0].x) == len(tiny.metrics["train_loss"].dropna())


def test_curves_shade_phases_and_mark_grok(run_with_grok):
    fig = gf.curves(run_with_grok)
    kinds = [s.type for s in fig.layout.shapes]
    assert "rect" in kinds  # phase shading
    assert any(s.type == "line" and s.x0 == 20 for s in fig.layout.shapes)  # the grok epoch
    assert any("grok 20" in (a.text or "") for a in fig.layout.annotations)


@pytest.fixture
def run_with_grok(tmp_path):
    """A copy of the tiny run whose metrics say it fitted at 10 and grokked at 20."""
    run = copy_run("tiny", tmp_path / "g")
    for step in (10, 15, 20, 25, 30):
        run.write_metrics(step, {"train_acc": 1.0, "test_acc": 1.0 if step >= 20 else 0.5})
    run.set_meta({"grok_epoch": "20"})
    return run


def test_progress_panel_has_the_measures(tiny):
    fig = gf.progress(tiny)
    names = {t.meta for t in fig.data}
    assert {
        "excluded_loss",
        "restricted_loss",
        "train_loss",
        "test_loss",
        "gini_W_E",
        "gini_W_L",
        "sum_sq_weights",
        "ffs",
        "fcr",
    } <= names


def test_progress_prefers_fixed_key_columns(tmp_path):
    run = copy_run("tiny", tmp_path / "f")
    run.write_metrics(30, {"excluded_loss_fixed": 123.0, "excluded_loss_k2_fixed": 7.0, "excluded_loss_k5": 1.0})
    fig = gf.progress(run)
    exc = next(t for t in fig.data if t.meta == "excluded_loss")
    assert list(exc.y) == [123.0]
    per_k = gf.excluded_per_frequency(run)
    assert [t.name for t in per_k.data][:1] == ["k = 2 removed"]


def test_progress_unavailable_without_measures(tmp_path):
    import grokscope
    from grokscope import apply_overrides, get_preset

    cfg = apply_overrides(
        get_preset("tiny"), {"train.epochs": 3, "train.measure_every": 0, "train.checkpoint_every": 3}
    )
    run = grokscope.train(cfg, tmp_path / "nm", progress=False)
    with pytest.raises(FigureUnavailable, match="progress-measure"):
        gf.progress(run)


def test_fourier_norms_with_checkpoint_slider(tiny):
    fig = gf.fourier_norms(tiny)
    assert len(fig.data) == 2 and len(fig.data[0].y) == P and list(fig.data[0].x[:3]) == ["const", "cos 1", "sin 1"]
    assert len(fig.frames) == len(tiny.checkpoints)
    steps = fig.layout.sliders[0].steps
    assert [s.label for s in steps] == [str(s) for s in tiny.checkpoints]
    assert all(s.method == "animate" for s in steps)
    # the last frame is the figure as first shown
    np.testing.assert_allclose(
        np.asarray(fig.frames[-1].data[0].y, dtype=float), np.asarray(fig.data[0].y, dtype=float), rtol=1e-5
    )


def test_key_frequencies_highlighted_from_analysis(run_copy_with_analysis):
    fig = gf.fourier_norms(run_copy_with_analysis, slider=False)
    colors = list(fig.data[0].marker.color)
    assert colors[3] == colors[4] != colors[1]  # cos 2 / sin 2 orange, cos 1 grey
    assert not fig.frames


@pytest.fixture
def run_copy_with_analysis(tmp_path):
    run = copy_run("tiny", tmp_path / "a")
    run.write_json(
        "analysis.json",
        {"key_frequencies": [2, 5], "ablations": {"original": 0.01, "key_freqs_removed": 2.5, "only_key_freqs": 0.02}},
    )
    return run


def test_attention_heatmaps_per_head(tiny):
    fig = gf.attention(tiny)
    assert [t.type for t in fig.data] == ["heatmap"] * tiny.config.model.n_heads
    assert np.asarray(fig.data[0].z).shape == (P, P)


def test_attention_not_applicable_to_mlp(mlp):
    with pytest.raises(FigureNotApplicable):
        gf.attention(mlp)


@pytest.mark.parametrize("name", ["tiny", "mlp"])
def test_neuron_heatmaps_and_clusters(name, tiny, mlp):
    run = tiny if name == "tiny" else mlp
    fig = gf.neuron_activations(run, n=4)
    assert [t.type for t in fig.data] == ["heatmap"] * 4
    assert np.asarray(fig.data[0].z).shape == (P, P)
    cl = gf.neuron_clusters(run)
    assert [t.type for t in cl.data] == ["bar", "bar"]
    assert len(cl.data[0].y) == run.config.model.d_mlp
    assert sum(cl.data[1].y) == run.config.model.d_mlp
    assert all(0 <= v <= 1 + 1e-9 for v in cl.data[0].y)


def test_logit_fourier_heatmap(tiny):
    fig = gf.logit_fourier(tiny)
    assert fig.data[0].type == "heatmap" and np.asarray(fig.data[0].z).shape == (P, P)
    assert list(fig.data[0].x[:2]) == ["const", "cos 1"]


def test_ablations_from_metrics_and_from_analysis(tiny, run_copy_with_analysis):
    fig = gf.ablations(tiny)
    assert any("restricted" in x for x in fig.data[0].x) and any("excluded" in x for x in fig.data[0].x)
    fig = gf.ablations(run_copy_with_analysis)
    assert list(fig.data[0].x) == ["original", "key freqs removed", "only key freqs"]
    assert fig.layout.yaxis.type == "log"


def test_interference_and_logit_coefficients(run_copy_with_analysis):
    fig = gf.interference(run_copy_with_analysis, a=3, b=4)
    assert [t.name for t in fig.data] == ["k = 2", "k = 5", "sum of key waves", "model logits (centred)"]
    assert len(fig.data[-1].y) == P
    co = gf.logit_coefficients(run_copy_with_analysis)
    assert [t.name for t in co.data][:2] == ["k = 2", "k = 5"]
    assert list(co.data[0].x) == run_copy_with_analysis.checkpoints


def test_wave_coefficients_recover_a_planted_wave():
    from grokscope.figures.circuit import _wave_coefs

    p, k = 11, 3
    a = np.arange(p)
    d = a[:, None, None] + a[None, :, None] - a[None, None, :]
    logits = 2.5 * np.cos(2 * np.pi * k * d / p) - 0.7 * np.sin(2 * np.pi * k * d / p)
    alpha, beta = _wave_coefs(logits, p)
    assert alpha[k - 1] == pytest.approx(2.5) and beta[k - 1] == pytest.approx(-0.7)
    assert np.abs(np.delete(alpha, k - 1)).max() < 1e-9


def test_excluded_per_frequency_needs_columns(tiny):
    with pytest.raises(FigureUnavailable, match="excluded_loss_k"):
        gf.excluded_per_frequency(tiny)


def test_star_plots_and_trajectory_for_mlp(mlp):
    fig = gf.star_plots(mlp)
    from grokscope.figures.stars import star_groups

    groups = star_groups(mlp).groups
    n = len(groups)
    assert sum(len(g[1]) for g in groups) <= mlp.config.model.d_mlp
    assert len(fig.data) == 4 * n  # (in, out) x groups neuron traces + as many circles
    assert len(fig.frames) == len(mlp.checkpoints)
    assert len(fig.frames[0].data) == 2 * n
    assert fig.layout.sliders[0].steps[-1].label == str(mlp.checkpoints[-1])
    tr = gf.star_trajectory(mlp)
    assert len(tr.data) == 2 * sum(len(g[1]) for g in groups)
    assert len(tr.data[0].x) == len(mlp.checkpoints)


def test_star_plots_not_applicable_to_transformer(tiny):
    with pytest.raises(FigureNotApplicable):
        gf.star_plots(tiny)


def test_compare_curves_overlays_runs(tiny, mlp):
    fig = gf.compare_curves([tiny, mlp], "test_loss")
    assert len(fig.data) == 2 and fig.layout.yaxis.type == "log"


def test_build_all_turns_missing_data_into_notes(tmp_path):
    """A run with a config and nothing else: every figure becomes a note, nothing raises."""
    from grokscope.presets import tiny
    from grokscope.training.loop import new_run_dir

    new_run_dir(tmp_path / "empty", tiny())
    results = gf.build_all(tmp_path / "empty")
    assert len(results) == len(gf.FIGURES)
    assert all(r.figure is None and r.note for r in results)


def test_build_all_on_trained_run(tiny):
    results = {r.key: r for r in gf.build_all(tiny)}
    built = {k for k, r in results.items() if r.figure is not None}
    assert {
        "curves",
        "progress",
        "fourier_norms",
        "attention",
        "neurons",
        "logit_fourier",
        "clusters",
        "ablations",
    } <= built
    assert not results["stars"].applicable


def test_phases_from_measures_boundaries():
    from grokscope.figures.data import phases_from_boundaries

    ph, _ = phases_from_boundaries(
        {"memorisation_end": 10, "circuit_formation_end": 40, "cleanup_end": None, "rule": "r"}, 0, 100
    )
    assert [(p.name, p.start, p.end) for p in ph] == [
        ("memorisation", 0, 10),
        ("circuit formation", 10, 40),
        ("cleanup", 40, 100),
    ]


def test_figures_serialise_to_json(tiny):
    fig = gf.fourier_norms(tiny)
    data = json.loads(fig.to_json())
    assert len(data["frames"]) == len(tiny.checkpoints)
