"""Reverse engineering of constructed and random networks, and the `grokscope analyze` command."""

import argparse
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from grokscope.analysis import analyze_checkpoint, attention_fits, neuron_polynomial_fits, render_analysis
from grokscope.analysis.cli import cmd_analyze, register
from grokscope.analysis.construct import quadratic_mlp_addition, wave_logit_table
from grokscope.analysis.reverse import logit_wave_fit
from grokscope.analysis.run import analyze_run, print_run_summary
from grokscope.config import ExperimentConfig, ModelConfig, TaskConfig
from grokscope.measures import neuron_frequency_fractions
from grokscope.measures.fourier import fourier_basis
from grokscope.models import Transformer, build_model
from grokscope.store import RunError
from grokscope.tasks import make_task

P, FREQS = 13, [2, 5]


@pytest.fixture(scope="module")
def constructed():
    task = make_task(TaskConfig(p=P, train_fraction=0.3))
    model = quadratic_mlp_addition(P, FREQS, scale=2.0)
    return task, model, analyze_checkpoint(model, task, key_freqs=None)


def test_constructed_network_is_analysed_to_its_frequencies(constructed):
    task, model, a = constructed
    assert a.key_frequencies == FREQS and a.key_freq_rule == "W_L_dft"
    for rule in ("W_L_dft", "W_E_norm", "logits_dft"):
        assert a.key_frequencies_by_rule[rule] == FREQS, rule
    assert a.losses["acc"] == 1.0
    # Every neuron is built on one frequency: 5 neurons on k=2, then 5 on k=5.
    assert a.neurons.frequency == [2] * 5 + [5] * 5
    # Its activation (cos(w a - t) + cos(w b - t))^2 is a degree-2 polynomial of that frequency: 100% with the
    # squares; the paper's 3x3 block misses exactly the cos/sin(2 w a), (2 w b) parts: 1 / 1.25 = 0.8.
    assert a.neurons.fve_quadratic == pytest.approx([1.0] * 10, abs=1e-6)
    assert a.neurons.fve == pytest.approx([0.8] * 10, abs=1e-6)
    assert a.neurons.n_explained_quadratic == 10
    # W_L is exactly rank 2K on the key frequencies.
    assert a.W_L_residual_fraction < 1e-6
    # Logits = sum_k 5 (1 + cos w(a-b)) cos w(a+b-c) = cos w(a+b-c) + (cos w(2a-c) + cos w(2b-c)) / 2 per k:
    # the cos(w_k(a+b-c)) fit explains 1 / (1 + 1/4 + 1/4) = 2/3, with alpha_k = 2.0 * 5 / 2.
    assert a.logit_fit.fve == pytest.approx(2 / 3, abs=1e-6)
    for k in FREQS:
        assert a.logit_fit.alpha[k] == pytest.approx(5.0, rel=1e-6)
        assert abs(a.logit_fit.sin_coefficient[k]) < 1e-5
    assert a.table5.key_frequencies == FREQS and a.table5.logit_fve == pytest.approx(2 / 3, abs=1e-6)
    assert a.attention == []  # MLP model: no attention


def test_constructed_network_ablations(constructed):
    task, model, a = constructed
    rows = {r.name: r for r in a.ablations}
    orig = rows["original"]
    assert rows["remove all key freqs"].loss > math.log(P) and rows["remove all key freqs"].acc < 0.5
    assert rows["keep only key freqs (restricted)"].acc == 1.0
    assert rows["keep only key freqs (restricted)"].loss == pytest.approx(a.losses["restricted_loss"])
    assert rows["keep key 3x3 blocks"].acc == 1.0
    for k in FREQS:
        assert rows[f"remove k={k}"].loss > orig.loss
    # no neuron passes the 85% 3x3 threshold, so none is replaced
    assert rows["neurons -> polynomial fits"].loss == pytest.approx(orig.loss, rel=1e-9)
    # Ablating frequencies that carry nothing changes nothing.
    b = analyze_checkpoint(model, task, key_freqs=[1, 2, 5, 6])
    rows_b = {r.name: r for r in b.ablations}
    for k in (1, 6):
        assert rows_b[f"remove k={k}"].loss == pytest.approx(orig.loss, rel=1e-6)
        assert rows_b[f"remove k={k}"].acc == orig.acc


def test_star_plot_of_constructed_mlp(constructed):
    _, _, a = constructed
    assert [s.frequency for s in a.star] == [2] * 5 + [5] * 5
    for j, s in enumerate(a.star):
        theta = 2 * math.pi * (j % 5) / 5
        assert math.cos(s.angle_in - theta) == pytest.approx(1.0, abs=1e-6)
        # the output is written at twice the input angle (the PAIR circle construction)
        assert math.cos(s.angle_out - 2 * s.angle_in) == pytest.approx(1.0, abs=1e-6)


