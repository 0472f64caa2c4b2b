"""The progress measures in the task's own group basis (issue 21): a*b, a/b and ab+a+b read over Z_{p-1} through the
discrete-log relabelling, checked on constructed networks whose logits are known in closed form; a+b and a-b keep
the additive code path (no relabelling at all)."""

import math

import pytest
import torch

from grokscope.analysis.construct import group_network, quadratic_mlp_addition
from grokscope.config import ModelConfig, TaskConfig
from grokscope.measures import MeasureError, fixed_key_measures, progress_measures
from grokscope.measures.progress import measure_basis, measure_basis_label
from grokscope.models import build_model
from grokscope.tasks import make_task


def _task(formula: str, p: int):
    return make_task(TaskConfig(formula=formula, p=p, train_fraction=0.5, split_seed=0))


def _closed_form_loss(n: int, freqs: list[int], scale: float = 4.0) -> float:
    """CE of logits z_m = scale * sum_k cos(w_k (s - m)) at the answer m = s, over the n group outputs."""
    d = torch.arange(n, dtype=torch.float64)
    z = scale * sum(torch.cos(2 * math.pi * k * d / n) for k in freqs)
    return float(-(z[0] - torch.logsumexp(z, dim=0)))


def _random(task, seed: int = 0):
    cfg = ModelConfig(arch="transformer", d_model=32, n_heads=2, d_head=16, d_mlp=64, init_seed=seed)
    return build_model(cfg, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3).eval()


@pytest.mark.parametrize(
    ("formula", "p", "freqs"),
    [("a*b", 13, [1, 5]), ("a/b", 13, [2, 5]), ("a*b+a+b", 13, [1, 4]), ("a*b", 29, [3, 9, 13])],
)
def test_constructed_network_measured_in_its_dlog_basis(formula, p, freqs):
    model, basis = group_network(formula, p, freqs)
    task = _task(formula, p)
    chosen = measure_basis(task)
    assert chosen is not None and chosen.name == "dlog" and chosen.n == p - 1
    m = progress_measures(model.eval(), task, rule="W_L_dft")
    n = p - 1
    assert m["n_key_freqs"] == len(freqs)
    assert sorted(int(k.rsplit("k", 1)[1]) for k in m if k.startswith("excluded_loss_k")) == freqs
    # The logits are exactly const + the key waves: the restriction keeps everything (closed form).
    assert m["restricted_loss"] == pytest.approx(_closed_form_loss(n, freqs), rel=1e-6)
    assert m["restricted_acc"] == 1.0
    # Removing the key waves leaves a constant: uniform over the n group outputs.
    assert m["excluded_loss"] == pytest.approx(math.log(n), rel=1e-6)
    for k in freqs:  # removing one key frequency hurts, but less than removing all of them
        assert _closed_form_loss(n, freqs) < m[f"excluded_loss_k{k}"] < m["excluded_loss"] + 1e-9
    # W_E and W_L sit on the chosen frequencies of Z_n only: Gini = 1 - |K| / (n//2) (one-hot-like, equal norms).
    sparse = 1 - len(freqs) / (n // 2)
    assert m["gini_W_E"] == pytest.approx(sparse, abs=1e-6) and m["gini_W_L"] == pytest.approx(sparse, abs=1e-6)
    random = progress_measures(_random(task), task)
    assert random["gini_W_E"] < 0.5 < m["gini_W_E"]
    assert m["ffs"] == pytest.approx(len(freqs) / ((n - 1) // 2)) and m["fcr"] == pytest.approx(1.0)
    given = progress_measures(model, task, key_freqs=freqs)
    assert given["key_freqs_fixed"] == 1.0 and given["restricted_loss"] == m["restricted_loss"]


def test_additive_tasks_keep_the_additive_code_path():
    for formula in ("a+b", "a-b"):
        assert measure_basis(_task(formula, 13)) is None
    task = _task("a+b", 13)
    model = quadratic_mlp_addition(13, [2, 5]).eval()
    assert measure_basis_label(task) == "additive"
    assert measure_basis_label(_task("a*b", 13)) == "dlog (g=2, n=12)"
    assert measure_basis_label(_task("a*b+a+b", 13)) == "dlog (g=2, shift=1, n=12)"
    auto, named = progress_measures(model, task), progress_measures(model, task, basis="additive")
    assert auto == named  # identical, bit for bit
    assert auto["n_key_freqs"] == 2 and auto["restricted_acc"] == 1.0


def test_basis_override_and_errors():
    task = _task("a*b", 13)
    model, _ = group_network("a*b", 13, [1, 5])
    # Forced additive on a product: the plain token basis, where a*b is not a full-grid sum -> nothing clean.
    add = progress_measures(model.eval(), task, basis="additive")
    assert add["restricted_loss"] > progress_measures(model, task)["restricted_loss"]
    with pytest.raises(MeasureError, match="1..6"):
        progress_measures(model, task, key_freqs=[7])  # only 1..6 exist over Z_12
    with pytest.raises(MeasureError, match="rule"):
        progress_measures(model, task, rule="W_E_norm")
    div = _task("a/b", 13)
    with pytest.raises(ValueError, match="p\\*p"):  # a/b has no additive full grid
        progress_measures(model, div, basis="additive")


def test_fixed_key_measures_in_the_dlog_basis():
    task = _task("a/b", 13)
    final, _ = group_network("a/b", 13, [2, 5])
    early = _random(task)
    df = fixed_key_measures([(0, early), (100, final)], task)
    assert df.attrs["basis"] == "dlog" and df.attrs["key_frequencies"] == [2, 5]
    assert df.loc[100, "restricted_loss_fixed"] == pytest.approx(_closed_form_loss(12, [2, 5]), rel=1e-6)
    assert df.loc[100, "excluded_loss_fixed"] == pytest.approx(math.log(12), rel=1e-6)
    assert df.loc[0, "restricted_loss_fixed"] > df.loc[100, "restricted_loss_fixed"]
    add = fixed_key_measures([(0, early)], _task("a+b", 13), key_freqs=[1])
    assert add.attrs["basis"] == "additive"


def test_training_and_all_steps_measure_a_division_run_in_its_basis(tmp_path):
    """The loop's measures and analyze --all-steps on a tiny a/b run: dlog keys (1..6 over Z_12), the _fixed metrics
    of every checkpoint equal to progress_measures in that basis with the analysis's key set."""
    import grokscope
    from grokscope.analysis.run import analyze_run
    from grokscope.config import apply_overrides

    cfg = apply_overrides(grokscope.get_preset("tiny"), {"task.formula": "a/b"})
    run = grokscope.train(cfg, tmp_path / "r", progress=False)
    stored = run.metrics
    assert "restricted_loss" in stored.columns  # measured during training (a/b had none before: not a full grid)
    assert stored["n_key_freqs"].dropna().max() <= 6
    analysis, data = analyze_run(run, all_steps=True, write=True)
    assert data["basis"]["name"] == "dlog" and data["fixed_key_measures"]["steps"] == len(run.checkpoints)
    keys = data["fixed_key_measures"]["key_frequencies"]
    assert keys == analysis.key_frequencies and all(1 <= k <= 6 for k in keys)
    last = run.checkpoints[-1]
    direct = progress_measures(run.load_model(last).eval(), run.task(), key_freqs=keys)
    fixed = run.metrics.loc[last]
    assert fixed["restricted_loss_fixed"] == pytest.approx(direct["restricted_loss"], rel=1e-9)
    assert fixed["excluded_loss_fixed"] == pytest.approx(direct["excluded_loss"], rel=1e-9)
