"""``grokscope bench``: time the mainline training step every way we know, side by side in one process.

The rows are the contenders of :mod:`grokscope.bench_loops` ((d), TransformerLens, when ``transformer_lens`` is
importable: ``pip install grokscope[bench]``), each timed without evaluation and with a test evaluation every epoch
(as the TransformerLens grokking demo does), in interleaved rounds; the medians are reported. Also: a whole run as
users make it (``grokscope train`` at the default cadence), the agreement of (a) and (b) after N steps from the same
initialisation, the FLOPs of the step and their rate against a measured matrix-multiply rate, and the cost as p
grows. Timings on a shared machine are noisy: read the ratios, which are measured side by side.

``--device``: every row on that device (the model, the data and the optimiser state placed there; the clock read
after waiting for the device, :func:`~grokscope.bench_loops.clock`); the header names it. On the CPU nothing moves.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from grokscope.bench_loops import (
    CompiledLoop,
    DefaultLoop,
    EnsembleLoop,
    ReferenceLoop,
    TransformerLensLoop,
    clock,
    loop_rate,
    transformer_lens_version,
)
from grokscope.cli_args import UserError, add_device_arg, device_from_args
from grokscope.config import COMPILE_MODES, ExperimentConfig, apply_overrides
from grokscope.device import describe_device, float64_device
from grokscope.measures import progress_measures
from grokscope.models import build_model
from grokscope.models.forward import choose_forward
from grokscope.presets import nanda_mainline
from grokscope.tasks import make_task, task_to
from grokscope.training.loop import train
from grokscope.training.reference import reference_forward

__all__ = ["BenchOptions", "fast_step_flops", "reference_step_flops", "register", "run_bench"]

CPU = torch.device("cpu")


@dataclass
class BenchOptions:
    p: int = 113
    epochs: int = 10  # epochs per timed block
    repeats: int = 5  # interleaved rounds; medians reported
    k: int = 8  # ensemble size
    scaling: tuple[int, ...] = (53, 113, 211)
    agree_steps: int = 200
    agree_p: int | None = None  # default: p
    run_epochs: int = 500  # whole-run timing (grokscope train at the default cadence)
    threads: int | None = None
    tl: bool = True
    quick: bool = False
    config: ExperimentConfig = field(default_factory=nanda_mainline)
    device: torch.device = CPU
    compile: str = "none"  # --compile: a row (b) under torch.compile in this mode, and the whole run compiled

    @classmethod
    def quick_options(cls, **kw: Any) -> BenchOptions:
        base: dict[str, Any] = dict(p=23, epochs=3, repeats=3, k=4, scaling=(11, 17, 23), agree_steps=30,
                                    run_epochs=30, threads=1, quick=True)
        base.update({k: v for k, v in kw.items() if v is not None})
        return cls(**base)


# --------------------------------------------------------------------------- FLOP counts (multiply-adds x 2)


def fast_step_flops(cfg: ExperimentConfig, n_train: int) -> dict[str, float]:
    """FLOPs of one full-batch fast-path step (forward + backward; AdamW and elementwise work not counted)."""
    m = cfg.model
    p = cfg.task.p
    V, C, H, dh, d, dm = p + 1, p, m.n_heads, m.d_head, m.d_model, m.d_mlp
    D, rows = dm + C, 2 * H + 1
    per_example_fwd = rows * D + dm * C  # gather-sum, hidden -> logits
    per_example_bwd = 2 * rows * D + 2 * dm * C  # table and weight grads of the gather-sum; d post, d W_L
    tables_fwd = (H * d * dh * 2 + 2 * V * d * H + H * dh * d * D + 2 * V * d * H * dh + H * 2 * V * dh * D
                  + H * dh * D + d * D + dm * d * C)
    macs = {"per-example": n_train * (per_example_fwd + per_example_bwd), "tables": 3 * tables_fwd}
    return {k: 2.0 * v for k, v in macs.items()} | {"total": 2.0 * sum(macs.values())}


def reference_step_flops(cfg: ExperimentConfig, n_train: int, n_ctx: int = 3) -> float:
    """FLOPs of one full-sequence reference step (forward, and backward at twice the forward)."""
    m = cfg.model
    C, H, dh, d, dm = cfg.task.p, m.n_heads, m.d_head, m.d_model, m.d_mlp
    per_pos = 3 * d * H * dh + 2 * n_ctx * H * dh + H * dh * d + 2 * d * dm + d * C
    return 2.0 * 3 * n_train * n_ctx * per_pos


# --------------------------------------------------------------------------- the contenders and their timing


def _config(opts: BenchOptions, p: int) -> ExperimentConfig:
    return apply_overrides(opts.config, {"task.p": p, "train.fast_path": True, "train.device": str(opts.device)})


def _placed(cfg: ExperimentConfig, device: torch.device) -> tuple[Any, Any]:
    """(task, a fresh model of ``cfg``) with the task's tensors and the model on ``device``."""
    task = make_task(cfg.task)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    return task_to(task, device), model.to(device)


