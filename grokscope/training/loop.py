"""The training loop: a pure-ish step inside a loop that reads top to bottom.

One epoch is one pass over the training set; with full batches (the default) it is one AdamW update.
Metrics at epoch e describe the weights after e epochs; epoch 0 is the initialisation. What the run writes
(rows, meta, checkpoints, resume state) goes through :class:`grokscope.training.recorder.RunRecorder`.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import torch
from torch import Tensor

from grokscope.config import ExperimentConfig
from grokscope.device import describe_device, device_settings
from grokscope.measures import logit_measures, names, progress_measures
from grokscope.measures.dynamics import ntk_alignment, relative_weight_change
from grokscope.measures.progress import measure_basis_label
from grokscope.models import build_model
from grokscope.models.forward import choose_forward
from grokscope.models.registry import REGISTRY as MODELS
from grokscope.runtime import ThreadGovernor
from grokscope.store.errors import StoreWriteError
from grokscope.store.files import atomic_write_bytes
from grokscope.store.run import (
    CONFIG,
    STATE,
    Run,
    RunError,
    check_run,
    is_run_dir,
    remove_stale_temporaries,
    repair_checkpoint,
)
from grokscope.tasks import (
    SequenceTask,
    answer_view,
    has_task_metrics,
    is_sequence_task,
    make_task,
    task_metrics,
    task_to,
)
from grokscope.tasks.registry import REGISTRY as TASKS
from grokscope.trackers import TrackerGroup
from grokscope.training.adamw import AdamW
from grokscope.training.compiled import compile_forward
from grokscope.training.lineage import Parent, freeze, frozen_names, prepare_start, write_start
from grokscope.training.losses import LOSSES, cross_entropy, softmax_collapse
from grokscope.training.optim import UpdateRules, lr_at, make_optimizer
from grokscope.training.placement import cpu_runtime, draw_generator, run_device, via_cpu
from grokscope.training.recorder import RunRecorder, load_state, single_run_state
from grokscope.training.user_model import check_user_model, exposes_tl_names, user_forward, user_meta


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the run keeps its last good checkpoint."""


# --------------------------------------------------------------------------- pure pieces


def loss_and_accuracy(
    logits: Tensor, labels: Tensor, dtype: torch.dtype = torch.float64, loss_fn: Callable[..., Tensor] = cross_entropy
) -> tuple[float, float]:
    """Mean loss (cross-entropy unless ``loss_fn`` says otherwise; computed in ``dtype``) and accuracy.
    logits [N, C], labels [N]."""
    loss = loss_fn(logits, labels, dtype)
    acc = (logits.argmax(dim=-1) == labels).to(torch.float64).mean()
    return loss.item(), acc.item()


def train_step(forward: Callable[[Tensor], Tensor], opt: AdamW, tokens: Tensor, labels: Tensor, lr: float,
               loss_dtype: torch.dtype, *, loss_fn: Callable[..., Tensor] = cross_entropy,
               rules: UpdateRules | None = None, logits: Tensor | None = None) -> Tensor:
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
            raise RunError(f"{out}: already holds a run; continue it with 'grokscope train --resume {out}' or choose "
                           "another --out")
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


