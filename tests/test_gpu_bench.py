"""The benchmarks and the analysis commands on every device present (issue 20, items 1 and 5).

``benchmarks/gpu.py``, ``grokscope bench --device``, ``analyze``/``patch``/``probe``/``sae --device``: on the CPU
always, on CUDA and MPS where they exist (elsewhere those cases skip with "CUDA not available" / "MPS not available",
the skips CI allows). On the CPU ``--device cpu`` changes nothing, bit for bit; elsewhere the analysis equals the
CPU's to rounding. A device that is not here is one line and exit code 2.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from grokscope.analysis.run import analyze_run
from grokscope.cli import main
from grokscope.store import load_run

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from grokscope.config import apply_overrides
    from grokscope.presets import tiny
    from grokscope.training import train

    cfg = apply_overrides(
        tiny(), {"task.p": 11, "train.epochs": 40, "train.checkpoint_every": 20, "train.device": "cpu"}
    )
    return train(cfg, tmp_path_factory.mktemp("gpubench") / "run", progress=False).dir


def _gpu_module():
    spec = importlib.util.spec_from_file_location("gpu_bench", ROOT / "benchmarks" / "gpu.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- benchmarks/gpu.py


def test_gpu_benchmark_quick_prints_every_row(device, tmp_path, capsys):
    gpu = _gpu_module()
    out = tmp_path / "gpu.json"
    assert gpu.main(["--quick", "--device", device, "--json", str(out), "--window", "2", "--run-epochs", "10"]) == 0
    text = capsys.readouterr().out
    for row in (
        "mainline step (ms/epoch)",
        "mainline 40k epochs (s)",
        "ensemble K=1 aggregate",
        "ensemble K=4 aggregate",
        "phase diagram, 4 cells",
        "phase diagram, 1,024 cells",
        "TransformerLens demo loop",
        "K_max at p=113, 16 GB",
        "K_max at p=113, 80 GB",
        "memory check",
    ):
        assert row in text, row
    data = json.loads(out.read_text())
    assert data["device"].startswith(device) and data["quick"] is True
    names = [r["measurement"] for r in data["rows"]]
    assert "mainline 40k epochs (s)" in names and "K_max at p=113, 80 GB" in names
    # the targets are not judged at the tiny sizes: no PASS or FAIL, and each target row says why
    assert {r["result"] for r in data["rows"]} <= {"", "not measured", "stopped"}
    assert all(r["note"].startswith("--quick") for r in data["rows"] if r["target"])
    assert [r["k"] for r in data["ensembles"]] == [1, 2, 4] and all(r["eps"] > 0 for r in data["ensembles"])
    model = data["memory_model"]
    assert model["k_max_80gb"] > model["k_max_16gb"] > 0
    if device == "cuda":  # the memory model checked against the allocator's peak
        assert 0.05 < data["memory_check"]["measured_over_model"] < 20


def test_memory_model_counts_the_shapes():
    gpu = _gpu_module()
    from grokscope.presets import nanda_mainline

    parts = gpu.member_bytes(nanda_mainline())
    n_params = parts["weights+grads+adamw"] // 16  # 16 bytes a parameter: weight, gradient, two AdamW moments
    assert parts["weights+grads+adamw"] % 16 == 0 and 200_000 < n_params < 300_000
    assert parts["activations"] > parts["tables"] > 0
    per = sum(parts.values())
    assert gpu.k_max(per, 16 * gpu.GB) == int(16 * gpu.GB * 0.9 // per)
    assert gpu.verdict(10.0, 30.0, at_most=True, quick=False) == "PASS"
    assert gpu.verdict(40.0, 30.0, at_most=True, quick=False) == "FAIL"
    assert gpu.verdict(60.0, 50.0, at_most=False, quick=False) == "PASS"
    assert gpu.verdict(None, 50.0, at_most=False, quick=False) == "not measured"
    assert gpu.verdict(60.0, 50.0, at_most=False, quick=True) == "not measured"


def test_gpu_benchmark_missing_device_is_one_line(capsys):
    assert _gpu_module().main(["--quick", "--device", "cuda:99"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "cuda:99" in err and "Traceback" not in err


# --------------------------------------------------------------------------- grokscope bench --device


def test_bench_runs_every_row_on_the_device(device, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = [
        "bench",
        "--quick",
        "--no-tl",
        "--device",
        device,
        "--epochs",
        "2",
        "--repeats",
        "1",
        "--run-epochs",
        "10",
        "--agree-steps",
        "5",
        "--scaling",
        "11",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    text = capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["device"].startswith(device) and f"device {data['device']}" in text.splitlines()[0]
    assert [r["name"][:3] for r in data["rows"]] == ["(a)", "(b)", "(c)"]
    assert all(r["train_eps"] > 0 for r in data["rows"])
    assert data["agreement"]["rel_diff"] <= 1e-6


def test_bench_loops_place_nothing_off_the_device(device):
    """The contenders train on the device of their model and task: the weights stay there and the loss is finite."""
    from grokscope.bench_loops import DefaultLoop, ReferenceLoop, clock, loop_rate
    from grokscope.config import apply_overrides
    from grokscope.models import build_model
    from grokscope.presets import tiny
    from grokscope.tasks import make_task, task_to

    dev = torch.device(device)
    cfg = apply_overrides(tiny(), {"task.p": 11, "train.device": device})
    task = task_to(make_task(cfg.task), dev)
    for cls in (ReferenceLoop, DefaultLoop):
        model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx).to(dev)
        loop = cls(cfg, task, model)
        assert math.isfinite(loop.epoch()) and loop_rate(loop, 2, dev) > 0
        assert all(p.device.type == dev.type for p in model.parameters())
    assert clock(dev) <= clock(dev)


def test_bench_missing_device_is_one_line(capsys):
    assert main(["bench", "--quick", "--device", "cuda:99"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--device cuda:99" in err


# --------------------------------------------------------------------------- the analysis commands --device


def _numbers(tree, prefix=""):
    """The numeric leaves of a JSON-like tree, keyed by their path."""
    if isinstance(tree, dict):
        return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}/{key}").items()}
    if isinstance(tree, list):
        return {k: v for i, sub in enumerate(tree) for k, v in _numbers(sub, f"{prefix}/{i}").items()}
    return {prefix: float(tree)} if isinstance(tree, (int, float)) and not isinstance(tree, bool) else {}


def test_analysis_on_the_device_equals_the_cpu(device, run_dir):
    run = load_run(run_dir)
    _, plain = analyze_run(run, write=False)
    _, placed = analyze_run(run, write=False, device=torch.device(device))
    if device == "cpu":  # nothing moves: bit for bit
        assert json.dumps(placed, sort_keys=True) == json.dumps(plain, sort_keys=True)
        return
    a, b = _numbers(plain), _numbers(placed)
    assert a.keys() == b.keys() and placed["key_frequencies"] == plain["key_frequencies"]
    bad = [k for k in a if not (math.isnan(a[k]) and math.isnan(b[k])) and abs(a[k] - b[k]) > 1e-6 + 1e-3 * abs(a[k])]
    assert not bad, bad[:5]


def test_analyze_cli_device_cpu_writes_the_same_file(run_dir, capsys):
    assert main(["analyze", str(run_dir), "--quiet"]) == 0
    before = (run_dir / "analysis.json").read_text()
    assert main(["analyze", str(run_dir), "--quiet", "--device", "cpu"]) == 0
    assert (run_dir / "analysis.json").read_text() == before


def test_interp_commands_run_on_the_device(device, run_dir, capsys):
    common = [str(run_dir), "--key-freqs", "1,2", "--no-write", "--device", device]
    assert main(["patch", *common, "--n", "8", "--random-clusters", "2", "--sweeps", "neurons"]) == 0
    assert main(["probe", *common]) == 0
    assert main(["sae", *common, "--train-steps", "20", "--features", "8", "--k", "2"]) == 0
    assert "recovered" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["analyze", "patch", "probe", "sae"])
def test_analysis_commands_missing_device_is_one_line(command, run_dir, capsys):
    assert main([command, str(run_dir), "--device", "cuda:99"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--device cuda:99" in err and "Traceback" not in err
