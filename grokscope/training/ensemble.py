"""Train K models at once as one batched computation; each member is stored as its own run.

The members' parameters are stacked on a leading K axis and go through the batched fast path of
:mod:`grokscope.models.fast` in one forward and one backward. Each member's slices are then updated by the single
run's AdamW (:func:`~grokscope.training.adamw.adamw_update` with the member's own hyperparameters and learning
rate from :mod:`grokscope.training.optim`), bit for bit. Members may differ in :data:`ENSEMBLE_FIELDS`; each trains
on its own split (padded to the largest split, the padding weighted 0), so a member equals a single run of its
config (to rounding). Each member directory is written by the single run's
:class:`~grokscope.training.recorder.RunRecorder`, so a member can be read, analysed and resumed alone.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from grokscope.config import ExperimentConfig, field_paths
from grokscope.device import describe_device, device_settings
from grokscope.measures import names
from grokscope.models import build_model
from grokscope.models.fast import PARAM_NAMES, PlanCache, fast_logits, fast_tables
from grokscope.models.forward import choose_forward
from grokscope.models.transformer import scale_logits
from grokscope.runtime import ThreadGovernor
from grokscope.store.run import Run
from grokscope.tasks import ModularTask, make_task, task_to
from grokscope.training.adamw import adamw_update
from grokscope.training.loop import loss_and_accuracy, measure_fn, new_run_dir, progress_bar
from grokscope.training.optim import adamw_hyperparameters, lr_at
from grokscope.training.placement import cpu_runtime, run_device
from grokscope.training.recorder import RunRecorder, optim_state_tensors

__all__ = ["Ensemble", "ENSEMBLE_FIELDS", "check_ensemble_configs", "train_ensemble"]

# Config fields members may differ in; everything else must be equal.
ENSEMBLE_FIELDS = frozenset({
    "name", "model.init_seed", "task.split_seed", "task.train_fraction", "train.data_seed", "optim.lr",
    "optim.weight_decay",
})


# Fields the batched ensemble does not implement: they must keep their defaults. (model.init_scale and task.n_train
# are supported: they only change the initial weights and the split, which members build as single runs do.)
UNSUPPORTED_FIELDS = (
    "model.attn_only", "model.dropout", "model.fixed_embedding", "optim.decay", "optim.grad_filter", "optim.perp_grad",
    "optim.fixed_norm", "train.loss", "train.softmax_collapse", "optim.optimizer", "train.compile",
)


def check_ensemble_configs(configs: Sequence[ExperimentConfig]) -> None:
    """Raise ValueError (naming the field) unless the configs can be trained as one ensemble: the one check of the
    ensemble and of the sweep planner that packs cells into ensembles."""
    if not configs:
        raise ValueError("train_ensemble: give at least one config")
    first = field_paths(configs[0])
    free = ", ".join(sorted(ENSEMBLE_FIELDS - {"name"}))
    for i, cfg in enumerate(configs[1:], start=1):
        for key, value in field_paths(cfg).items():
            if key not in ENSEMBLE_FIELDS and value != first[key]:
                raise ValueError(f"train_ensemble: config {i} differs from config 0 in {key} ({value!r} vs "
                                 f"{first[key]!r}); members may differ only in {free}")
    c = configs[0]
    defaults = field_paths(ExperimentConfig())
    for key in UNSUPPORTED_FIELDS:
        if first[key] != defaults[key]:
            raise ValueError(f"train_ensemble: {key}={first[key]!r} is not supported by the batched ensemble (only the "
                             f"default {defaults[key]!r}); train these runs one by one with 'grokscope train'")
    if c.task.kind != "modular":
        raise ValueError(f"train_ensemble: ensembles need task.kind='modular', got {c.task.kind!r}")
    if c.train.batch_size is not None:
        raise ValueError("train_ensemble: train.batch_size must be null (full batch) for an ensemble")
    if c.model.arch != "transformer" or c.model.n_layers != 1:
        raise ValueError("train_ensemble: ensembles need the one-layer transformer (model.arch='transformer', "
                         "model.n_layers=1)")
    if not c.train.fast_path:
        raise ValueError("train_ensemble: ensembles run on the fast path; train.fast_path must be true")


class Ensemble:
    """K stacked models with their tasks, data and AdamW state. ``step()`` is one full-batch update of all.

    ``device``: where they compute (default the CPU). ``batched``: the loss and the AdamW update as a GPU wants them
    (one cross-entropy over all members, one fused update per group of members with equal hyperparameters) rather
    than member by member (cache-sized, for the CPU); chosen here by the device, once, and the same numbers (the
    update bitwise, the loss to rounding).
    """

    def __init__(self, configs: Sequence[ExperimentConfig], *, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        check_ensemble_configs(configs)
        self.configs = list(configs)
        self.K = K = len(configs)
        self.device = dev = torch.device("cpu" if device is None else device)
        self.batched = dev.type == "cuda"
        self.tasks = [task_to(make_task(c.task), dev) for c in configs]  # built on the CPU, then placed
        task = self.tasks[0]
        assert isinstance(task, ModularTask)  # check_ensemble_configs allows modular tasks only
        models = [build_model(c.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx)
                  for c in configs]
        if dev.type != "cpu":
            models = [m.to(dev) for m in models]  # initialised on the CPU: the same weights on every device
        choice = choose_forward(models[0], task)
        if choice.path != "fast":
            raise ValueError(f"train_ensemble: ensembles run on the fast path, which does not apply: {choice.why}")
        if dtype is not None:
            models = [m.to(dtype) for m in models]
        self.template = models[0]  # a module to hand member weights to measures and checkpoints
        named = [dict(m.named_parameters()) | dict(m.named_buffers()) for m in models]
        trainable = {n for n, _ in models[0].named_parameters()}
        self.names = [n for n in PARAM_NAMES if n in trainable]
        self.w: dict[str, Tensor] = {}
        for name in PARAM_NAMES:
            stacked = torch.stack([d[name].detach() for d in named]).clone()
            self.w[name] = stacked.requires_grad_(name in trainable)
        self.eq = task.p
        self.act_fn = configs[0].model.act_fn
        self.cache = PlanCache(task.d_vocab, configs[0].model.n_heads, size=2)
        self.loss_dtype = getattr(torch, configs[0].train.loss_dtype)

        # Training data: member k's split, padded to the largest split with weight 0.
        sizes = [t.train_idx.numel() for t in self.tasks]
        n_max = max(sizes)
        toks, labels, weights = [], [], []
        for t, n in zip(self.tasks, sizes):
            pad = n_max - n
            idx = torch.cat([t.train_idx, t.train_idx[:1].expand(pad)])
            toks.append(t.tokens[idx])
            labels.append(t.labels[idx])
            real = torch.full((n,), 1.0 / n, dtype=torch.float64, device=dev)
            weights.append(torch.cat([real, torch.zeros(pad, dtype=torch.float64, device=dev)]))
        self.train_tokens = torch.stack(toks)  # [K, n_max, 3]
        self.train_labels = torch.stack(labels)  # [K, n_max]
        self.train_weights = torch.stack(weights)  # [K, n_max]: 1/n_k on real examples, 0 on padding
        self.all_tokens = task.tokens.unsqueeze(0).expand(K, -1, -1)  # every pair; the same rows for every member

        # AdamW: each member's own hyperparameters (they differ in lr and weight decay), state as a single run keeps it
        self.hyperparameters = [adamw_hyperparameters(c.optim) for c in configs]
        self.active = torch.ones(K, dtype=torch.bool)  # members still training (others are frozen)
        self.exp_avg = {n: torch.zeros_like(self.w[n]) for n in self.names}
        self.exp_avg_sq = {n: torch.zeros_like(self.w[n]) for n in self.names}
        # one float32 step counter per member and weight, as the single run's AdamW keeps them
        self.steps = [[torch.zeros((), dtype=torch.float32, device=dev) for _ in self.names] for _ in range(K)]
        self.update = 0  # updates made (drives the warm-up)

    # -- computation ---------------------------------------------------------------------------
    def logits(self, tokens: Tensor) -> Tensor:
        """Logits [K, N, d_vocab_out] of every member on its own tokens [K, N, 3]."""
        logits = fast_logits(fast_tables(self.w, self.eq), self.cache.get(tokens), self.act_fn)
        return scale_logits(logits, self.configs[0].model.output_scale)  # members share model.output_scale

    def all_logits(self) -> Tensor:
        """Logits over every pair of the task for every member, without gradients: [K, N_all, d_vocab_out]."""
        with torch.no_grad():
            return self.logits(self.all_tokens)

    def lr_now(self) -> list[float]:
        """Per-member learning rate of the next update (the single run's :func:`lr_at`), 0 for frozen members."""
        return [lr_at(self.update, c.optim) if bool(active) else 0.0 for c, active in zip(self.configs, self.active)]

    def step(self) -> Tensor:
        """One full-batch AdamW update of every member; the per-member training loss [K] (float64) before it."""
        for n in self.names:
            self.w[n].grad = None
        logits = self.logits(self.train_tokens)  # [K, N, C]
        # member by member: one member's [N, C] in float64 stays in cache, all K of them do not (far slower);
        # unbind, not logits[k], whose backward would zero-fill and add a [K, N, C] gradient per member
        dtype = self.loss_dtype
        if self.batched:  # one cross-entropy over every member's rows (the same sums, in one kernel)
            flat = F.cross_entropy(logits.to(dtype).flatten(0, 1), self.train_labels.flatten(), reduction="none")
            per_member = (flat.view(self.K, -1) * self.train_weights.to(dtype)).sum(1)
            per_member.sum().backward()
            self._adamw(self.lr_now())
            self.update += 1
            return per_member.detach()
        per_member = torch.stack([
            (F.cross_entropy(member.to(dtype), labels, reduction="none") * weights.to(dtype)).sum()
            for member, labels, weights in zip(logits.unbind(0), self.train_labels, self.train_weights)
        ])  # [K]
        per_member.sum().backward()
        self._adamw(self.lr_now())
        self.update += 1
        return per_member.detach()

    @torch.no_grad()
    def _adamw(self, lrs: Sequence[float] | Tensor) -> None:
        """Each active member's update: the single run's AdamW on the member's slices of the stacked weights,
        moments and gradients, with its own hyperparameters and learning rate ``lrs[k]``. Frozen members are left
        alone."""
        grads = [self.w[n].grad for n in self.names]
        assert all(g is not None for g in grads)  # self.names are the trainable weights; step() follows a backward
        if self.batched:
            self._adamw_grouped(lrs, grads)  # type: ignore[arg-type]
            return
        for k, hyper in enumerate(self.hyperparameters):
            if not bool(self.active[k]):
                continue
            adamw_update(
                [self.w[n][k] for n in self.names], [g[k] for g in grads],  # type: ignore[index]
                [self.exp_avg[n][k] for n in self.names], [self.exp_avg_sq[n][k] for n in self.names], self.steps[k],
                lr=float(lrs[k]), betas=hyper["betas"], eps=hyper["eps"], weight_decay=hyper["weight_decay"],
            )

    def _adamw_grouped(self, lrs: Sequence[float] | Tensor, grads: list[Tensor]) -> None:
        """:meth:`_adamw` with one fused call per group of active members that share their hyperparameters and
        learning rate (a few calls, not K). The kernel updates each tensor on its own, so the numbers are bitwise
        those of the member-by-member calls."""
        groups: dict[tuple, list[int]] = {}
        for k, hyper in enumerate(self.hyperparameters):
            if bool(self.active[k]):
                key = (float(lrs[k]), hyper["betas"], hyper["eps"], hyper["weight_decay"])
                groups.setdefault(key, []).append(k)
        for (lr, betas, eps, weight_decay), members in groups.items():
            adamw_update(
                [self.w[n][k] for k in members for n in self.names], [g[k] for k in members for g in grads],
                [self.exp_avg[n][k] for k in members for n in self.names],
                [self.exp_avg_sq[n][k] for k in members for n in self.names],
                [s for k in members for s in self.steps[k]], lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
            )

    # -- members as single models ----------------------------------------------------------------
    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member k's weights keyed as a HookedTransformer state dict (a ``grokscope train`` checkpoint's keys)."""
        state = {n: t.detach() for n, t in self.template.state_dict().items()}
        for name in PARAM_NAMES:
            state[name] = self.w[name][k].detach()
        return state

    def member_model(self, k: int):
        """The template module holding member k's weights (shared: valid until the next call)."""
        with torch.no_grad():
            for name, t in (dict(self.template.named_parameters()) | dict(self.template.named_buffers())).items():
                if name in self.w:
                    t.copy_(self.w[name][k])
        return self.template

    def member_optim_state(self, k: int) -> dict[str, Tensor]:
        """Member k's AdamW state keyed as a single run's resume state (``optim.<param>.<field>``)."""
        return optim_state_tensors(
            (n, {"step": step.clone(), "exp_avg": self.exp_avg[n][k].detach(),
                 "exp_avg_sq": self.exp_avg_sq[n][k].detach()}) for n, step in zip(self.names, self.steps[k]))


