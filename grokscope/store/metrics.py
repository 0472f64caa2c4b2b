"""The metrics database: SQLite, one row per (step, metric); every write is one transaction."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path
from typing import Iterable, Mapping

SCHEMA = """
CREATE TABLE IF NOT EXISTS metrics (
    step  INTEGER NOT NULL,
    name  TEXT    NOT NULL,
    value REAL,
    PRIMARY KEY (step, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT
);
"""


class MetricsDB:
    """A run's metrics. ``log(step, {name: value})`` writes a whole step atomically (non-finite values as NULL)."""

    def __init__(self, path: Path, *, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
        else:
            self.conn = sqlite3.connect(self.path, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "MetricsDB":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, step: int, values: Mapping[str, float]) -> None:
        rows = [(int(step), str(k), _finite_or_none(v)) for k, v in values.items()]
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO metrics (step, name, value) VALUES (?, ?, ?)", rows)

    def truncate_after(self, step: int) -> None:
        """Delete every row logged after ``step`` (used when resuming from the state saved at ``step``)."""
        with self.conn:
            self.conn.execute("DELETE FROM metrics WHERE step > ?", (int(step),))

    def rows(self, names: Iterable[str] | None = None) -> list[tuple[int, str, float | None]]:
        if names is None:
            cur = self.conn.execute("SELECT step, name, value FROM metrics ORDER BY step, name")
        else:
            names = list(names)
            marks = ",".join("?" * len(names))
            cur = self.conn.execute(
                f"SELECT step, name, value FROM metrics WHERE name IN ({marks}) ORDER BY step, name", names
            )
        return cur.fetchall()

    def set_meta(self, values: Mapping[str, str]) -> None:
        with self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))

    def meta(self) -> dict[str, str]:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())


def _finite_or_none(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None
