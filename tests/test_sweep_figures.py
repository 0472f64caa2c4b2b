"""Sweep figures and the sweep report (``grokscope report SWEEP_DIR``)."""

import base64
import json
import math
import random
import re
import sqlite3
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("plotly")

from grokscope.cli import main  # noqa: E402
from grokscope.sweep.figures import continuous_map, line_plot, phase_bars, phase_map, sweep_figures, wall_time  # noqa: E402
from grokscope.sweep.local import run_sweep  # noqa: E402
from grokscope.sweep.spec import make_spec  # noqa: E402


def frame():
    """A hand-made 2 x 2 x 2-seed sweep frame."""
    rows = []
    for wd in (0.0, 1.0):
        for frac in (0.3, 0.6):
            for seed in (0, 1):
                if wd == 0.0:
                    phase, grok = "memorisation", None
                elif frac == 0.6:
                    phase, grok = "comprehension", 100 + seed * 20
                else:
                    phase, grok = ("grokking", 900) if seed == 0 else ("memorisation", None)
                rows.append(
                    {
                        "name": f"c{len(rows)}",
                        "seed": seed,
                        "optim.weight_decay": wd,
                        "task.train_fraction": frac,
                        "status": "completed",
                        "phase": phase,
                        "grok_epoch": grok,
                        "gap": None if grok is None else grok - 50,
                        "final_test_acc": 1.0 if grok else 0.2 + 0.1 * seed,
                    }
                )
    df = pd.DataFrame(rows)
    df["grok_epoch"] = df["grok_epoch"].astype("Int64")
    df["gap"] = df["gap"].astype("Int64")
    return df


def test_phase_map_majority_and_labels():
    fig = phase_map(frame(), "optim.weight_decay", "task.train_fraction")
    h = fig.data[0]
    assert list(h.x) == ["0", "1"] and list(h.y) == ["0.3", "0.6"]
    # z: phase index (comprehension 0, grokking 1, memorisation 2, confusion 3), rows are y values
    assert [list(r) for r in h.z] == [[2, 1], [2, 0]]  # (wd 1, frac 0.3): 1 grokking, 1 memorisation -> tie: grokking
    assert h.text[0][1] == "G 1/2" and h.text[1][1] == "C 2/2"


def test_continuous_maps_and_never():
    fig = continuous_map(frame(), "optim.weight_decay", "task.train_fraction", "grok_epoch")
    h = fig.data[0]
    assert h.z[0][0] is None and h.text[0][0] == "never"
    assert h.z[1][1] == 110  # median of 100 and 120
    assert h.z[0][1] == 900 and h.text[0][1] == "900 (1/2)"
    acc = continuous_map(frame(), "optim.weight_decay", "task.train_fraction", "final_test_acc").data[0]
    assert acc.z[0][0] == pytest.approx(0.25) and acc.zmin == 0 and acc.zmax == 1


def test_line_plot_and_bars():
    fig = line_plot(frame(), "task.train_fraction", "final_test_acc", group="optim.weight_decay")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["optim.weight_decay=0", "optim.weight_decay=1"]
    assert list(lines[0].y) == pytest.approx([0.25, 0.25]) and list(lines[1].y) == pytest.approx([0.65, 1.0])
    bars = phase_bars(frame(), "optim.weight_decay")
    assert [list(b.y) for b in bars.data] == [[0, 2], [0, 1], [4, 1], [0, 0]]
    keys = [k for k, *_ in sweep_figures(frame(), ["optim.weight_decay", "task.train_fraction"])]
    assert keys[:4] == ["phase-map", "grok-map", "gap-map", "acc-map"]
    assert [k for k, *_ in sweep_figures(frame(), ["optim.weight_decay"])][0] == "phase-bars"


PHASE_ORDER = ["comprehension", "grokking", "memorisation", "confusion"]  # the colour scale's order (tie order too)
WDS, FRACS, SEEDS = (0.0, 0.1, 1.0), (0.3, 0.6), (0, 1, 2)


def random_frame(seed=3):
    """A 3 x 2 x 3-seed frame with random phases, grok epochs (some never) and accuracies."""
    rng = random.Random(seed)
    rows = []
    for wd in WDS:
        for frac in FRACS:
            for s in SEEDS:
                phase = rng.choice(PHASE_ORDER)
                grok = rng.choice([None, rng.randrange(200, 1000)])
                rows.append(
                    {
                        "name": f"r{len(rows)}",
                        "seed": s,
                        "optim.weight_decay": wd,
                        "task.train_fraction": frac,
                        "status": "completed",
                        "phase": phase,
                        "grok_epoch": grok,
                        "gap": None if grok is None else grok - rng.randrange(0, 150),
                        "final_test_acc": round(rng.random(), 3),
                    }
                )
    df = pd.DataFrame(rows)
    df["grok_epoch"] = df["grok_epoch"].astype("Int64")
    df["gap"] = df["gap"].astype("Int64")
    return df