def _median_time(fn: Callable[[], Any], repeats: int, device: torch.device = CPU) -> float:
    times = []
    for _ in range(repeats):
        t0 = clock(device)
        fn()
        times.append(clock(device) - t0)
    return statistics.median(times)


def matmul_rates(n_train: int, d_mlp: int, n_out: int, repeats: int = 7,
                 device: torch.device = CPU) -> dict[str, float]:
    """GFLOP/s of a 1024^3 matmul and of the step's main product shape [n_train, d_mlp] @ [d_mlp, n_out] (float32,
    on ``device``)."""
    a, b = torch.randn(1024, 1024).to(device), torch.randn(1024, 1024).to(device)
    x, w = torch.randn(n_train, d_mlp).to(device), torch.randn(d_mlp, n_out).to(device)
    a @ b, x @ w
    square = 2 * 1024**3 / _median_time(lambda: a @ b, repeats, device) / 1e9
    shaped = 2 * n_train * d_mlp * n_out / _median_time(lambda: x @ w, repeats * 3, device) / 1e9
    return {"square_1024": square, "step_shape": shaped}


def agreement(cfg: ExperimentConfig, steps: int, dtype: torch.dtype = torch.float64,
              device: torch.device = CPU) -> dict[str, float | str]:
    """Train (a) and (b) from the same initialisation for ``steps`` steps; their losses and relative difference.
    On ``device`` (MPS has no float64: there, on the CPU)."""
    device = float64_device(device) if dtype == torch.float64 else device
    task, base = _placed(cfg, device)
    base = base.to(dtype)
    ref, dflt = ReferenceLoop(cfg, task, copy.deepcopy(base)), DefaultLoop(cfg, task, copy.deepcopy(base))
    for _ in range(steps):
        ref.epoch()
        dflt.epoch()
    # the loss after `steps` updates: evaluate both on the training set
    with torch.no_grad():
        x, y = task.train_tokens, task.train_labels
        la = F.cross_entropy(reference_forward(ref.model, x).to(torch.float64), y).item()
        lb = F.cross_entropy(dflt.forward(x).to(torch.float64), y).item()
    return {"steps": steps, "loss_reference": la, "loss_default": lb, "rel_diff": abs(la - lb) / abs(la),
            "path": dflt.path}


def _per_epoch_times(runners: list, epochs: int, repeats: int, log: Callable[[str], None],
                     device: torch.device = CPU) -> dict[str, dict[str, float]]:
    """Median seconds per epoch, without and with a test evaluation every epoch, in interleaved rounds."""
    samples: dict[str, dict[str, list[float]]] = {r.name: {"train": [], "eval": []} for r in runners}
    for r in runners:  # warm-up (plans, allocator, lazy imports)
        r.epoch()
        r.evaluate()
    for rnd in range(repeats):
        for r in runners:
            for mode in ("train", "eval"):
                t0 = clock(device)
                for _ in range(epochs):
                    r.epoch()
                    if mode == "eval":
                        r.evaluate()
                samples[r.name][mode].append((clock(device) - t0) / epochs)
        log(f"  round {rnd + 1}/{repeats} done")
    return {name: {mode: statistics.median(v) for mode, v in s.items()} for name, s in samples.items()}


