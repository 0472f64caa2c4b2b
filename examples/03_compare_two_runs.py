# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Compare two runs: weight decay 1.0 against 0.1
#
# Weight decay drives grokking: with less of it the network keeps its memorising solution longer (or for
# good), and the Fourier circuit forms later. Train the same config twice, changing only
# `optim.weight_decay`, overlay the curves, and compare the grok epochs and the progress measures.
#
# Settings (environment or flags): `GROKSCOPE_EXAMPLE_TINY=1` / `--tiny` uses a small task (a+b mod 23, 400
# epochs, seconds per run); otherwise the `quick` preset (one to two minutes per run on 2 cores).
# `GROKSCOPE_EXAMPLE_OUT=DIR` is where runs and figures go (default `example-output`).

# %%
import os
import sys
from pathlib import Path

import pandas as pd
import torch

import grokscope
import grokscope.figures as gf
from grokscope.measures import detect_phases

torch.set_num_threads(1)
TINY = os.environ.get("GROKSCOPE_EXAMPLE_TINY") == "1" or "--tiny" in sys.argv
OUT = Path(os.environ.get("GROKSCOPE_EXAMPLE_OUT", "example-output"))
TINY_OVERRIDES = {
    "task.p": 23,
    "task.train_fraction": 0.6,
    "train.epochs": 400,
    "train.log_every": 10,
    "train.measure_every": 50,
    "train.checkpoint_every": 50,
}
WEIGHT_DECAYS = (1.0, 0.1)

# %% [markdown]
# ## 1. Two runs that differ in one setting
#
# `apply_overrides` takes the same `key=value` pairs as `--set` on the command line.

# %%
base = (
    grokscope.apply_overrides(grokscope.get_preset("tiny"), TINY_OVERRIDES) if TINY else grokscope.get_preset("quick")
)
runs = {}
for wd in WEIGHT_DECAYS:
    cfg = grokscope.apply_overrides(base, {"optim.weight_decay": wd})
    run_dir = OUT / "runs" / f"{base.name}-wd{wd}"
    runs[wd] = (
        grokscope.resume(run_dir, progress=False) if run_dir.exists() else grokscope.train(cfg, run_dir, progress=False)
    )
    print(runs[wd])

# %% [markdown]
# ## 2. Grok epochs and progress measures side by side
#
# `detect_phases` reads the grok epoch (first epoch with test accuracy >= 99%) and the phase boundaries from
# the stored curves; the last logged progress measures show how far each run's circuit has formed.

# %%
rows = []
for wd, run in runs.items():
    m = run.metrics
    ph = detect_phases(m)
    last = m.ffill().iloc[-1]
    rows.append(
        {
            "weight_decay": wd,
            "train_fit_epoch": ph.train_fit_epoch,
            "grok_epoch": ph.grok_epoch,
            "final_test_acc": last["test_acc"],
            "final_test_loss": last["test_loss"],
            "excluded_loss": last["excluded_loss"],
            "restricted_loss": last["restricted_loss"],
            "gini_W_E": last["gini_W_E"],
            "gini_W_L": last["gini_W_L"],
            "sum_sq_weights": last["sum_sq_weights"],
        }
    )
table = pd.DataFrame(rows).set_index("weight_decay")
with pd.option_context("display.width", 160, "display.max_columns", 20):
    print(table)
OUT.mkdir(parents=True, exist_ok=True)
table.to_csv(OUT / "compare_two_runs.csv")

# %% [markdown]
# ## 3. The curves overlaid
#
# `compare_curves(runs, metric)` draws one metric of several runs on one axis (log scale for losses).

# %%
figures = {
    metric: gf.compare_curves(list(runs.values()), metric)
    for metric in ("test_loss", "test_acc", "train_loss", "gini_W_E", "sum_sq_weights")
}
html_path = OUT / "compare_two_runs.html"
parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures.values())]
html_path.write_text(
    "<!doctype html><html><head><meta charset='utf-8'><title>weight decay 1.0 vs 0.1</title></head><body>"
    + "".join(parts)
    + "</body></html>"
)
print(f"wrote {html_path} and {OUT / 'compare_two_runs.csv'}")
figures["test_loss"]