def cell(df, wd, frac, col):
    g = df[(df["optim.weight_decay"] == wd) & (df["task.train_fraction"] == frac)]
    return [
        v for v in g[col].tolist() if v is not None and v is not pd.NA and not (isinstance(v, float) and math.isnan(v))
    ]


def label(v):
    return f"{v:.4g}"


def z_of(trace) -> list[list]:
    return [[None if v is None else float(v) for v in row] for row in trace.z]


def test_phase_map_is_the_majority_of_each_cell():
    df = random_frame()
    h = phase_map(df, "optim.weight_decay", "task.train_fraction").data[0]
    assert list(h.x) == [label(v) for v in WDS] and list(h.y) == [label(v) for v in FRACS]
    for i, frac in enumerate(FRACS):
        for j, wd in enumerate(WDS):
            counts = Counter(cell(df, wd, frac, "phase"))
            top = max(counts.values())
            best = next(p for p in PHASE_ORDER if counts[p] == top)  # ties: the first in PHASE_ORDER
            assert h.z[i][j] == PHASE_ORDER.index(best), (wd, frac, counts)
            assert h.text[i][j] == f"{best[0].upper() if best != 'confusion' else 'X'} {top}/{len(SEEDS)}"


@pytest.mark.parametrize("metric", ["grok_epoch", "gap", "final_test_acc"])
@pytest.mark.parametrize("agg", ["median", "mean", "max"])
def test_continuous_map_is_the_aggregate_of_each_cell(metric, agg):
    df = random_frame()
    h = continuous_map(df, "optim.weight_decay", "task.train_fraction", metric, agg=agg).data[0]
    fn = {"median": statistics.median, "mean": statistics.fmean, "max": max}[agg]
    z = z_of(h)
    seen = 0
    for i, frac in enumerate(FRACS):
        for j, wd in enumerate(WDS):
            vals = [float(v) for v in cell(df, wd, frac, metric)]
            if not vals:
                assert z[i][j] is None and h.text[i][j] == "never"
                continue
            seen += 1
            assert z[i][j] == pytest.approx(fn(vals), rel=1e-12), (wd, frac, vals)
            if len(vals) < len(SEEDS):
                assert h.text[i][j].endswith(f" ({len(vals)}/{len(SEEDS)})"), h.text[i][j]
            else:
                assert "(" not in h.text[i][j]
    assert seen >= 3


def test_continuous_map_log_colour_is_log10_of_the_median():
    df = frame()
    df.loc[df["grok_epoch"].eq(900).fillna(False).astype(bool), "grok_epoch"] = (
        9000  # a span over 30x: the colour is log10
    )
    h = continuous_map(df, "optim.weight_decay", "task.train_fraction", "grok_epoch").data[0]
    assert z_of(h)[0][1] == pytest.approx(math.log10(9000)) and z_of(h)[1][1] == pytest.approx(math.log10(110))
    assert h.text[0][1] == "9000 (1/2)"


def test_line_plot_is_mean_and_min_max_band_over_seeds():
    df = random_frame()
    fig = line_plot(df, "optim.weight_decay", "final_test_acc", group="task.train_fraction")
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    bands = [t for t in fig.data if t.fill == "toself"]
    assert [t.name for t in lines] == [f"task.train_fraction={label(f)}" for f in FRACS] and len(bands) == len(FRACS)
    for line, band, frac in zip(lines, bands, FRACS):
        vals = [[float(v) for v in cell(df, wd, frac, "final_test_acc")] for wd in WDS]
        assert list(line.x) == list(WDS)
        assert list(line.y) == pytest.approx([statistics.fmean(v) for v in vals], rel=1e-12)
        assert list(line.customdata) == [len(v) for v in vals]
        assert list(band.x) == list(WDS) + list(WDS)[::-1]
        assert list(band.y) == pytest.approx([max(v) for v in vals] + [min(v) for v in vals][::-1], rel=1e-12)
    # grok epochs: a point with no seed that grokked is left out
    g = line_plot(df, "optim.weight_decay", "grok_epoch", group="task.train_fraction")
    for line, frac in zip([t for t in g.data if t.mode == "lines+markers"], FRACS):
        have = [(wd, [float(v) for v in cell(df, wd, frac, "grok_epoch")]) for wd in WDS]
        have = [(wd, v) for wd, v in have if v]
        assert list(line.x) == [wd for wd, _ in have]
        assert list(line.y) == pytest.approx([statistics.fmean(v) for _, v in have], rel=1e-12)


