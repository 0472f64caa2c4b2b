"""How grokscope's computations run on the CPU: subnormal floats flushed to zero on every intra-op thread.

After grokking, the cross-entropy's gradient holds values far below float32's smallest normal number
(a wrong class's probability of 1e-40, divided by the batch, cast back from the float64 loss). On many x86
CPUs a matrix product or an elementwise kernel that reads or writes such *subnormal* numbers takes a
microcode assist per operation, so the same step runs several times slower after grokking (docs/speed.md).

Flush-to-zero (FTZ) and denormals-are-zero (DAZ) are bits of each thread's MXCSR register, so
``torch.set_flush_denormal(True)`` covers only the thread that calls it; torch's intra-op worker threads (the
OpenMP team that runs matrix products and elementwise kernels) keep the slow path. :func:`flush_denormal`
sets the bits on the calling thread and on every thread of that team, by running one parallel region of the
OpenMP runtime torch loaded (its ``GOMP_parallel`` entry point, which GNU's and LLVM's runtimes both export),
each thread calling ``torch.set_flush_denormal`` for itself; worker threads created later inherit the bits
from the thread that creates them. It then checks the effect: a parallel multiplication whose every product
is subnormal must come out all zeros.

Scoped, not process-wide: the context manager restores the previous state when it exits, so code around a
training run (a notebook, a user's own model) keeps IEEE semantics. What changes inside is only that values
below 1.18e-38 (float32) become zero; every loss, metric and measure grokscope reports is many orders of
magnitude above that. Runs record the setting (``train.flush_denormal``), so a resumed run uses what the fresh
run used, and is bitwise the same.
"""

from __future__ import annotations

import ctypes
import glob
import os
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache

import torch

__all__ = ["ThreadGovernor", "denormal_status", "flush_denormal", "flushes_denormals"]

_lock = threading.Lock()
_depth = 0  # nesting depth of flush_denormal on this process (it sets process-wide thread state)


@cache
def _openmp_parallel():
    """The ``GOMP_parallel`` function of the OpenMP runtime torch uses, or None when it cannot be found."""
    lib_dir = os.path.join(os.path.dirname(torch.__file__), "lib")
    candidates = []
    for pattern in ("libgomp*.so*", "libomp*.so*", "libiomp5*.so*", "libomp*.dylib", "libiomp5*.dylib"):
        candidates += sorted(glob.glob(os.path.join(lib_dir, pattern)))
    candidates += ["libgomp.so.1", "libomp.so", "libiomp5.so"]  # loaded from the system by torch's own libraries
    for name in candidates:
        try:
            lib = ctypes.CDLL(name)  # the already-loaded library when torch loaded it (same path or soname)
            fn = lib.GOMP_parallel
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
        fn.restype = None
        return fn
    return None


def _on_every_thread(flag: bool) -> None:
    """``torch.set_flush_denormal(flag)`` on this thread and on every thread of torch's OpenMP team."""
    torch.set_flush_denormal(flag)
    parallel = _openmp_parallel()
    if parallel is None:
        return

    @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    def region(_data):  # runs once on each thread of the team (the caller is thread 0)
        torch.set_flush_denormal(flag)

    parallel(ctypes.cast(region, ctypes.c_void_p), None, 0, 0)  # 0 threads: the team torch's next region gets


def _flushed_fraction() -> float:
    """The fraction of a parallel product of subnormal results that came out zero (1.0: every thread flushes)."""
    n = 65536 * max(4, torch.get_num_threads())  # chunks of at least torch's grain size (32768) for every thread
    tiny = torch.full((n,), 1e-30, dtype=torch.float32)
    return float(((tiny * 1e-10) == 0).to(torch.float64).mean())  # 1e-40: subnormal in float32


def flushes_denormals() -> bool:
    """True when every intra-op thread flushes subnormals to zero right now."""
    return _flushed_fraction() == 1.0


def denormal_status() -> str:
    """One line on how subnormals are handled right now (recorded in a run's meta, shown by ``grokscope show``)."""
    frac = _flushed_fraction()
    threads = torch.get_num_threads()
    if frac == 1.0:
        return "flushed to zero on the one thread" if threads == 1 else f"flushed to zero on all {threads} threads"
    if frac == 0.0:
        return "kept (IEEE subnormals)"
    return f"flushed on some of {threads} threads only (the OpenMP runtime was not found)"


