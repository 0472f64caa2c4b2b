"""Omnigrok's LU curves: the omnigrok-lu sweep preset, the sweep index's param_norm column and the LU figure."""

import json
import math
import sqlite3

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("plotly")

from grokscope import train  # noqa: E402
from grokscope.config import apply_overrides  # noqa: E402
from grokscope.measures import sum_sq_weights  # noqa: E402
from grokscope.models import build_model  # noqa: E402
from grokscope.sweep.figures_recent import is_lu_sweep, lu_points, omnigrok_lu_curves, recent_figures  # noqa: E402
from grokscope.sweep.index import SweepIndex, load_sweep  # noqa: E402
from grokscope.sweep.local import run_sweep  # noqa: E402
from grokscope.sweep.outcome import Outcome  # noqa: E402
from grokscope.sweep.presets import get_sweep_preset  # noqa: E402
from grokscope.sweep.spec import expand, make_spec  # noqa: E402
from grokscope.tasks import make_task  # noqa: E402


def _lu_spec(**kw):
    return make_spec(name=kw.pop("name", "my-landscape"), base="tiny",
                     set={"optim.fixed_norm": True, "optim.weight_decay": 0.0, "train.epochs": 10,
                          "train.measure_every": 10, **kw.pop("set", {})},
                     axes=kw.pop("axes", {"model.init_scale": [0.5, 1.0, 2.0]}), seeds=kw.pop("seeds", 2))


def test_the_preset_holds_the_norm_and_scans_the_init_scale():
    spec = get_sweep_preset("omnigrok-lu")
    b = spec.base
    assert b.optim.fixed_norm and b.optim.weight_decay == 0.0 and b.task.formula == "a+b" and b.task.p == 23
    assert spec.axis_fields == ["model.init_scale"] and is_lu_sweep(spec)
    scales = sorted({c.config.model.init_scale for c in expand(spec)})
    assert len(scales) == 9 and scales[0] == pytest.approx(0.25) and scales[-1] == pytest.approx(4.0)
    assert np.allclose(np.diff(np.log(scales)), math.log(16) / 8)  # log-spaced
    assert len(expand(spec)) == 27 and len(spec.seeds) == 3
    # a cell trains at tiny size and keeps its initial norm, alpha times the norm at alpha = 1
    cfg = expand(spec)[-1].config
    small = apply_overrides(cfg, {"task.p": 11, "train.epochs": 6, "train.measure_every": 3, "train.log_every": 3,
                                  "train.checkpoint_every": 3, "model.d_mlp": 32})
    run = train(small, None, progress=False)
    norms = np.sqrt(run.metrics["sum_sq_weights"].dropna().to_numpy())
    task = make_task(small.task)
    one = apply_overrides(small, {"model.init_scale": 1.0}).model
    at_one = math.sqrt(sum_sq_weights(build_model(one, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=3)))
    assert np.allclose(norms, 4.0 * at_one, rtol=1e-6)  # float32 weights, rescaled each step


def test_the_maker_recognises_the_sweep_from_its_spec_not_its_name():
    assert is_lu_sweep(_lu_spec())
    assert not is_lu_sweep(_lu_spec(set={"optim.fixed_norm": False}))  # no fixed norm
    assert not is_lu_sweep(_lu_spec(axes={"optim.lr": [1e-3, 1e-2]}))  # no init-scale axis
    assert not is_lu_sweep(get_sweep_preset("omnigrok-init-wd"))  # weight decay, not a fixed norm


def _frame(norm=True):
    """Three init scales x two seeds with an L (train) and a U (test, lowest at scale 1)."""
    rows = []
    for scale, train_l, test_l in ((0.5, 2.0, 2.5), (1.0, 0.1, 0.4), (2.0, 1e-6, 9.0)):
        for seed in (0, 1):
            rows.append({"name": f"a{scale}-s{seed}", "seed": seed, "model.init_scale": scale, "status": "completed",
                         "final_train_loss": train_l * (1 + 0.1 * seed), "final_test_loss": test_l + 0.2 * seed,
                         "final_test_acc": 0.5, "param_norm": 10.0 * scale if norm else math.nan})
    rows.append({"name": "pending", "seed": 2, "model.init_scale": 4.0, "status": "pending",
                 "final_train_loss": None, "final_test_loss": None, "final_test_acc": None, "param_norm": None})
    return pd.DataFrame(rows)


