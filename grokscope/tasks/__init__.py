"""Algorithmic tasks: deterministic datasets and splits built from a :class:`~grokscope.config.TaskConfig`."""

from grokscope.config import TaskConfig
from grokscope.tasks.formula import Expr, FormulaError, parse_formula
from grokscope.tasks.modular import ModularTask, make_modular_task, split_indices


def make_task(config: TaskConfig) -> ModularTask:
    """Build the dataset a task config describes."""
    if config.kind == "modular":
        return make_modular_task(config)
    raise ValueError(f"task.kind: unknown task kind {config.kind!r}")


__all__ = ["Expr", "FormulaError", "ModularTask", "make_modular_task", "make_task", "parse_formula", "split_indices"]
