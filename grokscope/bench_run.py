"""``grokscope bench --whole-run``: a whole run, as ``grokscope run`` makes it, timed phase by phase.

A benchmark of a run's first 500 epochs measures memorisation only; a slowdown that starts after grokking
(subnormal gradients once the model is confident, see :mod:`grokscope.runtime`) hides from it. This trains
the whole run (to 1.5x the grok epoch, or ``epochs``), stamps the wall clock at every logged epoch, splits the
run at its phases (:func:`grokscope.measures.phases.detect_phases`: memorisation, circuit formation, cleanup,
after) and reports epochs/s per phase. The peers, the reference loop and the TransformerLens demo loop (a
training epoch and a test evaluation, every epoch), are timed for a few epochs from the run's own checkpoint
in the middle of each phase, at learning rate 0 (a fresh optimiser would knock a grokked model off its
solution), so each phase compares grokscope with its peers on the same weights. Also: where the run's time
went (from the run's meta), the start-up, the analysis and the report. The run and its peers compute on the
config's ``train.device`` (``grokscope bench --whole-run --device NAME``).
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grokscope.analysis.run import print_run_summary
from grokscope.bench_loops import DefaultLoop, ReferenceLoop, TransformerLensLoop, loop_rate
from grokscope.cli_args import raise_unless_extra
from grokscope.config import ExperimentConfig, apply_overrides
from grokscope.device import resolve_device
from grokscope.measures import detect_phases
from grokscope.tasks import task_to
from grokscope.training import train

__all__ = ["PHASE_NAMES", "WallStamps", "phase_segments", "segment_seconds", "whole_run_phases", "render_whole_run"]

PHASE_NAMES = ("memorisation", "circuit formation", "cleanup", "after cleanup")


class WallStamps:
    """A tracker (:mod:`grokscope.trackers`) that records the wall clock at every logged epoch."""

    name = "wall-stamps"

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.stamps: list[tuple[int, float]] = []

    def start(self, config: Any, run_dir: Path, *, step: int = 0) -> None:
        self.started = self.clock()

    def log(self, step: int, metrics: Any) -> None:
        self.stamps.append((int(step), self.clock()))

    def finish(self, status: str) -> None:
        self.finished = self.clock()


def phase_segments(phases: Any, final_epoch: int) -> list[tuple[str, int, int]]:
    """``(name, first, last)`` epoch ranges of the phases that the run reached, in order; boundaries missing
    from ``phases`` (a run that never groks, or never cleans up) end the segment at ``final_epoch``."""
    bounds = [0, phases.memorisation_end, phases.circuit_formation_end, phases.cleanup_end]
    out = []
    for i, name in enumerate(PHASE_NAMES):
        start = bounds[i]
        if start is None or start >= final_epoch:
            break
        nxt = bounds[i + 1] if i + 1 < len(bounds) else None
        end = final_epoch if nxt is None else min(nxt, final_epoch)
        if end > start:
            out.append((name, start, end))
        if nxt is None:
            break
    return out


def _time_at(stamps: list[tuple[int, float]], epoch: int) -> float:
    """The wall clock when ``epoch`` was logged, interpolated linearly between the nearest stamps."""
    for (e0, t0), (e1, t1) in zip(stamps, stamps[1:]):
        if e0 <= epoch <= e1:
            return t0 if e1 == e0 else t0 + (t1 - t0) * (epoch - e0) / (e1 - e0)
    raise ValueError(f"epoch {epoch} is outside the stamped epochs {stamps[0][0]}..{stamps[-1][0]}")


def segment_seconds(stamps: list[tuple[int, float]], segments: list[tuple[str, int, int]]) -> list[float]:
    """Wall seconds the run spent in each ``(name, first, last)`` segment, from its per-log-epoch stamps."""
    return [_time_at(stamps, end) - _time_at(stamps, start) for _, start, end in segments]


def _nearest(values: list[int], target: float) -> int:
    return min(values, key=lambda v: abs(v - target))


def _peers(cfg: ExperimentConfig, run: Any, step: int, epochs: int, tl: bool) -> dict[str, float]:
    """Demo-loop epochs/s of grokscope's step, the reference and TransformerLens, from ``run``'s checkpoint at
    ``step``, at learning rate 0 (one warm-up epoch each, then ``epochs`` timed epochs with a test evaluation)."""
    cfg = apply_overrides(cfg, {"train.fast_path": True})
    device = resolve_device(cfg.train.device)
    task = task_to(run.task(), device)
    runners: dict[str, Any] = {
        "grokscope": DefaultLoop(cfg, task, run.load_model(step).to(device)),
        "reference": ReferenceLoop(cfg, task, run.load_model(step).to(device)),
    }
    if tl:
        runners["transformer_lens"] = TransformerLensLoop(cfg, task, run.load_model(step).to(device))
    rates = {}
    for name, r in runners.items():
        r.fixed_lr = 0.0
        r.epoch()
        r.evaluate()
        rates[name] = loop_rate(r, epochs, device)
    return rates


def whole_run_phases(
    cfg: ExperimentConfig,
    out: Path | str,
    *,
    epochs: int | None = None,
    peer_epochs: int = 5,
    tl: bool = True,
    analysis: bool = True,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train ``cfg`` into ``out`` as ``grokscope run`` does (to 1.5x the grok epoch unless ``epochs``), then the
    analysis summary and the report; return the timings (see the module docstring)."""
    if epochs is not None:
        cfg = apply_overrides(cfg, {"train.epochs": epochs, "train.stop_after_grok": None})
    elif cfg.train.stop_after_grok is None:
        cfg = apply_overrides(cfg, {"train.stop_after_grok": 1.5})
    stamps = WallStamps()
    t0 = time.perf_counter()
    run = train(cfg, out, progress=False, trackers=[stamps])
    t_train = time.perf_counter() - t0
    meta = run.meta
    final = int(meta["final_epoch"])
    res: dict[str, Any] = {
        "config": cfg.name, "final_epoch": final,
        "grok_epoch": int(meta["grok_epoch"]) if meta.get("grok_epoch") else None, "run_dir": str(run.dir),
        "denormals": meta.get("denormals", ""), "forward": meta.get("forward", ""),
        "train_call_seconds": t_train, "startup_seconds": stamps.stamps[0][1] - t0,
        "parts": json.loads(meta.get("seconds", "{}")),
    }
    if cfg.train.compile != "none":  # train.compile (grokscope bench --whole-run --compile MODE): what it cost
        res |= {k: meta.get(k, "") for k in ("compile", "compile_note", "compile_seconds", "compile_signatures")}
    if analysis:
        res |= _after_training(run)
    phases = detect_phases(run.metrics)
    segments = phase_segments(phases, final)
    seconds = segment_seconds(stamps.stamps, segments)
    checkpoints = list(run.checkpoints)
    rows = []
    for (name, start, end), secs in zip(segments, seconds):
        step = _nearest(checkpoints, (start + end) / 2)
        log(f"  {name}: epochs {start}-{end}, peers from checkpoint {step} ...")
        rows.append({"phase": name, "start": start, "end": end, "seconds": secs, "run_eps": (end - start) / secs,
                     "checkpoint": step} | {f"{k}_eps": v for k, v in _peers(cfg, run, step, peer_epochs, tl).items()})
    res["phases"] = rows
    return res


