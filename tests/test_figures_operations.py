"""A mixture of operations in the report, each operation in its own basis (issue 21 item 5): one report section per
operation naming its basis; its W_E spectrum equals the one the single-operation code path draws for a run of that
operation alone with the same weights (and the dense Fourier transform of the rows in discrete-log order); its
logit fit equals a dense least-squares fit of the model's own logits on [a, op, b, =]; an operation without a basis
gets its one-line reason; the per-operation curves are the metrics' per-operation columns."""

from __future__ import annotations

import re

import numpy as np
import pytest

pytest.importorskip("plotly")

from figure_runs import fourier_rows, values  # noqa: E402

import grokscope.figures as gf  # noqa: E402
from grokscope.figures.operations import operation_curves, operation_logit_fit, operation_panel  # noqa: E402
from grokscope.figures.registry import build_all  # noqa: E402

P = 13
FORMULAS = ("a+b", "a*b", "a*a*b+b*b*a")  # additive, discrete log (g = 2), none
POWERS = [pow(2, i, P) for i in range(P - 1)]  # a_order of the discrete-log basis: 2^i mod 13


@pytest.fixture(scope="module")
def mix(tmp_path_factory):
    import grokscope
    from grokscope import apply_overrides, get_preset

    cfg = apply_overrides(
        get_preset("tiny"),
        {
            "name": "multi",
            "task.kind": "multi",
            "task.formula": ";".join(FORMULAS),
            "task.p": P,
            "train.epochs": 10,
            "train.checkpoint_every": 10,
            "train.measure_every": 0,
            "train.log_every": 5,
        },
    )
    return grokscope.train(cfg, tmp_path_factory.mktemp("mix") / "run", progress=False)


def _state(run):
    from safetensors.numpy import load_file

    from grokscope.store.run import checkpoint_path

    return load_file(checkpoint_path(run.dir, run.checkpoints[-1]))


def test_the_report_has_one_section_per_operation_naming_its_basis(mix):
    from grokscope.figures.report import build_report

    html = build_report(mix, plotly_src="")
    heads = re.findall(
        r'<section class="fig" id="fig-operation_(\d)"><h2>([^<]*)</h2><p class="caption">([^<]*)<', html
    )
    assert [(i, h) for i, h, _ in heads] == [
        ("0", "Operation a+b (additive basis)"),
        ("1", "Operation a*b (discrete-log basis, g = 2)"),
        ("2", "Operation a*a*b+b*b*a (no group basis: tokens in order)"),
    ]
    captions = [c for _, _, c in heads]
    assert captions[1].startswith("a*b read in the discrete-log basis, g = 2: ")
    # the operation without a basis: one line saying why, and no fit
    assert captions[2] == (
        "a*a*b+b*b*a: no group basis: tokens in order; no logit fit: t is neither a sum f(a) + "
        "h(b) mod p nor, for any shift c, a product t + c = F(a) H(b) over Z_p^*."
    )
    assert "\n" not in captions[2]
    # a single-operation run gets no per-operation sections
    assert "operation_" not in " ".join(r.key for r in build_all(_single(mix, "a*b"), only=["operations"]))


def _single(mix, formula: str):
    """A single-operation run of ``formula`` holding the mixture's weights (its op tokens and 4th position cut)."""
    import torch

    from grokscope import apply_overrides, load_run
    from grokscope.store.run import save_checkpoint
    from grokscope.training.loop import new_run_dir

    path = mix.dir.parent / f"single-{formula.replace('*', 'x')}"
    if not path.exists():
        cfg = apply_overrides(mix.config, {"name": "single", "task.kind": "modular", "task.formula": formula})
        new_run_dir(path, cfg)
        state = {k: torch.from_numpy(v.copy()) for k, v in _state(mix).items()}
        state["embed.W_E"] = state["embed.W_E"][: P + 1]
        state["pos_embed.W_pos"] = state["pos_embed.W_pos"][:3]
        save_checkpoint(path, mix.checkpoints[-1], state)
    return load_run(path)


@pytest.mark.parametrize("op, n, order", [(0, P, list(range(P))), (1, P - 1, POWERS), (2, P, list(range(P)))])
def test_each_operation_spectrum_is_the_single_operation_one(mix, op, n, order):
    _, _, fig = operation_panel(mix, op)
    got = np.asarray(fig.layout.meta["W_E_norms"])
    w_e = _state(mix)["embed.W_E"].astype(np.float64)
    np.testing.assert_allclose(got, np.linalg.norm(fourier_rows(n) @ w_e[order], axis=1), rtol=1e-9)
    np.testing.assert_allclose(values(fig.data[0].y), got, rtol=1e-12)
    if op < 2:  # the single-operation code path (the task's own basis) on the same weights
        single = gf.fourier_norms(_single(mix, FORMULAS[op]))
        np.testing.assert_allclose(got, values(single.data[0].y), rtol=1e-6)


