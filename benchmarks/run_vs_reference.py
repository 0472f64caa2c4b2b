"""``grokscope run`` through every phase, against the reference and TransformerLens loops on the same weights.

    python benchmarks/run_vs_reference.py [--out runs/bench-run] [--peer-epochs 5] [--threads N] [--epochs N]

Trains the mainline as ``grokscope run`` does (to 1.5x the grok epoch; ``--epochs 40000`` for the paper's
full run), writes the analysis and the report, and prints epochs/s per phase (memorisation, circuit
formation, cleanup, after) next to the reference loop and the TransformerLens demo loop, each timed from
the run's own checkpoint in that phase at learning rate 0 (``grokscope bench --whole-run`` does the same;
this script adds the targets of the whole-run speed issue). Takes about as long as the run itself plus a
minute of peer loops.

Targets (2 cores, ratios measured side by side in one run):

* the slowest phase runs at >= 0.9x the first phase's epochs/s (no slowdown after grokking);
* the whole ``grokscope run``, training, analysis and report, in <= 5 minutes (<= 15 with ``--epochs 40000``);
* the run >= 15x the TransformerLens demo loop over the same epochs, phase by phase.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from grokscope.bench_loops import transformer_lens_version
from grokscope.bench_run import render_whole_run, whole_run_phases
from grokscope.presets import get_preset


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--out", type=Path, default=None, help="run directory to create (default runs/run-vs-reference-<time>)"
    )
    ap.add_argument("--peer-epochs", type=int, default=5, help="epochs each peer loop is timed per phase (default 5)")
    ap.add_argument(
        "--epochs", type=int, default=None, help="train exactly this many epochs (default: to 1.5x the grok epoch)"
    )
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.peer_epochs < 1:
        ap.error("--peer-epochs must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = args.out or Path("runs") / time.strftime("run-vs-reference-%Y%m%d-%H%M%S")
    if out_dir.exists():
        ap.error(f"--out {out_dir}: already exists")
    tl = transformer_lens_version() is not None
    res = whole_run_phases(
        get_preset("nanda-mainline"),
        out_dir,
        epochs=args.epochs,
        peer_epochs=args.peer_epochs,
        tl=tl,
        log=lambda s: print(s, file=sys.stderr, flush=True),
    )
    print(f"run: {out_dir} ({torch.get_num_threads()} threads, torch {torch.__version__})")
    render_whole_run(res)

    rows = res["phases"]
    epochs = sum(r["end"] - r["start"] for r in rows)
    train_s = sum(r["seconds"] for r in rows)
    total = res["train_call_seconds"] + res.get("analysis_seconds", 0.0) + res.get("report_seconds", 0.0)
    slowest = min(r["run_eps"] for r in rows) / rows[0]["run_eps"]
    print()
    print(f"slowest phase / first phase: {slowest:.2f} ({'PASS' if slowest >= 0.9 else 'FAIL'}, target >= 0.9)")
    limit = {None: 300, 40000: 900}.get(args.epochs)  # to 1.5x the grok epoch: 5 minutes; the paper's 40k epochs: 15
    verdict = "" if limit is None else f"{'PASS' if total <= limit else 'FAIL'}, target <= {limit} s; "
    print(
        f"grokscope run, training + analysis + report: {total:.0f} s ({verdict}the interpreter's start-up and imports "
        "not included)"
    )
    if tl:
        tl_s = sum((r["end"] - r["start"]) / r["transformer_lens_eps"] for r in rows)
        print(
            f"TransformerLens demo loop over the same {epochs} epochs, phase by phase: {tl_s:.0f} s = "
            f"{tl_s / train_s:.1f}x the run's "
            f"training ({'PASS' if tl_s / train_s >= 15 else 'FAIL'}, target >= 15x)"
        )
    ref_s = sum((r["end"] - r["start"]) / r["reference_eps"] for r in rows)
    print(f"reference loop over the same epochs: {ref_s:.0f} s = {ref_s / train_s:.1f}x the run's training")
    return 0


if __name__ == "__main__":
    sys.exit(main())
