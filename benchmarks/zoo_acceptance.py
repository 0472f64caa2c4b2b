"""Acceptance benchmarks of the task and model zoo (issue 7). Not tests: long trainings, numbers printed.

    python benchmarks/zoo_acceptance.py                        # every item, one after the other
    python benchmarks/zoo_acceptance.py mul97 constructed      # only these items
    python benchmarks/zoo_acceptance.py --out DIR --max-epochs 20000 pair-mlp

Items (each prints one line with its numbers and PASS or FAIL):

  pair-mlp      the PAIR MLP (preset pair-mlp) on a+b mod 67 with 40% data groks: test accuracy >= 99%, at
                least twice as late as train accuracy >= 99%
  fixed-circle  the fixed-circle 5-neuron model with x^2 (preset pair-fixed-circle) reaches >= 99% test accuracy
  mul97         a*b mod 97 on the mainline transformer groks (preset furuta-mul at the quick settings: 40% data,
                lr 3e-3, 10-update warm-up; at its own 30% / lr 1e-3 it had not grokked by epoch 4200), trained on
                to 3x its grok epoch (past the clean-up); its W_E spectrum is then sparse in the discrete-log basis
                (FFS_log <= 0.25) and dense in the additive one (FFS_add >= 0.5)
  sub-vs-add    at the quick settings (p = 53, 40%, lr 3e-3) a-b groks later than a+b (or not within the budget)
  parity        sparse parity n = 30, k = 3 (preset pair-sparse-parity, hidden 64) groks at weight decay 0.1 and
                not at 0.01 within 20k epochs
  constructed   the hand-built x^2 network for a+b mod 113 (frequencies 14, 35, 41, 42, 52) is 100% accurate and
                'grokscope analyze' recovers exactly its frequencies

Trainings stop shortly after grokking (train.stop_after_grok); --max-epochs caps every training (a capped run
reports how far it got). Single-threaded; runs go under --out (default: a temporary directory).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

GROK = 0.99


def _train(name: str, overrides: dict[str, Any], out: Path, max_epochs: int | None):
    from grokscope.config import apply_overrides
    from grokscope.presets import get_preset
    from grokscope.training import train

    cfg = apply_overrides(get_preset(name), overrides)
    if max_epochs is not None and cfg.train.epochs > max_epochs:
        cfg = apply_overrides(cfg, {"train.epochs": max_epochs})
    tag = "-".join(f"{k.split('.')[-1]}{v}" for k, v in overrides.items() if k != "train.stop_after_grok")
    run_dir = out / f"{name}-{tag}" if tag else out / name
    i = 2
    while run_dir.exists():
        run_dir, i = run_dir.with_name(f"{run_dir.name.rsplit('~', 1)[0]}~{i}"), i + 1
    t0 = time.perf_counter()
    run = train(cfg, run_dir, progress=False)
    return run, time.perf_counter() - t0


def _first(m, column: str, threshold: float = GROK) -> int | None:
    hit = m.index[m[column] >= threshold] if column in m.columns else []
    return int(hit[0]) if len(hit) else None


def _curve(run) -> tuple[int | None, int | None, float, int]:
    """(train >= 99% epoch, test >= 99% epoch, final test accuracy, last epoch)."""
    m = run.metrics
    return _first(m, "train_acc"), _first(m, "test_acc"), float(m["test_acc"].dropna().iloc[-1]), int(m.index.max())


def item_pair_mlp(out: Path, max_epochs: int | None) -> tuple[str, bool]:
    run, secs = _train("pair-mlp", {"train.stop_after_grok": 1.1}, out, max_epochs)
    tr, te, final, last = _curve(run)
    ok = te is not None and tr is not None and te >= 2 * tr
    return f"train>=99% at {tr}, test>=99% at {te}, final test acc {final:.4f} at epoch {last} ({secs:.0f} s)", ok


def item_fixed_circle(out: Path, max_epochs: int | None) -> tuple[str, bool]:
    run, secs = _train("pair-fixed-circle", {"train.stop_after_grok": 1.5}, out, max_epochs)
    _, te, final, last = _curve(run)
    best = float(run.metrics["test_acc"].max())
    return (
        f"test>=99% at {te}, best test acc {best:.4f}, final {final:.4f} at epoch {last} ({secs:.0f} s)",
        best >= GROK,
    )


def item_mul97(out: Path, max_epochs: int | None) -> tuple[str, bool]:
    from grokscope.analysis.zoo import spectra_both_bases

    quick = {"task.train_fraction": 0.4, "optim.lr": 3e-3, "optim.warmup_steps": 10, "train.measure_every": 0}
    run, secs = _train("furuta-mul", quick | {"train.stop_after_grok": 3.0}, out, max_epochs)
    tr, te, final, last = _curve(run)
    s = spectra_both_bases(run.load_model().W_E, 97)
    ok = te is not None and s["ffs_log"] <= 0.25 and s["ffs_add"] >= 0.5
    return (
        f"train>=99% at {tr}, test>=99% at {te}, final test acc {final:.4f} at epoch {last}; "
        f"FFS add {s['ffs_add']:.3f} / log {s['ffs_log']:.3f}, FCR add {s['fcr_add']:.3f} / log {s['fcr_log']:.3f}, "
        f"top log freqs {s['top_log'][:5]} (g = {s['generator']}) ({secs:.0f} s)"
    ), ok


def item_sub_vs_add(out: Path, max_epochs: int | None) -> tuple[str, bool]:
    base = {"train.epochs": 8000, "train.stop_after_grok": 1.0, "train.measure_every": 0}
    add, t_add = _train("quick", base | {"task.formula": "a+b"}, out, max_epochs)
    sub, t_sub = _train("quick", base | {"task.formula": "a-b"}, out, max_epochs)
    (_, g_add, _, _), (_, g_sub, f_sub, last_sub) = _curve(add), _curve(sub)
    ok = g_add is not None and (g_sub is None or g_sub > g_add)
    sub_text = f"{g_sub}" if g_sub is not None else f"not by {last_sub} (test acc {f_sub:.3f})"
    return f"p 53, 40%: a+b groks at {g_add}, a-b at {sub_text} ({t_add + t_sub:.0f} s)", ok


def item_parity(out: Path, max_epochs: int | None) -> tuple[str, bool]:
    res = {}
    for wd in (0.1, 0.01):
        run, secs = _train(
            "pair-sparse-parity", {"optim.weight_decay": wd, "train.stop_after_grok": 1.0}, out, max_epochs
        )
        tr, te, final, last = _curve(run)
        res[wd] = (tr, te, final, last, secs)
    (tr1, te1, _, _, s1), (tr2, te2, f2, l2, s2) = res[0.1], res[0.01]
    ok = te1 is not None and te2 is None
    return (
        f"hidden 64: wd 0.1 train>=99% at {tr1}, test>=99% at {te1}; wd 0.01 train>=99% at {tr2}, "
        f"test>=99% at {te2} (final test acc {f2:.3f} at {l2}) ({s1 + s2:.0f} s)"
    ), ok


def item_constructed(out: Path, max_epochs: int | None) -> tuple[str, bool]:
    from grokscope.analysis.construct import quadratic_mlp_addition
    from grokscope.config import ExperimentConfig, TaskConfig
    from grokscope.store.run import save_checkpoint
    from grokscope.tasks import make_task
    from grokscope.training.loop import new_run_dir

    p, freqs = 113, [14, 35, 41, 42, 52]
    model = quadratic_mlp_addition(p, freqs)
    cfg = ExperimentConfig(name="constructed", task=TaskConfig(formula="a+b", p=p, train_fraction=0.3), model=model.cfg)
    task = make_task(cfg.task)
    with torch.no_grad():
        acc = float((model(task.tokens).argmax(-1) == task.labels).double().mean())
    run_dir = new_run_dir(out / "constructed", cfg)
    save_checkpoint(run_dir, 0, model.state_dict())
    cmd = [sys.executable, "-m", "grokscope", "analyze", str(run_dir), "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        return f"grokscope analyze failed ({proc.returncode}): {proc.stderr.strip()[-300:]}", False
    data = json.loads((run_dir / "analysis.json").read_text())
    found = data["key_frequencies"]
    return f"p {p}, built with {freqs}: accuracy {acc:.4f}; analyze finds {found}", acc == 1.0 and found == freqs


ITEMS: dict[str, Callable[[Path, int | None], tuple[str, bool]]] = {
    "pair-mlp": item_pair_mlp,
    "fixed-circle": item_fixed_circle,
    "mul97": item_mul97,
    "sub-vs-add": item_sub_vs_add,
    "parity": item_parity,
    "constructed": item_constructed,
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("items", nargs="*", help=f"items to run (default all): {', '.join(ITEMS)}")
    ap.add_argument("--out", type=Path, help="directory for the runs (default: a new temporary directory)")
    ap.add_argument("--max-epochs", type=int, help="cap every training at this many epochs")
    args = ap.parse_args()
    unknown = [i for i in args.items if i not in ITEMS]
    if unknown:
        ap.error(f"unknown item(s) {', '.join(unknown)}; known: {', '.join(ITEMS)}")
    torch.set_num_threads(1)
    out = args.out or Path(tempfile.mkdtemp(prefix="gs-zoo-"))
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in args.items or list(ITEMS):
        line, ok = ITEMS[name](out, args.max_epochs)
        failed += not ok
        print(f"{name:<13} {'PASS' if ok else 'FAIL'}  {line}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
