"""Circuit efficiency (Varma et al. 2023): the critical data fraction, ungrokking and semi-grokking on a+b mod 31.

    python benchmarks/circuit_efficiency.py [--seeds 0,1] [--fractions 0.25,0.3,...] [--cuts 0.1,0.15,...]
                                            [--fresh-optimizer] [--out DIR]

1. The critical data fraction, from scratch: the varma-parent setting (a+b mod 31, width 64, wd 1, lr 1e-2) trained
   --scratch-epochs at each of --fractions; the critical fraction is where the median final test accuracy crosses
   50%, interpolated linearly between neighbouring fractions.
2. Parents: varma-parent (50% data) per seed, grokked by ~0.6-1k epochs; a parent that did not grok (test accuracy
   < 99% at its end) is reported and its cuts skipped.
3. Cuts: each parent continued (``train --from``: AdamW's moments continue; --fresh-optimizer restarts them) for
   --cut-epochs on each of --cuts, a subset of its training set (same split seed, smaller fraction). Ungrokking:
   the final test accuracy < 50%; semi-grokking: it settles between 50% and 95%; kept: >= 95%.

Acceptance (issue 23): ungrokking shows test accuracy falling below 50% after the data is cut below the critical
fraction. Each seed is written to model.init_seed and task.split_seed. One thread; runs go to a temporary folder
unless --out is given.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from grokscope.config import apply_overrides
from grokscope.presets import get_preset
from grokscope.training import train
from grokscope.training.lineage import Parent


def floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def crossing(xs: list[float], ys: list[float], level: float = 0.5) -> float | None:
    """The first x (ascending) where y rises through ``level``, linearly interpolated; None if it never does."""
    for (x0, y0), (x1, y1) in zip(zip(xs, ys), list(zip(xs, ys))[1:]):
        if y0 < level <= y1:
            return x0 + (level - y0) * (x1 - x0) / (y1 - y0)
    return xs[0] if ys and ys[0] >= level else None


def verdict(acc: float) -> str:
    return "ungrokked" if acc < 0.5 else "semi-grokked" if acc < 0.95 else "kept"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="0,1", help="seeds (init and split), comma-separated (default 0,1)")
    ap.add_argument("--fractions", default="0.25,0.3,0.35,0.4,0.5",
                    help="train fractions of the from-scratch sweep (default 0.25,0.3,0.35,0.4,0.5)")
    ap.add_argument("--scratch-epochs", type=int, default=3000, help="budget of the from-scratch runs (3000)")
    ap.add_argument("--cuts", default="0.1,0.15,0.2,0.3,0.4", help="train fractions of the continued runs")
    ap.add_argument("--cut-epochs", type=int, default=3000, help="epochs of each continued run (3000)")
    ap.add_argument("--fresh-optimizer", action="store_true",
                    help="continue with a fresh AdamW (--init-from RUN --init-parts all) instead of its moments")
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    fractions, cuts = sorted(floats(args.fractions)), sorted(floats(args.cuts))
    base = apply_overrides(get_preset("varma-parent"), {"train.measure_every": 0})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)

        def run(name, cfg, parent=None):
            return train(cfg, root / name, progress=False, threads=1, parent=parent)

        print(f"1. from scratch, {args.scratch_epochs} epochs: final test accuracy per train fraction", flush=True)
        medians = []
        for f in fractions:
            accs = []
            for s in seeds:
                cfg = apply_overrides(base, {"task.train_fraction": f, "train.epochs": args.scratch_epochs,
                                             "model.init_seed": s, "task.split_seed": s})
                r = run(f"scratch-{f}-s{s}", cfg)
                accs.append(float(r.metrics["test_acc"].iloc[-1]))
                print(f"   fraction {f:.3f} seed {s}: final test acc {accs[-1]:.3f}, grok epoch "
                      f"{r.meta.get('grok_epoch') or 'none'}", flush=True)
            medians.append(statistics.median(accs))
        f_crit = crossing(fractions, medians)
        print(f"   critical fraction (median final test acc crosses 50%): {f_crit}", flush=True)

        print("2. parents (varma-parent, 50% data)", flush=True)
        parents = {}
        for s in seeds:
            cfg = apply_overrides(base, {"model.init_seed": s, "task.split_seed": s})
            parents[s] = run(f"parent-s{s}", cfg)
            m = parents[s].metrics
            print(f"   seed {s}: grok epoch {parents[s].meta.get('grok_epoch') or 'none'}, final test acc "
                  f"{m['test_acc'].iloc[-1]:.3f}", flush=True)

        how = "fresh AdamW" if args.fresh_optimizer else "AdamW continued"
        print(f"3. cuts: each parent continued {args.cut_epochs} epochs on a subset of its data ({how})", flush=True)
        finals: dict[float, list[float]] = {}
        grokked = [s for s in seeds if float(parents[s].metrics["test_acc"].iloc[-1]) >= 0.99]
        if grokked != seeds:
            print(f"   parents that did not grok (their cuts skipped): {sorted(set(seeds) - set(grokked))}", flush=True)
        for c in cuts:
            for s in grokked:
                cfg = apply_overrides(parents[s].config, {"task.train_fraction": c, "train.epochs": args.cut_epochs,
                                                          "name": f"cut-{c}"})
                parent = Parent(run=parents[s].dir, parts=("all",) if args.fresh_optimizer else None)
                m = run(f"cut-{c}-s{s}", cfg, parent).metrics
                acc = float(m["test_acc"].iloc[-1])
                finals.setdefault(c, []).append(acc)
                path = " ".join(f"{int(e)}:{m.loc[e, 'test_acc']:.2f}" for e in m.index[:: max(1, len(m) // 6)])
                print(f"   cut {c:.3f} seed {s}: final test acc {acc:.3f} ({verdict(acc)}); test acc by epoch {path}",
                      flush=True)
        cuts = [c for c in cuts if c in finals]
        cut_medians = [statistics.median(finals[c]) for c in cuts]
        c_crit = crossing(cuts, cut_medians)
        wall = time.perf_counter() - t0

    print(f"\nwall time {wall:.0f} s, seeds {seeds}, one thread")
    print("landmark (Varma et al. 2023) | ours")
    below = [c for c in cuts if f_crit is not None and c < f_crit]
    ungrok = [c for c, acc in zip(cuts, cut_medians) if acc < 0.5]
    semi = [c for c, acc in zip(cuts, cut_medians) if 0.5 <= acc < 0.95]
    crit = "none within the budget" if f_crit is None else f"{f_crit:.3f}"
    print(f"critical dataset size D_crit exists: grokking from scratch fails below it | from scratch, "
          f"{args.scratch_epochs} epochs: the median final test acc crosses 50% at fraction {crit} "
          f"(medians {', '.join(f'{f}: {a:.2f}' for f, a in zip(fractions, medians))}); seeds {seeds}")
    cut_crit = "none" if c_crit is None else f"{c_crit:.3f}"
    print(f"ungrokking: a grokked net trained on a set below D_crit loses test accuracy (to near chance) | cut "
          f"medians {', '.join(f'{c}: {a:.2f}' for c, a in zip(cuts, cut_medians))}; ungrokked at {ungrok or 'none'}; "
          f"the continued runs cross 50% at fraction {cut_crit}; seeds {grokked}")
    print(f"semi-grokking: near D_crit test accuracy settles in between (needed careful settings) | semi-grokked at "
          f"{semi or 'none'} after {args.cut_epochs} epochs (read: still drifting, see the curves); seeds {grokked}")
    ok = any(c in ungrok for c in below)
    print(f"acceptance: ungrokking below the critical fraction ({crit}) to test acc < 50%: "
          f"{'PASS' if ok else 'FAIL'} (cuts below it: {below or 'none'}, ungrokked: {ungrok or 'none'})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
