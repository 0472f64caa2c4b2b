"""The sweep index (``SWEEP/index.sqlite``) read with plain sqlite3 and checked, cell by cell, against the cell's own
run directory: its ``metrics.sqlite`` read with plain sqlite3, its ``config.json`` read with json, and the outcome
rule written out here from the module docstring of :mod:`grokscope.sweep.outcome` (Liu et al.'s phases, the first
logged epoch reaching a threshold within the budget, the last logged value within the budget).

Nothing here goes through grokscope's readers (SweepIndex, load_sweep, read_cell_outcome, outcome_from_*), except
the last test, which checks ``load_sweep``'s DataFrame against the same raw rows.

The sweep is small and quick (6 tiny cells, ~1 s) but chosen to exercise the rule: a budget (45) below the runs'
length (60), thresholds low enough (0.15 / 0.2) that some cells reach test accuracy and some do not, and tau = 20,
which the logged gaps straddle (15: comprehension, 20: grokking at exactly tau, 25: grokking).
"""

from __future__ import annotations

import json
import math
import sqlite3
from pathlib import Path

import pytest

from grokscope.sweep.local import run_sweep
from grokscope.sweep.spec import make_spec

EPOCHS, BUDGET, TAU, THRESHOLD, GROK = 60, 45, 20, 0.15, 0.2
LRS = [1e-3, 1e-2, 3e-2]
SEEDS = 2


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    spec = make_spec(
        name="iv",
        base="tiny",
        set={"train.epochs": EPOCHS},
        axes={"optim.lr": LRS},
        seeds=SEEDS,
        outcome={"tau": TAU, "threshold": THRESHOLD, "grok_threshold": GROK, "budget": BUDGET},
    )
    out = tmp_path_factory.mktemp("iv") / "s"
    res = run_sweep(spec, out, workers=0, progress=False, log=lambda s: None)
    assert not res.errors
    return out


# --------------------------------------------------------------------------- plain readers


def ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def index_table(sweep: Path, table: str) -> list[dict]:
    conn = ro(sweep / "index.sqlite")
    try:
        return [dict(r) for r in conn.execute(f"SELECT * FROM {table}")]
    finally:
        conn.close()


def run_db(run_dir: Path) -> tuple[dict[str, str], dict[int, dict[str, float | None]]]:
    """(meta, {step: {metric: value}}) of a run's metrics.sqlite, steps ascending."""
    conn = ro(run_dir / "metrics.sqlite")
    try:
        meta = {r["key"]: r["value"] for r in conn.execute("SELECT key, value FROM meta")}
        steps: dict[int, dict[str, float | None]] = {}
        for r in conn.execute("SELECT step, name, value FROM metrics"):
            steps.setdefault(int(r["step"]), {})[r["name"]] = r["value"]
    finally:
        conn.close()
    return meta, dict(sorted(steps.items()))


# --------------------------------------------------------------------------- the rule, written out


def first_epoch(steps: dict[int, dict], metric: str, threshold: float) -> int | None:
    for s, v in steps.items():
        if s <= BUDGET and v.get(metric) is not None and v[metric] >= threshold:
            return s
    return None


def expected_row(steps: dict[int, dict]) -> dict:
    train, test = first_epoch(steps, "train_acc", THRESHOLD), first_epoch(steps, "test_acc", THRESHOLD)
    if train is None:
        phase = "confusion"
    elif test is None:
        phase = "memorisation"
    else:
        phase = "grokking" if test - train >= TAU else "comprehension"
    within = [s for s in steps if s <= BUDGET]
    final = {}
    for s in within:  # ascending: the last non-null value within the budget wins
        for name, v in steps[s].items():
            if v is not None and math.isfinite(v):
                final[name] = v
    return {
        "phase": phase,
        "train_epoch": train,
        "test_epoch": test,
        "gap": None if train is None or test is None else test - train,
        "grok_epoch": first_epoch(steps, "test_acc", GROK),
        "train_fit_epoch": first_epoch(steps, "train_acc", GROK),
        "last_epoch": max(within),
        "budget": BUDGET,
        "tau": TAU,
        "threshold": THRESHOLD,
        "final_train_acc": final["train_acc"],
        "final_test_acc": final["test_acc"],
        "final_train_loss": final["train_loss"],
        "final_test_loss": final["test_loss"],
        "final": final,
    }


