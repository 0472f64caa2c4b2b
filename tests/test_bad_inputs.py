"""Malformed inputs across the CLI, configs, sweep specs, formulas and run folders: each gives exactly one line on
stderr and exit code 2, never a traceback, and creates or changes nothing on disk."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from grokscope.cli import main

DEEP = "[" * 50_000  # json.loads recurses: a RecursionError unless caught


@dataclass
class Row:
    argv: list[str]
    message: str  # a substring of the one stderr line
    files: dict[str, str | bytes] = field(default_factory=dict)  # written into the working directory first

    @property
    def id(self) -> str:
        shown = " ".join(self.argv)[:60]
        for name, content in self.files.items():
            shown += f" [{name}: {content[:30]!r}]"
        return shown


def tiny(*args: str) -> list[str]:
    return ["train", "--preset", "tiny", *args]


def cfg(obj) -> dict[str, str]:
    return {"bad.json": obj if isinstance(obj, str) else json.dumps(obj)}


def spec(obj) -> dict[str, str]:
    return {"spec.json": obj if isinstance(obj, str) else json.dumps(obj)}


GOOD_SPEC = {"name": "s", "base": "tiny", "axes": {"optim.weight_decay": [0.0, 1.0]}}
BAD_RUN_CONFIG = {"badrun/config.json": '{"name": "x", "task": {"p": '}  # cut short

ROWS = [
    # ---- the CLI and --set overrides
    Row(["frobnicate"], "invalid choice"),
    Row(["presets", "nope"], "unknown preset 'nope'"),
    Row(["train"], "give --preset NAME or --config FILE"),
    Row(["train", "--preset", "nope"], "unknown preset 'nope'"),
    Row(tiny("--set", "optim.wd=1"), "--set optim.wd: unknown key"),
    Row(tiny("--set", "task=5"), "--set task: unknown key"),
    Row(tiny("--set", "nonsense"), "expected key=value"),
    Row(tiny("--set", "optim.lr=fast"), "optim.lr: expected a number"),
    Row(tiny("--set", "optim.lr=NaN"), "optim.lr: must be a finite number > 0"),
    Row(tiny("--set", "optim.lr=-1"), "optim.lr: must be a finite number > 0"),
    Row(tiny("--set", "optim.weight_decay=-0.5"), "optim.weight_decay: must be a finite number >= 0"),
    Row(tiny("--set", "optim.betas=[0.9]"), "optim.betas: expected a list of 2 numbers"),
    Row(tiny("--set", "optim.betas=[0.9, 1.0]"), "optim.betas: must be two numbers in [0, 1)"),
    Row(tiny("--set", "train.epochs=0"), "train.epochs: must be an integer in 1..10000000, got 0"),
    Row(tiny("--epochs", "0"), "train.epochs: must be an integer in 1..10000000, got 0"),
    Row(tiny("--epochs", "-3"), "train.epochs: must be"),
    Row(tiny("--epochs", "99999999999"), "train.epochs: must be an integer in 1..10000000"),
    Row(tiny("--epochs", "many"), "invalid int value: 'many'"),
    Row(tiny("--set", "train.epochs=1.5"), "train.epochs: expected an integer, got 1.5"),
    Row(tiny("--set", "train.log_every=0"), "train.log_every: must be >= 1"),
    Row(tiny("--set", "train.loss_dtype=float16"), "train.loss_dtype: must be 'float32' or 'float64'"),
    Row(tiny("--set", "task.train_fraction=0"), "task.train_fraction: must be in (0, 1]"),
    Row(tiny("--set", "task.train_fraction=1.2"), "task.train_fraction: must be in (0, 1]"),
    Row(tiny("--set", "task.p=1000000"), "task.p: must be an integer in 3..2000, got 1000000"),
    Row(tiny("--set", "task.p=1e400"), "task.p: expected an integer, got inf"),
    Row(tiny("--set", "task.p=2"), "task.p: must be an integer in 3..2000, got 2"),
    Row(tiny("--set", "task.p=true"), "task.p: expected an integer, got True"),
    Row(tiny("--set", "task.p=" + DEEP), "task.p: expected an integer"),
    Row(tiny("--set", "task.kind=s6"), "task.kind: unknown task kind 's6'"),
    Row(
        tiny("--set", "task.split_seed=1180591620717411303424"), "task.split_seed: must be an integer in 0..4294967295"
    ),
    Row(tiny("--set", "model.init_seed=-1"), "model.init_seed: must be an integer in 0..4294967295"),
    Row(tiny("--set", "model.d_model=0"), "model.d_model: must be an integer in 1..65536"),
    Row(tiny("--set", "model.act_fn=tanh"), "model.act_fn: unknown activation 'tanh'"),
    Row(tiny("--set", "model.dropout=1"), "model.dropout: must be in [0, 1)"),
    Row(tiny("--set", "name=../../etc/evil"), "name: must be 1..200 characters without '/'"),
    Row(tiny("--set", "name="), "name: must be 1..200 characters"),
    # ---- formulas
    Row(
        tiny("--set", "task.formula=a/b", "--set", "task.p=15"),
        "task.p: the formula 'a/b' divides, which needs a prime p; 15 is not prime",
    ),
    Row(tiny("--set", "task.formula=a+*b"), "task.formula: unexpected '*'"),
    Row(tiny("--set", "task.formula="), "task.formula: the formula is empty"),
    Row(
        tiny("--set", "task.formula=__import__('os').system('touch pwned')"), "task.formula: unknown name '__import__'"
    ),
    Row(tiny("--set", "task.formula=a.__class__"), "task.formula: unexpected character '.'"),
    Row(tiny("--set", "task.formula=open('x')"), "task.formula: unknown name 'open'"),
    Row(tiny("--set", "task.formula=ａ+b"), "task.formula: unexpected character 'ａ' at position 1"),
    Row(tiny("--set", "task.formula=a**1000"), "task.formula: exponent 1000 is too large"),
    Row(
        tiny("--set", "task.formula=" + "(" * 60 + "a" + ")" * 60),
        "task.formula: the formula nests deeper than 50 levels",
    ),
    Row(tiny("--set", "task.formula=" + "a+" * 150 + "b"), "task.formula: the formula is longer than 200 characters"),
    # ---- config files
    Row(["train", "--config", "/nonexistent/config.json"], "--config /nonexistent/config.json: cannot read"),
    Row(["train", "--config", "."], "--config .: cannot read (Is a directory)"),
    Row(["train", "--config", "bad.json"], "--config bad.json: config: not valid JSON", cfg("{'task': 1}")),
    Row(["train", "--config", "bad.json"], "--config bad.json: config: not valid JSON", cfg("")),
    Row(
        ["train", "--config", "bad.json"], "--config bad.json: config: not a config (JSON nested too deeply)", cfg(DEEP)
    ),
    Row(["train", "--config", "bad.json"], "--config bad.json: not UTF-8 text", {"bad.json": b'{"name": "\xff\xfe"}'}),
    Row(["train", "--config", "bad.json"], "--config bad.json: config: expected an object, got list", cfg([1, 2])),
    Row(
        ["train", "--config", "bad.json"], "--config bad.json: optimizer: unknown field", cfg({"optimizer": {"lr": 1}})
    ),
    Row(
        ["train", "--config", "bad.json"],
        "--config bad.json: task: expected an object, got NoneType",
        cfg({"task": None}),
    ),
    Row(
        ["train", "--config", "bad.json"],
        "--config bad.json: task.p: expected an integer, got 'big'",
        cfg({"task": {"p": "big"}}),
    ),
    Row(
        ["train", "--config", "bad.json"],
        "--config bad.json: task.p: must be an integer in 3..2000, got 1000000000",
        cfg({"task": {"p": 10**9}}),
    ),
    Row(
        ["train", "--config", "bad.json"],
        "--config bad.json: train.epochs: must be an integer in 1..10000000, got 0",
        cfg({"train": {"epochs": 0}}),
    ),
    Row(
        ["train", "--config", "bad.json"],
        "--config bad.json: model.n_layers: expected an integer, got '1'",
        cfg({"model": {"n_layers": "1"}}),
    ),
    Row(
        ["train", "--config", "bad.json"],
        "--config bad.json: task.formula: unexpected character 'α'",
        cfg({"task": {"formula": "α+β"}}),
    ),
    Row(["train", "--config", "bad.json"], "--config bad.json: name: must be 1..200 characters", cfg({"name": "a\nb"})),
    # ---- sweep specs
    Row(["sweep", "nope.json", "--out", "o"], "nope.json: no such sweep spec file"),
    Row(["sweep", "spec.json", "--out", "o"], "spec.json: not valid JSON", spec("{name: s}")),
    Row(["sweep", "spec.json", "--out", "o"], "spec.json: not a sweep spec (JSON nested too deeply)", spec(DEEP)),
    Row(["sweep", "spec.json", "--out", "o"], "spec.json: sweep spec: expected an object, got list", spec([GOOD_SPEC])),
    Row(
        ["sweep", "spec.json", "--out", "o"],
        "spec.json: sweep spec: unknown key 'grid'",
        spec({**GOOD_SPEC, "grid": {}}),
    ),
    Row(
        ["sweep", "spec.json", "--out", "o"],
        "spec.json: name: must be 1..80 characters",
        spec({**GOOD_SPEC, "name": "../x"}),
    ),
    Row(
        ["sweep", "spec.json", "--out", "o"],
        "spec.json: base: unknown preset 'nope'",
        spec({**GOOD_SPEC, "base": "nope"}),
    ),
    Row(
        ["sweep", "spec.json", "--out", "o"],
        "unknown config field 'optim.λ'",
        spec({**GOOD_SPEC, "axes": {"optim.λ": [1]}}),
    ),
    Row(["sweep", "spec.json", "--out", "o"], "seeds: a count must be >= 1, got -1", spec({**GOOD_SPEC, "seeds": -1})),
    Row(
        ["sweep", "spec.json", "--out", "o"],
        "count must be >= 1, got 0",
        spec({**GOOD_SPEC, "axes": {"optim.lr": {"linspace": [0.1, 1, 0]}}}),
    ),
    Row(
        ["sweep", "spec.json", "--out", "o"],
        "task.p: must be an integer in 3..2000, got 5000",
        spec({**GOOD_SPEC, "axes": {"task.p": [13, 5000]}}),
    ),
    Row(
        ["sweep", "spec.json", "--out", "o"],
        "set: train.epochs: must be an integer in 1..10000000, got 0",
        spec({**GOOD_SPEC, "set": {"train.epochs": 0}}),
    ),
    Row(["sweep", "spec.json", "--out", "o", "--workers", "-1"], "--workers: must be >= 0, got -1", spec(GOOD_SPEC)),
    Row(["sweep", "spec.json", "--out", "file.txt"], "file.txt: exists and is not a directory", spec(GOOD_SPEC)),
    Row(["sweep", ".", "--out", "o"], "is a directory, not a sweep spec"),
    Row(["sweep", "json:dumps", "--out", "o"], "json:dumps() failed (TypeError"),
    Row(["sweep", "boom.py", "--out", "o"], "boom.py: importing failed (ZeroDivisionError", {"boom.py": "x = 1 / 0\n"}),
    # ---- run folders
    Row(["show", "/nonexistent/run"], "/nonexistent/run: no such run directory"),
    Row(["show", "notarun"], "notarun: not a grokscope run"),
    Row(["show", "file.txt"], "file.txt: not a grokscope run"),
    Row(["show", "run/.."], "run/..: not a grokscope run"),
    Row(["show", "run/../../../../../../../../etc"], "not a grokscope run"),
    Row(["show", "ранний-прогон"], "ранний-прогон: no such run directory"),
    Row(["show", "badrun"], "badrun/config.json: invalid run config (config: not valid JSON", BAD_RUN_CONFIG),
    Row(
        ["show", "run"],
        "run/checkpoints/step_00000010.safetensors: damaged safetensors file",
        {"run/checkpoints/step_00000010.safetensors": b"garbage"},
    ),
    Row(
        ["show", "run"], "run/metrics.sqlite: damaged metrics database", {"run/metrics.sqlite": b"not a database" * 100}
    ),
    Row(
        ["analyze", "run"],
        "run/checkpoints/step_00000020.safetensors: damaged safetensors file",
        {"run/checkpoints/step_00000020.safetensors": b"\0" * 8},
    ),
    Row(
        ["train", "--resume", "run"],
        "run/state.safetensors: damaged safetensors file",
        {"run/state.safetensors": b"{}"},
    ),
    Row(["train", "--resume", "/nonexistent/run"], "no such run directory"),
    Row(["train", "--resume", "notarun"], "notarun: not a grokscope run"),
    Row(["train", "--resume", "badrun"], "badrun/config.json: invalid run config", BAD_RUN_CONFIG),
    Row(["train", "--resume", "run", "--epochs", "5"], "--resume continues a run with its own config"),
    Row(tiny("--out", "run"), "run: already holds a run"),
    Row(tiny("--out", "notarun"), "notarun: exists and is not an empty directory"),
    Row(tiny("--out", "file.txt"), "file.txt: exists and is not an empty directory"),
    Row(tiny("--out", "file.txt/run"), "file.txt/run: cannot create the run directory (Not a directory)"),
    Row(["analyze", "notarun"], "notarun: not a grokscope run"),
    Row(["analyze", "run", "--step", "999"], "no checkpoint at step 999 (nearest: 20)"),
    Row(["analyze", "run", "--step", "-1"], "no checkpoint at step -1 (nearest: 0)"),
    Row(["analyze", "run", "--step", "x"], "argument --step: invalid int value: 'x'"),
    Row(["analyze", "run", "--key-freqs", "x,y"], "--key-freqs: expected comma-separated integers"),
    Row(["report", "notarun"], "notarun: not a grokscope run"),
    Row(["report", "badrun"], "badrun/config.json: invalid run config", BAD_RUN_CONFIG),
    Row(["serve", "missing"], "missing: no such directory"),
    Row(["serve", ".", "--port", "70000"], "--port 70000: must be in 0..65535"),
    Row(["serve", ".", "--host", "0.0.0.0", "--port", "0"], "refusing to bind 0.0.0.0: not a loopback address"),
    Row(["patch", "run", "--step", "999", "--key-freqs", "1"], "no checkpoint at step 999"),
    Row(["patch", "run", "--key-freqs", "1", "--n", "0"], "--n must be >= 1"),
    Row(["patch", "run", "--key-freqs", "1", "--sweeps", "bogus"], "--sweeps: unknown ['bogus']"),
    Row(["probe", "run", "--key-freqs", "100"], "--key-freqs: frequencies must be in 1..6, got [100]"),
    Row(["probe", "run", "--key-freqs", "1", "--steps", "0,999"], "--steps: no checkpoint at [999]"),
    Row(["probe", "run", "--key-freqs", "1", "--steps", "every:0"], "--steps every:N needs N >= 1"),
    Row(["sae", "run", "--key-freqs", "1", "--features", "0"], "n_features"),
    Row(["sae", "notarun"], "notarun: not a grokscope run"),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small finished run (tiny, 20 epochs; checkpoints 0, 1, 2, 4, 8, 10, 20), copied into each test."""
    from grokscope import apply_overrides, train
    from grokscope.presets import tiny as tiny_preset

    out = tmp_path_factory.mktemp("bad-inputs") / "run"
    train(
        apply_overrides(tiny_preset(), {"train.epochs": 20, "train.checkpoint_every": 10, "train.measure_every": 10}),
        out,
        progress=False,
    )
    return out


