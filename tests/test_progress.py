"""Progress measures against closed forms: Gini, key frequencies, restricted/excluded loss, FFS/FCR."""

import math

import pytest
import torch

from grokscope.analysis.construct import quadratic_mlp_addition, wave_logit_table
from grokscope.config import ModelConfig, TaskConfig
from grokscope.measures import (
    MeasureError,
    cross_entropy,
    ffs_fcr,
    fixed_key_measures,
    gini,
    key_frequencies,
    key_frequencies_from_logits,
    key_frequencies_from_norms,
    key_frequencies_online,
    progress_measures,
    restricted_excluded,
    sum_sq_weights,
)
from grokscope.models import build_model
from grokscope.tasks import make_task


def _task(p=13, formula="a+b", frac=0.3):
    return make_task(TaskConfig(p=p, formula=formula, train_fraction=frac))


def _random_model(task, arch="transformer", seed=0):
    cfg = ModelConfig(arch=arch, d_model=32, n_heads=2, d_head=16, d_mlp=64, init_seed=seed)
    return build_model(cfg, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3).eval()


# ----------------------------------------------------------------------------- Gini


def test_gini_closed_forms():
    assert gini(torch.ones(17)) == pytest.approx(0.0, abs=1e-12)
    for n in (2, 5, 56):
        one_hot = torch.zeros(n)
        one_hot[n // 2] = 3.0
        assert gini(one_hot) == pytest.approx((n - 1) / n)
    assert gini(torch.tensor([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.5)
    assert gini(torch.zeros(4)) == 0.0
    x = torch.rand(30)
    assert gini(x) == pytest.approx(gini(x[torch.randperm(30)]))  # order-free
    assert gini(x) == pytest.approx(gini(7 * x))  # scale-free


def test_sum_sq_weights_counts_every_parameter():
    task = _task(7)
    m = _random_model(task)
    expect = sum(float((w.detach().double() ** 2).sum()) for w in m.parameters())
    assert sum_sq_weights(m) == pytest.approx(expect)
    with torch.no_grad():
        m.blocks[0].mlp.b_in.fill_(1.0)  # biases are included
    assert sum_sq_weights(m) == pytest.approx(expect + m.cfg.d_mlp)


def test_ffs_fcr_closed_forms():
    p = 13
    x = torch.arange(p, dtype=torch.float64)
    cos3, sin3 = torch.cos(2 * math.pi * 3 * x / p), torch.sin(2 * math.pi * 3 * x / p)
    # one frequency, cos and sin equally strong, in two different dims: FFS = 1/6, FCR = 1
    ffs, fcr = ffs_fcr(torch.stack([cos3, sin3], dim=1))
    assert ffs == pytest.approx(1 / 6)
    assert fcr == pytest.approx(1.0)
    # cos only: FCR 0; a second frequency at 1/10 of the strength is below eta and ignored
    weak = 0.1 * torch.cos(2 * math.pi * 5 * x / p)
    ffs, fcr = ffs_fcr(torch.stack([cos3, weak], dim=1))
    assert ffs == pytest.approx(1 / 6) and fcr == pytest.approx(0.0, abs=1e-12)
    # sin at half the cos strength: ratio 1/2
    ffs, fcr = ffs_fcr(torch.stack([cos3, 0.5 * sin3], dim=1))
    assert fcr == pytest.approx(0.5)
    # all frequencies equally used: FFS = 1
    w = torch.stack([torch.cos(2 * math.pi * k * x / p) for k in range(1, 7)], dim=1)
    assert ffs_fcr(w)[0] == pytest.approx(1.0)


# ----------------------------------------------------------------------------- key-frequency rules


def test_gap_rule_picks_the_clear_set_and_rejects_noise():
    norms = torch.tensor([0.01, 5.0, 0.02, 3.0, 4.0, 0.015])
    assert key_frequencies_from_norms(norms) == [2, 4, 5]
    assert key_frequencies_from_norms(torch.tensor([1.0, 1.1, 0.9, 1.05])) == []  # no clear gap
    assert key_frequencies_from_norms(torch.tensor([1.0, 1e-17, 3e-19, 1e-15])) == [1]  # noise floor clamped
    assert key_frequencies_from_norms(torch.zeros(5)) == []


def test_online_rule_tracks_emerging_frequencies_without_a_clear_gap():
    # A smooth spectrum (no ratio >= 2 between neighbours): the gap rule abstains, the online rule keeps
    # the frequencies with >= 2x the mean energy.
    norms = torch.tensor([1.0, 3.0, 1.1, 2.4, 1.6, 1.2, 0.9, 1.3, 1.0, 2.0])
    assert key_frequencies_from_norms(norms) == []
    energy = norms**2
    expect = [i + 1 for i in range(10) if energy[i] >= 2 * energy.mean()]
    assert key_frequencies_online(norms) == expect == [2, 4]
    assert key_frequencies_online(torch.tensor([0.01, 5.0, 0.02, 3.0])) == [2, 4]  # clear gap: same as W_L_dft
    assert key_frequencies_online(torch.ones(8)) == []


@pytest.mark.parametrize("p,freqs", [(13, [2, 5]), (23, [1, 7, 11]), (17, [8])])
def test_wave_logit_table_key_frequencies_restricted_and_excluded(p, freqs):
    task = _task(p)
    table = wave_logit_table(p, freqs, amplitude=4.0)  # grid order == task order for a full grid
    labels = task.labels
    assert key_frequencies_from_logits(table) == freqs
    full_loss, full_acc = cross_entropy(table, labels)
    out = restricted_excluded(table, labels, task.train_idx, p, freqs)
    assert full_acc == 1.0
    assert out["restricted_loss"] == pytest.approx(full_loss, rel=1e-10)
    assert out["restricted_acc"] == 1.0
    assert out["excluded_loss"] == pytest.approx(math.log(p), rel=1e-9)  # everything removed: uniform
    for k in freqs:
        assert f"excluded_loss_k{k}" in out
    # Frequencies that carry nothing: removing them changes nothing, keeping only them loses everything.
    idle = [k for k in range(1, (p - 1) // 2 + 1) if k not in freqs][:2]
    none = restricted_excluded(table, labels, task.train_idx, p, idle)
    train_loss, _ = cross_entropy(table[task.train_idx], labels[task.train_idx])
    assert none["excluded_loss"] == pytest.approx(train_loss, rel=1e-10)
    for k in idle:
        assert none[f"excluded_loss_k{k}"] == pytest.approx(train_loss, rel=1e-10)
    assert none["restricted_loss"] == pytest.approx(math.log(p), rel=1e-9)
    # Removing one of several key frequencies hurts but less than removing all.
    if len(freqs) > 1:
        assert train_loss < out[f"excluded_loss_k{freqs[0]}"] < out["excluded_loss"]


def test_per_class_bias_is_kept_by_both_restricted_and_excluded():
    """The constant term (each output column's mean over inputs) is kept in both tables."""
    p, freqs = 11, [2]
    task = _task(p)
    bias = torch.linspace(-2, 2, p, dtype=torch.float64)
    table = wave_logit_table(p, freqs, amplitude=3.0) + bias[None, :]
    out = restricted_excluded(table, task.labels, task.train_idx, p, freqs)
    assert out["restricted_loss"] == pytest.approx(cross_entropy(table, task.labels)[0], rel=1e-10)
    only_bias = bias[None, :].expand(len(task.train_idx), p)
    assert out["excluded_loss"] == pytest.approx(cross_entropy(only_bias, task.labels[task.train_idx])[0], rel=1e-10)


def test_restricted_excluded_work_for_a_minus_b():
    """Directions follow the correct answer c*(a, b): for a-b they are cos/sin(w_k(a-b))."""
    p, freqs = 11, [3]
    task = _task(p, "a-b")
    c = torch.arange(p, dtype=torch.float64)
    table = 3 * torch.cos(2 * math.pi * 3 * (task.labels[:, None].double() - c[None, :]) / p)
    out = restricted_excluded(table, task.labels, task.train_idx, p, freqs)
    assert out["restricted_loss"] == pytest.approx(cross_entropy(table, task.labels)[0], rel=1e-10)
    assert out["excluded_loss"] == pytest.approx(math.log(p), rel=1e-9)


# ----------------------------------------------------------------------------- progress_measures on models


EXPECTED_KEYS = {
    "restricted_loss",
    "restricted_acc",
    "excluded_loss",
    "excluded_acc",
    "gini_W_E",
    "gini_W_L",
    "sum_sq_weights",
    "ffs",
    "fcr",
    "n_key_freqs",
    "key_freqs_fixed",
    "act_sparsity",
    "abs_weight_entropy",
    "weight_entropy_normalised",
    "logit_efficiency",
}


def test_constructed_network_measures():
    p, freqs = 13, [2, 5]
    task = _task(p)
    model = quadratic_mlp_addition(p, freqs, scale=2.0)
    m = progress_measures(model, task)
    assert set(m) == EXPECTED_KEYS | {"excluded_loss_k2", "excluded_loss_k5"}
    assert all(isinstance(v, float) for v in m.values())
    assert m["n_key_freqs"] == 2 and m["key_freqs_fixed"] == 0.0
    full_loss, full_acc = cross_entropy(model(task.tokens).double(), task.labels)
    assert full_acc == 1.0 and m["restricted_acc"] == 1.0
    assert m["restricted_loss"] < full_loss  # the a-b and 2a-c parts only add noise
    assert m["excluded_loss"] > math.log(p)
    # Only 2 of 6 frequencies, each carried equally: Gini of [x, x, 0, 0, 0, 0] = 2/3.
    assert m["gini_W_E"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["gini_W_L"] == pytest.approx(2 / 3, abs=1e-6)
    assert m["ffs"] == pytest.approx(2 / 6)
    for rule in ("W_L_dft", "W_E_norm", "logits_dft"):
        assert key_frequencies(model, task, rule) == freqs


def test_random_network_low_gini_no_key_frequencies():
    task = _task(23)
    for arch in ("transformer", "mlp"):
        for seed in (0, 1):
            model = _random_model(task, arch, seed)
            m = progress_measures(model, task)
            assert m["n_key_freqs"] == 0, arch
            assert m["gini_W_E"] < 0.25 and m["gini_W_L"] < 0.25, (arch, m["gini_W_E"], m["gini_W_L"])
            assert m["ffs"] > 0.5
            assert key_frequencies(model, task, "neuron_cluster") == []
            assert key_frequencies(model, task, "logits_dft") == []


def test_logits_argument_and_fixed_key_freqs():
    task = _task(13)
    model = _random_model(task)
    with torch.no_grad():
        logits = model(task.tokens)
    a = progress_measures(model, task, key_freqs=[1, 4])
    b = progress_measures(model, task, key_freqs=[4, 1], logits=logits)
    assert a == pytest.approx(b)
    assert a["key_freqs_fixed"] == 1.0 and a["n_key_freqs"] == 2
    assert {"excluded_loss_k1", "excluded_loss_k4"} <= set(a)
    with pytest.raises(MeasureError):
        progress_measures(model, task, key_freqs=[7])  # only 1..6 exist for p = 13


def test_logit_table_without_logits_runs_the_fast_path(monkeypatch):
    import grokscope.models.forward as forward
    from grokscope.measures import logit_table

    task = _task(13)
    model = _random_model(task)
    calls = []
    real = forward.fast_forward
    monkeypatch.setattr(forward, "fast_forward", lambda m, t: calls.append(m) or real(m, t))
    table = logit_table(model, task)
    assert calls == [model]
    with torch.no_grad():
        general = logit_table(model, task, logits=model(task.tokens))
    assert torch.allclose(table, general, rtol=0, atol=2e-5 * float(general.abs().max()))
    mlp = _random_model(task, "mlp")  # not covered by the fast path: the model's own forward
    with torch.no_grad():
        assert torch.equal(logit_table(mlp, task), logit_table(mlp, task, logits=mlp(task.tokens)))


def test_errors_are_value_errors_with_one_line():
    model = _random_model(_task(11))
    div = make_task(TaskConfig(p=11, formula="a/b"))  # b = 0 is excluded: not the full grid
    with pytest.raises(ValueError, match="p\\*p") as e:
        progress_measures(model, div, basis="additive")  # a/b in its own basis: test_bases_progress.py
    assert "\n" not in str(e.value)
    even = make_task(TaskConfig(p=10, formula="a+b"))
    with pytest.raises(MeasureError, match="odd"):
        progress_measures(_random_model(even), even)


def test_fixed_key_measures_second_pass():
    p, freqs = 13, [2, 5]
    task = _task(p)
    final = quadratic_mlp_addition(p, freqs)
    early = _random_model(task, "mlp")
    calls = []

    def lazy():
        calls.append(1)
        return final

    df = fixed_key_measures([(100, lazy), (0, early)], task)
    assert list(df.index) == [0, 100]
    assert df.attrs["key_frequencies"] == freqs
    assert "restricted_loss_fixed" in df.columns and "excluded_loss_k5_fixed" in df.columns
    assert "gini_W_E_fixed" not in df.columns
    assert df.loc[100, "restricted_acc_fixed"] == 1.0
    assert len(calls) == 2  # once to pick the key set, once to measure
    df2 = fixed_key_measures([(0, early)], task, key_freqs=[3])
    assert df2.attrs["key_freq_rule"] == "given" and "excluded_loss_k3_fixed" in df2.columns
