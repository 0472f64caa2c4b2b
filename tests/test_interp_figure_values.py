"""The values each interpretability figure plots, read back from ``fig.data`` and checked against an independent
derivation that calls none of grokscope's patching, probe, SAE or Fourier code:

* patching (``patch_heatmaps``, ``attribution_scatter``): a numpy float64 forward pass of a small one-layer
  transformer's weights with its own hook points; activation patching is that forward pass with one slice of the
  clean activations spliced into the corrupted run, attribution patching its directional derivative along the
  same slice (central finite differences). Where the logits are linear in the activation (MLP neurons, mlp_out,
  resid_post) the two agree, and patching z or the residual stream at a position the last one cannot see is 0;
* probes (``probe_curves``): a hand-built activation (planted cos/sin waves plus fixed noise) and ridge regression
  written in numpy from the module's documented recipe (random half held out, penalty alpha * mean eigenvalue,
  alpha chosen on a validation fifth); the planted waves are read back with R^2 = 1;
* SAE (``sae_features``): a hand-built SAE (chosen encoder and decoder rows) on the hand-built quadratic MLP, with
  the activations, reconstruction, splice accuracy, 2-D DFT energy shares (numpy FFT) and decoder logit-effect
  shares computed in numpy.

The builders are fed exactly what the commands write (``to_dict()`` of the result objects), so each test covers the
instrument and its figure together.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

pytest.importorskip("plotly")

from figure_runs import values  # noqa: E402  (the Plotly typed-array decoder)

from grokscope.config import ModelConfig, TaskConfig  # noqa: E402
from grokscope.figures import interp as ifig  # noqa: E402
from grokscope.tasks import make_task  # noqa: E402

P = 13


def w(k: int, x) -> np.ndarray:
    return 2 * np.pi * k * np.asarray(x, dtype=np.float64) / P


# =========================================================================== activation / attribution patching

N_PAIRS = 24
HOOKS_POS = ["blocks.0.hook_resid_pre", "blocks.0.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.0.hook_resid_post"]


def np_transformer(state: dict[str, np.ndarray], tokens: np.ndarray, override=None) -> tuple[np.ndarray, dict]:
    """Logits at the last position [n, p] and the hooked activations (full sequence, causal attention) of the
    one-layer transformer without LayerNorm; ``override(name, x)`` may replace an activation."""
    acts: dict[str, np.ndarray] = {}

    def hook(name, x):
        if override is not None:
            x = override(name, x)
        acts[name] = x
        return x

    s = state
    resid = hook("blocks.0.hook_resid_pre", s["embed.W_E"][tokens] + s["pos_embed.W_pos"][None])
    q = np.einsum("npd,hde->nphe", resid, s["blocks.0.attn.W_Q"]) + s["blocks.0.attn.b_Q"]
    k = np.einsum("npd,hde->nphe", resid, s["blocks.0.attn.W_K"]) + s["blocks.0.attn.b_K"]
    v = np.einsum("npd,hde->nphe", resid, s["blocks.0.attn.W_V"]) + s["blocks.0.attn.b_V"]
    scores = np.einsum("nqhe,nkhe->nhqk", q, k) / math.sqrt(q.shape[-1])
    n_ctx = tokens.shape[1]
    scores = np.where(np.tril(np.ones((n_ctx, n_ctx), dtype=bool)), scores, -np.inf)
    pattern = np.exp(scores - scores.max(-1, keepdims=True))
    pattern /= pattern.sum(-1, keepdims=True)
    z = hook("blocks.0.attn.hook_z", np.einsum("nhqk,nkhe->nqhe", pattern, v))
    attn_out = hook(
        "blocks.0.hook_attn_out", np.einsum("nqhe,hed->nqd", z, s["blocks.0.attn.W_O"]) + s["blocks.0.attn.b_O"]
    )
    mid = resid + attn_out
    post = hook("blocks.0.mlp.hook_post", np.maximum(mid @ s["blocks.0.mlp.W_in"] + s["blocks.0.mlp.b_in"], 0.0))
    mlp_out = hook("blocks.0.hook_mlp_out", post @ s["blocks.0.mlp.W_out"] + s["blocks.0.mlp.b_out"])
    final = hook("blocks.0.hook_resid_post", mid + mlp_out)
    return final[:, -1] @ s["unembed.W_U"] + s["unembed.b_U"], acts


class NumpyPatching:
    """Activation patching (t = 1) and its first-order estimate (d/dt at t = 0) of the corrupted run moved a
    fraction t of the way to the clean activation on one slice, in numpy."""

    def __init__(self, state, clean, corrupt, clean_ans, corrupt_ans):
        self.state, self.clean, self.corrupt = state, clean, corrupt
        self.ans = (clean_ans, corrupt_ans)
        logits_c, self.clean_acts = np_transformer(state, clean)
        logits_k, _ = np_transformer(state, corrupt)
        self.ld_clean, self.ld_corrupt = self.ld(logits_c), self.ld(logits_k)

    def ld(self, logits) -> float:
        rows = np.arange(len(logits))
        return float(np.mean(logits[rows, self.ans[0]] - logits[rows, self.ans[1]]))

    def moved(self, hook: str, mask: np.ndarray, t: float) -> float:
        def override(name, x):
            return x + t * mask * (self.clean_acts[name] - x) if name == hook else x

        return self.ld(np_transformer(self.state, self.corrupt, override)[0])

    def recovered(self, hook, mask) -> float:
        return (self.moved(hook, mask, 1.0) - self.ld_corrupt) / (self.ld_clean - self.ld_corrupt)

    def attribution(self, hook, mask, h: float = 1e-6) -> float:
        slope = (self.moved(hook, mask, h) - self.moved(hook, mask, -h)) / (2 * h)
        return slope / (self.ld_clean - self.ld_corrupt)

    # masks over one activation's non-batch axes
    def tables(self, kind: str, how) -> np.ndarray:
        d_mlp = self.state["blocks.0.mlp.W_in"].shape[1]
        n_heads, d_head = self.state["blocks.0.attn.W_Q"].shape[0], self.state["blocks.0.attn.W_Q"].shape[2]
        d = self.state["embed.W_E"].shape[1]
        if kind == "heads":
            out = np.zeros((3, n_heads))
            for pos in range(3):
                for head in range(n_heads):
                    m = np.zeros((3, n_heads, d_head))
                    m[pos, head] = 1.0
                    out[pos, head] = how("blocks.0.attn.hook_z", m)
            return out
        if kind == "neurons":
            out = np.zeros((d_mlp, 1))
            for j in range(d_mlp):
                m = np.zeros((3, d_mlp))
                m[2, j] = 1.0
                out[j, 0] = how("blocks.0.mlp.hook_post", m)
            return out
        out = np.zeros((len(HOOKS_POS), 3))
        for i, hook in enumerate(HOOKS_POS):
            for pos in range(3):
                m = np.zeros((3, d))
                m[pos] = 1.0
                out[i, pos] = how(hook, m)
        return out


@pytest.fixture(scope="module")
def patched():
    """(data as ``grokscope patch`` writes it, the numpy reference) for a float64 one-layer transformer with its
    random initial weights scaled up (larger logit differences), on hand-made pairs with operand a corrupted."""
    from grokscope.interp.attribution import attribution_patching, compare_with_activation_patching
    from grokscope.interp.patching import PatchSetup
    from grokscope.models import Transformer

    model = (
        Transformer(
            ModelConfig(d_model=8, n_heads=2, d_head=4, d_mlp=10, init_seed=5), d_vocab=P + 1, d_vocab_out=P, n_ctx=3
        )
        .double()
        .eval()
    )
    with torch.no_grad():
        for prm in model.parameters():
            prm.mul_(2.5)
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, P, N_PAIRS), rng.integers(0, P, N_PAIRS)
    a2 = (a + rng.integers(1, P, N_PAIRS)) % P  # a different a: a different answer
    eq = np.full(N_PAIRS, P)
    clean, corrupt = np.stack([a, b, eq], 1), np.stack([a2, b, eq], 1)
    setup = PatchSetup(
        torch.tensor(clean), torch.tensor(corrupt), torch.tensor((a + b) % P), torch.tensor((a2 + b) % P)
    )
    attr = attribution_patching(model, setup)
    comps = compare_with_activation_patching(model, setup, ["heads", "neurons", "positions"], attr=attr)
    data = {"sweeps": {c.kind: c.to_dict() for c in comps}}
    state = {k: v.detach().numpy().astype(np.float64) for k, v in model.state_dict().items()}
    ref = NumpyPatching(state, clean, corrupt, (a + b) % P, (a2 + b) % P)
    assert abs(ref.ld_clean - ref.ld_corrupt) > 0.2  # a recovered fraction well defined
    return data, ref


def test_patch_heatmaps_plot_the_numpy_patching_effects(patched):
    data, ref = patched
    fig = ifig.patch_heatmaps(data)
    assert len(fig.data) == 3
    heads, positions, neurons = fig.data

    want = ref.tables("heads", ref.recovered)
    np.testing.assert_allclose(values(heads.z), want, rtol=0, atol=1e-9)
    assert list(heads.x) == ["head 0", "head 1"] and list(heads.y) == ["pos 0", "pos 1", "pos 2"]
    # closed form: z at positions 0 and 1 never reaches the last position's logits in one layer
    assert np.all(want[:2] == 0.0) and np.all(np.abs(want[2]) > 1e-3)

    want = ref.tables("positions", ref.recovered)
    np.testing.assert_allclose(values(positions.z), want, rtol=0, atol=1e-9)
    assert list(positions.y) == [h.replace("blocks.", "") for h in HOOKS_POS] and list(positions.x) == [
        "pos 0",
        "pos 1",
        "pos 2",
    ]
    # closed form: the residual stream before the block at the corrupted operand's position is everything (the
    # other positions hold the same tokens in both runs), after the block at the last position too
    assert want[0].tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-12)
    assert want[3].tolist() == pytest.approx([0.0, 0.0, 1.0], abs=1e-12)
    assert want[1:, :2] == pytest.approx(np.zeros((3, 2)), abs=1e-12)

    want = ref.tables("neurons", ref.recovered)[:, 0]
    order = np.argsort(-want, kind="stable")
    assert len(set(want.round(12))) == len(want)  # no ties: the order is defined
    np.testing.assert_allclose(values(neurons.y), want[order], rtol=0, atol=1e-9)
    assert values(neurons.x).tolist() == list(range(len(want)))
    assert values(neurons.customdata).astype(int).tolist() == order.tolist()


def test_attribution_scatter_plots_numpy_patching_against_its_derivative(patched):
    data, ref = patched
    fig = ifig.attribution_scatter(data)
    kinds = ["heads", "neurons", "positions"]
    assert [t.name.split(" ")[0] for t in fig.data] == kinds + ["y"]
    lo, hi = 0.0, 0.0
    for trace, kind in zip(fig.data, kinds):
        act = ref.tables(kind, ref.recovered).reshape(-1)
        est = ref.tables(kind, ref.attribution).reshape(-1)
        np.testing.assert_allclose(values(trace.x), act, rtol=0, atol=1e-9, err_msg=kind)
        np.testing.assert_allclose(values(trace.y), est, rtol=0, atol=1e-6, err_msg=kind)
        r = float(re.search(r"r=(-?[0-9.]+)", trace.name).group(1))
        assert r == pytest.approx(np.corrcoef(act, est)[0, 1], abs=5e-4 + 1e-9), kind
        lo, hi = min(lo, act.min(), est.min()), max(hi, act.max(), est.max())
        if kind == "neurons":  # the logits are linear in the neurons: the estimate is exact
            np.testing.assert_allclose(est, act, rtol=0, atol=1e-6)
        if kind == "heads":  # ... and not in z (softmax-free but through the ReLU MLP): it differs
            assert np.max(np.abs(est - act)) > 1e-3
    np.testing.assert_allclose(values(fig.data[-1].x), [lo, hi], rtol=0, atol=1e-6)
    np.testing.assert_allclose(values(fig.data[-1].y), [lo, hi], rtol=0, atol=1e-6)


# =========================================================================== probes

ALPHAS = (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)  # as documented in grokscope.interp.probes
KEYS = [2, 3]
PROBE_STEPS = (10, 20)


class PlantedActivations:
    """A stand-in model whose activation ``h`` (no position axis) is chosen per step: step 10 carries cos/sin of
    w_2 a and a weak cos w_3 (a+b); step 20 cos/sin of w_2 (a+b) and w_3 (a+b). Two fixed noise columns each."""

    def __init__(self, step: int):
        self.step = step

    def features(self, tokens: np.ndarray) -> np.ndarray:
        a, b = tokens[:, 0], tokens[:, 1]
        noise = np.random.default_rng(self.step).normal(0, 1, (P, P, 2))[a, b]
        if self.step == 10:
            cols = [np.cos(w(2, a)), np.sin(w(2, a)), 0.3 * np.cos(w(3, a + b))]
        else:
            cols = [np.cos(w(2, a + b)), np.sin(w(2, a + b)), np.cos(w(3, a + b)), np.sin(w(3, a + b))]
        return np.column_stack(cols + [noise[:, 0], 0.5 * noise[:, 1]])

    def run_with_cache(self, tokens):
        return None, {"h": torch.tensor(self.features(tokens.numpy()))}


def ridge(x: np.ndarray, y: np.ndarray, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(W, x mean, y mean) of ridge with an intercept: penalty alpha * trace(Xc^T Xc) / d."""
    xm, ym = x.mean(0), y.mean(0)
    xc = x - xm
    g = xc.T @ xc
    return np.linalg.solve(g + alpha * np.trace(g) / g.shape[0] * np.eye(g.shape[0]), xc.T @ (y - ym)), xm, ym


