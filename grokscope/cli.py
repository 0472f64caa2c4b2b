"""The command line: ``grokscope <command> ...``. It only parses, selects presets, applies overrides and calls.

Errors the user can cause end in one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from grokscope.analysis.run import print_run_summary
from grokscope.cli_args import (
    EXIT_USAGE,
    UserError,
    add_config_args,
    add_device_arg,
    add_log_arg,
    add_threads_arg,
    config_from_args,
    device_from_args,
    raise_unless_extra,
    threads_from_args,
    trackers_from_args,
)
from grokscope.config import ConfigError, apply_overrides
from grokscope.formula import FormulaError
from grokscope.measures import GROK_ACC
from grokscope.measures.names import TEST_ACC, TEST_LOSS, TRAIN_ACC, TRAIN_LOSS
from grokscope.presets import describe_presets, get_preset
from grokscope.store import Run, RunError, check_run
from grokscope.store.run import METRICS
from grokscope.store.split import SPLIT_FILE
from grokscope.training import TrainingDiverged, resume, train
from grokscope.training.lineage import Parent, parse_parts, parse_source

# Subcommands that live with their feature: module path -> each exposes register(subparsers).
PLUGIN_COMMANDS = ("grokscope.analysis.cli", "grokscope.bench", "grokscope.export", "grokscope.figures.cli",
                   "grokscope.interp.cli", "grokscope.serve.cli", "grokscope.sweep.cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 (argparse's default prints the usage too)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _progress(args: argparse.Namespace) -> bool | None:
    """``--quiet``: no progress bar (False); else None: a bar when stderr is a terminal."""
    return False if args.quiet else None


def summarize(run: Run) -> str:
    """A few lines on a run: where it is, how far it got, whether and when it grokked."""
    meta = run.meta
    m = run.metrics if (run.dir / METRICS).is_file() else None  # none: written by analyze --checkpoint, no curves
    message = f" ({meta['message']})" if meta.get("message") else ""
    lines = [f"run:        {run.dir}", f"status:     {meta.get('status', 'new')}{message}"]
    if m is not None and len(m):
        last = m.iloc[-1]
        lines.append(f"epochs:     {int(m.index[-1])} of {run.config.train.epochs}")
        splits = (("train", TRAIN_ACC, TRAIN_LOSS), ("test", TEST_ACC, TEST_LOSS))
        for split, acc, loss in splits:
            if acc in m:
                lines.append(f"{split + ':':11} acc {last[acc]:.4f}  loss {last[loss]:.3e}")
        for split, acc, _ in splits:
            if acc in m:
                hit = m.index[m[acc] >= GROK_ACC]
                lines.append(f"{split} acc >= 99% first at epoch {int(hit[0]) if len(hit) else 'never'}")
    if meta.get("train_seconds"):
        path = f"{meta.get('forward', '?')} forward" + (f": {meta['forward_why']}" if meta.get("forward_why") else "")
        lines.append(f"time:       {float(meta['train_seconds']):.1f} s training ({path})")
    if meta.get("seconds"):
        try:
            parts = json.loads(meta["seconds"])
            lines.append("time split: " + ", ".join(f"{k.replace('_', ' ')} {float(v):.1f} s"
                                                    for k, v in parts.items()))
        except (ValueError, TypeError, AttributeError):
            pass  # written by another version: the summary goes on without it
    if meta.get("device"):
        lines.append(f"device:     {meta['device']} ({meta.get('numerics', '?')})")
    if meta.get("compile") and meta["compile"] != "none":
        secs = (f", {meta['compile_seconds']} s compiling {meta.get('compile_signatures', '?')} signature(s)"
                if meta.get("compile_seconds") else "")
        note = f"; {meta['compile_note']}" if meta.get("compile_note") else ""
        lines.append(f"compile:    {meta['compile']} (train.compile){secs}{note}")
    if meta.get("threads"):
        lines.append(f"threads:    {meta['threads']}")
    if meta.get("denormals"):
        lines.append(f"subnormals: {meta['denormals']} (train.flush_denormal)")
    if (run.dir / SPLIT_FILE).is_file():
        task = run.task()
        lines.append(f"split:      {len(task.train_idx)} train / {len(task.test_idx)} test pairs from "
                     f"{run.dir / SPLIT_FILE} (the model's own, given with analyze --checkpoint --split)")
    if meta.get("parent"):
        try:
            rec = json.loads(meta["parent"])
            how = "continued from" if rec["mode"] == "from" else f"{','.join(rec['parts'])} from"
            frozen = f", frozen {','.join(rec['freeze'])}" if rec.get("freeze") else ""
            lines.append(f"parent:     {how} {rec['run']} at step {rec['step']} (optimiser {rec['optimizer']}{frozen}; "
                         "this run's epoch 0 is that step)")
        except (ValueError, TypeError, KeyError):
            pass  # written by another version: the summary goes on without it
    lines.append(f"checkpoints: {len(run.checkpoints)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- commands


def cmd_train(args: argparse.Namespace) -> int:
    threads = threads_from_args(args)
    if args.resume is not None:
        if args.preset or args.config or args.overrides or args.epochs is not None or args.out \
                or args.from_run or args.init_from or args.init_parts or args.freeze_parts:
            raise UserError("--resume continues a run with its own config; "
                            "drop --preset/--config/--set/--epochs/--out/--from/--init-from")
        if args.device is not None:
            device_from_args(args)  # one line when it is not here
        run = resume(args.resume, progress=_progress(args), trackers=trackers_from_args(args), threads=threads,
                     device=args.device)
    else:
        parent = _parent_from_args(args)
        cfg = config_from_args(args, Run(parent.run).config if parent and parent.parts is None else None)
        device_from_args(args, cfg)  # one line when the device is not here, before a run directory is made
        run = train(cfg, args.out, progress=_progress(args), trackers=trackers_from_args(args), threads=threads,
                    parent=parent)
    print(summarize(run))
    return 0


def _parent_from_args(args: argparse.Namespace) -> Parent | None:
    """``--from RUN[:STEP]`` (the parent's config, continued) or ``--init-from RUN[:STEP]`` with ``--init-parts``;
    ``--freeze-parts`` with either. None: a run from scratch."""
    source, init = args.from_run, args.init_from
    if source and init:
        raise UserError("give --from (continue a run) or --init-from (copy its parts into a new config), not both")
    if source and (args.preset or args.config):
        raise UserError("--from continues the parent's own config (change it with --set); drop --preset/--config, "
                        "or use --init-from to start a preset from its weights")
    if not (source or init):
        for flag, value in (("--init-parts", args.init_parts), ("--freeze-parts", args.freeze_parts)):
            if value is not None:
                raise UserError(f"{flag} needs --init-from RUN (or, for --freeze-parts, --from RUN)")
        return None
    if source and args.init_parts is not None:
        raise UserError("--init-parts goes with --init-from; --from takes every weight")
    run, step = parse_source(source or init)
    freeze = parse_parts(args.freeze_parts, "--freeze-parts") if args.freeze_parts is not None else ()
    parts = None if source else parse_parts(args.init_parts or "all", "--init-parts")
    return Parent(run=run, step=step, parts=parts, freeze=freeze)


def cmd_run(args: argparse.Namespace) -> int:
    """The main job: the nanda-mainline preset to grokking and clean-up, then its summary."""
    cfg = config_from_args(args)
    device_from_args(args, cfg)  # one line when the device is not here, before anything is trained
    trackers = trackers_from_args(args)
    threads = threads_from_args(args)
    if args.epochs is None and not any(o.startswith("train.stop_after_grok") for o in args.overrides):
        cfg = apply_overrides(cfg, {"train.stop_after_grok": 1.5})
    what = f"{cfg.task.formula} mod {cfg.task.p}" if cfg.task.kind == "modular" else f"task {cfg.task.kind}"
    stop = f", stopping at {cfg.train.stop_after_grok} x the grok epoch" if cfg.train.stop_after_grok else ""
    print(f"training {cfg.name}: {what}, up to {cfg.train.epochs} epochs{stop}", flush=True)
    run = train(cfg, args.out, progress=_progress(args), trackers=trackers, threads=threads)
    print(summarize(run))
    print_run_summary(run)
    try:
        from grokscope.figures.report import write_report
    except ImportError as e:
        raise_unless_extra(e)
        print("report:     skipped (install the plot extra: pip install -e '.[plot]')")
    else:
        print(f"report:     {write_report(run)}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    if args.name:
        print(get_preset(args.name).to_json())
        return 0
    rows = describe_presets()
    width = max(len(n) for n, _ in rows)
    for name, doc in rows:
        print(f"{name:<{width}}  {doc}")
    print("\nshow one as JSON: grokscope presets NAME; train one: grokscope train --preset NAME")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    run = Run(args.run)
    check_run(run.dir)  # a damaged file: one line naming it and how to recover
    if args.json:
        print(json.dumps({"config": run.config.to_dict(), "meta": run.meta, "checkpoints": run.checkpoints},
                         indent=2))
        return 0
    print(run.config.to_json())
    print(summarize(run))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="grokscope",
        description="Train small networks on algorithmic tasks, watch them grok, and reverse-engineer what they "
        "learned.",
        epilog="Start with 'grokscope run' (the Nanda et al. mainline) or 'grokscope train --preset quick'.",
    )
    parser.add_argument("--version", action="version", version=f"grokscope {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    p = sub.add_parser("train", help="train a preset or config into a run directory",
                       description="Train a preset (or a config.json) into a new run directory, or resume one, or "
                       "start from another run's weights (--from, --init-from).")
    add_config_args(p, preset_default=None)
    p.add_argument("--out", type=Path, help="run directory to create (default runs/<name>-<time>)")
    p.add_argument("--resume", type=Path, metavar="RUN",
                   help="continue an interrupted run exactly where it stopped (with --device: on that device, which "
                   "may differ from the one it started on; the numbers are then close, not bitwise the same)")
    p.add_argument("--from", dest="from_run", metavar="RUN[:STEP]",
                   help="a new run that continues RUN from its checkpoint at STEP (default: its last) with RUN's "
                   "config and the --set changes (shapes must stay); AdamW's state comes too when STEP is RUN's last "
                   "saved state and only lr/weight decay/warm-up/betas/eps change; epochs count from 0; the parent is "
                   "recorded in meta['parent'] and never modified (docs/cli.md)")
    p.add_argument("--init-from", metavar="RUN[:STEP]",
                   help="start the --preset/--config model from RUN's weights at STEP (default: its last) for the "
                   "parts --init-parts names; the rest is freshly initialised, the optimiser starts fresh")
    p.add_argument("--init-parts", metavar="PARTS",
                   help="with --init-from: comma-separated embed (W_E, W_pos), attn (W_Q/K/V/O), mlp (W_in, W_out, "
                   "b_in, b_out), unembed (W_U), ln, or all (default all); shapes must match")
    p.add_argument("--freeze-parts", metavar="PARTS",
                   help="with --from/--init-from: parts (named as for --init-parts) that do not train: no update, no "
                   "weight decay")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_arg(p)
    add_threads_arg(p)
    add_log_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "run",
        help="the main job: reproduce the Nanda et al. grokking run and summarise it",
        description="Train the nanda-mainline preset until it has grokked and cleaned up (train.stop_after_grok=1.5: "
        "stop at 1.5x the first epoch with test accuracy >= 99%), then print the summary. --epochs N trains exactly "
        "N epochs.",
    )
    add_config_args(p, preset_default="nanda-mainline")
    p.add_argument("--out", type=Path, help="run directory to create (default runs/<name>-<time>)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_arg(p)
    add_threads_arg(p)
    add_log_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("presets", help="list presets, or print one as JSON",
                       description="List the presets, or print one preset's config as JSON.")
    p.add_argument("name", nargs="?", help="a preset to print")
    p.set_defaults(func=cmd_presets)

    p = sub.add_parser("show", help="a run's config and a summary of its metrics",
                       description="Print a run's config and a summary of its metrics.")
    p.add_argument("run", type=Path, help="run directory")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_show)

    for module in PLUGIN_COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ImportError as e:  # a feature whose extra is missing has no command; a broken module fails here
            raise_unless_extra(e)
            continue
        mod.register(sub)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grokscope")
    except PackageNotFoundError:
        return "unknown"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except (ConfigError, RunError, FormulaError, UserError) as e:
        print(f"grokscope {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingDiverged as e:
        print(f"grokscope {args.command}: training diverged: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\ngrokscope {args.command}: interrupted; continue with 'grokscope train --resume RUN'", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of our output went away (grokscope show RUN | head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def entry() -> None:
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    entry()
