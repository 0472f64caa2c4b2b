"""``grokscope analyze RUN [--step N]``: reverse-engineer a checkpoint, write analysis.json, print tables.

This is the only module of :mod:`grokscope.analysis` that touches files (through the run store API).
``register(subparsers)`` adds the subcommand; the CLI turns :class:`~grokscope.store.RunError` into one
line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ANALYSIS_FILE", "analyze_run", "cmd_analyze", "cmd_analyze_checkpoint", "load_state_file", "print_run_summary", "register"]

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
    p.add_argument("run", type=Path, nargs="?", help="run directory (or --checkpoint FILE for a model grokscope did not train)")
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
    _add_checkpoint_args(p)
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
    checkpoints or a missing step. The zoo analyses that fit the task go under ``"zoo"``
    (:func:`grokscope.analysis.zoo.zoo_analysis`); for a task the Fourier analysis does not cover (not a full
    modular grid: division, other kinds) they are the whole analysis and Analysis is None.
    """
    from grokscope.analysis.reverse import analyze_checkpoint
    from grokscope.analysis.zoo import zoo_analysis
    from grokscope.measures.phases import detect_phases
    from grokscope.measures.progress import MeasureError, check_task, fixed_key_measures

    err = _error_cls()
    where = getattr(run, "dir", "run")
    task = run.task()
    try:
        check_task(task)
        unsupported = None
    except MeasureError as e:
        unsupported = str(e)
    steps = list(run.checkpoints)
    if not steps:
        raise err(f"{where}: the run has no checkpoints to analyse")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        near = min(steps, key=lambda s: abs(s - step))
        raise err(f"{where}: no checkpoint at step {step} (nearest: {near})")
    model = run.load_model(step)
    if unsupported is not None:
        analysis, data, all_steps = None, _zoo_only(model, task, step, unsupported, all_steps), False
    else:
        try:
            analysis = analyze_checkpoint(model, task, key_freqs=key_freqs, rule=rule, step=step)
        except MeasureError as e:
            raise err(f"{where}: {e}") from None
        data = analysis.to_dict()
        data["zoo"] = zoo_analysis(model, task, scores=False)  # spectra in both bases, operand asymmetry, when they fit
    data["run"] = str(where)
    data["checkpoints"] = steps

    metrics = None
    if all_steps:
        assert analysis is not None  # all_steps is False for an unsupported task
        from grokscope.runtime import flush_denormal

        with flush_denormal(getattr(run.config.train, "flush_denormal", True)):  # as in training: no subnormal slow path
            fixed = fixed_key_measures(
                [(s, functools.partial(run.load_model, s)) for s in steps], task, key_freqs=analysis.key_frequencies
            )
        if write:
            for s, row in fixed.iterrows():
                run.write_metrics(int(s), {k: float(v) for k, v in row.items() if v == v})
        data["fixed_key_measures"] = {"key_frequencies": fixed.attrs["key_frequencies"], "steps": len(fixed)}
    try:
        metrics = run.metrics
    except Exception as e:  # a run without a metrics database still gets analysed; a damaged one is reported
        from grokscope.store import DamagedFileError

        if isinstance(e, DamagedFileError):
            raise
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


def _zoo_only(model: Any, task: Any, step: int, reason: str, all_steps: bool) -> dict[str, Any]:
    """analysis.json of a task outside the Fourier analysis: what :func:`zoo_analysis` fits, and why the rest is not there.

    Division: the progress measures and fits live on the additive p x p grid, which a/b does not fill; they are not
    recomputed in the discrete-log basis (no published definition there); the W_E spectra in both bases stand in."""
    from grokscope.analysis.zoo import zoo_analysis

    cfg = task.config
    zoo = zoo_analysis(model, task)
    if "spectra" in zoo:
        reason += "; the W_E spectra in the additive and discrete-log bases are reported instead"
    zoo["skipped"] = {"Fourier analysis and progress measures": reason}
    if all_steps:
        zoo["skipped"]["--all-steps"] = "it recomputes the progress measures, which do not apply"
    formula = cfg.formula if cfg.kind in ("modular", "multi", "s5") else None
    return {"step": step, "task": cfg.kind, "formula": formula, "zoo": zoo}


def _print_zoo(data: dict[str, Any]) -> None:
    from grokscope.analysis.zoo import render_zoo

    text = render_zoo(data.get("zoo") or {})
    if text:
        print(text)


def print_run_summary(run: Any, *, all_steps: bool = True) -> None:
    """End-of-run summary for ``grokscope run``: the second pass with key frequencies fixed from the final
    checkpoint (``all_steps``), analysis.json/phases.json, then grok epoch, phases, key frequencies, restricted
    vs test loss and the Table 5 row. A task outside the Fourier analysis prints the zoo analyses that fit it; an
    error prints one line."""
    from grokscope.analysis.tables import render_summary

    try:
        analysis, data = analyze_run(run, all_steps=all_steps)
    except (ValueError, _error_cls()) as e:
        print(f"analysis:   skipped ({e})")
        return
    if analysis is None:
        _print_zoo(data)
    else:
        print(render_summary(analysis, data.get("phases")))
    print(f"analysis:   {Path(run.dir) / ANALYSIS_FILE} (full tables: grokscope analyze {run.dir})")


