"""The contenders of ``grokscope bench``: each trains the mainline as one implementation does, an epoch at a time.

:class:`ReferenceLoop` (row a: :mod:`grokscope.training.reference`, every layer over the full sequence),
:class:`DefaultLoop` (row b: the training loop's ``choose_forward`` and ``train_step``; :class:`CompiledLoop`, the
same under ``torch.compile``), :class:`EnsembleLoop` (row c: K seeds as one batched computation) and
:class:`TransformerLensLoop` (row d: a ``HookedTransformer`` with the same weights, trained as its demo notebook
does, with torch's AdamW). Every row's optimiser takes its settings from
:func:`~grokscope.training.optim.adamw_hyperparameters` and its schedule from :func:`~grokscope.training.optim.lr_at`.
Each has ``epoch()`` (one training epoch) and ``evaluate()`` (what a demo loop evaluates every epoch);
:func:`loop_rate` times them as a demo loop. ``fixed_lr`` (0: time a trained model without moving it) is how
``grokscope bench --whole-run`` times them from a run's checkpoints.

Every contender runs where its model and task tensors are (``grokscope bench --device``); :func:`clock` reads the
time after waiting for the device's queued work (a CUDA or MPS call returns before its kernels finish).
"""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn.functional as F

from grokscope.config import ExperimentConfig, apply_overrides
from grokscope.device import resolve_device
from grokscope.models.forward import choose_forward, model_device
from grokscope.training.compiled import CompiledForward, compile_forward
from grokscope.training.ensemble import Ensemble
from grokscope.training.loop import loss_and_accuracy, train_step
from grokscope.training.optim import adamw_hyperparameters, lr_at, make_optimizer
from grokscope.training.reference import reference_eval, reference_step

__all__ = [
    "CompiledLoop", "DefaultLoop", "EnsembleLoop", "ReferenceLoop", "TransformerLensLoop", "clock", "loop_rate",
    "synchronize", "transformer_lens_version",
]

_CPU = torch.device("cpu")


def synchronize(device: torch.device) -> None:
    """Wait until ``device`` has finished the work queued on it (CUDA, MPS); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def clock(device: torch.device = _CPU) -> float:
    """``time.perf_counter()`` once ``device``'s queued work is done: what every bench timing reads."""
    synchronize(device)
    return time.perf_counter()


class ReferenceLoop:
    """Row (a): the reference training step (:func:`reference_step`, every layer over the full sequence) and
    its test evaluation, as a demo loop runs them; ``epoch()`` and ``evaluate()`` are what :func:`loop_rate` times."""

    name = "(a) reference (full sequence)"
    fixed_lr: float | None = None  # when set, every update uses it (0: time a trained model without moving it)

    def __init__(self, cfg: ExperimentConfig, task, model):
        self.cfg, self.task, self.model = cfg, task, model
        self.opt: Any = make_optimizer(model, cfg.optim)  # TransformerLens's row uses torch.optim.AdamW
        self.update = 0
        self.x, self.y = task.train_tokens, task.train_labels

    def lr(self) -> float:
        return lr_at(self.update, self.cfg.optim) if self.fixed_lr is None else self.fixed_lr

    def epoch(self) -> float:
        loss = reference_step(self.model, self.opt, self.x, self.y, self.lr())
        self.update += 1
        return loss

    def evaluate(self) -> None:
        reference_eval(self.model, self.task.test_tokens, self.task.test_labels)


class DefaultLoop(ReferenceLoop):
    name = "(b) grokscope default path"

    def __init__(self, cfg: ExperimentConfig, task, model):
        super().__init__(cfg, task, model)
        choice = choose_forward(model, task, fast=cfg.train.fast_path)
        self.forward, self.path = choice.fn, choice.path
        self.name = f"(b) grokscope default ({self.path})"
        self.loss_dtype = getattr(torch, cfg.train.loss_dtype)

    def epoch(self) -> float:
        loss = train_step(self.forward, self.opt, self.x, self.y, self.lr(), self.loss_dtype)
        self.update += 1
        return loss.item()

    def evaluate(self) -> None:
        """What the loop does at a log epoch: logits over every pair, train and test loss and accuracy."""
        t = self.task
        with torch.no_grad():
            logits = self.forward(t.tokens)
            loss_and_accuracy(logits[t.train_idx], t.train_labels, self.loss_dtype)
            loss_and_accuracy(logits[t.test_idx], t.test_labels, self.loss_dtype)


