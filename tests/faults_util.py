"""Helpers of the fault tests: run grokscope in a subprocess, SIGKILL it at random moments or inside a store write,
resume until it completes, and compare runs.

Run as a script, this file is the launcher that kills itself inside the N-th write of a kind::

    python tests/faults_util.py KIND N PHASE -- train --preset tiny --out RUN

KIND ``tensors``: the N-th safetensors write (a checkpoint or the resume point), PHASE ``partial`` (half the
temporary file written), ``unrenamed`` (temporary file complete, not renamed) or ``renamed`` (just after the rename).
KIND ``metrics``: the N-th ``MetricsDB.log``, PHASE ``partial`` (half the rows inserted, transaction open),
``uncommitted`` (every row inserted, no commit) or ``committed`` (just after the commit).
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
PHASES = {"tensors": ("partial", "unrenamed", "renamed"), "metrics": ("partial", "uncommitted", "committed")}


# --------------------------------------------------------------------------- the launcher (runs in the child)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def die_after_safetensors_write(nth: int) -> None:
    """In this process: SIGKILL just after the ``nth`` safetensors write (a checkpoint or the resume point)."""
    _install("tensors", nth, "renamed")


def run_killed_script(script: Path, out: Path, nth: int) -> None:
    """Run a test file as a script (``python SCRIPT OUT N``: it trains into OUT and calls
    :func:`die_after_safetensors_write` with N) and check that it died by SIGKILL."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    proc = subprocess.run([sys.executable, str(script), str(out), str(nth)], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]


