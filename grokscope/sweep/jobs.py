"""Jobs: what executors run. Planning (pure) and the worker-side function shared by every executor.

A job is one of ``train`` (one new cell), ``resume`` (one interrupted cell) or ``ensemble`` (several new
cells trained as one batched computation by :func:`grokscope.training.ensemble.train_ensemble`). Cells are packed
into ensembles when the ensemble's own check (:func:`~grokscope.training.ensemble.check_ensemble_configs`) accepts
them (they differ only in seeds, lr, weight decay, split seed or train fraction); otherwise each cell is its own
job, so cells run in separate processes.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from grokscope.config import ExperimentConfig, field_paths
from grokscope.store.run import Run, is_run_dir
from grokscope.sweep.layout import LOCKS_DIR, cell_lock, run_is_done
from grokscope.training import TrainingDiverged, resume, train
from grokscope.training.ensemble import ENSEMBLE_FIELDS, check_ensemble_configs, train_ensemble

__all__ = ["CellResult", "Job", "available_cores", "execute_job", "plan_jobs", "run_job_guarded", "use_gpu",
           "worker_init", "worker_label"]

TRAIN, RESUME, ENSEMBLE = "train", "resume", "ensemble"


@dataclass
class Job:
    """A unit of work for one worker. ``configs`` are config dicts (JSON-able, so jobs cross process and
    machine boundaries); ``names`` the cells' names (their directories under the cells root)."""

    kind: str
    names: list[str]
    configs: list[dict[str, Any]]
    payload: dict[str, bytes] = field(default_factory=dict)  # Ray: packed partial runs to resume, by name
    device: str | None = None  # the sweep's --device: an interrupted cell resumes there (new cells' configs name it)

    @property
    def size(self) -> int:
        return len(self.names)


@dataclass
class CellResult:
    """What a worker reports for one cell: ``status`` is the run's status ('completed', 'failed' when it
    diverged) or 'error' (an exception, in ``error``); ``seconds`` the wall time spent on it (an ensemble's time is
    shared equally among its members); ``how`` is 'train', 'resume', 'ensemble' or 'skipped' (already done);
    ``worker`` says where it ran (host, process, and the GPU the worker sees)."""

    name: str
    status: str
    seconds: float
    how: str
    error: str = ""
    worker: str = ""


# --------------------------------------------------------------------------- planning


def _group_key(cfg: ExperimentConfig) -> str:
    """Cells with equal keys differ only in what ensemble members may differ in."""
    return repr(sorted((k, v) for k, v in field_paths(cfg).items() if k not in ENSEMBLE_FIELDS))


def _can_pack(configs: list[ExperimentConfig]) -> bool:
    try:
        check_ensemble_configs(configs)
    except ValueError:
        return False
    return True


def plan_jobs(
    cells: Sequence[Any],
    states: dict[str, str],
    *,
    workers: int,
    ensemble: bool = True,
    max_ensemble: int = 16,
    device: str | None = None,
) -> list[Job]:
    """Jobs for every cell that is not done: one ``resume`` job per interrupted cell, then the new cells, packed
    into ensembles of compatible cells when ``ensemble`` (at most ``max_ensemble`` members; groups are split into
    a multiple of ``workers`` chunks of nearly equal size so that every worker gets a share). ``device``: the
    sweep's ``--device``, where interrupted cells resume (the configs of new cells name it already)."""
    jobs = [Job(RESUME, [c.name], [c.config.to_dict()], device=device) for c in cells if states[c.name] == "partial"]
    new = [c for c in cells if states[c.name] == "new"]
    if not ensemble or max_ensemble < 2:
        return jobs + [Job(TRAIN, [c.name], [c.config.to_dict()], device=device) for c in new]
    groups: dict[str, list[Any]] = {}
    for c in new:
        groups.setdefault(_group_key(c.config), []).append(c)
    packed: list[Job] = []
    for members in groups.values():
        if len(members) < 2 or not _can_pack([c.config for c in members]):
            packed += [Job(TRAIN, [c.name], [c.config.to_dict()], device=device) for c in members]
            continue
        for chunk in split_evenly(members, workers=workers, max_size=max_ensemble):
            if len(chunk) == 1:
                packed.append(Job(TRAIN, [chunk[0].name], [chunk[0].config.to_dict()], device=device))
            else:
                packed.append(Job(ENSEMBLE, [c.name for c in chunk], [c.config.to_dict() for c in chunk],
                                  device=device))
    return jobs + packed


def split_evenly(items: Sequence[Any], *, workers: int, max_size: int) -> list[list[Any]]:
    """Split ``items`` (order kept) into k nearly equal chunks: k is the smallest multiple of ``workers`` with
    chunks of at most ``max_size``, capped at one chunk per item."""
    n = len(items)
    if n == 0:
        return []
    w = max(1, workers)
    k = max(math.ceil(n / max_size), 1)
    k = math.ceil(k / w) * w
    k = min(k, n)
    base, extra = divmod(n, k)
    out, start = [], 0
    for i in range(k):
        size = base + (1 if i < extra else 0)
        out.append(list(items[start : start + size]))
        start += size
    return out


# --------------------------------------------------------------------------- worker side