def snapshot(root: Path) -> dict[str, str]:
    """Every path under root with its content hash (SQLite's shared-memory file and an empty WAL, which any reader of a
    WAL database may create, hold no data and are left out)."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.name.endswith("-shm") or (p.name.endswith("-wal") and p.stat().st_size == 0):
            continue
        out[p.relative_to(root).as_posix()] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_the_table_is_large_and_covers_every_area():
    assert len(ROWS) >= 45
    commands = {r.argv[0] for r in ROWS}
    assert {"train", "sweep", "show", "analyze", "report", "serve", "patch", "probe", "sae", "presets"} <= commands
    assert sum("--config" in r.argv for r in ROWS) >= 10 and sum(r.argv[0] == "sweep" for r in ROWS) >= 10


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_gives_one_line_exit_2_and_changes_nothing(row, trained, tmp_path, monkeypatch, capsys):
    shutil.copytree(trained, tmp_path / "run")
    (tmp_path / "notarun").mkdir()
    (tmp_path / "notarun" / "keep.txt").write_text("precious")
    (tmp_path / "file.txt").write_text("a file, not a directory")
    for name, content in row.files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = main(row.argv)
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        code = e.code
    _, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2, (code, err[-2000:])
    assert "Traceback" not in err
    assert len(lines) == 1, err[-2000:]
    assert row.message in lines[0], lines[0]
    assert lines[0].startswith(f"grokscope {row.argv[0]}") or lines[0].startswith("grokscope: error"), lines[0]
    assert snapshot(tmp_path) == before
