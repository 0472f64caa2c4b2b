"""benchmarks/early_measures.py: its two definitions of a curve's turn on hand-made curves, and a run read by --run."""

import importlib.util
from pathlib import Path

import numpy as np

from grokscope import train
from grokscope.config import apply_overrides

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("early_measures", ROOT / "benchmarks" / "early_measures.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_half_turn_is_where_a_curve_stays_past_its_midpoint():
    b = _bench()
    steps = np.arange(0, 100, 10)
    falling = np.array([10.0, 9, 8, 7, 6, 4, 3, 2, 1, 0])  # midpoint 5: below it from step 50 on
    assert b.half_turn(steps, falling) == 50
    bounce = np.array([0.0, 1, 6, 2, 3, 7, 8, 9, 10, 10])  # crosses 5 at 20, falls back, stays past it from 50
    assert b.half_turn(steps, bounce) == 50
    assert b.half_turn(steps, np.full(10, 3.0)) is None  # a flat curve does not turn


def test_reversal_is_the_largest_interior_extremum_beyond_both_ends():
    b = _bench()
    steps = np.arange(0, 100, 10)
    peak = np.array([4.0, 9, 15, 12, 8, 5, 2, 1, 0.5, 0.1])  # the test loss's shape: up, then down
    assert b.reversal_turn(steps, peak) == 20
    dip = np.array([1.0, 0.5, -3, 0, 0.5, 1, 1.5, 2, 2.5, 3])
    assert b.reversal_turn(steps, dip) == 20
    assert b.reversal_turn(steps, np.linspace(5, 0, 10)) is None  # monotone
    four = steps[:4]
    assert b.reversal_turn(four, np.array([0.0, 5, 10.3, 10])) is None  # 0.3 past the end: < 5% of the range 10.3
    assert b.reversal_turn(four, np.array([0.0, 5, 11, 10])) == 20  # 1 past the end: 9% of the range


def test_main_reads_a_run_and_prints_every_measure(tmp_path, tiny_config, capsys):
    cfg = apply_overrides(tiny_config, {"train.epochs": 30, "train.measure_every": 10})
    train(cfg, tmp_path / "run", progress=False)
    assert _bench().main(["--run", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    for name in ("act_sparsity", "abs_weight_entropy", "weight_entropy_normalised", "logit_efficiency",
                 "test_loss (reference)", "landmark:"):
        assert name in out, name
    assert _bench().main(["--run", str(tmp_path / "missing")]) == 2
