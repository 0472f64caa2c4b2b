"""The tuned baseline and Muon presets, the fair-comparison sweep presets, and their report figure."""

import math

import pandas as pd
import pytest

from grokscope.config import apply_overrides
from grokscope.presets import get_preset
from grokscope.sweep.figures_recent import fair_comparison, method_cells, method_label, method_summary
from grokscope.sweep.presets import get_sweep_preset
from grokscope.sweep.presets_recent import METHOD_FIELDS, METHODS
from grokscope.sweep.spec import expand, make_spec
from grokscope.training import train

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_tuned_baseline_is_the_notes_setting_and_muon_changes_only_the_optimizer():
    cfg = get_preset("tuned-adamw-mlp")
    assert (cfg.task.formula, cfg.task.p, cfg.task.train_fraction) == ("a+b", 113, 0.4)
    assert cfg.model.arch == "mlp" and not cfg.model.tie_unembed and cfg.train.batch_size is None
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.weight_decay) == ("adamw", 1.5e-2, 1.0)
    assert cfg.train.log_every == 1  # the grok epoch to the epoch
    muon = get_preset("muon-mlp")
    assert muon.optim.optimizer == "muon"
    assert apply_overrides(muon, {"name": cfg.name, "optim.optimizer": "adamw"}) == cfg


@pytest.mark.parametrize("preset", ["tuned-adamw-mlp", "muon-mlp"])
def test_the_presets_train_at_tiny_size(tmp_path, preset):
    cfg = apply_overrides(get_preset(preset), {"task.p": 13, "model.d_model": 16, "model.d_mlp": 16,
                                               "train.epochs": 60, "train.checkpoint_every": 60})
    run = train(cfg, tmp_path / "run", progress=False)
    m = run.metrics
    assert run.status == "completed" and m["train_loss"].iloc[-1] < 0.8 * m["train_loss"].iloc[0]


@pytest.mark.parametrize("name, n_methods, grid", [("fair-comparison", 5, 9), ("fair-comparison-small", 5, 4),
                                                   ("muon-vs-adamw", 2, 12)])
def test_every_method_gets_the_same_grid_and_seeds(name, n_methods, grid):
    spec = get_sweep_preset(name)
    assert spec.axes[0].fields == METHOD_FIELDS and len(spec.seeds) >= 5
    cells = expand(spec)
    by_method: dict = {}
    for c in cells:
        method = tuple(getattr(getattr(c.config, f.split(".")[0]), f.split(".")[1]) for f in METHOD_FIELDS)
        by_method.setdefault(method, set()).add((c.config.optim.lr, c.config.optim.weight_decay, c.seed))
        assert c.config.model.init_seed == c.config.task.split_seed == c.seed
    assert len(by_method) == n_methods
    grids = list(by_method.values())
    assert all(g == grids[0] for g in grids) and len(grids[0]) == grid * len(spec.seeds)
    assert {tuple(v) for v in METHODS.values()} >= set(by_method)


def test_method_labels_name_what_differs_from_plain_adamw():
    fields = dict(zip(METHOD_FIELDS, METHODS["adamw"]))
    assert method_label(fields) == "adamw"
    assert method_label(dict(zip(METHOD_FIELDS, METHODS["grokfast-ema"]))) == "grokfast-ema"
    assert method_label(dict(zip(METHOD_FIELDS, METHODS["perp-adamw"]))) == "perp-adamw"
    assert method_label(dict(zip(METHOD_FIELDS, ["muon", "none", "stablemax", 0]))) == "muon+stablemax"


def _hand_frame():
    spec = make_spec(name="h", base="tiny", axes={"optim.optimizer,optim.grad_filter": [["adamw", "none"],
                                                                                          ["muon", "none"]],
                                                   "optim.lr": [0.01, 0.02]}, seeds=5)
    epochs = {("adamw", 0.01): [100, 120, 110, None, 130], ("adamw", 0.02): [90, 95, 200, 85, 80],
              ("muon", 0.01): [None, None, None, 50, 60], ("muon", 0.02): [150, 160, 170, 180, 190]}
    rows = [{"name": f"{opt}-{lr}-{s}", "seed": s, "optim.optimizer": opt, "optim.grad_filter": "none",
             "optim.lr": lr, "grok_epoch": e, "budget": 400}
            for (opt, lr), es in epochs.items() for s, e in enumerate(es)]
    return pd.DataFrame(rows).astype({"grok_epoch": "Int64"}), spec


def test_the_summary_picks_each_methods_best_grid_point_by_median():
    df, spec = _hand_frame()
    summary = method_summary(method_cells(df, spec)).set_index("method")
    adamw, muon = summary.loc["adamw"], summary.loc["muon"]
    assert adamw["best"] == "lr=0.02" and adamw["median"] == 90 and adamw["grokked"] == 5
    assert (adamw["q1"], adamw["q3"], adamw["min"], adamw["max"]) == (85, 95, 80, 200)
    assert muon["best"] == "lr=0.02" and muon["median"] == 170  # lr 0.01: 3 of 5 never grok, median infinite
    assert adamw["median_all"] == 105 and muon["median_all"] == 175
    assert (adamw["grokked_all"], adamw["n_all"], muon["grokked_all"], muon["n_all"]) == (9, 10, 7, 10)
    assert math.isinf(method_summary(method_cells(df[df["optim.lr"] == 0.01], spec)).set_index("method")
                      .loc["muon", "median"])
    never = df.assign(grok_epoch=pd.NA, final_test_acc=[0.5] * 10 + [0.2] * 5 + [0.9] * 5)
    summary = method_summary(method_cells(never, spec)).set_index("method")  # no cell at 99%: the best final acc
    assert (summary.loc["adamw", "best"], summary.loc["muon", "best"]) == ("lr=0.01", "lr=0.02")


def test_the_figure_draws_the_best_points_and_every_cell_with_misses_at_the_budget():
    df, spec = _hand_frame()
    figs = fair_comparison(df, spec)
    assert [f[0] for f in figs] == ["fair_best", "fair_all"]
    best = figs[0][3]
    boxes = [t for t in best.data if t.type == "box"]
    assert [sorted(b.y) for b in boxes] == [[80, 85, 90, 95, 200], [150, 160, 170, 180, 190]]
    assert "adamw 90 (5/5); muon 170 (5/5)" in figs[0][2]
    everything = figs[1][3]
    crosses = [t for t in everything.data if t.type == "scatter"]
    assert [len(t.y) for t in crosses] == [1, 3] and all(y == 400 for t in crosses for y in t.y)
    assert sum(len(b.y) for b in everything.data if b.type == "box") == 16


def test_a_sweep_without_a_method_axis_gets_no_fair_comparison_figure():
    df, _ = _hand_frame()
    assert fair_comparison(df, get_sweep_preset("lr-wd")) == []


def test_a_real_method_sweep_reports_the_comparison(tmp_path):
    from grokscope.config import apply_overrides
    from grokscope.sweep.figures import build_sweep_report
    from grokscope.sweep.local import run_sweep
    from grokscope.sweep.presets_recent import fair_base, method_comparison

    base = apply_overrides(fair_base(p=13, width=16, epochs=10), {"optim.warmup_steps": 0})
    spec = method_comparison("tiny-fair", "", base, methods=["adamw", "muon"], lrs=[3e-2], wds=[1.0], seeds=2)
    run_sweep(spec, tmp_path / "s", workers=0, progress=False, log=lambda s: None)
    html = build_sweep_report(tmp_path / "s", plotly_src="plotly.js")
    assert "Fair comparison: each method at its best grid point" in html
    assert "Fair comparison: every grid point" in html
