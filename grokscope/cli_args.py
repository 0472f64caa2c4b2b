"""What every command line of grokscope shares: the one-line user error, the config arguments (a preset or a
config.json, then ``--set`` overrides), ``--log``, ``--threads`` and ``--device``. A leaf below
:mod:`grokscope.cli` and the feature CLIs (analysis, bench, export, figures, interp, serve, sweep), which all
import it; nothing here imports a CLI module.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from grokscope.config import ConfigError, ExperimentConfig, apply_overrides, parse_override
from grokscope.device import resolve_device
from grokscope.presets import get_preset
from grokscope.trackers import TrackerError, make_trackers

__all__ = [
    "EXIT_USAGE", "UserError", "add_config_args", "add_device_arg", "add_log_arg", "add_threads_arg",
    "config_from_args", "device_from_args",
    "raise_unless_extra", "threads_from_args", "trackers_from_args",
]

EXIT_USAGE = 2


class UserError(Exception):
    """A one-line error the user can fix."""


def add_config_args(p: argparse.ArgumentParser, *, preset_default: str | None) -> None:
    default = f"; default {preset_default}" if preset_default else ""
    p.add_argument("--preset", default=preset_default, help=f"preset name (see 'grokscope presets'){default}")
    p.add_argument("--config", type=Path, help="a config.json to start from instead of a preset")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config field, e.g. --set optim.weight_decay=0.3 (repeatable; values are JSON)")
    p.add_argument("--epochs", type=int, help="shorthand for --set train.epochs=N")


def add_log_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log", action="append", default=[], metavar="TRACKER",
                   help="also send the metrics to wandb, tensorboard or mlflow (repeatable or comma-separated; "
                   "NAME=DIR or mlflow=URI picks where; needs the extra, e.g. pip install 'grokscope[wandb]'; "
                   "see docs/trackers.md)")


def add_threads_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, metavar="N",
                   help="a fixed number of torch threads. Default: adaptive between 1 and one per core, by the "
                   "measured step time (on a machine shared with other jobs, one thread can be 5-10x faster than two). "
                   "The numbers do not depend on it (docs/speed.md)")


def add_device_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", metavar="NAME",
                   help="where to compute: auto (CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps; "
                   "shorthand for --set train.device=NAME (default: the config's, auto)")


def device_from_args(args: argparse.Namespace, config: ExperimentConfig | None = None) -> torch.device:
    """The device ``--device`` (else the config's ``train.device``, else auto) names on this machine."""
    name = getattr(args, "device", None) or (config.train.device if config is not None else "auto")
    try:
        return resolve_device(name)
    except ValueError as e:
        raise UserError(f"--device {name}: {e}") from None


def threads_from_args(args: argparse.Namespace) -> int | None:
    n = getattr(args, "threads", None)
    if n is not None and n < 1:
        raise UserError(f"--threads: must be >= 1, got {n}")
    return n


def trackers_from_args(args: argparse.Namespace) -> list:
    try:
        return make_trackers(getattr(args, "log", None) or [])
    except TrackerError as e:
        raise UserError(str(e)) from None


def config_from_args(args: argparse.Namespace, base: ExperimentConfig | None = None) -> ExperimentConfig:
    """The config the arguments name (``--config``, else ``--preset``; ``base``: a given config instead, such as a
    parent run's for ``train --from``), with ``--set``, ``--epochs`` and ``--device`` applied."""
    if base is not None:
        cfg = base
    elif args.config is not None:
        try:
            cfg = ExperimentConfig.from_json(Path(args.config).read_text())
        except OSError as e:
            raise UserError(f"--config {args.config}: cannot read ({e.strerror or e})") from None
        except UnicodeDecodeError:
            raise UserError(f"--config {args.config}: not UTF-8 text; "
                            "give a config.json (see 'grokscope presets NAME')") from None
        except ConfigError as e:
            raise UserError(f"--config {args.config}: {e}") from None
    elif args.preset:
        cfg = get_preset(args.preset)
    else:
        raise UserError("give --preset NAME or --config FILE (see 'grokscope presets')")
    overrides = dict(parse_override(s) for s in args.overrides)
    if args.epochs is not None:
        overrides["train.epochs"] = args.epochs
    if getattr(args, "device", None) is not None:
        overrides["train.device"] = args.device
    return apply_overrides(cfg, overrides) if overrides else cfg


def raise_unless_extra(e: ImportError) -> None:
    """Re-raise ``e`` unless what is missing is a third-party package (an extra): a broken grokscope module must
    fail loudly, not turn a command or a report into a skip."""
    if (e.name or "").split(".")[0] in ("grokscope", ""):
        raise e
