"""grokscope on a GPU, against the targets of issue 20: ``python benchmarks/gpu.py [--device cuda] [--quick]``.

Runs on any device (default: CUDA when visible, else the CPU, with a note). Prints one table, each row with the
issue's target and PASS, FAIL or "not measured" (and why):

* the mainline (a+b mod 113, 30% data): the training step's ms/epoch, and ``grokscope train`` at the default
  cadence timed for a window of epochs; the 40k-epoch wall time is extrapolated from that window (start-up
  included in the window, so the extrapolation errs long). Target: 40k epochs <= 30 s.
* the mainline compiled (measured after the ensembles and TransformerLens; ``--compile MODE``, default on CUDA
  without --quick: reduce-overhead, CUDA graphs; else none, which skips it): the same step under ``torch.compile``
  (:class:`grokscope.bench_loops.CompiledLoop`), its ms/epoch beside the eager one and its compile seconds, and
  ``grokscope train --set train.compile=MODE`` for the same number of epochs; its 40k-epoch time is the compile
  plus 40k epochs at the run's rate after the compile. Target: 40k epochs <= 30 s.
* ensembles: aggregate epochs/s of K = 1, 8, 64, 128, 256 stacked mainline members. Before each K the memory
  model below is checked against the free memory: a K over it is reported and the row stops there. Target:
  K = 128 >= 50x one run's epochs/s.
* a phase diagram (measured last, the longest): a sweep of N cells (default 256) of the quick setting (weight
  decay x data fraction x seeds) through the sweep runner on the device, wall time; extrapolated to 1,024 cells.
  Target: 1,024 cells <= 10 min.
* the TransformerLens demo loop (a training epoch and a test evaluation, every epoch) on the same device, against
  grokscope's whole run. Target: >= 20x.
* K_max at p = 113 for 16 GB and 80 GB from a memory model (bytes per member from the shapes: weights, AdamW
  moments, gradients, the fast path's tables and per-example activations), checked against
  ``torch.cuda.max_memory_allocated`` of the measured ensembles where CUDA is present.

``--quick``: tiny sizes (p = 23 mainline, K = 1, 2, 4, a 4-cell sweep of the tiny preset) so that it runs on a CPU in
seconds; the targets are then "not measured" (they concern the full sizes). ``--budget S``: stop starting new
sections after S seconds (what is left says "not measured: time budget").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from grokscope.bench_loops import (
    CompiledLoop,
    DefaultLoop,
    EnsembleLoop,
    TransformerLensLoop,
    clock,
    loop_rate,
    transformer_lens_version,
)
from grokscope.config import COMPILE_MODES, ExperimentConfig, apply_overrides
from grokscope.device import describe_device, resolve_device
from grokscope.models import build_model
from grokscope.presets import get_preset, nanda_mainline
from grokscope.tasks import make_task, task_to
from grokscope.training import train
from grokscope.training.compiled import CompiledForward

GB = 1024**3
TARGETS = {"40k": 30.0, "ensemble": 50.0, "diagram": 600.0, "tl": 20.0}


def member_bytes(cfg: ExperimentConfig) -> dict[str, int]:
    """The memory model: bytes one ensemble member holds at its peak (a training step), from the shapes.

    weights, gradients (float32) and AdamW's two moments: 16 bytes a parameter; the fast path's tables (the
    ``[2 d_vocab n_heads + 1, d_mlp + d_vocab_out]`` table, its intermediate and its gradient, and ``W_L``, twice);
    per training example: the gathered ``[pre | direct]`` row and its gradient, the hidden activation, the logits in
    float32 and the loss's float64 copy, its softmax and the float32 gradient; the data (int64 tokens, labels, the
    float64 weights)."""
    task = make_task(cfg.task)
    m = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    n_params = sum(t.numel() for t in (*m.parameters(), *m.buffers()))
    mc = cfg.model
    V, C, D = task.d_vocab, task.d_vocab_out, mc.d_mlp + task.d_vocab_out
    n = task.train_idx.numel()
    return {
        "weights+grads+adamw": 16 * n_params,
        "tables": 4 * (3 * (2 * V * mc.n_heads + 1) * D + 2 * mc.d_mlp * C),
        "activations": n * (4 * (2 * D + mc.d_mlp) + C * (4 + 8 + 8 + 4)),
        "data": n * (3 * 8 + 8 + 8),
    }


def k_max(per_member: int, memory_bytes: float, reserve: float = 0.1) -> int:
    """Members that fit in ``memory_bytes`` with ``reserve`` of it left for the allocator and the evaluation."""
    return int(memory_bytes * (1 - reserve) // per_member)


def free_memory(device: torch.device) -> float:
    """Bytes free on ``device`` (CUDA: the driver's count; elsewhere: half the machine's memory)."""
    if device.type == "cuda":
        return float(torch.cuda.mem_get_info(device)[0])
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2
    except (ValueError, OSError, AttributeError):
        return float("inf")


def verdict(value: float | None, target: float, *, at_most: bool, quick: bool) -> str:
    """PASS or FAIL against ``target``; "not measured" without a value, or at --quick's tiny sizes."""
    if value is None or math.isnan(value) or quick:
        return "not measured"
    return "PASS" if (value <= target if at_most else value >= target) else "FAIL"


