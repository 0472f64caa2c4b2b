"""A train/test split given from outside (``grokscope analyze --checkpoint FILE --split SPLIT``): the train indices
of a model grokscope did not train, read from a JSON file, checked against the task, applied to it, and recorded in
the run directory written for the checkpoint (``split.json``) so that later commands on that directory use it.

Indices are flat grid indices ``a * p + b`` of a modular task (the ``pair_index`` of its rows), so a file means
the same whatever pairs the task leaves out (the zero divisors of a/b, the a > b pairs of an unordered task).
The file holds a JSON list of them, or an object ``{"train": [...]}``. Every error is one line naming the file.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from grokscope.store.errors import RunError
from grokscope.store.files import atomic_write_json

__all__ = ["SPLIT_FILE", "apply_split", "read_split_file", "run_split", "write_split"]

#: The file of a run directory that records a split given from outside (absent: the config's split).
SPLIT_FILE = "split.json"
_FORMAT = "flat indices a*p + b of the training pairs"


def read_split_file(path: Path | str) -> list[int]:
    """The train indices in a JSON file (a list, or an object with a ``"train"`` list); RunError (one line naming the
    file) for a missing or unreadable file, bad JSON, or entries that are not integers. Range and duplicates are
    checked against the task by :func:`apply_split`."""
    path = Path(path)
    if not path.is_file():
        raise RunError(f"{path}: no such split file" if not path.exists() else f"{path}: not a file")
    try:
        obj = json.loads(path.read_text())
    except UnicodeDecodeError:
        raise RunError(f"{path}: not a JSON split file (not UTF-8 text)") from None
    except OSError as e:
        raise RunError(f"{path}: cannot read ({e.strerror or e})") from None
    except json.JSONDecodeError as e:
        raise RunError(f"{path}: not JSON ({e.msg} at line {e.lineno}); a split file is a JSON list of train "
                       "indices a*p + b, or {\"train\": [...]}") from None
    if isinstance(obj, dict):
        if "train" not in obj:
            raise RunError(f"{path}: a JSON object needs a \"train\" list of indices a*p + b "
                           f"(it has {sorted(obj)[:5]})")
        obj = obj["train"]
    if not isinstance(obj, list):
        raise RunError(f"{path}: expected a JSON list of train indices a*p + b, got {type(obj).__name__}")
    bad = [x for x in obj if isinstance(x, bool) or not isinstance(x, int)]
    if bad:
        raise RunError(f"{path}: train indices must be integers a*p + b; {len(bad)} are not, e.g. {bad[0]!r}")
    return list(obj)


def apply_split(task: Any, train: Sequence[int], where: str) -> Any:
    """``task`` with ``train_idx`` the rows whose pair ``a * p + b`` is in ``train`` and ``test_idx`` every other row
    (both sorted, so the row order never depends on the split). RunError (one line naming ``where``) for a task
    without a p x p grid, no indices, indices outside [0, p^2), duplicates, pairs that are not examples of the task,
    or every example in train (no test set)."""
    pair_index = getattr(task, "pair_index", None)
    if getattr(task.config, "kind", None) != "modular" or pair_index is None:
        raise RunError(f"{where}: a split of indices a*p + b needs a modular task, not {task.config.kind!r}")
    p = int(task.config.p)
    if len(train) == 0:
        raise RunError(f"{where}: the split has no train indices")
    outside = [i for i in train if not 0 <= i < p * p]
    if outside:
        raise RunError(f"{where}: {len(outside)} train indices are outside 0..{p * p - 1} (p = {p}), "
                       f"e.g. {outside[0]}")
    want = torch.tensor(list(train), dtype=torch.int64)
    unique = torch.unique(want)
    if len(unique) != len(want):
        counts = torch.bincount(want, minlength=p * p)
        dup = int(torch.nonzero(counts > 1)[0, 0])
        raise RunError(f"{where}: {len(want) - len(unique)} duplicate train indices, e.g. {dup} "
                       f"(a={dup // p}, b={dup % p})")
    pairs = pair_index.cpu()
    in_train = torch.isin(pairs, unique)
    if int(in_train.sum()) != len(unique):
        missing = unique[~torch.isin(unique, pairs)]
        m = int(missing[0])
        raise RunError(f"{where}: {len(missing)} train indices are not examples of {task.config.formula} mod {p}, "
                       f"e.g. {m} (a={m // p}, b={m % p})")
    if bool(in_train.all()):
        raise RunError(f"{where}: every one of the {len(pairs)} examples is in train; a split needs a test set")
    rows = torch.arange(len(pairs))
    device = task.train_idx.device
    return dataclasses.replace(task, train_idx=rows[in_train].to(device), test_idx=rows[~in_train].to(device))


def write_split(run_dir: Path | str, train: Sequence[int], source: str | None = None) -> None:
    """Record a split in ``run_dir/split.json`` (sorted train indices; ``source``: the file it came from)."""
    atomic_write_json(Path(run_dir) / SPLIT_FILE, {"format": _FORMAT, "source": source,
                                                   "train": sorted(int(i) for i in train)})


def run_split(run_dir: Path | str, task: Any) -> Any:
    """``task`` with the split recorded in ``run_dir`` (:data:`SPLIT_FILE`), or unchanged when there is none."""
    path = Path(run_dir) / SPLIT_FILE
    if not path.exists():
        return task
    return apply_split(task, read_split_file(path), str(path))
