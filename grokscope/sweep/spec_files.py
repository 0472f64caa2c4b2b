"""Reading a sweep spec: a JSON or YAML file, or a Python function returning a spec (see :mod:`.spec`)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from grokscope.sweep.spec import SweepSpec, SweepSpecError, expand, spec_from_dict

__all__ = ["load_spec"]


def load_spec(source: str | Path) -> SweepSpec:
    """A spec from a ``.json`` / ``.yaml`` / ``.yml`` file, or a Python function given as ``file.py:func``,
    ``file.py`` (its ``sweep()`` function) or ``package.module:func``; the function returns a
    :class:`SweepSpec` or a dict in the file format."""
    text = str(source)
    path = Path(text)
    if text.endswith(".py") or ".py:" in text or (":" in text and not path.exists()):
        return _spec_from_python(text)
    if not path.exists():
        raise SweepSpecError(f"{path}: no such sweep spec file")
    if path.is_dir():
        raise SweepSpecError(
            f"{path}: is a directory, not a sweep spec (to continue a sweep, give its spec again with --out {path})")
    suffix = path.suffix.lower()
    try:
        raw_text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise SweepSpecError(f"{path}: cannot read ({e})") from None
    if suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise SweepSpecError(
                f"{path}: YAML specs need PyYAML (pip install pyyaml), or write the spec as JSON") from None
        try:
            data = yaml.safe_load(raw_text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise SweepSpecError(f"{path}: not valid YAML{where}") from None
    else:
        try:
            data = json.loads(raw_text)
        except json.JSONDecodeError as e:
            raise SweepSpecError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
        except RecursionError:
            raise SweepSpecError(f"{path}: not a sweep spec (JSON nested too deeply)") from None
    try:
        return spec_from_dict(data)
    except SweepSpecError as e:
        raise SweepSpecError(f"{path}: {e}") from None


def _spec_from_python(text: str) -> SweepSpec:
    target, _, func_name = text.partition(":") if not re.match(r"^[A-Za-z]:\\", text) else (text, "", "")
    func_name = func_name or "sweep"
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SweepSpecError(f"{path}: no such Python file")
        mod_spec = importlib.util.spec_from_file_location(f"_grokscope_sweep_{path.stem}", path)
        assert mod_spec is not None and mod_spec.loader is not None  # a .py path always gets a source loader
        module = importlib.util.module_from_spec(mod_spec)
        try:
            mod_spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - user code: report one line
            raise SweepSpecError(f"{path}: importing failed ({type(e).__name__}: {e})") from None
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:  # noqa: BLE001 - an ImportError, or the module failed while importing: one line
            raise SweepSpecError(f"{target}: cannot import ({type(e).__name__}: {e})") from None
    fn: Callable[[], Any] | None = getattr(module, func_name, None)
    if not callable(fn):
        raise SweepSpecError(f"{target}: has no function {func_name}() returning a sweep spec")
    try:
        result = fn()
    except SweepSpecError:
        raise
    except Exception as e:  # noqa: BLE001 - user code (or a function that is not a spec builder): one line
        first_line = str(e).splitlines()[0][:200] if str(e) else ""
        raise SweepSpecError(f"{target}:{func_name}() failed ({type(e).__name__}: {first_line})") from None
    if isinstance(result, SweepSpec):
        expand(result)
        return result
    if isinstance(result, Mapping):
        return spec_from_dict(result)
    raise SweepSpecError(f"{target}:{func_name}() returned {type(result).__name__}, expected a SweepSpec or a dict")
