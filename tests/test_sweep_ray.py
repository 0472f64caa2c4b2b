"""The Ray executor against a local Ray instance started here (skipped when Ray is not installed): outcomes equal
the local executor's, a lost worker is retried (a crash planned on the job's own state, attempts counted), retries
that run out leave error rows, an interrupt cancels the tasks in flight, and an interrupted local cell is resumed."""

import os
import signal
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from faults_util import interrupted_at_update  # noqa: E402

from grokscope.sweep.index import load_sweep  # noqa: E402
from grokscope.sweep.layout import SweepDir  # noqa: E402
from grokscope.sweep.local import run_sweep  # noqa: E402
from grokscope.sweep.ray_executor import CRASH_AT_WRITE, CRASH_ONCE_ENV, RayExecutor, pack_dir, unpack_dir  # noqa: E402
from grokscope.sweep.spec import make_spec  # noqa: E402
from grokscope.training import train  # noqa: E402

COLUMNS = [
    "name",
    "status",
    "phase",
    "train_epoch",
    "test_epoch",
    "gap",
    "grok_epoch",
    "final_train_acc",
    "final_test_acc",
    "final_test_loss",
]


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    """The workers' testing-hook directory (see CRASH_ONCE_ENV); each test arms it with :func:`arm`."""
    hooks = tmp_path_factory.mktemp("crash")
    ray.init(
        num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {CRASH_ONCE_ENV: str(hooks)}}
    )
    yield hooks
    ray.shutdown()


def arm(hooks: Path, *, once: bool = False, always: tuple[str, ...] = ()) -> None:
    """Set the hook for the next sweep: ``once`` crashes the first job to start (once), ``always`` every attempt of
    jobs holding these cells; attempts are counted afresh."""
    for name in ("attempts.log", "crashed", "crash-always"):
        (hooks / name).unlink(missing_ok=True)
    if not once:
        (hooks / "crashed").write_text("disarmed")
    if always:
        (hooks / "crash-always").write_text(" ".join(always))


