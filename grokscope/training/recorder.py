"""What a training run writes, by one piece of code: :class:`RunRecorder`, for a single run and for each member of an
ensemble alike. It writes the metric rows (and the trackers' copy), the meta, the checkpoints and the resume state
(``model.*``, ``rules.*``, ``optim.<param>.<field>`` tensors), and holds the rules that decide them: the grok epoch
(the first logged test accuracy >= :data:`grokscope.measures.GROK_ACC`), the stop rule (``train.stop_after_grok``),
divergence (a non-finite training loss) and the checkpoint epochs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from grokscope.config import ExperimentConfig, TrainConfig
from grokscope.measures import GROK_ACC, names
from grokscope.store.files import load_tensors, save_tensors
from grokscope.store.metrics import MetricsDB
from grokscope.store.run import CONFIG, METRICS, STATE, Run, RunError, save_checkpoint
from grokscope.trackers import TrackerGroup
from grokscope.training.adamw import AdamW
from grokscope.training.optim import UpdateRules

__all__ = ["ResumePoint", "RunRecorder", "checkpoint_epochs", "load_state", "optim_state_tensors", "single_run_state"]

MODEL, RULES, OPTIM = "model.", "rules.", "optim."  # the resume state's key prefixes


def checkpoint_epochs(train: TrainConfig) -> set[int]:
    """0, every ``checkpoint_every`` epochs, and (``checkpoint_early``) powers of two below the first of those.
    The final epoch is always checkpointed as well."""
    epochs = set(range(0, train.epochs + 1, train.checkpoint_every)) | {train.epochs}
    if train.checkpoint_early:
        epochs |= {2**i for i in range(32) if 2**i < min(train.checkpoint_every, train.epochs)}
    return epochs


class Clock:
    """Seconds spent in each part of a training session, for the run's meta (``seconds``: where the time went)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - t0)

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    def parts(self) -> dict[str, float]:
        """Disjoint parts: the evaluation's time excludes the progress measures it ran."""
        out = dict(self.seconds)
        if "evaluation" in out:
            out["evaluation"] -= out.get("measures", 0.0)
        return {k: round(v, 3) for k, v in out.items()}


@dataclass(frozen=True, kw_only=True)
class ResumePoint:
    """Where a run's resume state says it stands (a new run: epoch 0, update 0, no grok epoch)."""

    epoch: int = 0
    update: int = 0
    grok_epoch: int | None = None


def optim_state_tensors(states: Iterable[tuple[str, Mapping[str, Tensor]]]) -> dict[str, Tensor]:
    """The resume state's optimiser entries ``optim.<param>.<field>`` for each (parameter name, its AdamW state)."""
    return {f"{OPTIM}{name}.{field}": torch.as_tensor(value)
            for name, state in states for field, value in state.items()}


def single_run_state(model: nn.Module, opt: AdamW, rules: UpdateRules | None) -> dict[str, Tensor]:
    """A single run's resume-state tensors besides its weights: the update rules' (``rules.*``), then AdamW's."""
    tensors = {} if rules is None else {f"{RULES}{k}": v for k, v in rules.state_tensors().items()}
    names_of = {id(p): n for n, p in model.named_parameters()}
    params = [p for group in opt.param_groups for p in group["params"]]
    return tensors | optim_state_tensors((names_of[id(p)], opt.state.get(p, {})) for p in params)


def load_state(run_dir: Path, model: nn.Module, opt: AdamW, rules: UpdateRules | None = None) -> ResumePoint:
    """Load the run's resume state into ``model``, ``opt`` and ``rules``; where it stands (a new run: epoch 0).
    The state is stored as CPU tensors; they are placed on the model's device (a run resumes on any device)."""
    path = run_dir / STATE
    if not path.exists():
        return ResumePoint()
    try:
        tensors, meta = load_tensors(path)
    except ValueError as e:
        raise RunError(f"{e}; the run cannot resume from it (retrain into a new directory)") from None
    device = next(iter(model.state_dict().values())).device
    if device.type != "cpu":
        tensors = {k: v.to(device) for k, v in tensors.items()}
    weights = {k.removeprefix(MODEL): v for k, v in tensors.items() if k.startswith(MODEL)}
    check_state_fits(path, weights, model.state_dict())
    model.load_state_dict(weights)
    if rules is not None:
        rules.load_state_tensors({k.removeprefix(RULES): v for k, v in tensors.items() if k.startswith(RULES)})
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        if key.startswith(OPTIM):
            name, _, field = key.removeprefix(OPTIM).rpartition(".")
            opt.state[params[name]][field] = value.clone()
    grok = meta.get("grok_epoch", "None")
    return ResumePoint(epoch=int(meta["epoch"]), update=int(meta["update"]),
                       grok_epoch=None if grok == "None" else int(grok))


