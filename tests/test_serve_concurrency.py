"""The viewer while runs are being written: reads during an open SQLite write transaction, around a checkpoint's
atomic write (temporary file, then rename), from a half-created run directory, and from several clients at once
while a writer logs rows. Every answer must be a valid response (no 500, no traceback) showing a committed state.

Writers and readers take turns by counting (after some writes the writer waits until a client has read the new
state), so the interleavings happen whatever the machine's speed; timeouts only bound a hang.
"""

from __future__ import annotations

import http.client
import json
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

pytest.importorskip("plotly")

from figure_runs import copy_run  # noqa: E402

from grokscope.serve import make_server  # noqa: E402
from grokscope.store.files import atomic_write_bytes  # noqa: E402
from grokscope.store.metrics import MetricsDB  # noqa: E402

LIVE = ("train_loss", "train_acc", "test_loss", "test_acc")
HANG = 300.0  # seconds: only a hang takes this long


@pytest.fixture
def served(tmp_path, capfd):
    """A viewer over a copy of the tiny run (30 epochs, logged every 5) at runs/live. Checks, at the end, that no
    request left a traceback on the server's stderr."""
    root = tmp_path / "runs"
    copy_run("tiny", root / "live")
    srv = make_server(root, port=0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield root, srv
    srv.shutdown()
    srv.server_close()
    assert "Traceback" not in capfd.readouterr().err


def get(srv, path: str) -> tuple[int, str]:
    host, port = srv.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=HANG)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def ok(srv, path: str) -> str:
    status, body = get(srv, path)
    assert status == 200 and "Traceback" not in body, (path, status, body[:500])
    return body


def ok_json(srv, path: str):
    return json.loads(ok(srv, path))


def run_row(srv, run_id: str) -> dict:
    return next(r for r in ok_json(srv, "/api/runs") if r["id"] == run_id)


def values_at(step: int) -> dict[str, float]:
    """What the test's writer logs at ``step`` (> 30): a reader can tell every value it sees is the committed one."""
    return {"train_loss": 1.0 / step, "train_acc": step / 1000.0, "test_loss": 2.0 / step, "test_acc": step / 2000.0}


def stored(run_dir: Path) -> dict[int, dict[str, float | None]]:
    conn = sqlite3.connect(f"file:{run_dir / 'metrics.sqlite'}?mode=ro", uri=True)
    try:
        out: dict[int, dict[str, float | None]] = {}
        for step, name, value in conn.execute("SELECT step, name, value FROM metrics WHERE name IN (?, ?, ?, ?)", LIVE):
            out.setdefault(step, {})[name] = value
        return dict(sorted(out.items()))
    finally:
        conn.close()


def as_rows(payload: dict) -> dict[int, dict[str, float | None]]:
    return {s: {n: payload["columns"][n][i] for n in LIVE} for i, s in enumerate(payload["steps"])}


