"""The local sweep executor: runs, index, resumability (including killing the driver), packing, errors."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from faults_util import interrupted_at_update

from grokscope.cli import main
from grokscope.store.run import Run
from grokscope.sweep.index import SweepIndex, load_sweep, read_cell_outcome
from grokscope.sweep.jobs import plan_jobs, split_evenly
from grokscope.sweep.layout import SweepDir, SweepError
from grokscope.sweep.local import plan_sweep, run_sweep
from grokscope.sweep.outcome import PHASES, outcome_from_frame
from grokscope.sweep.spec import expand, make_spec

SPEC = dict(name="t", base="tiny", axes={"optim.weight_decay": [0.0, 1.0]}, seeds=2, outcome={"tau": 10})


def small_spec(**kw):
    return make_spec(**{**SPEC, **kw})


@pytest.fixture(scope="module")
def done_sweep(tmp_path_factory):
    """A 2 x 2-seed tiny sweep run once in this process (workers=0) with ensembles."""
    out = tmp_path_factory.mktemp("sweep") / "s"
    res = run_sweep(small_spec(), out, workers=0, progress=False, log=lambda s: None)
    return out, res


def test_sweep_runs_every_cell_and_indexes_it(done_sweep):
    out, res = done_sweep
    spec = small_spec()
    cells = expand(spec)
    df = res.frame
    assert list(df["name"]) == [c.name for c in cells]
    assert set(df["status"]) == {"completed"} and res.ran == 4 and not res.errors
    assert set(df["phase"]) <= set(PHASES)
    assert list(df["optim.weight_decay"]) == [0.0, 0.0, 1.0, 1.0] and list(df["seed"]) == [0, 1, 0, 1]
    # the index agrees with the outcome computed from each run directory
    for c in cells:
        run = Run(Path(out) / "cells" / c.name)
        assert run.config == c.config and run.status == "completed"
        o = outcome_from_frame(run.metrics, epochs=run.config.train.epochs, tau=10)
        row = df[df["name"] == c.name].iloc[0]
        assert row["phase"] == o.phase
        assert row["final_test_acc"] == pytest.approx(o.final["test_acc"])
        assert (row["train_epoch"] if not _na(row["train_epoch"]) else None) == o.train_epoch
    # the DataFrame round trip through load_sweep / CSV, and SQL on the grid view
    assert load_sweep(out)["name"].tolist() == df["name"].tolist()
    with SweepIndex(Path(out) / "index.sqlite", readonly=True) as idx:
        q = idx.query('SELECT "optim.weight_decay" AS wd, count(*) AS n FROM grid GROUP BY wd ORDER BY wd')
        assert q.values.tolist() == [[0.0, 2], [1.0, 2]]
    # events: one start, jobs, four cells, one end
    kinds = [e["event"] for e in SweepDir(out).events()]
    assert kinds.count("start") == 1 and kinds.count("cell") == 4 and kinds[-1] == "end"


def _na(v):
    return v is None or str(v) == "<NA>"


def _fingerprint(out: Path) -> dict[str, str]:
    return {
        p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted((out / "cells").rglob("*"))
        if p.is_file() and not p.name.endswith((".lock", "-shm", "-wal"))
    }


def test_rerun_skips_finished_cells(done_sweep):
    out, _ = done_sweep
    before = _fingerprint(out)
    res = run_sweep(small_spec(), out, workers=0, progress=False, log=lambda s: None)
    assert res.ran == 0 and res.skipped == 4
    assert _fingerprint(out) == before
    # a sweep that grows (one more seed) trains only the new cells
    res = run_sweep(small_spec(seeds=3), out, workers=0, progress=False, log=lambda s: None)
    assert res.ran == 2 and len(res.frame) == 6
    assert {k: v for k, v in _fingerprint(out).items() if k in before} == before


def test_interrupted_cell_is_resumed_and_equals_an_uninterrupted_run(tmp_path):
    import importlib

    loop = importlib.import_module("grokscope.training.loop")  # (grokscope.train is also a function's name)

    spec = small_spec(
        axes={"optim.weight_decay": [1.0]}, seeds=1, set={"train.epochs": 40, "train.checkpoint_every": 10}
    )
    with interrupted_at_update(25):
        run_sweep(spec, tmp_path / "s", workers=0, progress=False, log=lambda s: None)
    cell = expand(spec)[0]
    assert plan_sweep(spec, tmp_path / "s").states == {cell.name: "partial"}
    res = run_sweep(spec, tmp_path / "s", workers=0, progress=False, log=lambda s: None)
    assert res.frame["status"].tolist() == ["completed"]
    ref = loop.train(cell.config, tmp_path / "ref", progress=False)
    got = Run(tmp_path / "s" / "cells" / cell.name).metrics
    assert got[["train_loss", "test_acc"]].equals(ref.metrics[["train_loss", "test_acc"]])
    hows = [e.get("how") for e in SweepDir(tmp_path / "s").events() if e["event"] == "cell"]
    assert hows == ["resume"]


def test_split_evenly_and_packing():
    assert [len(c) for c in split_evenly(list(range(72)), workers=2, max_size=16)] == [12] * 6
    assert [len(c) for c in split_evenly(list(range(5)), workers=2, max_size=16)] == [3, 2]
    assert [len(c) for c in split_evenly(list(range(1)), workers=2, max_size=16)] == [1]
    assert [len(c) for c in split_evenly(list(range(7)), workers=1, max_size=3)] == [3, 2, 2]
    # cells that differ in d_model cannot share an ensemble; seeds and weight decays can
    spec = small_spec(axes={"model.d_model,model.d_head": [[32, 16], [48, 24]], "optim.weight_decay": [0.0, 1.0]})
    cells = expand(spec)
    states = {c.name: "new" for c in cells}
    jobs = plan_jobs(cells, states, workers=1)
    assert sorted((j.kind, j.size) for j in jobs) == [("ensemble", 4), ("ensemble", 4)]
    assert all(len({Run_cfg["model"]["d_model"] for Run_cfg in j.configs}) == 1 for j in jobs)
    states[cells[0].name] = "partial"
    states[cells[1].name] = "done"
    jobs = plan_jobs(cells, states, workers=2)
    assert jobs[0].kind == "resume" and jobs[0].names == [cells[0].name]
    assert sum(j.size for j in jobs) == 7
    assert [j.kind for j in plan_jobs(cells, states, workers=2, ensemble=False)] == ["resume"] + ["train"] * 6


def test_without_ensembles_cells_run_as_separate_jobs(tmp_path):
    spec = small_spec(seeds=1)
    plan = plan_sweep(spec, tmp_path / "s", workers=2, ensemble=False)
    assert [j.kind for j in plan.jobs] == ["train", "train"]
    res = run_sweep(spec, tmp_path / "s", workers=0, ensemble=False, progress=False, log=lambda s: None)
    assert res.frame["status"].tolist() == ["completed", "completed"]
    assert {e.get("how") for e in SweepDir(tmp_path / "s").events() if e["event"] == "cell"} == {"train"}


def test_directory_problems_are_one_line_errors(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("x")
    with pytest.raises(SweepError, match="not a sweep directory"):
        run_sweep(small_spec(), tmp_path / "foreign", workers=0, progress=False)
    # a cell directory holding another config
    spec = small_spec(seeds=1)
    cell = expand(spec)[0]
    sd = SweepDir(tmp_path / "s")
    sd.create()
    sd.write_spec(spec.to_dict())
    from grokscope.config import apply_overrides
    from grokscope.training.loop import new_run_dir

    new_run_dir(sd.cell_dir(cell.name), apply_overrides(cell.config, {"optim.lr": 0.5}))
    with pytest.raises(SweepError, match="holds a run of a different config"):
        run_sweep(spec, tmp_path / "s", workers=0, progress=False)
    # a second driver on the same directory
    with sd.driver_lock():
        with pytest.raises(SweepError, match="another sweep driver is running"):
            with SweepDir(tmp_path / "s").driver_lock():
                pass


def test_cli_bad_specs_exit_2_before_anything_runs(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    for axes, needle in [
        ({"optim.weight_dacay": [0.1]}, "unknown config field 'optim.weight_dacay'; did you mean optim.weight_decay?"),
        ({"optim.weight_decay": []}, "empty axis"),
        ({"task.train_fraction": [0.5, 2]}, "task.train_fraction: must be in (0, 1], got 2.0"),
    ]:
        bad.write_text(json.dumps({"name": "b", "base": "tiny", "axes": axes}))
        assert main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and needle in err and err.startswith("grokscope sweep: error:"), err
        assert not (tmp_path / "o").exists()
    assert main(["sweep", "--preset", "nope", "--out", str(tmp_path / "o")]) == 2
    assert "unknown sweep preset 'nope'" in capsys.readouterr().err


def test_every_preset_sweep_expands_or_says_why_not():
    from grokscope.sweep.presets import SWEEP_PRESETS, describe_sweep_presets

    rows = describe_sweep_presets()
    assert [r[0] for r in rows] == list(SWEEP_PRESETS)
    for name, doc, avail in rows:
        assert doc and (avail.endswith(" cells") or avail.startswith("unavailable: ")), (name, avail)
    assert dict((r[0], r[2]) for r in rows)["wd-fraction"] == "72 cells"


def test_cli_list_show_dry_run_and_run(tmp_path, capsys):
    assert main(["sweep", "--list"]) == 0
    assert "wd-fraction" in capsys.readouterr().out
    assert main(["sweep", "--preset", "wd-fraction", "--show"]) == 0
    assert json.loads(capsys.readouterr().out)["axes"]["optim.weight_decay"][0] == 0.0
    spec = tmp_path / "s.json"
    spec.write_text(json.dumps({**SPEC, "seeds": 1}))
    assert main(["sweep", str(spec), "--out", str(tmp_path / "o"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 cells" in out and "new" in out and not (tmp_path / "o").exists()
    assert (
        main(
            [
                "sweep",
                str(spec),
                "--out",
                str(tmp_path / "o"),
                "--workers",
                "0",
                "--quiet",
                "--csv",
                str(tmp_path / "i.csv"),
                "--set",
                "train.epochs=20",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "phases:" in out and (tmp_path / "i.csv").is_file()
    # continuing from the directory alone
    assert main(["sweep", str(tmp_path / "o"), "--workers", "0", "--quiet"]) == 0
    assert "0 cells run, 2 already done" in capsys.readouterr().out


def _cells_done(out: Path) -> list[str]:
    return [e["cell"] for e in SweepDir(out).events() if e["event"] == "cell" and e["status"] == "completed"]


def _stat(pid: int) -> tuple[str, int] | None:
    """(state letter, process group) of a process from /proc, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")  # a zombie has exited (it waits for a reaper)


