"""Outcome of a run and the Liu et al. four-phase rule, against hand-computed cases (pure)."""

import math

import pandas as pd
import pytest

from grokscope.sweep.index import aggregate_seeds, reclassify
from grokscope.sweep.outcome import first_reach, liu_phase, outcome_from_metrics, resolve_tau

NaN = math.nan


def test_first_reach():
    steps = [0, 10, 20, 30, 40]
    vals = [0.1, 0.5, 0.9, 0.95, 1.0]
    assert first_reach(steps, vals, 0.9) == 20
    assert first_reach(steps, vals, 0.99) == 40
    assert first_reach(steps, vals, 0.99, budget=30) is None
    assert first_reach(steps, vals, 0.9, budget=20) == 20
    assert first_reach(steps, [NaN, NaN, 0.95, NaN, 1.0], 0.9) == 20
    assert first_reach([], [], 0.5) is None


@pytest.mark.parametrize(
    "train, test, tau, budget, phase",
    [
        (100, 150, 100, None, "comprehension"),  # gap 50 < 100
        (100, 199, 100, None, "comprehension"),
        (100, 200, 100, None, "grokking"),  # gap == tau counts as grokking
        (100, 5000, 100, None, "grokking"),
        (100, None, 100, None, "memorisation"),
        (None, None, 100, None, "confusion"),
        (None, 300, 100, None, "confusion"),  # test reached, train never: confusion (train decides first)
        (300, 100, 100, None, "comprehension"),  # test before train: negative gap < tau
        (100, 5000, 100, 4000, "memorisation"),  # test only after the budget
        (4500, 4600, 100, 4000, "confusion"),  # train only after the budget
        (100, 100, 0, None, "grokking"),  # tau 0: every run that generalises "groks"
    ],
)
def test_liu_phase_cases(train, test, tau, budget, phase):
    assert liu_phase(train, test, tau, budget) == phase


def test_resolve_tau():
    assert resolve_tau(None, 10_000) == 1000
    assert resolve_tau(None, 5) == 1
    assert resolve_tau(7, 10_000) == 7


def test_outcome_from_metrics_hand_computed():
    steps = [0, 10, 20, 30, 40, 50, 60]
    cols = {
        "train_acc": [0.0, 0.5, 0.92, 1.0, 1.0, 1.0, 1.0],
        "test_acc": [0.0, 0.1, 0.2, 0.3, 0.91, 0.995, 1.0],
        "test_loss": [4.0, 3.0, 2.0, 1.5, 0.5, 0.05, 0.01],
        "gini_W_E": [0.1, NaN, NaN, 0.3, NaN, NaN, 0.7],
    }
    o = outcome_from_metrics(steps, cols, epochs=60, tau=15)
    assert (o.train_epoch, o.test_epoch, o.gap, o.grok_epoch, o.train_fit_epoch) == (20, 40, 20, 50, 30)
    assert o.phase == "grokking" and o.tau == 15 and o.budget == 60 and o.last_epoch == 60
    assert o.final == {"train_acc": 1.0, "test_acc": 1.0, "test_loss": 0.01, "gini_W_E": 0.7}
    # a larger tau: comprehension; default tau = budget / 10 = 6: grokking
    assert outcome_from_metrics(steps, cols, epochs=60, tau=21).phase == "comprehension"
    assert outcome_from_metrics(steps, cols, epochs=60).tau == 6
    # a budget of 45 epochs: test reaches 0.9 at 40, not 0.99; finals from epoch 40; progress measure last at 30
    o = outcome_from_metrics(steps, cols, epochs=60, tau=15, budget=45)
    assert (o.test_epoch, o.grok_epoch, o.last_epoch, o.budget, o.phase) == (40, None, 40, 45, "grokking")
    assert o.final["test_acc"] == 0.91 and o.final["gini_W_E"] == 0.3
    # a budget of 35: memorisation
    assert outcome_from_metrics(steps, cols, epochs=60, tau=15, budget=35).phase == "memorisation"
    # another threshold
    assert outcome_from_metrics(steps, cols, epochs=60, tau=15, threshold=0.5).train_epoch == 10


def test_outcome_of_run_without_test_split():
    o = outcome_from_metrics([0, 5], {"train_acc": [0.2, 1.0]}, epochs=5, tau=1)
    assert o.phase == "memorisation" and o.test_epoch is None and o.gap is None


def _frame():
    return pd.DataFrame(
        {
            "name": list("abcdef"),
            "seed": [0, 1, 0, 1, 0, 1],
            "wd": [0.0, 0.0, 1.0, 1.0, 3.0, 3.0],
            "phase": ["memorisation", "memorisation", "grokking", "comprehension", "grokking", None],
            "train_epoch": pd.array([10, 10, 10, 10, 20, None], dtype="Int64"),
            "test_epoch": pd.array([None, None, 300, 50, 100, None], dtype="Int64"),
            "gap": pd.array([None, None, 290, 40, 80, None], dtype="Int64"),
            "grok_epoch": pd.array([None, None, 400, 80, 150, None], dtype="Int64"),
            "final_test_acc": [0.1, 0.2, 1.0, 1.0, 0.99, math.nan],
            "budget": pd.array([1000] * 5 + [None], dtype="Int64"),
            "tau": pd.array([100] * 5 + [None], dtype="Int64"),
        }
    )


def test_aggregate_seeds():
    agg = aggregate_seeds(_frame(), ["wd"])
    assert list(agg["wd"]) == [0.0, 1.0, 3.0]
    assert list(agg["n"]) == [2, 2, 2]
    assert list(agg["phase"]) == ["memorisation", "comprehension", "grokking"]  # 1-1 tie: comprehension first
    assert agg.loc[1, "n_grokking"] == 1 and agg.loc[1, "phase_agreement"] == 0.5
    assert math.isnan(agg.loc[0, "grok_epoch_mean"]) and agg.loc[0, "grok_epoch_n"] == 0
    assert (
        agg.loc[1, "grok_epoch_mean"] == 240
        and agg.loc[1, "grok_epoch_min"] == 80
        and agg.loc[1, "grok_epoch_max"] == 400
    )
    assert agg.loc[2, "grok_epoch_n"] == 1


def test_reclassify():
    df = _frame()
    r = reclassify(df, tau=30)
    assert list(r["phase"][:5]) == [
        "memorisation",
        "memorisation",
        "grokking",
        "grokking",
        "grokking",
    ]  # gaps 290, 40, 80
    r = reclassify(df, tau=50)
    assert r.loc[3, "phase"] == "comprehension" and r.loc[4, "phase"] == "grokking"
    r = reclassify(df, tau=100)
    assert r.loc[4, "phase"] == "comprehension"
    r = reclassify(df, budget=200)
    assert r.loc[2, "phase"] == "memorisation" and pd.isna(r.loc[2, "gap"])
    assert pd.isna(r.loc[5, "phase"])  # unfinished rows stay unclassified
    with pytest.raises(ValueError, match="exceeds"):
        reclassify(df, budget=2000)
