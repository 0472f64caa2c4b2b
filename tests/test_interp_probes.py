"""Linear probes: planted features, noise, and a constructed network with known representations."""

import math

import pytest
import torch

from grokscope.analysis.construct import quadratic_mlp_addition
from grokscope.config import TaskConfig
from grokscope.interp.probes import (
    ProbeSeries,
    RidgeSolver,
    fit_ridge,
    fourier_targets,
    probe_checkpoints,
    probe_model,
    r2_score,
)
from grokscope.tasks import make_task

P, FREQS = 13, [2, 5]


def _split(n, frac=0.5, seed=0):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    k = int(n * frac)
    return perm[:k], perm[k:]


def test_ridge_recovers_a_planted_linear_feature():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 30, generator=g, dtype=torch.float64)
    w = torch.randn(30, 2, generator=g, dtype=torch.float64)
    y = x @ w + 3.0
    tr, te = _split(400)
    probe = fit_ridge(x[tr], y[tr])
    assert r2_score(y[te], probe.predict(x[te]), mean=probe.y_mean) > 0.999


def test_ridge_finds_nothing_in_noise():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 30, generator=g, dtype=torch.float64)
    y = torch.randn(400, 2, generator=g, dtype=torch.float64)
    tr, te = _split(400)
    probe = fit_ridge(x[tr], y[tr])
    r2 = r2_score(y[te], probe.predict(x[te]), mean=probe.y_mean)
    assert -0.15 < r2 < 0.05
    # without the validation-chosen penalty, least squares overfits noise: held-out R^2 clearly negative
    tiny = RidgeSolver(x[tr], alphas=(1e-10,)).fit(y[tr])
    assert r2_score(y[te], tiny.predict(x[te]), mean=tiny.y_mean) < r2 + 1e-9


def test_r2_score_edge_cases():
    y = torch.tensor([1.0, 2.0, 3.0])
    assert r2_score(y, y) == 1.0
    assert r2_score(y, torch.full((3,), 2.0)) == pytest.approx(0.0)
    assert math.isnan(r2_score(torch.ones(3), torch.ones(3)))


def test_fourier_targets():
    task = make_task(TaskConfig(p=P))
    t = fourier_targets(task, [2], kinds=("a", "a+b"))
    assert set(t) == {"a k=2", "a+b k=2"}
    a, b = task.tokens[:, 0].double(), task.tokens[:, 1].double()
    assert torch.allclose(t["a+b k=2"][:, 1], torch.sin(2 * math.pi * 2 * (a + b) / P))


def test_probes_read_the_constructed_network():
    task = make_task(TaskConfig(p=P, train_fraction=0.5))
    model = quadratic_mlp_addition(P, FREQS)
    # the embedding of a (position 0) is exactly (cos, sin)(w_k a) for the key k: R^2 = 1; other k: nothing
    emb = probe_model(model, task, FREQS, hook="hook_embed", position=0, extra_freqs=[1, 3])
    for k in FREQS:
        assert emb.r2_of("a", k) > 0.999
        assert emb.r2_of("b", k) < 0.05
    assert emb.r2_of("a", 1) < 0.05 and emb.r2_of("a", 3) < 0.05
    # neuron j of frequency k is (cos(w a - t_j) + cos(w b - t_j))^2, which holds cos(w(a+b) - 2t_j) tied to
    # (cos(2wa - 2t_j) + cos(2wb - 2t_j)) / 2 with the same phase: the best linear read of cos/sin(w(a+b)) carries
    # those along, so R^2 = 1 / (1 + 1/4 + 1/4) = 2/3 in the population
    post = probe_model(model, task, FREQS, extra_freqs=[1])
    for k in FREQS:
        assert post.r2_of("a+b", k) == pytest.approx(2 / 3, abs=0.05)  # held-out on 85 inputs
    assert post.r2_of("a+b", 1) < 0.05
    assert set(post.r2) == {f"{kd} k={k}" for kd in ("a", "b", "a+b") for k in (1, 2, 5)}  # "c" = "a+b" here
    assert post.answer_acc > 0.2  # chance is 1/13
    assert "a+b" in post.table() and post.to_dict()["key_frequencies"] == FREQS
    series = probe_checkpoints([(0, lambda: model), (1, lambda: model)], task, FREQS)
    assert isinstance(series, ProbeSeries) and series.steps == [0, 1]
    assert series.column("a+b", 2) == pytest.approx([post.r2_of("a+b", 2)] * 2)


def test_probes_for_a_formula_other_than_addition_include_the_answer_waves():
    task = make_task(TaskConfig(formula="a-b", p=P))
    model = quadratic_mlp_addition(P, FREQS)
    rep = probe_model(model, task, FREQS)
    assert "c k=2" in rep.r2
