"""Does the nanda-mainline preset grok? Trains it (stopping at 1.5x the grok epoch) and checks the landmarks.

    python benchmarks/mainline_grokking.py [--out runs/bench-mainline] [--epochs 40000] [--full]

Acceptance (issue 2): train accuracy >= 99% before epoch 2k, test accuracy >= 99% before epoch 20k.
The paper (Nanda et al. 2023, mainline seed): memorisation by ~1.4k, grokking ~10k, clean-up ends ~14k.
Prints the landmarks, the wall time and PASS/FAIL; run it in the background on a quiet machine.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import grokscope
from grokscope.config import apply_overrides


def first_epoch(metrics, column: str, threshold: float = 0.99) -> int | None:
    hit = metrics.index[metrics[column] >= threshold]
    return int(hit[0]) if len(hit) else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="run directory (default runs/bench-mainline-<time>)")
    ap.add_argument("--epochs", type=int, default=40_000)
    ap.add_argument("--full", action="store_true", help="train every epoch (no stop after grokking)")
    ap.add_argument("--init-seed", type=int, default=0)
    args = ap.parse_args()

    overrides = {"train.epochs": args.epochs, "model.init_seed": args.init_seed, "name": "bench-mainline"}
    if not args.full:
        overrides["train.stop_after_grok"] = 1.5
    cfg = apply_overrides(grokscope.get_preset("nanda-mainline"), overrides)
    t0 = time.perf_counter()
    run = grokscope.train(cfg, args.out)
    wall = time.perf_counter() - t0
    m = run.metrics
    train99, test99 = first_epoch(m, "train_acc"), first_epoch(m, "test_acc")
    last = m.iloc[-1]
    print(f"run:                      {run.dir}")
    print(f"forward path:             {run.meta.get('forward')}")
    print(f"epochs trained:           {int(m.index[-1])}  ({run.meta.get('message') or 'all epochs'})")
    print(
        f"wall time:                {wall:.0f} s  ({1000 * wall / max(1, int(m.index[-1])):.1f} ms/epoch incl. "
        "evaluation and measures)"
    )
    print(f"train acc >= 99% first:   epoch {train99}   (paper: ~1.4k)")
    print(f"test acc >= 99% first:    epoch {test99}   (paper: grokking ~10k)")
    print(f"final train/test loss:    {last['train_loss']:.3e} / {last['test_loss']:.3e}")
    print(f"final train/test acc:     {last['train_acc']:.4f} / {last['test_acc']:.4f}")
    ok_train = train99 is not None and train99 < 2_000
    ok_test = test99 is not None and test99 < 20_000
    print(f"{'PASS' if ok_train else 'FAIL'}: train accuracy >= 99% before epoch 2000")
    print(f"{'PASS' if ok_test else 'FAIL'}: test accuracy >= 99% before epoch 20000")
    return 0 if ok_train and ok_test else 1


if __name__ == "__main__":
    raise SystemExit(main())
