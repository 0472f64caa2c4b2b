"""Sweep specifications: a base config, axes over config fields, seeds; expanded into named cells.

A spec is written as JSON (always), YAML (when PyYAML is installed) or built by a Python function
(:func:`~grokscope.sweep.spec_files.load_spec` reads each)::

    {
      "name": "wd-x-fraction",
      "base": "quick",                                   # a preset name, or a config object
      "set": {"train.epochs": 3000},                     # overrides applied to the base first
      "axes": {
        "optim.weight_decay": [0, 0.1, 0.3, 1, 3],       # a list of values
        "task.train_fraction": {"linspace": [0.2, 0.7, 6]},   # start, stop, count (both ends included)
        "optim.lr": {"logspace": [1e-4, 1e-2, 5]},       # geometric: start, stop, count (values, not exponents)
        "task.p": {"range": [11, 30, 6]},                # Python range: start, stop (excluded), step
        "model.d_model,model.d_mlp": [[64, 256], [128, 512]]  # zipped fields move together
      },
      "seeds": 2,                                        # a count (0..n-1) or a list of seeds
      "seed_fields": ["model.init_seed"],                # the fields each seed is written to
      "outcome": {"threshold": 0.9, "tau": 300, "budget": null}
    }

Expansion (:func:`expand`) is pure: it validates every cell's config before anything runs and raises
:class:`SweepSpecError` (a :class:`~grokscope.config.ConfigError`) with one line naming the problem. Each cell
has a stable name made of its axis values, its seed and a hash of its full config, e.g.
``wd0.3-frac0.4-s1-3f9c2a1b``: the same config always gets the same name, a different config never does.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grokscope.config import ConfigError, ExperimentConfig, apply_overrides, field_paths
from grokscope.measures import GROK_ACC
from grokscope.sweep.naming import HOW_FIELDS, cell_name, config_hash

__all__ = ["Axis", "Cell", "OutcomeParams", "SweepSpec", "SweepSpecError", "cell_name", "config_hash", "expand",
           "make_spec", "spec_from_dict"]


class SweepSpecError(ConfigError):
    """A sweep spec that cannot be expanded; the one-line message names the key, axis or value."""


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Axis:
    """One sweep axis: ``fields`` (one, or several that move together) and their ``values`` (one tuple per point)."""

    fields: tuple[str, ...]
    values: tuple[tuple[Any, ...], ...]

    @property
    def key(self) -> str:
        return ",".join(self.fields)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(frozen=True)
class OutcomeParams:
    """How a run's outcome is read (see :mod:`grokscope.sweep.outcome`).

    ``threshold``: accuracy that counts as "reached" for the Liu et al. phase (0.9, their value).
    ``tau``: the gap threshold in epochs; None means a tenth of the budget (Liu's quick notebooks: B = 10^4,
    tau = 10^3).
    ``budget``: epochs considered; None means each run's ``train.epochs``.
    ``grok_threshold``: test accuracy of the grok epoch (0.99, as the training loop).
    """

    threshold: float = 0.9
    tau: int | None = None
    budget: int | None = None
    grok_threshold: float = GROK_ACC

    def __post_init__(self) -> None:
        for name in ("threshold", "grok_threshold"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (0.0 < v <= 1.0):
                raise SweepSpecError(f"outcome.{name}: must be a number in (0, 1], got {v!r}")
        for name in ("tau", "budget"):
            v = getattr(self, name)
            low = 0 if name == "tau" else 1
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < low):
                raise SweepSpecError(f"outcome.{name}: must be an integer >= {low} or null, got {v!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "tau": self.tau, "budget": self.budget,
                "grok_threshold": self.grok_threshold}


@dataclass(frozen=True)
class Cell:
    """One point of the sweep: a run to make. ``point`` holds (field, value) for every axis field, in axis order."""

    name: str
    config: ExperimentConfig
    point: tuple[tuple[str, Any], ...]
    seed: int
    position: int

    def value(self, field_path: str) -> Any:
        for k, v in self.point:
            if k == field_path:
                return v
        raise KeyError(field_path)


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: ``base`` config, ``axes`` (their product is the grid), ``seeds`` written to ``seed_fields``."""

    name: str
    base: ExperimentConfig
    axes: tuple[Axis, ...] = ()
    seeds: tuple[int, ...] = (0,)
    seed_fields: tuple[str, ...] = ("model.init_seed",)
    outcome: OutcomeParams = field(default_factory=OutcomeParams)
    description: str = ""

    @property
    def axis_fields(self) -> list[str]:
        return [f for a in self.axes for f in a.fields]

    @property
    def size(self) -> int:
        return math.prod(len(a) for a in self.axes) * len(self.seeds)

    def to_dict(self) -> dict[str, Any]:
        """A JSON form that :func:`spec_from_dict` reads back into an equal spec (the base as a full config)."""
        return {
            "name": self.name,
            "description": self.description,
            "base": self.base.to_dict(),
            "axes": {a.key: [list(v) if len(a.fields) > 1 else v[0] for v in a.values] for a in self.axes},
            "seeds": list(self.seeds),
            "seed_fields": list(self.seed_fields),
            "outcome": self.outcome.to_dict(),
        }