def _install(kind: str, nth: int, phase: str) -> None:
    calls = {"n": 0}
    if kind == "tensors":
        from grokscope.store import files

        real = files.atomic_write_bytes

        def write(path, data):
            path = Path(path)
            if path.suffix == ".safetensors":
                calls["n"] += 1
                if calls["n"] == nth:
                    if phase == "renamed":
                        real(path, data)
                        _die()
                    fd, _ = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
                    os.write(fd, data if phase == "unrenamed" else data[: len(data) // 2])
                    os.fsync(fd)
                    _die()
            return real(path, data)

        files.atomic_write_bytes = write
    elif kind == "metrics":
        from grokscope.store.metrics import MetricsDB

        real_log = MetricsDB.log

        def log(self, step, values):
            calls["n"] += 1
            if calls["n"] == nth:
                if phase == "committed":
                    real_log(self, step, values)
                    _die()
                rows = [(int(step), str(k), float(v)) for k, v in values.items()]
                rows = rows if phase == "uncommitted" else rows[: max(1, len(rows) // 2)]
                self.conn.executemany("INSERT OR REPLACE INTO metrics (step, name, value) VALUES (?, ?, ?)", rows)
                _die()  # the transaction is open: SQLite must roll it back
            return real_log(self, step, values)

        MetricsDB.log = log
    else:
        raise SystemExit(f"unknown kind {kind!r}")


def _launch(argv: list[str]) -> None:
    kind, nth, phase, sep, *args = argv
    assert sep == "--" and phase in PHASES[kind], argv
    _install(kind, int(nth), phase)
    from grokscope.cli import main

    sys.exit(main(args))


# --------------------------------------------------------------------------- driving (runs in the test)


@dataclass(frozen=True)
class Kill:
    """One planned kill: ``kind`` 'moment' (SIGKILL after a random delay once training runs), 'tensors' or
    'metrics' (the launcher kills itself inside its ``nth`` write of that kind, at ``phase``)."""

    kind: str
    nth: int = 0
    phase: str = ""
    delay: float = 0.0


def random_kill(rng: random.Random, kinds=("moment", "tensors", "metrics")) -> Kill:
    kind = rng.choice(kinds)
    if kind == "moment":
        return Kill("moment", delay=rng.uniform(0.0, 1.5))
    return Kill(kind, nth=rng.randint(1, 8), phase=rng.choice(PHASES[kind]))


def grokscope_cmd(args: list[str], kill: Kill | None = None) -> list[str]:
    if kill is None or kill.kind == "moment":
        return [sys.executable, "-m", "grokscope", *args]
    return [sys.executable, str(HERE), kill.kind, str(kill.nth), kill.phase, "--", *args]


def wait_until_training(proc: subprocess.Popen, wal_files, started: float, timeout: float = 180.0) -> None:
    """Return once the process writes metrics (a ``*-wal`` file among ``wal_files()`` changed after ``started``) or
    has exited: kills then land inside training, whatever the machine's start-up time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for wal in wal_files():
            try:
                if wal.stat().st_mtime > started:
                    return
            except FileNotFoundError:
                pass
        time.sleep(0.01)


def run_with_kills(
    first: list[str],
    again: list[str],
    kills: list[Kill],
    *,
    wal_files,
    killpg: bool = False,
    after_kill=None,
    max_attempts: int = 200,
) -> list[str]:
    """Run ``first`` (grokscope arguments), delivering ``kills`` one per process; after each kill run ``again``
    (the resume command), until a process exits 0 (a run may complete before every planned kill lands).
    Returns the kinds of the SIGKILLs delivered, in order. ``killpg``: start each
    process in its own session and kill the whole group (driver and workers); ``after_kill(n)`` is called after
    each kill. A process that exits with anything but 0 or SIGKILL fails the test with its stderr."""
    args, delivered, pending = first, [], list(kills)
    for _ in range(max_attempts):
        kill = pending[0] if pending else None
        started = time.time()
        proc = subprocess.Popen(
            grokscope_cmd(args, kill), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=killpg
        )
        if kill is not None and kill.kind == "moment":
            wait_until_training(proc, wal_files, started)
            time.sleep(kill.delay)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL) if killpg else proc.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=900)
        if proc.returncode == -signal.SIGKILL:
            if kill is None:
                raise AssertionError(f"{' '.join(args)}: SIGKILL that no test sent (out of memory?)")
            delivered.append(pending.pop(0).kind)
            if after_kill is not None:
                after_kill(len(delivered))
            args = again
            continue
        if proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)}: exit {proc.returncode}: {err.decode()[-3000:]}")
        return delivered  # completed (possibly before a planned kill could land)
    raise AssertionError("never completed")


def stored_files(run_dir: Path) -> dict[str, str]:
    """{relative path: sha256} of a run's complete checkpoints (what a kill must never lose or change)."""
    folder = Path(run_dir) / "checkpoints"
    if not folder.is_dir():
        return {}
    return {
        f"checkpoints/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.glob("step_*.safetensors"))
    }


def checkpoint_bytes(run_dir: Path, step: int) -> bytes:
    return (Path(run_dir) / "checkpoints" / f"step_{step:08d}.safetensors").read_bytes()


def assert_same_run(reference, run) -> None:
    """Metrics, checkpoint steps and every checkpoint (tensors and bytes) equal; no temporary file left behind."""
    import torch

    assert reference.metrics.equals(run.metrics), (reference.dir, run.dir)
    assert reference.checkpoints == run.checkpoints
    for step in reference.checkpoints:
        a, b = reference.load_state_dict(step), run.load_state_dict(step)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), step
        assert checkpoint_bytes(reference.dir, step) == checkpoint_bytes(run.dir, step), step  # byte for byte
    assert not list(Path(run.dir).rglob("*.tmp"))
    assert run.status == "completed"


if __name__ == "__main__":
    _launch(sys.argv[1:])


@contextmanager
def interrupted_at_update(n: int) -> Iterator[pytest.ExceptionInfo[KeyboardInterrupt]]:
    """In the block, the n-th call of the training loop's ``train_step`` raises KeyboardInterrupt (as Ctrl-C would
    there), which the block must raise; ``train_step`` is restored afterwards. Yields pytest's ExceptionInfo."""
    import importlib

    loop = importlib.import_module("grokscope.training.loop")
    real, calls = loop.train_step, {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    loop.train_step = step
    try:
        with pytest.raises(KeyboardInterrupt) as info:
            yield info
    finally:
        loop.train_step = real