def _after_training(run: Any) -> dict[str, float]:
    """Seconds of the analysis summary and the report that ``grokscope run`` writes after training."""
    out: dict[str, float] = {}
    with contextlib.redirect_stdout(io.StringIO()):
        t0 = time.perf_counter()
        print_run_summary(run)
        out["analysis_seconds"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            from grokscope.figures.report import write_report
        except ImportError as e:  # the plot extra is missing: no report, as grokscope run says
            raise_unless_extra(e)
        else:
            write_report(run)
            out["report_seconds"] = time.perf_counter() - t0
    return out


def render_whole_run(res: dict[str, Any], out: Callable[[str], None] = print) -> None:
    """Print :func:`whole_run_phases`'s table: per phase, epochs/s of the run and of its peers, and the ratios."""
    rows = res["phases"]
    tl = all("transformer_lens_eps" in r for r in rows)
    on = f" on {res['device']}" if res.get("device") else ""
    out(f"whole run: {res['config']}{on}, {res['final_epoch']} epochs (test accuracy >= 99% first at "
        f"{res['grok_epoch']}), {res['forward']} forward, subnormals {res['denormals']}")
    if "compile" in res:
        note = f"; {res['compile_note']}" if res["compile_note"] else ""
        out(f"compiled: {res['compile']} (torch.compile), {res['compile_seconds'] or '?'} s to compile "
            f"{res['compile_signatures'] or '?'} signature(s), in the run's time below{note}")
    head = f"{'phase':18} {'epochs':>13} {'run ep/s':>9} {'step ep/s':>10} {'ref ep/s':>9} {'x ref':>6}"
    out(head + (f" {'TL ep/s':>8} {'x TL':>6}" if tl else ""))
    first = rows[0]["run_eps"] if rows else float("nan")
    for r in rows:
        line = (f"{r['phase']:18} {r['start']:>6}-{r['end']:<6} {r['run_eps']:9.2f} {r['grokscope_eps']:10.2f} "
                f"{r['reference_eps']:9.2f} {r['run_eps'] / r['reference_eps']:6.1f}")
        if tl:
            line += f" {r['transformer_lens_eps']:8.2f} {r['run_eps'] / r['transformer_lens_eps']:6.1f}"
        out(line)
    train_s = sum(r["seconds"] for r in rows)
    epochs = sum(r["end"] - r["start"] for r in rows)
    ref_s = sum((r["end"] - r["start"]) / r["reference_eps"] for r in rows)
    line = (f"{'whole run':18} {0:>6}-{res['final_epoch']:<6} {epochs / train_s:9.2f} {'':10} {epochs / ref_s:9.2f} "
            f"{ref_s / train_s:6.1f}")
    if tl:
        tl_s = sum((r["end"] - r["start"]) / r["transformer_lens_eps"] for r in rows)
        line += f" {epochs / tl_s:8.2f} {tl_s / train_s:6.1f}"
    out(line)
    if rows:
        slowest = min(rows, key=lambda r: r["run_eps"])
        out(f"slowest phase / first phase: {slowest['run_eps'] / first:.2f} ({slowest['phase']}); "
            "run ep/s: the run itself (evaluation, measures and checkpoints included); step ep/s, ref, TL: demo loops "
            "(a training epoch and a test evaluation) from the run's checkpoint in the phase, at learning rate 0")
    parts = dict(res.get("parts", {}))
    after = {k: res[k] for k in ("analysis_seconds", "report_seconds") if k in res}
    total = res["train_call_seconds"] + sum(after.values())
    pieces = [f"start-up {res['startup_seconds']:.2f}"] + [f"{k.replace('_', ' ')} {v:.2f}" for k, v in parts.items()]
    pieces += [f"{k.replace('_seconds', '')} {v:.2f}" for k, v in after.items()]
    out(f"where the time went (s): {', '.join(pieces)}; {total:.1f} s in all")
