"""Running a sweep: the driver (:func:`run_sweep`) and the local executor (a pool of worker processes).

The driver expands the spec (rejecting bad specs before anything runs), takes the sweep directory's lock,
looks at every cell's directory (done, interrupted or new), plans jobs (interrupted cells are resumed, new
compatible cells are packed into ensembles), hands them to an executor, and records each finished cell in the
sweep index. Re-running the same command therefore skips finished cells, finishes interrupted ones and never
trains a cell twice.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import multiprocessing as mp
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from grokscope.config import apply_overrides
from grokscope.device import check_device_name
from grokscope.sweep.devices import CPU_ENSEMBLE, Placement, local_placement
from grokscope.sweep.index import SweepIndex, aggregate_seeds, read_cell_outcome
from grokscope.sweep.jobs import CellResult, Job, available_cores, plan_jobs, run_job_guarded, worker_init
from grokscope.sweep.layout import DONE, NEW, PARTIAL, SPEC_FILE, SweepDir, SweepError
from grokscope.sweep.outcome import PHASES, resolve_tau
from grokscope.sweep.progress import SweepProgress
from grokscope.sweep.spec import Cell, SweepSpec, expand

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["LocalExecutor", "SweepPlan", "SweepResult", "available_cores", "plan_sweep", "run_sweep", "with_device"]

OnDone = Callable[[Job, list[CellResult]], None]


class Executor(Protocol):
    name: str

    def run(self, jobs: list[Job], sweep: SweepDir, on_done: OnDone) -> None: ...


class LocalExecutor:
    """Runs jobs on this machine: ``workers`` processes (spawned; each with ``threads`` torch threads), or in
    this very process when ``workers`` is 0 (no pool: simplest to debug).

    ``threads`` defaults to 1: cells are the parallelism, and several torch threads per process on busy cores
    (OpenMP threads waiting on each other) measured 10x slower here than one thread each.

    On GPUs (:meth:`place` with a CUDA device) there is one worker per visible GPU unless ``workers`` says
    otherwise, and each worker sees only its own GPU (:mod:`grokscope.sweep.devices`). ``gpus`` and
    ``gpu_memory`` (bytes) stand in for what torch sees (tests)."""

    name = "local"

    def __init__(self, workers: int | None = None, threads: int | None = None, *, gpus: int | None = None,
                 gpu_memory: int | None = None):
        if workers is not None and workers < 0:
            raise SweepError(f"--workers: must be >= 0, got {workers}")
        self.requested_workers = workers
        self.workers = available_cores() if workers is None else int(workers)
        self.threads = threads or 1
        self.gpus, self.gpu_memory = gpus, gpu_memory
        self.gpu_ids: tuple[str, ...] = ()

    def place(self, device: str, config, max_ensemble: int | None) -> Placement:
        """Decide the workers (and their GPUs) and the largest ensemble for cells on ``device``."""
        try:
            p = local_placement(device, config, workers=self.requested_workers, cores=available_cores(),
                                max_ensemble=max_ensemble, gpus=self.gpus, memory=self.gpu_memory)
        except ValueError as e:
            raise SweepError(f"--device {device}: {e}") from None
        self.workers, self.gpu_ids = p.workers, p.gpu_ids
        return p

    def run(self, jobs: list[Job], sweep: SweepDir, on_done: OnDone) -> None:
        if not jobs:
            return
        if self.workers == 0:
            import torch

            before = torch.get_num_threads()
            try:
                for job in jobs:
                    on_done(job, run_job_guarded(job, sweep.cells, self.threads))
            finally:
                torch.set_num_threads(before)
            return
        ctx = mp.get_context("spawn")
        n = min(self.workers, len(jobs))
        gpus = None
        if self.gpu_ids:  # each worker takes its GPU from the queue before torch initialises CUDA in it
            gpus = ctx.Queue()
            for gpu in self.gpu_ids[:n]:
                gpus.put(gpu)
        pool = cf.ProcessPoolExecutor(max_workers=n, mp_context=ctx, initializer=worker_init,
                                      initargs=(self.threads, gpus))
        futures: dict[cf.Future, Job] = {}
        try:
            for job in jobs:
                futures[pool.submit(run_job_guarded, job, str(sweep.cells), None)] = job
            for fut in cf.as_completed(futures):
                job = futures[fut]
                try:
                    results = fut.result()
                except Exception as e:  # noqa: BLE001 - a worker process died (BrokenProcessPool) or similar
                    lost = f"worker lost: {type(e).__name__}: {e}"
                    results = [CellResult(n, "error", 0.0, job.kind, lost) for n in job.names]
                on_done(job, results)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)


# --------------------------------------------------------------------------- driver


@dataclass
class SweepPlan:
    """The state of every cell and the jobs that will run (what ``--dry-run`` prints)."""

    spec: SweepSpec
    cells: list[Cell]
    states: dict[str, str]
    jobs: list[Job]
    placement: Placement | None = None

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for v in self.states.values() if v == s) for s in (DONE, PARTIAL, NEW)}

    def describe(self) -> str:
        c = self.counts()
        lines = [
            f"sweep {self.spec.name}: {len(self.cells)} cells = "
            + " x ".join(f"{len(a)} {a.key}" for a in self.spec.axes)
            + (" x " if self.spec.axes else "")
            + f"{len(self.spec.seeds)} seed{'s' if len(self.spec.seeds) != 1 else ''} "
            + f"({', '.join(self.spec.seed_fields)})",
            f"cells: {c[DONE]} done, {c[PARTIAL]} to resume, {c[NEW]} new",
        ]
        kinds: dict[str, int] = {}
        for j in self.jobs:
            kinds[j.kind] = kinds.get(j.kind, 0) + 1
        if self.jobs:
            sizes = [j.size for j in self.jobs if j.kind == "ensemble"]
            lines.append(
                f"jobs: {len(self.jobs)} ("
                + ", ".join(f"{n} {k}" for k, n in kinds.items())
                + (f"; ensembles of {min(sizes)}-{max(sizes)} cells" if sizes else "")
                + ")"
            )
        if self.placement is not None:
            lines.append(self.placement.describe())
        return "\n".join(lines)

    def table(self) -> str:
        """One line per cell: state, name and axis values."""
        job_of = {n: j.kind for j in self.jobs for n in j.names}
        rows = []
        for c in self.cells:
            state = self.states[c.name]
            todo = job_of.get(c.name, "-")
            vals = "  ".join(f"{k}={v}" for k, v in c.point)
            rows.append(f"{state:8} {todo:9} {c.name:40}  {vals}  seed={c.seed}")
        return "\n".join(rows)


@dataclass
class SweepResult:
    """What :func:`run_sweep` returns: the directory, the index as a DataFrame, per-status counts, timings."""

    dir: Path
    frame: pd.DataFrame
    ran: int
    skipped: int
    errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


def plan_sweep(spec: SweepSpec, out: Path | str, *, workers: int | None = 1, ensemble: bool = True,
               max_ensemble: int | None = None, device: str | None = None, gpus: int | None = None) -> SweepPlan:
    """The plan for ``spec`` in ``out`` on this machine's local executor, without running or writing anything.
    ``workers`` None: the executor's default (the usable cores, or one per GPU); ``max_ensemble`` None: 16 on the
    CPU, 64 on a GPU (bounded by its memory); ``device``: the cells' ``train.device`` (default: the spec's)."""
    cells = with_device(expand(spec), device)
    sd = SweepDir(out)
    if sd.path.exists() and not (sd.path / SPEC_FILE).is_file() and sd.path.is_dir() and any(sd.path.iterdir()):
        sd.create()  # raises the clear error about a foreign directory
    states = {c.name: sd.cell_state(c.name, c.config) for c in cells}
    placement = _place(LocalExecutor(workers, gpus=gpus), cells, max_ensemble)
    jobs = plan_jobs(cells, states, workers=placement.workers or available_cores(), ensemble=ensemble,
                     max_ensemble=placement.max_ensemble, device=device)
    return SweepPlan(spec, cells, states, jobs, placement)


def with_device(cells: list[Cell], device: str | None) -> list[Cell]:
    """The cells with ``train.device`` set to ``device`` (unchanged when None); names stay (the device is how, not
    what: :data:`~grokscope.sweep.naming.HOW_FIELDS`). SweepError (one line) for a name that is no device."""
    if device is None:
        return cells
    try:
        check_device_name(device)
    except ValueError as e:
        raise SweepError(f"--device: {e}") from None
    return [dataclasses.replace(c, config=apply_overrides(c.config, {"train.device": device})) for c in cells]


def _place(ex: Executor, cells: list[Cell], max_ensemble: int | None) -> Placement:
    """Where the executor runs the cells (their device is the first cell's: it is no axis)."""
    device = cells[0].config.train.device
    place = getattr(ex, "place", None)
    if place is not None:
        return place(device, cells[0].config, max_ensemble)
    return Placement(device, getattr(ex, "workers", None) or available_cores(), max_ensemble or CPU_ENSEMBLE)


def _make_executor(executor: str | Executor, workers: int | None, threads: int | None, address: str | None) -> Executor:
    """The executor named (or given), prepared (e.g. connected to Ray, so the plan knows how many tasks run at once)."""
    ex: Executor
    if isinstance(executor, str):
        if executor == "local":
            ex = LocalExecutor(workers, threads)
        elif executor == "ray":
            from grokscope.sweep.ray_executor import RayExecutor

            ex = RayExecutor(address=address, workers=workers, threads=threads)
        else:
            raise SweepError(f"--executor: unknown executor {executor!r}; known: local, ray")
    else:
        ex = executor
    if hasattr(ex, "prepare"):
        ex.prepare()
    return ex


def run_sweep(
    spec: SweepSpec,
    out: Path | str,
    *,
    executor: str | Executor = "local",
    workers: int | None = None,
    threads: int | None = None,
    address: str | None = None,
    ensemble: bool = True,
    max_ensemble: int | None = None,
    device: str | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every cell of ``spec`` not yet done into the sweep directory ``out`` and return the index.

    ``executor``: "local" (worker processes; ``workers`` defaults to the usable cores, or one per GPU; 0 runs in
    this process), "ray" (see :mod:`grokscope.sweep.ray_executor`; ``address`` of the cluster, None starts a local
    instance) or an object with ``run(jobs, sweep_dir, on_done)``. ``device``: the cells' ``train.device``
    (default: the spec's; it is not part of the cells' names, so a sweep continues on another machine).
    ``max_ensemble``: the largest ensemble (default 16 on the CPU, 64 on a GPU, bounded by its memory).
    Raises :class:`SweepError` / ``ConfigError`` (one line) before any run starts when the spec, the device or the
    directory is unusable."""
    log = log or (lambda s: print(s, file=sys.stderr))
    cells = with_device(expand(spec), device)
    by_name = {c.name: c for c in cells}
    sd = SweepDir(out)
    created = not sd.path.exists()
    sd.create()
    try:
        ex = _make_executor(executor, workers, threads, address)
        placement = _place(ex, cells, max_ensemble)
    except BaseException:
        if created:  # nothing was written yet: leave no empty directory behind (e.g. an unreachable --address)
            shutil.rmtree(sd.path, ignore_errors=True)
        raise

    t_start = time.perf_counter()
    with sd.driver_lock():
        sd.write_spec(spec.to_dict())
        sd.clean_leftovers()
        states = {c.name: sd.cell_state(c.name, c.config) for c in cells}
        # workers=0 (in this process) packs as the default pool would: an ensemble member's last bits depend on
        # its ensemble-mates (the padded sums), so the same sweep must pack the same way whichever executor runs it
        jobs = plan_jobs(cells, states, workers=placement.workers or available_cores(), ensemble=ensemble,
                         max_ensemble=placement.max_ensemble, device=device)
        index = SweepIndex(sd.index_path)
        try:
            same_params = index.meta().get("outcome") == spec.outcome.to_dict()
            index.set_axes(spec.axis_fields)
            index.set_meta({"name": spec.name, "size": len(cells), "outcome": spec.outcome.to_dict()})
            dropped = index.delete_except(by_name)
            if dropped:
                log(f"{dropped} cells of an earlier spec are no longer in this sweep's index "
                    f"(their runs stay in {sd.cells})")
            done = [c for c in cells if states[c.name] == DONE]
            for c in done:  # make sure finished cells are indexed with the current outcome parameters
                row = index.get(c.name)
                if same_params and _indexed_with(row, c, spec):
                    continue
                status, o, secs = read_cell_outcome(sd.cell_dir(c.name), spec.outcome)
                row = row or {}
                index.upsert(c, status=status, outcome=o, seconds=row.get("seconds") or secs,
                             executor=row.get("executor") or "")
            for c in cells:
                if states[c.name] != DONE and index.get(c.name) is None:
                    index.upsert(c, status="pending")
            plan = SweepPlan(spec, cells, states, jobs, placement)
            sd.log_event("start", executor=ex.name, cells=len(cells), done=len(done), jobs=len(jobs),
                         placement=placement.describe())
            log(plan.describe())
            for job in jobs:
                sd.log_event("job", kind=job.kind, cells=job.names)

            errors: dict[str, str] = {}
            bar = SweepProgress(len(cells), len(done), spec.name, enabled=progress, log=log)

            def on_done(job: Job, results: list[CellResult]) -> None:
                for r in results:
                    cell = by_name[r.name]
                    try:
                        status, o, _ = read_cell_outcome(sd.cell_dir(r.name), spec.outcome)
                    except Exception as e:  # noqa: BLE001 - a cell whose directory cannot be read is an error row
                        status, o = "error", None
                        r.error = r.error or f"{type(e).__name__}: {e}"
                    if r.status == "error":
                        status = "error"
                        errors[r.name] = r.error
                        bar.write(f"cell {r.name}: {r.error}")
                    index.upsert(cell, status=status, outcome=o, seconds=r.seconds, executor=ex.name, error=r.error)
                    sd.log_event("cell", cell=r.name, status=status, how=r.how, seconds=round(r.seconds, 3),
                                 phase=o.phase if o else None, worker=r.worker)
                counts = index.query("SELECT phase, count(*) AS n FROM cells WHERE phase IS NOT NULL GROUP BY phase")
                bar.update(len(results), " ".join(f"{p[:4]}={n}" for p, n in zip(counts["phase"], counts["n"])))

            try:
                ex.run(jobs, sd, on_done)
            finally:
                bar.close()
            elapsed = time.perf_counter() - t_start
            sd.log_event("end", seconds=round(elapsed, 3), errors=len(errors))
            frame = index.frame()
        finally:
            index.close()
    ran = sum(1 for s in states.values() if s != DONE)
    return SweepResult(sd.path, frame, ran=ran, skipped=len(cells) - ran, errors=errors, seconds=elapsed)


def _indexed_with(row: dict | None, cell: Cell, spec: SweepSpec) -> bool:
    """True when the index row of a finished cell was computed with the spec's outcome parameters."""
    if not row or row.get("status") not in ("completed", "failed") or row.get("budget") is None:
        return False
    o = spec.outcome
    budget = o.budget if o.budget is not None else cell.config.train.epochs
    return row["budget"] == budget and row["tau"] == resolve_tau(o.tau, budget) and row["threshold"] == o.threshold


def summarize(frame, spec: SweepSpec | None = None) -> str:
    """Counts per status and phase, and for a sweep with two or more axes a text phase map (seed majority)."""
    lines = []
    status = frame["status"].value_counts().to_dict() if len(frame) else {}
    lines.append("cells: " + ", ".join(f"{n} {s}" for s, n in status.items()))
    phases = {p: int((frame["phase"] == p).sum()) for p in PHASES}
    lines.append("phases: " + ", ".join(f"{n} {p}" for p, n in phases.items()))
    axes = spec.axis_fields if spec is not None else []
    if len(axes) >= 2 and len(frame):
        x, y = axes[0], axes[1]
        agg = aggregate_seeds(frame, [y, x])
        xs = sorted(frame[x].dropna().unique(), key=_sort_key)
        ys = sorted(frame[y].dropna().unique(), key=_sort_key)
        letter = {"comprehension": "C", "grokking": "G", "memorisation": "M", "confusion": "X", None: "."}
        cellw = max(6, max(len(str(v)) for v in xs) + 1)
        lines.append("phase map (seed majority; C comprehension, G grokking, M memorisation, X confusion); "
                     f"rows {y}, columns {x}:")
        lines.append(" " * 10 + "".join(f"{str(v):>{cellw}}" for v in xs))
        for yv in reversed(ys):
            row = f"{str(yv):>10}"
            for xv in xs:
                sel = agg[(agg[x] == xv) & (agg[y] == yv)]
                ph = sel["phase"].iloc[0] if len(sel) else None
                ph = ph if isinstance(ph, str) else None
                row += f"{letter[ph]:>{cellw}}"
            lines.append(row)
    return "\n".join(lines)


def _sort_key(v):
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))