class Report:
    """The printed table: one row per measurement, with its target and verdict."""

    def __init__(self, quick: bool, out=print):
        self.rows: list[dict[str, Any]] = []
        self.out, self.quick = out, quick

    def row(self, name: str, value: str, target: str = "", result: str = "", note: str = "") -> None:
        if self.quick and target:
            note = f"--quick (tiny sizes): {note}"
        self.rows.append({"measurement": name, "value": value, "target": target, "result": result, "note": note})
        self.out(f"{name:38} {value:>22} {target:>16} {result:>12}  {note}".rstrip())


def mainline(cfg: ExperimentConfig, device: torch.device, window: int, run_epochs: int) -> dict[str, Any]:
    """The step's seconds per epoch (``window`` epochs after a warm-up) and ``grokscope train``'s seconds for
    ``run_epochs`` epochs at the default cadence."""
    task = task_to(make_task(cfg.task), device)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx).to(device)
    loop = DefaultLoop(cfg, task, model)
    for _ in range(3):
        loop.epoch()
    t0 = clock(device)
    for _ in range(window):
        loop.epoch()
    step_s = (clock(device) - t0) / window
    run_cfg = apply_overrides(cfg, {"train.epochs": run_epochs, "train.stop_after_grok": None})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(run_cfg, Path(tmp) / "run", progress=False)
        run_s = time.perf_counter() - t0
    return {"step_s": step_s, "path": loop.path, "run_s": run_s, "run_epochs": run_epochs}


def compiled_mainline(cfg: ExperimentConfig, device: torch.device, window: int, run_epochs: int,
                      mode: str) -> dict[str, Any]:
    """:func:`mainline` with the forward under ``torch.compile`` in ``mode``: the step's seconds per epoch after
    the compile (its first epochs), the compile's seconds, and ``grokscope train`` with ``train.compile=mode``
    (its meta's compile seconds and note)."""
    task = task_to(make_task(cfg.task), device)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx).to(device)
    loop = CompiledLoop(cfg, task, model, mode)
    for _ in range(3):  # the first compiles (forward and backward), the second measures it
        loop.epoch()
    t0 = clock(device)
    for _ in range(window):
        loop.epoch()
    step_s = (clock(device) - t0) / window
    fn = loop.forward
    compiled = isinstance(fn, CompiledForward) and fn.fallback is None
    res: dict[str, Any] = {"step_s": step_s, "path": loop.path, "note": loop.compile_note(),
                           "compile_s": fn.compile_seconds if isinstance(fn, CompiledForward) and compiled else None}
    run_cfg = apply_overrides(cfg, {"train.epochs": run_epochs, "train.stop_after_grok": None, "train.compile": mode})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run = train(run_cfg, Path(tmp) / "run", progress=False)
        res["run_s"] = time.perf_counter() - t0
        meta = run.meta
    res |= {"run_epochs": run_epochs, "run_compile": meta.get("compile", ""), "run_note": meta.get("compile_note", ""),
            "run_compile_s": float(meta.get("compile_seconds") or 0.0)}
    return res