def test_hand_built_logit_table_has_full_fve():
    p, freqs = 17, [3, 8]
    table = wave_logit_table(p, freqs, amplitude=2.5)
    labels = make_task(TaskConfig(p=p)).labels
    fit = logit_wave_fit(table, labels, p, freqs)
    assert fit.fve == pytest.approx(1.0, abs=1e-12)
    assert fit.alpha == pytest.approx({3: 2.5, 8: 2.5})
    partial = logit_wave_fit(table, labels, p, [3])
    assert partial.fve == pytest.approx(0.5, abs=1e-12)


def test_neuron_polynomial_fit_keeps_the_block_and_drops_the_rest():
    p, k = 11, 3
    F = fourier_basis(p)
    a = torch.arange(p)
    ia = torch.tensor([0, 2 * k - 1, 2 * k])
    block = torch.randn(3, 3, dtype=torch.float64)
    exact = F[ia].T @ block @ F[ia]  # [p, p]: a polynomial of frequency k in a and b
    noise = 0.1 * F[1][:, None] * F[9][None, :]  # (cos 1)(a) * (sin 5)(b): outside that block
    acts = torch.stack([(exact + noise).reshape(-1), exact.reshape(-1)], dim=1)
    fr = neuron_frequency_fractions(acts, p)
    assert int(fr[:, 1].argmax()) + 1 == k and fr[k - 1, 1] == pytest.approx(1.0)
    fitted = neuron_polynomial_fits(acts, p, torch.tensor([k, k]), torch.tensor([True, False]))
    assert torch.allclose(fitted[:, 0], exact.reshape(-1), atol=1e-12)  # noise removed
    assert torch.equal(fitted[:, 1], acts[:, 1])  # not selected: untouched
    del a


def test_attention_head_frequency_on_hand_built_transformer():
    p, k = 13, 4
    task = make_task(TaskConfig(p=p))
    cfg = ModelConfig(d_model=3, n_heads=2, d_head=2, d_mlp=4)
    model = Transformer(cfg, d_vocab=p + 1, d_vocab_out=p, n_ctx=3).eval()
    x = torch.arange(p, dtype=torch.float64)
    with torch.no_grad():
        for prm in model.parameters():
            prm.zero_()
        W_E = torch.zeros(p + 1, 3)
        W_E[:p, 1] = torch.cos(2 * math.pi * k * x / p).float()
        W_E[:p, 2] = torch.sin(2 * math.pi * 2 * x / p).float()
        W_E[p, 0] = 1.0
        model.embed.W_E.copy_(W_E)
        model.blocks[0].attn.W_Q[:, 0, 0] = 1.0  # query: the "=" flag
        model.blocks[0].attn.W_K[0, 1, 0] = 0.6  # head 0 keys: cos(w_k token)
        model.blocks[0].attn.W_K[1, 2, 0] = 0.6  # head 1 keys: sin(w_2 token)
    fits = attention_fits(model, task)
    assert [(f.layer, f.head, f.frequency) for f in fits] == [(0, 0, k), (0, 1, 2)]
    assert all(f.fve > 0.95 for f in fits)
    assert all(0.25 < f.mean < 0.42 for f in fits)  # about 1/3 each for a, b and "="


def test_random_transformer_analysis_is_json_safe():
    task = make_task(TaskConfig(p=11))
    cfg = ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32)
    model = build_model(cfg, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3).eval()
    a = analyze_checkpoint(model, task, step=7)
    assert a.key_frequencies == [] and a.neurons.n_explained == 0
    assert a.gini_W_E < 0.3 and a.gini_W_L < 0.3
    assert len(a.attention) == 2 and a.star == []
    d = json.loads(json.dumps(a.to_dict(), allow_nan=False))
    assert d["key_frequencies"] == [] and d["step"] == 7 and isinstance(d["restricted_loss"], float)
    assert set(d["choices"]) == {"A1", "A2", "A3", "A4", "A5", "A6"}
    text = render_analysis(a)
    assert "Table 5" in text and "Attention" in text


# ----------------------------------------------------------------------------- the CLI


class FakeRun:
    """The store API the analysis uses, backed by in-memory models."""

    def __init__(self, tmp: Path, task_cfg: TaskConfig, models: dict, metrics: pd.DataFrame | None = None):
        self.dir = tmp
        self.config = ExperimentConfig(task=task_cfg)
        self._task = make_task(task_cfg)
        self._models = models
        self._metrics = metrics if metrics is not None else pd.DataFrame()
        self.metric_writes = {}

    def task(self):
        return self._task

    @property
    def checkpoints(self):
        return sorted(self._models)

    def load_model(self, step=None):
        return self._models[self.checkpoints[-1] if step is None else step]

    @property
    def metrics(self):
        return self._metrics

    def write_json(self, name, obj):
        (self.dir / name).write_text(json.dumps(obj, allow_nan=False))
        return self.dir / name

    def write_metrics(self, step, values):
        self.metric_writes.setdefault(step, {}).update(values)


def _args(run, **kw):
    ns = argparse.Namespace(run=run, step=None, key_freqs=None, rule="W_L_dft", all_steps=False, quiet=True)
    for k, v in kw.items():
        setattr(ns, k, v)
    return ns


