"""measures/dynamics.py against dense hand computations, and the columns in a run's metrics."""

import math

import pytest
import torch
from torch import nn

from grokscope.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TaskConfig,
    TrainConfig,
    apply_overrides,
)
from grokscope.interop import hooked_transformer_config
from grokscope.measures import names
from grokscope.measures.dynamics import kernel_alignment, ntk_alignment, relative_weight_change
from grokscope.models import build_model
from grokscope.training.loop import train


def test_relative_weight_change_is_the_global_norm_ratio():
    w0 = {"a": torch.tensor([[3.0, 0.0]]), "b": torch.tensor([4.0])}
    w = {"a": torch.tensor([[3.0, 1.0]]), "b": torch.tensor([6.0])}
    assert math.isclose(relative_weight_change(w, w0), math.sqrt(1 + 4) / 5.0, rel_tol=1e-12)
    assert relative_weight_change(w0, w0) == 0.0


def _dense_cka(K, L):
    m = K.shape[0]
    H = torch.eye(m, dtype=torch.float64) - torch.ones(m, m, dtype=torch.float64) / m
    a, b = H @ K @ H, H @ L @ H
    return float((a * b).sum() / torch.sqrt((a * a).sum() * (b * b).sum()))


def test_linear_model_ntk_alignment_is_the_cka_of_x_xt():
    # f(x) = W x + b with C outputs: d f_c / d W = e_c x^T, d f_c / d b = e_c, so the class-summed NTK is
    # C (x_i . x_j + 1); CKA is scale-invariant and centring removes the constant, leaving CKA(X X^T, L).
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(7, 5, generator=gen, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
    model = nn.Linear(5, 3).double()
    L = (y[:, None] == y[None, :]).double()
    expected = _dense_cka(X @ X.T, L)
    assert math.isclose(ntk_alignment(model, X, y), expected, rel_tol=1e-9)
    assert math.isclose(kernel_alignment(X @ X.T * 10.0, L), expected, rel_tol=1e-9)
    assert math.isclose(kernel_alignment(L, L), 1.0, rel_tol=1e-12)


def test_columns_appear_in_a_runs_metrics(tmp_path):
    cfg = ExperimentConfig(
        task=TaskConfig(p=11, train_fraction=0.5),
        model=ModelConfig(arch="mlp", d_model=16, d_mlp=32, output_scale=2.0),
        optim=OptimConfig(lr=1e-2, weight_decay=0.0),
        train=TrainConfig(epochs=20, log_every=10, measure_every=10, checkpoint_every=20),
    )
    run = train(cfg, tmp_path / "run", progress=False)
    df = run.metrics
    for col in (names.RELATIVE_WEIGHT_CHANGE, names.NTK_ALIGNMENT):
        assert col in df.columns
    rwc = df[names.RELATIVE_WEIGHT_CHANGE].dropna()
    assert rwc.iloc[0] == 0.0 and rwc.iloc[-1] > 0.0
    assert df[names.NTK_ALIGNMENT].dropna().between(-1, 1).all()


def test_train_dynamics_switch_logs_them_at_scale_one_and_default_runs_do_not(tmp_path):
    base = ExperimentConfig(
        task=TaskConfig(p=11, train_fraction=0.5),
        model=ModelConfig(arch="mlp", d_model=16, d_mlp=32),
        optim=OptimConfig(lr=1e-2, weight_decay=0.0),
        train=TrainConfig(epochs=10, log_every=10, measure_every=10, checkpoint_every=10),
    )
    plain = train(base, tmp_path / "plain", progress=False).metrics
    assert names.RELATIVE_WEIGHT_CHANGE not in plain.columns and names.NTK_ALIGNMENT not in plain.columns
    switched = apply_overrides(base, {"train.dynamics": True})
    df = train(switched, tmp_path / "switched", progress=False).metrics
    assert df[names.RELATIVE_WEIGHT_CHANGE].dropna().iloc[-1] > 0.0


def test_an_output_scale_cannot_be_exported_to_transformer_lens():
    cfg = ExperimentConfig(task=TaskConfig(p=11), model=ModelConfig(d_model=16, d_head=8, d_mlp=32, output_scale=2.0))
    with pytest.raises(ConfigError, match=r"^model\.output_scale: a HookedTransformer has no output scale"):
        hooked_transformer_config(cfg)


def _ntk_case():
    """A one-layer transformer's class-summed NTK on 6 inputs of p = 7 (float32 parameters, float64 kernel)."""
    cfg = ModelConfig(arch="transformer", d_model=8, n_heads=2, d_head=4, d_mlp=16, init_seed=2)
    model = build_model(cfg, d_vocab=8, d_vocab_out=7, n_ctx=3)
    a = torch.tensor([0, 1, 2, 3, 4, 5])
    tokens = torch.stack([a, (a * 3) % 7, torch.full_like(a, 7)], dim=1)
    return model, tokens, (a + (a * 3) % 7) % 7


def test_ntk_alignment_creates_no_tensor_without_the_inputs_device(monkeypatch):
    """Under the strict-torch proxy of tests/device_proxy.py (a factory call without device= raises) the same bits."""
    from device_proxy import strict

    from grokscope.measures import dynamics

    model, tokens, labels = _ntk_case()
    K, L = torch.eye(4) + 1.0, torch.diag(torch.arange(1.0, 5.0))
    plain = (ntk_alignment(model, tokens, labels), kernel_alignment(K, L))
    strict(monkeypatch, [dynamics])
    again = (dynamics.ntk_alignment(model, tokens, labels), dynamics.kernel_alignment(K, L))
    assert again == plain and -1 <= plain[0] <= 1 and 0 < plain[1] <= 1


def test_ntk_alignment_on_a_device_equals_the_cpu(device):
    model, tokens, labels = _ntk_case()
    cpu = ntk_alignment(model, tokens, labels)
    here = ntk_alignment(model.to(device), tokens.to(device), labels.to(device))
    assert math.isclose(here, cpu, rel_tol=1e-4, abs_tol=1e-6)
    # the linear model's closed form holds on the device too (a float64 model: MPS has none, so not there)
    if device != "mps":
        gen = torch.Generator().manual_seed(0)
        X = torch.randn(7, 5, generator=gen, dtype=torch.float64)
        y = torch.tensor([0, 1, 2, 0, 1, 2, 2])
        lin = nn.Linear(5, 3).double()
        expected = _dense_cka(X @ X.T, (y[:, None] == y[None, :]).double())
        assert math.isclose(ntk_alignment(lin.to(device), X.to(device), y.to(device)), expected, rel_tol=1e-9)