def train(config: ExperimentConfig, out: Path | str | None = None, *, progress: bool | None = None, trackers=(),
          threads: int | None = None, model: torch.nn.Module | None = None, parent: Parent | None = None) -> Run:
    """Train ``config`` into a new run directory (default ``runs/<name>-<time>``) and return the run.
    ``trackers``: names ("wandb", "tensorboard", "mlflow") or objects that mirror each logged row
    (grokscope.trackers). ``threads``: a fixed intra-op thread count; None adapts between 1 and torch's count
    (:class:`ThreadGovernor`). The run computes on ``config.train.device`` (RunError, one line, when it is not
    here, before anything is written). ``model``: your own ``nn.Module`` (tokens [batch, n_ctx] -> logits) instead
    of the one ``config.model`` describes (:mod:`grokscope.training.user_model`). ``parent``: start from another
    run's weights (:class:`grokscope.training.lineage.Parent`: ``--from`` / ``--init-from``; read only)."""
    group = TrackerGroup(trackers)  # a missing tracker library fails here, before anything is written
    device = run_device(config.train.device)
    if parent is not None and model is not None:
        raise RunError("parent= starts grokscope's own model from a run; it does not take model=")
    if model is not None and config.model.arch == "registered":
        raise RunError(f"model.arch='registered' builds the module {config.model.name!r} from the registry; pass "
                       "model= or name a registered model, not both")
    if config.model.arch == "registered":
        MODELS.get(config.model.name)  # an unknown name: one line (ConfigError) before anything is written
    if config.task.kind == "registered":
        TASKS.get(config.task.name)
    start = prepare_start(config, parent) if parent is not None else None  # checked before anything is written
    run_dir = new_run_dir(out, config)
    if start is not None:
        write_start(run_dir, start)  # the first resume state: the loop loads it like any other
    return _fit_tracked(run_dir, config, progress, group, threads, device, model)


def resume(path: Path | str, *, progress: bool | None = None, trackers=(), threads: int | None = None,
           device: str | None = None, model: torch.nn.Module | None = None) -> Run:
    """Continue an interrupted run from its last saved state; the result equals an uninterrupted run (bitwise on
    the device it started on; close, not equal, on another). Trackers receive the rows logged after the resume
    point only. ``device``: where to continue (a device name); None: the config's ``train.device``. ``model``: a
    run of your own module resumes into a new module of the same class (its weights are replaced)."""
    group = TrackerGroup(trackers)
    run = Run(path)
    check_run(run.dir, resume=True)  # a damaged file: one line naming it and how to recover, before any write
    check_user_model(run, model)
    where = run_device(device or run.config.train.device, resuming=run.dir)
    return _fit_tracked(run.dir, run.config, progress, group, threads, where, model)


def _fit_tracked(run_dir: Path, cfg: ExperimentConfig, progress: bool | None, group: TrackerGroup,
                 threads: int | None = None, device: torch.device | None = None,
                 user_model: torch.nn.Module | None = None) -> Run:
    """``_fit``, then close the trackers' session with the outcome (they never stop training).
    ``threads``: a fixed count for this run (the caller's count is restored after); None: adaptive."""
    callers_threads = torch.get_num_threads()
    device = torch.device("cpu") if device is None else device
    t = cfg.train
    try:
        if threads is not None:
            torch.set_num_threads(threads)  # before the flush reaches every thread of the team
        with (cpu_runtime(device, t.flush_denormal, threads is not None) as (denormals, governor),
              device_settings(device, deterministic=t.deterministic, allow_tf32=t.allow_tf32) as numerics):
            run = _fit(run_dir, cfg, progress=progress, trackers=group, denormals=denormals, governor=governor,
                       device=device, numerics=numerics, user_model=user_model)
    except BaseException as e:
        group.finish("interrupted" if isinstance(e, KeyboardInterrupt) else "failed")
        if isinstance(e, StoreWriteError):  # a full disk: the run is intact and resumable
            fix = "free some space" if e.disk_full else "fix that"
            e.add_hint(f"nothing stored was lost: {fix}, then continue with 'grokscope train --resume {run_dir}'")
        raise
    finally:
        torch.set_num_threads(callers_threads)
    group.finish("completed")
    return run


