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
    feats = torch.stack([
        torch.cos(w * 2 * a) + torch.cos(w * 2 * b),  # frequency 2
        torch.relu(torch.cos(w * 5 * a)),  # frequency 5 plus harmonics (still mostly 5)
        torch.zeros(p * p),  # dead
        torch.randn(p * p, generator=torch.Generator().manual_seed(0)),  # noise
    ], dim=1)
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
    same = compare_saes(sae, sae, rep, rep)
    assert same.mean_max_cosine == pytest.approx(1.0, abs=1e-5) and same.matched == same.n_live_a


def test_sae_config_validation():
    with pytest.raises(ValueError, match="kind"):
        SAEConfig(kind="relu")
    with pytest.raises(ValueError, match="k:"):
        SAEConfig(n_features=4, k=8)
