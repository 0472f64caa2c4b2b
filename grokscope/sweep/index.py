"""The sweep index: one SQLite row per cell (its axis values, status and outcome), and its DataFrame / CSV.

Table ``cells`` has fixed columns (name, position, seed, status, phase, train_epoch, test_epoch, gap,
grok_epoch, ..., final_test_acc, param_norm (sqrt of the last sum_sq_weights), seconds, point JSON, final JSON).
View ``grid`` adds one column per axis field (``"optim.weight_decay"``), so the index can be queried with any
SQLite client::

    sqlite3 SWEEP/index.sqlite "SELECT \\"optim.weight_decay\\", phase, count(*) FROM grid GROUP BY 1, 2"

The index is derived data: :func:`refresh_index` rebuilds it from the cells' run directories.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from grokscope.measures.names import SUM_SQ_WEIGHTS
from grokscope.store.run import CONFIG, Run
from grokscope.sweep.layout import SweepDir, SweepError, is_sweep_dir
from grokscope.sweep.outcome import BASIC_COLUMNS, PHASES, Outcome, liu_phase, outcome_from_frame
from grokscope.sweep.spec import Cell, OutcomeParams, SweepSpec, expand

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["SweepIndex", "aggregate_seeds", "load_sweep", "read_cell_outcome", "refresh_index", "reclassify"]

_COLUMNS = [
    ("name", "TEXT PRIMARY KEY"),
    ("position", "INTEGER"),
    ("seed", "INTEGER"),
    ("status", "TEXT"),
    ("phase", "TEXT"),
    ("train_epoch", "INTEGER"),
    ("test_epoch", "INTEGER"),
    ("gap", "INTEGER"),
    ("grok_epoch", "INTEGER"),
    ("train_fit_epoch", "INTEGER"),
    ("last_epoch", "INTEGER"),
    ("budget", "INTEGER"),
    ("tau", "INTEGER"),
    ("threshold", "REAL"),
    ("final_train_acc", "REAL"),
    ("final_test_acc", "REAL"),
    ("final_train_loss", "REAL"),
    ("final_test_loss", "REAL"),
    ("param_norm", "REAL"),
    ("seconds", "REAL"),
    ("executor", "TEXT"),
    ("error", "TEXT"),
    ("point", "TEXT"),
    ("final", "TEXT"),
    ("updated", "REAL"),
]
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS cells ({", ".join(f"{n} {t}" for n, t in _COLUMNS)});
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
"""