def r2(y, pred, mean) -> float:
    return 1.0 - float(((y - pred) ** 2).sum()) / float(((y - mean) ** 2).sum())


def perm(n: int, seed: int = 0) -> np.ndarray:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()


def numpy_probe(x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Held-out R^2 (and the held-out predictions and rows) of the documented recipe: fit on a random half, alpha
    by R^2 on a random fifth of the fitting rows (first best, improvements under 1e-12 ignored), refit, score."""
    n = len(x)
    order = perm(n)
    n_fit = int(round(n * 0.5))
    fit, ev = order[:n_fit], order[n_fit:]
    sub = perm(n_fit)
    n_val = max(1, int(round(n_fit * 0.2)))
    val, tr = fit[sub[:n_val]], fit[sub[n_val:]]
    best, chosen = -math.inf, ALPHAS[0]
    for alpha in ALPHAS:
        W, xm, ym = ridge(x[tr], y[tr], alpha)
        score = r2(y[val], (x[val] - xm) @ W + ym, ym)
        if score > best + 1e-12:
            best, chosen = score, alpha
    W, xm, ym = ridge(x[fit], y[fit], chosen)
    pred = (x[ev] - xm) @ W + ym
    return r2(y[ev], pred, ym), pred, ev


@pytest.fixture(scope="module")
def probed():
    from grokscope.interp.probes import ProbeSeries, probe_model

    task = make_task(TaskConfig(p=P, train_fraction=0.5))
    reports = [probe_model(PlantedActivations(s), task, KEYS, hook="h", step=s) for s in PROBE_STEPS]
    return task, {"key_frequencies": KEYS, **ProbeSeries(reports).to_dict()}


def test_probe_curves_plot_numpy_ridge_r2_over_checkpoints(probed):
    task, data = probed
    tokens, labels = task.tokens.numpy(), task.labels.numpy()
    a, b = tokens[:, 0], tokens[:, 1]
    want: dict[str, list[float]] = {}
    acc = []
    for s in PROBE_STEPS:
        x = PlantedActivations(s).features(tokens)
        for k in KEYS:
            for kind, arg in (("a+b", a + b), ("a", a)):
                want.setdefault(f"{kind} k={k}", []).append(
                    numpy_probe(x, np.column_stack([np.cos(w(k, arg)), np.sin(w(k, arg))]))[0]
                )
        _, pred, ev = numpy_probe(x, np.eye(P)[labels])
        acc.append(float(np.mean(pred.argmax(1) == labels[ev])))
    # closed form: a planted wave is read back exactly
    assert want["a k=2"][0] == pytest.approx(1.0, abs=1e-9) and want["a+b k=2"][1] == pytest.approx(1.0, abs=1e-9)
    assert want["a+b k=3"][1] == pytest.approx(1.0, abs=1e-9) and want["a k=2"][1] < 0.2

    fig = ifig.probe_curves(data)
    assert [t.name for t in fig.data] == ["a+b, k=2", "a, k=2", "a+b, k=3", "a, k=3", "answer probe accuracy"]
    for trace in fig.data:
        assert values(trace.x).tolist() == list(PROBE_STEPS)
    for trace in fig.data[:-1]:
        kind, k = trace.name.split(", ")
        np.testing.assert_allclose(values(trace.y), want[f"{kind} {k}"], rtol=0, atol=1e-8, err_msg=trace.name)
    np.testing.assert_allclose(values(fig.data[-1].y), acc, rtol=0, atol=1e-12)
    assert acc[1] > acc[0]  # the answer becomes readable once a+b is


# =========================================================================== SAE

SAE_KEYS = [2, 5]


def quadratic_post(model, tokens: np.ndarray) -> np.ndarray:
    """The hand-built quadratic MLP's neurons in numpy: ((W_E[a] + W_E[b]) @ W_in)^2."""
    we = model.embed.W_E.detach().numpy().astype(np.float64)
    w_in = model.mlp.W_in.detach().numpy().astype(np.float64)
    return ((we[tokens[:, 0]] + we[tokens[:, 1]]) @ w_in) ** 2


def hand_sae(d: int, step: int):
    """Six features over the 10 neurons of quadratic_mlp_addition(P, [2, 5]) (neurons 0-4: k=2, 5-9: k=5).

    Step 100: f0 = n0, f1 = n5, f2 = n1 + 0.7 n6 (two frequencies), f3 dead (reads -n0 - 1), f4 = ReLU(n2 - 1.5)
    (rectified), f5 = 0.5 n3; decoder rows one neuron each, but f2's writes n1 + 0.6 n7 (k=2 and k=5 waves of
    amplitudes 1 : 0.6 in the logits). Step 200: f0-f3 read the k=5 neurons, f4, f5 dead."""
    from grokscope.interp.sae import SAE, SAEConfig

    enc, dec = np.zeros((d, 6)), np.zeros((6, d))
    b_enc = np.zeros(6)
    if step == 100:
        enc[0, 0] = enc[5, 1] = enc[1, 2] = enc[2, 4] = 1.0
        enc[6, 2] = 0.7
        enc[0, 3], b_enc[3], b_enc[4], enc[3, 5] = -1.0, -1.0, -1.5, 0.5
        rows = {0: {0: 1.0}, 1: {5: 1.0}, 2: {1: 1.0, 7: 0.6}, 3: {9: 1.0}, 4: {2: 1.0}, 5: {3: 1.0}}
    else:
        for j in range(4):
            enc[5 + j, j] = 1.0
        enc[0, 4] = enc[0, 5] = -1.0
        b_enc[4] = b_enc[5] = -0.1
        rows = {0: {5: 1.0}, 1: {6: 1.0}, 2: {7: 1.0, 0: 1.0}, 3: {8: 1.0}, 4: {1: 1.0}, 5: {4: 1.0}}
    for f, weights in rows.items():
        for j, v in weights.items():
            dec[f, j] = v / math.sqrt(sum(u * u for u in weights.values()))
    sae = SAE(d, SAEConfig(n_features=6, kind="l1", l1=1e-3, steps=1, seed=0))
    with torch.no_grad():
        sae.W_enc.copy_(torch.tensor(enc))
        sae.b_enc.copy_(torch.tensor(b_enc))
        sae.W_dec.copy_(torch.tensor(dec))
        sae.b_dec.zero_()
    return sae.eval(), enc, b_enc, dec


def energy_shares(feats: np.ndarray, k_max: int) -> tuple[np.ndarray, np.ndarray]:
    """For features [p*p, n] in grid order: ([K, n] share of the non-constant 2-D DFT energy in {0, ±k}^2,
    [K, n] share in {0, ±k, ±2k}^2), from numpy's complex FFT."""
    e = np.abs(np.fft.fft2(feats.reshape(P, P, -1), axes=(0, 1))) ** 2
    e[0, 0] = 0.0
    total = np.maximum(e.sum(axis=(0, 1)), 1e-300)

    def share(freqs):
        idx = sorted({f % P for f in freqs})
        return e[np.ix_(idx, idx)].sum(axis=(0, 1)) / total

    strict = np.stack([share([0, k, -k]) for k in range(1, k_max + 1)])
    family = np.stack([share([0, k, -k, 2 * k, -2 * k]) for k in range(1, k_max + 1)])
    return strict, family


@pytest.fixture(scope="module")
def sae_data():
    from grokscope.analysis.construct import quadratic_mlp_addition
    from grokscope.interp.sae import evaluate_sae

    task = make_task(TaskConfig(p=P, train_fraction=0.5))
    model = quadratic_mlp_addition(P, SAE_KEYS)
    reports = [evaluate_sae(hand_sae(model.cfg.d_mlp, s)[0], model, task, SAE_KEYS, step=s) for s in (100, 200)]
    return task, model, {"key_frequencies": SAE_KEYS, "reports": [r.to_dict() for r in reports]}


def test_sae_features_plot_the_hand_built_features(sae_data):
    task, model, data = sae_data
    grid = np.array([(a, b, P) for a in range(P) for b in range(P)])
    x_grid = quadratic_post(model, grid)
    w_l = model.mlp.W_out.detach().numpy().astype(np.float64) @ model.unembed.W_U.detach().numpy().astype(np.float64)
    per_key: dict[int, list[int]] = {k: [] for k in SAE_KEYS}
    ref = {}
    for step in (100, 200):
        _, enc, b_enc, dec = hand_sae(x_grid.shape[1], step)
        f = np.maximum(x_grid @ enc + b_enc, 0.0)
        strict, family = energy_shares(f, (P - 1) // 2)
        alive = f.var(axis=0) > 1e-12
        freq = np.where(alive, strict.argmax(0) + 1, 0)
        harm = family[strict.argmax(0), np.arange(f.shape[1])]
        aligned = alive & (harm >= 0.85)
        assert np.all(np.abs(harm - 0.85) > 1e-3)  # no feature at the threshold
        top2 = np.sort(strict, axis=0)[-2:]
        assert np.all((top2[1] - top2[0])[alive] > 1e-3)  # each live feature's best frequency is unambiguous
        for k in SAE_KEYS:
            per_key[k].append(int(np.sum(aligned & (freq == k))))
        eff = np.abs(np.fft.fft(dec @ w_l, axis=1)) ** 2
        fe = eff[:, 1 : (P - 1) // 2 + 1]
        ref[step] = dict(f=f, freq=freq, harm=harm, out=fe.max(1) / fe.sum(1), enc=enc, b_enc=b_enc, dec=dec)
    # closed form at step 100: one-neuron features (and a scaled one) lie wholly in their frequency's family; the
    # dead feature has none; the two-frequency mix does not align
    r = ref[100]
    assert r["freq"].tolist()[:2] == [2, 5] and r["freq"][3] == 0 and r["freq"][5] == 2
    assert (
        r["harm"][[0, 1, 5]] == pytest.approx([1.0, 1.0, 1.0], abs=1e-9) and r["harm"][3] == 0.0 and r["harm"][2] < 0.85
    )
    assert per_key == {2: [3, 0], 5: [1, 4]}
    # every neuron writes one unit-amplitude wave to the logits: one-neuron rows put all their effect on one
    # frequency, f2's row shares it 1 : 0.36 between k=2 and k=5
    assert r["out"] == pytest.approx([1.0, 1.0, 1 / 1.36, 1.0, 1.0, 1.0], abs=1e-9)

    fig = ifig.sae_features(data)
    bars, scatter = fig.data[:-1], fig.data[-1]
    assert [t.name for t in bars] == ["k=2", "k=5"]
    for trace, k in zip(bars, SAE_KEYS):
        assert list(trace.x) == ["100", "200"]
        assert values(trace.y).tolist() == per_key[k]
    np.testing.assert_allclose(values(scatter.x), r["harm"], rtol=0, atol=1e-5)
    np.testing.assert_allclose(values(scatter.y), r["out"], rtol=0, atol=1e-5)
    assert values(scatter.marker.color).astype(int).tolist() == r["freq"].tolist()
    assert list(scatter.text) == [f"feature {i}: k={k}" for i, k in enumerate(r["freq"])]

    # the title: reconstruction, sparsity, dead features and the spliced-in test accuracy at step 100
    xt = quadratic_post(model, task.tokens.numpy())
    ft = np.maximum(xt @ r["enc"] + r["b_enc"], 0.0)
    xh = ft @ r["dec"]
    fvu = ((xt - xh) ** 2).sum() / ((xt - xt.mean(0)) ** 2).sum()
    te = task.test_idx.numpy()
    spliced = float(np.mean((xh[te] @ w_l).argmax(1) == task.labels.numpy()[te]))
    title = fig.layout.title.text
    assert title.startswith("SAE (l1, 6 features) at step 100: ")
    got = dict(re.findall(r"(FVU|L0|dead|spliced test acc) ([0-9.]+)", title))
    assert float(got["FVU"]) == pytest.approx(fvu, abs=6e-5) and fvu > 0.05
    assert float(got["L0"]) == pytest.approx(float(np.mean((ft > 0).sum(1))), abs=0.051)
    assert int(got["dead"]) == int(np.sum((ft > 0).sum(0) == 0)) == 1
    assert float(got["spliced test acc"]) == pytest.approx(spliced, abs=6e-5)


# =========================================================================== the report's builders


def test_report_specs_read_each_command_file_and_plot_the_same_values(tmp_path, patched, probed, sae_data):
    """Each report entry reads its own command's JSON from the run (after a JSON round trip the plotted values are
    those checked above) and is not applicable until that file exists."""
    import json
    from types import SimpleNamespace

    from grokscope.figures.data import FigureNotApplicable

    run = SimpleNamespace(dir=tmp_path, read_json=lambda name: json.loads((tmp_path / name).read_text()))
    files = {"interp_patch.json": patched[0], "interp_probe.json": probed[1], "interp_sae.json": sae_data[2]}
    builders = {
        "interp_patching": (ifig.patch_heatmaps, "interp_patch.json"),
        "interp_attribution": (ifig.attribution_scatter, "interp_patch.json"),
        "interp_probes": (ifig.probe_curves, "interp_probe.json"),
        "interp_sae": (ifig.sae_features, "interp_sae.json"),
    }
    specs = {key: build for key, _, _, build in ifig.report_specs()}
    assert set(specs) == set(builders)
    for build in specs.values():
        with pytest.raises(FigureNotApplicable):
            build(run)
    for name, data in files.items():
        (tmp_path / name).write_text(json.dumps(data))
    for key, build in specs.items():
        builder, name = builders[key]
        got, want = build(run), builder(files[name])
        assert len(got.data) == len(want.data) > 0, key
        for g, w_ in zip(got.data, want.data):
            assert g.type == w_.type and g.name == w_.name, key
            for axis in ("x", "y", "z"):
                a, b = getattr(g, axis, None), getattr(w_, axis, None)
                if b is None:
                    assert a is None, (key, axis)
                elif isinstance(b[0] if len(b) else 0, str):
                    assert list(a) == list(b), (key, axis)
                else:
                    np.testing.assert_allclose(values(a), values(b), rtol=0, atol=1e-12, err_msg=f"{key} {axis}")
