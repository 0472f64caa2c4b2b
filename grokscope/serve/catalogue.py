"""What the viewer can show: the runs and sweeps under its root, and the JSON it serves about them (never writes).
An id is a directory's POSIX path relative to the root; only directories found under the root (up to depth
:data:`MAX_DEPTH`, not following symlinks out of it) have one, so ``..`` or absolute paths name nothing."""

from __future__ import annotations

import math
from pathlib import Path

from grokscope.measures import GROK_ACC
from grokscope.measures.names import TEST_ACC, TEST_LOSS, TRAIN_ACC, TRAIN_LOSS
from grokscope.store.run import CHECKPOINTS, CONFIG, METRICS, Run, RunError, is_run_dir
from grokscope.sweep.layout import is_sweep_dir

MAX_DEPTH = 4
LIVE_COLUMNS = (TRAIN_LOSS, TRAIN_ACC, TEST_LOSS, TEST_ACC)
SKIP_DIRS = {CHECKPOINTS, "__pycache__", "node_modules"}


def _find_dirs(root: Path, is_hit, default_name: str, max_depth: int, *, skip=lambda d: False) -> dict[str, Path]:
    """{id: directory} for every directory under ``root`` (at most ``max_depth`` levels down) for which ``is_hit``
    holds; a root that is itself a hit is listed under its own name. Hits and directories for which ``skip`` holds
    are not descended into; symlinks that leave root are ignored."""
    root = Path(root).resolve()
    if is_hit(root):
        return {root.name or default_name: root}
    out: dict[str, Path] = {}

    def walk(directory: Path, depth: int) -> None:
        try:
            children = sorted(directory.iterdir())
        except OSError:
            return
        for child in children:
            if child.name.startswith(".") or child.name in SKIP_DIRS or not child.is_dir():
                continue
            try:
                real = child.resolve()
            except OSError:
                continue
            if not real.is_relative_to(root):
                continue
            if is_hit(child):
                out[child.relative_to(root).as_posix()] = real
            elif depth < max_depth and not skip(child):
                walk(child, depth + 1)

    walk(root, 1)
    return out


def find_runs(root: Path, max_depth: int = MAX_DEPTH) -> dict[str, Path]:
    """{id: run directory} for every run under ``root``."""
    return _find_dirs(root, is_run_dir, "run", max_depth)


def find_sweeps(root: Path, max_depth: int = MAX_DEPTH) -> dict[str, Path]:
    """{id: sweep directory} for every sweep (a directory with ``sweep.json``) under ``root``; runs are not entered."""
    return _find_dirs(root, is_sweep_dir, "sweep", max_depth, skip=is_run_dir)


def _grok_epoch(recorded, steps_and_accs) -> int | None:
    """The grok epoch the run recorded, else the first step whose test accuracy reaches GROK_ACC."""
    grok = recorded or None
    if grok is None:
        grok = next((step for step, acc in steps_and_accs if acc is not None and acc >= GROK_ACC), None)
    return int(grok) if grok not in (None, "") else None


def run_summary(run_id: str, path: Path) -> dict:
    """The key numbers of one run for the list (never raises: a broken run is listed with its error)."""
    info: dict = {"id": run_id, "name": run_id, "status": "?", "epoch": None, "epochs": None, "grok_epoch": None}
    try:
        run = Run(path)
        config = run.config
        info.update(name=config.name, epochs=config.train.epochs, task=f"{config.task.formula} mod {config.task.p}",
                    arch=config.model.arch)
        meta = run.meta
        info["status"] = meta.get("status", "new")
        rows = [row for row in (run.metric_rows(list(LIVE_COLUMNS)) if meta else []) if row[2] is not None]
        last = {name: value for _, name, value in rows}
        info["epoch"] = max((step for step, _, _ in rows), default=None)
        info.update({name: last.get(name) for name in LIVE_COLUMNS})
        info["grok_epoch"] = _grok_epoch(meta.get("grok_epoch"), ((s, v) for s, name, v in rows if name == TEST_ACC))
        info["checkpoints"] = len(run.checkpoints)
        info["mtime"] = max((path / f).stat().st_mtime for f in (CONFIG, METRICS) if (path / f).exists())
    except (RunError, OSError, ValueError) as e:
        info["status"] = "unreadable"
        info["error"] = str(e)
    return info


def metrics_payload(run: Run, columns: list[str] | None = None, since: int | None = None) -> dict:
    """The polled JSON: status, progress and the chosen metric columns (non-finite values as null)."""
    meta = run.meta
    names = list(columns) if columns else list(LIVE_COLUMNS)
    rows = run.metric_rows(names) if (run.dir / METRICS).exists() else []
    steps: list[int] = []
    index: dict[int, int] = {}
    cols: dict[str, list] = {n: [] for n in names}
    for step, name, value in rows:
        if since is not None and step <= since:
            continue
        if step not in index:
            index[step] = len(steps)
            steps.append(step)
            for n in names:
                cols[n].append(None)
        cols[name][index[step]] = value if value is None or math.isfinite(value) else None
    return {
        "status": meta.get("status", "new"),
        "message": meta.get("message", ""),
        "epoch": steps[-1] if steps else 0,
        "epochs": run.config.train.epochs,
        "grok_epoch": _grok_epoch(meta.get("grok_epoch"), zip(steps, cols.get(TEST_ACC, ()))),
        "steps": steps,
        "columns": cols,
    }


def header_payload(run: Run) -> dict:
    """The report header's facts as JSON (non-finite numbers as null)."""
    from grokscope.analysis.reverse import json_safe
    from grokscope.figures.report import header_data

    return json_safe(header_data(run))
