"""The training loop: a pure-ish step inside a loop that reads top to bottom.

One epoch is one pass over the training set; with full batches (the default) it is one AdamW update.
Metrics at epoch e describe the weights after e epochs; epoch 0 is the initialisation.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from torch import Tensor, nn

from grokscope.config import ExperimentConfig, OptimConfig, TrainConfig
from grokscope.measures.phases import GROK_ACC
from grokscope.models import Model, build_model
from grokscope.runtime import ThreadGovernor, flush_denormal
from grokscope.store.errors import StoreWriteError
from grokscope.store.files import atomic_write_bytes, load_tensors, save_tensors
from grokscope.store.metrics import MetricsDB
from grokscope.store.run import (
    CONFIG,
    METRICS,
    STATE,
    Run,
    RunError,
    check_run,
    is_run_dir,
    remove_stale_temporaries,
    repair_checkpoint,
    save_checkpoint,
)
from grokscope.tasks import SequenceTask, answer_view, has_task_metrics, is_sequence_task, make_task, task_metrics
from grokscope.trackers import TrackerGroup
from grokscope.training.adamw import AdamW
from grokscope.training.losses import cross_entropy, get_loss, softmax_collapse
from grokscope.training.optim import UpdateRules

GROK_THRESHOLD = GROK_ACC  # test accuracy of the grok epoch, one constant for every layer


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run keeps its last good checkpoint."""


# --------------------------------------------------------------------------- pure pieces


def lr_at(update: int, optim: OptimConfig) -> float:
    """Learning rate of update number ``update`` (0-based): lr * min(update / warmup_steps, 1)."""
    if optim.warmup_steps == 0:
        return optim.lr
    return optim.lr * min(update / optim.warmup_steps, 1.0)


def checkpoint_epochs(train: TrainConfig) -> set[int]:
    """0, every ``checkpoint_every`` epochs, and (``checkpoint_early``) powers of two below the first of those.
    The final epoch is always checkpointed as well."""
    epochs = set(range(0, train.epochs + 1, train.checkpoint_every)) | {train.epochs}
    if train.checkpoint_early:
        epochs |= {2**i for i in range(32) if 2**i < min(train.checkpoint_every, train.epochs)}
    return epochs


def loss_and_accuracy(
    logits: Tensor, labels: Tensor, dtype: torch.dtype = torch.float64, loss_fn: Callable[..., Tensor] = cross_entropy
) -> tuple[float, float]:
    """Mean loss (cross-entropy unless ``loss_fn`` says otherwise; computed in ``dtype``) and accuracy. logits [N, C], labels [N]."""
    loss = loss_fn(logits, labels, dtype)
    acc = (logits.argmax(dim=-1) == labels).to(torch.float64).mean()
    return loss.item(), acc.item()


def make_optimizer(model: nn.Module, optim: OptimConfig) -> AdamW:
    """AdamW over the model's parameters; its own (L2) decay is off when ``optim.decay='l1'`` (see :class:`UpdateRules`)."""
    weight_decay = optim.weight_decay if optim.decay == "l2" else 0.0
    return AdamW(model.parameters(), lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=weight_decay)


def train_step(
    forward: Callable[[Tensor], Tensor],
    opt: AdamW,
    tokens: Tensor,
    labels: Tensor,
    lr: float,
    loss_dtype: torch.dtype,
    *,
    loss_fn: Callable[..., Tensor] = cross_entropy,
    rules: UpdateRules | None = None,
    logits: Tensor | None = None,
) -> Tensor:
    """One AdamW update on one batch; returns the (detached) training loss before the update.
    ``rules``: the optimiser variants (gradient filter, ⊥Grad, L1, fixed norm) around the step.
    ``logits``: ``forward(tokens)`` at the current weights when the caller has it already (with its graph)."""
    for group in opt.param_groups:
        group["lr"] = lr
    if logits is None:
        logits = forward(tokens)  # [batch, d_vocab_out]
    loss = loss_fn(logits, labels, loss_dtype)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if rules is not None:
        rules.before_step()
    opt.step()
    if rules is not None:
        rules.after_step(lr)
    return loss.detach()