class SweepIndex:
    """The SQLite index of a sweep (``SWEEP/index.sqlite``). Only the sweep driver writes it."""

    def __init__(self, path: Path | str, *, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            if not self.path.is_file():
                raise FileNotFoundError(self.path)
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        else:
            self.conn = sqlite3.connect(self.path, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.executescript(_SCHEMA)
            self._add_missing_columns()

    def _add_missing_columns(self) -> None:
        """Columns added since an index was written (``param_norm``) are appended to its ``cells`` table."""
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(cells)").fetchall()}
        with self.conn:
            for name, kind in _COLUMNS:
                if name not in have:
                    self.conn.execute(f"ALTER TABLE cells ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> SweepIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- writing
    def set_axes(self, fields: Sequence[str]) -> None:
        """Record the axis fields and (re)create the ``grid`` view with one column per field."""
        cols = ", ".join(f"json_extract(point, '$.\"{f}\"') AS \"{f}\"" for f in fields)
        with self.conn:
            self.conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('axes', ?)",
                              (json.dumps(list(fields)),))
            self.conn.execute("DROP VIEW IF EXISTS grid")
            self.conn.execute(f"CREATE VIEW grid AS SELECT {cols + ', ' if cols else ''}* FROM cells")

    def set_meta(self, values: dict[str, Any]) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                  [(k, json.dumps(v)) for k, v in values.items()])

    def meta(self) -> dict[str, Any]:
        return {k: json.loads(v) for k, v in self.conn.execute("SELECT key, value FROM meta").fetchall()}

    def upsert(
        self,
        cell: Cell,
        *,
        status: str,
        outcome: Outcome | None = None,
        seconds: float | None = None,
        executor: str = "",
        error: str = "",
    ) -> None:
        """Write (or replace) the row of ``cell``."""
        o = outcome
        final = o.final if o is not None else {}
        row = {
            "name": cell.name,
            "position": cell.position,
            "seed": cell.seed,
            "status": status,
            "phase": o.phase if o is not None else None,
            "train_epoch": o.train_epoch if o else None,
            "test_epoch": o.test_epoch if o else None,
            "gap": o.gap if o else None,
            "grok_epoch": o.grok_epoch if o else None,
            "train_fit_epoch": o.train_fit_epoch if o else None,
            "last_epoch": o.last_epoch if o else None,
            "budget": o.budget if o else None,
            "tau": o.tau if o else None,
            "threshold": o.threshold if o else None,
            **{f"final_{name}": final.get(name) for name in BASIC_COLUMNS},
            "param_norm": _param_norm(final),
            "seconds": seconds,
            "executor": executor,
            "error": error,
            "point": json.dumps({k: _jsonable(v) for k, v in cell.point}),
            "final": json.dumps({k: v for k, v in final.items() if math.isfinite(v)}),
            "updated": time.time(),
        }
        columns = list(row)
        with self.conn:
            self.conn.execute(f"INSERT OR REPLACE INTO cells ({', '.join(columns)}) "
                              f"VALUES ({', '.join('?' * len(columns))})", [row[c] for c in columns])

    def get(self, name: str) -> dict | None:
        cur = self.conn.execute("SELECT * FROM cells WHERE name = ?", (name,))
        r = cur.fetchone()
        return None if r is None else dict(zip([d[0] for d in cur.description], r))

    def delete_except(self, names: Iterable[str]) -> int:
        """Drop rows of cells that are no longer in the spec (their run directories stay on disk)."""
        keep = set(names)
        gone = [n for (n,) in self.conn.execute("SELECT name FROM cells").fetchall() if n not in keep]
        with self.conn:
            self.conn.executemany("DELETE FROM cells WHERE name = ?", [(n,) for n in gone])
        return len(gone)

    # -- reading
    def query(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Any SQL over ``cells`` / ``grid`` / ``meta`` as a DataFrame."""
        import pandas as pd

        cur = self.conn.execute(sql, tuple(params))
        return pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])

    def frame(self) -> pd.DataFrame:
        """One row per cell, ordered as the spec expands: ``name, seed``, one column per axis field, the status
        and outcome columns, then ``final_<metric>`` for every metric's last value (progress measures included)."""
        import pandas as pd

        axes = self.meta().get("axes", [])
        raw = self.query("SELECT * FROM cells ORDER BY position")
        if raw.empty:
            return pd.DataFrame(columns=["name", "seed", *axes, "status", "phase"])
        points = [json.loads(p) for p in raw["point"]]
        finals = [json.loads(f) for f in raw["final"]]
        df = raw.drop(columns=["point", "final", "updated"])
        for f in axes:
            df.insert(df.columns.get_loc("status"), f, [p.get(f) for p in points])
        extra = sorted({k for fin in finals for k in fin} - set(BASIC_COLUMNS))
        for k in extra:
            df[f"final_{k}"] = [fin.get(k, math.nan) for fin in finals]
        for col in ("train_epoch", "test_epoch", "gap", "grok_epoch", "train_fit_epoch", "last_epoch", "budget", "tau",
                    "seed", "position"):
            df[col] = df[col].astype("Int64")
        return df.drop(columns=["position"]).reset_index(drop=True)

    def to_csv(self, path: Path | str) -> Path:
        path = Path(path)
        self.frame().to_csv(path, index=False)
        return path


def _jsonable(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def _param_norm(final: dict[str, float]) -> float | None:
    """||theta||_2 at the last measurement: sqrt of the last ``sum_sq_weights`` (None when the measures did not run).
    Under ``optim.fixed_norm`` it is the norm the run was held at (its initial norm, set by ``model.init_scale``)."""
    v = final.get(SUM_SQ_WEIGHTS)
    return math.sqrt(v) if v is not None and math.isfinite(v) and v >= 0 else None


# --------------------------------------------------------------------------- reading runs


def read_cell_outcome(run_dir: Path | str, params: OutcomeParams) -> tuple[str, Outcome | None, float | None]:
    """(status, outcome, training seconds) of a cell's run directory. The outcome is None while nothing is logged."""
    run = Run(run_dir)
    meta = run.meta
    status = meta.get("status", "new")
    m = run.metrics
    seconds = float(meta["train_seconds"]) if meta.get("train_seconds") else None
    if m.empty:
        return status, None, seconds
    o = outcome_from_frame(
        m,
        epochs=run.config.train.epochs,
        threshold=params.threshold,
        tau=params.tau,
        budget=params.budget,
        grok_threshold=params.grok_threshold,
    )
    return status, o, seconds


def refresh_index(sweep_dir: Path | str, spec: SweepSpec | None = None) -> Path:
    """Rebuild ``index.sqlite`` from the cells' run directories (cells not on disk get status 'missing')."""
    sd = SweepDir(sweep_dir)
    spec = spec or sd.read_spec()
    cells = expand(spec)
    with SweepIndex(sd.index_path) as index:
        index.set_axes(spec.axis_fields)
        for cell in cells:
            d = sd.cell_dir(cell.name)
            if (d / CONFIG).is_file():
                status, o, secs = read_cell_outcome(d, spec.outcome)
                old = index.get(cell.name) or {}
                index.upsert(cell, status=status, outcome=o, seconds=old.get("seconds", secs),
                             executor=old.get("executor") or "")
            else:
                index.upsert(cell, status="missing")
        index.delete_except(c.name for c in cells)
    return sd.index_path


def load_sweep(sweep_dir: Path | str, *, refresh: bool = False) -> pd.DataFrame:
    """The index of a sweep directory as a DataFrame (rebuilt from the runs when missing or ``refresh``)."""
    sd = SweepDir(sweep_dir)
    if not is_sweep_dir(sd.path):
        raise SweepError(
            f"{sd.path}: not a sweep directory (no sweep.json); make one with 'grokscope sweep SPEC --out DIR'")
    if refresh or not sd.index_path.is_file():
        refresh_index(sd.path)
    with SweepIndex(sd.index_path, readonly=True) as index:
        return index.frame()


# --------------------------------------------------------------------------- pure helpers on the frame


def reclassify(df: pd.DataFrame, *, tau: int | None = None, budget: int | None = None) -> pd.DataFrame:
    """A copy of ``df`` with ``phase`` (and ``gap``) recomputed for another gap threshold and/or a shorter budget.

    ``tau`` None keeps each row's tau. The stored epochs are those within the sweep's budget, so ``budget`` may
    shrink it but not extend it."""
    out = df.copy()
    phases, gaps, taus, budgets = [], [], [], []
    for _, r in out.iterrows():
        read_with = r.get("budget")
        if read_with is None or (isinstance(read_with, float) and math.isnan(read_with)) or str(read_with) == "<NA>":
            phases.append(r.get("phase"))
            gaps.append(r.get("gap"))
            taus.append(r.get("tau"))
            budgets.append(read_with)
            continue
        row_budget = int(read_with) if budget is None else int(budget)
        if row_budget > int(read_with):
            raise ValueError(f"budget {row_budget} exceeds the budget the sweep was read with ({int(read_with)}); "
                             "re-read the runs instead")
        train = _opt_int(r.get("train_epoch"))
        test = _opt_int(r.get("test_epoch"))
        train = train if train is not None and train <= row_budget else None
        test = test if test is not None and test <= row_budget else None
        row_tau = int(tau) if tau is not None else int(r["tau"])
        phases.append(liu_phase(train, test, row_tau, row_budget))
        gaps.append(None if train is None or test is None else test - train)
        taus.append(row_tau)
        budgets.append(row_budget)
    out["phase"], out["gap"], out["tau"], out["budget"] = phases, gaps, taus, budgets
    for col in ("gap", "tau", "budget"):
        out[col] = out[col].astype("Int64")
    return out


def _opt_int(v: Any) -> int | None:
    if v is None or str(v) == "<NA>" or (isinstance(v, float) and math.isnan(v)):
        return None
    return int(v)


def aggregate_seeds(df: pd.DataFrame, by: Sequence[str],
                    metrics: Sequence[str] = ("grok_epoch", "gap", "final_test_acc")) -> pd.DataFrame:
    """One row per point of ``by`` (axis fields): ``n`` seeds, the count of each phase, the majority ``phase``
    (ties broken in the order comprehension, grokking, memorisation, confusion; None when no seed has one) and
    for each metric its mean, std, min, max and ``<metric>_n`` (how many seeds have a value; a cell that never
    groks has no grok epoch)."""
    import pandas as pd

    df = df.copy()
    for c in by:  # list values (tuple fields such as optim.betas) cannot be grouped; tuples can
        df[c] = [tuple(v) if isinstance(v, list) else v for v in df[c]]
    rows = []
    for key, g in df.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        row: dict[str, Any] = dict(zip(by, key))
        row["n"] = len(g)
        counts = {p: int((g["phase"] == p).sum()) for p in PHASES}
        row.update({f"n_{p}": c for p, c in counts.items()})
        best = max(PHASES, key=lambda p: (counts[p], -PHASES.index(p)))
        row["phase"] = best if counts[best] > 0 else None
        row["phase_agreement"] = counts[best] / len(g) if counts[best] else math.nan
        for m in metrics:
            if m not in g:
                continue
            vals = pd.to_numeric(g[m], errors="coerce").astype("float64").dropna()
            row[f"{m}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{m}_std"] = float(vals.std(ddof=0)) if len(vals) else math.nan
            row[f"{m}_min"] = float(vals.min()) if len(vals) else math.nan
            row[f"{m}_max"] = float(vals.max()) if len(vals) else math.nan
            row[f"{m}_n"] = int(len(vals))
        rows.append(row)
    return pd.DataFrame(rows)
