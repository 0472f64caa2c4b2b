"""The outcome of one run: epochs to accuracy thresholds, the Liu et al. phase, final values. Pure functions.

**Phase rule** (Liu et al. 2022, "Towards understanding grokking", their phase-diagram code): with
``train_epoch`` / ``test_epoch`` the first logged epoch whose train / test accuracy is >= ``threshold``
(0.9) within the budget B, and gap = test_epoch - train_epoch:

=================  ===================================================
comprehension      both reached and gap < tau
grokking           both reached and gap >= tau
memorisation       train reached, test not
confusion          train not reached (whatever the test accuracy did)
=================  ===================================================

Cases the paper leaves open, decided here:

* gap exactly tau counts as **grokking**: tau is the smallest delay called grokking.
* test reached before train (a negative gap) is **comprehension** (gap < tau).
* test reached but train never reached is **confusion**: the phase is decided by fitting the training
  set first, as Liu et al. describe confusion ("fails to fit even the training set").
* epochs after the budget do not count; a run that stopped before the budget is read on what it logged.
* a run that diverged (status "failed") is classified on its metrics before the divergence.
* tau None means a tenth of the budget.

Epochs are those at which metrics were logged (``train.log_every``), so they are exact to that interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from grokscope.measures import GROK_ACC, names

__all__ = ["BASIC_COLUMNS", "PHASES", "PHASE_COLORS", "Outcome", "first_reach", "liu_phase", "outcome_from_metrics",
           "resolve_tau"]

PHASES = ("comprehension", "grokking", "memorisation", "confusion")
# Liu et al.'s colours: green, yellow, purple, black.
PHASE_COLORS = {"comprehension": "#2ca02c", "grokking": "#f2c500", "memorisation": "#7b3fa0", "confusion": "#111111"}

#: The columns of a run's metrics that are not progress measures (the index stores them as ``final_<name>``).
BASIC_COLUMNS = (names.TRAIN_ACC, names.TEST_ACC, names.TRAIN_LOSS, names.TEST_LOSS)


def first_reach(steps: Sequence[float], values: Sequence[float], threshold: float,
                budget: int | None = None) -> int | None:
    """The first step (in ascending ``steps``) whose value is >= ``threshold`` and step <= ``budget``; None if none.
    NaN values never reach."""
    for s, v in zip(steps, values):
        if budget is not None and s > budget:
            break
        if v is not None and not (isinstance(v, float) and math.isnan(v)) and v >= threshold:
            return int(s)
    return None


def resolve_tau(tau: int | None, budget: int) -> int:
    """The gap threshold: ``tau``, or a tenth of ``budget`` (at least 1) when None."""
    return int(tau) if tau is not None else max(1, int(round(budget / 10)))


def liu_phase(train_epoch: int | None, test_epoch: int | None, tau: int, budget: int | None = None) -> str:
    """The four-phase label from the epochs each threshold was first reached (None: never). Epochs past
    ``budget`` count as never. See the module docstring for the cases the paper leaves open."""
    if budget is not None:
        train_epoch = train_epoch if train_epoch is not None and train_epoch <= budget else None
        test_epoch = test_epoch if test_epoch is not None and test_epoch <= budget else None
    if train_epoch is None:
        return "confusion"
    if test_epoch is None:
        return "memorisation"
    return "grokking" if test_epoch - train_epoch >= tau else "comprehension"


@dataclass(frozen=True)
class Outcome:
    """What a run did. Epochs are None when never reached within ``budget``; ``gap`` when either is None."""

    phase: str
    train_epoch: int | None  # first epoch with train acc >= threshold
    test_epoch: int | None  # first epoch with test acc >= threshold
    gap: int | None  # test_epoch - train_epoch
    grok_epoch: int | None  # first epoch with test acc >= grok_threshold (GROK_ACC by default)
    train_fit_epoch: int | None  # first epoch with train acc >= grok_threshold
    last_epoch: int  # last logged epoch considered
    budget: int
    tau: int
    threshold: float
    final: dict[str, float] = field(default_factory=dict)  # last value <= budget of every metric column

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def outcome_from_metrics(
    steps: Sequence[int],
    columns: Mapping[str, Sequence[float]],
    *,
    epochs: int,
    threshold: float = 0.9,
    tau: int | None = None,
    budget: int | None = None,
    grok_threshold: float = GROK_ACC,
) -> Outcome:
    """The outcome of a run from its logged metrics: ``steps`` ascending, ``columns`` name -> values aligned
    with ``steps`` (NaN where not logged). ``epochs`` is the run's configured length (the default budget)."""
    b = int(budget) if budget is not None else int(epochs)
    t = resolve_tau(tau, b)
    train = columns.get(names.TRAIN_ACC, [math.nan] * len(steps))
    test = columns.get(names.TEST_ACC, [math.nan] * len(steps))
    train_epoch = first_reach(steps, train, threshold, b)
    test_epoch = first_reach(steps, test, threshold, b)
    grok = first_reach(steps, test, grok_threshold, b)
    fit = first_reach(steps, train, grok_threshold, b)
    in_budget = [i for i, s in enumerate(steps) if s <= b]
    last = int(steps[in_budget[-1]]) if in_budget else 0
    final: dict[str, float] = {}
    for name, vals in columns.items():
        for i in reversed(in_budget):
            v = vals[i]
            if v is not None and not (isinstance(v, float) and math.isnan(v)):
                final[name] = float(v)
                break
    return Outcome(
        phase=liu_phase(train_epoch, test_epoch, t, b),
        train_epoch=train_epoch,
        test_epoch=test_epoch,
        gap=None if train_epoch is None or test_epoch is None else test_epoch - train_epoch,
        grok_epoch=grok,
        train_fit_epoch=fit,
        last_epoch=last,
        budget=b,
        tau=t,
        threshold=threshold,
        final=final,
    )


def outcome_from_frame(metrics, *, epochs: int, **params: Any) -> Outcome:
    """:func:`outcome_from_metrics` on a run's metrics DataFrame (index ``step``, one column per metric)."""
    steps = [int(s) for s in metrics.index]
    cols = {c: [float(v) for v in metrics[c].to_numpy()] for c in metrics.columns}
    return outcome_from_metrics(steps, cols, epochs=epochs, **params)
