"""Fingerprint what grokscope computes, to show a refactor changed no result bit.

    python benchmarks/fingerprint.py OUT.json [--workdir DIR]
    python benchmarks/fingerprint.py --compare BEFORE.json AFTER.json

Three results, each hashed exactly (floats by their bits, not rounded):

- the mainline (``nanda-mainline``) trained for 2,000 epochs: every metric row, every checkpoint's tensors and the
  optimiser state;
- a sweep (``wd-fraction-mini``, ensembles packed as the planner packs them): every index row but its timing and
  path columns;
- the quick preset's run and its analysis: every number of ``analysis.json``, the summary the report prints.

Wall times, dates, host names and thread counts are left out: they differ between any two runs. The runs use two
torch threads, fixed (the adaptive count follows the machine's load, and the measures' last bits follow the count).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

# Columns and meta keys that record when, where or how fast, never what was computed.
VOLATILE = {
    "seconds",
    "started",
    "finished",
    "wall",
    "wall_seconds",
    "host",
    "hostname",
    "threads",
    "created",
    "updated",
    "train_seconds",
    "elapsed",
    "duration",
    "path",
    "run_dir",
    "time",
    "run",
    "pid",
    "version",
    "git",
    "torch",
}


# Metric names and sweep-index columns added by issue 23 (the cheap extra measures, the index's param_norm): left out,
# so that a fingerprint taken before them still compares equal when every older number kept its bits.
ADDED_METRICS = {"act_sparsity", "abs_weight_entropy", "weight_entropy_normalised", "logit_efficiency"}
ADDED_COLUMNS = {"param_norm"}


def _without_added(row: dict) -> dict:
    """A metrics or index row without what issue 23 added (the index's ``final`` JSON included)."""
    row = {c: v for c, v in row.items() if c not in ADDED_COLUMNS}
    if isinstance(row.get("final"), str):
        final = json.loads(row["final"])
        if any(k in ADDED_METRICS for k in final):
            row["final"] = json.dumps({k: v for k, v in final.items() if k not in ADDED_METRICS})
    return row


def _cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "grokscope", *args], check=True, stdout=subprocess.DEVNULL)


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=repr).encode()).hexdigest()[:16]


def _floats_exact(obj):
    """JSON-able copy in which every float is written by its bits (float.hex)."""
    if isinstance(obj, float):
        return obj.hex()
    if isinstance(obj, dict):
        return {k: _floats_exact(v) for k, v in obj.items() if k not in VOLATILE}
    if isinstance(obj, list | tuple):
        return [_floats_exact(v) for v in obj]
    return obj


def _table(db: Path, table: str) -> list:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        cur = con.execute(f"SELECT * FROM {table}")
        cols = [c[0] for c in cur.description]
        rows = [{c: v for c, v in zip(cols, row) if c not in VOLATILE} for row in cur.fetchall()]
        rows = [_without_added(r) for r in rows if not (table == "metrics" and r.get("name") in ADDED_METRICS)]
    finally:
        con.close()
    return sorted((_floats_exact(r) for r in rows), key=lambda r: json.dumps(r, sort_keys=True))


def _tensors(path: Path) -> str:
    from safetensors.torch import load_file

    h = hashlib.sha256()
    for name, t in sorted(load_file(str(path)).items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def run_fingerprint(run: Path) -> dict:
    metrics = _table(run / "metrics.sqlite", "metrics")
    meta = {
        k: v for k, v in dict(_raw(run / "metrics.sqlite", "SELECT key, value FROM meta")).items() if k not in VOLATILE
    }
    files = {p.relative_to(run).as_posix(): _tensors(p) for p in sorted(run.rglob("*.safetensors"))}
    return {"metrics": _digest(metrics), "metric_rows": len(metrics), "meta": meta, "tensors": files}


def _raw(db: Path, sql: str) -> list:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def fingerprint(work: Path) -> dict:
    out: dict = {}
    mainline = work / "mainline"
    # a fixed thread count: the progress measures' float64 products can differ in their last bit between one and
    # two threads, and the adaptive count depends on how busy the machine is
    _cli("train", "--preset", "nanda-mainline", "--epochs", "2000", "--out", str(mainline), "--quiet", "--threads", "2")
    out["mainline_2000"] = run_fingerprint(mainline)

    sweep = work / "sweep"
    _cli("sweep", "--preset", "wd-fraction-mini", "--out", str(sweep), "--quiet")
    out["sweep_index"] = {"rows": _digest(_table(sweep / "index.sqlite", "cells"))}

    quick = work / "quick"
    _cli("train", "--preset", "quick", "--out", str(quick), "--quiet", "--threads", "2")
    _cli("analyze", str(quick), "--quiet")
    out["quick_run"] = run_fingerprint(quick)
    analysis = json.loads((quick / "analysis.json").read_text())
    out["quick_analysis"] = {k: _digest(_floats_exact(v)) for k, v in sorted(analysis.items()) if k not in VOLATILE}
    return out


def compare(before: dict, after: dict, where: str = "") -> list[str]:
    diffs: list[str] = []
    for key in sorted(set(before) | set(after)):
        a, b = before.get(key), after.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            diffs += compare(a, b, f"{where}{key}.")
        elif a != b:
            diffs.append(f"{where}{key}: {a!r} -> {b!r}")
    return diffs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", nargs="?", help="write the fingerprint here (JSON)")
    ap.add_argument("--workdir", help="where the runs go (default: a temporary directory)")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="compare two fingerprints")
    args = ap.parse_args(argv)
    if args.compare:
        before, after = (json.loads(Path(p).read_text()) for p in args.compare)
        diffs = compare(before, after)
        for d in diffs:
            print("DIFFERENT", d)
        print(f"{'identical' if not diffs else f'{len(diffs)} differences'}: {args.compare[0]} vs {args.compare[1]}")
        return 1 if diffs else 0
    if not args.out:
        ap.error("give OUT.json, or --compare BEFORE AFTER")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.workdir or tmp)
        fp = fingerprint(work)
    Path(args.out).write_text(json.dumps(fp, indent=1, sort_keys=True) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
