"""Phase detection from stored metric curves: memorisation, circuit formation, cleanup, and the grok epoch.

The paper (Nanda et al. 2023, section 5.2) reads the boundaries by eye; this is a documented, deterministic
rule (ambiguity A6, ``docs/measures.md``). Input: a pandas DataFrame indexed by step/epoch (ascending) with
columns ``train_acc``, ``test_acc``, ``test_loss`` and, optionally, ``excluded_loss`` (read under the fixed-key
rule of :mod:`grokscope.measures.names`). Missing values are ignored per column.

Rule (all thresholds are the module constants):

1. ``grok_epoch``: the first step with test_acc >= GROK_ACC.
2. ``train_fit_epoch``: the first step with train_acc >= FIT_ACC.
3. ``memorisation_end`` (= circuit formation start): the step of the minimum of the smoothed excluded loss
   over [train_fit_epoch, grok_epoch] (to the end of the run if it never groks); without an excluded-loss
   column, train_fit_epoch. Memorisation is where train and excluded loss both fall; circuit formation starts
   where the excluded loss turns up.
4. With y = log10(test_loss) smoothed by a centred rolling median of SMOOTH_WINDOW points,
   y_hi = max y over [train_fit_epoch, grok_epoch] (the memorisation plateau), y_lo = min y over
   [grok_epoch, end], and span = y_hi - y_lo: ``circuit_formation_end`` (= cleanup start) is the LAST step in
   [memorisation_end, grok_epoch] with y >= y_hi - PHASE_FRACTION * span (where the final fall of the test
   loss begins; memorisation_end if there is none), and ``cleanup_end`` is the FIRST step >= grok_epoch with
   y <= y_lo + PHASE_FRACTION * span (the fall is over). Both are None if the run never groks.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from grokscope.measures import names

__all__ = ["FIT_ACC", "GROK_ACC", "PHASE_FRACTION", "Phases", "SMOOTH_WINDOW", "detect_phases", "grok_epoch"]

#: The one grok threshold: a run has grokked at the first step with test accuracy >= GROK_ACC.
GROK_ACC = 0.99
FIT_ACC = 0.99
PHASE_FRACTION = 0.1
SMOOTH_WINDOW = 5

RULE = (
    f"grok: first step test_acc>={GROK_ACC}; memorisation_end: argmin of smoothed excluded loss over "
    f"[first step train_acc>={FIT_ACC}, grok]; circuit_formation_end: last step in [memorisation_end, grok] with "
    f"log10 test loss (rolling median {SMOOTH_WINDOW}) >= hi - {PHASE_FRACTION}*(hi-lo), hi = max over "
    f"[train fit, grok], lo = min after grok; cleanup_end: first step >= grok with it <= lo + {PHASE_FRACTION}*(hi-lo)"
)


@dataclass(frozen=True)
class Phases:
    """Phase boundaries in steps (epochs for full-batch runs); None where a boundary is not reached.

    Phases: memorisation [0, memorisation_end); circuit formation [memorisation_end, circuit_formation_end);
    cleanup [circuit_formation_end, cleanup_end); after cleanup_end the run is "post-cleanup".
    """

    grok_epoch: int | None
    train_fit_epoch: int | None
    memorisation_end: int | None
    circuit_formation_end: int | None
    cleanup_end: int | None
    excluded_loss_column: str | None
    rule: str = RULE

    def phase_at(self, step: int) -> str:
        """The phase name at ``step``: memorisation, circuit_formation, cleanup, post_cleanup or unknown."""
        if self.memorisation_end is None:
            return "memorisation" if self.train_fit_epoch is None else "unknown"
        if step < self.memorisation_end:
            return "memorisation"
        if self.circuit_formation_end is None or step < self.circuit_formation_end:
            return "circuit_formation"
        if self.cleanup_end is None or step < self.cleanup_end:
            return "cleanup"
        return "post_cleanup"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _first_at_least(series: Any, threshold: float) -> int | None:
    s = series.dropna()
    hit = s[s >= threshold]
    return int(hit.index[0]) if len(hit) else None


def grok_epoch(metrics: Any, column: str = names.TEST_ACC, threshold: float = GROK_ACC) -> int | None:
    """The first step (index value) with ``metrics[column] >= threshold``; None if never or if the column is absent."""
    if column not in metrics.columns:
        return None
    return _first_at_least(metrics[column], threshold)


def _smooth(series: Any) -> Any:
    return series.dropna().rolling(SMOOTH_WINDOW, center=True, min_periods=1).median()


def detect_phases(metrics: Any) -> Phases:
    """Phase boundaries of one run from its metrics DataFrame (index = step, ascending). See the module rule."""
    df = metrics.sort_index()
    grok = grok_epoch(df)
    fit = grok_epoch(df, names.TRAIN_ACC, FIT_ACC)
    exc_col = names.read_as(names.EXCLUDED_LOSS, [c for c in df.columns if df[c].notna().any()])
    if fit is None:
        return Phases(grok, None, None, None, None, exc_col)

    upper = grok if grok is not None else df.index.max()
    mem_end = fit
    if exc_col is not None:
        exc = _smooth(df[exc_col])
        window = exc[(exc.index >= fit) & (exc.index <= upper)]
        if len(window):
            mem_end = int(window.idxmin())
    if grok is None or names.TEST_LOSS not in df.columns:
        return Phases(grok, fit, mem_end, None, None, exc_col)

    test = df[names.TEST_LOSS].dropna()
    test = test[test > 0]
    y = _smooth(test.map(math.log10))
    plateau = y[(y.index >= fit) & (y.index <= grok)]
    after = y[y.index >= grok]
    if not len(plateau) or not len(after):
        return Phases(grok, fit, mem_end, None, None, exc_col)
    hi, lo = float(plateau.max()), float(after.min())
    span = max(hi - lo, 0.0)
    before = y[(y.index >= mem_end) & (y.index <= grok)]
    still_high = before[before >= hi - PHASE_FRACTION * span]
    circ_end = int(still_high.index[-1]) if len(still_high) else mem_end
    done = after[after <= lo + PHASE_FRACTION * span]
    clean_end = int(done.index[0]) if len(done) else None
    return Phases(grok, fit, mem_end, circ_end, clean_end, exc_col)
