"""Faults: SIGKILL at random moments and inside store writes (training and sweeps), a full disk, damaged files.

After each: resuming completes with a run identical to its uninterrupted twin, or one line names the damaged file
and how to recover; nothing already stored is lost. ``pytest -m slow tests/test_faults.py -s`` runs the 50-kill loop.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from faults_util import Kill, assert_same_run, interrupted_at_update, random_kill, run_with_kills, stored_files

from grokscope import apply_overrides, load_run
from grokscope.cli import main
from grokscope.presets import tiny
from grokscope.store import files as files_mod
from grokscope.store import metrics as metrics_mod
from grokscope.store.run import check_run
from grokscope.training import resume, train

# Checkpoints at 0, 1, 2, 4, 8, 10, 20, ...; metrics every 5 epochs, progress measures every 25.
SETTINGS = {"train.checkpoint_every": 10, "train.measure_every": 25}


def config(epochs: int, **extra):
    return apply_overrides(tiny(), {**SETTINGS, "train.epochs": epochs, **extra})


def cli_args(epochs: int, **extra) -> list[str]:
    sets = [f"{k}={json.dumps(v)}" for k, v in {**SETTINGS, "train.epochs": epochs, **extra}.items()]
    return ["--preset", "tiny", *[a for s in sets for a in ("--set", s)]]


def snapshot(root: Path) -> dict[str, str]:
    """{path: sha256} under root, without SQLite's side files that any reader may create (-shm, an empty -wal)."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith("-shm") and not (p.name.endswith("-wal") and p.stat().st_size == 0)
    }


# --------------------------------------------------------------------------- SIGKILL: training


def kill_training_run(out: Path, epochs: int, kills: list[Kill], extra: dict | None = None) -> list[str]:
    """Train in a subprocess with ``kills`` delivered, resuming after each; checks that no complete checkpoint
    seen after a kill is ever lost or changed. Returns the kinds delivered."""
    seen: dict[str, str] = {}

    def after_kill(_n: int) -> None:
        for name, digest in stored_files(out).items():
            seen.setdefault(name, digest)

    delivered = run_with_kills(
        ["train", *cli_args(epochs, **(extra or {})), "--out", str(out), "--quiet"],
        ["train", "--resume", str(out), "--quiet"],
        kills,
        wal_files=lambda: [out / "metrics.sqlite-wal"],
        after_kill=after_kill,
    )
    final = stored_files(out)
    changed = [name for name, digest in seen.items() if final.get(name) != digest]
    assert not changed, f"stored checkpoints lost or changed: {changed}"
    return delivered


# --------------------------------------------------------------------------- SIGKILL: sweeps

SWEEP = {
    "name": "fault",
    "base": "tiny",
    "set": {**SETTINGS, "train.epochs": 80},
    "axes": {"optim.weight_decay": [0.0, 1.0]},
    "seeds": 1,
}
BIG_SWEEP = {**SWEEP, "set": {**SETTINGS, "train.epochs": 150}, "seeds": 2}  # 4 cells: long enough for several kills


def kill_sweep(tmp_path: Path, spec: dict, kills: list[Kill], *, workers: int, killpg: bool) -> list[str]:
    """Run a sweep (one job per cell, so every cell is a plain run) with ``kills`` at random moments, re-running the
    same command after each; then every cell must equal its uninterrupted twin."""
    from grokscope.sweep.index import load_sweep
    from grokscope.sweep.spec import expand, spec_from_dict

    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    out = tmp_path / "sweep"
    cmd = ["sweep", str(path), "--out", str(out), "--workers", str(workers), "--no-ensemble", "--quiet"]
    delivered = run_with_kills(
        cmd, cmd, kills, killpg=killpg, wal_files=lambda: list((out / "cells").glob("*/metrics.sqlite-wal"))
    )
    cells = expand(spec_from_dict(spec))
    frame = load_sweep(out)
    assert sorted(frame["name"]) == sorted(c.name for c in cells) and set(frame["status"]) == {"completed"}
    for cell in cells:
        twin = train(cell.config, tmp_path / "twins" / cell.name, progress=False)
        assert_same_run(twin, load_run(out / "cells" / cell.name))
    return delivered


# --------------------------------------------------------------------------- a full disk


