"""Transfer between operations (Furuta et al. 2024): a grokked a+b mod 31 model's embedding or whole weights as the
start of another operation, against training from scratch.

    python benchmarks/transfer.py [--ops a-b,a*b] [--seeds 0,1,2] [--epochs 3000] [--out DIR]

The parent is varma-parent (a+b mod 31, 40% data, width 64, wd 1, lr 1e-2; seed 0), trained to its end. Each target
operation trains at 40% data with the same model and optimiser from: scratch; the parent's embedding (W_E, W_pos:
``--init-from RUN --init-parts embed``); the parent's embedding frozen (``--freeze-parts embed``); the parent's whole
weights (``--init-parts all``, AdamW fresh). Read out: the grok epoch (first logged test accuracy >= 99%; runs stop
there) and the test accuracy at the budget, over --seeds (each written to model.init_seed and task.split_seed).

Landmark (Furuta et al. 2024, "Interpreting grokked transformers in complex modular arithmetic"): fine-tuning a
grokked model into another operation transfers little; the grokked representation does not make the other
operation grok much sooner, and for dissimilar operations it can slow it. One thread; runs in a temporary folder.
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

STARTS = {  # name -> (init parts, frozen parts); None: from scratch
    "scratch": None,
    "embed": (("embed",), ()),
    "embed-frozen": (("embed",), ("embed",)),
    "all": (("all",), ()),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", default="a-b,a*b", help="target formulas, comma-separated (default a-b,a*b)")
    ap.add_argument("--seeds", default="0,1,2", help="seeds of the target runs (default 0,1,2)")
    ap.add_argument("--epochs", type=int, default=3000, help="budget of each target run (3000)")
    ap.add_argument("--starts", default=",".join(STARTS), help=f"which starts (default {','.join(STARTS)})")
    ap.add_argument("--out", type=Path, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.seeds.split(",")]
    starts = [s for s in args.starts.split(",") if s]
    unknown = [s for s in starts if s not in STARTS]
    if unknown:
        ap.error(f"--starts: unknown {unknown[0]!r}; choose from {', '.join(STARTS)}")
    base = apply_overrides(get_preset("varma-parent"), {"train.measure_every": 0})
    t0 = time.perf_counter()
    results: dict[tuple[str, str], list[tuple[int | None, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        parent = train(base, root / "parent-a+b", progress=False, threads=1)
        print(f"parent a+b mod 31: grok epoch {parent.meta.get('grok_epoch') or 'none'}, final test acc "
              f"{parent.metrics['test_acc'].iloc[-1]:.3f}", flush=True)
        for op in args.ops.split(","):
            for start in starts:
                for s in seeds:
                    cfg = apply_overrides(base, {"task.formula": op, "train.epochs": args.epochs, "model.init_seed": s,
                                                 "task.split_seed": s, "train.stop_after_grok": 1.0,
                                                 "name": f"{start}-{op}"})
                    how = STARTS[start]
                    lineage = None if how is None else Parent(run=parent.dir, parts=how[0], freeze=how[1])
                    run = train(cfg, root / f"{op}-{start}-s{s}", progress=False, threads=1, parent=lineage)
                    grok = int(run.meta["grok_epoch"]) if run.meta.get("grok_epoch") else None
                    acc = float(run.metrics["test_acc"].iloc[-1])
                    results.setdefault((op, start), []).append((grok, acc))
                    print(f"{op:6} from {start:12} seed {s}: grok epoch {grok or 'none':>5}, test acc at the end "
                          f"{acc:.3f}", flush=True)
    wall = time.perf_counter() - t0

    def median_grok(rows):  # a run that never grokked counts as the budget (so a median can still be read)
        return statistics.median(g if g is not None else args.epochs for g, _ in rows)

    print(f"\nwall time {wall:.0f} s, target seeds {seeds}, parent seed 0, one thread")
    print("landmark (Furuta et al. 2024) | ours: median grok epoch (never = budget), grokked runs, median final acc")
    limited = True
    for op in args.ops.split(","):
        scratch = median_grok(results[(op, "scratch")]) if (op, "scratch") in results else None
        for start in starts:
            rows = results[(op, start)]
            med, n = median_grok(rows), sum(g is not None for g, _ in rows)
            ratio = f", {scratch / med:.2f}x faster than scratch" if scratch and start != "scratch" and med else ""
            print(f"transfer a+b -> {op} is limited | from {start}: median grok epoch {med:.0f} ({n}/{len(rows)} "
                  f"grokked), median final test acc {statistics.median(a for _, a in rows):.3f}{ratio}; seeds {seeds}")
            if scratch and start != "scratch" and med and scratch / med >= 3:
                limited = False
    print(f"closing: transfer limited (no start groks >= 3x sooner than scratch on any op): "
          f"{'REPRODUCES' if limited else 'DOES NOT REPRODUCE'} at this size")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
