"""Tiny trained runs shared by the figure, report and viewer tests: trained once per test process
(a transformer and an MLP, a+b mod 13, 30 epochs), in a temporary directory removed at exit; and the figure tests'
independent references: a plotted array decoded, the real Fourier basis written from its definition."""

from __future__ import annotations

import atexit
import base64
import shutil
import tempfile
from pathlib import Path

import numpy as np

_ROOT: Path | None = None


def _train(out: Path, **overrides) -> None:
    import grokscope
    from grokscope import apply_overrides, get_preset

    base = {"train.epochs": 30, "train.checkpoint_every": 10, "train.measure_every": 10, "train.log_every": 5}
    base.update(overrides)
    grokscope.train(apply_overrides(get_preset("tiny"), base), out, progress=False)


def runs_root() -> Path:
    """A directory holding the runs ``tiny`` (transformer) and ``mlp`` (arch='mlp'). Do not modify them:
    copy one first (see :func:`copy_run`)."""
    global _ROOT
    if _ROOT is None:
        root = Path(tempfile.mkdtemp(prefix="grokscope-fig-runs-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _train(root / "tiny")
        _train(root / "mlp", **{"name": "tiny-mlp", "model.arch": "mlp", "model.d_mlp": 12, "model.n_heads": 1})
        _ROOT = root
    return _ROOT


def copy_run(name: str, dst: Path):
    from grokscope import load_run

    shutil.copytree(runs_root() / name, dst)
    return load_run(dst)


def values(arr) -> np.ndarray:
    """A plotted array as float64: a numpy array, a list, or a Plotly typed array ({'dtype', 'bdata'})."""
    if isinstance(arr, dict) and "bdata" in arr:
        out = np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"])).astype(np.float64)
        shape = arr.get("shape")
        return out.reshape([int(n) for n in str(shape).split(",")]) if shape else out  # "11, 11" in Plotly's JSON
    return np.asarray(arr, dtype=np.float64)


def fourier_rows(n: int) -> np.ndarray:
    """The orthonormal real Fourier basis over Z_n from its definition (even n: the Nyquist cosine last)."""
    x = np.arange(n)
    rows = [np.full(n, 1 / np.sqrt(n))]
    for k in range(1, (n + 1) // 2):
        rows += [np.cos(2 * np.pi * k * x / n) * np.sqrt(2 / n), np.sin(2 * np.pi * k * x / n) * np.sqrt(2 / n)]
    if n % 2 == 0:
        rows.append(np.cos(np.pi * x) / np.sqrt(n))
    return np.stack(rows)
