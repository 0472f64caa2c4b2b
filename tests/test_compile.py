"""train.compile: the loop's forward under torch.compile (grokscope/training/compiled.py), its fall-backs, resume,
the ensemble's refusal, sweep names, and ``grokscope bench --compile``.

Most tests put a stand-in for ``torch.compile`` in its place (the eager function behind the same wrapper), so they
check the wrapper, the meta and the fall-backs in well under a second each, bitwise against an eager run. The tests
that really compile (inductor builds C++ on the CPU: ~10-60 s on a small machine with a cold cache) are marked slow;
their CUDA case runs where a GPU is visible and skips elsewhere.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from grokscope.cli import main
from grokscope.config import apply_overrides
from grokscope.device import mps_available
from grokscope.models import build_model
from grokscope.models.forward import choose_forward
from grokscope.sweep.naming import cell_name, config_hash, same_cell
from grokscope.tasks import make_task
from grokscope.training import resume, train
from grokscope.training.compiled import TIMED_CALLS, CompiledForward, compile_forward
from grokscope.training.ensemble import check_ensemble_configs

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")


@pytest.fixture
def small(tiny_config):
    return apply_overrides(
        tiny_config,
        {
            "task.p": 7,
            "train.epochs": 20,
            "train.log_every": 5,
            "train.checkpoint_every": 10,
            "train.measure_every": 10,
            "train.device": "cpu",
        },
    )


class FakeCompile:
    """Stands in for torch.compile: records its arguments, returns the eager function (``fail``: one that raises
    on every call, as a compiler without a C++ toolchain does on the first)."""

    def __init__(self, fail: Exception | None = None, refuse: Exception | None = None, delay: float = 0.0):
        self.calls: list[dict] = []
        self.seen: list[tuple] = []
        self.fail, self.refuse, self.delay = fail, refuse, delay

    def __call__(self, fn, **kwargs):
        if self.refuse is not None:
            raise self.refuse
        self.calls.append(kwargs)

        def compiled(tokens):
            if self.fail is not None:
                raise self.fail
            key = (tuple(tokens.shape), torch.is_grad_enabled())
            if key not in self.seen:
                self.seen.append(key)
                time.sleep(self.delay)  # a compile
            return fn(tokens)

        return compiled


def _parts(cfg):
    task = make_task(cfg.task)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    return task, model


# --------------------------------------------------------------------------- the wrapper


def test_compile_forward_keeps_the_path_names_the_mode_and_passes_dynamic_false(small):
    task, model = _parts(small)
    choice = choose_forward(model, task)
    fake = FakeCompile()
    compiled, meta = compile_forward(choice, "max-autotune", CPU, compiler=fake)
    assert fake.calls == [{"dynamic": False, "mode": "max-autotune"}]
    assert compiled.path == choice.path == "fast" and compiled.why == f"{choice.why}; torch.compile mode=max-autotune"
    assert meta == {"compile": "max-autotune", "compile_note": ""}
    assert torch.equal(compiled.fn(task.tokens), choice.fn(task.tokens))  # the stand-in is the eager function


def test_none_is_the_eager_choice_itself_and_reduce_overhead_on_the_cpu_says_it_is_default(small):
    task, model = _parts(small)
    choice = choose_forward(model, task)
    assert compile_forward(choice, "none", CPU) == (choice, {})
    _, meta = compile_forward(choice, "reduce-overhead", CPU, compiler=FakeCompile())
    assert meta["compile"] == "reduce-overhead" and "compiles as 'default'" in meta["compile_note"]


def test_deterministic_adds_inductors_switch_to_the_modes_options(small):
    task, model = _parts(small)
    fake = FakeCompile()
    compile_forward(choose_forward(model, task), "reduce-overhead", CPU, deterministic=True, compiler=fake)
    import torch._inductor as inductor

    expected = dict(inductor.list_mode_options("reduce-overhead")) | {"deterministic": True}
    assert fake.calls == [{"dynamic": False, "options": expected}]


def test_mps_and_a_refusing_torch_stay_eager_and_say_why(small):
    task, model = _parts(small)
    choice = choose_forward(model, task)
    same, meta = compile_forward(choice, "default", torch.device("mps"), compiler=FakeCompile())
    assert same is choice and meta["compile"] == "none" and "not applied on MPS" in meta["compile_note"]
    refused = FakeCompile(refuse=RuntimeError("Dynamo is not supported on Python 3.99+"))
    same, meta = compile_forward(choice, "default", CPU, compiler=refused)
    assert same is choice and meta["compile"] == "none"
    assert meta["compile_note"] == ("torch.compile refused: RuntimeError: Dynamo is not supported on Python 3.99+; "
                                    "the run is eager")


def test_the_compile_time_is_the_first_calls_extra_time_forward_and_backward(small):
    task, model = _parts(small)
    written: list[dict] = []
    compiled, _ = compile_forward(choose_forward(model, task, fast=False), "default", CPU, write_meta=written.append,
                                  compiler=FakeCompile(delay=0.3))
    fn = compiled.fn
    assert isinstance(fn, CompiledForward)
    x = task.train_tokens
    for _ in range(TIMED_CALLS + 1):  # training calls: a forward, then its backward
        fn(x).sum().backward()
    with torch.no_grad():  # another signature, met once so far
        fn(task.tokens)
    assert fn.signatures == 2 and fn.fallback is None
    assert fn.seconds >= 0.15  # the training signature: its first call slept 0.3 s more than the others
    assert fn.compile_seconds >= fn.seconds + 0.3  # the evaluation's one call counts whole
    assert written[-1] == {"compile_seconds": f"{fn.compile_seconds:.2f}", "compile_signatures": "2"}


def test_an_error_of_the_computation_itself_is_raised_not_hidden(small):
    def broken(tokens):
        raise ValueError("bad tokens")

    choice = choose_forward(*reversed(_parts(small)))
    compiled, _ = compile_forward(type(choice)(fn=broken, path="general", why="x"), "default", CPU,
                                  compiler=FakeCompile(fail=RuntimeError("inductor")))
    with pytest.raises(ValueError, match="bad tokens"):
        compiled.fn(torch.zeros(2, 3, dtype=torch.long))


# --------------------------------------------------------------------------- runs (with the stand-in)


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "general"])
def test_a_run_through_the_wrapper_is_bitwise_the_eager_run_and_records_the_compile(tmp_path, small, monkeypatch,
                                                                                     fast, capsys):
    cfg = apply_overrides(small, {"train.fast_path": fast})
    eager = train(cfg, tmp_path / "eager", progress=False)
    fake = FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    run = train(apply_overrides(cfg, {"train.compile": "default"}), tmp_path / "compiled", progress=False)
    assert run.metrics.equals(eager.metrics)  # the wrapper and its timing hooks change no number
    assert run.meta["forward"] == eager.meta["forward"] == ("fast" if fast else "general")
    assert run.meta["forward_why"].endswith("torch.compile mode=default")
    assert run.meta["compile"] == "default" and float(run.meta["compile_seconds"]) >= 0
    # fast: at log epochs the shared forward (train rows with grad, eval mode) and the test rows, the training step
    # between them (train mode), the final evaluation over all pairs; general: the step and the evaluation
    assert int(run.meta["compile_signatures"]) == (4 if fast else 2) and len(fake.calls) == 1
    assert "compile" not in eager.meta
    from grokscope.cli import main

    assert main(["show", str(run.dir)]) == 0 and main(["show", str(eager.dir)]) == 0
    shown = capsys.readouterr().out
    assert shown.count("compile:    default (train.compile), ") == 1
    assert f"compiling {run.meta['compile_signatures']} signature(s)" in shown


def test_a_batched_run_compiles_once_per_batch_shape_not_per_step(tmp_path, small, monkeypatch):
    cfg = apply_overrides(small, {"train.batch_size": 10, "train.fast_path": False, "model.dropout": 0.1})
    n_train = make_task(cfg.task).train_idx.numel()
    assert n_train % 10  # a last batch of another size
    fake = FakeCompile()
    monkeypatch.setattr(torch, "compile", fake)
    torch.manual_seed(0)  # dropout draws from torch's global generator, which a run does not seed
    run = train(apply_overrides(cfg, {"train.compile": "default"}), tmp_path / "r", progress=False)
    monkeypatch.undo()
    torch.manual_seed(0)
    eager = train(cfg, tmp_path / "eager", progress=False)
    assert run.metrics.equals(eager.metrics)  # dropout in training mode: the same draws through the wrapper
    # two batch shapes with grad in training mode, and all pairs without grad in eval mode
    assert sorted(fake.seen) == sorted([((10, 3), True), ((n_train % 10, 3), True), ((49, 3), False)])
    assert run.meta["compile_signatures"] == "3"


def test_a_failing_compiler_falls_back_to_eager_once_with_a_note_and_no_traceback(tmp_path, small, monkeypatch,
                                                                                   capsys):
    eager = train(small, tmp_path / "eager", progress=False)
    fake = FakeCompile(fail=RuntimeError("InductorError: C++ compile error\nno compiler found"))
    monkeypatch.setattr(torch, "compile", fake)
    run = train(apply_overrides(small, {"train.compile": "default"}), tmp_path / "r", progress=False)
    assert run.status == "completed" and run.metrics.equals(eager.metrics)
    assert run.meta["compile"] == "none"
    assert run.meta["compile_note"] == ("compiling failed: RuntimeError: InductorError: C++ compile error; "
                                        "the run is eager")
    assert "Traceback" not in capsys.readouterr().err


def test_a_compiled_run_resumes_and_ends_as_the_uninterrupted_one(tmp_path, small, monkeypatch):
    monkeypatch.setattr(torch, "compile", FakeCompile())
    cfg = apply_overrides(small, {"train.compile": "default"})
    whole = train(cfg, tmp_path / "whole", progress=False)
    cut = train(apply_overrides(cfg, {"train.epochs": 10}), tmp_path / "cut", progress=False)
    config = json.loads((cut.dir / "config.json").read_text())
    assert config["train"]["compile"] == "default"  # how the run computes travels with it
    config["train"]["epochs"] = 20
    (cut.dir / "config.json").write_text(json.dumps(config))
    resumed = resume(cut.dir, progress=False)
    assert resumed.meta["final_epoch"] == "20" and resumed.meta["compile"] == "default"
    a, b = resumed.load_state_dict(), whole.load_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in b)  # the stand-in is eager: bitwise (a real compile: close)


# --------------------------------------------------------------------------- ensembles, sweeps, the CLI


def test_the_ensemble_refuses_train_compile_in_one_line(small):
    with pytest.raises(ValueError, match=r"^train_ensemble: train.compile='default' is not supported by the batched"):
        check_ensemble_configs([apply_overrides(small, {"train.compile": "default"})])


def test_sweep_cell_names_leave_train_compile_out(small):
    compiled = apply_overrides(small, {"train.compile": "reduce-overhead"})
    assert config_hash(compiled) == config_hash(small)
    point = [("optim.lr", 0.01)]
    assert cell_name(point, 0, compiled) == cell_name(point, 0, small)
    assert same_cell(compiled, small)  # a finished cell counts whatever train.compile continues the sweep


def test_bad_modes_are_one_line_and_exit_2(tmp_path, capsys):
    args = ["train", "--preset", "tiny", "--set", "train.compile=fast", "--out", str(tmp_path / "r"), "--quiet"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "train.compile" in err and "'reduce-overhead'" in err
    assert not (tmp_path / "r").exists()
    with pytest.raises(SystemExit) as exit_:  # argparse's choices: its one-line error
        main(["bench", "--quick", "--compile", "fast"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--compile" in err and "reduce-overhead" in err


def test_bench_compile_adds_a_compiled_row_and_its_compile_time(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "compile", FakeCompile())
    out = tmp_path / "bench.json"
    args = ["bench", "--quick", "--compile", "default", "--no-tl", "--repeats", "1", "--epochs", "1",
            "--scaling", "11", "--run-epochs", "10", "--agree-steps", "2", "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "(b+) compiled default" in text
    assert "compile (default): " in text and "compiled / eager default path:" in text
    res = json.loads(out.read_text())
    assert [r["name"] for r in res["rows"]][-1] == "(b+) compiled default"
    assert res["compile"].startswith("compile (default): ")


def test_bench_whole_run_compile_trains_the_run_compiled(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch, "compile", FakeCompile())
    args = ["bench", "--whole-run", "--quick", "--compile", "default", "--no-tl", "--run-epochs", "20",
            "--peer-epochs", "1", "--out", str(tmp_path / "run")]
    assert main(args) == 0
    assert "compiled: default (torch.compile)" in capsys.readouterr().out
    from grokscope.store.run import Run

    assert Run(tmp_path / "run").meta["compile"] == "default"


# --------------------------------------------------------------------------- real compiles (slow)

REAL_DEVICES = [
    pytest.param("cpu", id="cpu", marks=pytest.mark.slow),
    pytest.param(
        "cuda", id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
    ),
    pytest.param("mps", id="mps", marks=pytest.mark.skipif(not mps_available(), reason="MPS not available")),
]


def _close(a, b, rtol=1e-4, atol=1e-6) -> bool:
    return bool(((a - b).abs() <= atol + rtol * b.abs()).all().all())


@pytest.mark.parametrize("device", REAL_DEVICES)
@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_a_really_compiled_run_matches_the_eager_run_to_float32_tolerance(tmp_path, small, device, mode):
    cfg = apply_overrides(small, {"train.device": device, "train.fast_path": False})
    eager = train(cfg, tmp_path / "eager", progress=False)
    run = train(apply_overrides(cfg, {"train.compile": mode}), tmp_path / "compiled", progress=False)
    assert run.status == "completed"
    if device == "mps":  # not applied there: the eager run, and the note
        assert run.meta["compile"] == "none" and "MPS" in run.meta["compile_note"]
        return
    assert run.meta["compile"] == mode, run.meta.get("compile_note")
    assert float(run.meta["compile_seconds"]) > 0 and int(run.meta["compile_signatures"]) == 2
    m, e = run.metrics, eager.metrics
    assert list(m.columns) == list(e.columns) and list(m.index) == list(e.index)
    assert _close(m[["train_loss", "test_loss"]], e[["train_loss", "test_loss"]])
    a, b = run.load_state_dict(), eager.load_state_dict()
    assert all(_close(a[k], b[k], rtol=1e-3, atol=1e-5) for k in b)


@pytest.mark.slow
def test_a_really_compiled_fast_path_run_and_its_resume_match_eager(tmp_path, small):
    cfg = apply_overrides(small, {"train.compile": "default"})
    eager = train(small, tmp_path / "eager", progress=False)
    cut = train(apply_overrides(cfg, {"train.epochs": 10}), tmp_path / "cut", progress=False)
    config = json.loads((cut.dir / "config.json").read_text())
    config["train"]["epochs"] = 20
    (cut.dir / "config.json").write_text(json.dumps(config))
    resumed = resume(cut.dir, progress=False)
    assert resumed.meta["compile"] == "default" and resumed.meta["forward"] == "fast"
    assert _close(resumed.metrics[["train_loss", "test_loss"]], eager.metrics[["train_loss", "test_loss"]])
    a, b = resumed.load_state_dict(), eager.load_state_dict()
    assert all(_close(a[k], b[k], rtol=1e-3, atol=1e-5) for k in b)


@pytest.mark.slow
def test_a_really_compiled_batched_run_with_dropout_compiles_one_graph_per_shape(tmp_path, small):
    from torch._dynamo.utils import counters

    cfg = apply_overrides(
        small,
        {"train.batch_size": 10, "train.fast_path": False, "model.dropout": 0.1, "train.compile": "reduce-overhead"},
    )
    before = counters["stats"]["unique_graphs"]
    run = train(cfg, tmp_path / "r", progress=False)
    assert run.status == "completed" and run.meta["compile"] == "reduce-overhead"
    assert "compiles as 'default'" in run.meta["compile_note"]
    # two batch shapes in training mode and all pairs in eval mode: three graphs for 20 epochs of 3 updates each
    assert counters["stats"]["unique_graphs"] - before == 3 and run.meta["compile_signatures"] == "3"
