"""A sweep directory on disk.

Layout::

    SWEEP/
      sweep.json        the spec (base config in full, axes, seeds, outcome parameters), rewritten on each start
      index.sqlite      the sweep index: one row per cell (see grokscope.sweep.index)
      events.jsonl      one JSON line per driver event (start, job, cell finished, end): the sweep's history
      cells/NAME/       one run directory per cell (a normal grokscope run: config.json, metrics.sqlite, ...)
      cells/.locks/     one lock file per cell, held (flock) by the process that trains it
      report.html       written by 'grokscope report SWEEP'

Only the driver writes sweep.json, index.sqlite and events.jsonl, under an exclusive lock on
``.driver.lock``: two drivers cannot run one sweep. A worker holds its cell's lock while it trains, so
even a worker orphaned by a killed driver is never joined by a second one on the same cell.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

from grokscope.config import ConfigError, ExperimentConfig
from grokscope.store.files import atomic_write_bytes
from grokscope.store.run import CONFIG, Run, RunError, is_run_dir
from grokscope.sweep.naming import same_cell
from grokscope.sweep.spec import SweepSpec, spec_from_dict

SPEC_FILE = "sweep.json"
INDEX_FILE = "index.sqlite"
EVENTS_FILE = "events.jsonl"
CELLS_DIR = "cells"
LOCKS_DIR = ".locks"
DRIVER_LOCK = ".driver.lock"

# Cell states seen by the driver.
NEW, PARTIAL, DONE = "new", "partial", "done"

fcntl: ModuleType | None
try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None


class SweepError(RunError):
    """A problem with a sweep directory that the user can fix; one line (exit code 2 in the CLI)."""


def is_sweep_dir(path: Path | str) -> bool:
    return (Path(path) / SPEC_FILE).is_file()


class SweepDir:
    """Paths and bookkeeping of one sweep directory."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.cells = self.path / CELLS_DIR

    # -- paths
    def cell_dir(self, name: str) -> Path:
        return self.cells / name

    @property
    def spec_path(self) -> Path:
        return self.path / SPEC_FILE

    @property
    def index_path(self) -> Path:
        return self.path / INDEX_FILE

    # -- creation and the spec
    def create(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise SweepError(f"{self.path}: exists and is not a directory; choose another --out")
        if (self.path.is_dir() and not is_sweep_dir(self.path)
                and any(p.name != DRIVER_LOCK for p in self.path.iterdir())):
            if is_run_dir(self.path):
                raise SweepError(f"{self.path}: holds a single run, not a sweep; choose another --out")
            raise SweepError(f"{self.path}: exists, is not empty and is not a sweep directory; choose another --out")
        self.path.mkdir(parents=True, exist_ok=True)

    def write_spec(self, spec_dict: dict) -> None:
        """Write sweep.json (atomically), then make sure cells/ exists: a directory with cells has a spec."""
        atomic_write_bytes(self.spec_path, (json.dumps(spec_dict, indent=2) + "\n").encode())
        (self.cells / LOCKS_DIR).mkdir(parents=True, exist_ok=True)

    def read_spec_dict(self) -> dict:
        try:
            return json.loads(self.spec_path.read_text())
        except FileNotFoundError:
            raise SweepError(f"{self.path}: not a sweep directory (no {SPEC_FILE})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SweepError(f"{self.spec_path}: damaged ({e})") from None

    def read_spec(self) -> SweepSpec:
        try:
            return spec_from_dict(self.read_spec_dict())
        except ConfigError as e:
            raise SweepError(f"{self.spec_path}: {e}") from None

    # -- events
    def log_event(self, event: str, **fields) -> None:
        line = json.dumps({"time": round(time.time(), 3), "event": event, "pid": os.getpid(), **fields}, default=str)
        with open(self.path / EVENTS_FILE, "a") as f:
            f.write(line + "\n")
            f.flush()

    def events(self) -> list[dict]:
        path = self.path / EVENTS_FILE
        if not path.is_file():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill
        return out

    # -- locks
    @contextlib.contextmanager
    def driver_lock(self) -> Iterator[None]:
        """Exclusive, non-blocking: a second driver on the same sweep fails at once with one line."""
        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / DRIVER_LOCK, "a+") as f:
            if fcntl is not None:
                try:
                    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise SweepError(f"{self.path}: another sweep driver is running on this directory; wait for it "
                                     "or stop it") from None
            try:
                yield
            finally:
                if fcntl is not None:
                    fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    # -- cells
    def cell_state(self, name: str, config: ExperimentConfig) -> str:
        """NEW (nothing on disk), PARTIAL (a run to resume) or DONE (completed or diverged).

        Raises :class:`SweepError` when the directory holds something else: a run of another config, or files
        that are not a run."""
        d = self.cell_dir(name)
        if not d.exists():
            return NEW
        if not is_run_dir(d):
            if d.is_dir() and all(_config_temporary(p) for p in d.iterdir()):
                # empty, or a cell killed while its run directory was being created (between the mkdir and the
                # rename of config.json): nothing of a run is there yet, so the cell starts anew (clean_leftovers
                # removes the temporary before a run)
                return NEW
            raise SweepError(f"{d}: is not a run directory; move it away and re-run the sweep")
        try:
            run = Run(d)
        except RunError as e:
            raise SweepError(f"{d}: unreadable run ({e}); move it away and re-run the sweep") from None
        if not same_cell(run.config, config):  # the device may differ: a sweep moves between machines
            raise SweepError(f"{d}: holds a run of a different config than its cell; move it away and re-run the sweep")
        status = run.meta.get("status", "new")
        return DONE if status in ("completed", "failed") else PARTIAL

    def clean_leftovers(self) -> None:
        """Remove temporary directories left by an interrupted transfer (``.incoming-*``, ``.trash-*``), and the
        config.json temporary of a cell killed while its run directory was being created (so the cell's run can be
        created there)."""
        if not self.cells.is_dir():
            return
        for p in self.cells.iterdir():
            if p.name.startswith((".incoming-", ".trash-")):
                shutil.rmtree(p, ignore_errors=True)
            elif p.is_dir() and not is_run_dir(p):
                for q in p.iterdir():
                    if _config_temporary(q):
                        q.unlink(missing_ok=True)


@contextlib.contextmanager
def cell_lock(lock_dir: Path, name: str) -> Iterator[None]:
    """Hold the cell's lock (blocking): waits for any other process still training this cell."""
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / f"{name}.lock", "a+") as f:
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def run_is_done(path: Path) -> bool:
    """A run directory whose run completed or diverged (nothing left to train)."""
    if not is_run_dir(path):
        return False
    try:
        return Run(path).meta.get("status") in ("completed", "failed")
    except RunError:
        return False


def _config_temporary(path: Path) -> bool:
    """A temporary file of an atomic write of config.json (``store.files.atomic_write_bytes``)."""
    return path.is_file() and path.name.startswith(f".{CONFIG}.") and path.name.endswith(".tmp")
