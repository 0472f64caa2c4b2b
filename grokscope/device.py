"""Where grokscope's computations run: the device a config or ``--device`` names, and the numerics settings of it.

A device is named as ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``; ``auto`` picks CUDA, then Apple's MPS,
then the CPU. A config records the name it was given (``train.device``, default ``auto``), and a run's meta the
device it ran on, so a run moves between machines: checkpoints and the resume state are always stored as CPU
tensors, and a run started on one device resumes on another.

What stays bitwise: the same config on the same device (and, on CUDA, with ``train.deterministic``) gives the same
numbers. Across devices the numbers are close, not equal (other kernels, other summation orders).

TF32: CUDA can run float32 matrix products in TF32 (10 mantissa bits), about 1e-3 relative error, which would
swamp the measures (losses compared near 1e-7). :func:`device_settings` keeps it off unless ``train.allow_tf32``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = [
    "DEVICE_NAMES", "check_device_name", "describe_device", "device_settings", "float64_device", "mps_available",
    "resolve_device",
]

#: How a device may be named (``cuda:N`` with N a device index).
DEVICE_NAMES = ("auto", "cpu", "cuda", "cuda:N", "mps")
_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device_name(name: str) -> None:
    """ValueError unless ``name`` is one of :data:`DEVICE_NAMES` (syntax only: a config is valid on any machine)."""
    if not isinstance(name, str) or not _PATTERN.fullmatch(name):
        raise ValueError(f"expected one of {', '.join(DEVICE_NAMES)}; got {name!r}")


def mps_available() -> bool:
    """Whether this torch has a usable MPS device (Apple silicon)."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(name: str = "auto") -> torch.device:
    """The :class:`torch.device` a name stands for on this machine; ValueError (one line, saying what is missing)
    when that device is not here."""
    check_device_name(name)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("mps") if mps_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "mps":
        if not mps_available():
            raise ValueError("'mps' asked for, but this machine has no MPS device (Apple silicon with macOS 12.3+)")
        return torch.device("mps")
    if not torch.cuda.is_available():
        built = torch.version.cuda or "none: a CPU-only build"
        raise ValueError(f"{name!r} asked for, but no CUDA device is visible (torch {torch.__version__}, CUDA {built})")
    index = int(name.partition(":")[2] or torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise ValueError(f"{name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device("cuda", index)


def describe_device(device: torch.device) -> str:
    """One line for a run's meta: ``cpu``, ``cuda:0 (NVIDIA H100 80GB HBM3)``, ``mps``."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def float64_device(device: torch.device) -> torch.device:
    """Where a float64 computation on ``device``'s tensors runs: there, except on MPS (no float64): the CPU."""
    return torch.device("cpu") if device.type == "mps" else device


@contextmanager
def device_settings(device: torch.device, *, deterministic: bool = False, allow_tf32: bool = False) -> Iterator[str]:
    """Run the block with ``device``'s numerics settings, restoring what it found; yields one line for the meta.

    On CUDA: TF32 matrix products and convolutions only when ``allow_tf32``; with ``deterministic``, torch's
    deterministic algorithms (and the cuBLAS workspace setting they need), which makes a run repeat bit for bit on
    the same GPU at some cost in speed (scatter-adds and index-adds become serial). Elsewhere nothing changes:
    CPU runs are deterministic already.
    """
    if device.type != "cuda":
        yield "deterministic" if device.type == "cpu" else "default"
        return
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.are_deterministic_algorithms_enabled(), os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    torch.backends.cuda.matmul.allow_tf32 = allow_tf32
    torch.backends.cudnn.allow_tf32 = allow_tf32
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)
    try:
        yield f"{'deterministic' if deterministic else 'nondeterministic'}, TF32 {'on' if allow_tf32 else 'off'}"
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[0], saved[1]
        torch.use_deterministic_algorithms(saved[2])
        if saved[3] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = saved[3]
