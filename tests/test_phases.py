"""Phase detection on synthetic curves whose boundaries are known by construction."""

import json
import math

import numpy as np
import pandas as pd

from grokscope.measures.phases import Phases, detect_phases, grok_epoch

STEPS = np.arange(0, 3001, 10)


def _curves(steps=STEPS, fit=200, exc_min=300, drop_start=1500, drop_end=2005, never_grok=False):
    """Train acc reaches 1 at `fit`; excluded loss falls to a minimum at `exc_min` then rises; test loss sits on
    a plateau (10) until `drop_start`, falls linearly in log10 to 1e-6 at `drop_end`, then stays there; test
    accuracy passes 0.99 when the test loss passes 0.1."""
    s = steps.astype(float)
    train_acc = np.clip(s / fit, 0, 1)
    train_loss = np.exp(-s / 100) + 1e-4
    excluded = np.where(s <= exc_min, 5 - 4 * s / exc_min, 1 + (s - exc_min) / 500)
    if never_grok:
        log_test = np.full_like(s, 1.0)
    else:
        log_test = np.interp(s, [0, drop_start, drop_end, s[-1]], [1.0, 1.0, -6.0, -6.0])
    test_loss = 10**log_test
    test_acc = np.where(log_test <= -1.0, 1.0, 0.5)
    return pd.DataFrame(
        {
            "train_acc": train_acc,
            "train_loss": train_loss,
            "test_acc": test_acc,
            "test_loss": test_loss,
            "excluded_loss": excluded,
        },
        index=pd.Index(steps, name="step"),
    )


def test_boundaries_of_synthetic_grokking_run():
    df = _curves()
    ph = detect_phases(df)
    assert isinstance(ph, Phases)
    assert ph.train_fit_epoch == 200  # first step with train_acc >= 0.99
    assert abs(ph.memorisation_end - 300) <= 20  # excluded-loss minimum (rolling median of 5 points)
    assert ph.grok_epoch == 1650  # log10 test loss -1 at 1500 + 505 * 2/7 = 1644.3
    # 10% of the 7-decade span: last step with log10 test loss >= 1 - 0.7 (1500 + 0.1 * 505 = 1550.5)
    assert ph.circuit_formation_end == 1550
    # first step >= grok with log10 test loss <= -6 + 0.7 (1500 + 0.9 * 505 = 1954.5)
    assert ph.cleanup_end == 1960
    assert ph.memorisation_end <= ph.circuit_formation_end <= ph.grok_epoch <= ph.cleanup_end
    assert ph.phase_at(100) == "memorisation"
    assert ph.phase_at(1000) == "circuit_formation"
    assert ph.phase_at(1700) == "cleanup"
    assert ph.phase_at(2500) == "post_cleanup"
    d = ph.to_dict()
    json.dumps(d)
    assert d["grok_epoch"] == ph.grok_epoch and "rule" in d and d["excluded_loss_column"] == "excluded_loss"


def test_prefers_fixed_excluded_loss_and_falls_back_to_train_fit():
    df = _curves()
    df["excluded_loss_fixed"] = np.where(df.index <= 600, 5 - df.index / 200, 2 + df.index / 1000)
    ph = detect_phases(df)
    assert ph.excluded_loss_column == "excluded_loss_fixed" and abs(ph.memorisation_end - 600) <= 20
    ph2 = detect_phases(df.drop(columns=["excluded_loss", "excluded_loss_fixed"]))
    assert ph2.memorisation_end == ph2.train_fit_epoch == 200 and ph2.excluded_loss_column is None


def test_never_grokking_run():
    ph = detect_phases(_curves(never_grok=True))
    assert ph.grok_epoch is None and ph.circuit_formation_end is None and ph.cleanup_end is None
    assert abs(ph.memorisation_end - 300) <= 20
    assert ph.phase_at(2900) == "circuit_formation"


def test_nothing_learned_and_missing_columns():
    df = pd.DataFrame({"train_acc": [0.0, 0.1, 0.2]}, index=pd.Index([0, 10, 20], name="step"))
    ph = detect_phases(df)
    assert ph == Phases(None, None, None, None, None, None)
    assert grok_epoch(df) is None


def test_grok_epoch_ignores_nan_and_uses_index():
    df = pd.DataFrame({"test_acc": [0.1, math.nan, 0.995, 0.98, 1.0]}, index=[0, 100, 200, 300, 400])
    assert grok_epoch(df) == 200
    assert grok_epoch(df, threshold=0.999) == 400


def test_single_spike_does_not_move_boundaries():
    df = _curves()
    df.loc[1000, "test_loss"] = 1e-7  # one glitch on the plateau (e.g. a logging artefact)
    ph = detect_phases(df)
    assert ph.circuit_formation_end == 1550
