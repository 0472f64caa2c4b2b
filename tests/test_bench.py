"""``grokscope bench --quick`` runs end to end at tiny size and prints its ratios."""

import json

import pytest
import torch

from grokscope.bench import BenchOptions, fast_step_flops, reference_step_flops
from grokscope.cli import main
from grokscope.presets import nanda_mainline


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: on a shared 2-core machine two threads thrash on these small tensors."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_bench_quick_prints_ratios(tmp_path, capsys):
    out_json = tmp_path / "bench.json"
    code = main(["bench", "--quick", "--p", "11", "--scaling", "7", "11", "--agree-steps", "10", "--run-epochs", "5", "--repeats", "2", "--epochs", "2", "--k", "2", "--no-tl", "--json", str(out_json)])
    assert code == 0
    out = capsys.readouterr().out
    for text in ("(a) reference", "(b) grokscope default (fast)", "(c) ensemble K=2", "x ref", "agreement (a) vs (b)", "OK", "FLOPs per epoch"):
        assert text in out
    res = json.loads(out_json.read_text())
    assert res["agreement"]["rel_diff"] <= 1e-6
    assert [s["p"] for s in res["scaling"]] == [7, 11]
    assert res["transformer_lens"].startswith("skipped")
    # the whole run is compared with the reference loop timed just before and just after it
    assert "x the reference loop with test loss every epoch" in out and "just before and after the run" in out
    (name, loop), = res["whole_run"]["loops"].items()
    assert name.startswith("(a) reference") and loop["before"] > 0 and loop["after"] > 0
    assert min(loop["before"], loop["after"]) <= loop["rate"] <= max(loop["before"], loop["after"])


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