def cmd_analyze(args: argparse.Namespace, *, load_run: Callable[[Any], Any] | None = None) -> int:
    """Handler of ``grokscope analyze``: returns the exit code (errors are raised as RunError)."""
    if getattr(args, "checkpoint", None) is not None or args.run is None:
        return cmd_analyze_checkpoint(args)
    if load_run is None:
        from grokscope.store import load_run as default_load_run

        load_run = default_load_run
    from grokscope.analysis.tables import render_analysis, render_phases

    _refuse_checkpoint_args(args)
    run = load_run(args.run)
    analysis, data = analyze_run(
        run,
        step=args.step,
        key_freqs=_parse_freqs(getattr(args, "key_freqs", None)),
        rule=getattr(args, "rule", "W_L_dft"),
        all_steps=getattr(args, "all_steps", False),
    )
    if not getattr(args, "quiet", False):
        if analysis is not None:
            print(render_analysis(analysis))
        else:
            t = run.config.task
            what = f"{t.formula} mod {t.p}" if t.kind == "modular" else f"task {t.kind}"
            print(f"Analysis of {run.config.model.arch} on {what} at step {data['step']}")
        _print_zoo(data)
        if data.get("phases"):
            print(render_phases(data["phases"]))
        print(f"\nwrote {Path(run.dir) / ANALYSIS_FILE}")
    return 0


# --------------------------------------------------------------------------- a checkpoint grokscope did not train

#: File suffixes of pickle checkpoints (torch.save); grokscope never unpickles.
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle")
CONVERT_HINT = 'convert it once in Python: safetensors.torch.save_file(model.state_dict(), "model.safetensors")'


def _add_checkpoint_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "a model grokscope did not train",
        "--checkpoint FILE --preset NAME [--set k=v ...]: analyse a safetensors state dict with TransformerLens keys "
        "(e.g. a HookedTransformer's) whose architecture and task the preset and overrides describe. Writes OUT "
        "(default FILE's name + '-analysis' beside it): a run directory with config.json, the checkpoint as step 0, "
        "and analysis.json.",
    )
    g.add_argument("--checkpoint", type=Path, metavar="FILE", help="a .safetensors state dict (instead of RUN)")
    g.add_argument("--preset", help="preset describing the model and task (see 'grokscope presets')")
    g.add_argument("--config", type=Path, help="a config.json instead of --preset")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override one config field (repeatable)")
    g.add_argument("--out", type=Path, help="directory to create for the results (must not exist or be empty)")
    p.set_defaults(epochs=None)


def _refuse_checkpoint_args(args: argparse.Namespace) -> None:
    from grokscope.cli_args import UserError

    given = [f for f, v in (("--preset", getattr(args, "preset", None)), ("--config", getattr(args, "config", None)),
                            ("--set", getattr(args, "overrides", None)), ("--out", getattr(args, "out", None))) if v]
    if given:
        raise UserError(f"{'/'.join(given)} go with --checkpoint FILE; a RUN has its own config and directory")


def load_state_file(path: Path) -> dict[str, Any]:
    """The tensors of a safetensors file (never pickle); RunError (one line) for a missing, pickle or damaged file."""
    from grokscope.store import RunError
    from grokscope.store.files import load_tensors

    path = Path(path)
    if path.is_dir():
        raise RunError(f"{path}: a directory; --checkpoint takes a .safetensors file (analyse a run with 'grokscope analyze RUN')")
    if not path.is_file():
        raise RunError(f"{path}: no such file")
    pickle = f"{path}: a pickle checkpoint (torch.save), which grokscope never loads; {CONVERT_HINT}"
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise RunError(pickle)
    try:
        tensors, _ = load_tensors(path)
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror or e})") from None
    except ValueError as e:
        with path.open("rb") as f:
            head = f.read(4)
        if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":  # torch.save's zip archive or a bare pickle
            raise RunError(pickle) from None
        raise RunError(f"{e}; --checkpoint takes a safetensors file ({CONVERT_HINT})") from None
    return tensors


def _new_out_dir(out: Path) -> Path:
    from grokscope.store import RunError

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out}: already exists; choose another --out or remove it")
    return out


def cmd_analyze_checkpoint(args: argparse.Namespace) -> int:
    """``grokscope analyze --checkpoint FILE --preset NAME``: analyse a state dict grokscope did not train."""
    from grokscope.analysis.tables import render_analysis
    from grokscope.cli_args import UserError, config_from_args
    from grokscope.interop import model_analysis
    from grokscope.measures.progress import MeasureError
    from grokscope.store import RunError, atomic_write_json, save_checkpoint
    from grokscope.training.loop import new_run_dir

    if args.run is not None:
        raise UserError("give a RUN directory or --checkpoint FILE, not both")
    if args.checkpoint is None:
        raise UserError("give a RUN directory, or --checkpoint FILE --preset NAME for a model grokscope did not train")
    if args.step is not None or args.all_steps:
        raise UserError("--step and --all-steps need a RUN; --checkpoint FILE is a single checkpoint")
    if not args.preset and args.config is None:
        raise UserError("--checkpoint needs --preset NAME or --config FILE describing the model and task, e.g. --preset nanda-mainline")
    cfg = config_from_args(args)
    path = Path(args.checkpoint)
    out = _new_out_dir(Path(args.out) if args.out is not None else path.with_name(path.stem + "-analysis"))
    state = load_state_file(path)
    try:
        model, analysis, data = model_analysis(state, cfg, key_freqs=_parse_freqs(args.key_freqs), rule=args.rule, step=0, where=str(path))
    except MeasureError as e:
        raise RunError(f"{path}: cannot analyse this config: {e}") from None
    # Everything checked: write a run directory (config, the checkpoint as step 0, analysis.json).
    new_run_dir(out, cfg)
    save_checkpoint(out, 0, model.state_dict())
    data.update(run=str(out), checkpoints=[0], source={"checkpoint": str(path), "preset": args.preset, "config": str(args.config) if args.config else None, "overrides": list(args.overrides)})
    atomic_write_json(out / ANALYSIS_FILE, data)
    if not args.quiet:
        print(render_analysis(analysis))
        print(f"\nwrote {out / ANALYSIS_FILE}")
    return 0
