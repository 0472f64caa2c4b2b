"""The values every run figure plots, read back from ``fig.data`` / ``fig.frames`` and checked against an
independent derivation: the run's metrics read with plain sqlite3, or hand-built weights whose Fourier
spectrum, neuron activations, FVE, star coordinates and logit waves are known in closed form, or a numpy
forward pass of the checkpoint. None of the references calls grokscope's figure, measure or model code.

The hand-built MLP (p = 11, quadratic activation, W_E = identity, W_U = identity) has neuron j with
    H[a, j]    = c0_j + r_j cos(w_f a + phi_j)          (input path W_E @ W_in)
    W_L[j, c]  = s_j cos(w_f c + psi_j)                 (output path W_out @ W_U)
(plus a constant OFFSET_j on two rows, which only the centring of the logits over c removes),
so post_j(a, b) = (2 c0 + r cos A + r cos B)^2 with A = w_f a + phi, and in closed form
    Fourier coefficients of H[:, j]: cos f: r sqrt(p/2) cos phi, sin f: -r sqrt(p/2) sin phi;
    FVE of frequency f (3x3 block of the 2D DFT): (16 c0^2 + r^2) / (16 c0^2 + 1.25 r^2);
    logit wave of key f: alpha_f = sum_j r^2 s / 2 cos(2 phi - psi), beta_f = -sum_j r^2 s / 2 sin(2 phi - psi).
"""

from __future__ import annotations

import json
import math
import sqlite3

import numpy as np
import pytest

pytest.importorskip("plotly")

from figure_runs import copy_run, runs_root, values  # noqa: E402

import grokscope.figures as gf  # noqa: E402

P = 11
SQ = math.sqrt(P / 2)

# (frequency, r, phi, c0, s, psi) per neuron at the final checkpoint (step 20)
NEURONS = [
    (2, 1.0, 0.3, 0.5, 1.0, 0.2),
    (2, 0.8, 2.0, 0.0, 0.7, -1.0),
    (2, 1.2, -2.2, 0.25, 1.3, 0.9),
    (3, 0.9, 1.1, 0.5, 0.6, 2.5),
    (3, 1.1, -0.7, 0.1, 1.1, -2.0),
    (5, 0.6, 0.0, 0.4, 0.9, 0.4),
]
STEPS = (10, 20)
OFFSET = {0: 0.3, 3: -0.2}  # a constant added to W_L[j, :]: logits that the centring over c must remove


def neurons_at(step: int) -> list[tuple]:
    """Step 20: NEURONS; step 10: half the radii and output scales, each input phase turned by 0.4 j."""
    if step == 20:
        return NEURONS
    return [(f, r / 2, phi + 0.4 * j, c0 / 2, s / 2, psi) for j, (f, r, phi, c0, s, psi) in enumerate(NEURONS)]


