"""Your own task: a Python callable or a lookup table over a finite input set, registered by name.

``register_task(name, builder)`` makes ``TaskConfig(kind="registered", name=name)`` build ``builder(config)``; a
builder returns a :class:`~grokscope.tasks.zoo.TableTask` (tokens ``[x_1, ..., x_k, =]``, labels, the config's
split). :func:`function_task` and :func:`table_task` turn ``f(a, b) -> c`` over an alphabet, a table
``{(a, b): c}`` or a generator of ``(inputs, label)`` rows into such a builder. A user's package registers its
tasks through the ``grokscope.tasks`` entry point group (each entry point a builder, registered under its name),
so a config, a sweep spec or a sweep worker process can name them.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from typing import Any

import torch

from grokscope.config import ConfigError, TaskConfig
from grokscope.registry import Registry
from grokscope.tasks.modular import split_rows
from grokscope.tasks.zoo import TableTask

__all__ = [
    "ENTRY_POINT_GROUP", "REGISTRY", "TaskBuilder", "function_task", "make_registered_task", "register_task",
    "registered_tasks", "rows_to_task", "table_task", "unregister_task",
]

ENTRY_POINT_GROUP = "grokscope.tasks"
TaskBuilder = Callable[[TaskConfig], TableTask]
REGISTRY: Registry[TaskBuilder] = Registry("task", "task.name", ENTRY_POINT_GROUP, "grokscope.tasks.register_task")


def register_task(name: str, builder: TaskBuilder, *, replace: bool = False) -> TaskBuilder:
    """Register ``builder`` (``TaskConfig -> TableTask``) under ``name``; returns it (usable as a decorator through
    ``functools.partial``). A name registered to another builder is an error unless ``replace``."""
    TaskConfig(kind="registered", name=name)  # the name's rules, with the config's message
    return REGISTRY.register(name, builder, replace=replace)


def unregister_task(name: str) -> None:
    """Forget ``name`` (no error when it is not registered)."""
    REGISTRY.unregister(name)


def registered_tasks() -> tuple[str, ...]:
    """The registered names (entry points included), sorted."""
    return REGISTRY.names()


def make_registered_task(config: TaskConfig) -> TableTask:
    """Build the task ``config.name`` names (ConfigError, one line, when nothing is registered under it)."""
    task = REGISTRY.get(config.name)(config)
    if not isinstance(task, TableTask):
        raise ConfigError(f"task.name: the builder of {config.name!r} returned {type(task).__name__}, not a TableTask "
                          "(build it with grokscope.tasks.table_task or function_task)")
    return task


def _index(symbols: Sequence[Hashable], what: str) -> dict[Hashable, int]:
    index: dict[Hashable, int] = {}
    for s in symbols:
        if s in index:
            raise ConfigError(f"task: the {what} alphabet lists {s!r} twice")
        index[s] = len(index)
    return index


def rows_to_task(config: TaskConfig, rows: Iterable[tuple[Sequence[Hashable], Hashable]],
                 alphabet: Sequence[Hashable] | None = None, outputs: Sequence[Hashable] | None = None) -> TableTask:
    """A :class:`TableTask` from ``(inputs, label)`` rows, in their order. tokens [N, k + 1]: input symbol ``s`` is
    token ``alphabet.index(s)`` and ``=`` is ``len(alphabet)``; labels [N]: ``outputs.index(label)``.
    ``alphabet``: default the input symbols in order of appearance; ``outputs``: default ``alphabet`` when every
    label is in it (so ``f(a, b) mod p`` keeps its values as labels), else the labels in order of appearance.
    Two labels for one input is a ConfigError naming the input."""
    seen: dict[tuple[Hashable, ...], Hashable] = {}
    for inputs, label in rows:
        key = tuple(inputs)
        if key in seen and seen[key] != label:
            raise ConfigError(f"task: the table is not a function: input {key!r} has two labels, "
                              f"{seen[key]!r} and {label!r}")
        seen[key] = label
    if not seen:
        raise ConfigError("task: the table has no rows")
    lengths = {len(k) for k in seen}
    if len(lengths) != 1 or 0 in lengths:
        raise ConfigError(f"task: every input must have the same length >= 1, got lengths {sorted(lengths)}")
    if alphabet is None:
        alphabet = list(dict.fromkeys(s for key in seen for s in key))
    ins = _index(alphabet, "input")
    missing = next((s for key in seen for s in key if s not in ins), None)
    if missing is not None:
        raise ConfigError(f"task: input symbol {missing!r} is not in the alphabet")
    labels = list(seen.values())
    if outputs is None:
        outputs = list(alphabet) if all(y in ins for y in labels) else list(dict.fromkeys(labels))
    outs = _index(outputs, "output")
    bad = next((y for y in labels if y not in outs), None)
    if bad is not None:
        raise ConfigError(f"task: label {bad!r} is not in the output alphabet")
    eq = len(ins)
    tokens = torch.tensor([[ins[s] for s in key] + [eq] for key in seen], dtype=torch.int64)  # [N, k + 1]
    y = torch.tensor([outs[label] for label in labels], dtype=torch.int64)  # [N]
    train_idx, test_idx = split_rows(config, tokens.shape[0])
    return TableTask(config=config, tokens=tokens, labels=y, train_idx=train_idx, test_idx=test_idx,
                     d_vocab=eq + 1, d_vocab_out=len(outs))


def function_task(fn: Callable[..., Any], alphabet: Sequence[Hashable] | int, *, arity: int = 2,
                  outputs: Sequence[Hashable] | None = None) -> TaskBuilder:
    """A builder for ``fn(x_1, ..., x_arity) -> label`` over every tuple of ``alphabet`` (an int n: ``range(n)``),
    rows in lexicographic (row-major) order. ``fn`` returning None leaves that input out (undefined)."""
    symbols = list(range(alphabet)) if isinstance(alphabet, int) else list(alphabet)

    def build(config: TaskConfig) -> TableTask:
        rows = ((xs, fn(*xs)) for xs in itertools.product(symbols, repeat=arity))
        return rows_to_task(config, ((xs, y) for xs, y in rows if y is not None), symbols, outputs)

    return build


def table_task(table: Mapping[Any, Hashable] | Iterable[tuple[Any, Hashable]] | Callable[[], Iterable],
               alphabet: Sequence[Hashable] | None = None, outputs: Sequence[Hashable] | None = None) -> TaskBuilder:
    """A builder for a lookup table: a mapping ``{inputs: label}``, an iterable of ``(inputs, label)`` rows (two labels
    for one input: ConfigError), or a zero-argument callable returning such rows (a generator function: a sequence
    task, read afresh on every build). ``inputs``: a tuple of symbols (a single symbol is a 1-tuple)."""

    def rows() -> Iterable[tuple[Sequence[Hashable], Hashable]]:
        source = table() if callable(table) else table
        items = source.items() if isinstance(source, Mapping) else source
        for inputs, label in items:
            yield (tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)), label

    if not callable(table) and not isinstance(table, Mapping):
        table = list(table)  # a one-shot iterator read once, now

    def build(config: TaskConfig) -> TableTask:
        return rows_to_task(config, rows(), alphabet, outputs)

    return build