def test_phase_bars_count_each_phase_at_each_value():
    df = random_frame()
    fig = phase_bars(df, "optim.weight_decay")
    assert [t.name for t in fig.data] == PHASE_ORDER
    for t in fig.data:
        assert list(t.x) == [label(v) for v in WDS]
        assert list(t.y) == [sum(cell(df, wd, f, "phase").count(t.name) for f in FRACS) for wd in WDS]
    assert sum(sum(t.y) for t in fig.data) == len(df)


def _typed(arr):
    if isinstance(arr, dict) and "bdata" in arr:
        shape = [int(n) for n in str(arr.get("shape", "-1")).split(",")]  # Plotly writes "2, 2"
        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"])).reshape(shape).tolist()
    return arr


def _last(run_dir: Path, name: str):
    con = sqlite3.connect(f"file:{run_dir / 'metrics.sqlite'}?mode=ro", uri=True)
    try:
        row = con.execute(
            "SELECT value FROM metrics WHERE name = ? AND value IS NOT NULL ORDER BY step DESC LIMIT 1", (name,)
        ).fetchone()
    finally:
        con.close()
    return row[0]


def test_wall_time_over_sessions():
    ev = [
        {"event": "start", "time": 0},
        {"event": "cell", "time": 5},
        {"event": "start", "time": 100},
        {"event": "end", "time": 103},
    ]
    assert wall_time(ev) == 8


def test_report_of_a_sweep_directory(tmp_path, capsys):
    spec = make_spec(
        name="f",
        base="tiny",
        set={"train.epochs": 20},
        axes={"optim.weight_decay": [0.0, 1.0], "task.train_fraction": [0.5, 0.8]},
        seeds=1,
    )
    run_sweep(spec, tmp_path / "s", workers=0, progress=False, log=lambda s: None)
    assert main(["report", str(tmp_path / "s")]) == 0
    path = capsys.readouterr().out.strip()
    text = open(path).read()
    assert (
        path.endswith("report.html") and "Phase diagram" in text and "Grok epoch" in text and "wd0-frac0.5-s0-" in text
    )
    assert "<script src=" not in text  # self-contained
    assert (tmp_path / "s" / "index.csv").is_file()
    df = pd.read_csv(tmp_path / "s" / "index.csv")
    assert len(df) == 4 and "final_sum_sq_weights" in df.columns
    # a run directory still gets the run report
    from grokscope.presets import tiny
    from grokscope.training import train

    train(tiny(), tmp_path / "run", progress=False)
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "r.html")]) == 0
    assert "grokscope report" in open(tmp_path / "r.html").read()
    assert not math.isnan(df["final_test_acc"].iloc[0])
    # the figures the report embeds: for two axes, four maps and one line per metric (grok epoch, accuracy), each once
    figs = dict(re.findall(r'class="figure-data" data-target="plot-([\w-]+)">(.*?)</script>', text, re.S))
    keys = re.findall(r'class="figure-data" data-target="plot-([\w-]+)"', text)
    assert keys == ["phase-map", "grok-map", "gap-map", "acc-map", "line-grok_epoch", "line-final_test_acc"]
    assert text.count('<div class="plot" id="plot-') == len(keys)
    # the accuracy map holds each cell's last test accuracy, read from the cell's own database (one seed)
    acc = json.loads(figs["acc-map"])["data"][0]
    want = {}
    for cfg_path in (tmp_path / "s" / "cells").glob("*/config.json"):
        cfg = json.loads(cfg_path.read_text())
        want[(cfg["optim"]["weight_decay"], cfg["task"]["train_fraction"])] = _last(cfg_path.parent, "test_acc")
    assert len(want) == 4
    assert acc["x"] == ["0", "1"] and acc["y"] == ["0.5", "0.8"]
    z = _typed(acc["z"])
    for i, frac in enumerate((0.5, 0.8)):
        for j, wd in enumerate((0.0, 1.0)):
            assert z[i][j] == pytest.approx(want[(wd, frac)], rel=1e-12), (wd, frac)