def whole_run(cfg: ExperimentConfig, epochs: int) -> dict[str, float]:
    """``grokscope train`` at the config's cadence (on its ``train.device``) for ``epochs`` epochs in a temporary
    directory: its seconds (``train`` returns after its last write, so no device wait is needed)."""
    cfg = apply_overrides(cfg, {"train.epochs": epochs, "train.stop_after_grok": None})
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        train(cfg, Path(tmp) / "run", progress=False)
        total = time.perf_counter() - t0
    return {"epochs": epochs, "seconds": total, "per_epoch": total / epochs}


def bracketed_whole_run(cfg: ExperimentConfig, epochs: int, loops: list, loop_epochs: int,
                        device: torch.device = CPU) -> dict[str, Any]:
    """:func:`whole_run`, with each of ``loops`` timed as a demo loop (:func:`loop_rate`) just before and just
    after it, so the ratios compare runs made at the same time (a shared machine's speed drifts over minutes).
    Adds ``"loops"``: per runner name, the rates before and after and their combined rate (total epochs over
    total time)."""
    before = {r.name: loop_rate(r, loop_epochs, device) for r in loops}
    res: dict[str, Any] = whole_run(cfg, epochs)
    after = {r.name: loop_rate(r, loop_epochs, device) for r in loops}
    res["loops"] = {name: {"before": before[name], "after": after[name],
                           "rate": 2 / (1 / before[name] + 1 / after[name])} for name in before}
    return res


def measure_cost(cfg: ExperimentConfig, repeats: int = 3, device: torch.device = CPU) -> float | None:
    """Seconds of one call of the progress measures (None when they fail on this config)."""
    task, model = _placed(cfg, device)
    model.eval()
    fwd = choose_forward(model, task, fast=cfg.train.fast_path).fn
    with torch.no_grad():
        logits = fwd(task.tokens)
        try:
            progress_measures(model, task, logits=logits)
            return _median_time(lambda: progress_measures(model, task, logits=logits), repeats, device)
        except Exception:
            return None


