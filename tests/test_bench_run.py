"""``grokscope bench --whole-run``: a run split at its phases, each phase's rate from the run's own clock."""

import json

import pytest

from grokscope.bench_run import WallStamps, phase_segments, segment_seconds
from grokscope.cli import main
from grokscope.measures.phases import Phases

pytestmark = pytest.mark.usefixtures("one_thread")


def _phases(mem, circ, clean):
    return Phases(
        grok_epoch=None,
        train_fit_epoch=None,
        memorisation_end=mem,
        circuit_formation_end=circ,
        cleanup_end=clean,
        excluded_loss_column=None,
    )


def test_segments_follow_the_boundaries_and_stop_at_the_last_epoch():
    assert phase_segments(_phases(1400, 5600, 9000), 11090) == [
        ("memorisation", 0, 1400),
        ("circuit formation", 1400, 5600),
        ("cleanup", 5600, 9000),
        ("after cleanup", 9000, 11090),
    ]
    # a run that stops before the cleanup is over: no 'after' segment, cleanup ends with the run
    assert phase_segments(_phases(1400, 5600, None), 7000) == [
        ("memorisation", 0, 1400),
        ("circuit formation", 1400, 5600),
        ("cleanup", 5600, 7000),
    ]
    # one that never groks: circuit formation (from the excluded loss's minimum) to the end
    assert phase_segments(_phases(300, None, None), 2000) == [
        ("memorisation", 0, 300),
        ("circuit formation", 300, 2000),
    ]
    # one that never fits its training set: all memorisation
    assert phase_segments(_phases(None, None, None), 500) == [("memorisation", 0, 500)]
    # a cleanup that ends exactly at the last epoch leaves no empty 'after' segment
    assert phase_segments(_phases(10, 20, 30), 30) == [
        ("memorisation", 0, 10),
        ("circuit formation", 10, 20),
        ("cleanup", 20, 30),
    ]


def test_segment_seconds_interpolate_between_logged_epochs():
    # logged every 10 epochs; 0.1 s per epoch until epoch 20, then 0.4 s per epoch
    stamps = [(0, 5.0), (10, 6.0), (20, 7.0), (30, 11.0), (40, 15.0)]
    segs = [("a", 0, 20), ("b", 20, 25), ("c", 25, 40)]
    assert segment_seconds(stamps, segs) == pytest.approx([2.0, 2.0, 6.0])
    with pytest.raises(ValueError, match="outside"):
        segment_seconds(stamps, [("d", 0, 50)])


def test_wall_stamps_record_the_clock_at_each_logged_epoch():
    ticks = iter([1.0, 2.5, 4.0, 9.0])
    w = WallStamps(clock=lambda: next(ticks))
    w.start(None, None)
    w.log(0, {})
    w.log(10, {})
    w.finish("completed")
    assert (w.started, w.stamps, w.finished) == (1.0, [(0, 2.5), (10, 4.0)], 9.0)


def test_whole_run_cli_prints_a_row_per_phase_and_where_the_time_went(tmp_path, capsys):
    out_json = tmp_path / "whole.json"
    code = main(
        [
            "bench",
            "--whole-run",
            "--quick",
            "--p",
            "13",
            "--run-epochs",
            "60",
            "--peer-epochs",
            "1",
            "--no-tl",
            "--out",
            str(tmp_path / "run"),
            "--json",
            str(out_json),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    res = json.loads(out_json.read_text())
    assert res["final_epoch"] == 60 and (tmp_path / "run" / "metrics.sqlite").exists()
    rows = res["phases"]
    assert rows[0]["start"] == 0 and rows[-1]["end"] == 60
    assert all(a["end"] == b["start"] for a, b in zip(rows, rows[1:]))
    for r in rows:
        assert r["run_eps"] == pytest.approx((r["end"] - r["start"]) / r["seconds"])
        assert r["reference_eps"] > 0 and r["grokscope_eps"] > 0 and "transformer_lens_eps" not in r
        assert f"{r['phase']:18} {r['start']:>6}-{r['end']:<6}" in out
    parts = res["parts"]
    assert {"updates", "evaluation", "checkpoints", "metrics_store"} <= parts.keys()
    assert sum(parts.values()) <= res["train_call_seconds"] + 1e-2  # disjoint parts of the training call
    assert "where the time went (s): start-up" in out and "report" in out


def test_whole_run_refuses_an_existing_out(tmp_path, capsys):
    assert main(["bench", "--whole-run", "--quick", "--out", str(tmp_path)]) == 2
    assert "already exists" in capsys.readouterr().err