def _fit(run_dir: Path, cfg: ExperimentConfig, *, progress: bool | None, trackers: TrackerGroup, denormals: str,
         governor: ThreadGovernor, device: torch.device, numerics: str,
         user_model: torch.nn.Module | None = None) -> Run:
    settings = cfg.train
    loss_dtype = getattr(torch, settings.loss_dtype)
    task = task_to(make_task(cfg.task), device)  # built on the CPU (seeded), then placed: the same data everywhere
    model = user_model if user_model is not None else build_model(
        cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
    if device.type != "cpu":
        model.to(device)  # initialised on the CPU, so every device starts from the same weights
    freeze(model, frozen_names(run_dir))  # a run started with --freeze-parts (none otherwise)
    opt = make_optimizer(model, cfg.optim)
    built = UpdateRules(model, cfg.optim)  # built from the initial weights (fixed norm reads their norm)
    rules = built if built.active else None
    loss_fn = LOSSES[settings.loss]
    sequence = is_sequence_task(task)  # labels [N, T]: the loss runs over the scored positions only
    if sequence:
        loss_fn = _on_answers(loss_fn)
    if device.type == "mps" and loss_dtype == torch.float64:
        loss_fn = via_cpu(loss_fn)  # MPS has no float64
    remove_stale_temporaries(run_dir)  # a SIGKILL during an atomic write leaves its temporary file behind
    start = load_state(run_dir, model, opt, rules)
    if start.epoch > settings.epochs:  # config.json edited: the run has trained past its new length
        raise RunError(f"{run_dir / CONFIG}: train.epochs is {settings.epochs}, below the epoch the run resumes from "
                       f"({start.epoch}); set train.epochs to {start.epoch} or more to continue it, or train the new "
                       "config into a new directory")
    if (run_dir / STATE).exists():  # the checkpoint at the resume point has the state's weights: rebuild it if damaged
        repair_checkpoint(run_dir, start.epoch, model.state_dict())
    own = user_model is None and cfg.model.arch != "registered"  # grokscope's own model: its forward paths
    choice = choose_forward(model, task, fast=settings.fast_path) if own else user_forward(model, task)
    forward = choice.fn
    def first() -> dict[str, Tensor]:  # theta_0 of your module: its step-0 checkpoint, or (at epoch 0) its weights
        run = Run(run_dir)
        return (run.load_state_dict(0) if 0 in run.checkpoints
                else {n: p.detach().clone() for n, p in model.named_parameters()})

    by_logits = not own and not exposes_tl_names(model)  # your module without TL names: the logit measures only
    measure = (measure_fn(cfg, None if user_model is None else first, by_logits=by_logits) if settings.measure_every
               else None)
    extra: dict[str, str] = {}
    if not own:
        extra = user_meta(model, choice, "none" if measure is None else "logits" if by_logits else "all")
    if measure is not None and cfg.task.kind == "modular":  # the basis the progress measures read the task in
        label = measure_basis_label(task)
        extra["basis"] = json.dumps({"name": label.partition(" ")[0], "label": label})

    record = RunRecorder(run_dir, settings, start=start, trackers=trackers)
    if record.already_finished():
        return record.close()
    if settings.compile != "none":  # torch.compile the forward (training/compiled.py); the meta says how it went
        choice, compiled = compile_forward(choice, settings.compile, device, deterministic=settings.deterministic,
                                           write_meta=record.db.set_meta)
        forward, extra = choice.fn, extra | compiled
    record.start(cfg, {"forward": choice.path, "forward_why": choice.why, "message": "", "denormals": denormals,
                       "device": describe_device(device), "numerics": numerics, **extra})

    train_x, train_y = task.train_tokens, task.train_labels  # [N_train, 3], [N_train]
    n_train = train_x.shape[0]
    batch = settings.batch_size or n_train
    # Full batch on the fast path: the training half of a log epoch's evaluation is exactly the next update's
    # forward (same weights, same rows), so it is computed once, with its graph, and handed to that update
    # (bitwise the same numbers; the fast path has no dropout, so eval and train mode are one function).
    share_forward = choice.path == "fast" and batch >= n_train and not cfg.task.fresh_data
    pending: Tensor | None = None  # train logits of the current weights, with their graph, until the next update

    def score(logits: Tensor, labels: Tensor) -> tuple[float, float]:
        """Loss (the training objective) and accuracy (of a sequence task: over its scored positions)."""
        if device.type == "mps":
            logits, labels = logits.cpu(), labels.cpu()  # float64 scores: MPS has none
        if sequence:
            logits, labels = answer_view(logits, labels)
        if settings.loss == "cross_entropy":
            return loss_and_accuracy(logits, labels, loss_dtype)
        return loss_and_accuracy(logits, labels, loss_dtype, loss_fn)

    def all_logits(epoch: int) -> tuple[Tensor, Tensor, Callable[[], Tensor]]:
        """Logits of the current weights: (train rows [N_train, C], test rows, all rows in task order (lazily))."""
        nonlocal pending
        if not (share_forward and epoch < settings.epochs):
            logits = forward(task.tokens)  # [N, d_vocab_out], all pairs in task order
            return logits[task.train_idx], logits[task.test_idx], lambda: logits
        with torch.enable_grad():
            pending = forward(train_x)  # the next update's forward
        train_logits = pending.detach()
        test_logits = forward(task.test_tokens) if task.test_idx.numel() else train_logits[:0]

        @functools.cache  # task metrics and measures may both ask at one epoch
        def in_task_order() -> Tensor:
            logits = torch.empty(task.tokens.shape[0], *train_logits.shape[1:], dtype=train_logits.dtype,
                                 device=train_logits.device)
            logits[task.train_idx], logits[task.test_idx] = train_logits, test_logits
            return logits

        return train_logits, test_logits, in_task_order

    clock = record.clock

    def evaluate(epoch: int) -> dict[str, float]:
        """Train/test loss and accuracy (and progress measures when due) of the current weights."""
        model.eval()
        with clock("evaluation"), torch.no_grad():
            train_logits, test_logits, logits_fn = all_logits(epoch)
            out = {}
            out[names.TRAIN_LOSS], out[names.TRAIN_ACC] = score(train_logits, train_y)
            if task.test_idx.numel():
                out[names.TEST_LOSS], out[names.TEST_ACC] = score(test_logits, task.test_labels)
            if has_task_metrics(task):  # per-operation / per-position metrics (logits in task order, built on demand)
                out.update(task_metrics(task, logits_fn(), loss_dtype))
            if settings.softmax_collapse:
                collapse = softmax_collapse(train_logits, train_y, loss_dtype, settings.loss)
                out["sc_train"], out["zero_loss_train"] = collapse["sc"], collapse["zero_loss"]
            if measure is not None and epoch % settings.measure_every == 0:
                with clock("measures"):
                    out.update(measure(model, task, logits_fn()))
        model.train()
        return out

    def save(epoch: int) -> None:
        record.save(epoch, model.state_dict(), single_run_state(model, opt, rules))

    t0 = time.perf_counter()
    if record.epoch == 0:
        record.log(0, evaluate(0))
        save(0)

    bar = progress_bar(settings.epochs, record.epoch, progress, cfg.name)
    draws = draw_generator(device)  # the forward's draws (dropout): seeded every epoch, the caller's state restored
    callers_rng = draws.get_state()
    try:
        model.train()
        for epoch in range(record.epoch + 1, settings.epochs + 1):
            # ---- one epoch of updates (the forward's draws, dropout's, seeded by the epoch: a resume repeats them)
            draws.manual_seed(draw_seed(settings.data_seed, epoch))
            order = [None] if cfg.task.fresh_data else _batch_order(n_train, batch, settings.data_seed, epoch)
            for idx in order:
                lr = lr_at(record.update, cfg.optim)
                # task.fresh_data: one update on a new batch each epoch ("infinite data"), else the fixed training rows
                if idx is None:
                    assert isinstance(task, SequenceTask)  # the config allows fresh_data for sequence tasks only
                    x, y = task.fresh_batch(batch, settings.data_seed, epoch)  # drawn on the CPU
                    x, y = x.to(device), y.to(device)
                else:
                    if isinstance(idx, Tensor):
                        idx = idx.to(device)  # a CPU permutation (seeded), the same on every device
                    x, y = train_x[idx], train_y[idx]
                shared, pending = pending, None  # this update's forward, done by the last evaluation (or None)
                t_update = time.perf_counter()
                loss = train_step(forward, opt, x, y, lr, loss_dtype, loss_fn=loss_fn, rules=rules, logits=shared)
                t_update = time.perf_counter() - t_update
                clock.add("updates", t_update)
                governor.record(t_update)  # may change the thread count (never the numbers)
                record.update += 1
            record.epoch = epoch
            if not math.isfinite(loss.item()):
                raise TrainingDiverged(record.diverged(epoch))

            # ---- log, checkpoint, maybe stop
            stop = False
            if epoch % settings.log_every == 0 or epoch == settings.epochs:
                values = evaluate(epoch)
                stop = record.record(epoch, values)
                test_acc = values.get(names.TEST_ACC, float("nan"))
                bar.set_postfix(train_acc=f"{values[names.TRAIN_ACC]:.3f}", test_acc=f"{test_acc:.3f}", refresh=False)
            if epoch in record.checkpoints or stop:
                save(epoch)
            bar.update(1)
            if stop:
                break
    except BaseException:
        record.close()  # interrupted or failed: release the database now (SQLite folds its log back into the file)
        raise
    finally:
        bar.close()
        draws.set_state(callers_rng)
    elapsed = time.perf_counter() - t0
    seconds = clock.parts() | {"other": round(elapsed - sum(clock.parts().values()), 3)}
    return record.finish(elapsed, governor.describe(), {"seconds": json.dumps(seconds)})


def draw_seed(seed: int, epoch: int) -> int:
    """The seed of torch's generator for the updates of ``epoch`` (the forward's own draws, such as dropout's)."""
    return (seed * 1_000_003 + epoch) ^ 0x5EED_D40F


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


def measure_fn(cfg: ExperimentConfig, first: Callable[[], dict[str, Tensor]] | None = None, *, by_logits: bool = False):
    """The progress-measure function for this run, or None when the measures do not apply to it. ``first``: the
    run's initial weights (theta_0 of the dynamics measures) when ``cfg.model`` cannot build them (your own module).
    ``by_logits``: only the measures that read logits (:func:`~grokscope.measures.progress.logit_measures`: a module
    without TransformerLens names)."""
    if cfg.task.kind != "modular" or cfg.model.arch == "vector_mlp" or cfg.model.attn_only:
        return None  # the measures need a modular p*p grid and a model with an MLP

    dynamics = cfg.train.dynamics or cfg.model.output_scale != 1.0
    initial: dict[str, Tensor] = {}  # theta_0: the config's own initial weights (seeded by model.init_seed)

    def measure(model, task, logits):
        try:
            out = logit_measures(logits, task) if by_logits else progress_measures(model, task, logits=logits)
        except ValueError:
            return {}
        if dynamics:
            out.update(dynamics_measures(model, task))
        return out

    def dynamics_measures(model, task) -> dict[str, float]:
        """relative_weight_change and ntk_alignment (measures/dynamics.py) of the model's current weights."""
        current = dict(model.named_parameters())
        if not initial and first is not None:
            initial.update((n, w) for n, w in first().items() if n in current)
        elif not initial:
            fresh = build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
            initial.update({n: p.detach().clone() for n, p in fresh.named_parameters()})
        rows = task.train_idx[: names.NTK_EXAMPLES]
        return {names.RELATIVE_WEIGHT_CHANGE: relative_weight_change(current, initial),
                names.NTK_ALIGNMENT: ntk_alignment(model, task.tokens[rows], task.labels[rows])}

    return measure


def progress_bar(total: int, initial: int, enabled: bool | None, name: str):
    from tqdm.auto import tqdm

    disable = (not sys.stderr.isatty()) if enabled is None else (not enabled)
    return tqdm(total=total, initial=initial, desc=name, unit="epoch", disable=disable, dynamic_ncols=True,
                mininterval=0.5)
