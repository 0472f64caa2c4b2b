import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from grokscope.cli import main
from grokscope.config import apply_overrides
from grokscope.presets import tiny
from grokscope.store import load_run
from grokscope.training import train

BAD_INPUTS = [
    (["train", "--preset", "nope"], "unknown preset 'nope'"),
    (["train", "--preset", "tiny", "--set", "optim.wd=1"], "--set optim.wd: unknown key"),
    (["train", "--preset", "tiny", "--set", "optim.lr=fast"], "optim.lr: expected a number"),
    (["train", "--preset", "tiny", "--set", "train.epochs=0"], "train.epochs: must be"),
    (["train", "--preset", "tiny", "--set", "train.epochs=1.5"], "train.epochs: expected an integer"),
    (["train", "--preset", "tiny", "--set", "task.train_fraction=0"], "task.train_fraction: must be in (0, 1]"),
    (["train", "--preset", "tiny", "--set", "task.train_fraction=1.2"], "task.train_fraction"),
    (["train", "--preset", "tiny", "--set", "task.formula=a/b", "--set", "task.p=15"], "needs a prime p; 15 is not prime"),
    (["train", "--preset", "tiny", "--set", "task.formula=a+*b"], "task.formula"),
    (["train", "--preset", "tiny", "--set", "task.formula=__import__('os')"], "task.formula"),
    (["train", "--preset", "tiny", "--set", "task.p=1000000"], "task.p"),
    (["train", "--preset", "tiny", "--set", "model.act_fn=tanh"], "model.act_fn"),
    (["train", "--preset", "tiny", "--set", "nonsense"], "expected key=value"),
    (["train", "--preset", "tiny", "--epochs", "-3"], "train.epochs"),
    (["train", "--preset", "tiny", "--epochs", "many"], "invalid int value"),
    (["train"], "give --preset NAME or --config FILE"),
    (["train", "--config", "/nonexistent/config.json"], "cannot read"),
    (["train", "--resume", "/nonexistent/run"], "no such run directory"),
    (["show", "/nonexistent/run"], "no such run directory"),
    (["presets", "nope"], "unknown preset"),
    (["frobnicate"], "invalid choice"),
]


@pytest.mark.parametrize("argv, message", BAD_INPUTS, ids=[" ".join(a)[:60] for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) if argv[0] == "frobnicate" or "many" in argv else _noop():
        code = main(argv)
        assert code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert "Traceback" not in err
    assert os.listdir(tmp_path) == []  # nothing created


class _noop:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_errors_on_a_directory_that_is_not_a_run_change_nothing(tmp_path, capsys):
    folder = tmp_path / "notarun"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    before = sorted(p.name for p in folder.iterdir())
    assert main(["train", "--resume", str(folder)]) == 2
    assert main(["train", "--preset", "tiny", "--out", str(folder)]) == 2
    assert main(["show", str(folder)]) == 2
    assert sorted(p.name for p in folder.iterdir()) == before and (folder / "keep.txt").read_text() == "precious"
    err = capsys.readouterr().err
    assert "not a grokscope run" in err and "not an empty directory" in err


def test_training_into_an_existing_run_is_refused(tmp_path, capsys):
    run = train(tiny(), tmp_path / "r", progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in run.dir.rglob("*")}
    assert main(["train", "--preset", "tiny", "--out", str(run.dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in run.dir.rglob("*")} == before


def test_train_show_and_presets_commands(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--set", "optim.weight_decay=0.5", "--epochs", "20", "--out", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"run:        {out}" in text and "status:     completed" in text
    run = load_run(out)
    assert run.config.optim.weight_decay == 0.5 and run.config.train.epochs == 20
    assert main(["show", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["optim"]["weight_decay"] == 0.5 and shown["meta"]["status"] == "completed"
    assert main(["presets"]) == 0
    listing = capsys.readouterr().out
    assert "nanda-mainline" in listing and "quick" in listing
    assert main(["presets", "quick"]) == 0
    assert json.loads(capsys.readouterr().out)["task"]["p"] == 53


def test_python_dash_m_and_help():
    proc = subprocess.run([sys.executable, "-m", "grokscope", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "train" in proc.stdout and "presets" in proc.stdout


def _wait_until_training(proc: subprocess.Popen, out: Path, started: float, timeout: float = 120.0) -> None:
    """Return once the process writes metrics (the loop has started or resumed) or has exited: kills then land
    inside training, whatever the machine's start-up time."""
    wal = out / "metrics.sqlite-wal"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if wal.stat().st_mtime > started:
                return
        except FileNotFoundError:
            pass
        time.sleep(0.01)


def _kill_and_resume(out: Path, cfg_args: list[str], rng: random.Random, kills: int) -> int:
    """Start training, SIGKILL it at random moments, resume until it completes. Returns the kills delivered."""
    cmd = [sys.executable, "-m", "grokscope", "train", *cfg_args, "--out", str(out), "--quiet"]
    delivered = 0
    for attempt in range(kills + 50):
        started = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if delivered < kills:
            _wait_until_training(proc, out, started)
            time.sleep(rng.uniform(0.0, 1.5))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                delivered += 1
        _, err = proc.communicate(timeout=600)
        if proc.returncode == 0:
            return delivered
        if proc.returncode != -signal.SIGKILL:
            raise AssertionError(f"exit {proc.returncode}: {err.decode()}")
        if (out / "config.json").exists():
            cmd = [sys.executable, "-m", "grokscope", "train", "--resume", str(out), "--quiet"]
    raise AssertionError("run never completed")


def _assert_same_run(a, b):
    assert a.metrics.equals(b.metrics)
    assert a.checkpoints == b.checkpoints
    for step in a.checkpoints:
        sa, sb = a.load_state_dict(step), b.load_state_dict(step)
        assert all(torch.equal(sa[k], sb[k]) for k in sa), step
    assert not [p for p in b.dir.rglob("*.tmp")]


def _sigkill_loop(tmp_path, kills_per_run: int, runs: int, seed: int):
    epochs = 600
    args = ["--preset", "tiny", "--set", f"train.epochs={epochs}", "--set", "train.checkpoint_every=20"]
    reference = train(apply_overrides(tiny(), {"train.epochs": epochs, "train.checkpoint_every": 20}), tmp_path / "ref", progress=False)
    rng = random.Random(seed)
    total = 0
    for i in range(runs):
        out = tmp_path / f"killed{i}"
        total += _kill_and_resume(out, args, rng, kills_per_run)
        _assert_same_run(reference, load_run(out))
    return total


def test_sigkill_at_random_moments_then_resume_gives_the_identical_run(tmp_path):
    assert _sigkill_loop(tmp_path, kills_per_run=2, runs=1, seed=0) >= 1


@pytest.mark.slow
def test_sigkill_loop_fifty_kills(tmp_path):
    delivered = _sigkill_loop(tmp_path, kills_per_run=5, runs=10, seed=1)
    print(f"SIGKILL loop: {delivered} kills delivered, all 10 runs identical to the uninterrupted run")
    assert delivered >= 40