def select_forward(model: Model, task, train: TrainConfig) -> tuple[Callable[[Tensor], Tensor], str]:
    """The fastest forward that computes the same function as ``model(tokens)`` for this model and task;
    ``model.forward_all`` (logits at every position) for a task scored at several positions."""
    if is_sequence_task(task):
        return model.forward_all, "sequence"
    if train.fast_path:
        from grokscope.models.fast import fast_forward

        fn = fast_forward(model, task)
        if fn is not None:
            return fn, "fast"
    return model, "general"


# --------------------------------------------------------------------------- run lifecycle


def new_run_dir(out: Path | str | None, config: ExperimentConfig) -> Path:
    """Create a fresh run directory (never reuses or touches an existing run)."""
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = Path("runs") / f"{config.name}-{stamp}"
        i = 2
        while Path(out).exists():
            out = Path("runs") / f"{config.name}-{stamp}-{i}"
            i += 1
    out = Path(out)
    if out.exists():
        if is_run_dir(out):
            raise RunError(f"{out}: already holds a run; continue it with 'grokscope train --resume {out}' or choose another --out")
        if not out.is_dir() or any(out.iterdir()):
            raise RunError(f"{out}: exists and is not an empty directory; choose another --out")
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunError(f"{out}: cannot create the run directory ({e.strerror or e})") from None
    try:
        atomic_write_bytes(out / CONFIG, (config.to_json() + "\n").encode())
    except StoreWriteError:
        if created:
            out.rmdir()  # leave nothing behind (atomic_write_bytes removed its temporary file)
        raise
    return out


def train(config: ExperimentConfig, out: Path | str | None = None, *, progress: bool | None = None, trackers=(), threads: int | None = None) -> Run:
    """Train ``config`` into a new run directory (default ``runs/<name>-<time>``) and return the run.
    ``trackers``: names ("wandb", "tensorboard", "mlflow") or objects that mirror each logged row (grokscope.trackers).
    ``threads``: a fixed intra-op thread count; None adapts between 1 and torch's count (:class:`ThreadGovernor`)."""
    group = TrackerGroup(trackers)  # a missing tracker library fails here, before anything is written
    run_dir = new_run_dir(out, config)
    return _fit_tracked(run_dir, config, progress, group, threads)


def resume(path: Path | str, *, progress: bool | None = None, trackers=(), threads: int | None = None) -> Run:
    """Continue an interrupted run from its last saved state; the result equals an uninterrupted run.
    Trackers receive the rows logged after the resume point only."""
    group = TrackerGroup(trackers)
    run = Run(path)
    check_run(run.dir, resume=True)  # a damaged file: one line naming it and how to recover, before any write
    return _fit_tracked(run.dir, run.config, progress, group, threads)


