"""Which forward computes a model's logits on a task: the one choice every caller makes the same way.

The training loop, the progress measures, the figures, the sweep planner and the bench all ask
:func:`choose_forward`; it answers with the function, the path's name and why that path was taken, so a run's
meta, a bench row or a planner message can say it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from grokscope.models.fast import fast_forward, fast_ineligibility
from grokscope.tasks import is_sequence_task

__all__ = ["ForwardChoice", "choose_forward", "model_device"]


def model_device(model) -> torch.device:
    """The device of a model's first parameter or buffer (the CPU for a model without any)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


@dataclass(frozen=True, kw_only=True)
class ForwardChoice:
    """``fn``: tokens -> logits, the same function as the model's own forward on this task.
    ``path``: "fast" (the one-layer tables of :mod:`grokscope.models.fast`), "general" (``model(tokens)``, logits
    at the last position) or "sequence" (``model.forward_all``, logits at every position). ``why``: one line."""

    fn: Callable[[Tensor], Tensor]
    path: str
    why: str


def choose_forward(model, task, *, fast: bool = True) -> ForwardChoice:
    """The fastest forward equal to the model's own on ``task``: the fast path when ``fast`` and it covers the
    model and task, else the general one; a task scored at several positions always gets ``forward_all``. On MPS
    the general one (the fast path's kernels are missing there; ``why`` says so). On CUDA the fast path computes
    its per-example block with the batched kernels of :func:`~grokscope.models.fast.fast_logits_batched`.

    The values and gradients are those of the general path to float32 rounding, so callers that only read numbers
    (measures, figures) pass ``fast=True`` whatever the run's config says; the training loop passes
    ``train.fast_path`` so that a run asked to train on the general path does.
    """
    if is_sequence_task(task):
        return ForwardChoice(fn=model.forward_all, path="sequence", why="the task is scored at every position")
    if not fast:
        return ForwardChoice(fn=model, path="general", why="the fast path is switched off (train.fast_path=false)")
    reason = fast_ineligibility(model, task)
    if reason is None and model_device(model).type == "mps":
        reason = "the fast path's kernels (sparse CSR products, embedding_bag's backward) are missing on MPS"
    if reason is not None:
        return ForwardChoice(fn=model, path="general", why=reason)
    fn = fast_forward(model, task)
    assert fn is not None  # fast_ineligibility said it covers this pair
    return ForwardChoice(fn=fn, path="fast", why="one-layer transformer on [a, b, =] inputs")
