"""``grokscope export RUN|SWEEP --format csv|parquet [--out DIR]``: a run's metrics and analysis tables, or a
sweep's index, as CSV or Parquet files for pandas, R, spreadsheets.

A run gives ``metrics`` (one row per logged step, one column per metric: ``Run.metrics`` with its index as
the first column ``step``) and, when ``analysis.json`` exists, one ``analysis_<table>`` file per table of
:func:`analysis_tables`. A sweep gives ``index`` (``grokscope.load_sweep(DIR)``). Files go to ``DIR/export/``
unless ``--out`` says otherwise; each is written atomically. Parquet needs pyarrow (``grokscope[parquet]``).
"""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from grokscope.analysis.run import ANALYSIS_FILE
from grokscope.cli_args import UserError
from grokscope.store import Run, RunError, atomic_write_bytes, is_run_dir
from grokscope.sweep.index import load_sweep
from grokscope.sweep.layout import is_sweep_dir

__all__ = ["FORMATS", "analysis_tables", "cmd_export", "export", "register", "run_tables", "sweep_tables"]

FORMATS = ("csv", "parquet")


class ExportError(ValueError):
    """Bad export input (not a run or sweep, unusable --out, missing pyarrow); one line."""


# --------------------------------------------------------------------------- tables (pure: dicts in, frames out)


def _cell(v: Any) -> Any:
    """A scalar a CSV or Parquet column holds: lists and dicts as JSON text."""
    return json.dumps(v) if isinstance(v, (list, tuple, dict)) else v


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def analysis_tables(data: dict[str, Any]) -> dict[str, pd.DataFrame]:
    """The tables of an analysis.json dict, as DataFrames keyed by table name:

    - ``summary``: one row; p, arch, formula, step, key frequencies, the losses, Gini, FFS/FCR, neuron counts, logit FVE
    - ``frequencies``: one row per frequency k: |W_E_k|, |W_L_k|, ``key``, neurons in its cluster, logit alpha_k
    - ``key_frequencies``: one row per (rule, frequency)
    - ``neurons``: one row per MLP neuron: its frequency, FVE (3x3 block and quadratic), ``clustered``
    - ``ablations``, ``attention``, ``star``: their records; ``table5``: the paper's Table 5 row; ``phases``: one row
    Tables the analysis does not have (an empty list, no phases) are left out."""
    out: dict[str, pd.DataFrame] = {}
    neurons = data.get("neurons") or {}
    logit = data.get("logit_fit") or {}
    keys = [int(k) for k in data.get("key_frequencies") or []]

    summary: dict[str, Any] = {k: data.get(k) for k in ("p", "arch", "formula", "step", "key_freq_rule")}
    summary["key_frequencies"] = json.dumps(keys)
    summary.update({k: _num(v) for k, v in (data.get("losses") or {}).items()})
    for k in ("gini_W_E", "gini_W_L", "sum_sq_weights", "ffs", "fcr", "W_L_residual_fraction"):
        if k in data:
            summary[k] = _num(data[k])
    for k in ("threshold", "n_explained", "n_explained_quadratic", "n_unclustered", "n_neurons"):
        if k in neurons:
            summary[f"neurons_{k}"] = neurons[k]
    for k in ("fve", "fit_loss", "fit_acc"):
        if k in logit:
            summary[f"logit_{k}"] = _num(logit[k])
    out["summary"] = pd.DataFrame([summary])

    we, wl = data.get("W_E_frequency_norms") or [], data.get("W_L_frequency_norms") or []
    if we or wl:
        n = max(len(we), len(wl))
        clusters = {int(k): int(v) for k, v in (neurons.get("clusters") or {}).items()}
        alpha = {int(k): v for k, v in (logit.get("alpha") or {}).items()}
        sin_c = {int(k): v for k, v in (logit.get("sin_coefficient") or {}).items()}
        ks = range(1, n + 1)
        out["frequencies"] = pd.DataFrame(
            {
                "frequency": list(ks),
                "W_E_norm": [_num(we[k - 1]) if k <= len(we) else math.nan for k in ks],
                "W_L_norm": [_num(wl[k - 1]) if k <= len(wl) else math.nan for k in ks],
                "key": [k in keys for k in ks],
                "cluster_neurons": [clusters.get(k, 0) for k in ks],
                "logit_alpha": [_num(alpha.get(k)) for k in ks],
                "logit_sin_coefficient": [_num(sin_c.get(k)) for k in ks],
            }
        )

    by_rule = data.get("key_frequencies_by_rule") or {}
    chosen = data.get("key_freq_rule")
    rows = [{"rule": rule, "frequency": int(k), "chosen": rule == chosen}
            for rule, freqs in by_rule.items() for k in freqs]
    if rows:
        out["key_frequencies"] = pd.DataFrame(rows, columns=["rule", "frequency", "chosen"])

    if neurons.get("fve"):
        thr = neurons.get("threshold", math.nan)
        fve = [_num(v) for v in neurons["fve"]]
        out["neurons"] = pd.DataFrame(
            {
                "neuron": range(len(fve)),
                "frequency": neurons.get("frequency") or [None] * len(fve),
                "fve": fve,
                "fve_quadratic": [_num(v) for v in neurons.get("fve_quadratic") or [None] * len(fve)],
                "clustered": [v >= thr for v in fve],
            }
        )

    for name in ("ablations", "attention", "star"):
        records = data.get(name) or []
        if records:
            out[name] = pd.DataFrame([{k: _cell(v) for k, v in r.items()} for r in records])
    for name in ("table5", "phases"):
        if data.get(name):
            out[name] = pd.DataFrame([{k: _cell(v) for k, v in data[name].items()}])
    return out


