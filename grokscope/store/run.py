"""A run directory on disk and its Python handle.

Layout::

    RUN/
      config.json                         the ExperimentConfig, written before step 0
      metrics.sqlite                      table metrics(step, name, value) and table meta(key, value)
      checkpoints/step_00000100.safetensors   model weights, HookedTransformer state-dict keys
      state.safetensors                   the resume point: weights, AdamW moments, epoch (metadata)
      analysis.json, ...                  written by later commands

Every file is written atomically (temporary file, fsync, rename) and SQLite writes are transactions,
so a run killed at any moment is left in a state it can resume from.
"""

from __future__ import annotations

import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from grokscope.config import ConfigError, ExperimentConfig
from grokscope.store.files import atomic_write_json, load_tensors, save_tensors
from grokscope.store.metrics import MetricsDB

CONFIG = "config.json"
METRICS = "metrics.sqlite"
STATE = "state.safetensors"
CHECKPOINTS = "checkpoints"
_CKPT = re.compile(r"^step_(\d{8})\.safetensors$")


class RunError(Exception):
    """A problem with a run directory that the user can fix; the message is one line."""


def checkpoint_path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / CHECKPOINTS / f"step_{step:08d}.safetensors"


def is_run_dir(path: Path) -> bool:
    return (Path(path) / CONFIG).is_file()


class Run:
    """A handle on a run directory: config, metrics, checkpoints, models."""

    def __init__(self, path: Path | str):
        self.dir = Path(path)
        if not self.dir.exists():
            raise RunError(f"{self.dir}: no such run directory")
        if not self.dir.is_dir() or not is_run_dir(self.dir):
            raise RunError(f"{self.dir}: not a grokscope run (no {CONFIG}); point at a directory made by 'grokscope train'")
        try:
            self.config = ExperimentConfig.from_json((self.dir / CONFIG).read_text())
        except (ConfigError, UnicodeDecodeError) as e:
            raise RunError(f"{self.dir / CONFIG}: invalid run config ({e})") from None

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, status={self.status!r}, checkpoints={len(self.checkpoints)})"

    # -- data --------------------------------------------------------------------------------
    def task(self):
        """The run's dataset (rebuilt deterministically from the config)."""
        return self._task

    @cached_property
    def _task(self):
        from grokscope.tasks import make_task

        return make_task(self.config.task)

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
            raise RunError(f"{path}: cannot open the metrics database ({e})") from None

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
            raise RunError(f"{self.dir / METRICS}: damaged metrics database ({e})") from None
        finally:
            db.close()

    @property
    def meta(self) -> dict[str, str]:
        """Run status and summary values (``status``, ``message``, ``epoch``, ``grok_epoch``, ...)."""
        if not (self.dir / METRICS).is_file():
            return {}
        db = self._db()
        try:
            return db.meta()
        except Exception as e:
            raise RunError(f"{self.dir / METRICS}: damaged metrics database ({e})") from None
        finally:
            db.close()

    @property
    def status(self) -> str:
        return self.meta.get("status", "new")

    # -- checkpoints -----------------------------------------------------------------------------
    def load_state_dict(self, step: int | None = None) -> dict[str, torch.Tensor]:
        """The checkpoint tensors at ``step`` (default: the last checkpoint), keyed as a HookedTransformer state dict."""
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
        except ValueError as e:
            raise RunError(f"{e}; delete that file and resume, or pick another --step") from None
        return tensors

    def load_model(self, step: int | None = None) -> nn.Module:
        """A model with the weights of checkpoint ``step`` (default: the last), in eval mode."""
        from grokscope.models import build_model

        task = self.task()
        model = build_model(self.config.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
        state = self.load_state_dict(step)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise RunError(f"{self.dir}: checkpoint does not match the model (missing {missing}, unexpected {unexpected})")
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


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files of atomic writes that a killed training process left behind (the state, the
    config and checkpoints; never other commands' files). Only the process that trains a run may call this."""
    run_dir = Path(run_dir)
    stale = [*run_dir.glob(f".{STATE}.*.tmp"), *run_dir.glob(f".{CONFIG}.*.tmp"), *(run_dir / CHECKPOINTS).glob(".step_*.safetensors.*.tmp")]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def save_checkpoint(run_dir: Path, step: int, state: dict[str, torch.Tensor]) -> Path:
    path = checkpoint_path(run_dir, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_tensors(path, state, metadata={"step": str(step), "format": "grokscope-checkpoint-1"})
    return path
