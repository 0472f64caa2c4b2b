"""The metrics database: SQLite, one row per (step, metric); every write is one transaction."""

from __future__ import annotations

import contextlib
import errno
import math
import sqlite3
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from grokscope.store.errors import DamagedFileError, StoreWriteError

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
    """A run's metrics. ``log(step, {name: value})`` writes a whole step atomically (non-finite values as NULL).

    A write that fails (a full disk, a read-only folder) raises :class:`StoreWriteError` naming the database;
    SQLite rolls the transaction back, so the stored rows are as before. Opening a damaged database for writing
    raises :class:`DamagedFileError`."""

    def __init__(self, path: Path, *, readonly: bool = False):
        self.path = Path(path)
        if readonly:
            self.conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30)
            return
        with self._writing():
            self.conn = sqlite3.connect(self.path, timeout=30)
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(SCHEMA)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Turn SQLite's write failures into the store's one-line errors."""
        try:
            yield
        except sqlite3.OperationalError as e:
            text = str(e)
            if "full" in text:
                code, reason = errno.ENOSPC, f"No space left on device (SQLite: {text})"
            else:
                code, reason = (errno.EROFS if "readonly" in text else errno.EIO), f"SQLite: {text}"
            raise StoreWriteError(self.path, OSError(code, reason)) from None
        except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
            raise self._damaged(str(e)) from None

    def check(self) -> None:
        """Raise :class:`DamagedFileError` unless SQLite's ``quick_check`` passes and both tables are readable."""
        try:
            rows = self.conn.execute("PRAGMA quick_check").fetchall()
            for table in self._tables():
                self.conn.execute(f"SELECT count(*) FROM {table}").fetchall()
        except sqlite3.DatabaseError as e:
            raise self._damaged(str(e)) from None
        if rows != [("ok",)]:
            first = str(rows[0][0]).splitlines()[0][:120] if rows else "no answer"
            raise self._damaged(f"SQLite quick_check: {first}")

    def _damaged(self, detail: str) -> DamagedFileError:
        return DamagedFileError(self.path, f"{self.path}: damaged metrics database ({detail})", detail)

    def _tables(self) -> set[str]:
        """The tables that exist: none when a full disk stopped the first write of the schema (no rows yet)."""
        names = {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        return names & {"metrics", "meta"}

    def last_step(self) -> int | None:
        if "metrics" not in self._tables():
            return None
        return self.conn.execute("SELECT max(step) FROM metrics").fetchone()[0]

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> MetricsDB:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, step: int, values: Mapping[str, float]) -> None:
        rows = [(int(step), str(k), _finite_or_none(v)) for k, v in values.items()]
        with self._writing(), self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO metrics (step, name, value) VALUES (?, ?, ?)", rows)

    def truncate_after(self, step: int) -> None:
        """Delete every row logged after ``step`` (used when resuming from the state saved at ``step``)."""
        with self._writing(), self.conn:
            self.conn.execute("DELETE FROM metrics WHERE step > ?", (int(step),))

    def rows(self, names: Iterable[str] | None = None) -> list[tuple[int, str, float | None]]:
        if "metrics" not in self._tables():
            return []
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
        with self._writing(), self.conn:
            self.conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", list(values.items()))

    def meta(self) -> dict[str, str]:
        if "meta" not in self._tables():
            return {}
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())


def _finite_or_none(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None
