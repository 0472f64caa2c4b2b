"""Experiment trackers: mirror a run's metrics to Weights & Biases, TensorBoard or MLflow.

The SQLite store (``RUN/metrics.sqlite``) stays the source of truth. A tracker receives, right after each
SQLite write of the training loop, the same step and the same metric names; a value the store keeps as NULL
(not finite) is left out. The config goes along as flat hyper-parameters (``optim.weight_decay``, ...).

Each tracker is one training session: ``start`` once, ``log`` per row, ``finish`` once. A resumed run starts a
new tracker session that receives only the rows logged after the resume point (the rows the store itself
rewrites); nothing earlier is replayed. :func:`replay` sends every stored row of a run to a tracker afterwards.

A tracker that fails (raises) prints one warning line to stderr and is dropped for the rest of the run;
training and the SQLite store carry on unaffected. A tracker whose library is missing is refused up front
with a one-line :class:`TrackerError` naming the extra to install, before anything is written.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from grokscope.config import flat_dict

__all__ = ["TRACKERS", "MLflowTracker", "TensorBoardTracker", "Tracker", "TrackerError", "TrackerGroup", "WandbTracker",
           "flatten_config", "make_trackers", "replay"]


class TrackerError(ValueError):
    """A tracker the user asked for cannot be used (unknown name, library not installed); one line."""


@runtime_checkable
class Tracker(Protocol):
    """What the training loop calls. ``step`` in ``start`` is the epoch training starts from (0, or the
    resume point); every ``log`` step is larger."""

    name: str

    def start(self, config: Any, run_dir: Path, *, step: int = 0) -> None: ...

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def finish(self, status: str) -> None: ...


# --------------------------------------------------------------------------- pure helpers


def flatten_config(config: Any) -> dict[str, str | int | float | bool | None]:
    """An ExperimentConfig (or its dict) as ``{"task.p": 13, "optim.betas": "[0.9, 0.98]", ...}``: dotted keys,
    scalar values, lists and tuples as JSON text."""
    tree = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return {k: json.dumps(list(v)) if isinstance(v, (list, tuple)) else v for k, v in flat_dict(tree).items()}


def _finite(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The values the SQLite store keeps as numbers (it stores non-finite values as NULL)."""
    out = {}
    for k, v in metrics.items():
        if v is None:
            continue
        v = float(v)
        if math.isfinite(v):
            out[str(k)] = v
    return out


def _param_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def _require(module: str, extra: str, name: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise TrackerError(f"--log {name} needs {module}: pip install \"grokscope[{extra}]\"")


# --------------------------------------------------------------------------- the trackers


class WandbTracker:
    """Weights & Biases. Offline with ``WANDB_MODE=offline`` (no account needed; ``wandb sync`` uploads later).
    Files go to ``target`` if given, else ``$WANDB_DIR`` if set, else the run directory (``RUN/wandb/``).
    Project ``$WANDB_PROJECT`` or ``grokscope``; run name = the run directory's name; config = flat hyper-parameters."""

    name = "wandb"

    def __init__(self, target: str | None = None):
        _require("wandb", "wandb", self.name)
        self.target = target
        self.run: Any = None

    def start(self, config: Any, run_dir: Path, *, step: int = 0) -> None:
        import wandb

        kwargs: dict[str, Any] = {}
        if self.target:
            kwargs["dir"] = str(Path(self.target))
            Path(self.target).mkdir(parents=True, exist_ok=True)
        elif not os.environ.get("WANDB_DIR"):
            kwargs["dir"] = str(run_dir)
        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "grokscope",
            name=Path(run_dir).name,
            config=flatten_config(config),
            settings=wandb.Settings(console="off"),  # the loop's progress bar is not sent
            **kwargs,
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=int(step))

    def finish(self, status: str) -> None:
        if self.run is not None:
            self.run.finish(exit_code=0 if status == "completed" else 1)
            self.run = None


