"""Sweep figures and the sweep report (``grokscope report SWEEP_DIR``)."""

import math

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
                rows.append({"name": f"c{len(rows)}", "seed": seed, "optim.weight_decay": wd, "task.train_fraction": frac, "status": "completed",
                             "phase": phase, "grok_epoch": grok, "gap": None if grok is None else grok - 50,
                             "final_test_acc": 1.0 if grok else 0.2 + 0.1 * seed})
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


def test_wall_time_over_sessions():
    ev = [{"event": "start", "time": 0}, {"event": "cell", "time": 5}, {"event": "start", "time": 100}, {"event": "end", "time": 103}]
    assert wall_time(ev) == 8


def test_report_of_a_sweep_directory(tmp_path, capsys):
    spec = make_spec(name="f", base="tiny", set={"train.epochs": 20}, axes={"optim.weight_decay": [0.0, 1.0], "task.train_fraction": [0.5, 0.8]}, seeds=1)
    run_sweep(spec, tmp_path / "s", workers=0, progress=False, log=lambda s: None)
    assert main(["report", str(tmp_path / "s")]) == 0
    path = capsys.readouterr().out.strip()
    text = open(path).read()
    assert path.endswith("report.html") and "Phase diagram" in text and "Grok epoch" in text and "wd0-frac0.5-s0-" in text
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