def scaling(opts: BenchOptions, log: Callable[[str], None]) -> list[dict[str, float]]:
    rows = []
    for p in opts.scaling:
        cfg = _config(opts, p)
        task, model = _placed(cfg, opts.device)
        ref, dflt = ReferenceLoop(cfg, task, copy.deepcopy(model)), DefaultLoop(cfg, task, copy.deepcopy(model))
        ref.epoch()
        dflt.epoch()
        dflt.evaluate()
        reps = max(3, opts.repeats // 2)
        t_ref, t_fast, t_eval = [], [], []
        for _ in range(reps):  # interleaved
            t_ref.append(_median_time(ref.epoch, 1, opts.device))
            t_fast.append(_median_time(dflt.epoch, 3, opts.device))
            t_eval.append(_median_time(dflt.evaluate, 1, opts.device))
        n_train = task.train_idx.numel()
        row = {"p": p, "n_train": n_train, "reference_ms": 1e3 * statistics.median(t_ref),
               "default_ms": 1e3 * statistics.median(t_fast), "eval_all_ms": 1e3 * statistics.median(t_eval),
               "fast_gflop": fast_step_flops(cfg, n_train)["total"] / 1e9}
        row["ratio"] = row["reference_ms"] / row["default_ms"]
        rows.append(row)
        log(f"  p={p} done")
    return rows


# --------------------------------------------------------------------------- the whole benchmark


def run_bench(opts: BenchOptions, out: Callable[[str], None] = print,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every measurement, print the tables through ``out``, and return the numbers."""
    log = log or (lambda s: print(s, file=sys.stderr, flush=True))
    if opts.threads:
        torch.set_num_threads(opts.threads)
    cfg, device = _config(opts, opts.p), opts.device
    task, model = _placed(cfg, device)
    n_train, n_test = task.train_idx.numel(), task.test_idx.numel()
    res: dict[str, Any] = {"p": opts.p, "n_train": n_train, "n_test": n_test, "threads": torch.get_num_threads(),
                           "torch": torch.__version__, "device": describe_device(device)}

    log("matrix-multiply rate ...")
    res["matmul_gflops"] = matmul_rates(n_train, cfg.model.d_mlp, task.d_vocab_out, device=device)

    runners: list = [ReferenceLoop(cfg, task, copy.deepcopy(model)), DefaultLoop(cfg, task, copy.deepcopy(model)),
                     EnsembleLoop(cfg, opts.k)]
    tl_version = transformer_lens_version() if opts.tl else None
    res["transformer_lens"] = tl_version or ("not installed" if opts.tl else "skipped (--no-tl)")
    if tl_version and cfg.model.act_fn == "relu":
        try:
            runners.append(TransformerLensLoop(cfg, task, copy.deepcopy(model)))
        except Exception as e:  # an incompatible TransformerLens: say so and go on
            res["transformer_lens"] = f"{tl_version}: failed ({type(e).__name__}: {e})"
    if opts.compile != "none":  # last, so rows[0..2] stay (a), (b), (c)
        runners.append(CompiledLoop(cfg, task, copy.deepcopy(model), opts.compile))
    log(f"timing {len(runners)} contenders: {opts.repeats} rounds of {opts.epochs} epochs ...")
    times = _per_epoch_times(runners, opts.epochs, opts.repeats, log, device)
    rows = []
    for r in runners:
        scale, t = (r.k if isinstance(r, EnsembleLoop) else 1), times[r.name]
        rows.append({"name": r.name, "train_eps": scale / t["train"], "eval_eps": scale / t["eval"], "members": scale})
    res["rows"] = rows
    ref, dflt = rows[0], rows[1]
    tl = next((row for r, row in zip(runners, rows) if isinstance(r, TransformerLensLoop)), None)

    log(f"whole run: grokscope train, {opts.run_epochs} epochs at the default cadence, between demo loops ...")
    loops = [runners[0]] + [r for r in runners if isinstance(r, TransformerLensLoop)]  # the reference, and TL
    run_cfg = apply_overrides(cfg, {"train.compile": opts.compile})
    res["whole_run"] = bracketed_whole_run(run_cfg, opts.run_epochs, loops, opts.epochs, device)
    res["measure_seconds"] = mcost = measure_cost(cfg, device=device)

    flops = fast_step_flops(cfg, n_train)
    res["flops"] = {"fast_step": flops, "reference_step": reference_step_flops(cfg, n_train)}
    step_s = 1.0 / dflt["train_eps"]
    res["achieved_gflops"] = flops["total"] / step_s / 1e9

    agree_p = opts.agree_p or opts.p
    log(f"agreement: {opts.agree_steps} steps of (a) and (b) from the same initialisation (float64, p={agree_p}) ...")
    res["agreement"] = agreement(_config(opts, agree_p), opts.agree_steps, device=device)
    log("scaling with p ...")
    res["scaling"] = scaling(opts, log)

    # ---------------------------------------------------------------- print
    matmul = res["matmul_gflops"]
    m = cfg.model
    out(f"grokscope bench: {cfg.task.formula} mod {opts.p}, {n_train} train / {n_test} test pairs, d_model "
        f"{m.d_model}, d_mlp {m.d_mlp}, {m.n_heads} heads; torch {torch.__version__}, {res['threads']} threads; "
        f"device {res['device']}")
    out(f"matrix-multiply rate: {matmul['square_1024']:.1f} GFLOP/s (1024^3), {matmul['step_shape']:.1f} GFLOP/s "
        f"([{n_train}x{m.d_mlp}]@[{m.d_mlp}x{task.d_vocab_out}])")
    out(f"TransformerLens: {res['transformer_lens']}")
    out("")
    out(f"{'':34} {'train ep/s':>11} {'+test/epoch':>12} {'x ref':>7} {'x ref+ev':>9}"
        + (f" {'x TL':>7} {'x TL+ev':>8}" if tl else ""))
    for r in rows:
        line = (f"{r['name']:34} {r['train_eps']:11.2f} {r['eval_eps']:12.2f} {r['train_eps'] / ref['train_eps']:7.2f} "
                f"{r['eval_eps'] / ref['eval_eps']:9.2f}")
        if tl:
            line += f" {r['train_eps'] / tl['train_eps']:7.2f} {r['eval_eps'] / tl['eval_eps']:8.2f}"
        out(line)
    for r in runners[3:]:
        if isinstance(r, CompiledLoop):
            res["compile"] = line = r.compile_note()
            out(f"{line}; compiled / eager default path: {rows[-1]['train_eps'] / dflt['train_eps']:.2f}x")
    ens = rows[2]
    out(f"ensemble K={opts.k}: aggregate {ens['train_eps']:.2f} ep/s = {ens['train_eps'] / dflt['train_eps']:.2f}x "
        f"{opts.k} sequential default runs ({ens['eval_eps'] / dflt['eval_eps']:.2f}x with a test evaluation every "
        "epoch)")
    whole = res["whole_run"]
    run_rate = 1 / whole["per_epoch"]
    every = cfg.train
    out(f"whole run (grokscope train, {whole['epochs']} epochs, log every {every.log_every}, measures every "
        f"{every.measure_every}, checkpoints every {every.checkpoint_every}): {run_rate:.2f} ep/s, start-up included")
    for r in loops:
        rates = whole["loops"][r.name]
        what = "the reference loop" if r is runners[0] else "the TransformerLens loop"
        out(f"  = {run_rate / rates['rate']:.1f}x {what} with test loss every epoch ({rates['rate']:.2f} ep/s, timed "
            f"for {opts.epochs} epochs just before and after the run: {rates['before']:.2f} and {rates['after']:.2f})")
    if mcost is not None:
        share = 100 * mcost / (every.measure_every * step_s)
        out(f"progress measures: {mcost * 1e3:.1f} ms per call = {share:.1f}% of {every.measure_every} default-path "
            "epochs")
    else:
        out("progress measures: not available (grokscope.measures.progress missing or failed)")
    fast, achieved = res["flops"]["fast_step"], res["achieved_gflops"]
    out(f"FLOPs per epoch: default step {fast['total'] / 1e9:.3f} GFLOP (per-example {fast['per-example'] / 1e9:.3f}, "
        f"tables {fast['tables'] / 1e9:.3f}); reference step {res['flops']['reference_step'] / 1e9:.2f} GFLOP")
    out(f"achieved: {achieved:.1f} GFLOP/s = {100 * achieved / matmul['square_1024']:.0f}% of the 1024^3 matmul rate, "
        f"{100 * achieved / matmul['step_shape']:.0f}% of the step-shape rate")
    ag = res["agreement"]
    verdict = "OK" if ag["rel_diff"] <= 1e-6 else "MISMATCH"
    out(f"agreement (a) vs (b), float64, p={agree_p}, {ag['steps']} steps from the same init: loss "
        f"{ag['loss_reference']:.12g} vs {ag['loss_default']:.12g}, relative difference {ag['rel_diff']:.2e} "
        f"({verdict}, limit 1e-6)")
    out("")
    out(f"{'p':>5} {'train':>7} {'reference ms':>13} {'default ms':>11} {'ratio':>6} {'eval p^2 ms':>12} "
        f"{'GFLOP/step':>11}")
    for s in res["scaling"]:
        out(f"{s['p']:5d} {s['n_train']:7d} {s['reference_ms']:13.1f} {s['default_ms']:11.2f} {s['ratio']:6.1f} "
            f"{s['eval_all_ms']:12.2f} {s['fast_gflop']:11.3f}")
    return res


# --------------------------------------------------------------------------- CLI


def _whole_run(opts: BenchOptions, args: argparse.Namespace) -> dict[str, Any]:
    """``--whole-run``: :func:`grokscope.bench_run.whole_run_phases` on the mainline (``--p``, ``--run-epochs``)."""
    from grokscope.bench_run import render_whole_run, whole_run_phases

    if args.peer_epochs < 1:
        raise UserError(f"--peer-epochs: must be >= 1, got {args.peer_epochs}")
    if args.out is not None and args.out.exists():
        raise UserError(f"--out {args.out}: already exists; give a new directory")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    cfg = _config(opts, opts.p) if args.p or args.quick else apply_overrides(opts.config,
                                                                              {"train.device": str(opts.device)})
    cfg = apply_overrides(cfg, {"train.compile": opts.compile})
    tl = opts.tl and transformer_lens_version() is not None
    epochs = args.run_epochs  # None: to 1.5x the grok epoch, as grokscope run
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "run"
        res = whole_run_phases(cfg, out, epochs=epochs, peer_epochs=args.peer_epochs, tl=tl,
                               log=lambda s: print(s, file=sys.stderr, flush=True))
        res["threads"] = torch.get_num_threads()
        res["device"] = describe_device(opts.device)
    render_whole_run(res)
    return res


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "bench",
        help="time the training step: reference vs default vs ensemble vs TransformerLens",
        description="Time (a) the full-sequence reference step, (b) grokscope's default path, (c) an ensemble of K "
        "seeds and (d) TransformerLens when installed, with and without a test evaluation every epoch, side by side in "
        "one process; print the ratios, the (a)/(b) agreement, FLOP rates and the scaling with p.",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (p=23, a few epochs): a smoke run in seconds")
    p.add_argument("--p", type=int, help="modulus of the timed task (default 113; quick 23)")
    p.add_argument("--epochs", type=int, help="epochs per timed block (default 10; quick 3)")
    p.add_argument("--repeats", type=int, help="interleaved timing rounds, medians reported (default 5; quick 3)")
    p.add_argument("--k", type=int, help="ensemble size (default 8; quick 4)")
    p.add_argument("--scaling", type=int, nargs="+", metavar="P",
                   help="moduli for the scaling table (default 53 113 211)")
    p.add_argument("--agree-steps", type=int, help="steps of the (a)/(b) agreement check (default 200)")
    p.add_argument("--agree-p", type=int, help="modulus of the agreement check (default: --p)")
    p.add_argument("--run-epochs", type=int, help="epochs of the whole-run timing (default 500)")
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice; quick 1)")
    p.add_argument("--no-tl", action="store_true", help="skip TransformerLens even when it is installed")
    p.add_argument("--json", type=Path, metavar="FILE", help="also write every number as JSON")
    add_device_arg(p)
    p.add_argument("--compile", default="none", choices=COMPILE_MODES, metavar="MODE",
                   help="also time row (b) with its forward under torch.compile in MODE (one of "
                   f"{', '.join(COMPILE_MODES)}; default none) and its compile seconds, and train the whole run (and "
                   "--whole-run) with train.compile=MODE")
    p.add_argument(
        "--whole-run", action="store_true",
        help="instead: train the whole mainline as 'grokscope run' does (to 1.5x the grok epoch, or --run-epochs) and "
        "time it phase by phase (memorisation, circuit formation, cleanup, after) against the reference and "
        "TransformerLens loops timed from the run's own checkpoints (~6 minutes on 2 cores)",
    )
    p.add_argument("--out", type=Path,
                   help="--whole-run: the run directory to create (default: a temporary one, removed after)")
    p.add_argument("--peer-epochs", type=int, default=5,
                   help="--whole-run: epochs each peer loop is timed per phase (default 5)")
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    kw = dict(p=args.p, epochs=args.epochs, repeats=args.repeats, k=args.k, agree_steps=args.agree_steps,
              agree_p=args.agree_p, run_epochs=args.run_epochs, threads=args.threads)
    if args.scaling:
        kw["scaling"] = tuple(args.scaling)
    for name in ("p", "epochs", "repeats", "k", "agree_steps", "run_epochs", "threads", "agree_p"):
        if kw.get(name) is not None and kw[name] < 1:
            raise UserError(f"--{name.replace('_', '-')}: must be >= 1, got {kw[name]}")
    given = {k: v for k, v in kw.items() if v is not None}
    opts = BenchOptions.quick_options(**kw) if args.quick else BenchOptions(**given)
    opts.tl = not args.no_tl
    opts.device, opts.compile = device_from_args(args, opts.config), args.compile
    if args.whole_run:
        res = _whole_run(opts, args)
    else:
        if args.out is not None:
            raise UserError("--out: only with --whole-run")
        res = run_bench(opts)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 0
