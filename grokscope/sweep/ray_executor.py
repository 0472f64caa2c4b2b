"""The Ray executor (optional extra ``pip install 'grokscope[ray]'``): jobs run as Ray tasks on a cluster.

Each task trains its cells into a temporary directory on the worker and returns the finished run directories
packed as tar bytes; the driver, which owns the sweep directory, unpacks them into ``cells/`` (via a
temporary name and a rename, so a cell directory is never half-written). An interrupted cell from an earlier
local run is shipped to the worker packed the same way and resumed there. A worker lost in the middle of a cell
(its process or node died) is retried by Ray (``retries`` times, from the start of the job, in a fresh
directory), so a cell is recorded exactly once.

``RayExecutor(address=None)`` starts a local Ray instance with ``workers`` CPUs (default: the usable cores);
``address="auto"`` or ``"ray://host:10001"`` joins a running cluster (every node needs grokscope installed).

GPUs: when the cells' device is CUDA (``--device cuda``, or ``auto`` on a cluster that has GPUs) every task asks
for one GPU (``num_gpus=1``), so Ray runs it on a GPU node and sets its ``CUDA_VISIBLE_DEVICES`` to the GPU it
holds; as many jobs run at once as the cluster has GPUs, and cells are packed into ensembles of up to 64
(:mod:`grokscope.sweep.devices`). Otherwise tasks ask for no GPU.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import socket
import sqlite3
import tarfile
import tempfile
import time
import warnings
from pathlib import Path

from grokscope.store.metrics import MetricsDB
from grokscope.store.run import CONFIG
from grokscope.sweep.devices import Placement, ray_placement
from grokscope.sweep.jobs import CellResult, Job, available_cores, run_job_guarded
from grokscope.sweep.layout import SweepDir, SweepError

__all__ = ["RayExecutor", "pack_dir", "unpack_dir"]

# Testing hook (tests of lost workers and retries), a directory named in this variable of the workers' environment.
# Every attempt of a job appends "PID CELL..." to ``attempts.log`` there. The first job to start (the one that creates
# the file ``crashed``) ends its worker process abruptly at its CRASH_AT_WRITE-th metrics write, in the middle of
# training (or on finishing, should it write fewer), so its first attempt never returns and Ray must retry it. A job
# with a cell named in the file ``crash-always`` crashes the same way on every attempt (its retries run out). While
# the file ``hold`` exists, an attempt waits after logging itself (at most HOLD_LIMIT seconds): a test removes a node
# while its jobs are known to be running.
CRASH_ONCE_ENV = "GROKSCOPE_SWEEP_TEST_CRASH_ONCE"
CRASH_AT_WRITE = 3
HOLD_LIMIT = 120.0


def pack_dir(d: Path | str) -> bytes:
    """A run directory as uncompressed tar bytes (paths relative to the directory). SQLite write-ahead logs are
    folded into their databases first; a log that could not be folded is shipped; shared-memory and lock files
    are left out."""
    buf = io.BytesIO()
    d = Path(d)
    _checkpoint_wal(d)
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(d.rglob("*")):
            if (not p.is_file() or p.name.endswith((".lock", "-shm"))
                    or (p.name.endswith("-wal") and p.stat().st_size == 0)):
                continue
            tar.add(p, arcname=str(p.relative_to(d)), recursive=False)
    return buf.getvalue()


def unpack_dir(blob: bytes, d: Path | str) -> None:
    d = Path(d)
    d.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(d, filter="data")


def install_cell(sweep: SweepDir, name: str, blob: bytes) -> None:
    """Put a finished run (tar bytes) at ``cells/NAME``, replacing an interrupted copy, with renames only."""
    incoming = sweep.cells / f".incoming-{name}-{os.getpid()}"
    shutil.rmtree(incoming, ignore_errors=True)
    unpack_dir(blob, incoming)
    target = sweep.cell_dir(name)
    trash = None
    if target.exists():
        trash = sweep.cells / f".trash-{name}-{os.getpid()}"
        shutil.rmtree(trash, ignore_errors=True)
        target.rename(trash)
    incoming.rename(target)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def _checkpoint_wal(d: Path) -> None:
    """Fold SQLite write-ahead logs into the database files before packing (the -wal files are not shipped)."""
    for db in d.rglob("*.sqlite"):
        try:
            conn = sqlite3.connect(db)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
        except sqlite3.Error:
            pass


def ray_job(job: Job, threads: int | None) -> list[tuple[CellResult, bytes | None]]:
    """The Ray task: run ``job`` in a temporary directory, return each cell's result and packed run."""
    crash = _test_crash_planned(job)
    if crash:
        _crash_at_metrics_write(CRASH_AT_WRITE)

    tmp = Path(tempfile.mkdtemp(prefix="grokscope-sweep-"))
    try:
        root = tmp / "cells"
        root.mkdir()
        for name, blob in job.payload.items():
            unpack_dir(blob, root / name)
        results = run_job_guarded(job, root, threads)
        out: list[tuple[CellResult, bytes | None]] = []
        for r in results:
            d = root / r.name
            if (d / CONFIG).is_file():
                out.append((r, pack_dir(d)))
            else:
                out.append((r, None))
        if crash:  # the job wrote fewer metrics rows than CRASH_AT_WRITE: still never return from this attempt
            os._exit(1)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _test_crash_planned(job: Job) -> bool:
    """The testing hook (see CRASH_ONCE_ENV): log this attempt; True when it must crash."""
    hook_dir = os.environ.get(CRASH_ONCE_ENV)
    if not hook_dir:
        return False
    d = Path(hook_dir)
    with open(d / "attempts.log", "a") as f:
        f.write(f"{os.getpid()} {' '.join(job.names)}\n")
    deadline = time.monotonic() + HOLD_LIMIT
    while (d / "hold").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    always = d / "crash-always"
    if always.is_file() and set(always.read_text().split()) & set(job.names):
        return True
    try:
        fd = os.open(d / "crashed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()} {' '.join(job.names)}".encode())
    os.close(fd)
    return True