# --------------------------------------------------------------------------- building specs

_SPEC_KEYS = ("name", "description", "base", "set", "axes", "seeds", "seed_fields", "outcome")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,79}$")


def make_spec(**kwargs: Any) -> SweepSpec:
    """A spec from keyword arguments in the file format: ``make_spec(name=..., base="quick", axes={...}, seeds=2)``."""
    return spec_from_dict(kwargs)


def spec_from_dict(data: Mapping[str, Any]) -> SweepSpec:
    """Parse and validate the file format (see the module docstring); expansion is checked as well."""
    if not isinstance(data, Mapping):
        raise SweepSpecError(f"sweep spec: expected an object, got {type(data).__name__}")
    for key in data:
        if key not in _SPEC_KEYS:
            raise SweepSpecError(f"sweep spec: unknown key {key!r}; known keys: {', '.join(_SPEC_KEYS)}")
    name = data.get("name", "sweep")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise SweepSpecError(f"name: must be 1..80 characters of letters, digits, '.', '_', '+', '-', got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise SweepSpecError(f"description: expected a string, got {description!r}")

    base = _base_config(data.get("base"))
    overrides = data.get("set", {}) or {}
    if not isinstance(overrides, Mapping):
        raise SweepSpecError(f"set: expected an object of field: value, got {overrides!r}")
    if overrides:
        for k in overrides:
            _check_field(str(k), field_paths(base), "set")
        try:
            base = apply_overrides(base, dict(overrides))
        except ConfigError as e:
            raise SweepSpecError(f"set: {_strip_set(str(e))}") from None
    base = apply_overrides(base, {"name": name})
    paths = field_paths(base)

    raw_axes = data.get("axes", {}) or {}
    if not isinstance(raw_axes, Mapping):
        raise SweepSpecError(f"axes: expected an object of field: values, got {type(raw_axes).__name__}")
    axes: list[Axis] = []
    seen: set[str] = set()
    for key, raw in raw_axes.items():
        fields = tuple(f.strip() for f in str(key).split(","))
        for f in fields:
            _check_field(f, paths, f"axes.{key}")
            if f in seen:
                raise SweepSpecError(f"axes.{key}: field {f} appears in more than one axis")
            if f in HOW_FIELDS:
                how = "--device NAME" if f == "train.device" else f"--set {f}=VALUE"
                raise SweepSpecError(f"axes.{key}: {f} says how cells run, not what they are, so it cannot be an "
                                     f"axis; give 'grokscope sweep {how}' (or set it in the base)")
            seen.add(f)
        axes.append(Axis(fields, _axis_values(key, fields, raw, paths)))

    seeds = _seeds(data.get("seeds", [0]))
    seed_fields_raw = data.get("seed_fields", ["model.init_seed"])
    if isinstance(seed_fields_raw, str):
        seed_fields_raw = [seed_fields_raw]
    if not isinstance(seed_fields_raw, Sequence) or not seed_fields_raw:
        raise SweepSpecError(f"seed_fields: expected a non-empty list of config fields, got {seed_fields_raw!r}")
    seed_fields = tuple(str(f) for f in seed_fields_raw)
    for f in seed_fields:
        _check_field(f, paths, "seed_fields")
        if not isinstance(paths[f], int) or isinstance(paths[f], bool):
            raise SweepSpecError(f"seed_fields: {f} is not an integer field, so it cannot hold a seed")
        if f in seen:
            raise SweepSpecError(f"seed_fields: {f} is also a sweep axis; sweep it as an axis or as seeds, not both")

    outcome = data.get("outcome", {}) or {}
    if isinstance(outcome, OutcomeParams):
        params = outcome
    else:
        if not isinstance(outcome, Mapping):
            raise SweepSpecError(f"outcome: expected an object, got {outcome!r}")
        known = ("threshold", "tau", "budget", "grok_threshold")
        for k in outcome:
            if k not in known:
                raise SweepSpecError(f"outcome.{k}: unknown key; known: {', '.join(known)}")
        params = OutcomeParams(**dict(outcome))

    spec = SweepSpec(name=name, base=base, axes=tuple(axes), seeds=seeds, seed_fields=seed_fields, outcome=params,
                     description=description)
    expand(spec)  # every cell's config is validated now, before any run starts
    return spec


def _base_config(base: Any) -> ExperimentConfig:
    from grokscope.presets import PRESETS, get_preset

    if base is None:
        raise SweepSpecError(f"base: missing; give a preset name ({', '.join(PRESETS)}) or a config object")
    if isinstance(base, ExperimentConfig):
        return base
    if isinstance(base, str):
        try:
            return get_preset(base)
        except ConfigError as e:
            raise SweepSpecError(f"base: {e}") from None
    if isinstance(base, Mapping):
        try:
            return ExperimentConfig.from_dict(dict(base))
        except ConfigError as e:
            raise SweepSpecError(f"base.{e}") from None
    raise SweepSpecError(f"base: expected a preset name or a config object, got {type(base).__name__}")


def _strip_set(msg: str) -> str:
    return msg[len("--set "):] if msg.startswith("--set ") else msg


def _check_field(f: str, paths: Mapping[str, Any], where: str) -> None:
    if f == "name":
        raise SweepSpecError(f"{where}: 'name' cannot be swept (cell names are derived from the configs)")
    if f not in paths:
        import difflib

        leaf = f.split(".")[-1]
        close = ([p for p in paths if p.split(".")[-1] == leaf]
                 or difflib.get_close_matches(f, list(paths), n=1, cutoff=0.75))
        hint = f"; did you mean {close[0]}?" if close else "; see 'grokscope presets NAME' for the fields"
        raise SweepSpecError(f"{where}: unknown config field {f!r}{hint}")


def _seeds(raw: Any) -> tuple[int, ...]:
    if isinstance(raw, bool):
        raise SweepSpecError(f"seeds: expected a count or a list of integers, got {raw!r}")
    if isinstance(raw, int):
        if raw < 1:
            raise SweepSpecError(f"seeds: a count must be >= 1, got {raw}")
        return tuple(range(raw))
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise SweepSpecError(f"seeds: expected a count or a non-empty list of integers, got {raw!r}")
    out = []
    for s in raw:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise SweepSpecError(f"seeds: every seed must be an integer >= 0, got {s!r}")
        out.append(s)
    if len(set(out)) != len(out):
        raise SweepSpecError(f"seeds: duplicate seeds in {out}")
    return tuple(out)


def _clean_number(x: float) -> float:
    """Round generated grid values to 12 significant digits (0.30000000000000004 -> 0.3)."""
    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.12g}")


