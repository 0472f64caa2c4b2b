"""``grokscope run``, the main job, at tiny size: exit code, the printed summary, analysis.json, phases.json and
report.html, each checked against numbers derived here from the stored run (read with sqlite3 and safetensors, not
through the code that printed them) or recomputed from the final checkpoint with the general forward."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import re
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch

from grokscope.cli import main
from grokscope.store import load_run
from grokscope.training import checkpoint_epochs

pytest.importorskip("plotly")  # the report needs the plot extra (installed by the dev extra and CI)

SMALL = [
    "--preset",
    "tiny",
    "--set",
    "train.epochs=70",
    "--set",
    "train.log_every=7",
    "--set",
    "train.measure_every=14",
    "--set",
    "train.checkpoint_every=35",
]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = main(argv)
    out = capsys.readouterr()
    return rc, out.out, out.err


def _stored_rows(run_dir: Path) -> dict[str, dict[int, float]]:
    """metric name -> {step: value}, read from metrics.sqlite with sqlite3 (not through grokscope's store)."""
    con = sqlite3.connect(f"file:{run_dir / 'metrics.sqlite'}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT step, name, value FROM metrics").fetchall()
    finally:
        con.close()
    out: dict[str, dict[int, float]] = {}
    for step, name, value in rows:
        out.setdefault(name, {})[int(step)] = value
    return out


def _field(text: str, pattern: str) -> re.Match:
    m = re.search(pattern, text, re.M)
    assert m, f"no line matching {pattern!r} in:\n{text}"
    return m


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """One `grokscope run` of the tiny preset (70 epochs, no grokking), shared by the tests of this module."""
    out_dir = tmp_path_factory.mktemp("run") / "tiny"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        rc = main(["run", *SMALL, "--out", str(out_dir), "--quiet"])
    return {"rc": rc, "out": stdout.getvalue(), "err": stderr.getvalue(), "dir": out_dir}


def test_run_exits_0_and_trains_with_the_stop_rule_of_the_main_job(tiny_run):
    assert tiny_run["rc"] == 0, tiny_run["err"]
    first = tiny_run["out"].splitlines()[0]
    assert first == "training tiny: a+b mod 13, up to 70 epochs, stopping at 1.5 x the grok epoch"
    stored = json.loads((tiny_run["dir"] / "config.json").read_text())
    assert stored["train"]["stop_after_grok"] == 1.5  # added by `run` when --epochs is not given
    assert stored["train"]["epochs"] == 70 and stored["task"]["p"] == 13 and stored["train"]["log_every"] == 7


def test_run_summary_agrees_with_the_stored_metrics(tiny_run):
    out, run_dir = tiny_run["out"], tiny_run["dir"]
    rows = _stored_rows(run_dir)
    steps = sorted(rows["train_loss"])
    assert steps == list(range(0, 71, 7))  # log_every 7, the final epoch 70 on the schedule
    last = steps[-1]
    assert _field(out, r"^status:\s+(\S+)").group(1) == "completed"
    m = _field(out, r"^epochs:\s+(\d+) of (\d+)$")
    assert (int(m.group(1)), int(m.group(2))) == (70, 70)
    for split in ("train", "test"):
        m = _field(out, rf"^{split}:\s+acc (\S+)\s+loss (\S+)$")
        assert m.group(1) == f"{rows[f'{split}_acc'][last]:.4f}"
        assert m.group(2) == f"{rows[f'{split}_loss'][last]:.3e}"
        hits = [s for s in steps if rows[f"{split}_acc"][s] >= 0.99]
        first = _field(out, rf"^{split} acc >= 99% first at epoch (\S+)$").group(1)
        assert first == (str(hits[0]) if hits else "never")
    # the tiny model fits its training half within 70 epochs and does not generalise: both branches are exercised
    assert _field(out, r"^train acc >= 99% first at epoch (\S+)$").group(1) != "never"
    assert _field(out, r"^test acc >= 99% first at epoch (\S+)$").group(1) == "never"
    ckpt_files = sorted((run_dir / "checkpoints").glob("step_*.safetensors"))
    assert _field(out, r"^checkpoints: (\d+)$").group(1) == str(len(ckpt_files))
    stored = load_run(run_dir).config.train
    assert [int(p.stem[5:]) for p in ckpt_files] == sorted(checkpoint_epochs(stored)) == [0, 1, 2, 4, 8, 16, 32, 35, 70]
    assert "(fast forward: one-layer transformer on [a, b, =] inputs)" in _field(out, r"^time:\s+.*$").group(0)


def test_run_final_numbers_match_the_final_checkpoint_under_the_general_forward(tiny_run):
    """The stored final losses and accuracies (fast path in training) equal a recomputation here: the final checkpoint
    loaded into the general model, float64 cross-entropy, argmax accuracy."""
    run = load_run(tiny_run["dir"])
    rows = _stored_rows(run.dir)
    task = run.task()
    model = run.load_model(70)
    for split, x, y in (("train", task.train_tokens, task.train_labels), ("test", task.test_tokens, task.test_labels)):
        with torch.no_grad():
            logits = model.forward_all(x)[:, -1].double()
        loss = torch.nn.functional.cross_entropy(logits, y).item()
        acc = (logits.argmax(-1) == y).double().mean().item()
        assert rows[f"{split}_loss"][70] == pytest.approx(loss, rel=1e-5)
        assert rows[f"{split}_acc"][70] == acc


def test_run_writes_analysis_json_that_agrees_with_the_run(tiny_run):
    run_dir = tiny_run["dir"]
    data = json.loads((run_dir / "analysis.json").read_text())
    rows = _stored_rows(run_dir)
    run = load_run(run_dir)
    assert data["step"] == 70 and data["checkpoints"] == run.checkpoints and data["p"] == 13
    assert data["run"] == str(run_dir)
    assert data["test_loss"] == pytest.approx(rows["test_loss"][70], rel=1e-5)  # recomputed by the analysis
    # sum of squared parameters, from the checkpoint file itself
    from safetensors.torch import load_file

    weights = load_file(run_dir / "checkpoints" / "step_00000070.safetensors")
    params = {n for n, _ in run.load_model(70).named_parameters()}
    assert data["sum_sq_weights"] == pytest.approx(
        sum(float((weights[n].double() ** 2).sum()) for n in params), rel=1e-9
    )
    # the second pass (key frequencies fixed from the final checkpoint) stored one row per checkpoint
    assert data["fixed_key_measures"]["steps"] == len(run.checkpoints)
    assert sorted(rows["restricted_loss_fixed"]) == run.checkpoints
    phases = json.loads((run_dir / "phases.json").read_text())
    assert phases == data["phases"] and phases["grok_epoch"] is None
    # the printed analysis line carries the analysis.json numbers
    line = _field(
        tiny_run["out"], r"^key frequencies \(W_L_dft\): .*; restricted loss (\S+) vs test loss (\S+);"
    ).groups()
    assert float(line[0]) == pytest.approx(data["restricted_loss"], rel=1e-3) and float(line[1]) == pytest.approx(
        data["test_loss"], rel=1e-3
    )
    assert _field(tiny_run["out"], r"^analysis:\s+(\S+)").group(1) == str(run_dir / "analysis.json")


def _figures(html: str) -> dict[str, dict]:
    found = re.findall(
        r'<script type="application/json" class="figure-data" data-target="plot-([^"]+)">(.*?)</script>', html, re.S
    )
    return {key: json.loads(text) for key, text in found}


def _array(v) -> np.ndarray:
    if isinstance(v, dict):  # plotly's typed array: {"dtype": "f8", "bdata": base64}
        return np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
    return np.asarray(v, dtype=float)


def test_run_writes_a_report_whose_loss_curve_is_the_stored_metrics(tiny_run):
    run_dir = tiny_run["dir"]
    path = run_dir / "report.html"
    assert _field(tiny_run["out"], r"^report:\s+(\S+)$").group(1) == str(path)
    html = path.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<title>grokscope report — tiny</title>" in html
    figures = _figures(html)
    assert "curves" in figures
    rows = _stored_rows(run_dir)
    steps = sorted(rows["train_loss"])
    traces = [t for t in figures["curves"]["data"] if t.get("name") in ("train", "test")]
    losses = {name: [t for t in traces if t["name"] == name][0] for name in ("train", "test")}  # first: the loss panel
    for name, trace in losses.items():
        assert _array(trace["x"]).tolist() == steps
        assert _array(trace["y"]).tolist() == [rows[f"{name}_loss"][s] for s in steps]


def test_run_with_epochs_trains_exactly_that_many_and_drops_the_stop_rule(tmp_path, capsys):
    rc, out, err = _run(
        [
            "run",
            "--preset",
            "tiny",
            "--epochs",
            "9",
            "--set",
            "train.measure_every=0",
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ],
        capsys,
    )
    assert rc == 0, err
    assert out.splitlines()[0] == "training tiny: a+b mod 13, up to 9 epochs"
    assert json.loads((tmp_path / "r" / "config.json").read_text())["train"]["stop_after_grok"] is None
    assert sorted(_stored_rows(tmp_path / "r")["train_loss"]) == [0, 5, 9]
    assert (tmp_path / "r" / "analysis.json").is_file() and (tmp_path / "r" / "report.html").is_file()


def test_run_with_a_task_outside_the_additive_basis_still_summarises(tmp_path, capsys):
    """a/b mod 13 (rows b = 0 left out): the analysis runs in the discrete-log basis, names it, and runs the
    fixed-key pass in it; exit 0, report written."""
    rc, out, err = _run(
        [
            "run",
            "--preset",
            "tiny",
            "--set",
            "task.formula=a/b",
            "--epochs",
            "6",
            "--set",
            "train.measure_every=0",
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ],
        capsys,
    )
    assert rc == 0, err
    data = json.loads((tmp_path / "r" / "analysis.json").read_text())
    assert data["step"] == 6 and data["basis"]["name"] == "dlog" and data["basis"]["n"] == 12
    assert data["fixed_key_measures"]["steps"] == len(data["checkpoints"])  # the fixed-key pass, in the dlog basis
    assert (tmp_path / "r" / "report.html").is_file()


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["run", "--preset", "no-such-preset"], "unknown preset"),
        (["run", "--preset", "tiny", "--set", "task.p=1"], "task.p"),
        (["run", "--preset", "tiny", "--set", "train.nope=3"], "train.nope"),
    ],
)
def test_run_user_errors_are_one_line_with_exit_code_2_and_write_nothing(tmp_path, capsys, argv, needle):
    rc, out, err = _run([*argv, "--out", str(tmp_path / "r")], capsys)
    assert rc == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("grokscope run: error: ") and needle in err, err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_run_stops_at_one_and_a_half_times_the_grok_epoch(tmp_path, capsys):
    """A small task that groks (a+b mod 23 on 80% of the pairs, about 270 epochs): `run` stops at the first logged
    epoch >= 1.5 x the first epoch with test accuracy >= 99%, and says so."""
    rc, out, err = _run(
        [
            "run",
            "--preset",
            "tiny",
            "--set",
            "task.p=23",
            "--set",
            "task.train_fraction=0.8",
            "--set",
            "train.epochs=1000",
            "--set",
            "train.log_every=10",
            "--set",
            "train.measure_every=50",
            "--set",
            "train.checkpoint_every=100",
            "--out",
            str(tmp_path / "r"),
            "--quiet",
        ],
        capsys,
    )
    assert rc == 0, err
    rows = _stored_rows(tmp_path / "r")
    steps = sorted(rows["test_acc"])
    grok = next(s for s in steps if rows["test_acc"][s] >= 0.99)
    stop = next(s for s in steps if s >= 1.5 * grok)
    assert steps[-1] == stop < 1000
    assert _field(out, r"^test acc >= 99% first at epoch (\d+)$").group(1) == str(grok)
    assert _field(out, r"^epochs:\s+(\d+) of 1000$").group(1) == str(stop)
    assert f"stopped at epoch {stop} = 1.5 x grok epoch {grok}" in out
    data = json.loads((tmp_path / "r" / "analysis.json").read_text())
    assert data["key_frequencies"] and data["phases"]["grok_epoch"] is not None
