"""The cheap extra progress measures (measures/extra.py) against closed forms and independent computations:
activation sparsity, absolute weight entropy (and its scale-free twin), the logit norm per parameter norm."""

import math

import numpy as np
import pytest
import torch

from grokscope import train
from grokscope.config import ModelConfig, TaskConfig, apply_overrides
from grokscope.measures import fixed_key_measures, names, progress_measures
from grokscope.measures.extra import (
    abs_weight_entropy,
    activation_sparsity,
    extra_measures,
    last_mlp_post,
    logit_efficiency,
    normalised_weight_entropy,
)
from grokscope.models import build_model
from grokscope.tasks import make_task

EXTRA = (names.ACT_SPARSITY, names.ABS_WEIGHT_ENTROPY, names.WEIGHT_ENTROPY_NORMALISED, names.LOGIT_EFFICIENCY)


def _task(p=13, formula="a+b"):
    return make_task(TaskConfig(p=p, formula=formula, train_fraction=0.3))


def _model(task, arch="transformer", act_fn="relu", seed=0):
    cfg = ModelConfig(arch=arch, d_model=32, n_heads=2, d_head=16, d_mlp=64, act_fn=act_fn, init_seed=seed)
    return build_model(cfg, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3).eval()


# ----------------------------------------------------------------------------- activation sparsity


def test_activation_sparsity_counts_the_zeros_of_a_hand_built_relu_layer():
    x = torch.tensor([[1.0, -1.0], [2.0, 0.5]])
    w = torch.tensor([[1.0, 0.0, -1.0], [0.0, 1.0, 1.0]])
    pre = x @ w  # [[1, -1, -2], [2, 0.5, -1.5]]: three of six entries are <= 0
    assert activation_sparsity(torch.relu(pre)) == pytest.approx(3 / 6)
    assert activation_sparsity(torch.relu(torch.zeros(4, 5))) == 1.0  # ReLU(0) = 0 is off
    assert activation_sparsity(torch.ones(4, 5)) == 0.0
    # GELU: an entry is off exactly when its pre-activation is <= 0
    assert activation_sparsity(torch.nn.functional.gelu(pre)) == pytest.approx(3 / 6)
    assert math.isnan(activation_sparsity(torch.zeros(0, 3)))


def test_activation_sparsity_of_a_network_whose_mlp_is_switched_off_or_on():
    task = _task()
    model = _model(task)
    mlp = model.blocks[0].mlp
    with torch.no_grad():
        mlp.W_in.zero_()
        mlp.b_in.fill_(-1.0)  # every pre-activation is -1: all off
    with torch.no_grad():
        logits = model(task.tokens)
    assert progress_measures(model, task, logits=logits)[names.ACT_SPARSITY] == 1.0
    with torch.no_grad():
        mlp.b_in.fill_(1.0)
        mlp.b_in[:16] = -2.0  # 16 of 64 neurons off on every input
    assert progress_measures(model, task)[names.ACT_SPARSITY] == pytest.approx(16 / 64)


def test_activation_sparsity_matches_the_cached_activations_at_the_last_position():
    task = _task()
    model = _model(task, seed=3)
    with torch.no_grad():
        _, cache = model.run_with_cache(task.tokens)
    post = cache["blocks.0.mlp.hook_post"][:, -1]  # [N, d_mlp] at "="
    expect = float((post <= 0).sum()) / post.numel()
    assert 0.2 < expect < 0.8  # a random ReLU layer: about half off
    got = last_mlp_post(model, task)
    assert got is not None and got.shape == (13 * 13, 64)
    assert progress_measures(model, task)[names.ACT_SPARSITY] == pytest.approx(expect, abs=1e-12)
    mlp_model = _model(task, "mlp", seed=1)  # the MLP model's activations have no position axis
    with torch.no_grad():
        _, cache = mlp_model.run_with_cache(task.tokens)
    post = cache["mlp.hook_post"]
    assert progress_measures(mlp_model, task)[names.ACT_SPARSITY] == pytest.approx(
        float((post <= 0).sum()) / post.numel(), abs=1e-12)
    assert last_mlp_post(torch.nn.Linear(2, 2), task) is None  # a foreign module: no hooks, no number