class TensorBoardTracker:
    """TensorBoard event files (``torch.utils.tensorboard``) in ``RUN/tensorboard/``, or ``target/<run name>/``.
    One scalar per metric, tagged with its name; the config as HParams. A resumed session hides (purges) the
    events a killed session wrote after the resume point, as TensorBoard does on a restart."""

    name = "tensorboard"

    def __init__(self, target: str | None = None):
        _require("tensorboard", "tensorboard", self.name)
        self.target = target
        self.writer: Any = None

    def start(self, config: Any, run_dir: Path, *, step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams

        log_dir = Path(self.target) / Path(run_dir).name if self.target else Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(str(log_dir), purge_step=step + 1 if step > 0 else None, flush_secs=30)
        params = {k: ("null" if v is None else v) for k, v in flatten_config(config).items()}
        for summary in hparams(params, {}):
            self.writer.file_writer.add_summary(summary)

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, global_step=int(step))

    def finish(self, status: str) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class MLflowTracker:
    """MLflow. Tracking URI = ``target``, else ``$MLFLOW_TRACKING_URI``, else the local file store
    ``RUN/mlruns`` (MLflow 3 keeps that backend behind ``MLFLOW_ALLOW_FILE_STORE``, which is set for it).
    Experiment ``$MLFLOW_EXPERIMENT_NAME`` or ``grokscope``; run name = the run directory's name; params = the
    flat config (strings as themselves, other values as JSON)."""

    name = "mlflow"
    _STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}

    def __init__(self, target: str | None = None):
        _require("mlflow", "mlflow", self.name)
        self.target = target
        self.client: Any = None
        self.run_id: str | None = None

    def tracking_uri(self, run_dir: Path) -> str:
        return self.target or os.environ.get("MLFLOW_TRACKING_URI") or (Path(run_dir).resolve() / "mlruns").as_uri()

    def start(self, config: Any, run_dir: Path, *, step: int = 0) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri = self.tracking_uri(run_dir)
        if "://" not in uri or uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "grokscope"
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        tags = {"grokscope.run_dir": str(Path(run_dir).resolve()), "grokscope.start_step": str(step)}
        self.run_id = self.client.create_run(exp_id, run_name=Path(run_dir).name, tags=tags).info.run_id
        params = [Param(k, _param_text(v)) for k, v in flatten_config(config).items()]
        for i in range(0, len(params), 100):  # MLflow's limit per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, int(step)) for k, v in metrics.items()])

    def finish(self, status: str) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, self._STATUS.get(status, "FAILED"))
            self.run_id = None


TRACKERS: dict[str, type] = {"wandb": WandbTracker, "tensorboard": TensorBoardTracker, "mlflow": MLflowTracker}


def make_trackers(specs: Iterable[str | Tracker] | str | None) -> list[Tracker]:
    """Trackers from names: ``"wandb"``, ``"tensorboard,mlflow"``, ``"tensorboard=DIR"``, ``"mlflow=URI"``,
    ``"wandb=DIR"`` (repeatable; tracker objects pass through). Raises :class:`TrackerError` (one line)."""
    if specs is None:
        return []
    if isinstance(specs, str):
        specs = [specs]
    out: list[Tracker] = []
    for spec in specs:
        if not isinstance(spec, str):
            out.append(spec)
            continue
        for part in (s.strip() for s in spec.split(",")):
            if not part:
                continue
            name, _, target = part.partition("=")
            name = name.strip().lower()
            if name not in TRACKERS:
                raise TrackerError(f"--log {part}: unknown tracker {name!r}; choose from {', '.join(TRACKERS)}")
            out.append(TRACKERS[name](target.strip() or None))
    return out


# --------------------------------------------------------------------------- the loop's side


def _warn(tracker: Tracker, what: str, e: Exception) -> None:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    print(f"grokscope: tracker {getattr(tracker, 'name', type(tracker).__name__)} failed {what} "
          f"({type(e).__name__}{': ' + msg if msg else ''}); training continues without it, "
          "metrics.sqlite keeps every row", file=sys.stderr, flush=True)


class TrackerGroup:
    """The trackers of one training session; a failing tracker warns once and is dropped."""

    def __init__(self, trackers: Iterable[str | Tracker] | str | None = ()):
        self.trackers = make_trackers(trackers)
        self.active: list[Tracker] = []

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def start(self, config: Any, run_dir: Path, *, step: int = 0) -> None:
        for tracker in self.trackers:
            try:
                tracker.start(config, Path(run_dir), step=step)
            except Exception as e:
                _warn(tracker, "to start", e)
                self._close_quietly(tracker)
            else:
                self.active.append(tracker)

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.active:
            return
        values = _finite(metrics)
        for tracker in list(self.active):
            try:
                tracker.log(int(step), values)
            except Exception as e:
                _warn(tracker, f"at step {step}", e)
                self.active.remove(tracker)
                self._close_quietly(tracker)

    def finish(self, status: str) -> None:
        """``status``: completed, failed or interrupted."""
        for tracker in self.active:
            try:
                tracker.finish(status)
            except Exception as e:
                _warn(tracker, "to finish", e)
        self.active = []

    @staticmethod
    def _close_quietly(tracker: Tracker) -> None:
        try:
            tracker.finish("failed")
        except Exception:
            pass


def replay(run_dir: Path | str, trackers: Sequence[str | Tracker] | str, *, status: str | None = None) -> None:
    """Send every stored row of a finished (or resumed) run to ``trackers`` as one new session."""
    from grokscope.store.run import Run

    run = Run(run_dir)
    group = TrackerGroup(trackers)
    by_step: dict[int, dict[str, float | None]] = {}
    for step, name, value in run.metric_rows():
        by_step.setdefault(int(step), {})[name] = value
    group.start(run.config, run.dir, step=0)
    for step in sorted(by_step):
        group.log(step, by_step[step])
    group.finish(status or ("completed" if run.status == "completed" else "failed"))