def ensembles(cfg: ExperimentConfig, device: torch.device, ks: list[int], window: int, per_member: int,
              log) -> list[dict[str, Any]]:
    """Aggregate epochs/s of each K (stopping at the first K over the memory), with CUDA's peak memory."""
    rows: list[dict[str, Any]] = []
    for k in ks:
        need, free = k * per_member, free_memory(device)
        if need > 0.9 * free:
            over = f"over the memory: the model says {need / GB:.1f} GB, {free / GB:.1f} GB free"
            rows.append({"k": k, "over": over})
            break
        log(f"  ensemble K={k} ...")
        try:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats(device)
            ens = EnsembleLoop(cfg, k)
            for _ in range(2):
                ens.epoch()
            t0 = clock(device)
            for _ in range(window):
                ens.epoch()
            secs = (clock(device) - t0) / window
        except torch.cuda.OutOfMemoryError:
            rows.append({"k": k, "over": "over the memory: CUDA out of memory"})
            break
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
        rows.append({"k": k, "eps": k / secs, "peak_bytes": peak})
        del ens
    return rows


def phase_diagram(cells: int, quick: bool, device: torch.device, max_ensemble: int) -> dict[str, Any]:
    """Wall seconds of a weight decay x data fraction x seeds sweep of ``cells`` cells of the quick setting."""
    from grokscope.sweep.local import run_sweep
    from grokscope.sweep.spec import make_spec

    seeds = 4 if cells % 4 == 0 and cells >= 16 else 1
    side = max(1, round(math.sqrt(cells / seeds)))
    n_wd, n_frac = side, max(1, cells // (seeds * side))
    wds = [round(0.1 + 3.9 * i / max(1, n_wd - 1), 4) for i in range(n_wd)]
    fracs = [round(0.2 + 0.6 * i / max(1, n_frac - 1), 4) for i in range(n_frac)]
    base = apply_overrides(get_preset("tiny" if quick else "quick"), {"train.device": str(device)})
    spec = make_spec(name="gpu-phase-diagram", base=base, seeds=seeds,
                     axes={"optim.weight_decay": wds, "task.train_fraction": fracs})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        run_sweep(spec, Path(tmp) / "sweep", workers=0, max_ensemble=max_ensemble, progress=False,
                  log=lambda s: None)
        secs = time.perf_counter() - t0
    n = n_wd * n_frac * seeds
    return {"cells": n, "grid": f"{n_wd} wd x {n_frac} fractions x {seeds} seeds", "seconds": secs,
            "epochs": base.train.epochs, "per_1024": secs * 1024 / n}


def tl_rate(cfg: ExperimentConfig, device: torch.device, epochs: int) -> float | str:
    """The TransformerLens demo loop's epochs/s on ``device``, or why it was not measured."""
    version = transformer_lens_version()
    if version is None:
        return "not installed (pip install 'grokscope[bench]')"
    task = task_to(make_task(cfg.task), device)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx).to(device)
    try:
        loop = TransformerLensLoop(cfg, task, model)
        loop.epoch()
        loop.evaluate()
        return loop_rate(loop, epochs, device)
    except Exception as e:  # an incompatible TransformerLens: say so
        return f"{version} failed ({type(e).__name__}: {e})"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="benchmarks/gpu.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: cuda when visible, else cpu with a note)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, seconds on a CPU (the targets: not measured)")
    ap.add_argument("--window", type=int, help="timed epochs per measurement (default 200; quick 5)")
    ap.add_argument("--run-epochs", type=int, help="epochs of the timed grokscope train (default 2000; quick 20)")
    ap.add_argument("--cells", type=int, help="phase-diagram cells (default 256; quick 4; 0 skips it)")
    ap.add_argument("--sweep-ensemble", type=int, default=64, help="largest ensemble the sweep packs (default 64)")
    ap.add_argument("--compile", choices=COMPILE_MODES, metavar="MODE",
                    help="also time the mainline step and run under torch.compile in MODE, one of "
                    f"{', '.join(COMPILE_MODES)} (default: reduce-overhead, CUDA graphs, on CUDA without --quick; "
                    "else none, which skips it)")
    ap.add_argument("--k", type=int, nargs="+", help="ensemble sizes (default 1 8 64 128 256; quick 1 2 4)")
    ap.add_argument("--budget", type=float, default=float("inf"), metavar="S",
                    help="start no new section after S seconds (default: no limit)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="also write every number as JSON")
    args = ap.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    note = ""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
        note = "" if args.device == "cuda" else "no CUDA device is visible: measured on the CPU"
    try:
        device = resolve_device(args.device)
    except ValueError as e:
        print(f"benchmarks/gpu.py: error: --device {args.device}: {e}", file=sys.stderr)
        return 2
    q = args.quick
    if args.compile is None:
        args.compile = "reduce-overhead" if device.type == "cuda" and not q else "none"
    window = args.window or (5 if q else 200)
    run_epochs = args.run_epochs or (20 if q else 2000)
    cells = args.cells if args.cells is not None else (4 if q else 256)
    ks = args.k or ([1, 2, 4] if q else [1, 8, 64, 128, 256])
    if min([window, run_epochs, *ks]) < 1 or cells < 0:
        print("benchmarks/gpu.py: error: --window, --run-epochs and --k must be >= 1, --cells >= 0", file=sys.stderr)
        return 2
    cfg = apply_overrides(nanda_mainline(), {"train.device": str(device), "train.fast_path": True}
                          | ({"task.p": 23} if q else {}))
    full = apply_overrides(cfg, {"task.p": 113})
    t_start = time.perf_counter()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # the table between the log lines
    res: dict[str, Any] = {"device": describe_device(device), "torch": torch.__version__, "quick": q, "note": note}
    print(f"benchmarks/gpu.py: device {res['device']}, torch {torch.__version__}, p={cfg.task.p}"
          + (" (--quick)" if q else "") + (f"; {note}" if note else ""))
    rep = Report(q)
    rep.out(f"{'measurement':38} {'value':>22} {'target':>16} {'result':>12}  note")

    def save() -> None:  # after every section, so a run cut short still leaves its numbers
        if args.json:
            res["rows"], res["seconds"] = rep.rows, time.perf_counter() - t_start
            args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")

    def budget_left(what: str) -> bool:
        save()
        if time.perf_counter() - t_start <= args.budget:
            return True
        rep.row(what, "-", "", "not measured", "time budget spent")
        return False

    if budget_left("mainline"):
        log("mainline ...")
        ml = res["mainline"] = mainline(cfg, device, window, run_epochs)
        run_eps = ml["run_epochs"] / ml["run_s"]
        t40 = 40_000 / run_eps
        rep.row("mainline step (ms/epoch)", f"{1e3 * ml['step_s']:.3f}", "", "",
                f"{ml['path']} path, {window} timed epochs")
        rep.row("mainline whole run (ep/s)", f"{run_eps:.1f}", "", "",
                f"grokscope train, {run_epochs} epochs at the default cadence")
        rep.row("mainline 40k epochs (s)", f"{t40:.1f}", f"<= {TARGETS['40k']:.0f} s",
                verdict(t40, TARGETS["40k"], at_most=True, quick=q),
                f"extrapolated from the {run_epochs}-epoch run")
    one = 1 / res["mainline"]["step_s"] if "mainline" in res else None
    per_member = member_bytes(cfg)
    if budget_left("ensembles"):
        log("ensembles ...")
        rows = res["ensembles"] = ensembles(cfg, device, ks, window, sum(per_member.values()), log)
        for r in rows:
            if "over" in r:
                rep.row(f"ensemble K={r['k']} aggregate (ep/s)", "-", "", "stopped", r["over"])
                continue
            x = r["eps"] / one if one else float("nan")
            target = f">= {TARGETS['ensemble']:.0f}x one run" if r["k"] == 128 else ""
            result = verdict(x, TARGETS["ensemble"], at_most=False, quick=q) if r["k"] == 128 else ""
            rep.row(f"ensemble K={r['k']} aggregate (ep/s)", f"{r['eps']:.1f} = {x:.1f}x", target, result,
                    "x: over one run's step ep/s")
        if not q and not any(r["k"] == 128 for r in rows if "eps" in r):
            rep.row("ensemble K=128 aggregate (ep/s)", "-", f">= {TARGETS['ensemble']:.0f}x one run", "not measured",
                    "K=128 was not timed")
    if budget_left("TransformerLens demo loop"):
        log("TransformerLens demo loop ...")
        tl = res["transformer_lens"] = tl_rate(cfg, device, window)
        if isinstance(tl, str):
            rep.row("TransformerLens demo loop (ep/s)", "-", f">= {TARGETS['tl']:.0f}x", "not measured", tl)
        else:
            run_eps = res["mainline"]["run_epochs"] / res["mainline"]["run_s"] if "mainline" in res else float("nan")
            x = run_eps / tl
            rep.row("TransformerLens demo loop (ep/s)", f"{tl:.1f}", "", "",
                    "a training epoch + test loss, every epoch")
            rep.row("whole run / TransformerLens", f"{x:.1f}x", f">= {TARGETS['tl']:.0f}x",
                    verdict(x, TARGETS["tl"], at_most=False, quick=q), "grokscope train vs the demo loop")
    if args.compile != "none" and budget_left(f"mainline compiled ({args.compile})"):
        log(f"mainline compiled ({args.compile}) ...")
        cm = res["compiled"] = compiled_mainline(cfg, device, window, run_epochs, args.compile)
        eager = res.get("mainline", {}).get("step_s", float("nan"))
        rep.row(f"mainline step, {args.compile} (ms/epoch)", f"{1e3 * cm['step_s']:.3f}", "", "",
                f"{cm['path']} path, {window} timed epochs after the compile; {eager / cm['step_s']:.2f}x eager")
        rep.row("compile time (s)", "-" if cm["compile_s"] is None else f"{cm['compile_s']:.1f}", "", "",
                cm["note"])
        run_eps = (cm["run_epochs"]) / max(1e-9, cm["run_s"] - cm["run_compile_s"])
        t40 = cm["run_compile_s"] + 40_000 / run_eps
        rep.row(f"mainline whole run, {args.compile} (ep/s)", f"{cm['run_epochs'] / cm['run_s']:.1f}", "", "",
                f"grokscope train --set train.compile={args.compile}, {run_epochs} epochs, {cm['run_compile_s']:.1f} s "
                f"of it compiling (meta: compile {cm['run_compile'] or '?'}{'; ' if cm['run_note'] else ''}"
                f"{cm['run_note']})")
        rep.row(f"mainline 40k epochs, {args.compile} (s)", f"{t40:.1f}", f"<= {TARGETS['40k']:.0f} s",
                verdict(t40, TARGETS["40k"], at_most=True, quick=q),
                "the compile, then 40k epochs at the run's rate after it")
    full_member = sum(member_bytes(full).values())
    res["memory_model"] = {"p": 113, "bytes_per_member": full_member, "parts": member_bytes(full),
                           "k_max_16gb": k_max(full_member, 16 * GB), "k_max_80gb": k_max(full_member, 80 * GB)}
    rep.row("memory model, p=113 (MB/member)", f"{full_member / 2**20:.1f}", "", "",
            ", ".join(f"{k} {v / 2**20:.1f}" for k, v in member_bytes(full).items()))
    rep.row("K_max at p=113, 16 GB", f"{res['memory_model']['k_max_16gb']}", "", "", "from the memory model (90%)")
    rep.row("K_max at p=113, 80 GB", f"{res['memory_model']['k_max_80gb']}", "", "", "from the memory model (90%)")
    peaks = [r for r in res.get("ensembles", []) if r.get("peak_bytes")]
    if peaks:
        big = max(peaks, key=lambda r: r["k"])
        ratio = big["peak_bytes"] / (big["k"] * sum(per_member.values()))
        res["memory_check"] = {"k": big["k"], "peak_bytes": big["peak_bytes"], "measured_over_model": ratio}
        rep.row(f"memory check, K={big['k']} (GB)", f"{big['peak_bytes'] / GB:.2f} = {ratio:.2f}x model", "", "",
                "torch.cuda.max_memory_allocated over the model's estimate")
    else:
        rep.row("memory check", "-", "", "not measured", "needs CUDA (torch.cuda.max_memory_allocated)")
    if cells and budget_left("phase diagram"):
        log(f"phase diagram: {cells} cells ...")
        pd = res["phase_diagram"] = phase_diagram(cells, q, device, args.sweep_ensemble)
        rep.row(f"phase diagram, {pd['cells']} cells (s)", f"{pd['seconds']:.1f}", "", "",
                f"{pd['grid']}, {pd['epochs']} epochs each")
        rep.row("phase diagram, 1,024 cells (s)", f"{pd['per_1024']:.1f}", f"<= {TARGETS['diagram']:.0f} s",
                verdict(pd["per_1024"], TARGETS["diagram"], at_most=True, quick=q),
                f"extrapolated from {pd['cells']} cells")
    save()
    print(f"total {time.perf_counter() - t_start:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
