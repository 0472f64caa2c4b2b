"""Acceptance numbers of issue 9 (patching, attribution, probes, SAEs) on a grokked mainline-style model.

    python benchmarks/interp_acceptance.py                 # trains the 'quick' preset (a+b mod 53, ~2-5 min) first
    python benchmarks/interp_acceptance.py --run RUN_DIR   # reuse a grokked run (e.g. 'grokscope run' output)

Prints, for the last checkpoint: key-frequency neuron clusters against random sets of equal size, attribution vs
activation patching over all neurons (r, speed-up), probe R^2 for cos/sin(w_k(a+b)) at the key frequencies now and
before circuit formation (checkpoints up to the end of memorisation, from the phase detection), and an SAE's
aligned features and spliced-in test accuracy. Each claim is marked PASS or FAIL. Single-threaded.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--run", type=Path, help="a grokked run directory (default: train the quick preset into a temp dir)"
    )
    ap.add_argument("--n", type=int, default=256, help="clean/corrupted pairs for patching (default 256)")
    ap.add_argument("--random", type=int, default=200, help="random neuron sets per cluster (default 200)")
    ap.add_argument("--sae-steps", type=int, default=6000)
    args = ap.parse_args()
    torch.set_num_threads(1)

    from grokscope.interp import cluster_patching, make_corruption
    from grokscope.interp.attribution import attribution_patching, compare_with_activation_patching
    from grokscope.interp.probes import probe_model
    from grokscope.interp.sae import SAEConfig, sae_on_checkpoint
    from grokscope.measures import detect_phases, key_frequencies
    from grokscope.store import load_run

    if args.run is None:
        from grokscope.presets import quick
        from grokscope.training import train

        out = Path(tempfile.mkdtemp(prefix="gs-interp-")) / "quick"
        t0 = time.perf_counter()
        print(f"training the quick preset into {out} ...", flush=True)
        run = train(quick(), out, progress=False)
        print(f"trained in {time.perf_counter() - t0:.0f} s")
    else:
        run = load_run(args.run)
    task, model = run.task(), run.load_model()
    step = run.checkpoints[-1]
    keys = key_frequencies(model, task)
    m = run.metrics
    print(f"run {run.dir}, step {step}: test acc {float(m['test_acc'].dropna().iloc[-1]):.4f}; key frequencies {keys}")
    checks: list[tuple[str, bool]] = []

    # ---- 1. activation patching of frequency clusters, attribution patching
    setup = make_corruption(task, args.n, seed=0)
    clusters = cluster_patching(model, task, setup, keys, n_random=args.random, seed=0)
    print("\n" + clusters.table())
    key_rows = [r for r in clusters.rows if r.frequency != "all keys"]
    best = max(key_rows, key=lambda r: r.recovered - r.random_max)
    checks.append(
        (
            f"a key-frequency cluster (k={best.frequency}, {best.size} neurons) recovers more than every one of "
            f"{clusters.n_random} random sets of its size ({best.recovered:.3f} > max {best.random_max:.3f})",
            best.recovered > best.random_max,
        )
    )
    n_beat = sum(r.recovered > r.random_max for r in key_rows)
    print(f"clusters beating every random set: {n_beat} of {len(key_rows)}")

    attr = attribution_patching(model, setup)
    comps = {
        c.kind: c
        for c in compare_with_activation_patching(
            model, setup, ["neurons", "neurons_pre", "heads", "positions"], attr=attr
        )
    }
    print()
    for c in comps.values():
        print(c.summary())
    c = comps["neurons"]
    checks.append(
        (
            f"attribution vs activation patching over all {c.n_sites} neurons: r = {c.pearson:.4f} >= 0.8",
            c.pearson >= 0.8,
        )
    )
    checks.append(
        (
            f"attribution patching {c.speedup:.0f}x faster than activation patching of all neurons (>= 10x)",
            c.speedup >= 10,
        )
    )
    cp = comps["neurons_pre"]
    print(
        f"(pre-activations, through the ReLU: r = {cp.pearson:.4f}; the post-activations are exact because the logits "
        "are linear in them)"
    )

    # ---- 2. probes now and before circuit formation
    phases = detect_phases(m).to_dict()
    rep = probe_model(model, task, keys, step=step)
    print(f"\nprobes at step {step}:\n{rep.table()}")
    worst = min(rep.r2_of("a+b", k) for k in keys)
    checks.append((f"probe R^2 for cos/sin(w_k(a+b)) >= 0.9 at every key frequency (min {worst:.3f})", worst >= 0.9))
    mem_end = phases.get("memorisation_end")
    early_steps = [s for s in run.checkpoints if mem_end is not None and s <= mem_end] or run.checkpoints[:1]
    print(
        f"\nphases: memorisation ends at {mem_end}, circuit formation ends at {phases.get('circuit_formation_end')}, "
        f"grok at {phases.get('grok_epoch')}"
    )
    early_max = -1.0
    for s in early_steps:
        r = probe_model(run.load_model(s), task, keys, step=s)
        vals = [r.r2_of("a+b", k) for k in keys]
        early_max = max(early_max, max(vals))
        print(f"  step {s:>5}: a+b R^2 " + ", ".join(f"k={k}: {v:.3f}" for k, v in zip(keys, vals)))
    checks.append(
        (
            f"before circuit formation (steps <= {early_steps[-1]}) the probes stay low (max R^2 {early_max:.3f} < "
            "0.3)",
            early_max < 0.3,
        )
    )

    # ---- 3. SAE
    cfg = SAEConfig(n_features=64, kind="topk", k=16, steps=args.sae_steps, lr=3e-3, seed=0)
    sae, srep = sae_on_checkpoint(model, task, keys, cfg, step=step)
    print("\n" + srep.summary())
    checks.append(
        (
            f"SAE features aligned with one key frequency: {srep.features.n_aligned_key} of {srep.features.n_live} "
            "live (> 0)",
            srep.features.n_aligned_key > 0,
        )
    )
    checks.append(
        (
            f"spliced-in SAE reconstruction keeps test accuracy {srep.accuracy['spliced']:.4f} >= 0.99",
            srep.accuracy["spliced"] >= 0.99,
        )
    )

    print("\nacceptance:")
    for text, ok in checks:
        print(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