def _group(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    return [p for p in pids if (st := _stat(p)) is not None and st[1] == pgid and st[0] not in ("Z", "X")]


@pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads process groups from /proc (Linux)")
def test_killing_the_driver_then_rerunning_finishes_without_redoing_cells(tmp_path):
    """Acceptance: kill -9 the sweep driver mid-sweep; the same command finishes the grid, finished cells untouched."""
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps(
            {
                "name": "k",
                "base": "tiny",
                "set": {"train.epochs": 100, "train.checkpoint_every": 25},
                "axes": {"optim.weight_decay": [0.0, 0.5, 1.0, 2.0, 3.0, 4.0]},
                "seeds": 2,
                "outcome": {"tau": 10},
            }
        )
    )
    # 12 cells in jobs of 2 on 2 workers. Once two cells are finished, the driver and workers are frozen (SIGSTOP),
    # the finished cells read, the driver SIGKILLed: the workers die of their parent-death signal, so no cell finishes
    # after the read (the set read is the set on disk after the kill), and most cells are left for the second session
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "grokscope",
        "sweep",
        str(spec),
        "--out",
        str(out),
        "--workers",
        "2",
        "--ensemble-size",
        "2",
        "--quiet",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    from grokscope.sweep.layout import run_is_done

    try:
        deadline = time.monotonic() + 600  # only bounds a hang
        while len(_cells_done(out)) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline, "no cell finished"
            time.sleep(0.05)
        assert proc.poll() is None, (
            "the sweep finished before it could be killed: " + proc.stderr.read().decode()[-500:]
        )
        # freeze the driver and its workers, so that what is finished on disk cannot change until the kill lands
        os.killpg(proc.pid, signal.SIGSTOP)
        group = _group(proc.pid)
        assert proc.pid in group and len(group) >= 3, group  # the driver and its two workers (at least)
        # a signal is delivered asynchronously: read the disk only once every process has actually stopped
        while [p for p in group if (st := _stat(p)) is not None and st[0] not in ("T", "Z", "X")]:
            assert time.monotonic() < deadline, "the sweep's processes did not stop"
            time.sleep(0.01)
        first = {d.name for d in (out / "cells").iterdir() if run_is_done(d)}  # finished on disk (the index may lag)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        assert proc.returncode == -signal.SIGKILL  # the kill was delivered: the driver died of it, mid-sweep
        os.killpg(proc.pid, signal.SIGCONT)  # the workers wake to their parent-death SIGTERM and must exit
        while [p for p in group if _alive(p)]:
            assert time.monotonic() < deadline, (
                f"workers still alive after the driver died: {[p for p in group if _alive(p)]}"
            )
            time.sleep(0.05)
    finally:
        if proc.poll() is None or [p for p in _group(proc.pid)]:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=60)
    # the state was frozen when read: at least the two cells seen finishing, not all 12 (6 jobs of 2 on 2 workers)
    assert set(_cells_done(out)) <= first and 2 <= len(first) < 12
    before = {k: v for k, v in _fingerprint(out).items() if k.split("/")[1] in first}
    n_events = len(SweepDir(out).events())

    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    df = load_sweep(out)
    assert len(df) == 12 and set(df["status"]) == {"completed"}
    # finished cells were not touched, and not given to any job of the second session
    assert {k: v for k, v in _fingerprint(out).items() if k.split("/")[1] in first} == before
    second = SweepDir(out).events()[n_events:]
    rerun = [n for e in second if e["event"] == "job" for n in e["cells"]]
    assert not set(rerun) & first
    assert len(rerun) == len(set(rerun)) == 12 - len(first)
    assert sorted(e["cell"] for e in second if e["event"] == "cell") == sorted(rerun)
    # and every cell's outcome is what its own metrics say
    spec_obj = SweepDir(out).read_spec()
    for _, row in df.iterrows():
        status, o, _ = read_cell_outcome(out / "cells" / row["name"], spec_obj.outcome)
        assert status == "completed" and o.phase == row["phase"]