def train_ensemble(configs: list[ExperimentConfig], out_dirs: list[Path], progress: bool | None = None) -> list[Run]:
    """Train ``configs`` as one batched ensemble into new run directories ``out_dirs`` (one per member).

    Each member directory is a complete run of its config (config.json, metrics, checkpoints, resume state)
    whose numbers match a single ``grokscope train`` of that config to rounding. Members that reach
    ``train.stop_after_grok`` or diverge stop there (their weights are frozen) while the others continue.
    """
    check_ensemble_configs(configs)
    if len(out_dirs) != len(configs):
        raise ValueError(f"train_ensemble: {len(configs)} configs but {len(out_dirs)} output directories")
    t = configs[0].train
    device = run_device(t.device)  # one line when the config's device is not here, before any directory is made
    # on the CPU: one thread when a busy machine makes two slower (never changes the numbers), subnormals flushed
    with (cpu_runtime(device, t.flush_denormal, False) as (denormals, governor),
          device_settings(device, deterministic=t.deterministic, allow_tf32=t.allow_tf32) as numerics):
        where = {"denormals": denormals, "device": describe_device(device), "numerics": numerics}
        return _train_ensemble(configs, out_dirs, progress, where, governor, device)


def _train_ensemble(configs: list[ExperimentConfig], out_dirs: list[Path], progress: bool | None,
                    where: dict[str, str], governor: ThreadGovernor, device: torch.device) -> list[Run]:
    ens = Ensemble(configs, device=device)
    records = [RunRecorder(new_run_dir(d, c), c.train) for d, c in zip(out_dirs, configs)]
    settings = configs[0].train
    measures = [measure_fn(c) for c in configs] if settings.measure_every else None  # each its own theta_0
    for record, cfg in zip(records, configs):
        record.start(cfg, {"forward": "ensemble", "message": "", "ensemble_size": str(ens.K), **where})

    def evaluate(epoch: int) -> list[dict[str, float]]:
        logits = ens.all_logits()
        rows = []
        for k, task in enumerate(ens.tasks):
            member = logits[k]
            out = {}
            out[names.TRAIN_LOSS], out[names.TRAIN_ACC] = loss_and_accuracy(
                member[task.train_idx], task.train_labels, ens.loss_dtype)
            if task.test_idx.numel():
                out[names.TEST_LOSS], out[names.TEST_ACC] = loss_and_accuracy(
                    member[task.test_idx], task.test_labels, ens.loss_dtype)
            if measures is not None and measures[k] is not None and epoch % settings.measure_every == 0:
                model = ens.member_model(k).eval()
                with torch.no_grad():
                    out.update(measures[k](model, task, member))
            rows.append(out)
        return rows

    def save(k: int, epoch: int) -> None:
        records[k].save(epoch, ens.member_state_dict(k), ens.member_optim_state(k))

    for k, row in enumerate(evaluate(0)):
        records[k].log(0, row)
        save(k, 0)

    bar = progress_bar(settings.epochs, 0, progress, f"ensemble of {ens.K}")
    t0 = time.perf_counter()
    try:
        for epoch in range(1, settings.epochs + 1):
            t_step = time.perf_counter()
            losses = ens.step()
            governor.record(time.perf_counter() - t_step)
            finite = torch.isfinite(losses).cpu()  # one transfer, then per-member reads
            for k, record in enumerate(records):
                if ens.active[k]:
                    record.epoch, record.update = epoch, ens.update
                    if not finite[k]:
                        record.diverged(epoch)
                        ens.active[k] = False
            logged = epoch % settings.log_every == 0 or epoch == settings.epochs
            rows = evaluate(epoch) if logged else None
            for k, record in enumerate(records):
                if not ens.active[k]:
                    continue
                stop = rows is not None and record.record(epoch, rows[k])
                if epoch in record.checkpoints or stop:
                    save(k, epoch)
                if stop:
                    ens.active[k] = False
            bar.update(1)
            if not bool(ens.active.any()):
                break
    except BaseException:
        for record in records:
            record.close()  # interrupted or failed: release the databases now, as the single-run loop does
        raise
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0
    return [record.finish(elapsed, governor.describe()) for record in records]
