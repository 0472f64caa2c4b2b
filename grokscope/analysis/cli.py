"""``grokscope analyze RUN [--step N]``: reverse-engineer a checkpoint, write analysis.json, print tables.

``register(subparsers)`` adds the subcommand; the library code it calls is :mod:`grokscope.analysis.run`. The CLI
turns :class:`~grokscope.store.RunError` into one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from grokscope.analysis.run import ANALYSIS_FILE, analyze_run, load_state_and_step, model_analysis, print_zoo
from grokscope.analysis.tables import render_analysis, render_phases
from grokscope.cli_args import UserError, config_from_args, device_from_args
from grokscope.measures import MeasureError
from grokscope.store import RunError, atomic_write_json, load_run, save_checkpoint
from grokscope.store.split import SPLIT_FILE, read_split_file, write_split
from grokscope.training.loop import new_run_dir

__all__ = ["cmd_analyze", "cmd_analyze_checkpoint", "register"]


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``analyze`` subcommand to an argparse subparsers object; returns its parser."""
    p = subparsers.add_parser(
        "analyze",
        help="reverse-engineer a checkpoint (key frequencies, neurons, logit fits, ablations) into analysis.json",
        description="Reverse-engineer one checkpoint of a run (default: the last) as in Nanda et al. (2023) section "
        "4: key frequencies, restricted/excluded loss, neuron clusters, logit fit, ablations, attention fits, the "
        "Table 5 row, and phase boundaries from the stored curves. Writes analysis.json (and phases.json) into the "
        "run.",
    )
    p.add_argument("run", type=Path, nargs="?",
                   help="run directory (or --checkpoint FILE for a model grokscope did not train)")
    p.add_argument("--step", type=int, help="checkpoint step to analyse (default: the last checkpoint)")
    p.add_argument("--key-freqs",
                   help="comma-separated key frequencies to use instead of the W_L_dft rule, e.g. 14,35,41")
    p.add_argument("--rule", default="W_L_dft", help="key-frequency rule (default W_L_dft)",
                   choices=("W_L_dft", "W_L_online", "W_E_norm", "neuron_cluster", "logits_dft"))
    p.add_argument("--basis", choices=("additive", "dlog"),
                   help="analyse in this basis instead of the task's own (default: the basis in which the task is a "
                   "group operation: additive for a+b, a-b; discrete-log for a*b, a/b, ab+a+b; see "
                   "docs/measures/bases.md)")
    p.add_argument("--all-steps", action="store_true",
                   help="also recompute restricted/excluded loss for every checkpoint with the key frequencies fixed "
                   "(second pass; stored as metrics with the suffix _fixed)")
    p.add_argument("--quiet", action="store_true", help="write analysis.json without printing the tables")
    p.add_argument("--device", metavar="NAME",
                   help="where the model's forward passes run: auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N "
                   "or mps (default: cpu; the float64 math stays float64; results equal the CPU's to rounding)")
    g = p.add_argument_group(
        "a model grokscope did not train",
        "--checkpoint FILE --preset NAME [--set k=v ...]: analyse a safetensors state dict with TransformerLens keys "
        "(e.g. a HookedTransformer's) whose architecture and task the preset and overrides describe. Writes OUT "
        "(default FILE's name + '-analysis' beside it): a run directory with config.json, the checkpoint (at its "
        "step: the file's metadata field 'step' or a step_N in its name; unknown: stored as 0, analysis.json step "
        "null), analysis.json and, with --split, split.json.",
    )
    g.add_argument("--checkpoint", type=Path, metavar="FILE", help="a .safetensors state dict (instead of RUN)")
    g.add_argument("--preset", help="preset describing the model and task (see 'grokscope presets')")
    g.add_argument("--config", type=Path, help="a config.json instead of --preset")
    g.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field (repeatable)")
    g.add_argument("--out", type=Path, help="directory to create for the results (must not exist or be empty)")
    g.add_argument("--split", type=Path, metavar="FILE",
                   help="the model's own train indices, so train and test losses are its own: a JSON list of flat "
                   "indices a*p + b, or {\"train\": [...]} (default: the config's split, which is then assumed)")
    p.set_defaults(func=cmd_analyze, epochs=None)
    return p