def test_reads_during_an_open_write_transaction_see_the_last_commit(served):
    root, srv = served
    committed = stored(root / "live")
    assert list(committed) == list(range(0, 31, 5))
    ok(srv, "/run/live")  # (built once before the transaction; the page must still answer while it is open)
    conn = sqlite3.connect(root / "live" / "metrics.sqlite", timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")  # the write lock, as MetricsDB.log holds it inside its transaction
        conn.executemany(
            "INSERT OR REPLACE INTO metrics (step, name, value) VALUES (?, ?, ?)",
            [(35, k, v) for k, v in values_at(35).items()],
        )
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('status', 'running')")
        during = ok_json(srv, "/api/run/live/metrics")
        assert during["status"] == "completed" and during["epoch"] == 30 and as_rows(during) == committed
        assert ok_json(srv, "/api/run/live/metrics?since=30")["steps"] == []
        row = run_row(srv, "live")
        assert (row["status"], row["epoch"], row["test_acc"]) == ("completed", 30, committed[30]["test_acc"])
        header = ok_json(srv, "/api/run/live/header")
        assert (header["status"], header["epoch"]) == ("completed", 30)
        assert 'data-run="live"' in ok(srv, "/") and "GROKSCOPE_LIVE" in ok(srv, "/run/live")
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()
    after = ok_json(srv, "/api/run/live/metrics")
    assert after["status"] == "running" and after["steps"][-1] == 35 and as_rows(after)[35] == values_at(35)


def test_reads_around_a_checkpoint_write_see_only_complete_checkpoints(served):
    root, srv = served
    ckpts = root / "live" / "checkpoints"
    n0 = ok_json(srv, "/api/run/live/header")["checkpoints"]
    last = max(ckpts.glob("step_*.safetensors"))
    data = last.read_bytes()
    # a temporary file half written, then complete but not yet renamed: the run still has n0 checkpoints
    for part in (data[: len(data) // 2], data):
        tmp = ckpts / ".step_00000040.safetensors.x1y2z3.tmp"
        tmp.write_bytes(part)
        assert ok_json(srv, "/api/run/live/header")["checkpoints"] == n0
        assert run_row(srv, "live")["checkpoints"] == n0
        assert "GROKSCOPE_LIVE" in ok(srv, "/run/live")
    tmp.rename(ckpts / "step_00000040.safetensors")  # the rename: the new checkpoint appears whole
    assert ok_json(srv, "/api/run/live/header")["checkpoints"] == n0 + 1
    assert run_row(srv, "live")["checkpoints"] == n0 + 1
    assert "GROKSCOPE_LIVE" in ok(srv, "/run/live")

    # the store's own atomic write of further checkpoints while clients read the run page, header and list
    reads = Counter()
    errors: list[str] = []
    counts: set[int] = set()
    done = threading.Event()

    def client() -> None:
        try:
            while not done.is_set():
                for path in ("/api/run/live/header", "/api/runs", "/run/live"):
                    status, body = get(srv, path)
                    if status != 200 or "Traceback" in body:
                        errors.append(f"{path}: {status} {body[:300]}")
                    if path == "/api/run/live/header" and status == 200:
                        n = json.loads(body)["checkpoints"]
                        counts.add(n)
                        if not n0 + 1 <= n <= n0 + 4:
                            errors.append(f"header: {n} checkpoints")
                reads.add()
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(f"{type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for step in (50, 60, 70):
            atomic_write_bytes(ckpts / f"step_{step:08d}.safetensors", data)
            reads.wait_for_a_round_after(len(threads))  # a client read this state before the next write
    finally:
        done.set()
        for t in threads:
            t.join(timeout=HANG)
    assert not errors, errors[:5]
    assert counts >= {n0 + 2, n0 + 3, n0 + 4}  # each state between the renames was read
    assert ok_json(srv, "/api/run/live/header")["checkpoints"] == n0 + 4
    assert not list(ckpts.glob("*.tmp"))


class Counter:
    """A thread-safe count that can be waited on."""

    def __init__(self) -> None:
        self.value = 0
        self._cond = threading.Condition()

    def add(self) -> None:
        with self._cond:
            self.value += 1
            self._cond.notify_all()

    def wait_for_a_round_after(self, clients: int) -> None:
        """Wait until some client has completed a round that began after this call: each client completes at most
        one round begun before it, so clients + 1 more completions hold one begun after."""
        with self._cond:
            n = self.value + clients + 1
            assert self._cond.wait_for(lambda: self.value >= n, timeout=HANG), f"readers stuck at {self.value} < {n}"


@pytest.mark.parametrize("state", ["config-only", "empty-database", "schema-only"])
def test_a_half_created_run_is_listed_and_served(served, state):
    """A run directory caught while it is being created: config.json only; then a metrics.sqlite of 0 bytes;
    then the schema without rows or meta. Each is a run with status 'new' and no epochs, not an error."""
    root, srv = served
    half = root / "half"
    half.mkdir()
    shutil.copy(root / "live" / "config.json", half / "config.json")
    if state == "empty-database":
        (half / "metrics.sqlite").write_bytes(b"")
    elif state == "schema-only":
        MetricsDB(half / "metrics.sqlite").close()
    row = run_row(srv, "half")
    assert (row["status"], row["epoch"], row.get("error")) == ("new", None, None), row
    payload = ok_json(srv, "/api/run/half/metrics")
    assert (payload["status"], payload["steps"], payload["epoch"]) == ("new", [], 0)
    assert all(v == [] for v in payload["columns"].values())
    header = ok_json(srv, "/api/run/half/header")
    assert (header["status"], header["epoch"], header["checkpoints"]) == ("new", 0, 0)
    assert 'data-run="half"' in ok(srv, "/")
    assert "GROKSCOPE_LIVE" in ok(srv, "/run/half")
    assert run_row(srv, "live")["status"] == "completed"  # the other run is untouched by its neighbour's state


def test_several_clients_read_consistent_states_while_a_writer_logs(served):
    """A writer logs epochs 31..60 one transaction each (MetricsDB.log, as training does) while four clients poll
    the live JSON and the run list. Every answer is the committed rows of some moment: the original epochs plus
    31..k with no gap, every value the one written, k never going back for a client."""
    root, srv = served
    run_dir = root / "live"
    original = stored(run_dir)
    steps_written = list(range(31, 61))
    reads = Counter()
    errors: list[str] = []
    seen: set[int] = set()
    done = threading.Event()

    def check(payload: dict, k_prev: int, where: str) -> int:
        rows = as_rows(payload)
        new = [s for s in rows if s > 30]
        k = new[-1] if new else 30
        if {s: v for s, v in rows.items() if s <= 30} != original or new != list(range(31, k + 1)):
            errors.append(f"{where}: steps {list(rows)}")
        if any(rows[s] != values_at(s) for s in new):
            errors.append(f"{where}: values {[(s, rows[s]) for s in new if rows[s] != values_at(s)][:3]}")
        if k < k_prev:
            errors.append(f"{where}: went back from epoch {k_prev} to {k}")
        seen.add(k)
        return k

    def client(i: int) -> None:
        k = 30
        try:
            while True:
                last_round = done.is_set()
                k = check(ok_json(srv, "/api/run/live/metrics"), k, f"client {i}")
                since = ok_json(srv, "/api/run/live/metrics?since=30")
                if since["steps"] and since["steps"] != list(range(31, since["steps"][-1] + 1)):
                    errors.append(f"client {i}: since=30 gave {since['steps']}")
                row = run_row(srv, "live")
                if row["status"] not in ("completed", "running") or row["epoch"] < k:
                    errors.append(f"client {i}: run list says {row['status']} epoch {row['epoch']} after epoch {k}")
                reads.add()
                if last_round:
                    break
        except Exception as e:  # noqa: BLE001 - reported by the test
            errors.append(f"client {i}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        with MetricsDB(run_dir / "metrics.sqlite") as db:
            db.set_meta({"status": "running"})
            for step in steps_written:
                db.log(step, values_at(step))
                if step % 3 == 0:  # readers in between writes, whatever the machine's speed
                    reads.wait_for_a_round_after(len(threads))
            db.set_meta({"status": "completed"})
    finally:
        done.set()
        for t in threads:
            t.join(timeout=HANG)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[:5]
    assert seen >= set(range(33, 61, 3))  # the writer waited at each of these epochs until a client had read it
    final = ok_json(srv, "/api/run/live/metrics")
    assert final["status"] == "completed" and final["steps"][-1] == 60
    assert as_rows(final) == {**original, **{s: values_at(s) for s in steps_written}}