@contextmanager
def flush_denormal(enabled: bool = True) -> Iterator[str]:
    """Flush subnormals to zero on every intra-op thread inside the block; yields :func:`denormal_status`.

    ``enabled=False`` changes nothing (yields the status as it is). Nested uses are fine: the outermost one
    restores the state it found. On CPUs without the flag (not x86) it changes nothing, and where the flag cannot
    reach every thread (an OpenMP runtime without ``GOMP_parallel``) it is not set at all: a flush on some threads
    only would make the numbers depend on which thread computed which rows.
    """
    global _depth
    if not enabled:
        yield denormal_status()
        return
    with _lock:
        outer = _depth == 0
        was_on = flushes_denormals() if outer else True
        changed = outer and not was_on
        if changed:
            _on_every_thread(True)
            if _flushed_fraction() < 1.0:  # some threads flush and others not: numbers would depend on the thread
                _on_every_thread(False)  # count and the scheduling, so flush on none (IEEE, as without the flag)
                changed = False
        _depth += 1
    try:
        yield denormal_status()
    finally:
        with _lock:
            _depth -= 1
            if changed:
                _on_every_thread(False)


class ThreadGovernor:
    """Picks the intra-op thread count of a training loop by measuring its own updates.

    torch's OpenMP threads wait for each other at the end of every parallel region. When another process wants
    one of the cores, a waiting thread spins or sleeps while the thread it waits for is descheduled, and a
    2-thread step runs far slower than the same step on one thread (docs/speed.md, "A shared machine"). The
    governor times the updates in windows of ``window`` updates at the current count. After the first window,
    when a window's median is ``slack`` times the best median seen at that count, and every ``probe_every``
    updates (so it notices when the machine frees up), it times one window at the other count (1 or ``threads``)
    and keeps whichever was faster. Results do not depend on the thread count (the fast path's updates and the
    logged metrics are bitwise the same at 1 and 2 threads; tests/test_runtime.py), so switching changes only
    speed. The cost on an idle machine: one window at one thread per ``probe_every`` updates.

    Use as a context manager: the thread count found on entry is restored on exit.
    """

    def __init__(self, threads: int | None = None, *, window: int = 16, probe_every: int = 500, slack: float = 1.6):
        self.max_threads = threads or torch.get_num_threads()
        self.window, self.probe_every, self.slack = window, probe_every, slack
        self.current = self.max_threads
        self.samples: list[float] = []
        self.best: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.probing: int | None = None  # the count the other (probe) window runs at
        self.since_probe = probe_every  # the first window is followed by a probe: a machine can be busy from the start
        self.switches = 0

    @property
    def enabled(self) -> bool:
        return self.max_threads > 1

    def __enter__(self) -> ThreadGovernor:
        self.entry_threads = torch.get_num_threads()
        if self.enabled:
            torch.set_num_threads(self.current)
        return self

    def __exit__(self, *exc) -> None:
        torch.set_num_threads(self.entry_threads)

    def _set(self, n: int) -> None:
        if n != torch.get_num_threads():
            torch.set_num_threads(n)

    def record(self, seconds: float) -> None:
        """One update took ``seconds`` (at the count set now); may change the thread count for the next ones."""
        if not self.enabled:
            return
        self.samples.append(seconds)
        if len(self.samples) < self.window:
            return
        median = statistics.median(self.samples)
        self.samples = []
        n = torch.get_num_threads()
        self.last[n] = median
        self.best[n] = min(self.best.get(n, median), median)
        if self.probing is not None:  # a probe window just ended: keep the faster of the two counts
            other = self.current
            if median < self.last.get(other, float("inf")):
                self.current = n
                self.switches += 1
            else:  # the current count stays: its last window is the new normal (no probe after every slow window)
                self.best[other] = self.last[other]
            self.probing = None
            self._set(self.current)
            return
        self.since_probe += self.window
        slow = median > self.slack * self.best[n]
        if slow or self.since_probe >= self.probe_every:
            self.since_probe = 0
            self.probing = 1 if self.current == self.max_threads else self.max_threads
            self._set(self.probing)

    def describe(self) -> str:
        if not self.enabled:
            return f"{torch.get_num_threads()} (fixed)"
        return f"adaptive 1-{self.max_threads}: {self.current} at the end, {self.switches} switches"