def _parse_freqs(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return sorted({int(x) for x in text.replace(" ", "").split(",") if x})
    except ValueError:
        raise RunError(f"--key-freqs: expected comma-separated integers, got {text!r}") from None


def _device(args: argparse.Namespace):
    """The ``--device`` of an analysis command: the CPU unless given (UserError, one line, for a missing device)."""
    return device_from_args(argparse.Namespace(device=getattr(args, "device", None) or "cpu"))


def cmd_analyze(args: argparse.Namespace, *, load_run: Callable[[Any], Any] = load_run) -> int:
    """Handler of ``grokscope analyze``: returns the exit code (errors are raised as RunError)."""
    if getattr(args, "checkpoint", None) is not None or args.run is None:
        return cmd_analyze_checkpoint(args)
    given = [flag for flag, attr in (("--preset", "preset"), ("--config", "config"), ("--set", "overrides"),
                                     ("--out", "out"), ("--split", "split")) if getattr(args, attr, None)]
    if given:
        raise UserError(f"{'/'.join(given)} go with --checkpoint FILE; a RUN has its own config and directory")
    device = _device(args)
    run = load_run(args.run)
    analysis, data = analyze_run(run, step=args.step, key_freqs=_parse_freqs(args.key_freqs), rule=args.rule,
                                 all_steps=args.all_steps, device=device, basis=getattr(args, "basis", None))
    if not args.quiet:
        if analysis is not None:
            print(render_analysis(analysis))
        else:
            task = run.config.task
            what = f"{task.formula} mod {task.p}" if task.kind == "modular" else f"task {task.kind}"
            print(f"Analysis of {run.config.model.arch} on {what} at step {data['step']}")
        print_zoo(data)
        if data.get("phases"):
            print(render_phases(data["phases"]))
        print(f"\nwrote {Path(run.dir) / ANALYSIS_FILE}")
    return 0


def cmd_analyze_checkpoint(args: argparse.Namespace) -> int:
    """``grokscope analyze --checkpoint FILE --preset NAME``: analyse a state dict grokscope did not train.

    What a run gets (the analysis in the task's basis, the ``zoo`` block), at the file's step (or "step unknown",
    ``"step": null``), with ``--split FILE``'s train indices (else the config's split, said to be assumed)."""
    if args.run is not None:
        raise UserError("give a RUN directory or --checkpoint FILE, not both")
    if args.checkpoint is None:
        raise UserError("give a RUN directory, or --checkpoint FILE --preset NAME for a model grokscope did not train")
    if args.step is not None or args.all_steps:
        raise UserError("--step and --all-steps need a RUN; --checkpoint FILE is a single checkpoint")
    if not args.preset and args.config is None:
        raise UserError("--checkpoint needs --preset NAME or --config FILE describing the model and task, "
                        "e.g. --preset nanda-mainline")
    device = _device(args)
    cfg = config_from_args(argparse.Namespace(**{**vars(args), "device": None}))  # --device: not the config's
    path = Path(args.checkpoint)
    out = Path(args.out) if args.out is not None else path.with_name(path.stem + "-analysis")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise RunError(f"{out}: already exists; choose another --out or remove it")
    split_path = getattr(args, "split", None)
    train = read_split_file(split_path) if split_path is not None else None
    state, step = load_state_and_step(path)
    try:
        model, analysis, data = model_analysis(state, cfg, key_freqs=_parse_freqs(args.key_freqs), rule=args.rule,
                                               step=step, where=str(path), device=device,
                                               basis=getattr(args, "basis", None), split=train,
                                               split_where=str(split_path))
    except MeasureError as e:
        raise RunError(f"{path}: cannot analyse this config: {e}") from None
    # Everything checked: write a run directory (config, the checkpoint at its step or 0, split.json, analysis.json).
    new_run_dir(out, cfg)
    save_checkpoint(out, step or 0, {k: v.detach().cpu() for k, v in model.state_dict().items()})  # CPU tensors
    if train is not None:
        write_split(out, train, source=str(split_path))
    split_note = _split_note(cfg, split_path, train, out)
    source = {"checkpoint": str(path), "preset": args.preset, "config": str(args.config) if args.config else None,
              "overrides": list(args.overrides), "step": step,
              "split": str(split_path) if split_path is not None else None, "split_note": split_note}
    data.update(run=str(out), checkpoints=[step or 0], source=source)
    atomic_write_json(out / ANALYSIS_FILE, data)
    if not args.quiet:
        if analysis is not None:
            text = render_analysis(analysis)
            if step is None:
                head, _, rest = text.partition("\n")
                text = f"{head} (step unknown)\n{rest}"
            print(text)
        else:
            task = cfg.task
            what = f"{task.formula} mod {task.p}" if task.kind == "modular" else f"task {task.kind}"
            print(f"Analysis of {cfg.model.arch} on {what} " + (f"at step {step}" if step is not None else
                                                                 "(step unknown)"))
        print_zoo(data)
        print(f"split: {split_note}")
        print(f"\nwrote {out / ANALYSIS_FILE}")
    return 0


def _split_note(cfg: Any, split_path: Path | None, train: list[int] | None, out: Path) -> str:
    """One line on the train/test split an outside model was scored with."""
    if split_path is not None and train is not None:
        return f"the model's own, {len(train)} train pairs from {split_path} (recorded in {out / SPLIT_FILE})"
    t = cfg.task
    how = f"n_train={t.n_train}" if t.n_train is not None else f"train_fraction={t.train_fraction}"
    return (f"the config's split was assumed (task.{how}, split_seed={t.split_seed}); give --split FILE with the "
            "model's train indices a*p + b for its own train and test losses")