@pytest.mark.parametrize("op, n, order", [(0, P, list(range(P))), (1, P - 1, POWERS)])
def test_the_logit_fit_is_a_dense_least_squares_fit_of_the_models_logits(mix, op, n, order):
    import torch

    model = mix.load_model(mix.checkpoints[-1])
    a = torch.tensor(order).repeat_interleave(n)
    b = torch.tensor(order).repeat(n)
    tokens = torch.stack([a, torch.full_like(a, P + 1 + op), b, torch.full_like(a, P)], dim=1)
    with torch.no_grad():
        out = model(tokens)
        logits = (out[:, -1] if out.dim() == 3 else out)[:, :P].double().numpy()
    y = logits[:, order].reshape(n, n, n)
    y = (y - y.mean(axis=2, keepdims=True)).reshape(-1)
    i, j, m = np.meshgrid(np.arange(n), np.arange(n), np.arange(n), indexing="ij")
    d = ((i + j - m) % n).reshape(-1)
    cols = []
    for k in range(1, n // 2 + 1):
        cols.append(np.cos(2 * np.pi * k * d / n))
        if 2 * k < n:
            cols.append(np.sin(2 * np.pi * k * d / n))
    x = np.stack(cols, axis=1)
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    amps = [
        np.hypot(coef[2 * k], coef[2 * k + 1]) if 2 * k + 1 < len(coef) else abs(coef[2 * k]) for k in range(n // 2)
    ]
    share = float(np.sum((x @ coef) ** 2) / np.sum(y**2))
    meta = operation_panel(mix, op)[2].layout.meta
    np.testing.assert_allclose(meta["amplitudes"], amps, rtol=1e-4, atol=1e-7)
    assert meta["share"] == pytest.approx(share, rel=1e-4)
    fit = operation_logit_fit(mix).layout.meta["operations"][op]
    np.testing.assert_allclose(fit["amplitudes"], amps, rtol=1e-4, atol=1e-7)


def test_the_logit_fit_figure_gives_the_reason_for_an_operation_without_a_basis(mix):
    fig = operation_logit_fit(mix)
    assert fig.layout.meta["operations"][2] == {
        "formula": "a*a*b+b*b*a",
        "basis": None,
        "why": "t is neither a sum f(a) + h(b) mod p nor, for any shift c, a product t + c = F(a) H(b) over Z_p^*",
    }
    assert len(fig.data) == 2
    titles = [t.text for t in fig.layout.annotations]
    assert titles[0].startswith("a+b: waves over Z_13 (additive basis)")
    assert titles[1].startswith("a*b: waves over Z_12 (discrete-log basis, g = 2)")
    assert "a*a*b+b*b*a (no group basis: tokens in order): no logit fit" in fig.layout.title.text
    with pytest.raises(gf.FigureUnavailable, match="mixture"):
        operation_logit_fit(_single(mix, "a*b"))


def test_per_operation_curves_are_the_metrics_columns(mix):
    fig = operation_curves(mix)
    m = mix.metrics
    by_col = {t.meta: t for t in fig.data}
    assert set(by_col) == {f"{s}_{w}_op{i}" for s in ("train", "test") for w in ("loss", "acc") for i in range(3)}
    for col, trace in by_col.items():
        np.testing.assert_array_equal(values(trace.y), m[col].dropna().to_numpy())
    assert by_col["test_acc_op1"].name == "a*b test (discrete-log basis, g = 2)"


def test_subspace_overlap_is_the_mean_squared_cosine_of_the_principal_angles():
    from grokscope.figures.operations import subspace_overlap

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(3, 8)), rng.normal(size=(4, 8))
    # closed form by SVD: the singular values of Q_x^T Q_y are the cosines of the principal angles
    qx, _, _ = np.linalg.svd(x.T, full_matrices=False)
    qy, _, _ = np.linalg.svd(y.T, full_matrices=False)
    cos = np.linalg.svd(qx.T @ qy, compute_uv=False)
    assert subspace_overlap(x, y) == pytest.approx(float(np.mean(cos**2)), rel=1e-12)
    assert subspace_overlap(x, np.vstack([x, y[:1]])) == pytest.approx(1.0)
    e = np.eye(8)
    assert subspace_overlap(e[:2], e[2:5]) == pytest.approx(0.0, abs=1e-15)


def test_operation_overlap_reads_each_operation_in_its_basis(mix, monkeypatch):
    import grokscope.figures.operations as ops

    monkeypatch.setattr(ops, "key_frequencies_from_norms", lambda norms: [1, 2])
    fig = ops.operation_overlap(mix)
    w_e = _state(mix)["embed.W_E"].astype(np.float64)
    spans = [fourier_rows(P)[1:5] @ w_e[:P], fourier_rows(P - 1)[1:5] @ w_e[POWERS]]  # cos/sin of k = 1, 2
    want = ops.subspace_overlap(spans[0], spans[1])
    np.testing.assert_allclose(fig.layout.meta["overlap"], [[1, want], [want, 1]], rtol=1e-9)
    assert [o["formula"] for o in fig.layout.meta["operations"]] == ["a+b", "a*b"]  # the third has no basis
