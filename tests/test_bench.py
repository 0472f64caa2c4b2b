"""``grokscope bench --quick`` runs end to end at tiny size and prints its ratios."""

import json
import re
from types import SimpleNamespace

import pytest

from grokscope.bench import BenchOptions, fast_step_flops, reference_step_flops
from grokscope.cli import main
from grokscope.presets import nanda_mainline

pytestmark = pytest.mark.usefixtures("one_thread")


def test_bench_quick_prints_ratios(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--quick",
            "--p",
            "11",
            "--scaling",
            "7",
            "11",
            "--agree-steps",
            "10",
            "--run-epochs",
            "5",
            "--repeats",
            "2",
            "--epochs",
            "2",
            "--k",
            "2",
            "--no-tl",
            "--json",
            str(out_json),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    for text in (
        "(a) reference",
        "(b) grokscope default (fast)",
        "(c) ensemble K=2",
        "x ref",
        "agreement (a) vs (b)",
        "OK",
        "FLOPs per epoch",
    ):
        assert text in out
    res = json.loads(out_json.read_text())
    assert res["agreement"]["rel_diff"] <= 1e-6
    assert [s["p"] for s in res["scaling"]] == [7, 11]
    assert res["transformer_lens"].startswith("skipped")
    # the whole run is compared with the reference loop timed just before and just after it
    assert "x the reference loop with test loss every epoch" in out and "just before and after the run" in out
    ((name, loop),) = res["whole_run"]["loops"].items()
    assert name.startswith("(a) reference") and loop["before"] > 0 and loop["after"] > 0
    # the combined rate is total epochs over total time: --epochs 2 demo epochs before the run and 2 after it
    assert loop["rate"] == pytest.approx((2 + 2) / (2 / loop["before"] + 2 / loop["after"]), rel=1e-12)
    printed = re.search(
        r"\(([\d.]+) ep/s, timed for 2 epochs just before and after the run: ([\d.]+) and ([\d.]+)\)", out
    )
    assert printed and printed.groups() == (f"{loop['rate']:.2f}", f"{loop['before']:.2f}", f"{loop['after']:.2f}")


def test_the_bracketing_loop_rate_is_total_epochs_over_total_time(monkeypatch):
    """With a fake clock: 4 demo epochs at 0.5 s before the run and 4 at 0.25 s after it are 8 epochs in 3 s, 8/3 ep/s
    (the mean of the two rates, 2 and 4 ep/s, would say 3; any mean lies between them, so only a number can tell)."""
    import grokscope.bench as bench

    clock = {"t": 0.0, "per_epoch": 0.5}

    class Runner:
        name = "(a) reference"

        def epoch(self):
            clock["t"] += 0.6 * clock["per_epoch"]

        def evaluate(self):
            clock["t"] += 0.4 * clock["per_epoch"]

    def whole_run(cfg, epochs):
        clock["per_epoch"] = 0.25  # the machine is faster after the run
        return {"epochs": epochs, "seconds": 1.0, "per_epoch": 1.0 / epochs}

    import grokscope.bench_loops as loops

    monkeypatch.setattr(loops, "time", SimpleNamespace(perf_counter=lambda: clock["t"]))  # loop_rate's clock
    monkeypatch.setattr(bench, "whole_run", whole_run)
    res = bench.bracketed_whole_run(nanda_mainline(), 10, [Runner()], loop_epochs=4)
    loop = res["loops"]["(a) reference"]
    assert loop["before"] == pytest.approx(2.0) and loop["after"] == pytest.approx(4.0)
    assert loop["rate"] == pytest.approx(8 / 3, rel=1e-12)
    assert res["epochs"] == 10


def test_bench_rejects_bad_flags(capsys):
    assert main(["bench", "--quick", "--epochs", "0"]) == 2
    assert "--epochs" in capsys.readouterr().err


def test_flop_counts_are_consistent():
    cfg = nanda_mainline()
    fast = fast_step_flops(cfg, 3830)
    assert fast["total"] == fast["per-example"] + fast["tables"]
    # the MLP and unembedding of the last position alone, forward and backward, are ~3.3 GFLOP in the reference
    assert 1.0e9 < fast["total"] < 3.3e9 < reference_step_flops(cfg, 3830)
    assert BenchOptions.quick_options().quick
