"""A run directory on disk and its Python handle.

Layout::

    RUN/
      config.json                         the ExperimentConfig, written before step 0
      metrics.sqlite                      table metrics(step, name, value) and table meta(key, value)
      checkpoints/step_00000100.safetensors   model weights, HookedTransformer state-dict keys
      state.safetensors                   the resume point: weights, AdamW moments, epoch (metadata)
      analysis.json, ...                  written by later commands

Every file is written atomically (temporary file, fsync, rename) and SQLite writes are transactions,
so a run killed at any moment is left in a state it can resume from. Safetensors files carry a SHA-256 of
their data; :func:`check_run` finds damaged files and says, in one line, how to recover (docs/robustness.md).
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, overload

import torch

from grokscope.config import ConfigError, ExperimentConfig
from grokscope.store.errors import DamagedFileError, RunError
from grokscope.store.files import (
    atomic_write_json,
    check_tensors_file,
    load_tensors,
    save_tensors,
)
from grokscope.store.metrics import MetricsDB
from grokscope.store.split import run_split

if TYPE_CHECKING:
    from grokscope.models import Model

CONFIG = "config.json"
METRICS = "metrics.sqlite"
STATE = "state.safetensors"
CHECKPOINTS = "checkpoints"
_CKPT = re.compile(r"^step_(\d{8})\.safetensors$")


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}.safetensors"


def is_run_dir(path: Path) -> bool:
    return (Path(path) / CONFIG).is_file()


_M = TypeVar("_M", bound=torch.nn.Module)


class Run:
    """A handle on a run directory: config, metrics, checkpoints, models."""

    def __init__(self, path: Path | str):
        self.dir = Path(path)
        if not self.dir.exists():
            raise RunError(f"{self.dir}: no such run directory")
        if not self.dir.is_dir() or not is_run_dir(self.dir):
            raise RunError(
                f"{self.dir}: not a grokscope run (no {CONFIG}); point at a directory made by 'grokscope train'")
        path = self.dir / CONFIG
        try:
            self.config = ExperimentConfig.from_json(path.read_text())
        except (ConfigError, UnicodeDecodeError) as e:
            reason = "not UTF-8 text" if isinstance(e, UnicodeDecodeError) else str(e)
            raise DamagedFileError(path, f"{path}: invalid run config ({reason}); restore it from a copy of the run "
                                   "(the other files do not hold the config)") from None
        except OSError as e:
            raise RunError(f"{path}: cannot read ({e.strerror or e})") from None

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, status={self.status!r}, checkpoints={len(self.checkpoints)})"

    # -- data --------------------------------------------------------------------------------
    def task(self):
        """The run's dataset (rebuilt deterministically from the config)."""
        return self._task

    @cached_property
    def _task(self):
        from grokscope.tasks import make_task

        return run_split(self.dir, make_task(self.config.task))  # split.json: a split given from outside

    @property
    def checkpoints(self) -> list[int]:
        """Steps (epochs) with a saved checkpoint, ascending."""
        folder = self.dir / CHECKPOINTS
        if not folder.is_dir():
            return []
        return sorted(int(m.group(1)) for f in folder.iterdir() if (m := _CKPT.match(f.name)))

    def _db(self) -> MetricsDB:
        path = self.dir / METRICS
        if not path.is_file():
            raise RunError(f"{self.dir}: the run has no {METRICS} yet")
        try:
            return MetricsDB(path, readonly=True)
        except Exception as e:
            raise _damaged_metrics(self.dir, e) from None

    @property
    def metrics(self):
        """A pandas DataFrame: index ``step``, one column per metric (NaN where a metric was not logged)."""
        import pandas as pd

        rows = self.metric_rows()
        if not rows:
            return pd.DataFrame(index=pd.Index([], name="step", dtype="int64"))
        long = pd.DataFrame(rows, columns=["step", "name", "value"])
        wide = long.pivot(index="step", columns="name", values="value").astype("float64")
        wide.columns.name = None
        return wide.sort_index()

    def metric_rows(self, names: list[str] | None = None) -> list[tuple[int, str, float | None]]:
        db = self._db()
        try:
            return db.rows(names)
        except Exception as e:
            raise _damaged_metrics(self.dir, e) from None
        finally:
            db.close()

    @property
    def user_module(self) -> str | None:
        """The class of your own module when the run trained one passed as ``train(model=...)`` (loading or resuming
        it needs a module of that class); None for grokscope's models and registered ones (built from the config)."""
        trained = self.meta.get("model_class")
        return None if trained is None or self.config.model.arch == "registered" else trained

    @property
    def meta(self) -> dict[str, str]:
        """Run status and summary values (``status``, ``message``, ``epoch``, ``grok_epoch``, ...)."""
        if not (self.dir / METRICS).is_file():
            return {}
        db = self._db()
        try:
            return db.meta()
        except Exception as e:
            raise _damaged_metrics(self.dir, e) from None
        finally:
            db.close()

    @property
    def status(self) -> str:
        return self.meta.get("status", "new")

    # -- checkpoints -----------------------------------------------------------------------------
    def load_state_dict(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """The checkpoint tensors at ``step`` (default: the last), keyed as a HookedTransformer state dict."""
        steps = self.checkpoints
        if not steps:
            raise RunError(f"{self.dir}: the run has no checkpoints")
        if step is None:
            step = steps[-1]
        if step not in steps:
            near = min(steps, key=lambda s: abs(s - step))
            raise RunError(f"{self.dir}: no checkpoint at step {step} (nearest: {near}; see 'grokscope show')")
        try:
            tensors, _ = load_tensors(checkpoint_path(self.dir, step))
        except DamagedFileError as e:
            advice = checkpoint_advice(self.dir, step)
            raise DamagedFileError(e.path, f"{e}; {advice}, or pick another --step") from None
        return tensors

    @overload
    def load_model(self, step: int | None = None, device: torch.device | str | None = None, *,
                   model: None = None) -> Model: ...

    @overload
    def load_model(self, step: int | None = None, device: torch.device | str | None = None, *,
                   model: _M) -> _M: ...

    def load_model(self, step: int | None = None, device: torch.device | str | None = None, *,
                   model: torch.nn.Module | None = None) -> torch.nn.Module:
        """A model with the weights of checkpoint ``step`` (default: the last), in eval mode, on ``device`` (default:
        the CPU; checkpoints are CPU tensors whatever device trained the run). ``model``: for a run of your own
        module, a module of the same class to load the weights into (it is returned)."""
        from grokscope.models import build_model

        trained = self.user_module
        if trained is not None and model is None:
            raise RunError(f"{self.dir}: the run trained your module {trained}; load it into a new one with "
                           f"model=<a new {trained}> (Run.load_model, grokscope.resume, analysis.analyze_run), or "
                           "register it (grokscope.models.register_model) to train it by name")
        if model is None:
            task = self.task()
            model = build_model(self.config.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out,
                                n_ctx=task.n_ctx)
        state = self.load_state_dict(step)
        expected = model.state_dict()
        resized = [f"{k} {list(v.shape)} vs {list(expected[k].shape)}" for k, v in sorted(state.items())
                   if k in expected and v.shape != expected[k].shape]
        if resized:  # torch would raise a multi-line RuntimeError
            raise RunError(f"{self.dir}: the checkpoint does not fit the model of {CONFIG} ({resized[0]}; "
                           f"{len(resized)} tensors differ): was {CONFIG} edited after training? restore it")
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RunError(
                f"{self.dir}: checkpoint does not match the model (missing {missing}, unexpected {unexpected})")
        if device is not None and torch.device(device).type != "cpu":
            model.to(device)
        return model.eval()

    # -- writing (used by analysis and sweeps) -----------------------------------------------------
    def write_json(self, name: str, obj: Any) -> Path:
        if "/" in name or name.startswith("."):
            raise ValueError(f"invalid file name {name!r}")
        path = self.dir / name
        atomic_write_json(path, obj)
        return path

    def read_json(self, name: str) -> Any:
        path = self.dir / name
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise RunError(f"{path}: not found") from None
        except json.JSONDecodeError as e:
            raise RunError(f"{path}: damaged JSON ({e.msg})") from None

    def write_metrics(self, step: int, values: dict[str, float]) -> None:
        with MetricsDB(self.dir / METRICS) as db:
            db.log(step, values)

    def set_meta(self, values: dict[str, str]) -> None:
        with MetricsDB(self.dir / METRICS) as db:
            db.set_meta(values)


def load_run(path: Path | str) -> Run:
    """Open an existing run directory (raises :class:`RunError` with a one-line reason)."""
    return Run(path)


def _retrain_hint(run_dir: Path) -> str:
    return f"grokscope train --config {Path(run_dir) / CONFIG} --out NEW_DIR"


def _damaged_metrics(run_dir: Path, err: Exception) -> DamagedFileError:
    path = Path(run_dir) / METRICS
    detail = (err.detail if isinstance(err, DamagedFileError) else None) or str(err)
    return DamagedFileError(path, f"{path}: damaged metrics database ({detail}); restore it from a copy of the run, "
                            f"or train the run again into a new directory ({_retrain_hint(run_dir)})")


def state_epoch(run_dir: Path) -> int | None:
    """The epoch of the run's resume point (``state.safetensors``), or None when it is missing or damaged."""
    try:
        return int(check_tensors_file(Path(run_dir) / STATE)["epoch"])
    except (OSError, ValueError, KeyError):
        return None


def checkpoint_advice(run_dir: Path, step: int) -> str:
    """How to get the checkpoint at ``step`` back: resume rebuilds it when it is at or after the resume point
    (the state holds the same weights, or the steps after it are trained again); earlier ones cannot be rebuilt."""
    epoch = state_epoch(run_dir)
    if epoch is not None and step >= epoch:
        return f"'grokscope train --resume {run_dir}' rebuilds it"
    return ("it cannot be rebuilt from this run: move it away (the other files do not depend on it) and, to "
            f"regenerate it, train the run again into a new directory ({_retrain_hint(run_dir)})")


def check_run(run_dir: Path | str, *, resume: bool = False) -> None:
    """Verify every stored file of a run: config, metrics database (SQLite quick_check), every checkpoint and the
    resume point (complete, checksums). Raises :class:`DamagedFileError` (one line: the file and how to recover)
    for the first problem. Reads only.

    ``resume``: also require what resuming needs (a resume point for a run that has trained, metrics for a run with
    a resume point) and accept damaged checkpoints at or after the resume point, which resuming rebuilds."""
    run_dir = Path(run_dir)
    run = Run(run_dir)  # reads the config
    last_logged = None
    if (run_dir / METRICS).is_file():
        try:
            db = MetricsDB(run_dir / METRICS, readonly=True)
        except Exception as e:
            raise _damaged_metrics(run_dir, e) from None
        try:
            db.check()
            last_logged = db.last_step()
        except DamagedFileError as e:
            raise _damaged_metrics(run_dir, e) from None
        finally:
            db.close()
    state = run_dir / STATE
    epoch = None
    if state.exists():
        try:
            epoch = int(check_tensors_file(state)["epoch"])
        except (DamagedFileError, KeyError, ValueError) as e:
            why = (str(e) if isinstance(e, DamagedFileError)
                   else f"{state}: damaged resume point (no valid epoch in its metadata)")
            raise DamagedFileError(state, f"{why}; the run cannot continue from it, but its checkpoints and metrics "
                                   f"can still be read; to train it again: {_retrain_hint(run_dir)}") from None
    steps = run.checkpoints
    for step in steps:
        path = checkpoint_path(run_dir, step)
        try:
            check_tensors_file(path)
        except DamagedFileError as e:
            if resume and epoch is not None and step >= epoch:
                continue  # resuming rebuilds it
            raise DamagedFileError(path, f"{e}; {checkpoint_advice(run_dir, step)}") from None
    if resume and epoch is None and ((steps and steps[-1] > 0) or (last_logged or 0) > 0):
        raise DamagedFileError(state, f"{state}: missing, although the run has trained (checkpoints up to step "
                               f"{steps[-1] if steps else 0}, metrics up to step {last_logged or 0}); the run cannot "
                               "continue without it, but its files can still be read; to train it again: "
                               + _retrain_hint(run_dir))
    if resume and epoch and not (run_dir / METRICS).is_file():
        metrics = run_dir / METRICS
        raise DamagedFileError(metrics, f"{metrics}: missing, although the run has trained to epoch {epoch}; restore "
                               "it from a copy of the run, or train the run again into a new directory "
                               f"({_retrain_hint(run_dir)})")


def repair_checkpoint(run_dir: Path, step: int, state: dict[str, torch.Tensor]) -> bool:
    """Rewrite the checkpoint at ``step`` from ``state`` (the resume point's weights, which are the same tensors)
    when it is missing or damaged; returns whether it did."""
    path = checkpoint_path(run_dir, step)
    try:
        check_tensors_file(path)
        return False
    except (OSError, DamagedFileError):
        save_checkpoint(run_dir, step, state)
        return True


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed training process left behind (the state, the
    config and checkpoints; never other commands' files). Only the process that trains a run may call this."""
    run_dir = Path(run_dir)
    stale = [*run_dir.glob(f".{STATE}.*.tmp"), *run_dir.glob(f".{CONFIG}.*.tmp"),
             *(run_dir / CHECKPOINTS).glob(".step_*.safetensors.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_checkpoint(run_dir: Path, step: int, state: dict[str, torch.Tensor]) -> Path:
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, state, metadata={"step": str(step), "format": "grokscope-checkpoint-1"})
    return path