def set_threads(threads: int | None) -> None:
    if threads:
        torch.set_num_threads(int(threads))


def execute_job(job: Job, cells_root: Path | str, *, lock_dir: Path | str | None = None,
                threads: int | None = None) -> list[CellResult]:
    """Run ``job`` with its cells' run directories under ``cells_root``. Holds each cell's lock while working on
    it, and looks at the directory again after taking the lock: a cell another process finished meanwhile is
    skipped, one it left interrupted is resumed, so no cell is ever trained twice or by two processes at once."""
    set_threads(threads)
    root = Path(cells_root)
    locks = Path(lock_dir) if lock_dir is not None else root / LOCKS_DIR
    configs = [ExperimentConfig.from_dict(c) for c in job.configs]
    if job.kind == ENSEMBLE:
        with contextlib.ExitStack() as stack:
            for name in sorted(job.names):
                stack.enter_context(cell_lock(locks, name))
            if all(_empty(root / n) for n in job.names):
                t0 = time.perf_counter()
                try:
                    runs = train_ensemble(configs, [root / n for n in job.names], progress=False)
                except (ValueError, TypeError) as e:
                    if any(not _empty(root / n) for n in job.names):
                        raise
                    print(f"grokscope sweep: ensemble not possible ({e}); training the cells one by one",
                          file=sys.stderr)
                else:
                    dt = (time.perf_counter() - t0) / len(runs)
                    return [CellResult(n, r.status, dt, ENSEMBLE) for n, r in zip(job.names, runs)]
            # Fallback (or some member already exists): each cell on its own, in this worker.
            return [_one(root / n, cfg, n, job.device) for n, cfg in zip(job.names, configs)]
    results = []
    for name, cfg in zip(job.names, configs):
        with cell_lock(locks, name):
            if run_is_done(root / name):
                results.append(CellResult(name, "completed", 0.0, "skipped"))
                continue
            results.append(_one(root / name, cfg, name, job.device))
    return results


def run_job_guarded(job: Job, cells_root: Path | str, threads: int | None) -> list[CellResult]:
    """:func:`execute_job` that turns a job-level exception into per-cell errors (they are retried on the next
    run): what every executor runs on its workers. Each result says which worker ran it."""
    try:
        results = execute_job(job, cells_root, threads=threads)
    except Exception as e:  # noqa: BLE001
        results = [CellResult(n, "error", 0.0, job.kind, f"{type(e).__name__}: {e}") for n in job.names]
    where = worker_label()
    for r in results:
        r.worker = where
    return results


def worker_label() -> str:
    """``host:pid``, and ``gpu ID`` when the process sees a chosen GPU (its ``CUDA_VISIBLE_DEVICES``)."""
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    return f"{socket.gethostname()}:{os.getpid()}" + (f" gpu {gpu}" if gpu else "")


def available_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def _empty(d: Path) -> bool:
    return not d.exists() or (d.is_dir() and not any(d.iterdir()))


def _one(d: Path, cfg: ExperimentConfig, name: str, device: str | None = None) -> CellResult:
    """Train or resume one cell in this process (the caller holds its lock); an interrupted cell resumes on
    ``device`` when given."""
    if run_is_done(d):
        return CellResult(name, Run(d).status, 0.0, "skipped")
    how = RESUME if is_run_dir(d) else TRAIN
    t0 = time.perf_counter()
    try:
        run = resume(d, progress=False, device=device) if how == RESUME else train(cfg, d, progress=False)
        status = run.status
        err = ""
    except TrainingDiverged as e:
        status, err = "failed", str(e)
    except Exception as e:  # noqa: BLE001 - one bad cell must not stop the sweep; reported and retried next time
        status, err = "error", f"{type(e).__name__}: {e}"
    return CellResult(name, status, time.perf_counter() - t0, how, err)


def worker_init(threads: int | None, gpus: Any = None) -> None:
    """Process-pool initializer: die with the driver (Linux), take this worker's GPU from the queue ``gpus`` (when
    the sweep runs on GPUs) and use ``threads`` torch threads."""
    _die_with_parent()
    if gpus is not None:
        use_gpu(gpus.get(timeout=60))
    set_threads(threads)


def use_gpu(gpu: str) -> None:
    """Let this process see the one GPU ``gpu`` (a ``CUDA_VISIBLE_DEVICES`` entry), so its ``cuda`` and ``auto`` are
    that GPU. Must run before torch initialises CUDA here; RuntimeError when it came too late."""
    if torch.cuda.is_initialized():
        raise RuntimeError(f"CUDA was initialised in this sweep worker before it could be given GPU {gpu}")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    if torch.cuda.is_available() and torch.cuda.device_count() != 1:
        raise RuntimeError(f"this sweep worker sees {torch.cuda.device_count()} GPUs after choosing GPU {gpu}: "
                           "CUDA read CUDA_VISIBLE_DEVICES before it was set")


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this process when its parent (the sweep driver) exits, so a killed driver
    leaves no worker training behind; the run store makes that interruption safe to resume."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() == 1:  # the parent died before prctl took effect
            os._exit(1)
    except Exception:  # noqa: BLE001 - best effort; cell locks still prevent duplicate work
        pass
