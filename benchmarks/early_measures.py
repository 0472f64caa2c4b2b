"""Which cheap progress measures turn before the test loss does (issue 23 item 7):
``python benchmarks/early_measures.py``.

Reads run directories (``--run DIR``, repeatable) or trains runs: by default the ``quick`` preset (a+b mod 53, 40%
data, the mainline transformer, wd 1; groks by ~1.6k epochs) with the measures every 10 epochs, seeds
(``model.init_seed``) 0, 1, 2, one thread (about a minute each on one core); ``--preset nanda-mainline`` for the
paper's run (40k epochs at p = 113; not sized for two cores). For every measure and for the test loss it finds two
"turns", each defined on the curve x_t as logged (no smoothing):

* half: the first epoch from which x stays on its final value's side of the midpoint (x_0 + x_end) / 2, i.e. the
  epoch it has moved half way from its start to its end for good;
* reversal: the epoch of the curve's largest interior extremum, the point where its trend reverses; "none" when no
  point lies beyond both endpoints by more than 5% of the curve's range (a monotone curve).

It prints them next to the test loss's (the test loss of the mainline rises while the model memorises, then falls:
its reversal is its peak, its half the fall through the midpoint between ln p and its end), and how many epochs
each measure leads (+) or lags (-), then per measure its half-way lead in every run and in how many runs it
comes first. Measures: the four cheap ones added by issue 23 (act_sparsity,
abs_weight_entropy, weight_entropy_normalised, logit_efficiency) and, for comparison, the paper's sum_sq_weights,
gini_W_L and excluded_loss.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from grokscope import load_run, train
from grokscope.config import apply_overrides
from grokscope.measures import names
from grokscope.presets import get_preset
from grokscope.store import RunError

CHEAP = [names.ACT_SPARSITY, names.ABS_WEIGHT_ENTROPY, names.WEIGHT_ENTROPY_NORMALISED, names.LOGIT_EFFICIENCY]
REFERENCE = [names.SUM_SQ_WEIGHTS, names.GINI_W_L, names.EXCLUDED_LOSS]
LANDMARK = ("Nanda et al. 2023: the progress measures (excluded loss, Gini, weight norm) move during circuit "
            "formation, before the test loss falls in cleanup; Golechha 2024 proposes activation sparsity and absolute "
            "weight entropy as signals that track grokking; Varma et al. 2023: the generalising circuit is the more "
            "efficient one (more logit norm per parameter norm)")


def half_turn(steps: np.ndarray, x: np.ndarray) -> int | None:
    """The first step from which x stays on its last value's side of the midpoint between its first and last values
    (None when the curve does not move)."""
    if len(x) < 2 or x[0] == x[-1]:
        return None
    mid = (x[0] + x[-1]) / 2
    beyond = (x - mid) * np.sign(x[-1] - x[0]) > 0
    bad = np.nonzero(~beyond)[0]
    first = 0 if len(bad) == 0 else int(bad[-1]) + 1
    return int(steps[min(first, len(steps) - 1)])


def reversal_turn(steps: np.ndarray, x: np.ndarray, tol: float = 0.05) -> int | None:
    """The step of the largest interior extremum beyond both endpoints (by more than ``tol`` of the range)."""
    if len(x) < 3:
        return None
    span = float(x.max() - x.min())
    if span <= 0:
        return None
    hi, lo = max(x[0], x[-1]), min(x[0], x[-1])
    up, down = float(x.max() - hi), float(lo - x.min())
    if max(up, down) <= tol * span:
        return None
    return int(steps[int(np.argmax(x)) if up >= down else int(np.argmin(x))])


def series(metrics: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    s = pd.to_numeric(metrics[name], errors="coerce").dropna() if name in metrics else pd.Series(dtype=float)
    return s.index.to_numpy(dtype=np.int64), s.to_numpy(dtype=np.float64)


def _lead(turn: int | None, ref: int | None) -> str:
    return "" if turn is None or ref is None else f"{ref - turn:+d}"


def turns_table(metrics: pd.DataFrame, where: str) -> dict[str, tuple[int | None, int | None]]:
    """Print one run's table; return {measure: (half lead, reversal lead)} in epochs (+ = before the test loss)."""
    steps, test = series(metrics, names.TEST_LOSS)
    acc_steps, acc = series(metrics, names.TEST_ACC)
    grok = next((int(s) for s, a in zip(acc_steps, acc) if a >= 0.99), None)
    ref_half, ref_rev = half_turn(steps, test), reversal_turn(steps, test)
    print(f"\n{where}: test loss {test[0]:.3g} -> peak {test.max():.3g} -> {test[-1]:.3g}; test accuracy >= 99% "
          f"from epoch {grok}")
    print(f"{'measure':>26} {'start':>10} {'end':>10} {'reversal':>9} {'half':>7} {'lead(rev)':>10} {'lead(half)':>10}")
    print(f"{'test_loss (reference)':>26} {test[0]:10.4g} {test[-1]:10.4g} {str(ref_rev):>9} {str(ref_half):>7}")
    leads: dict[str, tuple[int | None, int | None]] = {}
    for name in CHEAP + REFERENCE:
        s, x = series(metrics, name)
        if len(x) < 2:
            print(f"{name:>26} not logged")
            continue
        h, r = half_turn(s, x), reversal_turn(s, x)
        leads[name] = (None if h is None or ref_half is None else ref_half - h,
                       None if r is None or ref_rev is None else ref_rev - r)
        print(f"{name:>26} {x[0]:10.4g} {x[-1]:10.4g} {str(r):>9} {str(h):>7} {_lead(r, ref_rev):>10} "
              f"{_lead(h, ref_half):>10}", flush=True)
    return leads


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, action="append",
                    help="read this run directory instead of training (repeatable)")
    ap.add_argument("--preset", default="quick", help="the preset to train (default quick; nanda-mainline: the paper)")
    ap.add_argument("--seeds", default="0,1,2", help="model.init_seed of each trained run (default 0,1,2)")
    ap.add_argument("--measure-every", type=int, default=10, help="measure cadence of the trained runs (default 10)")
    ap.add_argument("--epochs", type=int, help="train this many epochs instead of the preset's")
    ap.add_argument("--out", type=Path, help="keep the trained runs here, one folder per seed (default: temporary)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t0 = time.time()
    runs: list[tuple[str, pd.DataFrame]] = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.run:
            for path in args.run:
                try:
                    runs.append((f"run {path}", load_run(path).metrics))
                except (RunError, FileNotFoundError, ValueError) as e:
                    print(f"early_measures: {e}", file=sys.stderr)
                    return 2
        else:
            try:
                seeds = [int(x) for x in args.seeds.split(",")]
                base = get_preset(args.preset)
                over = {"train.measure_every": args.measure_every}
                base = apply_overrides(base, over | ({"train.epochs": args.epochs} if args.epochs else {}))
                cfgs = [apply_overrides(base, {"model.init_seed": seed}) for seed in seeds]
            except ValueError as e:
                print(f"early_measures: {e}", file=sys.stderr)
                return 2
            for cfg in cfgs:
                where = (f"preset {args.preset} ({cfg.task.formula} mod {cfg.task.p}, {cfg.train.epochs} epochs, "
                         f"measures every {cfg.train.measure_every}, seed {cfg.model.init_seed}, split seed "
                         f"{cfg.task.split_seed})")
                print(f"training {where} ...", flush=True)
                out = (args.out or Path(tmp)) / f"seed{cfg.model.init_seed}"
                runs.append((where, train(cfg, out, progress=False, threads=1).metrics))
                print(f"  done at {time.time() - t0:.0f} s", flush=True)
    all_leads = [turns_table(metrics, where) for where, metrics in runs]
    print(f"\nlandmark: {LANDMARK}.")
    print("ours, per measure: epochs by which its half-way turn precedes the test loss's (+ = earlier), per run:")
    verdicts = []
    for name in CHEAP + REFERENCE:
        halves = [lead.get(name, (None, None))[0] for lead in all_leads]
        known = [h for h in halves if h is not None]
        before = sum(h > 0 for h in known)
        tag = "cheap" if name in CHEAP else "paper"
        med = f"median {int(np.median(known)):+d}" if known else "no turn"
        print(f"  {name:>26} ({tag}): {', '.join('-' if h is None else f'{h:+d}' for h in halves)}; {med}; "
              f"before the test loss in {before}/{len(halves)} runs")
        if name in CHEAP and known and before == len(halves):
            verdicts.append(name)
    print(f"cheap measures that turn (half way) before the test loss in every run: {', '.join(verdicts) or 'none'}")
    print(f"wall {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
