"""Failure paths of sweeps: a job that raises and a worker process that is killed (local executor), a cell whose
training diverges (the index against values read straight from the run's own database), and a Ray ``--address``
that cannot be reached (one error line, exit code 2, at once).

Faults in the spawned worker processes are planned on the job's own state through :func:`hook_guarded`, which the
tests put in place of the executor's ``run_job_guarded``: the worker imports it from this module (spawned workers get
the test process's ``sys.path``) and reads the plan from the environment variable HOOK_ENV.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from grokscope.sweep import jobs as jobs_mod
from grokscope.sweep import local as local_mod
from grokscope.sweep.layout import LOCKS_DIR, SweepDir
from grokscope.sweep.local import plan_sweep, run_sweep
from grokscope.sweep.spec import expand, make_spec

HOOK_ENV = "GROKSCOPE_TEST_SWEEP_HOOK"
REAL_GUARDED = jobs_mod.run_job_guarded


def quiet(_: str) -> None:
    pass


# --------------------------------------------------------------------------- the worker-side hook


def hook_guarded(job, cells_root, threads):
    """The executor's ``run_job_guarded`` with a planned fault (HOOK_ENV = "ACTION CELL N MARKER_DIR") for a job holding
    CELL: ``raise`` raises in the job (outside any cell's training); ``kill`` SIGKILLs this worker process right
    after the job's N-th metrics write, having written its pid to MARKER_DIR/killed."""
    action, cell, n, marker_dir = os.environ[HOOK_ENV].split()
    if cell in job.names and action == "raise":

        def boom(*args, **kwargs):
            raise RuntimeError(f"planned failure in the job of {cell}")

        real_execute = jobs_mod.execute_job
        jobs_mod.execute_job = boom  # this process only: run_job_guarded looks it up at call time
        try:
            return REAL_GUARDED(job, cells_root, threads)
        finally:
            jobs_mod.execute_job = real_execute  # the worker process may run the next job
    elif cell in job.names and action == "kill":
        from grokscope.store.metrics import MetricsDB

        real, calls = MetricsDB.log, [0]

        def log(self, step, values):
            real(self, step, values)
            calls[0] += 1
            if calls[0] == int(n):
                (Path(marker_dir) / "killed").write_text(str(os.getpid()))
                os.kill(os.getpid(), signal.SIGKILL)

        MetricsDB.log = log  # the process dies in this job: the patch never reaches another one
    return REAL_GUARDED(job, cells_root, threads)


# --------------------------------------------------------------------------- independent readers


def index_rows(sweep: Path) -> dict[str, dict]:
    """The index rows read with sqlite3 (not through SweepIndex)."""
    conn = sqlite3.connect(f"file:{sweep / 'index.sqlite'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return {r["name"]: dict(r) for r in conn.execute("SELECT * FROM cells")}
    finally:
        conn.close()


def raw_run(run_dir: Path) -> tuple[dict[str, str], dict[int, dict[str, float | None]]]:
    """(meta, {step: {metric: value}}) read with sqlite3 from the run's metrics.sqlite."""
    conn = sqlite3.connect(f"file:{run_dir / 'metrics.sqlite'}?mode=ro", uri=True)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        steps: dict[int, dict[str, float | None]] = {}
        for step, name, value in conn.execute("SELECT step, name, value FROM metrics"):
            steps.setdefault(int(step), {})[name] = value
        return meta, dict(sorted(steps.items()))
    finally:
        conn.close()


def expected_phase(steps: dict[int, dict], tau: int, threshold: float = 0.9) -> tuple[str, int | None, int | None]:
    """Liu et al.'s phase, written out here from the logged accuracies: (phase, train epoch, test epoch)."""
    train = next((s for s, v in steps.items() if (v.get("train_acc") or 0.0) >= threshold), None)
    test = next((s for s, v in steps.items() if (v.get("test_acc") or 0.0) >= threshold), None)
    if train is None:
        return "confusion", train, test
    if test is None:
        return "memorisation", train, test
    return ("grokking" if test - train >= tau else "comprehension"), train, test


def lock_is_free(sweep: Path, cell: str) -> bool:
    path = sweep / "cells" / LOCKS_DIR / f"{cell}.lock"
    if not path.exists():
        return True
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        return True


def two_cells(name: str, epochs: int = 30):
    spec = make_spec(
        name=name,
        base="tiny",
        set={"train.epochs": epochs},
        axes={"optim.weight_decay": [0.0, 1.0]},
        seeds=1,
        outcome={"tau": 10},
    )
    return spec, [c.name for c in expand(spec)]


# --------------------------------------------------------------------------- local executor


def test_a_job_that_raises_in_a_worker_is_an_error_row_and_is_retried_next_run(tmp_path, monkeypatch):
    spec, (victim, other) = two_cells("je")
    out = tmp_path / "s"
    monkeypatch.setenv(HOOK_ENV, f"raise {victim} 0 {tmp_path}")
    monkeypatch.setattr(local_mod, "run_job_guarded", hook_guarded)
    res = run_sweep(spec, out, workers=2, ensemble=False, progress=False, log=quiet)
    assert res.errors == {victim: f"RuntimeError: planned failure in the job of {victim}"}
    rows = index_rows(out)
    assert (rows[victim]["status"], rows[victim]["error"]) == ("error", res.errors[victim])
    assert rows[victim]["phase"] is None and rows[victim]["final_test_acc"] is None
    assert (rows[other]["status"], rows[other]["error"]) == ("completed", "")
    assert not (out / "cells" / victim).exists()  # it failed before training
    cell_events = {e["cell"]: e["status"] for e in SweepDir(out).events() if e["event"] == "cell"}
    assert cell_events == {victim: "error", other: "completed"}

    monkeypatch.setattr(local_mod, "run_job_guarded", REAL_GUARDED)
    again = run_sweep(spec, out, workers=0, ensemble=False, progress=False, log=quiet)
    assert again.ran == 1 and not again.errors
    assert {n: r["status"] for n, r in index_rows(out).items()} == {victim: "completed", other: "completed"}


def test_a_killed_local_worker_is_an_error_row_and_the_next_run_resumes_its_cell(tmp_path, monkeypatch):
    """One worker, two jobs: the worker is SIGKILLed after the first job's second metrics row. Both cells become
    error rows ('worker lost'); the victim's run is left partial with exactly the rows written before the kill;
    the kernel released its lock; the next run resumes it and trains the other, as an uninterrupted run would."""
    spec, (victim, other) = two_cells("lw")
    out = tmp_path / "s"
    (tmp_path / "hook").mkdir()
    monkeypatch.setenv(HOOK_ENV, f"kill {victim} 2 {tmp_path / 'hook'}")
    monkeypatch.setattr(local_mod, "run_job_guarded", hook_guarded)
    res = run_sweep(spec, out, workers=1, ensemble=False, progress=False, log=quiet)
    pid = int((tmp_path / "hook" / "killed").read_text())  # the kill was delivered, by the worker itself
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert set(res.errors) == {victim, other}
    assert all(e.startswith("worker lost: BrokenProcessPool") for e in res.errors.values()), res.errors
    rows = index_rows(out)
    assert {n: r["status"] for n, r in rows.items()} == {victim: "error", other: "error"}
    assert rows[victim]["error"] == res.errors[victim]
    meta, steps = raw_run(out / "cells" / victim)
    assert list(steps) == [0, 5] and meta.get("status") == "running"  # tiny logs every 5 epochs
    assert plan_sweep(spec, out).states[victim] == "partial"
    assert lock_is_free(out, victim) and lock_is_free(out, other)

    monkeypatch.setattr(local_mod, "run_job_guarded", REAL_GUARDED)
    again = run_sweep(spec, out, workers=0, ensemble=False, progress=False, log=quiet)
    assert again.ran == 2 and not again.errors
    hows = {e["cell"]: e["how"] for e in SweepDir(out).events() if e["event"] == "cell" and e["status"] == "completed"}
    assert hows == {victim: "resume", other: "train"}
    from grokscope.training import train

    cell = expand(spec)[0]
    ref = train(cell.config, tmp_path / "ref", progress=False)
    _, got = raw_run(out / "cells" / victim)
    _, want = raw_run(ref.dir)
    assert got == want  # every logged value equal to the uninterrupted run's


@pytest.mark.parametrize("ensemble", [True, False], ids=["ensemble", "one-by-one"])
def test_a_diverged_cell_is_failed_in_the_index(tmp_path, monkeypatch, ensemble):
    """lr 1e6 diverges within a few epochs (alone, or as one member of an ensemble whose other member trains on).
    The index must say 'failed' and classify the cell on what it logged before the divergence; checked against the
    run's database read with sqlite3 and the phase rule written out."""
    monkeypatch.setattr(local_mod, "available_cores", lambda: 1)  # plan for one worker: both cells in one ensemble
    spec = make_spec(
        name="dv", base="tiny", set={"train.epochs": 30}, axes={"optim.lr": [1e-2, 1e6]}, seeds=1, outcome={"tau": 10}
    )
    healthy, diverged = [c.name for c in expand(spec)]
    out = tmp_path / "s"
    res = run_sweep(spec, out, workers=0, ensemble=ensemble, progress=False, log=quiet)
    assert not res.errors
    kinds = {e["kind"] for e in SweepDir(out).events() if e["event"] == "job"}
    assert kinds == ({"ensemble"} if ensemble else {"train"})
    rows = index_rows(out)
    for name, status in ((healthy, "completed"), (diverged, "failed")):
        meta, steps = raw_run(out / "cells" / name)
        assert meta["status"] == status
        row = rows[name]
        assert row["status"] == status
        phase, train_epoch, test_epoch = expected_phase(steps, tau=10)
        assert (row["phase"], row["train_epoch"], row["test_epoch"]) == (phase, train_epoch, test_epoch)
        last = max(steps)
        assert row["last_epoch"] == last
        assert row["final_train_loss"] == steps[last]["train_loss"] and row["final_test_acc"] == steps[last]["test_acc"]
    meta, steps = raw_run(out / "cells" / diverged)
    assert meta["message"].startswith("non-finite training loss at epoch ")
    epoch = int(meta["message"].split("epoch ")[1].split(";")[0])
    assert 0 < epoch < 30 and max(steps) < epoch  # nothing logged from the diverged epoch on
    assert all(v is not None for s in steps.values() for v in s.values())
    assert rows[healthy]["last_epoch"] == 30
    events = {e["cell"]: e["status"] for e in SweepDir(out).events() if e["event"] == "cell"}
    assert events == {healthy: "completed", diverged: "failed"}
    # a diverged cell is finished: the next run does not train it again
    assert run_sweep(spec, out, workers=0, ensemble=ensemble, progress=False, log=quiet).ran == 0


# --------------------------------------------------------------------------- Ray address


def test_an_unreachable_ray_address_is_one_error_line_and_exit_2(tmp_path):
    pytest.importorskip("ray")
    with socket.socket() as s:  # a port on which nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = tmp_path / "spec.json"
    spec.write_text(
        json.dumps({"name": "a", "base": "tiny", "set": {"train.epochs": 10}, "axes": {"optim.weight_decay": [0.0]}})
    )
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        out = tmp_path / f"o{len(address)}"
        # the timeout only bounds a hang (Ray itself retried an unreachable host:port forever); it fails in seconds
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "grokscope",
                "sweep",
                str(spec),
                "--out",
                str(out),
                "--executor",
                "ray",
                "--address",
                address,
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=180,
        )
        err = proc.stderr.strip()
        assert proc.returncode == 2, (address, proc.returncode, err[-2000:])
        assert err.count("\n") == 0 and err.startswith(
            f"grokscope sweep: error: --address {address}: cannot connect to Ray"
        ), err
        assert not (out / "index.sqlite").exists() and not (out / "cells").exists()
        assert not out.exists()  # the directory the command created is gone again: a failed connect leaves nothing
    kept = tmp_path / "existing"  # a directory the user made before is left where it was
    kept.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "grokscope",
            "sweep",
            str(spec),
            "--out",
            str(kept),
            "--executor",
            "ray",
            "--address",
            f"127.0.0.1:{port}",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2 and kept.is_dir() and not any(kept.iterdir())


def test_a_cell_killed_while_its_run_directory_was_created_starts_anew(tmp_path):
    """A SIGKILL between the mkdir of a cell's run directory and the rename of its config.json leaves the directory
    with only the write's temporary file: the next run treats the cell as new (it does not refuse the sweep);
    anything else in a cell that is not a run is still refused."""
    from grokscope.config import ExperimentConfig
    from grokscope.sweep.layout import NEW, SweepError

    sd = SweepDir(tmp_path / "s")
    sd.create()
    cell = sd.cell_dir("c")
    cell.mkdir(parents=True)
    (cell / ".config.json.k3j2l1.tmp").write_text('{"name": "half')  # what atomic_write_bytes leaves mid-write
    temporary = cell / ".config.json.k3j2l1.tmp"
    assert (
        sd.cell_state("c", ExperimentConfig()) == NEW and temporary.exists()
    )  # a state query (--dry-run) writes nothing
    sd.clean_leftovers()  # what a run does first, under the driver lock
    assert cell.is_dir() and not any(cell.iterdir())  # the temporary is gone, so the run directory can be created
    (cell / "notes.txt").write_text("mine")
    with pytest.raises(SweepError, match="is not a run directory"):
        sd.cell_state("c", ExperimentConfig())
    assert (cell / "notes.txt").read_text() == "mine"
