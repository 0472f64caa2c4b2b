"""Progress measures and analysis on a real grokking run, checked against the issue-3 acceptance criteria.

    python benchmarks/mainline_measures.py                       # nanda-mainline, stops at 1.5x the grok epoch
    python benchmarks/mainline_measures.py --preset quick        # a+b mod 53, about a minute
    python benchmarks/mainline_measures.py --reuse runs/some-run # skip training, analyse an existing run

Prints: training time, the measurement overhead (a measure call against measure_every training epochs, and
the same model trained with measures off), the second pass with key frequencies fixed from the final
checkpoint, the phase boundaries, the full analysis of the final checkpoint, and PASS/FAIL per criterion.
Run it in the background with output to a file; the mainline takes tens of minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import torch


def _time_train_epochs(cfg, n_epochs: int) -> float:
    """Seconds per full-batch training epoch (forward on the train set, float64 CE, backward, AdamW step)."""
    from grokscope.models import build_model
    from grokscope.tasks import make_task

    task = make_task(cfg.task)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, betas=cfg.optim.betas
    )
    x, y = task.train_tokens, task.train_labels
    for i in range(n_epochs + 3):
        if i == 3:
            t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(x).double(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / n_epochs


def _time_measures(model, task, repeats: int = 5) -> tuple[float, float]:
    """Seconds per progress_measures call, with the logits passed in (as the loop does) and without."""
    from grokscope.measures import progress_measures

    with torch.no_grad():
        logits = model(task.tokens)
        progress_measures(model, task, logits=logits)
        t0 = time.perf_counter()
        for _ in range(repeats):
            progress_measures(model, task, logits=logits)
        with_logits = (time.perf_counter() - t0) / repeats
        t0 = time.perf_counter()
        for _ in range(repeats):
            progress_measures(model, task)
        without = (time.perf_counter() - t0) / repeats
    return with_logits, without


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="nanda-mainline")
    ap.add_argument("--out", type=Path, help="run directory (default: a temporary directory)")
    ap.add_argument("--reuse", type=Path, help="analyse this existing run instead of training")
    ap.add_argument("--stop-after-grok", type=float, default=1.5, help="train.stop_after_grok (0: train all epochs)")
    ap.add_argument("--epochs", type=int, help="override train.epochs")
    ap.add_argument(
        "--e2e-epochs", type=int, default=1000, help="epochs for the end-to-end overhead comparison (0: skip)"
    )
    args = ap.parse_args(argv)

    import grokscope
    from grokscope.analysis import analyze_checkpoint, render_analysis
    from grokscope.analysis.tables import render_phases
    from grokscope.config import apply_overrides
    from grokscope.measures import detect_phases, fixed_key_measures

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)
    if args.reuse:
        run = grokscope.load_run(args.reuse)
        cfg = run.config
        print(f"reusing {run.dir}")
    else:
        cfg = grokscope.get_preset(args.preset)
        over = {}
        if args.stop_after_grok:
            over["train.stop_after_grok"] = args.stop_after_grok
        if args.epochs:
            over["train.epochs"] = args.epochs
        cfg = apply_overrides(cfg, over) if over else cfg
        out = args.out or Path(tempfile.mkdtemp(prefix="gs-bench-")) / cfg.name
        t0 = time.perf_counter()
        run = grokscope.train(cfg, out, progress=False)
        print(
            f"trained {cfg.name} into {run.dir}: {time.perf_counter() - t0:.1f} s, last epoch "
            f"{int(run.metrics.index[-1])}",
            flush=True,
        )

    task = run.task()
    p = task.p
    steps = run.checkpoints
    final = run.load_model(steps[-1])

    # ---- overhead ------------------------------------------------------------------------------
    every = cfg.train.measure_every or 100
    t_epoch = _time_train_epochs(cfg, 20)
    t_meas, t_meas_fwd = _time_measures(final, task)
    print("\n== measurement overhead ==")
    print(
        f"train epoch {t_epoch * 1e3:.1f} ms; progress_measures {t_meas * 1e3:.1f} ms with the loop's logits, "
        f"{t_meas_fwd * 1e3:.1f} ms with its own forward"
    )
    ratio = t_meas / (every * t_epoch)
    print(
        f"overhead at measure_every={every}: {100 * ratio:.2f}% (with own forward: "
        f"{100 * t_meas_fwd / (every * t_epoch):.2f}%)"
    )
    e2e = None
    if args.e2e_epochs and not args.reuse:
        times = {}
        for me in (every, 0):
            c = apply_overrides(
                cfg,
                {
                    "train.epochs": args.e2e_epochs,
                    "train.measure_every": me,
                    "train.stop_after_grok": None,
                    "name": f"e2e{me}",
                },
            )
            d = Path(tempfile.mkdtemp(prefix="gs-e2e-")) / "run"
            t0 = time.perf_counter()
            grokscope.train(c, d, progress=False)
            times[me] = time.perf_counter() - t0
        e2e = times[every] / times[0] - 1
        print(
            f"end to end, {args.e2e_epochs} epochs: measures every {every}: {times[every]:.1f} s, off: {times[0]:.1f} "
            f"s -> {100 * e2e:+.1f}% (noisy on a shared machine)"
        )

    # ---- second pass with fixed key frequencies --------------------------------------------------
    t0 = time.perf_counter()
    fixed = fixed_key_measures([(s, (lambda s=s: run.load_model(s))) for s in steps], task)
    print(
        f"\n== second pass: key frequencies {fixed.attrs['key_frequencies']} ({fixed.attrs['key_freq_rule']}), "
        f"{len(steps)} checkpoints, {time.perf_counter() - t0:.1f} s =="
    )
    metrics = run.metrics.join(fixed, how="outer")
    phases = detect_phases(metrics)
    print(render_phases(phases.to_dict()))

    cols = [
        c
        for c in (
            "train_loss",
            "test_loss",
            "test_acc",
            "excluded_loss_fixed",
            "restricted_loss_fixed",
            "gini_W_E",
            "gini_W_L",
            "sum_sq_weights",
            "n_key_freqs",
        )
        if c in metrics
    ]
    m = metrics[cols].dropna(subset=["excluded_loss_fixed"]) if "excluded_loss_fixed" in metrics else metrics[cols]
    stride = max(1, len(m) // 25)
    print(f"\n== curves (every {stride}-th measured step) ==")
    print(m.iloc[::stride].to_string(float_format=lambda v: f"{v:.3g}"))

    # ---- analysis of the final checkpoint -----------------------------------------------------
    t0 = time.perf_counter()
    a = analyze_checkpoint(final, task, step=steps[-1])
    print(f"\n== analysis of step {steps[-1]} ({time.perf_counter() - t0:.1f} s) ==")
    print(render_analysis(a))

    # ---- acceptance ---------------------------------------------------------------------------
    rows = {r.name: r for r in a.ablations}
    checks = []

    def check(name, ok, detail):
        checks.append(ok)
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")

    print("\n== acceptance (issue 3) ==")
    check(
        "3..7 key frequencies",
        3 <= len(a.key_frequencies) <= 7,
        f"{a.key_frequencies} by {a.key_freq_rule}; all rules {a.key_frequencies_by_rule}",
    )
    check(
        "restricted loss < test loss at the end",
        a.losses["restricted_loss"] < a.losses["test_loss"],
        f"{a.losses['restricted_loss']:.3e} vs {a.losses['test_loss']:.3e}",
    )

    def at(col, step):
        s = metrics[col].dropna()
        return float(s[s.index <= step].iloc[-1]) if step is not None and len(s[s.index <= step]) else float("nan")

    me, ge = phases.memorisation_end, phases.grok_epoch
    ex0, ex1 = at("excluded_loss_fixed", me), at("excluded_loss_fixed", ge)
    check("excluded loss rises from memorisation end to grok", ex1 > ex0, f"{ex0:.3g} at {me} -> {ex1:.3g} at {ge}")
    for g in ("gini_W_E", "gini_W_L"):
        if g not in metrics:
            check(f"{g} rises around grok", False, "not measured")
            continue
        g0, gc, g1, gend = (
            at(g, me),
            at(g, phases.circuit_formation_end),
            at(g, phases.cleanup_end or ge),
            float(metrics[g].dropna().iloc[-1]),
        )
        check(
            f"{g} rises sharply around grok (half its total rise between circuit-formation end and cleanup end)",
            gend - g0 >= 0.2 and (g1 - gc) >= 0.5 * (gend - g0),
            f"{g0:.3f} (mem end) / {gc:.3f} (circ end) / {g1:.3f} (cleanup end) / {gend:.3f} (final)",
        )
        # The rate view: the rise per 1k epochs from circuit-formation end to cleanup end (around the grok
        # epoch) against the rate over circuit formation. Both are printed; the first is stricter when Gini
        # keeps rising after the test-loss-based cleanup end.
        ce, cu = phases.circuit_formation_end, phases.cleanup_end or ge
        slow = (gc - g0) / max(1, ce - me) * 1000 if ce and me is not None else float("nan")
        fast = (g1 - gc) / max(1, cu - ce) * 1000 if ce and cu else float("nan")
        check(
            f"{g} rises >= 3x faster around grok than during circuit formation",
            fast >= 3 * slow,
            f"{fast:.3f} vs {slow:.3f} per 1k epochs ({fast / slow if slow > 0 else float('inf'):.1f}x)",
        )
    rk, ro, rr = rows["remove all key freqs"].loss, rows["original"].loss, rows["keep only key freqs (restricted)"].loss
    check("removing key freqs: loss > ln p", rk > math.log(p), f"{rk:.3g} vs ln p = {math.log(p):.3f}")
    check("removing all other freqs: loss <= 1.1 x original", rr <= 1.1 * ro, f"{rr:.3e} vs {ro:.3e}")
    frac = a.neurons.n_explained / a.neurons.n_neurons
    check(
        ">= 75% neurons explained (>= 85% FVE)",
        frac >= 0.75,
        f"{a.neurons.n_explained}/{a.neurons.n_neurons} = {100 * frac:.1f}%",
    )
    check("logit FVE >= 90%", a.logit_fit.fve >= 0.9, f"{100 * a.logit_fit.fve:.2f}%")
    check(
        "measuring every 100 epochs adds <= 10%",
        ratio <= 0.10,
        f"{100 * ratio:.2f}% per-call estimate" + (f"; end to end {100 * e2e:+.1f}%" if e2e is not None else ""),
    )
    print(f"\n{sum(checks)}/{len(checks)} checks passed")
    return 0 if all(checks) else 1


if __name__ == "__main__":
    sys.exit(main())