@pytest.mark.parametrize("act_fn, n_layers", [("relu", 1), ("gelu", 1), ("relu", 2)])
def test_the_fast_tables_give_the_hooked_activations(act_fn, n_layers):
    """One layer: the fast path's tables; two: the hooked forward. Both equal the cached hook_post at "="."""
    task = _task()
    cfg = ModelConfig(d_model=32, n_heads=2, d_head=16, d_mlp=64, act_fn=act_fn, n_layers=n_layers, init_seed=6)
    model = build_model(cfg, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3).eval()
    with torch.no_grad():
        _, cache = model.run_with_cache(task.tokens)
    post = cache[f"blocks.{n_layers - 1}.mlp.hook_post"][:, -1]
    got = last_mlp_post(model, task)
    assert got is not None and torch.allclose(got, post, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------- weight entropies


def test_absolute_weight_entropy_closed_forms():
    # -(2 * 0.5 ln 0.5 + 0.25 ln 0.25) = ln 2 + 0.5 ln 2 over two tensors, a zero counting 0 ln 0 = 0
    ws = [torch.tensor([0.5, -0.5]), torch.tensor([[0.0, -0.25]])]
    assert abs_weight_entropy(ws) == pytest.approx(1.5 * math.log(2))
    assert abs_weight_entropy([torch.ones(7)]) == 0.0  # |w| = 1: ln 1 = 0
    assert abs_weight_entropy([torch.zeros(3)]) == 0.0
    # the scaling law of the docstring: H(cW) = c H(W) - c ln(c) sum |w|
    w = torch.randn(50, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    c = 3.0
    h, s = abs_weight_entropy([w]), float(w.abs().sum())
    assert abs_weight_entropy([c * w]) == pytest.approx(c * h - c * math.log(c) * s, rel=1e-12)


def test_normalised_weight_entropy_closed_forms():
    assert normalised_weight_entropy([torch.full((8,), -0.3)]) == pytest.approx(math.log(8))
    assert normalised_weight_entropy([torch.tensor([0.0, 4.0, 0.0])]) == 0.0
    assert normalised_weight_entropy([torch.tensor([1.0, -1.0]), torch.tensor([2.0])]) == pytest.approx(
        1.5 * math.log(2))  # q = (1/4, 1/4, 1/2)
    assert normalised_weight_entropy([torch.zeros(5)]) == 0.0
    w = torch.randn(40, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert normalised_weight_entropy([7.0 * w]) == pytest.approx(normalised_weight_entropy([w]), rel=1e-12)
    s = float(w.abs().sum())  # the identity of the docstring ties the two entropies
    assert normalised_weight_entropy([w]) == pytest.approx(abs_weight_entropy([w]) / s + math.log(s), rel=1e-12)


def test_weight_entropies_read_every_parameter_of_the_model():
    task = _task()
    model = _model(task, seed=2)
    flat = np.concatenate([p.detach().double().numpy().ravel() for p in model.parameters()])
    a = np.abs(flat)
    nz = a[a > 0]
    m = progress_measures(model, task)
    assert m[names.ABS_WEIGHT_ENTROPY] == pytest.approx(float(-(nz * np.log(nz)).sum()), rel=1e-12)
    q = nz / a.sum()
    assert m[names.WEIGHT_ENTROPY_NORMALISED] == pytest.approx(float(-(q * np.log(q)).sum()), rel=1e-12)


# ----------------------------------------------------------------------------- logit norm per parameter norm


def test_logit_efficiency_closed_form_and_on_a_scaled_network():
    assert logit_efficiency(torch.ones(6, 5), 2.0) == pytest.approx(math.sqrt(30) / 2)
    assert logit_efficiency(torch.full((3, 4), -2.0), 4.0) == pytest.approx(math.sqrt(12 * 4) / 4)
    assert math.isnan(logit_efficiency(torch.ones(2, 2), 0.0))
    task = _task()
    model = _model(task, seed=4)
    with torch.no_grad():
        logits = model(task.tokens).double()[:, : task.p]  # the plain forward, not the measures' fast path
    theta = math.sqrt(sum(float((p.detach().double() ** 2).sum()) for p in model.parameters()))
    m = progress_measures(model, task)
    assert m[names.LOGIT_EFFICIENCY] == pytest.approx(float(torch.linalg.norm(logits)) / theta, rel=1e-5)
    # extra_measures reads only the answer columns of a wider head and divides by sqrt(sum_sq)
    wide = torch.cat([logits, 100.0 * torch.ones(logits.shape[0], 1, dtype=torch.float64)], dim=1)
    got = extra_measures(model, task, wide, 16.0)[names.LOGIT_EFFICIENCY]
    assert got == pytest.approx(float(torch.linalg.norm(logits)) / 4.0, rel=1e-12)


# ----------------------------------------------------------------------------- wiring


def test_the_extras_are_added_without_changing_the_other_measures():
    task = _task()
    model = _model(task, seed=5)
    with_extra = progress_measures(model, task, key_freqs=[1, 3])
    without = progress_measures(model, task, key_freqs=[1, 3], extra=False)
    assert set(with_extra) - set(without) == set(EXTRA)
    assert {k: with_extra[k] for k in without} == without  # bit for bit
    mul = _task(13, "a*b")  # the discrete-log basis path carries them too
    assert set(EXTRA) <= set(progress_measures(_model(mul), mul))
    fixed = fixed_key_measures([(0, model)], task, key_freqs=[1])
    assert not any(c.startswith(tuple(EXTRA)) for c in fixed.columns)


def test_a_run_records_the_extra_measures(tmp_path, tiny_config):
    cfg = apply_overrides(tiny_config, {"train.epochs": 20, "train.measure_every": 10})
    run = train(cfg, tmp_path / "run", progress=False)
    m = run.metrics
    for name in EXTRA:
        assert name in m.columns, name
        values = m[name].dropna()
        assert list(values.index) == [0, 10, 20], name
    assert ((m[names.ACT_SPARSITY].dropna() >= 0) & (m[names.ACT_SPARSITY].dropna() <= 1)).all()
    final = run.load_model().eval()
    direct = progress_measures(final, run.task())
    assert m[names.ABS_WEIGHT_ENTROPY].dropna().iloc[-1] == pytest.approx(direct[names.ABS_WEIGHT_ENTROPY], rel=1e-12)
