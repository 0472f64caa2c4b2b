"""Where a sweep's jobs run: the devices of this machine (or of a Ray cluster), how many workers, how large an ensemble.

The cells' ``train.device`` (``grokscope sweep --device NAME``, else the base config's, ``auto``) decides:

- ``cpu`` (or ``auto`` with no GPU): one worker per usable core, ensembles of at most 16 cells (``--ensemble-size``).
- ``cuda`` (or ``auto`` with GPUs): one worker process per visible GPU. Each worker's ``CUDA_VISIBLE_DEVICES`` names
  its own GPU, set before torch initialises CUDA in it, so the worker's ``cuda`` and ``auto`` are that GPU.
  Ensembles of at most 64 cells, fewer when :func:`member_bytes` says that many do not fit a GPU's memory (an
  explicit ``--ensemble-size`` is taken as given, with a note when the estimate says fewer fit).
  More ``--workers`` than GPUs share the GPUs round-robin (the memory bound is divided among them).
- ``cuda:N``: every worker on GPU N (one worker unless ``--workers``).
- ``mps``: one worker (one device).

On Ray (:func:`ray_placement`) each job asks for one GPU (``num_gpus=1``) when the cells' device is CUDA, so Ray
places it on a GPU node and sets ``CUDA_VISIBLE_DEVICES`` itself; there are as many parallel jobs as GPUs.

Nothing here initialises CUDA except :func:`gpu_memory` (the driver reads the GPUs' sizes; the workers are spawned
processes, so that is safe).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from grokscope.config import ExperimentConfig
from grokscope.device import check_device_name, resolve_device

__all__ = ["CPU_ENSEMBLE", "GPU_ENSEMBLE", "Placement", "ensemble_limit", "gpu_count", "gpu_memory",
           "local_placement", "member_bytes", "ray_placement", "visible_gpu_ids"]

#: The default largest ensemble on the CPU and on a GPU (``--ensemble-size`` overrides).
CPU_ENSEMBLE, GPU_ENSEMBLE = 16, 64
#: The share of a GPU's memory an ensemble may plan to use (the rest: CUDA context, allocator slack, measures).
MEMORY_SHARE = 0.7
#: A Ray cluster does not say how much memory its GPUs have: the smallest common one is assumed (a 16 GB T4)
#: unless this machine has a GPU to read.
ASSUMED_GPU_MEMORY = 16 * 2**30


@dataclass(frozen=True)
class Placement:
    """How a sweep's jobs are spread: ``workers`` parallel jobs, ensembles of at most ``max_ensemble`` cells.
    ``gpu_ids``: the ``CUDA_VISIBLE_DEVICES`` of each local worker (empty: the workers' environment is left as it
    is); ``gpus_per_job``: what each Ray task asks for (``num_gpus``)."""

    device: str
    workers: int
    max_ensemble: int
    gpu_ids: tuple[str, ...] = ()
    gpus_per_job: int = 0
    note: str = ""

    def describe(self) -> str:
        if self.gpu_ids:
            per = ", ".join(f"worker {i}: GPU {g}" for i, g in enumerate(self.gpu_ids))
            n = len(set(self.gpu_ids))
            where = f"{self.workers} worker{'s' if self.workers != 1 else ''} on {n} GPU{'s' if n != 1 else ''} ({per})"
        elif self.gpus_per_job:
            where = f"{self.workers} parallel jobs, {self.gpus_per_job} GPU each (Ray)"
        else:
            where = f"{self.workers} worker{'s' if self.workers != 1 else ''}" if self.workers else "in this process"
        note = f"; {self.note}" if self.note else ""
        return f"device {self.device}: {where}; ensembles of at most {self.max_ensemble} cells{note}"


def gpu_count() -> int:
    """The CUDA devices visible to this process (0 on a CPU-only build)."""
    return int(torch.cuda.device_count())


def visible_gpu_ids(count: int, environ: Mapping[str, str] = os.environ) -> list[str]:
    """What each of ``count`` visible GPUs is called in ``CUDA_VISIBLE_DEVICES`` (so a worker given one of them sees
    exactly that GPU): the driver's own list when it has one ("2,3" gives "2" and "3"), else "0" .. "count-1"."""
    listed = [s.strip() for s in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if s.strip()]
    if "CUDA_VISIBLE_DEVICES" in environ and len(listed) >= count:
        return listed[:count]
    return [str(i) for i in range(count)]


def gpu_memory(indices: range | list[int]) -> int | None:
    """The smallest total memory (bytes) of these CUDA devices, or None without CUDA."""
    if not torch.cuda.is_available() or not indices:
        return None
    return min(int(torch.cuda.get_device_properties(i).total_memory) for i in indices)


