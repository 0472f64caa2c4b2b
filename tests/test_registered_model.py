"""Your own model by name (issue 22 item 3): a builder registered with register_model is selected by
model.arch='registered' + model.name, so a config builds it anywhere: it trains, resumes after kill -9 to the same
bits without model=, sweeps (in this process and in spawned workers that find it through an entry point), reports,
and gets the logit-level analysis, which equals the logit rows of grokscope's whole analysis on the same logits.

Run as a script, this file trains :data:`CFG` and SIGKILLs itself just after the N-th safetensors write:
``python tests/test_registered_model.py OUT N``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from pathlib import Path

import pytest
import torch
from faults_util import assert_same_run, run_killed_script
from torch import nn

from grokscope.config import ConfigError, ExperimentConfig, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from grokscope.models import build_model, register_model, registered_models, unregister_model
from grokscope.models import registry as model_registry
from grokscope.store.run import Run, RunError
from grokscope.tasks import make_task, register_task, table_task
from grokscope.training import Parent, resume, train

HERE = Path(__file__).resolve()


class Flat(nn.Module):
    """Embeddings, flattened, through one ReLU layer: logits at the last position [batch, d_vocab_out]. Its widths
    come from the config (d_model, d_mlp), so a sweep over them sweeps this module."""

    def __init__(self, cfg: ModelConfig, *, d_vocab: int, d_vocab_out: int, n_ctx: int):
        super().__init__()
        self.emb = nn.Embedding(d_vocab, cfg.d_model)
        self.hidden = nn.Linear(n_ctx * cfg.d_model, cfg.d_mlp)
        self.out = nn.Linear(cfg.d_mlp, d_vocab_out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(self.emb(tokens).flatten(1))))  # [batch, d_vocab_out]


register_model("test-flat", Flat, replace=True)
_TABLE = torch.randint(0, 5, (6, 6), generator=torch.Generator().manual_seed(2))  # a lookup table: no formula
register_task(
    "test-flat-table", table_task({(a, b): int(_TABLE[a, b]) for a in range(6) for b in range(6)}), replace=True
)
CFG = ExperimentConfig(
    name="flat",
    task=TaskConfig(kind="registered", name="test-flat-table", train_fraction=0.7),
    model=ModelConfig(arch="registered", name="test-flat", d_model=8, d_mlp=32),
    optim=OptimConfig(lr=3e-3, weight_decay=0.5, warmup_steps=5),
    train=TrainConfig(epochs=40, log_every=5, checkpoint_every=10, measure_every=0, device="cpu"),
)


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    return train(CFG, tmp_path_factory.mktemp("reg") / "full", progress=False, threads=1)


def test_the_registry_names_builds_and_refuses_in_one_line():
    assert "test-flat" in registered_models()
    sizes = dict(d_vocab=7, d_vocab_out=5, n_ctx=3)
    a, b = build_model(CFG.model, **sizes), build_model(CFG.model, **sizes)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # seeded
    other = build_model(dataclasses.replace(CFG.model, init_seed=1), **sizes)
    assert not torch.equal(a.emb.weight, other.emb.weight)
    state = torch.random.get_rng_state()
    scaled = build_model(dataclasses.replace(CFG.model, init_scale=2.0), **sizes)
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's generator is left as it was
    assert torch.equal(scaled.hidden.weight, 2 * a.hidden.weight)
    with pytest.raises(ConfigError, match=r"^model.name: no model registered as 'nobody' \(registered: .*'test-flat'"):
        build_model(dataclasses.replace(CFG.model, name="nobody"), **sizes)
    register_model("test-broken", lambda cfg, **k: 1 / 0)
    register_model("test-not-a-module", lambda cfg, **k: "a string")
    try:
        with pytest.raises(ConfigError, match=r"builder of 'test-broken' failed \(ZeroDivisionError: division by"):
            build_model(dataclasses.replace(CFG.model, name="test-broken"), **sizes)
        with pytest.raises(ConfigError, match="returned str, not an nn.Module"):
            build_model(dataclasses.replace(CFG.model, name="test-not-a-module"), **sizes)
    finally:
        unregister_model("test-broken")
        unregister_model("test-not-a-module")
    with pytest.raises(ValueError, match="registered already"):
        register_model("test-flat", lambda cfg, **k: Flat(cfg, **k))
    with pytest.raises(ConfigError, match="model.output_scale: applies to grokscope's own models"):
        build_model(dataclasses.replace(CFG.model, output_scale=2.0), **sizes)
    for bad in (dict(arch="registered"), dict(name="test-flat"), dict(arch="registered", name="a b")):
        with pytest.raises(ConfigError, match="^model.name: "):
            ModelConfig(**bad)


def test_an_unknown_name_on_the_command_line_is_one_line_and_writes_nothing(tmp_path, capsys):
    from grokscope.cli import main

    out = tmp_path / "never"
    argv = ["train", "--preset", "tiny", "--set", "model.arch=registered", "--set", "model.name=nobody"]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model.name: no model registered as 'nobody'" in err and "test-flat" in err
    assert not out.exists()
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--set",
                "task.kind=registered",
                "--set",
                "task.name=nobody",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "task.name: no task registered as 'nobody'" in capsys.readouterr().err and not out.exists()


def test_a_registered_model_trains_and_the_run_says_how(full):
    meta = full.meta
    assert meta["status"] == "completed" and meta["forward"] == "user" and meta["model_class"].endswith("Flat")
    assert json.loads((full.dir / "config.json").read_text())["model"]["name"] == "test-flat"
    assert full.user_module is None  # built from the config: no model= needed to load or resume it
    task = make_task(CFG.task)
    model = full.load_model()
    with torch.no_grad():
        acc = (model(task.train_tokens).argmax(-1) == task.train_labels).double().mean().item()
    assert acc == pytest.approx(full.metrics["train_acc"].iloc[-1])
    assert full.metrics["train_loss"].iloc[-1] < 0.7 * full.metrics["train_loss"].iloc[0]


def test_it_resumes_after_kill_9_to_the_same_bits_without_model(full, tmp_path):
    out = tmp_path / "killed"
    run_killed_script(HERE, out, 4)
    assert Run(out).status == "running"
    with pytest.raises(RunError, match="registered model 'test-flat'.*without model="):
        resume(out, model=Flat(CFG.model, d_vocab=7, d_vocab_out=5, n_ctx=3), progress=False)
    resumed = resume(out, progress=False, threads=1)
    assert resumed.status == "completed"
    assert_same_run(full, resumed)  # metrics, and every checkpoint tensor for tensor and byte for byte


def test_from_and_init_from_refuse_registered_models_in_one_line(full, tmp_path):
    with pytest.raises(RunError, match="take runs of grokscope's own models"):
        train(CFG, tmp_path / "child", parent=Parent(run=full.dir), progress=False)


def test_it_sweeps_in_this_process_and_reports(full, tmp_path):
    from grokscope.figures.report import write_report
    from grokscope.sweep.local import run_sweep
    from grokscope.sweep.spec import make_spec

    base = dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, epochs=10))
    spec = make_spec(name="flat", base=base.to_dict(), axes={"model.d_mlp": [16, 32]}, seeds=1, outcome={"tau": 5})
    run_sweep(spec, tmp_path / "sweep", workers=0, progress=False, log=lambda s: None)
    cells = sorted((tmp_path / "sweep").rglob("config.json"))
    widths = sorted(json.loads(p.read_text())["model"]["d_mlp"] for p in cells)
    assert widths == [16, 32]
    for p in cells:
        run = Run(p.parent)
        assert run.status == "completed" and run.meta["forward"] == "user"
        assert run.load_model().hidden.weight.shape[0] == run.config.model.d_mlp  # the swept width built the module
    report = write_report(full, tmp_path / "report.html")
    assert "test loss" in report.read_text().lower()


def test_spawned_sweep_workers_find_a_packages_model_through_its_entry_point(tmp_path, monkeypatch):
    """A 'grokscope.models' entry point of a distribution on sys.path: the CLI-free sweep with one spawned worker
    process (which did not run register_model) builds it by name."""
    from grokscope.sweep.local import run_sweep
    from grokscope.sweep.spec import make_spec

    (tmp_path / "regmodel_pkg.py").write_text(
        "import torch\nfrom torch import nn\n\n"
        "def build(cfg, *, d_vocab, d_vocab_out, n_ctx):\n"
        "    return nn.Sequential(nn.Embedding(d_vocab, cfg.d_model), nn.Flatten(1),\n"
        "                         nn.Linear(n_ctx * cfg.d_model, d_vocab_out))\n"
    )
    dist = tmp_path / "regmodel_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: regmodel-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[grokscope.models]\npkg-linear = regmodel_pkg:build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(HERE.parent.parent)]))
    monkeypatch.setattr(model_registry.REGISTRY, "entry_points_read", False)
    try:
        assert "pkg-linear" in registered_models()
        cfg = ExperimentConfig(
            task=TaskConfig(p=7, train_fraction=0.6),
            model=ModelConfig(arch="registered", name="pkg-linear", d_model=4),
            train=TrainConfig(epochs=6, log_every=3, checkpoint_every=3, measure_every=0, device="cpu"),
        )
        spec = make_spec(
            name="pkg", base=cfg.to_dict(), axes={"optim.weight_decay": [0.0, 1.0]}, seeds=1, outcome={"tau": 3}
        )
        run_sweep(spec, tmp_path / "sweep", workers=1, progress=False, log=lambda s: None)
        runs = [Run(p.parent) for p in (tmp_path / "sweep").rglob("config.json")]
        assert len(runs) == 2 and all(r.status == "completed" and r.meta["forward"] == "user" for r in runs)
    finally:
        unregister_model("pkg-linear")


def test_the_logit_analysis_equals_the_logit_rows_of_the_whole_analysis(tmp_path):
    """analyze_logits on grokscope's own transformer (through its module forward) gives the losses, ablations and
    logit fit of analyze_checkpoint (fast path) at the same key frequencies, to float32 rounding of the logits."""
    from grokscope.analysis.logits import analyze_logits
    from grokscope.analysis.reverse import analyze_checkpoint

    cfg = ExperimentConfig(
        task=TaskConfig(p=11, train_fraction=0.5), model=ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32)
    )
    task = make_task(cfg.task)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx).eval()
    whole = analyze_checkpoint(model, task, key_freqs=[1, 3])
    mine = analyze_logits(model, task, key_freqs=[1, 3], step=0, why="test")
    assert mine["key_frequencies"] == [1, 3] and mine["key_freq_rule"] == "given"
    for k, v in mine["losses"].items():
        assert v == pytest.approx(whole.losses[k], rel=1e-5, abs=1e-7), k
    rows = [a.to_dict() for a in whole.ablations if a.name != "neurons -> polynomial fits"]
    assert [r["name"] for r in mine["ablations"]] == [r["name"] for r in rows]
    for mine_row, row in zip(mine["ablations"], rows):
        assert mine_row["loss"] == pytest.approx(row["loss"], rel=1e-5)
    assert mine["logit_fit"]["fve"] == pytest.approx(whole.logit_fit.fve, rel=1e-5)
    assert "test" in next(iter(mine["skipped"].values()))


def test_analyze_reads_a_registered_run_by_its_logits_and_a_model_run_says_what_it_needs(tmp_path, capsys):
    from grokscope.analysis.run import analyze_run
    from grokscope.cli import main

    cfg = ExperimentConfig(
        task=TaskConfig(p=11, train_fraction=0.6),
        model=dataclasses.replace(CFG.model),
        optim=CFG.optim,
        train=dataclasses.replace(CFG.train, epochs=30, measure_every=10),
    )
    run = train(cfg, tmp_path / "mod", progress=False)
    analysis, data = analyze_run(run)
    assert analysis is None and data["key_freq_rule"] == "logits_dft" and "logit_fit" in data
    task = make_task(cfg.task)
    with torch.no_grad():
        logits = run.load_model()(task.tokens).double()
    train_loss = torch.nn.functional.cross_entropy(logits[task.train_idx], task.labels[task.train_idx]).item()
    assert data["losses"]["train_loss"] == pytest.approx(train_loss, rel=1e-9)  # an independent cross-entropy
    assert main(["analyze", str(run.dir)]) == 0
    assert "Logit-level analysis" in capsys.readouterr().out
    flat = Flat(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    with pytest.raises(RunError, match="pass model= or name a registered model, not both"):
        train(cfg, tmp_path / "both", progress=False, model=flat)
    mine = train(dataclasses.replace(cfg, model=ModelConfig()), tmp_path / "mine", progress=False, model=flat)
    assert main(["analyze", str(mine.dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model=" in err
    _, data = analyze_run(
        mine, model=Flat(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    )
    assert data["losses"]["train_loss"] == pytest.approx(float(mine.metrics["train_loss"].iloc[-1]), rel=1e-6)


class Waves(nn.Module):
    """Logits A cos(2 pi k (a + b - c) / p) at the last position: a model whose logits hold one key frequency."""

    def __init__(self, p: int, k: int, amplitude: float):
        super().__init__()
        self.p, self.k, self.amplitude = p, k, amplitude
        self.unused = nn.Parameter(torch.zeros(1))  # a module with a parameter, none of them TransformerLens names

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        a, b = tokens[:, 0, None].double(), tokens[:, 1, None].double()
        c = torch.arange(self.p, dtype=torch.float64)[None, :]
        return (self.amplitude * torch.cos(2 * torch.pi * self.k * (a + b - c) / self.p)).float()


def test_the_logit_measures_of_pure_waves_are_their_closed_forms():
    """Logits that are one key wave: the logits' spectrum finds k, keeping it keeps everything (restricted loss =
    the loss), removing it leaves a constant (excluded loss = ln p)."""
    from grokscope.measures import logit_measures

    p, k, amp = 11, 3, 4.0
    task = make_task(TaskConfig(formula="a+b", p=p, train_fraction=0.5))
    logits = Waves(p, k, amp)(task.tokens)  # float32, as a model's
    out = logit_measures(logits, task)
    assert out["n_key_freqs"] == 1.0 and out["key_freqs_fixed"] == 0.0 and f"excluded_loss_k{k}" in out
    full = torch.nn.functional.cross_entropy(logits.double(), task.labels).item()
    assert out["restricted_loss"] == pytest.approx(full, rel=1e-6)
    assert out["excluded_loss"] == pytest.approx(math.log(p), rel=1e-6)


@pytest.mark.parametrize("formula", ["a+b", "a*b"])
def test_the_logit_measures_equal_those_of_progress_measures_on_the_same_logits_and_keys(formula):
    """The additive grid and the discrete-log basis of a*b: the same numbers as progress_measures' own path."""
    from grokscope.measures import logit_measures, progress_measures

    cfg = ExperimentConfig(
        task=TaskConfig(formula=formula, p=11, train_fraction=0.5),
        model=ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32),
    )
    task = make_task(cfg.task)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx).eval()
    with torch.no_grad():
        logits = model(task.tokens)
    theirs = progress_measures(model, task, key_freqs=[1, 3], logits=logits, extra=False)
    mine = logit_measures(logits, task, key_freqs=[1, 3])
    assert mine["key_freqs_fixed"] == 1.0
    for name in ("restricted_loss", "restricted_acc", "excluded_loss", "excluded_acc", "excluded_loss_k3"):
        assert mine[name] == pytest.approx(theirs[name], rel=1e-12), name


