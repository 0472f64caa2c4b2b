"""``grokscope analyze RUN [--step N]``: reverse-engineer a checkpoint, write analysis.json, print tables.

This is the only module of :mod:`grokscope.analysis` that touches files (through the run store API).
``register(subparsers)`` adds the subcommand; the CLI turns :class:`~grokscope.store.RunError` into one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable

__all__ = ["ANALYSIS_FILE", "analyze_run", "cmd_analyze", "print_run_summary", "register"]

ANALYSIS_FILE = "analysis.json"
PHASES_FILE = "phases.json"


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``analyze`` subcommand to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "analyze",
        help="reverse-engineer a checkpoint (key frequencies, neurons, logit fits, ablations) into analysis.json",
        description="Reverse-engineer one checkpoint of a run (default: the last) as in Nanda et al. (2023) section 4: "
        "key frequencies, restricted/excluded loss, neuron clusters, logit fit, ablations, attention fits, the "
        "Table 5 row, and phase boundaries from the stored curves. Writes analysis.json (and phases.json) into the run.",
    )
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("--step", type=int, help="checkpoint step to analyse (default: the last checkpoint)")
    p.add_argument("--key-freqs", help="comma-separated key frequencies to use instead of the W_L_dft rule, e.g. 14,35,41")
    p.add_argument(
        "--rule", default="W_L_dft", choices=("W_L_dft", "W_L_online", "W_E_norm", "neuron_cluster", "logits_dft"), help="key-frequency rule (default W_L_dft)"
    )
    p.add_argument(
        "--all-steps",
        action="store_true",
        help="also recompute restricted/excluded loss for every checkpoint with the key frequencies fixed (second pass; "
        "stored as metrics with the suffix _fixed)",
    )
    p.add_argument("--quiet", action="store_true", help="write analysis.json without printing the tables")
    p.set_defaults(func=cmd_analyze)
    return p


def _parse_freqs(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return sorted({int(x) for x in text.replace(" ", "").split(",") if x})
    except ValueError:
        raise _error_cls()(f"--key-freqs: expected comma-separated integers, got {text!r}") from None


def _error_cls() -> type[Exception]:
    try:
        from grokscope.store import RunError
    except ImportError:  # pragma: no cover - the store is part of the package
        return ValueError
    return RunError


def analyze_run(
    run: Any,
    *,
    step: int | None = None,
    key_freqs: list[int] | None = None,
    rule: str = "W_L_dft",
    all_steps: bool = False,
    write: bool = True,
) -> tuple[Any, dict[str, Any]]:
    """Analyse one checkpoint of an opened run; returns (Analysis, the analysis.json dict).

    ``run`` follows the store API (``config``, ``task()``, ``checkpoints``, ``load_model(step)``, ``metrics``,
    ``dir``, ``write_json``, ``write_metrics``). Raises the store's RunError (one line) for a run without
    checkpoints, a missing step, or a task the analysis cannot handle.
    """
    from grokscope.analysis.reverse import analyze_checkpoint
    from grokscope.measures.phases import detect_phases
    from grokscope.measures.progress import MeasureError, check_task, fixed_key_measures

    err = _error_cls()
    where = getattr(run, "dir", "run")
    task = run.task()
    try:
        check_task(task)
    except MeasureError as e:
        raise err(f"{where}: cannot analyse this task: {e}") from None
    steps = list(run.checkpoints)
    if not steps:
        raise err(f"{where}: the run has no checkpoints to analyse")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        near = min(steps, key=lambda s: abs(s - step))
        raise err(f"{where}: no checkpoint at step {step} (nearest: {near})")
    model = run.load_model(step)
    try:
        analysis = analyze_checkpoint(model, task, key_freqs=key_freqs, rule=rule, step=step)
    except MeasureError as e:
        raise err(f"{where}: {e}") from None
    data = analysis.to_dict()
    data["run"] = str(where)
    data["checkpoints"] = steps

    metrics = None
    if all_steps:
        fixed = fixed_key_measures(
            [(s, (lambda s=s: run.load_model(s))) for s in steps], task, key_freqs=analysis.key_frequencies
        )
        if write:
            for s, row in fixed.iterrows():
                run.write_metrics(int(s), {k: float(v) for k, v in row.items() if v == v})
        data["fixed_key_measures"] = {"key_frequencies": fixed.attrs["key_frequencies"], "steps": len(fixed)}
    try:
        metrics = run.metrics
    except Exception:  # a run without a metrics database still gets analysed
        metrics = None
    if metrics is not None and len(metrics):
        if all_steps and "excluded_loss_fixed" not in metrics.columns:
            metrics = metrics.join(fixed, how="outer")
        phases = detect_phases(metrics).to_dict()
        data["phases"] = phases
        if write:
            run.write_json(PHASES_FILE, phases)
    else:
        data["phases"] = None
    if write:
        run.write_json(ANALYSIS_FILE, data)
    return analysis, data


def print_run_summary(run: Any, *, all_steps: bool = True) -> None:
    """End-of-run summary for ``grokscope run``: the second pass with key frequencies fixed from the final
    checkpoint (``all_steps``), analysis.json/phases.json, then grok epoch, phases, key frequencies, restricted
    vs test loss and the Table 5 row. A run the analysis cannot handle prints one line instead."""
    from grokscope.analysis.tables import render_summary

    try:
        analysis, data = analyze_run(run, all_steps=all_steps)
    except (ValueError, _error_cls()) as e:
        print(f"analysis:   skipped ({e})")
        return
    print(render_summary(analysis, data.get("phases")))
    print(f"analysis:   {Path(run.dir) / ANALYSIS_FILE} (full tables: grokscope analyze {run.dir})")


def cmd_analyze(args: argparse.Namespace, *, load_run: Callable[[Any], Any] | None = None) -> int:
    """Handler of ``grokscope analyze``: returns the exit code (errors are raised as RunError)."""
    if load_run is None:
        from grokscope.store import load_run
    from grokscope.analysis.tables import render_analysis, render_phases

    run = load_run(args.run)
    analysis, data = analyze_run(
        run,
        step=args.step,
        key_freqs=_parse_freqs(getattr(args, "key_freqs", None)),
        rule=getattr(args, "rule", "W_L_dft"),
        all_steps=getattr(args, "all_steps", False),
    )
    if not getattr(args, "quiet", False):
        print(render_analysis(analysis))
        if data.get("phases"):
            print(render_phases(data["phases"]))
        print(f"\nwrote {Path(run.dir) / ANALYSIS_FILE}")
    return 0
