"""Omnigrok's LU curves (Liu, Michaud, Tegmark 2023; issue 23 item 3): ``python benchmarks/omnigrok_lu.py``.

Runs the ``omnigrok-lu`` sweep preset (weight norm held fixed by ``optim.fixed_norm``, no weight decay, the norm
set by the init scale alpha; a+b mod 23, half the pairs, the small-addition transformer, lr 1e-2) or, by default, a
reduced version of it that fits one core in about five minutes: init scales 0.25 to 2 in steps of sqrt 2 (the
preset's 9 go on to 4), 2 seeds (the preset has 3), 2,000 epochs (the preset 3,000). ``--full`` runs the preset
as it is. One thread, one worker.

Prints, per init scale: the fixed norm ||theta||_2, final train loss, final test loss and final test accuracy (mean
over seeds, with each seed's test loss), then which norm minimises the mean test loss. Acceptance (issue 23): "The
LU figure shows test loss minimal at an intermediate norm": PASS when the minimum is interior to the scanned range.
The sweep directory (with its report, the LU figure included: ``grokscope report DIR``) is kept with ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from grokscope.config import apply_overrides
from grokscope.sweep.figures_recent import lu_points
from grokscope.sweep.index import load_sweep
from grokscope.sweep.local import run_sweep
from grokscope.sweep.presets import get_sweep_preset
from grokscope.sweep.spec import make_spec

LANDMARK = ("Liu et al. 2023 (Omnigrok), the landscape analysis (Fig. 1 and its modular-addition runs): at a fixed "
            "weight norm w, train loss is L-shaped (high below a norm, ~0 above) and test loss U-shaped, lowest in "
            "an intermediate 'Goldilocks' band of w where the model generalises; a large norm memorises")


def reduced_spec(full: bool, seeds: int | None, epochs: int | None, scales: list[float] | None):
    """The omnigrok-lu preset, or the reduced version of it (the default), with any of these replaced."""
    spec = get_sweep_preset("omnigrok-lu")
    if full and seeds is None and epochs is None and scales is None:
        return spec
    n_epochs = epochs if epochs is not None else (spec.base.train.epochs if full else 2000)
    base = apply_overrides(spec.base, {"train.epochs": n_epochs, "train.measure_every": n_epochs})
    return make_spec(
        name="omnigrok-lu-bench",
        base=base,
        axes={"model.init_scale": scales or [0.25 * 2 ** (i / 2) for i in range(9 if full else 7)]},
        seeds=seeds if seeds is not None else (len(spec.seeds) if full else 2),
        outcome={"threshold": spec.outcome.threshold, "tau": spec.outcome.tau},
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true",
                    help="the omnigrok-lu preset as it is (27 cells; ~6 min on one core)")
    ap.add_argument("--seeds", type=int, help="seeds per init scale (default 2; --full 3)")
    ap.add_argument("--epochs", type=int, help="epochs per cell (default 2000; --full 3000)")
    ap.add_argument("--scales", help="comma-separated init scales (default 0.25 .. 2 in steps of sqrt 2)")
    ap.add_argument("--out", type=Path, help="keep the sweep directory here (default: a temporary directory)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    try:
        scales = [float(s) for s in args.scales.split(",")] if args.scales else None
        spec = reduced_spec(args.full, args.seeds, args.epochs, scales)
    except ValueError as e:
        print(f"omnigrok_lu: {e}", file=sys.stderr)
        return 2
    b = spec.base
    seeds = list(spec.seeds)
    print(f"Omnigrok LU: a+b mod {b.task.p}, train fraction {b.task.train_fraction}, d_model {b.model.d_model}, "
          f"d_mlp {b.model.d_mlp}, lr {b.optim.lr}, wd {b.optim.weight_decay}, fixed norm {b.optim.fixed_norm}, "
          f"{b.train.epochs} epochs; init scales {', '.join(f'{v[0]:.3g}' for v in spec.axes[0].values)}; "
          f"seeds (model.init_seed) {seeds}", flush=True)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "sweep"
        run_sweep(spec, out, workers=1, threads=1, progress=False,
                  log=lambda s: print(f"  [{time.time() - t0:5.0f}s] {s}", flush=True))
        df = load_sweep(out, refresh=True)
    pts = lu_points(df)
    if pts.empty:
        print("no cell finished")
        return 1
    ln_p = math.log(b.task.p)
    print(f"\n{'init scale':>10} {'norm':>8} {'train loss':>11} {'test loss':>10} {'test acc':>9}  test loss per seed")
    for _, r in pts.iterrows():
        per_seed = df[df["model.init_scale"] == r["init_scale"]]["final_test_loss"].astype(float).tolist()
        print(f"{r['init_scale']:10.3f} {r['norm']:8.2f} {r['final_train_loss_mean']:11.3g} "
              f"{r['final_test_loss_mean']:10.3g} {r['final_test_acc_mean']:9.3f}  "
              + ", ".join(f"{v:.3g}" for v in per_seed), flush=True)
    best = int(pts["final_test_loss_mean"].idxmin())
    interior = 0 < best < len(pts) - 1
    row = pts.iloc[best]
    print(f"\nlandmark: {LANDMARK}.")
    print(f"ours: mean test loss is lowest at norm {row['norm']:.3g} (init scale {row['init_scale']:.3g}): "
          f"{row['final_test_loss_mean']:.3g} against {pts['final_test_loss_mean'].iloc[0]:.3g} at the smallest norm "
          f"and {pts['final_test_loss_mean'].iloc[-1]:.3g} at the largest (ln p = {ln_p:.3g}); train loss "
          f"{pts['final_train_loss_mean'].iloc[0]:.3g} -> {pts['final_train_loss_mean'].min():.3g} (its lowest) -> "
          f"{pts['final_train_loss_mean'].iloc[-1]:.3g} from the smallest to the largest norm. Seeds {seeds}.")
    print(f"acceptance (test loss minimal at an intermediate norm): {'PASS' if interior else 'FAIL'} "
          f"(minimum {'inside the range' if interior else 'at the edge of the range'}, {len(pts)} norms); "
          f"wall {time.time() - t0:.0f} s")
    return 0 if interior else 1


if __name__ == "__main__":
    raise SystemExit(main())