def test_analyze_command_writes_analysis_json(tmp_path, capsys):
    cfg = TaskConfig(p=P, train_fraction=0.3)
    good = quadratic_mlp_addition(P, FREQS, scale=2.0)
    rand = build_model(ModelConfig(arch="mlp", d_model=4, d_mlp=10), d_vocab=P + 1, d_vocab_out=P, n_ctx=3).eval()
    metrics = pd.DataFrame(
        {
            "train_acc": [0.1, 1.0, 1.0],
            "test_acc": [0.1, 0.5, 1.0],
            "test_loss": [3.0, 2.0, 0.01],
            "train_loss": [3, 0.1, 0.01],
        },
        index=pd.Index([0, 100, 200], name="step"),
    )
    run = FakeRun(tmp_path, cfg, {0: rand, 200: good}, metrics)
    assert cmd_analyze(_args(tmp_path, quiet=False), load_run=lambda path: run) == 0
    out = capsys.readouterr().out
    assert "Table 5" in out and "Phases" in out
    data = json.loads((tmp_path / "analysis.json").read_text())
    assert data["key_frequencies"] == FREQS and all(type(k) is int for k in data["key_frequencies"])
    assert data["step"] == 200 and data["checkpoints"] == [0, 200]
    assert isinstance(data["restricted_loss"], float) and data["phases"]["grok_epoch"] == 200
    assert (tmp_path / "phases.json").exists()
    # --step, --key-freqs, and the second pass with fixed key frequencies
    cmd_analyze(_args(tmp_path, step=0, key_freqs="2,5", all_steps=True), load_run=lambda path: run)
    data = json.loads((tmp_path / "analysis.json").read_text())
    assert data["step"] == 0 and data["key_freq_rule"] == "given" and data["key_frequencies"] == FREQS
    assert set(run.metric_writes) == {0, 200} and "excluded_loss_k5_fixed" in run.metric_writes[200]


def test_analyze_user_errors_are_one_line_run_errors(tmp_path):
    cfg = TaskConfig(p=P)
    model = quadratic_mlp_addition(P, FREQS)
    with pytest.raises(RunError, match="no checkpoints"):
        analyze_run(FakeRun(tmp_path, cfg, {}))
    with pytest.raises(RunError, match="no checkpoint at step 5 \\(nearest: 0\\)"):
        analyze_run(FakeRun(tmp_path, cfg, {0: model}), step=5)
    # Division is no error: it is analysed in its discrete-log basis (tests/test_bases.py), which does not need the
    # division-by-zero pairs; asked for in the additive basis, the zoo analyses stand in and say what the missing
    # full grid rules out (test_zoo_analyze.py).
    analysis, data = analyze_run(FakeRun(tmp_path, TaskConfig(p=P, formula="a/b"), {0: model}), write=False)
    assert analysis is not None and data["basis"]["name"] == "dlog" and data["basis"]["n"] == P - 1
    analysis, data = analyze_run(
        FakeRun(tmp_path, TaskConfig(p=P, formula="a/b"), {0: model}), write=False, basis="additive"
    )
    assert analysis is None and "division by zero" in data["zoo"]["skipped"]["Fourier analysis and progress measures"]
    with pytest.raises(RunError, match="--key-freqs"):
        cmd_analyze(_args(tmp_path, key_freqs="2,x"), load_run=lambda path: FakeRun(tmp_path, cfg, {0: model}))
    assert not (tmp_path / "analysis.json").exists()


def test_register_adds_the_subcommand():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    register(sub)
    ns = parser.parse_args(["analyze", "runs/x", "--step", "300", "--key-freqs", "14,35"])
    assert ns.func is cmd_analyze and ns.step == 300 and ns.run == Path("runs/x") and ns.key_freqs == "14,35"


def test_cli_exit_code_2_on_missing_run(tmp_path, capsys):
    import grokscope.cli as cli  # a plain import: a broken package must fail here, not skip

    code = cli.main(["analyze", str(tmp_path / "nope")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "nope" in err


def test_print_run_summary(tmp_path, capsys):
    metrics = pd.DataFrame(
        {
            "train_acc": [0.1, 1.0, 1.0],
            "test_acc": [0.1, 0.5, 1.0],
            "test_loss": [3.0, 2.0, 0.01],
            "train_loss": [3, 0.1, 0.01],
        },
        index=pd.Index([0, 100, 200], name="step"),
    )
    run = FakeRun(
        tmp_path, TaskConfig(p=P), {100: quadratic_mlp_addition(P, [3]), 200: quadratic_mlp_addition(P, FREQS)}, metrics
    )
    print_run_summary(run)
    out = capsys.readouterr().out
    assert "Phases" in out and "Table 5" in out and "{2, 5}" in out
    assert set(run.metric_writes) == {100, 200}  # the fixed-key second pass was stored
    print_run_summary(FakeRun(tmp_path, TaskConfig(p=P, formula="a/b"), {0: quadratic_mlp_addition(P, FREQS)}))
    out = capsys.readouterr().out  # division: the analysis in its discrete-log basis (tests/test_bases.py)
    assert "basis:      dlog over Z_12" in out and "Table 5" in out and "analysis.json" in out