# --------------------------------------------------------------------------- runs and sweeps


def run_tables(run_dir: Path | str) -> dict[str, pd.DataFrame]:
    """``{"metrics": frame with column step, "analysis_<table>": ...}`` of a run directory (raises RunError)."""
    run = Run(run_dir)
    tables = {"metrics": run.metrics.reset_index()}
    if (run.dir / ANALYSIS_FILE).is_file():
        data = run.read_json(ANALYSIS_FILE)
        if not isinstance(data, dict):
            raise ExportError(f"{run.dir / ANALYSIS_FILE}: not an analysis (expected a JSON object)")
        tables |= {f"analysis_{k}": v for k, v in analysis_tables(data).items()}
    return tables


def sweep_tables(sweep_dir: Path | str) -> dict[str, pd.DataFrame]:
    """``{"index": load_sweep(sweep_dir)}``."""
    return {"index": load_sweep(sweep_dir)}


def _parquet_ready(df: Any) -> Any:
    """A copy whose object columns Arrow can store: a column of mixed types (or lists) becomes JSON text."""
    import pyarrow as pa

    df = df.copy()
    for col in df.columns:
        if df[col].dtype == object:
            try:
                pa.array(df[col], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                df[col] = [None if v is None else json.dumps(v) if not isinstance(v, str) else v for v in df[col]]
    return df


def _encode(df: Any, fmt: str) -> bytes:
    if fmt == "csv":
        return df.to_csv(index=False).encode()
    buf = io.BytesIO()
    _parquet_ready(df).to_parquet(buf, index=False, engine="pyarrow")
    return buf.getvalue()


def export(path: Path | str, fmt: str = "csv", out: Path | str | None = None) -> list[Path]:
    """Write the tables of a run or sweep directory as ``fmt`` files into ``out`` (default ``path/export``);
    returns the paths. Everything is read and encoded before the first file is written."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt}: choose from {', '.join(FORMATS)}")
    if fmt == "parquet" and importlib.util.find_spec("pyarrow") is None:
        raise ExportError('--format parquet needs pyarrow: pip install "grokscope[parquet]"')
    if not path.exists():
        raise ExportError(f"{path}: no such directory")
    if not path.is_dir():
        raise ExportError(f"{path}: not a directory; give a run or sweep directory")
    if is_run_dir(path):
        tables = run_tables(path)
    elif is_sweep_dir(path):
        tables = sweep_tables(path)
    else:
        raise RunError(f"{path}: neither a run (no config.json) nor a sweep (no sweep.json)")
    out = Path(out) if out is not None else path / "export"
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory")
    blobs = {out / f"{name}.{fmt}": _encode(df, fmt) for name, df in tables.items()}
    try:
        out.mkdir(parents=True, exist_ok=True)
        for p, data in blobs.items():
            atomic_write_bytes(p, data)
    except OSError as e:
        raise ExportError(f"--out {out}: cannot write ({e.strerror or e})") from None
    return list(blobs)


# --------------------------------------------------------------------------- CLI


def register(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "export",
        help="a run's metrics and analysis tables, or a sweep's index, as CSV or Parquet",
        description="Write a run's metrics (one row per logged step, one column per metric) and, if analysis.json "
        "exists, its tables; or a sweep directory's index. Files go to DIR/export/ unless --out is given.",
    )
    p.add_argument("path", type=Path, metavar="RUN|SWEEP", help="a run or sweep directory")
    p.add_argument("--format", default="csv", choices=FORMATS,
                   help="file format (parquet needs pyarrow; default csv)")
    p.add_argument("--out", type=Path, metavar="DIR",
                   help="directory for the files (default RUN/export or SWEEP/export)")
    p.set_defaults(func=cmd_export)
    return p


def cmd_export(args: argparse.Namespace) -> int:
    try:
        paths = export(args.path, args.format, args.out)
    except ExportError as e:
        raise UserError(str(e)) from None
    for p in paths:
        print(p)
    return 0