def _number(v: Any, where: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise SweepSpecError(f"{where}: expected a finite number, got {v!r}")
    return v


def _generated(key: str, raw: Mapping[str, Any]) -> list[Any]:
    forms = ("values", "linspace", "logspace", "range")
    if len(raw) != 1 or next(iter(raw)) not in forms:
        raise SweepSpecError(
            f"axes.{key}: expected a list, or an object with one of {', '.join(forms)}; got {dict(raw)!r}")
    kind, args = next(iter(raw.items()))
    where = f"axes.{key}.{kind}"
    if kind == "values":
        if not isinstance(args, list):
            raise SweepSpecError(f"{where}: expected a list, got {args!r}")
        return list(args)
    if not isinstance(args, (list, tuple)) or len(args) != 3:
        raise SweepSpecError(f"{where}: expected [start, stop, {'step' if kind == 'range' else 'count'}], got {args!r}")
    a, b, n = (_number(x, where) for x in args)
    if kind == "range":
        if n == 0:
            raise SweepSpecError(f"{where}: step must not be 0")
        count = math.ceil((b - a) / n - 1e-12)
        vals = [a + i * n for i in range(max(count, 0))]
        if all(isinstance(x, int) for x in args):
            return [int(v) for v in vals]
        return [_clean_number(v) for v in vals]
    if isinstance(n, float) and not n.is_integer():
        raise SweepSpecError(f"{where}: count must be an integer, got {n}")
    n = int(n)
    if n < 1:
        raise SweepSpecError(f"{where}: count must be >= 1, got {n}")
    if kind == "logspace" and not (a > 0 and b > 0):
        raise SweepSpecError(f"{where}: start and stop must be > 0 (they are values, not exponents), got {a}, {b}")
    if n == 1:
        return [a] if a == b else _fail_count(where, a, b)
    out = []
    for i in range(n):
        t = i / (n - 1)
        v = a + (b - a) * t if kind == "linspace" else math.exp(math.log(a) + (math.log(b) - math.log(a)) * t)
        out.append(_clean_number(v))
    out[0], out[-1] = a, b
    return out


def _fail_count(where: str, a: float, b: float) -> list[Any]:
    raise SweepSpecError(f"{where}: a count of 1 needs start == stop, got {a} and {b}")


def _axis_values(key: str, fields: tuple[str, ...], raw: Any, paths: Mapping[str, Any]) -> tuple[tuple[Any, ...], ...]:
    if isinstance(raw, Mapping):
        values = _generated(key, raw)
    elif isinstance(raw, (list, tuple)):
        values = list(raw)
    else:
        raise SweepSpecError(f"axes.{key}: expected a list of values or a range object, got {raw!r}")
    if not values:
        raise SweepSpecError(f"axes.{key}: empty axis (give at least one value)")
    out: list[tuple[Any, ...]] = []
    for i, v in enumerate(values):
        if len(fields) > 1:
            if not isinstance(v, (list, tuple)) or len(v) != len(fields):
                raise SweepSpecError(
                    f"axes.{key}[{i}]: expected a list of {len(fields)} values (one per field), got {v!r}")
            point = tuple(v)
        else:
            point = (v,)
        # Integer fields get integers from generated ranges (a linspace over task.p, say).
        point = tuple(_as_field_type(paths[f], x) for f, x in zip(fields, point))
        out.append(tuple(tuple(x) if isinstance(x, list) else x for x in point))
    seen: dict[str, int] = {}
    for i, point in enumerate(out):
        k = json.dumps(point, default=str)
        if k in seen:
            raise SweepSpecError(f"axes.{key}[{i}]: duplicate value {_show(point, fields)} (also at index {seen[k]})")
        seen[k] = i
    return tuple(out)


def _as_field_type(current: Any, x: Any) -> Any:
    if isinstance(current, int) and not isinstance(current, bool) and isinstance(x, float) and x.is_integer():
        return int(x)
    return x


def _show(point: tuple, fields: tuple[str, ...]) -> str:
    return repr(point[0]) if len(fields) == 1 else repr(list(point))


# --------------------------------------------------------------------------- expansion


def expand(spec: SweepSpec) -> list[Cell]:
    """Every cell of the sweep, axes in order (the first axis varies slowest), seeds innermost.

    Pure: no files are read or written. Raises :class:`SweepSpecError` naming the axis and value whose
    config is invalid, or when two cells would have the same config."""
    cells: list[Cell] = []
    names: dict[str, str] = {}
    grids = [a.values for a in spec.axes]
    for combo in itertools.product(*grids) if grids else [()]:
        point: list[tuple[str, Any]] = []
        for axis, values in zip(spec.axes, combo):
            point.extend(zip(axis.fields, values))
        for seed in spec.seeds:
            overrides = dict(point)
            overrides.update({f: seed for f in spec.seed_fields})
            try:
                cfg = apply_overrides(spec.base, overrides)
            except ConfigError as e:
                where = ", ".join(f"{k}={v!r}" for k, v in point) or "base"
                raise SweepSpecError(f"axes ({where}): {_strip_set(str(e))}") from None
            name = cell_name(point, seed, cfg)
            cfg = apply_overrides(cfg, {"name": name})
            if name in names:
                raise SweepSpecError(
                    f"axes: the points {names[name]} and {dict(point)} give the same config (cell {name})")
            names[name] = repr(dict(point))
            cells.append(Cell(name=name, config=cfg, point=tuple(point), seed=seed, position=len(cells)))
    return cells
