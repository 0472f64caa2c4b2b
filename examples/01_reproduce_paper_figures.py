# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Reproduce the paper's main figures from a run
#
# Nanda et al. (2023), *Progress measures for grokking via mechanistic interpretability*: train a
# one-layer transformer on modular addition (or open a run you already have), reverse-engineer its last
# checkpoint, and draw the paper's main figures with `grokscope.figures`. Every builder returns a Plotly
# figure, so in Jupyter each one shows inline; as a script they are written to one HTML file.
#
# Run it as a script (`python examples/01_reproduce_paper_figures.py`) or open it as a notebook
# (`jupytext --to ipynb examples/01_reproduce_paper_figures.py`). Settings, from the environment or flags:
#
# - `GROKSCOPE_EXAMPLE_TINY=1` or `--tiny`: a small task (a+b mod 23) that groks in a few seconds
#   (what CI runs); otherwise the `quick` preset (a+b mod 53, one to two minutes on 2 cores).
# - `GROKSCOPE_EXAMPLE_RUN=DIR`: use an existing run instead of training (e.g. one of `grokscope run`).
# - `GROKSCOPE_EXAMPLE_OUT=DIR`: where runs and figures go (default `example-output`).

# %%
import os
import sys
from pathlib import Path

import torch

import grokscope
import grokscope.figures as gf
from grokscope.analysis.run import analyze_run

torch.set_num_threads(1)
TINY = os.environ.get("GROKSCOPE_EXAMPLE_TINY") == "1" or "--tiny" in sys.argv
OUT = Path(os.environ.get("GROKSCOPE_EXAMPLE_OUT", "example-output"))
EXISTING = os.environ.get("GROKSCOPE_EXAMPLE_RUN")

# A small task that still groks: a+b mod 23 on 60% of the pairs with the tiny model, 400 epochs.
TINY_OVERRIDES = {
    "task.p": 23,
    "task.train_fraction": 0.6,
    "train.epochs": 400,
    "train.log_every": 10,
    "train.measure_every": 50,
    "train.checkpoint_every": 50,
}

# %% [markdown]
# ## 1. Train (or open) a run
#
# `grokscope.train(config, out)` trains into a new run directory and returns a `Run`; a directory that
# already holds the run is resumed instead (a finished run returns at once), so re-running is cheap.

# %%
if EXISTING:
    run = grokscope.load_run(EXISTING)
else:
    cfg = (
        grokscope.apply_overrides(grokscope.get_preset("tiny"), TINY_OVERRIDES)
        if TINY
        else grokscope.get_preset("quick")
    )
    run_dir = OUT / "runs" / f"{cfg.name}-wd{cfg.optim.weight_decay}"  # the run 03 compares, so it is trained once
    run = (
        grokscope.resume(run_dir, progress=False) if run_dir.exists() else grokscope.train(cfg, run_dir, progress=False)
    )
print(run)
m = run.metrics
print(m[["train_loss", "test_loss", "train_acc", "test_acc"]].iloc[[0, len(m) // 2, -1]])

# %% [markdown]
# ## 2. Reverse-engineer the last checkpoint
#
# The same as `grokscope analyze RUN`: key frequencies, restricted/excluded loss, neuron clusters, the logit
# fit, ablations, and the paper's Table 5 row. It writes `analysis.json` into the run, which the ablation
# figure reads.

# %%
analysis, data = analyze_run(run)
phases = data["phases"] or {}
print("grok epoch (test acc >= 99%):", phases.get("grok_epoch"))
print("phases:", {k: phases.get(k) for k in ("memorisation_end", "circuit_formation_end", "cleanup_end")})
print("key frequencies:", analysis.key_frequencies, f"(rule {analysis.key_freq_rule})")
print(f"test loss {data['test_loss']:.3g}, restricted loss {data['restricted_loss']:.3g}")
print("Table 5 row:", analysis.table5.to_dict())

# %% [markdown]
# ## 3. The figures
#
# Loss curves with the phases shaded (Figure 1), the progress measures (Figure 7), the Fourier norms of the
# embedding and of W_L (Figure 3), attention and neuron activations (Figure 4), the logits in the 2D
# Fourier basis, neuron clusters (Figure 5) and the ablations (Figure 6). A figure the run cannot support
# (e.g. no key frequencies yet) raises `FigureUnavailable` with a one-line reason.

# %%
BUILDERS = {
    "curves": gf.curves,
    "progress": gf.progress,
    "fourier_norms": lambda r: gf.fourier_norms(r, slider=False),
    "attention": gf.attention,
    "neuron_activations": gf.neuron_activations,
    "logit_fourier": gf.logit_fourier,
    "neuron_clusters": gf.neuron_clusters,
    "ablations": gf.ablations,
}
figures = {}
for name, build in BUILDERS.items():
    try:
        figures[name] = build(run)
    except gf.FigureUnavailable as e:
        print(f"{name}: not drawn ({e})")
print("drawn:", ", ".join(figures))
figures["curves"]  # in a notebook, this shows the figure

# %% [markdown]
# ## 4. Write them to one HTML file
#
# plotly.js is embedded once, so the file opens offline. (`grokscope report RUN` writes the full report with
# every figure, the run's config and the Table 5 row.)

# %%
html_path = OUT / "paper_figures.html"
html_path.parent.mkdir(parents=True, exist_ok=True)
parts = [
    f"<h2>{name}</h2>" + fig.to_html(full_html=False, include_plotlyjs=(i == 0))
    for i, (name, fig) in enumerate(figures.items())
]
html_path.write_text(
    "<!doctype html><html><head><meta "
    f"charset='utf-8'><title>{run.config.name}</title></head><body>{''.join(parts)}</body></html>"
)
print(f"wrote {html_path} ({len(figures)} figures)")
