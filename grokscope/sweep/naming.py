"""A sweep cell's name: its axis values, its seed and a hash of its full config (``wd0.3-frac0.4-s1-3f9c2a1b``).

The same config always gets the same name and a different config never does; names are safe as directory names.
Fields that say how a run is computed, not what it computes (:data:`HOW_FIELDS`: the device and train.compile), are
not part of a cell's identity: a sweep continued on another machine keeps its cell names and its finished cells.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from typing import Any

from grokscope.config import ExperimentConfig, field_paths

__all__ = ["ALIASES", "HOW_FIELDS", "cell_name", "config_hash", "same_cell"]

#: Config fields that say where or how a run is computed, not what: left out of cell names and of the check that a
#: cell's directory holds its config (the numbers of a run moved to another device are close, not bitwise equal).
HOW_FIELDS = frozenset({"train.device", "train.compile"})

#: Short names of common axis fields in cell names (other fields: their last part, or the whole path when two
#: axes share it).
ALIASES = {
    "optim.weight_decay": "wd", "optim.lr": "lr", "task.train_fraction": "frac", "task.split_seed": "split",
    "task.p": "p", "task.formula": "op", "model.init_seed": "seed", "model.d_model": "dm", "model.d_mlp": "dmlp",
    "model.n_heads": "heads", "model.d_head": "dh", "model.arch": "arch", "model.act_fn": "act", "train.epochs": "ep",
    "train.data_seed": "dseed", "train.batch_size": "bs",
}


def _short(field_path: str, all_fields: Sequence[str]) -> str:
    if field_path in ALIASES:
        return ALIASES[field_path]
    leaf = field_path.split(".")[-1]
    if sum(1 for f in all_fields if f.split(".")[-1] == leaf) > 1:
        return field_path.replace(".", "_")
    return leaf


def _fmt_value(v: Any) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple)):
        return "_".join(_fmt_value(x) for x in v)
    text = re.sub(r"[^A-Za-z0-9.+]", "_", str(v))
    return text[:24]


def config_hash(config: ExperimentConfig) -> str:
    """8 hex digits identifying a config apart from its name.

    Computed from the fields that differ from :class:`ExperimentConfig`'s defaults (as canonical JSON), so a field
    added to the config later with a default does not rename existing cells; the name and :data:`HOW_FIELDS` are
    left out."""
    defaults = field_paths(ExperimentConfig())
    values = field_paths(config)
    diff = {k: v for k, v in values.items()
            if k != "name" and k not in HOW_FIELDS and (k not in defaults or defaults[k] != v)}
    plain = {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(diff.items())}
    text = json.dumps(plain, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def cell_name(point: Sequence[tuple[str, Any]], seed: int | None, config: ExperimentConfig) -> str:
    """``<short field><value>-...-s<seed>-<hash>``; at most 120 characters, safe as a directory name."""
    fields = [k for k, _ in point]
    parts = [f"{_short(k, fields)}{_fmt_value(v)}" for k, v in point]
    if seed is not None:
        parts.append(f"s{seed}")
    readable = "-".join(parts)[:110].rstrip("-_.")
    h = config_hash(config)
    return f"{readable}-{h}" if readable else h


def same_cell(a: ExperimentConfig, b: ExperimentConfig) -> bool:
    """True when two configs are the same cell: equal in every field but :data:`HOW_FIELDS`."""
    return _what(a) == _what(b)


def _what(config: ExperimentConfig) -> dict:
    data = config.to_dict()
    for path in HOW_FIELDS:
        *parents, leaf = path.split(".")
        node = data
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return data
