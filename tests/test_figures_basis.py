"""The report's figures in the task's group basis (issue 21 item 5): a constructed a*b mod 13 transformer whose
logits are exactly 4 sum_k cos(w_k (i + j - m)) over Z_12 for the discrete-log frequencies K = {2, 5} we choose
(:func:`grokscope.analysis.construct.group_network`; g = 2, i = log_2 a). Its embedding carries the waves
(cos, sin)(w_k i) of each token's discrete log and nothing else, and W_U reads (cos, sin)(w_k m), so in the
discrete-log basis the spectrum figure must put every bar's energy on the components of K, the logit-coefficient
figure must show amplitude 4 at K and 0 elsewhere, and each title must name the basis. The references are the
construction's own frequencies and scale, not the figure code."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("plotly")

from figure_runs import fourier_rows, values  # noqa: E402

import grokscope.figures as gf  # noqa: E402
from grokscope.figures.group import component_freqs, component_labels, run_basis  # noqa: E402
from grokscope.figures.style import COLORS  # noqa: E402

P, KEYS, SCALE = 13, (2, 5), 4.0
LABEL = "discrete-log basis, g = 2"


def _make(path, formula: str = "a*b", *, analysis: dict | None = None):
    import torch

    from grokscope import apply_overrides, get_preset, load_run
    from grokscope.analysis.construct import group_network
    from grokscope.store.run import save_checkpoint
    from grokscope.training.loop import new_run_dir

    model, _ = group_network(formula, P, KEYS, scale=SCALE)
    c = model.cfg
    cfg = apply_overrides(get_preset("tiny"), {
        "name": "basis-fig", "task.p": P, "task.formula": formula, "train.epochs": 20, "model.d_model": c.d_model,
        "model.n_heads": c.n_heads, "model.d_head": c.d_head, "model.d_mlp": c.d_mlp, "model.act_fn": c.act_fn,
        "model.n_layers": 1})
    new_run_dir(path, cfg)
    for step in (10, 20):
        save_checkpoint(path, step, {k: v.detach().to(torch.float32) for k, v in model.state_dict().items()})
    run = load_run(path)
    run.write_metrics(20, {"train_loss": 1.0, "test_loss": 2.0, "train_acc": 0.5, "test_acc": 0.1})
    if analysis is not None:
        run.write_json("analysis.json", analysis)
    return run


@pytest.fixture(scope="module")
def mul(tmp_path_factory):
    return _make(tmp_path_factory.mktemp("basis") / "mul")


def test_the_run_is_read_in_the_discrete_log_basis(mul):
    basis = run_basis(mul)
    assert basis is not None and basis.name == "dlog" and basis.n == P - 1 and basis.generator == 2
    assert basis.a_order.tolist() == [pow(2, i, P) for i in range(P - 1)]
    assert component_labels(12)[-1] == "cos 6" and len(component_labels(12)) == 12
    assert component_freqs(12) == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6]


def test_spectrum_bars_put_the_energy_exactly_on_the_chosen_frequencies(mul):
    fig = gf.fourier_norms(mul, slider=False)
    freq_of = component_freqs(P - 1)
    assert list(fig.data[0].x) == component_labels(P - 1)
    for trace in fig.data[:2]:
        bars = values(trace.y)
        on = np.array([f in KEYS for f in freq_of])
        assert bars[on].min() > 0.1 * bars.max(), trace.name
        assert bars[~on].max() <= 1e-5 * bars.max(), (trace.name, bars)
        assert (bars[on] ** 2).sum() / (bars**2).sum() > 1 - 1e-9
        orange = [c == COLORS["key"] for c in trace.marker.color]
        assert orange == on.tolist()
    assert fig.layout.meta["basis"]["name"] == "dlog"
    assert "key frequencies [2, 5]" in fig.layout.title.text
    for text in [fig.layout.title.text, *(a.text for a in fig.layout.annotations)]:
        assert LABEL in text, text
    assert "over Z_12" in fig.layout.annotations[0].text


def test_spectrum_slider_frames_are_in_the_basis_too(mul):
    fig = gf.fourier_norms(mul)
    assert [f.name for f in fig.frames] == ["10", "20"]
    bars = values(fig.frames[-1].data[0].y)
    on = np.array([f in KEYS for f in component_freqs(P - 1)])
    assert bars[~on].max() <= 1e-5 * bars.max()


def test_logit_coefficients_are_the_construction_scale_at_the_keys(mul):
    fig = gf.logit_coefficients(mul)
    assert [t.name for t in fig.data[:2]] == ["k = 2", "k = 5"]
    for trace in fig.data[:2]:
        np.testing.assert_allclose(values(trace.y), SCALE, rtol=1e-4)
    assert values(fig.data[2].y).max() < 1e-4  # the largest other frequency
    assert LABEL in fig.layout.title.text and "Z_12" in fig.layout.title.text


def test_interference_peaks_at_the_group_sum(mul):
    fig = gf.interference(mul, a=3, b=4)
    total = fig.data[len(KEYS)]
    x, y = values(total.x), values(total.y)
    assert abs(x[int(np.argmax(y))] - 7) < 1e-9 and abs(y.max() - SCALE * len(KEYS)) < 1e-3
    assert "m = 7" in fig.layout.title.text and f"c = {pow(2, 7, P)}" in fig.layout.title.text
    assert LABEL in fig.layout.title.text


def test_logit_fourier_and_clusters_name_the_basis_and_sit_on_the_keys(mul):
    fig = gf.logit_fourier(mul)
    z = values(fig.data[0].z)
    assert z.shape == (P - 1, P - 1) and LABEL in fig.layout.title.text
    freq_of = component_freqs(P - 1)
    off = np.array([[fa not in KEYS and fb not in KEYS for fb in freq_of] for fa in freq_of])
    assert z[off].max() <= 1e-4 * z.max()
    clusters = gf.neuron_clusters(mul)
    assert LABEL in clusters.layout.title.text
    freqs = {int(f) for f in values(clusters.data[0].customdata)[:, 1]}
    assert freqs <= set(KEYS)


def test_titles_name_the_basis_of_the_heatmaps(mul):
    for fig in (gf.attention(mul), gf.neuron_activations(mul)):
        assert LABEL in fig.layout.title.text and "group indices" in fig.layout.title.text


def test_analysis_json_basis_is_followed(tmp_path):
    # an analysis asked for in the additive basis (every order the identity): the figures draw the additive basis
    ident = list(range(P))
    block = {"name": "additive", "n": P, "generator": None, "shift": 0, "exact": False, "a_order": ident,
             "b_order": ident, "c_order": ident}
    run = _make(tmp_path / "mul-add", analysis={"basis": block, "key_frequencies": [1]})
    assert run_basis(run) is None
    fig = gf.fourier_norms(run, slider=False)
    assert "basis" not in fig.layout.title.text and len(fig.data[0].x) == P
    json.dumps(fig.to_plotly_json(), default=str)


def test_division_and_shifted_product_name_their_basis(tmp_path):
    div = _make(tmp_path / "div", "a/b")
    assert LABEL in gf.fourier_norms(div, slider=False).layout.title.text
    shifted = _make(tmp_path / "shift", "a*b+a+b")
    title = gf.fourier_norms(shifted, slider=False).layout.title.text
    assert "discrete-log basis of t + 1, g = 2" in title and "key frequencies [2, 5]" in title


def test_a_mixture_is_drawn_per_operation_in_its_own_basis(tmp_path):
    import torch
    from safetensors.numpy import load_file

    import grokscope
    from grokscope import apply_overrides, get_preset
    from grokscope.store.run import checkpoint_path

    cfg = apply_overrides(get_preset("tiny"), {
        "name": "multi", "task.kind": "multi", "task.formula": "a+b;a*b", "task.p": P, "train.epochs": 10,
        "train.checkpoint_every": 10, "train.measure_every": 0, "train.log_every": 5})
    run = grokscope.train(cfg, tmp_path / "multi", progress=False)
    fig = gf.fourier_norms(run)
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].startswith("a+b: W_E over Z_13 (additive basis)")
    assert titles[2].startswith(f"a*b: W_E over Z_12 ({LABEL})") and titles[3].startswith("a*b: W_L over Z_12")
    w_e = load_file(checkpoint_path(run.dir, run.checkpoints[-1]))["embed.W_E"].astype(np.float64)[:P]
    powers = [pow(2, i, P) for i in range(P - 1)]
    np.testing.assert_allclose(values(fig.data[0].y), np.linalg.norm(fourier_rows(P) @ w_e, axis=1), rtol=1e-9)
    np.testing.assert_allclose(values(fig.data[2].y), np.linalg.norm(fourier_rows(P - 1) @ w_e[powers], axis=1),
                               rtol=1e-9)
    assert [op["basis"] for op in fig.layout.meta["operations"]] == [None, "dlog"]
    with pytest.raises(gf.FigureUnavailable, match="each operation in its own basis"):
        gf.logit_fourier(run)
    # clusters per operation, each at its own group inputs: the reference reads the model on [a, op, b, =] itself
    clusters = gf.neuron_clusters(run)
    assert [a.text.split(":")[0] for a in clusters.layout.annotations] == ["a+b (additive basis)", f"a*b ({LABEL})"]
    model = run.load_model(run.checkpoints[-1])
    for i, (order, n) in enumerate(((list(range(P)), P), (powers, P - 1))):
        a = torch.tensor(order).repeat_interleave(n)
        b = torch.tensor(order).repeat(n)
        tokens = torch.stack([a, torch.full_like(a, P + 1 + i), b, torch.full_like(a, P)], dim=1)
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens)
        post = cache["blocks.0.mlp.hook_post"][:, -1].double().numpy().reshape(n, n, -1)
        coef = np.einsum("ia,abd,jb->ijd", fourier_rows(n), post, fourier_rows(n)) ** 2
        coef[0, 0] = 0
        fracs = []
        for k in range(1, n // 2 + 1):
            rows = [0, 2 * k - 1, 2 * k] if 2 * k < n else [0, n - 1]
            with np.errstate(invalid="ignore"):
                fracs.append(coef[np.ix_(rows, rows)].sum(axis=(0, 1)) / coef.sum(axis=(0, 1)))
        best = np.nan_to_num(np.max(fracs, axis=0))  # a dead neuron: no variance, not clustered
        assert sum(values(clusters.data[i].y)[:-1]) == int((best >= 0.85).sum())
        assert values(clusters.data[i].y)[-1] == int((best < 0.85).sum())


def test_mlp_star_plots_and_progress_name_the_basis(tmp_path):
    import grokscope
    from grokscope import apply_overrides, get_preset

    cfg = apply_overrides(get_preset("tiny"), {
        "name": "mlp-mul", "task.formula": "a*b", "task.p": P, "model.arch": "mlp", "model.d_mlp": 12,
        "model.n_heads": 1, "train.epochs": 20, "train.checkpoint_every": 10, "train.measure_every": 10,
        "train.log_every": 5})
    run = grokscope.train(cfg, tmp_path / "mlp", progress=False)
    stars = gf.star_plots(run)
    assert LABEL in stars.layout.title.text
    assert all(int(t.split("freq ")[1].split()[0]) <= (P - 2) // 2 for t in
               (a.text for a in stars.layout.annotations if a.text.startswith("in")))  # no Nyquist group
    assert LABEL in gf.star_trajectory(run).layout.title.text
    title = gf.progress(run).layout.title.text
    assert title.startswith("Progress measures (") and LABEL in title


def test_report_header_names_the_basis_and_its_keys(mul):
    from grokscope.figures.report import build_report, header_data

    h = header_data(mul)
    assert h["basis"] == LABEL and h["key_frequencies"] == list(KEYS)
    assert LABEL in h["key_frequency_rule"]
    html = build_report(mul, plotly_src="")
    assert f'data-field="basis">{LABEL}' in html
