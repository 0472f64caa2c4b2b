"""Tiny trained runs shared by the figure, report and viewer tests: trained once per test process
(a transformer and an MLP, a+b mod 13, 30 epochs), in a temporary directory removed at exit."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

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