def test_a_registered_module_logs_the_logit_measures_and_says_so(tmp_path):
    cfg = ExperimentConfig(
        task=TaskConfig(p=11, train_fraction=0.6),
        model=dataclasses.replace(CFG.model),
        optim=CFG.optim,
        train=dataclasses.replace(CFG.train, epochs=20, measure_every=10),
    )
    run = train(cfg, tmp_path / "m", progress=False)
    assert run.meta["measures"].startswith("logit measures only")
    m = run.metrics.dropna(subset=["restricted_loss"])
    assert list(m.index) == [0, 10, 20] and "gini_W_E" not in run.metrics.columns
    from grokscope.measures import logit_measures

    task = make_task(cfg.task)
    with torch.no_grad():
        again = logit_measures(run.load_model(20)(task.tokens), task)
    assert m.loc[20, "excluded_loss"] == pytest.approx(again["excluded_loss"], rel=1e-9)
    from grokscope.figures.report import write_report

    html = write_report(run, tmp_path / "report.html").read_text()
    assert "could not be drawn" not in html  # figures that read weights by name say they do not apply
    assert "Not applicable to this model: " in html and "Fourier norms of W_E and W_L" in html
    not_applicable = html.split("Not applicable to this model: ")[1].split("<")[0]
    assert "Logits in the 2D Fourier basis" not in not_applicable  # read through the module's own forward
    from grokscope.figures.data import key_frequencies
    from grokscope.measures import key_frequencies_from_logits

    keys, how = key_frequencies(run)  # no analysis.json, no W_L: the figures read the logits' spectrum
    with torch.no_grad():
        table = run.load_model(20)(task.tokens)[torch.argsort(task.tokens[:, 0] * 11 + task.tokens[:, 1])].double()
    assert how.startswith("logits_dft") and keys == key_frequencies_from_logits(table)