def attempts(hooks: Path) -> list[tuple[int, tuple[str, ...]]]:
    """(worker pid, cells of the job) of every job attempt the workers started, in order."""
    path = hooks / "attempts.log"
    lines = path.read_text().splitlines() if path.is_file() else []
    return [(int(pid), tuple(names)) for pid, *names in (line.split() for line in lines)]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(predicate, timeout: float = 120.0, what: str = "a state") -> None:
    """Poll ``predicate`` until it holds; the timeout only bounds a hang."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def spec():
    return make_spec(
        name="r",
        base="tiny",
        set={"train.epochs": 30},
        axes={"optim.weight_decay": [0.0, 1.0], "task.train_fraction": [0.5, 0.8]},
        seeds=1,
        outcome={"tau": 5},
    )


def test_ray_gives_the_same_outcomes_as_local_and_retries_a_lost_worker(local_ray, tmp_path):
    local = run_sweep(spec(), tmp_path / "local", workers=0, progress=False, log=lambda s: None).frame
    arm(local_ray, once=True)
    ex = RayExecutor(threads=1)
    res = run_sweep(spec(), tmp_path / "ray", executor=ex, progress=False, log=lambda s: None)
    assert not res.errors
    remote = res.frame
    # the first job's worker died at its CRASH_AT_WRITE-th metrics write (mid-training), and Ray ran that job again
    # in another process; every other job ran once
    pid, *crashed = (local_ray / "crashed").read_text().split()
    tries = attempts(local_ray)
    jobs = [e["cells"] for e in SweepDir(tmp_path / "ray").events() if e["event"] == "job"]
    assert sorted(names for _, names in tries) == sorted([tuple(crashed)] + [tuple(j) for j in jobs])
    again = [p for p, names in tries if names == tuple(crashed)]
    assert len(again) == 2 and again[0] == int(pid) and again[1] != int(pid) and not pid_alive(int(pid))
    assert CRASH_AT_WRITE < 7  # the tiny run of 30 epochs logs 7 rows: the crash lands inside training
    assert set(remote["status"]) == {"completed"} and set(remote["executor"]) == {"ray"}
    assert local[COLUMNS].astype(str).equals(remote[COLUMNS].astype(str))
    # the driver wrote the runs: complete run directories, no temporary leftovers
    cells = tmp_path / "ray" / "cells"
    assert sorted(p.name for p in cells.iterdir() if not p.name.startswith(".")) == sorted(remote["name"])
    assert not [p for p in cells.iterdir() if p.name.startswith((".incoming", ".trash"))]
    # rerun: nothing to do
    again = run_sweep(spec(), tmp_path / "ray", executor=RayExecutor(threads=1), progress=False, log=lambda s: None)
    assert again.ran == 0
    assert load_sweep(tmp_path / "ray")["phase"].tolist() == remote["phase"].tolist()


def test_ray_resumes_a_cell_interrupted_locally(local_ray, tmp_path):
    arm(local_ray)
    s = make_spec(
        name="r2",
        base="tiny",
        set={"train.epochs": 30, "train.checkpoint_every": 10},
        axes={"optim.weight_decay": [1.0]},
        seeds=1,
    )
    with interrupted_at_update(15):
        run_sweep(s, tmp_path / "s", workers=0, progress=False, log=lambda s: None)
    res = run_sweep(s, tmp_path / "s", executor=RayExecutor(threads=1), progress=False, log=lambda s: None)
    assert res.frame["status"].tolist() == ["completed"]
    hows = [e.get("how") for e in SweepDir(tmp_path / "s").events() if e["event"] == "cell"]
    assert hows == ["resume"]
    from grokscope.store.run import Run
    from grokscope.sweep.spec import expand

    cell = expand(s)[0]
    ref = train(cell.config, tmp_path / "ref", progress=False).metrics
    got = Run(tmp_path / "s" / "cells" / cell.name).metrics
    assert got[["train_loss", "test_acc"]].equals(ref[["train_loss", "test_acc"]])


def test_pack_round_trip(tmp_path):
    d = tmp_path / "a"
    (d / "sub").mkdir(parents=True)
    (d / "x.json").write_text("1")
    (d / "sub" / "y.bin").write_bytes(b"\0\1")
    (d / "z.lock").write_text("")
    unpack_dir(pack_dir(d), tmp_path / "b")
    assert sorted(p.relative_to(tmp_path / "b").as_posix() for p in (tmp_path / "b").rglob("*")) == [
        "sub",
        "sub/y.bin",
        "x.json",
    ]


def _error_rows(path: Path) -> dict[str, tuple[str, str]]:
    import sqlite3

    conn = sqlite3.connect(f"file:{path / 'index.sqlite'}?mode=ro", uri=True)
    try:
        return {n: (st, err or "") for n, st, err in conn.execute("SELECT name, status, error FROM cells")}
    finally:
        conn.close()


def test_ray_retries_run_out_and_the_cell_is_an_error(local_ray, tmp_path):
    """A job whose worker dies on every attempt: 1 + retries attempts, then an error row (retried next run)."""
    s = make_spec(name="r3", base="tiny", set={"train.epochs": 30}, axes={"optim.weight_decay": [0.0, 1.0]}, seeds=1)
    from grokscope.sweep.spec import expand

    doomed, fine = [c.name for c in expand(s)]
    arm(local_ray, always=(doomed,))
    res = run_sweep(
        s,
        tmp_path / "s",
        executor=RayExecutor(threads=1, retries=1),
        ensemble=False,
        progress=False,
        log=lambda s: None,
    )
    tries = attempts(local_ray)
    assert [n for _, n in tries].count((doomed,)) == 2 and [n for _, n in tries].count((fine,)) == 1
    assert len({p for p, n in tries if n == (doomed,)}) == 2  # each attempt in a fresh worker process
    assert set(res.errors) == {doomed} and "ray task failed" in res.errors[doomed]
    rows = _error_rows(tmp_path / "s")
    assert rows[doomed][0] == "error" and "ray task failed" in rows[doomed][1]
    assert rows[fine] == ("completed", "")
    assert not (tmp_path / "s" / "cells" / doomed).exists()  # nothing of the lost attempts reached the sweep
    # the next run retries the error cell, and only it
    arm(local_ray)
    again = run_sweep(
        s, tmp_path / "s", executor=RayExecutor(threads=1), ensemble=False, progress=False, log=lambda s: None
    )
    assert again.ran == 1 and not again.errors
    assert [n for _, n in attempts(local_ray)] == [(doomed,)]
    assert set(_error_rows(tmp_path / "s").values()) == {("completed", "")}


def test_an_interrupt_cancels_the_ray_tasks_in_flight(local_ray, tmp_path):
    """Ctrl-C (SIGINT) while a long job runs: run_sweep raises KeyboardInterrupt, the worker running the job is
    killed (the task cancelled, not retried), the cell stays pending and the driver lock is released."""
    s = make_spec(name="r4", base="tiny", set={"train.epochs": 100_000}, axes={"optim.weight_decay": [1.0]}, seeds=1)
    arm(local_ray)
    sent = threading.Event()

    def interrupt_once_started() -> None:
        wait_for(lambda: attempts(local_ray), what="the job to start on a worker")
        os.kill(os.getpid(), signal.SIGINT)
        sent.set()

    t = threading.Thread(target=interrupt_once_started, daemon=True)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        run_sweep(s, tmp_path / "s", executor=RayExecutor(threads=1), progress=False, log=lambda s: None)
    t.join(timeout=5)
    assert sent.is_set()
    ((pid, names),) = attempts(local_ray)
    wait_for(lambda: not pid_alive(pid), timeout=60, what=f"the worker {pid} running the cancelled job to die")
    assert attempts(local_ray) == [(pid, names)]
    assert {st for st, _ in _error_rows(tmp_path / "s").values()} == {"pending"}
    assert not [e for e in SweepDir(tmp_path / "s").events() if e["event"] == "cell"]
    with SweepDir(tmp_path / "s").driver_lock():  # released: a new driver can take the sweep
        pass
