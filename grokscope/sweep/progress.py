"""The sweep's progress: cells finished out of the total, cells per second in this run, the ETA, the phases so far.

On a terminal it is a tqdm bar (``wd-fraction:  42%|████▏     | 30/72 cells [02:10, 0.23 cells/s, ETA 3m03s,
comp=9 grok=11 memo=10]``); elsewhere (a log file, a cluster job) the same line is logged at most once a minute.
The rate counts the cells finished by this run only (cells already done when it started are not), over the
time since it started: ensembles finish many cells at once, so a mean over the run says more than a recent rate.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

__all__ = ["SweepProgress", "format_seconds"]

_BAR = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} cells [{elapsed}{postfix}]"


def format_seconds(s: float) -> str:
    """``45s``, ``3m14s``, ``2h05m``."""
    s = max(0, round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class SweepProgress:
    """Progress of ``total`` cells of which ``done`` were finished before this run. ``enabled``: True a bar, False
    nothing, None a bar on a terminal and otherwise a line through ``log`` every ``every`` seconds."""

    def __init__(self, total: int, done: int, name: str, *, enabled: bool | None, log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic, every: float = 60.0):
        self.total, self.done, self.initial, self.name = total, done, done, name
        self.phases = ""
        self._clock, self._log, self._every = clock, log, every
        self._start = clock()
        self._last_line = self._start
        tty = sys.stderr.isatty()
        self._bar = None
        self._lines = enabled is None and not tty
        if enabled or (enabled is None and tty):
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total, initial=done, desc=name, bar_format=_BAR, dynamic_ncols=True)
            self._bar.set_postfix_str(self._stats(), refresh=True)

    def rate(self) -> float | None:
        """Cells per second finished by this run; None before the first."""
        elapsed = self._clock() - self._start
        ran = self.done - self.initial
        return ran / elapsed if ran > 0 and elapsed > 0 else None

    def eta(self) -> float | None:
        """Seconds until every cell is done at this run's rate; None before the first cell finished."""
        rate = self.rate()
        return (self.total - self.done) / rate if rate else None

    def _stats(self) -> str:
        rate, eta = self.rate(), self.eta()
        parts = [f"{rate:.3g} cells/s" if rate else "- cells/s", f"ETA {format_seconds(eta)}" if eta is not None
                 else "ETA ?"]
        return ", ".join(parts + ([self.phases] if self.phases else []))

    def line(self) -> str:
        """One line: ``NAME: 30/72 cells, 0.23 cells/s, ETA 3m03s, comp=9 ...``."""
        return f"{self.name}: {self.done}/{self.total} cells, {self._stats()}"

    def update(self, n: int, phases: str = "") -> None:
        self.done += n
        self.phases = phases
        if self._bar is not None:
            self._bar.set_postfix_str(self._stats(), refresh=False)
            self._bar.update(n)
        elif self._lines and (self._clock() - self._last_line >= self._every or self.done >= self.total):
            self._last_line = self._clock()
            self._log(self.line())

    def write(self, message: str) -> None:
        """A message above the bar (or logged)."""
        if self._bar is not None:
            self._bar.write(message)
        else:
            self._log(message)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