def member_bytes(config: ExperimentConfig) -> int:
    """An estimate (on the generous side) of the device memory one ensemble member needs at its peak, in bytes:
    weights, gradients and the two AdamW moments (float32), plus the larger of a training step's activations kept
    for the backward pass over the training rows (every position, as the general path) with its float64 logits,
    and an evaluation's over every row of the task (the measures read the whole table); a quarter more for the
    allocator's slack."""
    from grokscope.models import build_model
    from grokscope.tasks import make_task

    task = make_task(config.task)
    model = build_model(config.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    params = sum(t.numel() for t in model.parameters())
    m, ctx, out = config.model, int(task.n_ctx), int(task.d_vocab_out)
    rows, train_rows = int(task.tokens.shape[0]), int(task.train_idx.numel())
    layers = max(1, m.n_layers)
    step = train_rows * (ctx * (6 * m.d_model + 2 * m.n_heads * ctx + 2 * m.d_mlp) * layers * 4 + out * 3 * 8)
    evaluation = rows * (ctx * (4 * m.d_model + 2 * m.n_heads * ctx + 2 * m.d_mlp) * 4 + out * 2 * 8)
    return math.ceil(1.25 * (4 * 4 * params + max(step, evaluation)))


def ensemble_limit(config: ExperimentConfig, memory: int | None, requested: int, sharing: int = 1) -> int:
    """``requested`` members, fewer when ``MEMORY_SHARE`` of ``memory`` bytes (shared by ``sharing`` workers) holds
    fewer (at least 1); ``requested`` when the memory is unknown."""
    if memory is None:
        return requested
    fits = math.floor(MEMORY_SHARE * memory / max(1, sharing) / member_bytes(config))
    return max(1, min(requested, fits))


def _gib(n: int) -> str:
    return f"{n / 2**30:.0f} GiB"


def local_placement(device: str, config: ExperimentConfig, *, workers: int | None, cores: int,
                    max_ensemble: int | None = None, gpus: int | None = None, memory: int | None = None) -> Placement:
    """The placement of the local executor on this machine (ValueError, one line, when the device is not here).
    ``gpus`` and ``memory`` (bytes per GPU) default to what torch sees; tests inject them."""
    check_device_name(device)
    n = gpu_count() if gpus is None else int(gpus)
    if device in ("cpu", "mps") or (device == "auto" and n == 0):
        if device != "cpu":
            resolve_device(device)  # mps missing: the one-line error
        auto = resolve_device("auto").type if device == "auto" else device
        default_workers = cores if auto == "cpu" else 1
        return Placement(device, default_workers if workers is None else workers, max_ensemble or CPU_ENSEMBLE)
    if n == 0:
        resolve_device(device)  # raises: no CUDA device is visible (says which torch)
    if device.startswith("cuda:"):
        index = int(device.partition(":")[2])
        if index >= n:
            raise ValueError(f"{device!r} asked for, but only {n} CUDA device(s) are visible")
        w = 1 if workers is None else workers
        mem = memory if memory is not None else gpu_memory([index])
        k, note = _gpu_ensemble(config, mem, max_ensemble, max(1, w))
        return Placement(device, w, k, note=note)
    ids = visible_gpu_ids(n)
    w = n if workers is None else workers
    sharing = max(1, math.ceil(w / n))
    mem = memory if memory is not None else gpu_memory(range(n))
    k, note = _gpu_ensemble(config, mem, max_ensemble, sharing)
    gpu_ids = tuple(ids[i % n] for i in range(w))
    return Placement(device, w, k, gpu_ids=gpu_ids, note=note)


def ray_placement(device: str, config: ExperimentConfig, *, cluster_gpus: int, parallel_cpu_jobs: int,
                  workers: int | None, max_ensemble: int | None = None, memory: int | None = None) -> Placement:
    """The placement of the Ray executor on a cluster with ``cluster_gpus`` GPUs and room for ``parallel_cpu_jobs``
    CPU jobs. ``memory``: bytes per GPU (default: this machine's first GPU, else :data:`ASSUMED_GPU_MEMORY`)."""
    check_device_name(device)
    if device.startswith("cuda:"):
        raise ValueError(f"{device!r} names a GPU of one machine; on Ray give 'cuda' (Ray gives each job its own GPU)")
    if device == "cuda" and cluster_gpus == 0:
        raise ValueError("'cuda' asked for, but the Ray cluster has no GPUs (its resources list none)")
    if device in ("cpu", "mps") or (device == "auto" and cluster_gpus == 0):
        return Placement(device, workers or parallel_cpu_jobs, max_ensemble or CPU_ENSEMBLE)
    mem = memory if memory is not None else (gpu_memory([0]) or ASSUMED_GPU_MEMORY)
    k, note = _gpu_ensemble(config, mem, max_ensemble, 1)
    return Placement(device, workers or cluster_gpus, k, gpus_per_job=1, note=note)


def _gpu_ensemble(config: ExperimentConfig, memory: int | None, asked: int | None, sharing: int) -> tuple[int, str]:
    """The largest ensemble on a GPU and a note: the default :data:`GPU_ENSEMBLE` bounded by the memory estimate;
    an ``--ensemble-size`` the user gave is taken as given (they may know their GPUs better than the estimate),
    with a note when the estimate says fewer fit."""
    if memory is None:
        return asked or GPU_ENSEMBLE, "GPU memory unknown: the ensemble size is not bounded by it"
    fits = ensemble_limit(config, memory, 10**9, sharing)
    share = f" shared by {sharing} workers" if sharing > 1 else ""
    estimate = f"{fits} members fit {MEMORY_SHARE:.0%} of {_gib(memory)}{share} (estimate)"
    if asked is not None:
        return asked, (f"--ensemble-size {asked} taken as given; {estimate}" if asked > fits else "")
    k = min(GPU_ENSEMBLE, fits)
    return k, (f"at most {estimate}" if k < GPU_ENSEMBLE else "")