def _fit_tracked(run_dir: Path, cfg: ExperimentConfig, progress: bool | None, group: TrackerGroup, threads: int | None = None) -> Run:
    """``_fit``, then close the trackers' session with the outcome (they never stop training).
    ``threads``: a fixed count for this run (the caller's count is restored after); None: adaptive."""
    callers_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)  # before the flush reaches every thread of the team
        governor = ThreadGovernor(1 if threads is not None else None)  # a fixed count: a governor that does nothing
        with flush_denormal(cfg.train.flush_denormal) as denormals, governor:  # scoped: IEEE again after training
            run = _fit(run_dir, cfg, progress=progress, trackers=group, denormals=denormals, governor=governor)
    except BaseException as e:
        group.finish("interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
        if isinstance(e, StoreWriteError):  # a full disk: the run is intact and resumable
            e.add_hint(f"nothing stored was lost: {'free some space' if e.disk_full else 'fix that'}, then continue with 'grokscope train --resume {run_dir}'")
        raise
    finally:
        torch.set_num_threads(callers_threads)
    group.finish("completed")
    return run


class _Clock:
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


@dataclass
class _State:
    epoch: int = 0
    update: int = 0
    grok_epoch: int | None = None


def _save_state(run_dir: Path, model: nn.Module, opt: AdamW, st: _State, rules: UpdateRules | None = None) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if rules is not None:
        tensors |= {f"rules.{k}": v for k, v in rules.state_tensors().items()}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        for param in group["params"]:
            for key, value in opt.state.get(param, {}).items():
                tensors[f"optim.{names[id(param)]}.{key}"] = torch.as_tensor(value)
    meta = {"epoch": str(st.epoch), "update": str(st.update), "grok_epoch": str(st.grok_epoch)}
    save_tensors(run_dir / STATE, tensors, metadata=meta)


def _load_state(run_dir: Path, model: nn.Module, opt: AdamW, rules: UpdateRules | None = None) -> _State:
    path = run_dir / STATE
    if not path.exists():
        return _State()
    try:
        tensors, meta = load_tensors(path)
    except ValueError as e:
        raise RunError(f"{e}; the run cannot resume from it (retrain into a new directory)") from None
    weights = {k.removeprefix("model."): v for k, v in tensors.items() if k.startswith("model.")}
    _check_state_fits(path, weights, model.state_dict())
    model.load_state_dict(weights)
    if rules is not None:
        rules.load_state_tensors({k.removeprefix("rules."): v for k, v in tensors.items() if k.startswith("rules.")})
    params = dict(model.named_parameters())
    for key, value in tensors.items():
        if key.startswith("optim."):
            pname, _, field = key.removeprefix("optim.").rpartition(".")
            opt.state[params[pname]][field] = value.clone()
    grok = meta.get("grok_epoch", "None")
    return _State(epoch=int(meta["epoch"]), update=int(meta["update"]), grok_epoch=None if grok == "None" else int(grok))


def _check_state_fits(path: Path, stored: dict[str, Tensor], expected: dict[str, Tensor]) -> None:
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
        raise RunError(f"{path}: the resume point does not fit the model of {path.parent / CONFIG} ({what}); the model's shape or "
                       f"the task was changed after training began: restore {CONFIG}, or train the new config into a new directory "
                       f"(grokscope train --config {path.parent / CONFIG} --out NEW_DIR)")


def _fit(
    run_dir: Path, cfg: ExperimentConfig, *, progress: bool | None, trackers: TrackerGroup | None = None, denormals: str = "",
    governor: ThreadGovernor | None = None,
) -> Run:
    tc = cfg.train
    loss_dtype = getattr(torch, tc.loss_dtype)
    task = make_task(cfg.task)
    model = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    opt = make_optimizer(model, cfg.optim)
    built = UpdateRules(model, cfg.optim)  # built from the initial weights (fixed norm reads their norm)
    rules = built if built.active else None
    loss_fn = get_loss(tc.loss)
    sequence = is_sequence_task(task)  # labels [N, T]: the loss runs over the scored positions only
    if sequence:
        loss_fn = _on_answers(loss_fn)
    remove_stale_temporaries(run_dir)  # a SIGKILL during an atomic write leaves its temporary file behind
    st = _load_state(run_dir, model, opt, rules)
    if st.epoch > tc.epochs:  # config.json edited: the run has trained past its new length
        raise RunError(f"{run_dir / CONFIG}: train.epochs is {tc.epochs}, below the epoch the run resumes from ({st.epoch}); "
                       f"set train.epochs to {st.epoch} or more to continue it, or train the new config into a new directory")
    if (run_dir / STATE).exists():  # the checkpoint at the resume point has the state's weights: rebuild it if damaged
        repair_checkpoint(run_dir, st.epoch, model.state_dict())
    forward, path_name = select_forward(model, task, tc)
    measure = measure_fn(cfg) if tc.measure_every else None
    ckpt_epochs = checkpoint_epochs(tc)

    db = MetricsDB(run_dir / METRICS)
    meta = db.meta()
    done = st.epoch >= tc.epochs or (tc.stop_after_grok is not None and st.grok_epoch is not None and st.epoch >= tc.stop_after_grok * st.grok_epoch)
    if meta.get("status") in ("completed", "failed") and st.epoch > 0 and meta.get("final_epoch") == str(st.epoch) and (done or meta["status"] == "failed"):
        db.close()
        return Run(run_dir)  # nothing left to do
    db.truncate_after(st.epoch if (run_dir / STATE).exists() else -1)
    governor = governor or ThreadGovernor(1)
    db.set_meta({"status": "running", "forward": path_name, "message": "", "denormals": denormals})
    trackers = TrackerGroup() if trackers is None else trackers
    trackers.start(cfg, run_dir, step=st.epoch)

    train_x, train_y = task.train_tokens, task.train_labels  # [N_train, 3], [N_train]
    n_train = train_x.shape[0]
    batch = tc.batch_size or n_train
    # Full batch on the fast path: the training half of a log epoch's evaluation is exactly the next update's
    # forward (same weights, same rows), so it is computed once, with its graph, and handed to that update
    # (bitwise the same numbers; the fast path has no dropout, so eval and train mode are one function).
    share_forward = path_name == "fast" and batch >= n_train and not cfg.task.fresh_data
    pending: Tensor | None = None  # train logits of the current weights, with their graph, until the next update

    def score(logits: Tensor, labels: Tensor) -> tuple[float, float]:
        """Loss (the training objective) and accuracy (of a sequence task: over its scored positions)."""
        if sequence:
            logits, labels = answer_view(logits, labels)
        if tc.loss == "cross_entropy":
            return loss_and_accuracy(logits, labels, loss_dtype)
        return loss_and_accuracy(logits, labels, loss_dtype, loss_fn)

    def all_logits(epoch: int) -> tuple[Tensor, Tensor, Callable[[], Tensor]]:
        """Logits of the current weights: (train rows [N_train, C], test rows, all rows in task order (lazily))."""
        nonlocal pending
        if not (share_forward and epoch < tc.epochs):
            logits = forward(task.tokens)  # [N, d_vocab_out], all pairs in task order
            return logits[task.train_idx], logits[task.test_idx], lambda: logits
        with torch.enable_grad():
            pending = forward(train_x)  # the next update's forward
        train_logits = pending.detach()
        test_logits = forward(task.test_tokens) if task.test_idx.numel() else train_logits[:0]

        @functools.cache  # task metrics and measures may both ask at one epoch
        def in_task_order() -> Tensor:
            logits = torch.empty(task.tokens.shape[0], *train_logits.shape[1:], dtype=train_logits.dtype)
            logits[task.train_idx], logits[task.test_idx] = train_logits, test_logits
            return logits

        return train_logits, test_logits, in_task_order

    clock = _Clock()

    def evaluate(epoch: int) -> dict[str, float]:
        """Train/test loss and accuracy (and progress measures when due) of the current weights."""
        model.eval()
        with clock("evaluation"), torch.no_grad():
            train_logits, test_logits, logits_fn = all_logits(epoch)
            out = {}
            out["train_loss"], out["train_acc"] = score(train_logits, train_y)
            if task.test_idx.numel():
                out["test_loss"], out["test_acc"] = score(test_logits, task.test_labels)
            if has_task_metrics(task):  # per-operation / per-position metrics (logits in task order, built on demand)
                out.update(task_metrics(task, logits_fn(), loss_dtype))
            if tc.softmax_collapse:
                sc = softmax_collapse(train_logits, train_y, loss_dtype, tc.loss)
                out["sc_train"], out["zero_loss_train"] = sc["sc"], sc["zero_loss"]
            if measure is not None and epoch % tc.measure_every == 0:
                with clock("measures"):
                    out.update(measure(model, task, logits_fn()))
        model.train()
        return out

    def save(epoch: int) -> None:
        with clock("checkpoints"):
            save_checkpoint(run_dir, epoch, model.state_dict())
            _save_state(run_dir, model, opt, st, rules)

    def log(epoch: int, values: dict[str, float]) -> None:
        with clock("metrics_store"):
            db.log(epoch, values)
            trackers.log(epoch, values)  # after the SQLite write: a tracker never holds a row the store lacks

    t0 = time.perf_counter()
    if st.epoch == 0:
        log(0, evaluate(0))
        save(0)

    bar = progress_bar(tc.epochs, st.epoch, progress, cfg.name)
    final_epoch, message = tc.epochs, ""
    try:
        model.train()
        for epoch in range(st.epoch + 1, tc.epochs + 1):
            # ---- one epoch of updates
            order = [None] if cfg.task.fresh_data else _batch_order(n_train, batch, tc.data_seed, epoch)
            for idx in order:
                lr = lr_at(st.update, cfg.optim)
                # task.fresh_data: one update on a new batch each epoch ("infinite data"), else the fixed training rows
                if idx is None:
                    assert isinstance(task, SequenceTask)  # the config allows fresh_data for sequence tasks only
                    x, y = task.fresh_batch(batch, tc.data_seed, epoch)
                else:
                    x, y = train_x[idx], train_y[idx]
                shared, pending = pending, None  # this update's forward, done by the last evaluation (or None)
                t_update = time.perf_counter()
                loss = train_step(forward, opt, x, y, lr, loss_dtype, loss_fn=loss_fn, rules=rules, logits=shared)
                t_update = time.perf_counter() - t_update
                clock.add("updates", t_update)
                governor.record(t_update)  # may change the thread count (never the numbers)
                st.update += 1
            st.epoch = epoch
            if not math.isfinite(loss.item()):
                last = max(e for e in ckpt_epochs if e < epoch) if epoch > 0 else 0
                message = f"non-finite training loss at epoch {epoch}; the last good checkpoint is step {last}"
                db.set_meta({"status": "failed", "message": message, "final_epoch": str(epoch)})
                raise TrainingDiverged(message)

            # ---- log, checkpoint, maybe stop
            stop = False
            if epoch % tc.log_every == 0 or epoch == tc.epochs:
                values = evaluate(epoch)
                log(epoch, values)
                if st.grok_epoch is None and values.get("test_acc", 0.0) >= GROK_THRESHOLD:
                    st.grok_epoch = epoch
                stop = tc.stop_after_grok is not None and st.grok_epoch is not None and epoch >= tc.stop_after_grok * st.grok_epoch
                bar.set_postfix(train_acc=f"{values['train_acc']:.3f}", test_acc=f"{values.get('test_acc', float('nan')):.3f}", refresh=False)
            if epoch in ckpt_epochs or stop:
                save(epoch)
            bar.update(1)
            if stop:
                final_epoch = epoch
                message = f"stopped at epoch {epoch} = {tc.stop_after_grok} x grok epoch {st.grok_epoch} (train.stop_after_grok)"
                break
    except BaseException:
        db.close()  # interrupted or failed: release the database now (SQLite folds its log back into the file)
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    db.set_meta(
        {
            "status": "completed",
            "message": message,
            "final_epoch": str(final_epoch),
            "grok_epoch": "" if st.grok_epoch is None else str(st.grok_epoch),
            "train_seconds": f"{elapsed:.2f}",
            "threads": governor.describe(),
            "seconds": json.dumps(clock.parts() | {"other": round(elapsed - sum(clock.parts().values()), 3)}),
        }
    )
    db.close()
    return Run(run_dir)


def _batch_order(n: int, batch: int, seed: int, epoch: int) -> list[Tensor | slice]:
    """Index batches for one epoch: the whole set when full-batch, else a permutation seeded by (seed, epoch)."""
    if batch >= n:
        return [slice(None)]
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=gen)
    return list(perm.split(batch))


def _on_answers(loss_fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``loss_fn`` over the scored positions of a sequence task: logits [B, T, C], labels [B, T] (IGNORE elsewhere)."""

    def loss(logits: Tensor, labels: Tensor, dtype: torch.dtype) -> Tensor:
        return loss_fn(*answer_view(logits, labels), dtype)

    return loss


def measure_fn(cfg: ExperimentConfig):
    """The progress-measure function for this run, or None when the measures do not apply to it."""
    if cfg.task.kind != "modular" or cfg.model.arch == "vector_mlp" or cfg.model.attn_only:
        return None  # the measures need a modular p*p grid and a model with an MLP
    from grokscope.measures.progress import progress_measures

    def measure(model, task, logits):
        try:
            return progress_measures(model, task, logits=logits)
        except ValueError:
            return {}

    return measure


def progress_bar(total: int, initial: int, enabled: bool | None, name: str):
    from tqdm.auto import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else (not enabled)
    return tqdm(total=total, initial=initial, desc=name, unit="epoch", disable=disable, dynamic_ncols=True, mininterval=0.5)