def test_the_dynamics_of_your_own_module_start_from_its_step_0(tmp_path):
    """train.dynamics with model=: theta_0 is the run's step-0 checkpoint, not a model the config would build."""
    cfg = ExperimentConfig(
        task=TaskConfig(p=7, train_fraction=0.6),
        model=ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32),
        train=TrainConfig(epochs=20, log_every=10, measure_every=10, checkpoint_every=10, dynamics=True, device="cpu"),
    )
    task = make_task(cfg.task)
    own = build_model(
        dataclasses.replace(cfg.model, init_seed=5),
        d_vocab=task.d_vocab,
        d_vocab_out=task.d_vocab_out,
        n_ctx=task.n_ctx,
    )
    run = train(cfg, tmp_path / "dyn", model=own, progress=False)
    rwc = run.metrics["relative_weight_change"]
    first, last = run.load_state_dict(0), run.load_state_dict(20)
    names = [n for n, _ in own.named_parameters()]
    num = sum(float(((last[n].double() - first[n].double()) ** 2).sum()) for n in names)
    den = sum(float((first[n].double() ** 2).sum()) for n in names)
    assert rwc.loc[0] == 0.0
    assert rwc.loc[20] == pytest.approx((num / den) ** 0.5, rel=1e-9)


if __name__ == "__main__":
    from faults_util import die_after_safetensors_write

    die_after_safetensors_write(int(sys.argv[2]))
    train(CFG, sys.argv[1], progress=False, threads=1)
