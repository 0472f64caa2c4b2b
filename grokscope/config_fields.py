"""The field machinery under the config dataclasses: the error they raise, JSON in and out, dotted paths.

Generic over frozen dataclasses: :func:`from_jsonable` checks parsed JSON against the annotations and builds
the dataclass (which then validates itself), naming the field of any error (``optim.lr: expected a number``).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any, Union

__all__ = [
    "ConfigError", "apply_overrides", "fail", "field_paths", "flat_dict", "from_jsonable", "parse_override", "jsonable",
]


class ConfigError(ValueError):
    """A user-facing configuration error; the message names the field and the fix."""


def fail(path: str, msg: str) -> typing.NoReturn:
    """Raise :class:`ConfigError` ``"{path}: {msg}"``."""
    if len(msg) > 300:  # a huge value (a pasted file, say) stays one readable line
        msg = msg[:300] + "..."
    raise ConfigError(f"{path}: {msg}")


def jsonable(obj: Any) -> Any:
    """A dataclass as nested dicts (tuples as lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple):
        return [jsonable(v) for v in obj]
    return obj


def from_jsonable(cls: Any, data: Any, prefix: str = "") -> Any:
    """The dataclass ``cls`` built from parsed JSON ``data``; errors name the field under ``prefix``."""
    where = prefix or "config"
    if not isinstance(data, dict):
        fail(where, f"expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            fail(f"{prefix}.{key}" if prefix else key, f"unknown field; known: {', '.join(sorted(known))}")
    kwargs = {k: _coerce(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    """Check ``value`` (parsed JSON) against the annotation ``tp``; return it in the field's type."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, path)
            except ConfigError:
                pass
        fail(path, f"expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            fail(path, f"expected a list of {len(args)} numbers, got {value!r}")
        return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        return from_jsonable(tp, value, path)
    if tp is bool:
        if not isinstance(value, bool):
            fail(path, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            fail(path, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(path, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail(path, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config annotation {tp!r} at {path}")  # a bug, not a user error


def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    names = [getattr(a, "__name__", str(a)) for a in args]
    return " or ".join(names) + " or null"


def field_paths(config: Any) -> dict[str, Any]:
    """All settable dotted paths of a config and their current values."""
    out: dict[str, Any] = {}

    def walk(obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            path = f"{prefix}{f.name}"
            if dataclasses.is_dataclass(value):
                walk(value, path + ".")
            else:
                out[path] = value

    walk(config, "")
    return out


def flat_dict(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping (a config's ``to_dict()``) as ``{"task.p": 113, ...}``: dotted keys, leaves unchanged."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(flat_dict(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value``; the value is read as JSON when it parses, else as a plain string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected key=value, for example optim.weight_decay=0.3")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, RecursionError):
        value = raw  # "none"/"None" stay words here: apply_overrides reads them as null where the field takes null
    return key, value


def _takes_null(config: Any, key: str) -> bool:
    """Whether the field at dotted ``key`` of ``config`` admits None (``str | None``, not ``str``)."""
    *parents, leaf = key.split(".")
    obj = config
    for part in parents:
        obj = getattr(obj, part)
    return type(None) in typing.get_args(typing.get_type_hints(type(obj)).get(leaf))


def apply_overrides(config: Any, overrides: dict[str, Any]) -> Any:
    """A new config with dotted-path overrides applied and every value validated."""
    data = config.to_dict()
    paths = field_paths(config)
    for key, value in overrides.items():
        if key not in paths:
            close = [p for p in paths if p.endswith("." + key.split(".")[-1])]
            hint = f"; did you mean {close[0]}?" if close else f"; known keys: {', '.join(paths)}"
            raise ConfigError(f"--set {key}: unknown key{hint}")
        if isinstance(value, str) and value.strip().lower() in ("none", "null") and _takes_null(config, key):
            value = None  # --set model.normalization_type=none; a str field keeps the word: model.biases=none
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            node = node[part]
        node[parts[-1]] = value
    return type(config).from_dict(data)