def check_state_fits(path: Path, stored: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
    """One line (RunError) when the resume point's weights do not fit the model config.json describes: the model's
    shape or the task changed since the run was trained (torch would raise a multi-line RuntimeError)."""
    for name in sorted(stored.keys() | expected.keys()):
        have, want = stored.get(name), expected.get(name)
        if have is not None and want is not None and have.shape == want.shape:
            continue
        if have is not None and want is not None:
            what = f"{name} has shape {list(have.shape)} there but {list(want.shape)} in the model of {CONFIG}"
        else:
            what = f"{name} is {'missing there' if have is None else f'not in the model of {CONFIG}'}"
        config = path.parent / CONFIG
        raise RunError(f"{path}: the resume point does not fit the model of {config} ({what}); the model's shape or "
                       f"the task was changed after training began: restore {CONFIG}, or train the new config into a "
                       f"new directory (grokscope train --config {config} --out NEW_DIR)")


class RunRecorder:
    """The record of one run directory while it trains. ``epoch``, ``update`` and ``grok_epoch`` say where the run
    stands (the trainer advances ``epoch`` and ``update``; :meth:`record` finds the grok epoch); ``status``,
    ``message`` and ``final_epoch`` are what :meth:`finish` writes into the meta."""

    def __init__(self, run_dir: Path, train: TrainConfig, *, start: ResumePoint = ResumePoint(),
                 trackers: TrackerGroup | None = None):
        self.dir, self.train = Path(run_dir), train
        self.checkpoints = checkpoint_epochs(train)
        self.epoch, self.update, self.grok_epoch = start.epoch, start.update, start.grok_epoch
        self.status, self.message, self.final_epoch = "completed", "", train.epochs
        self.trackers = TrackerGroup() if trackers is None else trackers
        self.clock = Clock()
        self.db = MetricsDB(self.dir / METRICS)

    def stops_at(self, epoch: int) -> bool:
        """The stop rule: ``train.stop_after_grok`` times the grok epoch has been reached."""
        factor = self.train.stop_after_grok
        return factor is not None and self.grok_epoch is not None and epoch >= factor * self.grok_epoch

    def already_finished(self) -> bool:
        """True when the run ended (completed, stopped or failed) at the epoch its state holds: nothing to do."""
        meta = self.db.meta()
        done = self.epoch >= self.train.epochs or self.stops_at(self.epoch)
        ended = meta.get("status") in ("completed", "failed") and meta.get("final_epoch") == str(self.epoch)
        return ended and self.epoch > 0 and (done or meta["status"] == "failed")

    def start(self, cfg: ExperimentConfig, meta: Mapping[str, str]) -> None:
        """Drop the rows logged after the resume point, mark the run running (with ``meta``: the forward path and the
        like) and start the trackers' session."""
        self.db.truncate_after(self.epoch if (self.dir / STATE).exists() else -1)
        self.db.set_meta({"status": "running", **meta})
        self.trackers.start(cfg, self.dir, step=self.epoch)

    def log(self, epoch: int, values: Mapping[str, float]) -> None:
        with self.clock("metrics_store"):
            self.db.log(epoch, values)
            self.trackers.log(epoch, values)  # after the SQLite write: a tracker never holds a row the store lacks

    def record(self, epoch: int, values: Mapping[str, float]) -> bool:
        """Log the row of a log epoch, note the grok epoch, and say whether the stop rule ends the run here (then
        the run is marked stopped at ``epoch``)."""
        self.log(epoch, values)
        if self.grok_epoch is None and values.get(names.TEST_ACC, 0.0) >= GROK_ACC:
            self.grok_epoch = epoch
        if not self.stops_at(epoch):
            return False
        self.final_epoch = epoch
        self.message = (f"stopped at epoch {epoch} = {self.train.stop_after_grok} x grok epoch {self.grok_epoch} "
                        "(train.stop_after_grok)")
        return True

    def diverged(self, epoch: int) -> str:
        """Mark the run failed at ``epoch`` (a non-finite training loss) in its meta; returns the message."""
        last = max(e for e in self.checkpoints if e < epoch) if epoch > 0 else 0
        self.status, self.final_epoch = "failed", epoch
        self.message = f"non-finite training loss at epoch {epoch}; the last good checkpoint is step {last}"
        self.db.set_meta({"status": "failed", "message": self.message, "final_epoch": str(epoch)})
        return self.message

    def save(self, epoch: int, weights: dict[str, Tensor], state: Mapping[str, Tensor]) -> None:
        """The checkpoint of ``epoch`` (``weights``: a HookedTransformer-keyed state dict) and the resume state:
        the weights as ``model.*`` and ``state`` (``rules.*`` and ``optim.*`` tensors) at the current update."""
        with self.clock("checkpoints"):
            save_checkpoint(self.dir, epoch, weights)
            tensors = {f"{MODEL}{k}": v for k, v in weights.items()} | dict(state)
            meta = {"epoch": str(self.epoch), "update": str(self.update), "grok_epoch": str(self.grok_epoch)}
            save_tensors(self.dir / STATE, tensors, metadata=meta)

    def finish(self, elapsed: float, threads: str, extra: Mapping[str, str] | None = None) -> Run:
        """Write the outcome into the meta, release the database, and return the run."""
        self.db.set_meta({
            "status": self.status, "message": self.message, "final_epoch": str(self.final_epoch),
            "grok_epoch": "" if self.grok_epoch is None else str(self.grok_epoch),
            "train_seconds": f"{elapsed:.2f}", "threads": threads, **(extra or {}),
        })
        return self.close()

    def close(self) -> Run:
        """Release the database (SQLite folds its log back into the file) and return the run."""
        self.db.close()
        return Run(self.dir)