def _crash_at_metrics_write(n: int) -> None:
    """Exit this process abruptly right after its n-th metrics write (a worker lost in the middle of training)."""
    real, calls = MetricsDB.log, [0]

    def log(self, step, values):
        real(self, step, values)
        calls[0] += 1
        if calls[0] >= n:
            os._exit(1)

    setattr(MetricsDB, "log", log)  # noqa: B010 (the process dies with the patch: it never serves another task)


def _check_reachable(address: str, timeout: float = 10.0) -> None:
    """Raise :class:`SweepError` (one line) when nothing takes a TCP connection at the host:port of a Ray address:
    ``ray.init`` retries an unreachable cluster address (host:port) forever instead of failing."""
    hostport = address[len("ray://"):] if address.startswith("ray://") else address
    if "://" in hostport:
        return
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        return  # "auto", "local" or a form Ray resolves itself
    host = host.strip("[]")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise SweepError(
            f"--address {address}: cannot connect to Ray (nothing answers at {host}:{port}: {reason})") from None


class RayExecutor:
    """Sends jobs to Ray. ``threads`` torch threads (= Ray CPUs) per task, and one GPU per task when the cells run
    on CUDA (:meth:`place`); ``retries`` for lost workers (a lost node: its tasks are retried elsewhere)."""

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, threads: int | None = None,
                 retries: int = 3):
        try:
            import ray  # noqa: F401
        except ImportError:
            raise SweepError("--executor ray needs Ray: pip install 'grokscope[ray]'") from None

        self.address = address
        self.threads = threads or 1
        self.requested_workers = workers or None
        self.workers = workers if workers else (available_cores() // self.threads if address is None else None)
        self.retries = retries
        self.gpus_per_job = 0
        self._started = False

    def prepare(self) -> None:
        """Connect to (or start) Ray; learn the number of parallel tasks from the cluster's CPUs."""
        import ray

        if not ray.is_initialized():
            # a cluster has its own CPUs
            num_cpus = max(1, (self.workers or 1) * self.threads) if self.address is None else None
            if self.address is not None:
                _check_reachable(self.address)
            try:
                # Ray Client warns before it raises; the error below says it in one line
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    ray.init(address=self.address, num_cpus=num_cpus, include_dashboard=False,
                             logging_level=logging.WARNING, log_to_driver=False)
            except Exception as e:  # noqa: BLE001 - connection problems are user errors
                first = str(e).strip().splitlines()[0] if str(e).strip() else ""
                raise SweepError(
                    f"--address {self.address}: cannot connect to Ray ({type(e).__name__}: {first})") from None
            self._started = True
        if not self.workers:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            self.workers = max(1, cpus // self.threads)

    def place(self, device: str, config, max_ensemble: int | None) -> Placement:
        """Ask for a GPU per task when the cells run on CUDA; as many parallel jobs as the cluster has GPUs (or
        room for CPU tasks). The GPUs' memory bounds the ensembles: this machine's GPU when it has one, else 16 GB
        is assumed (Ray does not say)."""
        import ray

        self.prepare()
        resources = ray.cluster_resources()
        try:
            p = ray_placement(device, config, cluster_gpus=int(resources.get("GPU", 0)),
                              parallel_cpu_jobs=max(1, int(resources.get("CPU", 1)) // self.threads),
                              workers=self.requested_workers, max_ensemble=max_ensemble)
        except ValueError as e:
            self.close()
            raise SweepError(f"--device {device}: {e}") from None
        self.workers, self.gpus_per_job = p.workers, p.gpus_per_job
        return p

    def close(self) -> None:
        """Shut down the Ray connection (or local instance) this executor started."""
        import ray

        if self._started:
            ray.shutdown()
            self._started = False

    def task_options(self) -> dict:
        """The resources and retries each Ray task asks for (``ray.remote(**options)``)."""
        return {"num_cpus": self.threads, "num_gpus": self.gpus_per_job, "max_retries": self.retries}

    def run(self, jobs: list[Job], sweep: SweepDir, on_done) -> None:
        import ray

        if not jobs:
            return
        self.prepare()
        task = ray.remote(**self.task_options())(ray_job)
        pending = {}
        try:
            for job in jobs:
                if job.kind == "resume":
                    job.payload = {n: pack_dir(sweep.cell_dir(n)) for n in job.names
                                   if (sweep.cell_dir(n) / CONFIG).is_file()}
                pending[task.remote(job, self.threads)] = job
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        out = ray.get(ref)
                    except Exception as e:  # noqa: BLE001 - retries exhausted or a task error: retried next run
                        msg = f"ray task failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                        on_done(job, [CellResult(n, "error", 0.0, job.kind, msg) for n in job.names])
                        continue
                    results = []
                    for r, blob in out:
                        if blob is not None:
                            install_cell(sweep, r.name, blob)
                        results.append(r)
                    on_done(job, results)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
            self.close()
