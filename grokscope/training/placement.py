"""Where a training run computes: the device its config (or ``--device``) names, and what differs off the CPU.

On the CPU a run keeps the CPU-only helpers of :mod:`grokscope.runtime` (subnormals flushed on every thread, the
adaptive thread count). On a GPU they do not apply: the GPU flushes nothing and the thread count does not set the
step time, so the run skips them and its meta says so. MPS has no float64: a float64 loss or score is computed on
the CPU (:func:`via_cpu`; autograd carries the gradient back to the device).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

from grokscope.device import resolve_device
from grokscope.runtime import ThreadGovernor, flush_denormal
from grokscope.store.run import RunError

__all__ = ["IdleGovernor", "cpu_runtime", "draw_generator", "run_device", "via_cpu"]


def run_device(name: str, *, resuming: Path | None = None) -> torch.device:
    """The device ``name`` (``train.device`` or ``--device``) stands for here; RunError, one line, when it is missing
    (for a resumed run, with how to continue it on this machine)."""
    try:
        return resolve_device(name)
    except ValueError as e:
        hint = f"; continue it here with 'grokscope train --resume {resuming} --device cpu'" if resuming else ""
        raise RunError(f"train.device {name}: {e}{hint}") from None


class IdleGovernor(ThreadGovernor):
    """The thread governor of a run off the CPU: it changes nothing, and says why in the meta."""

    def __init__(self, device: torch.device):
        super().__init__(1)
        self.device = device

    def describe(self) -> str:
        return f"not governed on {self.device.type} (the thread governor tunes CPU updates only)"


@contextmanager
def cpu_runtime(device: torch.device, flush: bool, fixed_threads: bool) -> Iterator[tuple[str, ThreadGovernor]]:
    """(the subnormal line for the meta, the thread governor) of a run on ``device``. On the CPU: subnormals flushed
    (``train.flush_denormal``) and an adaptive governor (a fixed one when ``fixed_threads``), scoped to the block;
    elsewhere neither."""
    if device.type != "cpu":
        yield f"not applied on {device.type} (subnormal flushing concerns the CPU)", IdleGovernor(device)
        return
    governor = ThreadGovernor(1 if fixed_threads else None)  # a fixed count: a governor doing nothing
    with flush_denormal(flush) as denormals, governor:  # scoped: IEEE again after training
        yield denormals, governor


def via_cpu(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``fn(logits, labels, dtype)`` computed on the CPU (for MPS, which has no float64); the result and, through
    autograd, the gradient come back to the caller's tensors."""

    def on_cpu(logits: Tensor, labels: Tensor, dtype: torch.dtype) -> Tensor:
        return fn(logits.cpu(), labels.cpu(), dtype)

    return on_cpu


def draw_generator(device: torch.device) -> torch.Generator:
    """torch's default generator of ``device``, the one a module's own draws (dropout) use there: the loop seeds it
    every epoch (seeding the generator itself costs ~1 us; ``torch.manual_seed`` seeds every backend, ~90 us)."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    if device.type == "mps":
        from torch.mps import _get_default_mps_generator  # torch has no public handle on it

        return _get_default_mps_generator()
    return torch.default_generator