def sql_series(run_dir, name: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one metric, NULLs left out, read with plain sqlite3."""
    con = sqlite3.connect(f"file:{run_dir / 'metrics.sqlite'}?mode=ro", uri=True)
    try:
        rows = con.execute(
            "SELECT step, value FROM metrics WHERE name = ? AND value IS NOT NULL ORDER BY step", (name,)
        ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows], [r[1] for r in rows]


def assert_series(trace, run_dir, name: str, *, rtol=1e-12):
    steps, vals = sql_series(run_dir, name)
    assert steps, f"no rows of {name}"
    assert values(trace.x).tolist() == steps, name
    np.testing.assert_allclose(values(trace.y), vals, rtol=rtol, err_msg=name)


def basis_row(name: str, p: int = P) -> np.ndarray:
    """One row of the orthonormal real Fourier basis over Z_p, from its definition."""
    a = np.arange(p)
    if name == "const":
        return np.full(p, 1 / math.sqrt(p))
    kind, k = name.split()
    fn = np.cos if kind == "cos" else np.sin
    return fn(2 * np.pi * int(k) * a / p) * math.sqrt(2 / p)


def names(p: int = P) -> list[str]:
    return ["const"] + [f"{t} {k}" for k in range(1, (p - 1) // 2 + 1) for t in ("cos", "sin")]


# --------------------------------------------------------------------------- hand-built runs


def _config(arch: str):
    from grokscope import apply_overrides, get_preset

    over = {"name": f"hand-{arch}", "task.p": P, "task.formula": "a+b", "train.epochs": 20}
    if arch == "mlp":
        over.update(
            {
                "model.arch": "mlp",
                "model.d_model": P,
                "model.d_mlp": len(NEURONS),
                "model.n_heads": 1,
                "model.act_fn": "quadratic",
            }
        )
    else:
        over.update(
            {
                "model.d_model": 8,
                "model.n_heads": 2,
                "model.d_head": 4,
                "model.d_mlp": 6,
                "model.n_layers": 1,
                "model.act_fn": "relu",
            }
        )
    return apply_overrides(get_preset("tiny"), over)


def _make_run(path, cfg, states: dict[int, dict[str, np.ndarray]], key_frequencies=None):
    import torch

    from grokscope import load_run
    from grokscope.models import build_model
    from grokscope.store.run import save_checkpoint
    from grokscope.tasks import make_task
    from grokscope.training.loop import new_run_dir

    new_run_dir(path, cfg)
    task = make_task(cfg.task)
    keys = set(
        build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx).state_dict()
    )
    for step, state in states.items():
        assert set(state) == keys, set(state) ^ keys
        save_checkpoint(path, step, {k: torch.tensor(v, dtype=torch.float32) for k, v in state.items()})
    run = load_run(path)
    run.write_metrics(max(states), {"train_loss": 1.0, "test_loss": 2.0, "train_acc": 0.5, "test_acc": 0.1})
    if key_frequencies is not None:
        run.write_json("analysis.json", {"key_frequencies": key_frequencies})
    return run


def mlp_state(step: int) -> dict[str, np.ndarray]:
    c = np.arange(P)
    W_E = np.zeros((P + 1, P))
    W_E[:P] = np.eye(P)  # the '=' token (row p) is never read by the MLP
    W_in = np.zeros((P, len(NEURONS)))
    W_out = np.zeros((len(NEURONS), P))
    for j, (f, r, phi, c0, s, psi) in enumerate(neurons_at(step)):
        w = 2 * np.pi * f / P
        W_in[:, j] = c0 + r * np.cos(w * c + phi)
        W_out[j] = s * np.cos(w * c + psi) + OFFSET.get(j, 0.0)
    return {
        "embed.W_E": W_E,
        "mlp.W_in": W_in,
        "mlp.W_out": W_out,
        "unembed.W_U": np.eye(P),
        "unembed.b_U": np.zeros(P),
    }


def mlp_post(step: int = 20) -> np.ndarray:
    """[p, p, d_mlp]: post_j(a, b) = (2 c0 + r cos A + r cos B)^2, from the closed form."""
    a = np.arange(P)
    out = np.empty((P, P, len(NEURONS)))
    for j, (f, r, phi, c0, _s, _psi) in enumerate(neurons_at(step)):
        A = 2 * np.pi * f * a / P + phi
        out[:, :, j] = (2 * c0 + r * np.cos(A)[:, None] + r * np.cos(A)[None, :]) ** 2
    return out


def mlp_logits(step: int = 20) -> np.ndarray:
    """[p, p, p] (a, b, c): sum_j post_j(a, b) W_L[j, c]."""
    return np.einsum("abj,jc->abc", mlp_post(step), mlp_state(step)["mlp.W_out"])


def fve(j: int) -> float:
    _f, r, _phi, c0, _s, _psi = NEURONS[j]
    return (16 * c0**2 + r**2) / (16 * c0**2 + 1.25 * r**2)


def wave(step: int, f: int) -> tuple[float, float]:
    """(alpha_f, beta_f) of cos / sin(w_f (a + b - c)) in the hand-built MLP's logits."""
    z = sum(r**2 * s / 2 * np.exp(1j * (2 * phi - psi)) for (g, r, phi, _c0, s, psi) in neurons_at(step) if g == f)
    return float(np.real(z)), -float(np.imag(z))


def wrap(x: float) -> float:
    return math.atan2(math.sin(x), math.cos(x))


def star_order(side: str, f: int) -> list[int]:
    """Neurons of frequency f in the order of their angle atan2(sin coef, cos coef) = -phi (in) or -psi (out)."""
    idx = 2 if side == "in" else 5
    members = [j for j, n in enumerate(NEURONS) if n[0] == f]
    return sorted(members, key=lambda j: wrap(-NEURONS[j][idx]))


def star_point(step: int, j: int, side: str) -> tuple[float, float]:
    """The unscaled (cos f, sin f) Fourier coefficient of neuron j's input column or output row."""
    _f, r, phi, _c0, s, psi = neurons_at(step)[j]
    amp, ph = (r, phi) if side == "in" else (s, psi)
    return amp * SQ * math.cos(ph), -amp * SQ * math.sin(ph)


@pytest.fixture(scope="module")
def hand_mlp(tmp_path_factory):
    path = tmp_path_factory.mktemp("hand") / "mlp"
    return _make_run(path, _config("mlp"), {s: mlp_state(s) for s in STEPS}, key_frequencies=[2, 3])


# the hand-built transformer: planted W_E, W_out and W_U (closed-form Fourier norms), the rest seeded noise
def tf_state(step: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    a = np.arange(P)
    w = lambda k: 2 * np.pi * k * a / P  # noqa: E731
    d, h, dh, m = 8, 2, 4, 6
    W_E = rng.normal(0, 0.3, (P + 1, d))
    W_E[:P] = 0.0
    W_E[:P, 0] = np.cos(w(2))
    W_E[:P, 1] = 3 * np.sin(w(4))
    W_E[:P, 2] = 0.5
    W_E[:P, 3] = np.cos(w(2) + 1.0)
    W_E[:P, 4] = 0.7 * np.sin(w(5))
    if step == 5:
        W_E[:P] *= 2.0
    W_U = np.zeros((d, P))
    W_U[0] = 2 * np.cos(w(3))
    W_U[1] = np.sin(w(1))
    W_out = np.zeros((m, d))
    W_out[0, 0] = W_out[1, 1] = W_out[2, 0] = W_out[2, 1] = 1.0
    W_out[3:, 2:] = rng.normal(0, 0.5, (m - 3, d - 2))  # rows 3.. write to directions W_U does not read
    return {
        "embed.W_E": W_E,
        "pos_embed.W_pos": rng.normal(0, 0.5, (3, d)),
        "blocks.0.attn.W_Q": rng.normal(0, 1.0, (h, d, dh)),
        "blocks.0.attn.W_K": rng.normal(0, 1.0, (h, d, dh)),
        "blocks.0.attn.W_V": rng.normal(0, 0.5, (h, d, dh)),
        "blocks.0.attn.W_O": rng.normal(0, 0.5, (h, dh, d)),
        "blocks.0.attn.b_Q": rng.normal(0, 0.2, (h, dh)),
        "blocks.0.attn.b_K": rng.normal(0, 0.2, (h, dh)),
        "blocks.0.attn.b_V": rng.normal(0, 0.2, (h, dh)),
        "blocks.0.attn.b_O": rng.normal(0, 0.2, (d,)),
        "blocks.0.mlp.W_in": rng.normal(0, 0.7, (d, m)),
        "blocks.0.mlp.b_in": rng.normal(0, 0.2, (m,)),
        "blocks.0.mlp.W_out": W_out,
        "blocks.0.mlp.b_out": rng.normal(0, 0.2, (d,)),
        "unembed.W_U": W_U,
        "unembed.b_U": np.zeros(P),
    }


def tf_forward(state) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy float64 forward of the one-layer transformer on every (a, b, =): (attention pattern from '='
    [a, b, head, key pos], MLP post at '=' [a, b, d_mlp], logits at '=' [a, b, c])."""
    s = {k: np.asarray(v, dtype=np.float32).astype(np.float64) for k, v in state.items()}  # the stored float32 weights
    a, b = np.meshgrid(np.arange(P), np.arange(P), indexing="ij")
    tokens = np.stack([a, b, np.full_like(a, P)], axis=-1)  # [p, p, 3]
    resid = s["embed.W_E"][tokens] + s["pos_embed.W_pos"]  # [p, p, 3, d]
    q = np.einsum("abd,hde->abhe", resid[:, :, 2], s["blocks.0.attn.W_Q"]) + s["blocks.0.attn.b_Q"]
    k = np.einsum("abpd,hde->abphe", resid, s["blocks.0.attn.W_K"]) + s["blocks.0.attn.b_K"]
    v = np.einsum("abpd,hde->abphe", resid, s["blocks.0.attn.W_V"]) + s["blocks.0.attn.b_V"]
    scores = np.einsum("abhe,abphe->abhp", q, k) / math.sqrt(q.shape[-1])
    pattern = np.exp(scores - scores.max(-1, keepdims=True))
    pattern /= pattern.sum(-1, keepdims=True)
    z = np.einsum("abhp,abphe->abhe", pattern, v)
    mid = resid[:, :, 2] + np.einsum("abhe,hed->abd", z, s["blocks.0.attn.W_O"]) + s["blocks.0.attn.b_O"]
    post = np.maximum(mid @ s["blocks.0.mlp.W_in"] + s["blocks.0.mlp.b_in"], 0.0)
    logits = (mid + post @ s["blocks.0.mlp.W_out"] + s["blocks.0.mlp.b_out"]) @ s["unembed.W_U"] + s["unembed.b_U"]
    return pattern, post, logits


@pytest.fixture(scope="module")
def hand_tf(tmp_path_factory):
    path = tmp_path_factory.mktemp("hand") / "tf"
    return _make_run(path, _config("transformer"), {s: tf_state(s) for s in (5, 10)}, key_frequencies=[2, 4])


# --------------------------------------------------------------------------- metrics figures (plain sqlite3)


@pytest.fixture(scope="module")
def tiny():
    from grokscope import load_run

    return load_run(runs_root() / "tiny")


def test_curves_plot_the_database_rows(tiny):
    fig = gf.curves(tiny)
    assert [t.meta for t in fig.data] == ["train_loss", "train_acc", "test_loss", "test_acc"]
    for t in fig.data:
        assert_series(t, tiny.dir, t.meta)
    # losses on the left panel, accuracies on the right
    assert [t.xaxis for t in fig.data] == ["x", "x2", "x", "x2"]


def test_progress_plots_the_database_rows(tiny):
    fig = gf.progress(tiny)
    metas = [t.meta for t in fig.data]
    assert len(metas) == len(set(metas)) >= 9
    for t in fig.data:
        assert_series(t, tiny.dir, t.meta)


def test_extra_measures_plot_each_curves_fraction_of_its_move(tiny):
    fig = gf.extra_measures(tiny)
    metas = [t.meta for t in fig.data]
    assert metas == ["test_loss", "act_sparsity", "abs_weight_entropy", "weight_entropy_normalised",
                     "logit_efficiency"]
    for t in fig.data:
        steps, vals = sql_series(tiny.dir, t.meta)
        v = np.asarray(vals)
        assert values(t.x).tolist() == steps
        np.testing.assert_allclose(values(t.y), (v - v[0]) / (v[-1] - v[0]), rtol=1e-12, atol=1e-15)
        assert values(t.y)[0] == 0.0 and values(t.y)[-1] == 1.0


def test_progress_and_per_k_plot_the_fixed_key_columns(tmp_path):
    """Where *_fixed columns exist, their rows are plotted under the plain names (and the per-step ones dropped)."""
    run = copy_run("tiny", tmp_path / "f")
    for i, step in enumerate((10, 20, 30)):
        run.write_metrics(
            step,
            {
                "excluded_loss_fixed": 5.0 + i,
                "excluded_loss_k2_fixed": 3.0 - i,
                "excluded_loss_k5_fixed": 0.5 * (i + 1),
                "excluded_loss_k3": 99.0,
            },
        )
    fig = gf.progress(run)
    exc = next(t for t in fig.data if t.meta == "excluded_loss")
    assert_series(exc, run.dir, "excluded_loss_fixed")
    per_k = gf.excluded_per_frequency(run)
    assert [t.name for t in per_k.data] == ["k = 2 removed", "k = 5 removed", "all key freqs removed", "train loss"]
    for t, col in zip(
        per_k.data, ["excluded_loss_k2_fixed", "excluded_loss_k5_fixed", "excluded_loss_fixed", "train_loss"]
    ):
        assert_series(t, run.dir, col)


def test_excluded_per_frequency_plots_each_k_column(tmp_path):
    run = copy_run("tiny", tmp_path / "k")
    run.write_metrics(10, {"excluded_loss_k4": 0.25, "excluded_loss_k11": 4.0})
    run.write_metrics(20, {"excluded_loss_k4": 0.5, "excluded_loss_k11": float("nan")})  # NaN is stored as NULL
    run.write_metrics(30, {"excluded_loss_k4": 1.5, "excluded_loss_k11": 8.0})
    fig = gf.excluded_per_frequency(run)
    assert [t.name for t in fig.data][:2] == ["k = 4 removed", "k = 11 removed"]  # numeric order, not text order
    assert_series(fig.data[0], run.dir, "excluded_loss_k4")
    assert_series(fig.data[1], run.dir, "excluded_loss_k11")
    assert values(fig.data[1].x).tolist() == [10, 30]


def test_compare_curves_plots_each_runs_rows(tiny):
    mlp_dir = runs_root() / "mlp"
    fig = gf.compare_curves([tiny.dir, mlp_dir], "test_acc")
    assert [t.name for t in fig.data] == ["tiny", "mlp"]
    assert_series(fig.data[0], tiny.dir, "test_acc")
    assert_series(fig.data[1], mlp_dir, "test_acc")
    assert fig.layout.yaxis.type == "linear"


def test_ablations_from_metrics_are_the_last_logged_values(tmp_path):
    run = copy_run("tiny", tmp_path / "ab")
    run.write_metrics(30, {"restricted_loss_fixed": 0.125, "excluded_loss": float("nan")})  # the last excluded: step 20
    fig = gf.ablations(run)
    got = dict(zip(fig.data[0].x, values(fig.data[0].y)))
    want = {
        "original (test)": sql_series(run.dir, "test_loss")[1][-1],
        "original (train)": sql_series(run.dir, "train_loss")[1][-1],
        "key freqs only (restricted)": 0.125,
        "key freqs removed (excluded, train)": sql_series(run.dir, "excluded_loss")[1][-1],
    }
    if sql_series(run.dir, "full_loss")[0]:
        want["original (all p² inputs)"] = sql_series(run.dir, "full_loss")[1][-1]
    assert sql_series(run.dir, "excluded_loss")[0][-1] == 20
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12), k
    assert list(fig.data[0].text) == [f"{want[k]:.2e}" for k in got]


def test_ablations_from_analysis_are_its_losses(tmp_path):
    run = copy_run("tiny", tmp_path / "an")
    abl = {
        "original": 0.01,
        "key_freqs_removed": 2.5,
        "only_key_freqs": {"loss": 0.02, "acc": 1.0},
        "broken": float("inf"),
    }
    (run.dir / "analysis.json").write_text(
        json.dumps({"ablations": abl, "key_frequencies": [2]})
    )  # Infinity in the text
    fig = gf.ablations(run)
    assert list(fig.data[0].x) == ["original", "key freqs removed", "only key freqs"]  # the infinite one left out
    np.testing.assert_array_equal(values(fig.data[0].y), [0.01, 2.5, 0.02])


# --------------------------------------------------------------------------- the hand-built MLP (closed forms)


def test_fourier_norms_of_the_hand_built_mlp(hand_mlp):
    fig = gf.fourier_norms(hand_mlp)
    assert list(fig.data[0].x) == names() and list(fig.data[1].x) == names()
    for step, (e, l) in zip(STEPS, [fig.frames[0].data, fig.frames[1].data]):
        # W_E[:p] = I: every component of the identity has norm 1
        np.testing.assert_allclose(values(e.y), np.ones(P), rtol=1e-6)
        want = np.zeros(P)
        want[0] = math.sqrt(P) * math.hypot(*OFFSET.values())  # the constant rows
        for f in {n[0] for n in NEURONS}:
            rows = [n for n in neurons_at(step) if n[0] == f]
            want[2 * f - 1] = math.sqrt(sum((s * SQ * math.cos(psi)) ** 2 for (_f, _r, _ph, _c, s, psi) in rows))
            want[2 * f] = math.sqrt(sum((s * SQ * math.sin(psi)) ** 2 for (_f, _r, _ph, _c, s, psi) in rows))
        np.testing.assert_allclose(values(l.y), want, atol=1e-5, err_msg=f"W_L at step {step}")
    assert [f.name for f in fig.frames] == [str(s) for s in STEPS]
    np.testing.assert_allclose(values(fig.data[1].y), values(fig.frames[-1].data[1].y), rtol=1e-6)


def test_neuron_activations_of_the_hand_built_mlp(hand_mlp):
    fig = gf.neuron_activations(hand_mlp, neurons=[4, 0, 5])
    post = mlp_post()
    for t, j in zip(fig.data, [4, 0, 5]):
        np.testing.assert_allclose(values(t.z), post[:, :, j], rtol=1e-5, atol=1e-5)
    assert [a.text for a in fig.layout.annotations][:3] == ["neuron 4", "neuron 0", "neuron 5"]


def test_default_neurons_are_the_best_of_each_cluster(hand_mlp):
    """n = 3 picks the best neuron of each frequency cluster (FVE >= 0.85): by the closed-form FVE, 0, 3 and 5."""
    fig = gf.neuron_activations(hand_mlp, n=3)
    titles = [a.text for a in fig.layout.annotations][:3]
    picked = [int(t.split()[1]) for t in titles]
    clusters = {}
    for j, n in enumerate(NEURONS):
        if fve(j) >= 0.85:
            clusters.setdefault(n[0], []).append(j)
    assert sorted(picked) == sorted(max(m, key=fve) for m in clusters.values()) == [0, 3, 5]
    post = mlp_post()
    for t, j, title in zip(fig.data, picked, titles):
        assert title == f"neuron {j} (freq {NEURONS[j][0]}, FVE {fve(j):.2f})"
        np.testing.assert_allclose(values(t.z), post[:, :, j], rtol=1e-5, atol=1e-5)


def test_neuron_clusters_of_the_hand_built_mlp(hand_mlp):
    fig = gf.neuron_clusters(hand_mlp)
    f_all = [n[0] for n in NEURONS]
    fv = [fve(j) for j in range(len(NEURONS))]
    clustered = [j for j in range(len(NEURONS)) if fv[j] >= 0.85]
    order = sorted(range(len(NEURONS)), key=lambda j: (f_all[j] if j in clustered else 10**6, -fv[j]))
    assert [int(c[0]) for c in fig.data[0].customdata] == order == [0, 2, 3, 5, 4, 1]
    assert [int(c[1]) for c in fig.data[0].customdata] == [f_all[j] for j in order]
    np.testing.assert_allclose(values(fig.data[0].y), [fv[j] for j in order], rtol=1e-6)
    ks = sorted({f_all[j] for j in clustered})
    assert list(fig.data[1].x) == [f"k={k}" for k in ks] + ["none"]
    assert (
        list(fig.data[1].y)
        == [sum(f_all[j] == k for j in clustered) for k in ks] + [len(NEURONS) - len(clustered)]
        == [2, 1, 1, 2]
    )


def test_logit_fourier_of_the_hand_built_mlp(hand_mlp):
    fig = gf.logit_fourier(hand_mlp)
    L = mlp_logits()
    L = L - L.mean(axis=2, keepdims=True)
    F = np.stack([basis_row(n) for n in names()])
    want = np.linalg.norm(np.einsum("ia,abc,jb->ijc", F, L, F), axis=2)
    z = values(fig.data[0].z)
    assert list(fig.data[0].x) == names() and list(fig.data[0].y) == names()
    np.testing.assert_allclose(z, want, rtol=1e-4, atol=1e-4 * want.max())
    # Parseval: the orthonormal transform keeps the energy of the centred logits
    assert (z**2).sum() == pytest.approx((L**2).sum(), rel=1e-4)
    # numpy FFT: the energy at frequency pair (u, v) in the complex DFT equals that of the 4 real components
    X = np.fft.fft2(L, axes=(0, 1))
    for u, v in [(2, 2), (3, 3), (2, 0), (5, 5), (1, 4)]:
        real = sum(
            z[i, j] ** 2
            for i in ([0] if u == 0 else [2 * u - 1, 2 * u])
            for j in ([0] if v == 0 else [2 * v - 1, 2 * v])
        )
        cx = sum(
            (np.abs(X[su * u % P, sv * v % P]) ** 2).sum()
            for su in ({1} if u == 0 else {1, -1})
            for sv in ({1} if v == 0 else {1, -1})
        )
        assert real == pytest.approx(cx / P**2, rel=1e-4, abs=1e-6 * (z**2).sum()), (u, v)


def test_interference_waves_of_the_hand_built_mlp(hand_mlp):
    a, b = 3, 4
    fig = gf.interference(hand_mlp, a=a, b=b)
    assert [t.name for t in fig.data] == ["k = 2", "k = 3", "sum of key waves", "model logits (centred)"]
    c = np.linspace(0, P - 1, 12 * (P - 1) + 1)
    total = np.zeros_like(c)
    for t, f in zip(fig.data[:2], (2, 3)):
        alpha, beta = wave(20, f)
        theta = 2 * np.pi * f / P * (a + b - c)
        w = alpha * np.cos(theta) + beta * np.sin(theta)
        total += w
        np.testing.assert_allclose(values(t.x), c)
        np.testing.assert_allclose(values(t.y), w, atol=1e-4)
    np.testing.assert_allclose(values(fig.data[2].y), total, atol=1e-4)
    logits = mlp_logits()[a, b]
    np.testing.assert_allclose(values(fig.data[3].x), np.arange(P))
    np.testing.assert_allclose(values(fig.data[3].y), logits - logits.mean(), rtol=1e-5, atol=1e-5)
    assert fig.layout.shapes[0].x0 == (a + b) % P


def test_logit_coefficients_of_the_hand_built_mlp(hand_mlp):
    fig = gf.logit_coefficients(hand_mlp)
    assert [t.name for t in fig.data] == ["k = 2", "k = 3", "largest other k"]
    for t in fig.data:
        assert values(t.x).tolist() == list(STEPS)
    for t, f in zip(fig.data[:2], (2, 3)):
        np.testing.assert_allclose(values(t.y), [math.hypot(*wave(s, f)) for s in STEPS], rtol=1e-4)
    # frequencies 1 and 4 carry no wave; 5 does: the largest other is k = 5
    np.testing.assert_allclose(values(fig.data[2].y), [math.hypot(*wave(s, 5)) for s in STEPS], rtol=1e-4)


def test_star_plots_of_the_hand_built_mlp(hand_mlp):
    fig = gf.star_plots(hand_mlp)
    groups = [2, 3, 5]  # by size (3, 2, 1 neurons)
    n = len(groups)
    assert [a.text for a in fig.layout.annotations][:n] == [
        f"in · freq {f} ({sum(x[0] == f for x in NEURONS)} neurons)" for f in groups
    ]
    assert len(fig.data) == 4 * n

    def expected(step, side, f):
        members = star_order(side, f)
        pts = np.array([star_point(step, j, side) for j in members])
        pts = pts / np.mean(np.hypot(pts[:, 0], pts[:, 1]))
        return np.vstack([pts, pts[:1]]), members

    for k, (side, f) in enumerate([(s, f) for s in ("in", "out") for f in groups]):
        pts, members = expected(20, side, f)
        t = fig.data[k]
        np.testing.assert_allclose(values(t.x), pts[:, 0], rtol=1e-5, atol=1e-6, err_msg=f"{side} {f}")
        np.testing.assert_allclose(values(t.y), pts[:, 1], rtol=1e-5, atol=1e-6, err_msg=f"{side} {f}")
        assert list(t.text) == [f"neuron {j}" for j in members + members[:1]]
        for frame, step in zip(fig.frames, STEPS):
            pts_s, _ = expected(step, side, f)  # frames keep the final grouping and order
            np.testing.assert_allclose(values(frame.data[k].x), pts_s[:, 0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(values(frame.data[k].y), pts_s[:, 1], rtol=1e-5, atol=1e-6)
    for t in fig.data[2 * n :]:  # the unit circles
        np.testing.assert_allclose(np.hypot(values(t.x), values(t.y)), 1.0, rtol=1e-9)


def test_star_trajectory_of_the_hand_built_mlp(hand_mlp):
    fig = gf.star_trajectory(hand_mlp)
    order = [j for f in (2, 3, 5) for j in star_order("in", f)]
    assert len(fig.data) == 2 * len(order)
    for i, j in enumerate(order):
        line, dot = fig.data[2 * i], fig.data[2 * i + 1]
        pts = np.array([star_point(s, j, "in") for s in STEPS])
        np.testing.assert_allclose(values(line.x), pts[:, 0], rtol=1e-5, atol=1e-6, err_msg=f"neuron {j}")
        np.testing.assert_allclose(values(line.y), pts[:, 1], rtol=1e-5, atol=1e-6, err_msg=f"neuron {j}")
        np.testing.assert_allclose(values(dot.x), pts[-1:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(values(dot.y), pts[-1:, 1], rtol=1e-5, atol=1e-6)
        assert list(line.text) == [f"neuron {j}, step {s}" for s in STEPS]


# --------------------------------------------------------------------------- the hand-built transformer


def test_fourier_norms_of_the_hand_built_transformer(hand_tf):
    fig = gf.fourier_norms(hand_tf)
    assert [f.name for f in fig.frames] == ["5", "10"]
    nm = names()
    for frame, scale in zip(fig.frames, (2.0, 1.0)):
        e = dict(zip(nm, values(frame.data[0].y)))
        want_e = {n: 0.0 for n in nm}
        want_e["const"] = 0.5 * math.sqrt(P) * scale  # column 2: the constant 0.5
        want_e["cos 2"] = SQ * math.sqrt(1 + math.cos(1.0) ** 2) * scale  # columns 0 and 3
        want_e["sin 2"] = SQ * math.sin(1.0) * scale  # column 3: cos(x + 1) = cos x cos 1 - sin x sin 1
        want_e["sin 4"] = 3 * SQ * scale
        want_e["sin 5"] = 0.7 * SQ * scale
        np.testing.assert_allclose(
            [e[n] for n in nm], [want_e[n] for n in nm], atol=1e-5, err_msg=f"W_E at scale {scale}"
        )
        lnorm = dict(zip(nm, values(frame.data[1].y)))
        want_l = {n: 0.0 for n in nm}
        want_l["cos 3"] = 2 * SQ * math.sqrt(2)  # neurons 0 and 2 write 2 cos(w_3 c)
        want_l["sin 1"] = SQ * math.sqrt(2)  # neurons 1 and 2 write sin(w_1 c)
        np.testing.assert_allclose([lnorm[n] for n in nm], [want_l[n] for n in nm], atol=1e-5)
    colors = list(fig.data[0].marker.color)
    key = {i for i, n in enumerate(nm) if n != "const" and int(n.split()[1]) in (2, 4)}
    assert {i for i, c in enumerate(colors) if c == colors[3]} == key


def test_attention_of_the_hand_built_transformer(hand_tf):
    pattern, _, _ = tf_forward(tf_state(10))
    assert pattern[..., 0].std() > 0.05  # the reference is not a constant
    for source in (0, 1):
        fig = gf.attention(hand_tf, source=source)
        assert len(fig.data) == 2
        for h, t in enumerate(fig.data):
            np.testing.assert_allclose(
                values(t.z), pattern[:, :, h, source], rtol=1e-4, atol=1e-5, err_msg=f"head {h} source {source}"
            )


def test_neuron_activations_of_the_hand_built_transformer(hand_tf):
    _, post, _ = tf_forward(tf_state(10))
    fig = gf.neuron_activations(hand_tf, neurons=[5, 1])
    for t, j in zip(fig.data, [5, 1]):
        assert post[:, :, j].std() > 0
        np.testing.assert_allclose(values(t.z), post[:, :, j], rtol=1e-4, atol=1e-5)
    fig = gf.neuron_activations(hand_tf, step=5, neurons=[2])
    np.testing.assert_allclose(values(fig.data[0].z), tf_forward(tf_state(5))[1][:, :, 2], rtol=1e-4, atol=1e-5)


def test_logit_fourier_of_the_hand_built_transformer(hand_tf):
    """Its logits are not symmetric in (a, b): rows are a's components, columns b's."""
    L = tf_forward(tf_state(10))[2]
    L = L - L.mean(axis=2, keepdims=True)
    F = np.stack([basis_row(n) for n in names()])
    want = np.linalg.norm(np.einsum("ia,abc,jb->ijc", F, L, F), axis=2)
    assert np.abs(want - want.T).max() > 0.1 * want.max()
    z = values(gf.logit_fourier(hand_tf).data[0].z)
    np.testing.assert_allclose(z, want, rtol=1e-4, atol=1e-4 * want.max())


def test_figures_json_carries_the_same_values(hand_mlp):
    """What the report embeds (plotly JSON, typed arrays) decodes to the values checked above."""
    fig = gf.neuron_activations(hand_mlp, neurons=[3])
    data = json.loads(fig.to_json())
    np.testing.assert_allclose(values(data["data"][0]["z"]), mlp_post()[:, :, 3], rtol=1e-5, atol=1e-5)