class FakeDisk:
    """A disk with ``free`` bytes left. File writes of the store (grokscope.store.files) and SQLite writes of the
    metrics database use them up; once full, writes fail as on a full disk (ENOSPC, SQLite's 'database or disk is
    full'), after writing part of their data."""

    def __init__(self, free: int):
        self.free = free
        self.failures = 0

    def take(self, n: int) -> int:
        """Bytes that fit of ``n`` (all of them, or what is left, and then the disk is full)."""
        if n <= self.free:
            self.free -= n
            return n
        fit, self.free = self.free, 0
        self.failures += 1
        return fit


class _LimitedFile:
    def __init__(self, f, disk: FakeDisk):
        self._f, self._disk = f, disk

    def write(self, data: bytes) -> int:
        fit = self._disk.take(len(data))
        self._f.write(data[:fit])
        if fit < len(data):
            raise OSError(errno.ENOSPC, "No space left on device")
        return fit

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._f.close()

    def __getattr__(self, name):
        return getattr(self._f, name)


class _OsOnDisk:
    """Stands in for the ``os`` module inside grokscope.store.files: files it opens write to the fake disk."""

    def __init__(self, disk: FakeDisk):
        self._disk = disk

    def fdopen(self, fd, *args, **kwargs):
        return _LimitedFile(os.fdopen(fd, *args, **kwargs), self._disk)

    def __getattr__(self, name):
        return getattr(os, name)


