"""Sparse autoencoders: recovery of known sparse directions, feature frequency analysis, splicing."""

import math

import pytest
import torch

from grokscope.analysis.construct import quadratic_mlp_addition
from grokscope.config import TaskConfig
from grokscope.interp.sae import SAEConfig, compare_saes, feature_frequencies, sae_on_checkpoint, train_sae
from grokscope.tasks import make_task


def _sparse_data(n=3000, d=20, k=8, active=2, seed=10):  # not the SAE init seed
    g = torch.Generator().manual_seed(seed)
    dirs = torch.nn.functional.normalize(torch.randn(k, d, generator=g), dim=1)
    codes = torch.zeros(n, k)
    for i in range(n):
        idx = torch.randperm(k, generator=g)[:active]
        codes[i, idx] = 0.5 + torch.rand(active, generator=g)
    return codes @ dirs, dirs


def _recovered(sae, dirs):
    cos = torch.nn.functional.normalize(sae.W_dec.detach(), dim=1) @ dirs.T  # [features, k]
    return cos.max(dim=0).values


@pytest.mark.parametrize("kind", ["topk", "l1"])
def test_sae_recovers_known_sparse_directions(kind):
    x, dirs = _sparse_data()
    cfg = SAEConfig(n_features=16, kind=kind, k=2, l1=3e-2, steps=1500, batch_size=256, lr=3e-3, seed=0)
    sae, curve = train_sae(x, cfg)
    best = _recovered(sae, dirs)
    assert (best > 0.95).all(), best
    assert curve[-1] < curve[0]


def test_untrained_sae_does_not_recover_them():
    """The check above can fail: an SAE that has not trained finds no direction."""
    x, dirs = _sparse_data()
    sae, _ = train_sae(x, SAEConfig(n_features=16, k=2, steps=1, seed=0))
    assert (_recovered(sae, dirs) > 0.95).sum() < 2


def test_feature_frequencies_of_known_features():
    p = 13
    a = torch.arange(p * p) // p
    b = torch.arange(p * p) % p
    w = 2 * math.pi / p
    feats = torch.stack(
        [
            torch.cos(w * 2 * a) + torch.cos(w * 2 * b),  # frequency 2
            torch.relu(torch.cos(w * 5 * a)),  # frequency 5 plus harmonics (still mostly 5)
            torch.zeros(p * p),  # dead
            torch.randn(p * p, generator=torch.Generator().manual_seed(0)),  # noise
        ],
        dim=1,
    )
    f = feature_frequencies(feats, p, key_freqs=[2, 5])
    assert f.frequency[0] == 2 and f.aligned[0]
    assert f.frequency[2] == 0 and not f.aligned[2]
    assert not f.aligned[3]
    assert f.per_key_frequency[2] == 1
    assert f.n_aligned_key == sum(f.per_key_frequency.values())


def test_sae_on_a_constructed_network_reconstructs_and_splices():
    p = 13
    task = make_task(TaskConfig(p=p, train_fraction=0.5))
    model = quadratic_mlp_addition(p, [2, 5])
    cfg = SAEConfig(n_features=20, kind="l1", l1=1e-3, steps=1500, lr=3e-3)
    sae, rep = sae_on_checkpoint(model, task, [2, 5], cfg, step=7)
    assert rep.step == 7 and rep.d == 10 and rep.n_inputs == p * p
    assert rep.fvu < 0.05
    assert rep.accuracy["original"] == 1.0 and rep.accuracy["spliced"] > 0.95
    assert rep.accuracy["zero-ablated"] < 0.5
    assert 0 <= rep.dead <= 20 and rep.l0 > 0
    d = rep.to_dict()
    assert d["config"]["kind"] == "l1" and "per_key_frequency" in d["features"]
    assert "reconstruction" in rep.summary()
    # against itself with its features in reverse order (and their report rows with them): every live feature finds its
    # own direction at a reversed index, so the frequencies are compared only if the matching follows the index
    from types import SimpleNamespace

    from grokscope.interp.sae import SAE

    rev = SAE(rep.d, sae.cfg)
    with torch.no_grad():
        rev.W_dec.copy_(sae.W_dec.flip(0))
    f = rep.features
    rep_rev = SimpleNamespace(step=8, features=SimpleNamespace(frequency=f.frequency[::-1], aligned=f.aligned[::-1]))
    live = [i for i, k in enumerate(f.frequency) if k > 0]
    c = compare_saes(sae, rev, rep, rep_rev)
    assert (c.step_a, c.step_b, c.n_live_a, c.n_live_b) == (7, 8, len(live), len(live)) and len(live) > 0
    assert c.mean_max_cosine == pytest.approx(1.0, abs=1e-5) and c.matched == len(live)
    assert c.same_frequency == sum(f.aligned[i] for i in live) > 0


def test_compare_saes_on_hand_built_decoders():
    """Decoder rows with known overlaps (e_i: unit vectors of R^6): A's live rows e1, e2, e3 meet B's live rows at
    |cos| = cos(0.3), 1 (a sign flip) and 0.6; B's dead row equals e3 exactly and must not be matched; A's dead row is
    left out. Mean best |cos| = (cos 0.3 + 1 + 0.6) / 3, two matches at 0.9, one of them with the same frequency."""
    from types import SimpleNamespace

    from grokscope.interp.sae import SAE

    e = torch.eye(6)
    theta = 0.3
    a, b = SAE(6, SAEConfig(n_features=4, k=1)), SAE(6, SAEConfig(n_features=4, k=1, seed=1))
    with torch.no_grad():
        a.W_dec.copy_(torch.stack([e[0], e[1], e[2], e[3]]))
        b.W_dec.copy_(
            torch.stack([-e[1], math.cos(theta) * e[0] + math.sin(theta) * e[4], 0.6 * e[2] + 0.8 * e[5], 3.0 * e[2]])
        )

    def report(step, frequency, aligned):
        return SimpleNamespace(step=step, features=SimpleNamespace(frequency=frequency, aligned=aligned))

    rep_a = report(3, [2, 5, 7, 0], [True, True, False, False])  # row 3 dead
    rep_b = report(9, [4, 2, 7, 0], [True, True, True, False])  # row 3 (= 3 e3) dead
    c = compare_saes(a, b, rep_a, rep_b)
    assert (c.step_a, c.step_b, c.n_live_a, c.n_live_b, c.threshold) == (3, 9, 3, 3, 0.9)
    assert c.mean_max_cosine == pytest.approx((math.cos(theta) + 1 + 0.6) / 3, rel=1e-6)
    assert c.matched == 2  # e1 (cos 0.955) and e2 (|cos| 1); e3 only reaches 0.6
    assert c.same_frequency == 1  # e1 <-> b1 both at frequency 2; e2 (5) <-> b0 (4) differ
    without = compare_saes(a, b)  # no reports: every row is live, so B's 3 e3 now matches e3, and A's e4 finds nothing
    assert without.n_live_a == 4 and without.matched == 3 and without.same_frequency == 0
    assert without.mean_max_cosine == pytest.approx((math.cos(theta) + 1 + 1 + 0) / 4, rel=1e-6)


def test_sae_config_validation():
    with pytest.raises(ValueError, match="kind"):
        SAEConfig(kind="relu")
    with pytest.raises(ValueError, match="k:"):
        SAEConfig(n_features=4, k=8)