def test_lu_figure_draws_seeds_and_means_against_the_norm():
    spec = _lu_spec()
    figs = omnigrok_lu_curves(_frame(), spec)
    assert [f[0] for f in figs] == ["omnigrok_lu"]
    key, title, caption, fig = figs[0]
    means = {t.name: t for t in fig.data if t.mode == "lines+markers"}
    test = means["test loss (the U)"]
    assert list(test.x) == [5.0, 10.0, 20.0]  # the norm, not the init scale
    assert list(test.y) == pytest.approx([2.6, 0.5, 9.1])  # seed means
    train_pts = [t for t in fig.data if t.mode == "markers" and t.legendgroup == "train loss (the L)"][0]
    assert len(train_pts.x) == 6  # every finished seed, the pending cell left out
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"
    assert "norm 10" in caption and "intermediate norm" in caption
    # without the measures the x-axis falls back to the init scale
    fallback = omnigrok_lu_curves(_frame(norm=False), spec)[0][3]
    assert "init scale" in fallback.layout.xaxis.title.text
    assert list(fallback.data[1].x) == [0.5, 1.0, 2.0]
    # a minimum at the edge is said so
    edge = _frame()
    edge.loc[edge["model.init_scale"] == 0.5, "final_test_loss"] = 0.01
    assert "edge of the range" in omnigrok_lu_curves(edge, spec)[0][2]


def test_lu_figure_is_empty_for_another_sweep():
    other = make_spec(name="wd", base="tiny", axes={"optim.weight_decay": [0.0, 1.0]}, seeds=1)
    assert omnigrok_lu_curves(_frame(), other) == []
    assert recent_figures(_frame(), get_sweep_preset("wd-fraction")) == []
    assert omnigrok_lu_curves(_frame(), _lu_spec(set={"optim.fixed_norm": False})) == []


def test_lu_points_aggregates_over_seeds():
    pts = lu_points(_frame())
    assert list(pts["init_scale"]) == [0.5, 1.0, 2.0] and list(pts["n"]) == [2, 2, 2]
    row = pts.iloc[0]
    assert row["norm"] == 5.0 and row["final_train_loss_min"] == 2.0 and row["final_train_loss_max"] == 2.2
    assert row["final_test_loss_mean"] == pytest.approx(2.6)


def _outcome(final):
    return Outcome(phase="memorisation", train_epoch=1, test_epoch=None, gap=None, grok_epoch=None,
                   train_fit_epoch=None, last_epoch=10, budget=10, tau=1, threshold=0.9, final=final)


def test_index_param_norm_column_and_an_older_index(tmp_path):
    cells = expand(_lu_spec(seeds=1))
    with SweepIndex(tmp_path / "index.sqlite") as index:
        index.set_axes(["model.init_scale"])
        index.upsert(cells[0], status="completed", outcome=_outcome({"sum_sq_weights": 6.25, "train_loss": 0.1}))
        index.upsert(cells[1], status="completed", outcome=_outcome({"train_loss": 0.1}))  # measures off
        index.upsert(cells[2], status="pending")
        df = index.frame()
    assert df["param_norm"].iloc[0] == 2.5 and df["param_norm"].iloc[1:].isna().all()
    # an index written before the column existed gains it when opened for writing
    old = tmp_path / "old.sqlite"
    con = sqlite3.connect(old)
    con.execute("CREATE TABLE cells (name TEXT PRIMARY KEY, position INTEGER, seed INTEGER, status TEXT, point TEXT, "
                "final TEXT, updated REAL)")
    con.execute("INSERT INTO cells VALUES ('x', 0, 0, 'completed', ?, '{}', 0)", (json.dumps({}),))
    con.commit()
    con.close()
    with SweepIndex(old) as index:
        index.upsert(cells[0], status="completed", outcome=_outcome({"sum_sq_weights": 4.0}))
        assert index.get(cells[0].name)["param_norm"] == 2.0


def test_a_tiny_lu_sweep_end_to_end(tmp_path):
    spec = _lu_spec(seeds=1, axes={"model.init_scale": [0.5, 2.0]})
    run_sweep(spec, tmp_path / "s", workers=0, progress=False, log=lambda s: None)
    df = load_sweep(tmp_path / "s")
    assert df["status"].tolist() == ["completed", "completed"]
    assert df["param_norm"].iloc[1] == pytest.approx(4 * df["param_norm"].iloc[0], rel=1e-6)  # the norm is alpha w_1
    assert df["param_norm"].iloc[1] == pytest.approx(math.sqrt(df["final_sum_sq_weights"].iloc[1]), rel=1e-12)
    figs = recent_figures(df, spec)
    assert [f[0] for f in figs] == ["omnigrok_lu"]
    assert list(figs[0][3].data[1].x) == pytest.approx(df["param_norm"].tolist())