class _ConnOnDisk:
    ROW_BYTES = 64

    def __init__(self, conn: sqlite3.Connection, disk: FakeDisk):
        self._conn, self._disk = conn, disk

    def _write(self, sql: str, rows: list) -> None:
        if not sql.lstrip().upper().startswith(("INSERT", "DELETE", "UPDATE", "CREATE", "PRAGMA JOURNAL")):
            return
        need = self.ROW_BYTES * max(1, len(rows))
        fit = self._disk.take(need)
        if fit < need:
            if len(rows) > 1:
                self._conn.executemany(sql, rows[: len(rows) // 2])  # part of the transaction, then the failure
            raise sqlite3.OperationalError("database or disk is full")

    def execute(self, sql, params=()):
        self._write(sql, [params])
        return self._conn.execute(sql, params)

    def executemany(self, sql, rows):
        rows = list(rows)
        self._write(sql, rows)
        return self._conn.executemany(sql, rows)

    def executescript(self, script):
        self._write("CREATE", [None])
        return self._conn.executescript(script)

    def __enter__(self):
        self._conn.__enter__()
        return self

    def __exit__(self, *exc):
        return self._conn.__exit__(*exc)

    def __getattr__(self, name):
        return getattr(self._conn, name)


class _SqliteOnDisk:
    """Stands in for the ``sqlite3`` module inside grokscope.store.metrics: writing connections use the fake disk."""

    def __init__(self, disk: FakeDisk):
        self._disk = disk

    def connect(self, database, *args, **kwargs):
        conn = sqlite3.connect(database, *args, **kwargs)
        return conn if "mode=ro" in str(database) else _ConnOnDisk(conn, self._disk)

    def __getattr__(self, name):
        return getattr(sqlite3, name)


@pytest.fixture(scope="module")
def twin60(tmp_path_factory):
    return train(config(60), tmp_path_factory.mktemp("twin") / "run", progress=False)


@pytest.mark.parametrize(
    "free, where",
    [
        (0, "all"),
        (5_000, "all"),
        (60_000, "all"),
        (250_000, "all"),
        (600_000, "all"),
        (1_200_000, "all"),
        (300, "sqlite"),
        (1_500, "sqlite"),
        (3_000, "sqlite"),
    ],
)
def test_full_disk_stops_with_one_line_and_the_run_resumes_identically(
    free, where, twin60, tmp_path, monkeypatch, capsys
):
    disk = FakeDisk(free)
    if where == "all":
        monkeypatch.setattr(files_mod, "os", _OsOnDisk(disk))
    monkeypatch.setattr(metrics_mod, "sqlite3", _SqliteOnDisk(disk))
    out = tmp_path / "run"
    argv = ["train", *cli_args(60), "--out", str(out), "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert disk.failures >= 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"grokscope train: error: cannot write {out}") and "no space left on device" in err, err
    assert not list(tmp_path.rglob("*.tmp"))
    disk.free = 10**12  # space freed
    if not out.exists():  # the disk was full before the config could be written: nothing was created
        assert free < 2_000 and main(argv) == 0
    else:
        assert f"then continue with 'grokscope train --resume {out}'" in err
        check_run(out, resume=True)
        assert main(["train", "--resume", str(out), "--quiet"]) == 0
    assert_same_run(twin60, load_run(out))


def test_write_errors_keep_the_old_file_and_name_it(tmp_path, monkeypatch):
    from grokscope.store import StoreWriteError
    from grokscope.store.files import atomic_write_bytes
    from grokscope.store.metrics import MetricsDB

    target = tmp_path / "x.json"
    atomic_write_bytes(target, b"old")
    disk = FakeDisk(2)
    monkeypatch.setattr(files_mod, "os", _OsOnDisk(disk))
    with pytest.raises(StoreWriteError) as e:
        atomic_write_bytes(target, b"new contents")
    assert isinstance(e.value, OSError) and e.value.errno == errno.ENOSPC and e.value.disk_full
    assert str(e.value) == f"cannot write {target}: no space left on device"
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.json"]
    monkeypatch.undo()
    with MetricsDB(tmp_path / "m.sqlite") as db:
        db.log(1, {"a": 1.0, "b": 2.0})
    disk = FakeDisk(200)
    monkeypatch.setattr(metrics_mod, "sqlite3", _SqliteOnDisk(disk))
    with MetricsDB(tmp_path / "m.sqlite") as db:  # opening takes 2 x 64 "bytes" (journal mode, schema): 72 left
        with pytest.raises(StoreWriteError, match="m.sqlite: no space left on device"):
            db.log(2, {"a": 3.0, "b": 4.0, "c": 5.0})
        assert db.rows() == [(1, "a", 1.0), (1, "b", 2.0)]  # the half-written step was rolled back


def _mount_tmpfs(where: Path, size: str) -> str | None:
    """Mounts a tmpfs of ``size`` on ``where``; None when mounted, else why not."""
    where.mkdir()
    if os.geteuid() != 0:
        return "not root"
    if not shutil.which("mount"):
        return "no mount command"
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True
    )
    return None if proc.returncode == 0 else f"mount failed: {proc.stderr.strip()}"


@pytest.mark.parametrize("size", ["48k", "160k"])
def test_a_real_full_filesystem_then_more_space_resumes_identically(size, twin60, tmp_path, capsys):
    """The same on a real tmpfs that fills up (needs root, else skipped; CI runs as root, and there a skip fails the
    session: tests/conftest.py): SQLite's own error (48k: the metrics database fills it) and the kernel's ENOSPC
    (160k: a checkpoint)."""
    disk = tmp_path / "disk"
    why_not = _mount_tmpfs(disk, size)
    if why_not:
        pytest.skip(f"cannot mount a small tmpfs here ({why_not}; needs root)")
    try:
        out = disk / "run"
        assert main(["train", *cli_args(60), "--out", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "no space left on device" in err and f"--resume {out}" in err, err
        assert not list(disk.rglob("*.tmp"))
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        assert main(["train", "--resume", str(out), "--quiet"]) == 0
        assert_same_run(twin60, load_run(out))
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


# --------------------------------------------------------------------------- damaged files


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A completed run (40 epochs; checkpoints 0, 1, 2, 4, 8, 10, 20, 30, 40) to copy and damage."""
    return train(config(40), tmp_path_factory.mktemp("finished") / "run", progress=False)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """The same config interrupted at epoch 25 (resume point: epoch 20)."""
    out = tmp_path_factory.mktemp("interrupted") / "run"
    with interrupted_at_update(26):
        train(config(40), out, progress=False)
    assert load_run(out).metrics.index[-1] == 25
    return out


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip_byte(path: Path, offset: int = -50) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def ckpt(run: Path, step: int) -> Path:
    return run / "checkpoints" / f"step_{step:08d}.safetensors"


def run_cli(argv, capsys) -> tuple[int, str]:
    capsys.readouterr()
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) <= 1, err
    return code, err


DAMAGE = {
    "old checkpoint truncated": (
        lambda r: truncate(ckpt(r, 10)),
        "checkpoints/step_00000010.safetensors",
        "cannot be rebuilt from this run",
    ),
    "old checkpoint byte flipped": (
        lambda r: flip_byte(ckpt(r, 10)),
        "checkpoints/step_00000010.safetensors: damaged safetensors file (checksum mismatch",
        "move it away",
    ),
    "old checkpoint header overwritten": (
        lambda r: flip_byte(ckpt(r, 8), 12),
        "checkpoints/step_00000008.safetensors: damaged",
        "cannot be rebuilt",
    ),
    "state truncated": (
        lambda r: truncate(r / "state.safetensors"),
        "state.safetensors: damaged safetensors file (truncated",
        "grokscope train --config",
    ),
    "state byte flipped": (
        lambda r: flip_byte(r / "state.safetensors"),
        "state.safetensors: damaged safetensors file (checksum mismatch",
        "--out NEW_DIR",
    ),
    "state missing": (
        lambda r: (r / "state.safetensors").unlink(),
        "state.safetensors: missing, although the run has trained",
        "--out NEW_DIR",
    ),
    "metrics overwritten": (
        lambda r: (r / "metrics.sqlite").write_bytes(b"\0" * 4096),
        "metrics.sqlite: damaged metrics database",
        "restore it from a copy",
    ),
    "metrics truncated": (
        lambda r: truncate(r / "metrics.sqlite"),
        "metrics.sqlite: damaged metrics database",
        "restore it from a copy",
    ),
    "config truncated": (
        lambda r: truncate(r / "config.json"),
        "config.json: invalid run config",
        "restore it from a copy",
    ),
}


@pytest.mark.parametrize("base", ["finished", "interrupted"])
@pytest.mark.parametrize("case", list(DAMAGE))
def test_a_damaged_file_is_named_with_how_to_recover_and_nothing_else_changes(
    case, base, finished, interrupted, tmp_path, capsys
):
    damage, where, advice = DAMAGE[case]
    run = tmp_path / "run"
    shutil.copytree(finished.dir if base == "finished" else interrupted, run)
    damage(run)
    before = snapshot(run)
    commands = [["train", "--resume", str(run), "--quiet"]]
    if case == "state missing":  # only resuming needs it: the run stays readable
        assert run_cli(["show", str(run)], capsys)[0] == 0
    else:
        commands.append(["show", str(run)])
    if not case.startswith("state"):  # analysis reads the config, the checkpoint and the metrics, not the resume point
        commands.append(
            ["analyze", str(run), "--quiet"] + (["--step", case_step(case)] if "checkpoint" in case else [])
        )
    for argv in commands:
        code, err = run_cli(argv, capsys)
        assert code == 2, (argv, err)
        assert err.startswith(f"grokscope {argv[0]}: error: {run}/{where}") and advice in err, (argv, err)
        assert snapshot(run) == before, argv  # nothing written, deleted or changed


def case_step(case: str) -> str:
    return "8" if "header" in case else "10"


@pytest.mark.parametrize("damage", [truncate, flip_byte, Path.unlink])
def test_resume_rebuilds_a_damaged_checkpoint_at_the_resume_point(damage, finished, interrupted, tmp_path, capsys):
    """The checkpoint at the resume point holds the same weights as the resume point: resume rewrites it, and the run
    completes identical to the uninterrupted one. (Earlier checkpoints cannot be rebuilt: see the test above.)"""
    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    damage(ckpt(run, 20))
    if damage is not Path.unlink:
        code, err = run_cli(["show", str(run)], capsys)
        assert (
            code == 2
            and f"{run}/checkpoints/step_00000020.safetensors: damaged" in err
            and f"'grokscope train --resume {run}' rebuilds it" in err
        )
    # and a damaged checkpoint after the resume point (written just before a kill) is simply trained again
    (run / "checkpoints" / "step_00000030.safetensors").write_bytes(b"partial")
    code, err = run_cli(["train", "--resume", str(run), "--quiet"], capsys)
    assert code == 0, err
    assert_same_run(finished, load_run(run))
    # a completed run whose last checkpoint is damaged: resume only rebuilds it
    done = tmp_path / "done"
    shutil.copytree(finished.dir, done)
    damage(ckpt(done, 40))
    keep = {k: v for k, v in snapshot(done).items() if not k.startswith("checkpoints/step_00000040")}
    assert run_cli(["train", "--resume", str(done), "--quiet"], capsys)[0] == 0
    assert_same_run(finished, load_run(done))
    assert {k: v for k, v in snapshot(done).items() if k in keep} == keep


def test_resume_refuses_before_writing_anything(finished, tmp_path):
    """The Python API raises the same one-line error (a RunError) and leaves the run as it was."""
    from grokscope.store import DamagedFileError

    run = tmp_path / "run"
    shutil.copytree(finished.dir, run)
    truncate(ckpt(run, 4))
    before = snapshot(run)
    with pytest.raises(DamagedFileError) as e:
        resume(run, progress=False)
    assert e.value.path == ckpt(run, 4) and "\n" not in str(e.value)
    assert snapshot(run) == before


# --------------------------------------------------------------------------- the fault loop


def fault_loop(
    tmp_path: Path,
    run_plans: list[list[Kill]],
    sweep_plans: list[list[Kill]],
    *,
    sweep: dict = SWEEP,
    at_least: int = 0,
    rng: random.Random | None = None,
) -> tuple[str, dict]:
    """Training runs killed as planned (at random moments, inside checkpoint and metrics writes; alternately full
    batch and minibatches, so kills land inside an epoch too) and sweeps killed at random moments (even-numbered ones
    in-process, odd-numbered ones with two worker processes, killing the whole process group); each run and each
    sweep cell is compared with its uninterrupted twin. A run can complete before all its planned kills land: while
    fewer than ``at_least`` kills were delivered, more runs with 5 random kills from ``rng`` follow (at most 10).
    Returns (summary line, kills delivered by kind)."""
    t0 = time.perf_counter()
    variants = [({}, 100), ({"train.batch_size": 24}, 40)]
    twins: dict[int, object] = {}
    counts = {"moment": 0, "tensors": 0, "metrics": 0, "sweep": 0}

    def one_run(i: int, kills: list[Kill]) -> None:
        v = i % len(variants)
        extra, epochs = variants[v]
        for kind in kill_training_run(tmp_path / f"killed{i}", epochs, kills, extra):
            counts[kind] += 1
        if v not in twins:
            twins[v] = train(config(epochs, **extra), tmp_path / f"twin{v}", progress=False)
        assert_same_run(twins[v], load_run(tmp_path / f"killed{i}"))

    for i, kills in enumerate(run_plans):
        one_run(i, kills)
    for j, kills in enumerate(sweep_plans):
        workers = 0 if j % 2 == 0 else 2
        counts["sweep"] += len(kill_sweep(tmp_path / f"sweep{j}", sweep, kills, workers=workers, killpg=workers > 0))
    runs = len(run_plans)
    # a planned kill is not delivered when the run ends first (the faster the machine, the more often): more runs
    while rng is not None and sum(counts.values()) < at_least and runs < len(run_plans) + 40:
        one_run(runs, [random_kill(rng) for _ in range(5)])
        runs += 1
    line = (
        f"fault loop: {sum(counts.values())} SIGKILLs ({counts['moment']} at random moments in training, "
        f"{counts['tensors']} "
        f"inside safetensors writes, {counts['metrics']} inside metrics writes, {counts['sweep']} during sweeps) "
        "over "
        f"{runs} runs and {len(sweep_plans)} sweeps; every run completed identical to its uninterrupted twin "
        f"({time.perf_counter() - t0:.0f} s)"
    )
    return line, counts


def test_fault_loop_few_kills(tmp_path):
    """The small version: a kill inside a checkpoint write (half the temporary file written) and one inside a metrics
    write (half the rows inserted, transaction open); a sweep (in-process, so its cells' metrics are written by the
    driver) killed once inside its 5th metrics write. Each kill is counted: it was delivered."""
    plan = [[Kill("tensors", nth=4, phase="partial"), Kill("metrics", nth=3, phase="partial")]]
    line, counts = fault_loop(tmp_path, plan, [[Kill("metrics", nth=5, phase="partial")]])
    print(line)
    assert counts == {"moment": 0, "tensors": 1, "metrics": 1, "sweep": 1}


@pytest.mark.slow
def test_fault_loop_fifty_kills(tmp_path):
    rng = random.Random(1)
    runs = [[random_kill(rng) for _ in range(5)] for _ in range(10)]
    sweeps = [[Kill("moment", delay=rng.uniform(0.0, 1.5)) for _ in range(4)] for _ in range(2)]
    line, counts = fault_loop(tmp_path, runs, sweeps, sweep=BIG_SWEEP, at_least=50, rng=rng)
    print(line)
    assert sum(counts.values()) >= 50 and all(counts.values()), counts