# --------------------------------------------------------------------------- tests


def test_each_index_row_is_what_the_cells_own_database_says(sweep):
    rows = index_table(sweep, "cells")
    cell_dirs = sorted(d.name for d in (sweep / "cells").iterdir() if (d / "config.json").is_file())
    assert sorted(r["name"] for r in rows) == cell_dirs and len(rows) == len(LRS) * SEEDS
    for row in rows:
        run_dir = sweep / "cells" / row["name"]
        config = json.loads((run_dir / "config.json").read_text())
        meta, steps = run_db(run_dir)
        assert max(steps) == EPOCHS > BUDGET  # the budget cuts the logged run short
        assert row["status"] == meta["status"] == "completed", row["name"]
        assert json.loads(row["point"]) == {"optim.lr": config["optim"]["lr"]}
        assert row["seed"] == config["model"]["init_seed"]
        want = expected_row(steps)
        got = {k: row[k] for k in want if k != "final"}
        assert got == {k: v for k, v in want.items() if k != "final"}, row["name"]
        assert json.loads(row["final"]) == want["final"], row["name"]
        assert row["error"] == ""
    # the positions follow the spec's order (axis values, then seeds) and each seed appears once per point
    ordered = sorted(rows, key=lambda r: r["position"])
    assert [r["position"] for r in ordered] == list(range(len(rows)))
    assert [(json.loads(r["point"])["optim.lr"], r["seed"]) for r in ordered] == [
        (lr, s) for lr in LRS for s in range(SEEDS)
    ]


def test_the_sweep_covers_the_cases_the_rule_distinguishes(sweep):
    """Guards the test above against a sweep too uniform to tell rules apart (e.g. every cell memorising)."""
    rows = index_table(sweep, "cells")
    expected = {r["name"]: expected_row(run_db(sweep / "cells" / r["name"])[1]) for r in rows}
    phases = {e["phase"] for e in expected.values()}
    assert {"grokking", "memorisation"} <= phases, phases
    assert any(e["grok_epoch"] is not None for e in expected.values())
    assert any(e["grok_epoch"] is None and e["test_epoch"] is not None for e in expected.values())
    assert any(e["train_fit_epoch"] != e["train_epoch"] for e in expected.values())


def test_the_grid_view_and_meta_read_with_sqlite3(sweep):
    meta = {r["key"]: json.loads(r["value"]) for r in index_table(sweep, "meta")}
    assert meta["axes"] == ["optim.lr"]
    for r in index_table(sweep, "grid"):
        config = json.loads((sweep / "cells" / r["name"] / "config.json").read_text())
        assert r["optim.lr"] == config["optim"]["lr"]


def test_load_sweep_frame_matches_the_raw_rows(sweep):
    """grokscope's reader against the raw rows: same cells in spec order, same values, the axis column from the
    point JSON and one ``final_<metric>`` column per extra metric of the final JSON."""
    from grokscope.sweep.index import load_sweep

    df = load_sweep(sweep)
    rows = sorted(index_table(sweep, "cells"), key=lambda r: r["position"])
    assert df["name"].tolist() == [r["name"] for r in rows]
    for (_, got), raw in zip(df.iterrows(), rows):
        for col in (
            "status",
            "phase",
            "train_epoch",
            "test_epoch",
            "gap",
            "grok_epoch",
            "train_fit_epoch",
            "last_epoch",
            "final_train_acc",
            "final_test_acc",
            "final_train_loss",
            "final_test_loss",
            "seed",
        ):
            v = got[col]
            v = None if v is None or str(v) in ("<NA>", "nan") else v
            assert v == raw[col], (raw["name"], col, v, raw[col])
        assert got["optim.lr"] == json.loads(raw["point"])["optim.lr"]
        for k, v in json.loads(raw["final"]).items():
            if k not in ("train_acc", "test_acc", "train_loss", "test_loss"):
                assert got[f"final_{k}"] == v, (raw["name"], k)
