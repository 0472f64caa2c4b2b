"""``grokscope run`` against the reference loop, on the same machine at the same time.

    python benchmarks/run_vs_reference.py [--out runs/bench-run] [--loop-epochs 10] [--threads N]

Target (issue 4): ``grokscope run`` (the mainline to grokking, then the summary, the analysis and the report)
completes in under a tenth of the time the reference implementation needs for the same epochs with a test
evaluation every epoch. This times the whole ``grokscope run`` command in this process, and the reference
demo loop (``grokscope bench``'s row (a): the full-sequence step plus a test evaluation, every epoch) for
``--loop-epochs`` epochs just before and just after it; the reference's time for the run's epochs is
extrapolated from that rate. Takes about as long as the run (~6 minutes on an idle 2-core CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import time
from pathlib import Path

import torch

from grokscope.bench import ReferenceLoop, loop_rate
from grokscope.cli import main as cli_main
from grokscope.models import build_model
from grokscope.presets import get_preset
from grokscope.store.run import Run
from grokscope.tasks import make_task


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=None, help="run directory to create (default runs/run-vs-reference-<time>)")
    ap.add_argument("--loop-epochs", type=int, default=10, help="epochs of the reference loop before and after (default 10)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.loop_epochs < 1:
        ap.error("--loop-epochs must be >= 1")
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = get_preset("nanda-mainline")
    task = make_task(cfg.task)
    reference = ReferenceLoop(cfg, task, build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx))
    reference.epoch()  # warm-up
    before = loop_rate(reference, args.loop_epochs)

    out_dir = args.out or Path("runs") / time.strftime("run-vs-reference-%Y%m%d-%H%M%S")
    argv = ["run", "--quiet", "--out", str(out_dir)]
    captured = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(captured):
        code = cli_main(argv)
    wall = time.perf_counter() - t0
    after = loop_rate(reference, args.loop_epochs)
    if code != 0:
        print(captured.getvalue(), file=sys.stderr)
        return code

    out = captured.getvalue()
    meta = Run(out_dir).meta
    epochs = int(meta["final_epoch"])
    train_s = float(meta["train_seconds"])
    rate = 2 / (1 / before + 1 / after)
    ref_s = epochs / rate
    print(out.rstrip())
    print()
    print(f"grokscope run: {epochs} epochs, {wall:.1f} s in all ({train_s:.1f} s in the training loop, {wall - train_s:.1f} s set-up, summary, analysis and report)")
    print(f"reference loop with a test evaluation every epoch: {rate:.2f} ep/s ({before:.2f} before, {after:.2f} after the run) "
          f"-> {ref_s:.0f} s for {epochs} epochs")
    verdict = "PASS" if wall < ref_s / 10 else "FAIL"
    print(f"grokscope run takes {wall / ref_s:.3f} of the reference's time ({ref_s / wall:.1f}x faster): {verdict} (target: under 0.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