class CompiledLoop(DefaultLoop):
    """Row (b) with its forward under ``torch.compile`` in ``mode`` (``grokscope bench --compile MODE``: the loop's
    :func:`~grokscope.training.compiled.compile_forward`); the compile happens in the bench's warm-up epoch and
    evaluation, and :meth:`compile_note` says what it cost."""

    def __init__(self, cfg: ExperimentConfig, task, model, mode: str):
        super().__init__(cfg, task, model)
        choice = choose_forward(model, task, fast=cfg.train.fast_path)
        compiled, self.meta = compile_forward(choice, mode, model_device(model), deterministic=cfg.train.deterministic)
        self.forward, self.mode = compiled.fn, mode
        self.name = f"(b+) compiled {mode}" if self.meta["compile"] != "none" else "(b+) eager: compile refused"

    def compile_note(self) -> str:
        """One line: the compile seconds and signatures, the fall-back or the note (the run's meta keys)."""
        fn = self.forward
        if isinstance(fn, CompiledForward) and fn.fallback is None:
            note = f"; {self.meta['compile_note']}" if self.meta["compile_note"] else ""
            return f"compile ({self.mode}): {fn.compile_seconds:.1f} s for {fn.signatures} signature(s){note}"
        why = fn.fallback if isinstance(fn, CompiledForward) else self.meta["compile_note"]
        return f"compile ({self.mode}): not applied ({why})"


class EnsembleLoop:
    """Row (c): K seeds of ``cfg`` as one :class:`Ensemble`, on the device ``cfg.train.device`` names."""

    def __init__(self, cfg: ExperimentConfig, k: int):
        self.k = k
        self.name = f"(c) ensemble K={k} (aggregate)"
        configs = [apply_overrides(cfg, {"model.init_seed": cfg.model.init_seed + i}) for i in range(k)]
        self.ens = Ensemble(configs, device=resolve_device(cfg.train.device))

    def epoch(self) -> float:
        return float(self.ens.step()[0])

    def evaluate(self) -> None:
        logits = self.ens.all_logits()
        for k, t in enumerate(self.ens.tasks):
            loss_and_accuracy(logits[k][t.train_idx], t.train_labels, self.ens.loss_dtype)
            loss_and_accuracy(logits[k][t.test_idx], t.test_labels, self.ens.loss_dtype)


def transformer_lens_version() -> str | None:
    try:
        from importlib.metadata import version

        import transformer_lens  # noqa: F401
    except Exception:
        return None
    try:
        return version("transformer-lens")
    except Exception:
        return "?"


class TransformerLensLoop(ReferenceLoop):
    """TransformerLens HookedTransformer with the same weights; attention/unembed biases frozen at 0 as in grokscope."""

    def __init__(self, cfg: ExperimentConfig, task, model):
        from grokscope.interop import hooked_from_state_dict

        device = next(model.parameters()).device
        extra = {} if device.type == "cpu" else {"device": str(device)}  # on the CPU: as before
        self.model = hooked_from_state_dict(cfg, model.state_dict(), **extra).train()
        for name, param in self.model.named_parameters():
            if name.split(".")[-1] in ("b_Q", "b_K", "b_V", "b_O", "b_U"):
                param.requires_grad_(False)
        self.cfg, self.task = cfg, task
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.opt = torch.optim.AdamW(trainable, **adamw_hyperparameters(cfg.optim))
        self.update = 0
        self.x, self.y = task.train_tokens, task.train_labels
        self.name = f"(d) TransformerLens {transformer_lens_version()}"

    def epoch(self) -> float:
        for g in self.opt.param_groups:
            g["lr"] = self.lr()
        logits = self.model(self.x)[:, -1]
        loss = F.cross_entropy(logits.to(torch.float64), self.y)
        loss.backward()
        self.opt.step()
        self.opt.zero_grad()
        self.update += 1
        return loss.item()

    def evaluate(self) -> None:
        with torch.inference_mode():
            logits = self.model(self.task.test_tokens)[:, -1]
            F.cross_entropy(logits.to(torch.float64), self.task.test_labels).item()


def loop_rate(runner, epochs: int, device: torch.device = _CPU) -> float:
    """Epochs per second of ``runner`` as a demo loop: one training epoch and a test evaluation, ``epochs`` times."""
    t0 = clock(device)
    for _ in range(epochs):
        runner.epoch()
        runner.evaluate()
    return epochs / (clock(device) - t0)
