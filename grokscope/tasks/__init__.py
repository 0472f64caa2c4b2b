"""Algorithmic tasks: deterministic datasets and splits built from a :class:`~grokscope.config.TaskConfig`."""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor

from grokscope.config import TaskConfig
from grokscope.formula import Expr, FormulaError, parse_formula
from grokscope.tasks.modular import ModularTask, make_modular_task, split_indices, split_rows
from grokscope.tasks.registry import (
    function_task,
    make_registered_task,
    register_task,
    registered_tasks,
    rows_to_task,
    table_task,
    unregister_task,
)
from grokscope.tasks.sequence import SEQUENCE_KINDS, SequenceTask, answer_view, make_sequence_task, sequence_metrics
from grokscope.tasks.zoo import TableTask, make_multi_task, make_parity_task, make_s5_task


def make_task(config: TaskConfig) -> ModularTask | TableTask | SequenceTask:
    """Build the dataset a task config describes."""
    if config.kind == "modular":
        return make_modular_task(config)
    if config.kind == "multi":
        return make_multi_task(config)
    if config.kind == "s5":
        return make_s5_task(config)
    if config.kind == "sparse_parity":
        return make_parity_task(config)
    if config.kind in SEQUENCE_KINDS:
        return make_sequence_task(config)
    if config.kind == "registered":
        return make_registered_task(config)
    raise ValueError(f"task.kind: unknown task kind {config.kind!r}")


def task_to(task, device: torch.device | str):
    """The task with its tensors (tokens, labels, split indices, groups) on ``device``; the task itself when they are
    there already (on the CPU, where tasks are built, nothing is copied)."""
    device = torch.device(device)
    moved = {f.name: value.to(device) for f in dataclasses.fields(task)
             if isinstance(value := getattr(task, f.name), Tensor) and value.device != device}
    return dataclasses.replace(task, **moved) if moved else task


def is_sequence_task(task) -> bool:
    """True for tasks scored at several positions (labels [N, T]; the model's ``forward_all`` logits)."""
    return isinstance(task, SequenceTask)


def has_task_metrics(task) -> bool:
    """True when :func:`task_metrics` has anything to say about ``task`` (a multi-task or a sequence task)."""
    return is_sequence_task(task) or getattr(task, "groups", None) is not None


def task_metrics(task, logits: Tensor, loss_dtype: torch.dtype = torch.float64) -> dict[str, float]:
    """Per-group metrics of a multi-task (``{split}_{loss|acc}_op{i}`` for operation i), per answer position of a
    sequence task (:func:`~grokscope.tasks.sequence.sequence_metrics`), else ``{}``.
    ``logits``: [N, d_vocab_out] (sequence tasks: [N, T, d_vocab_out]) over every row of ``task.tokens``."""
    if not has_task_metrics(task):
        return {}
    if is_sequence_task(task):
        return sequence_metrics(task, logits, loss_dtype)
    groups = task.groups
    out: dict[str, float] = {}
    for split, idx in (("train", task.train_idx), ("test", task.test_idx)):
        for i in range(len(task.group_names)):
            rows = idx[groups[idx] == i]
            if rows.numel():
                z, y = logits[rows], task.labels[rows]
                out[f"{split}_loss_op{i}"] = F.cross_entropy(z.to(loss_dtype), y).item()
                out[f"{split}_acc_op{i}"] = (z.argmax(-1) == y).to(torch.float64).mean().item()
    return out


__all__ = [
    "Expr", "FormulaError", "ModularTask", "SEQUENCE_KINDS", "SequenceTask", "TableTask", "answer_view",
    "function_task", "has_task_metrics", "is_sequence_task", "make_registered_task", "register_task",
    "registered_tasks", "rows_to_task", "table_task", "unregister_task",
    "make_modular_task", "make_multi_task", "make_parity_task", "make_s5_task", "make_sequence_task", "make_task",
    "parse_formula", "sequence_metrics", "split_indices", "split_rows", "task_metrics", "task_to",
]
