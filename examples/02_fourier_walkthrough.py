# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # The Fourier analysis, step by step
#
# How a network that grokked modular addition computes it (Nanda et al. 2023, section 4), one measurement
# at a time with grokscope's public functions: the Fourier basis, the Fourier norms of the embedding W_E,
# the key frequencies, the neuron clusters, and the restricted and excluded losses — the last two also
# recomputed by hand with a plain least-squares fit, so you can see exactly what they are.
#
# Settings (environment or flags): `GROKSCOPE_EXAMPLE_TINY=1` / `--tiny` trains a small run (a+b mod 23,
# seconds); otherwise the `quick` preset. `GROKSCOPE_EXAMPLE_RUN=DIR` analyses an existing run instead.
# `GROKSCOPE_EXAMPLE_OUT=DIR` is where runs and the summary go (default `example-output`).

# %%
import json
import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

import grokscope
from grokscope.measures import (
    KEY_FREQ_RULES,
    NEURON_FVE_THRESHOLD,
    component_norms,
    fourier_basis,
    fourier_basis_names,
    frequency_norms,
    gini,
    key_frequencies,
    key_frequencies_from_norms,
    logit_table,
    mlp_activations,
    neuron_frequency_fractions,
    neuron_logit_map,
    number_embedding,
    progress_measures,
)

torch.set_num_threads(1)
TINY = os.environ.get("GROKSCOPE_EXAMPLE_TINY") == "1" or "--tiny" in sys.argv
OUT = Path(os.environ.get("GROKSCOPE_EXAMPLE_OUT", "example-output"))
EXISTING = os.environ.get("GROKSCOPE_EXAMPLE_RUN")
TINY_OVERRIDES = {
    "task.p": 23,
    "task.train_fraction": 0.6,
    "train.epochs": 400,
    "train.log_every": 10,
    "train.measure_every": 50,
    "train.checkpoint_every": 50,
}

if EXISTING:
    run = grokscope.load_run(EXISTING)
else:
    cfg = (
        grokscope.apply_overrides(grokscope.get_preset("tiny"), TINY_OVERRIDES)
        if TINY
        else grokscope.get_preset("quick")
    )
    run_dir = OUT / "runs" / f"{cfg.name}-wd{cfg.optim.weight_decay}"  # the same run as 01 and 03
    run = (
        grokscope.resume(run_dir, progress=False) if run_dir.exists() else grokscope.train(cfg, run_dir, progress=False)
    )
task = run.task()
p = task.p
model = run.load_model()  # the last checkpoint, eval mode
print(run, f"formula {task.config.formula}, p = {p}, final test acc {run.metrics['test_acc'].iloc[-1]:.3f}")

# %% [markdown]
# ## 1. The Fourier basis over Z_p
#
# `fourier_basis(p)` is a `[p, p]` orthonormal matrix: row 0 is the constant `1/sqrt(p)`, rows `2k-1` and
# `2k` are `cos(w_k x)` and `sin(w_k x)` with `w_k = 2 pi k / p`, normalised, for `k = 1 .. (p-1)/2`.

# %%
Fb = fourier_basis(p)  # [p, p] float64
names = fourier_basis_names(p)
x = torch.arange(p, dtype=torch.float64)
print("rows:", names[:5], "...", names[-2:])
print("max |F F^T - I| =", float((Fb @ Fb.T - torch.eye(p, dtype=torch.float64)).abs().max()))
cos3 = torch.cos(2 * torch.pi * 3 * x / p)
print("row 'cos 3' is cos(w_3 x)/||.||:", bool(torch.allclose(Fb[names.index("cos 3")], cos3 / cos3.norm())))

# %% [markdown]
# ## 2. The embedding in the Fourier basis
#
# `F @ W_E[:p]` expresses each embedding direction as waves over the input token. After grokking, a few
# frequencies carry almost all of the norm: the embedding is sparse in the Fourier basis, and the Gini
# coefficient of the per-frequency norms (a progress measure) is high.

# %%
W_E = number_embedding(model, p)  # [p, d_model]: the number tokens only
comp = component_norms(W_E, dim=0)  # [p]: one norm per basis row
freq_norms_E = frequency_norms(W_E, dim=0)  # [(p-1)/2]: sqrt(cos_k^2 + sin_k^2), constant excluded
top = torch.argsort(comp, descending=True)[:6]
print("largest components of F @ W_E:", [(names[i], round(float(comp[i]), 3)) for i in top])
print(
    f"Gini of W_E's frequency norms: {gini(freq_norms_E):.3f} (0 = spread evenly, "
    f"{(len(freq_norms_E) - 1) / len(freq_norms_E):.3f} = one frequency)"
)

# %% [markdown]
# ## 3. Key frequencies
#
# The neuron-logit map `W_L = W_out @ W_U` (`[d_mlp, p]`) maps neurons to logits. Its per-frequency norms
# along the output axis have a clear gap after the key frequencies: the default rule (`W_L_dft`) takes the
# top `m` frequencies where the ratio between consecutive sorted norms is largest, if that ratio is at least 2.

# %%
W_L = neuron_logit_map(model, p)  # [d_mlp, p]
norms_L = frequency_norms(W_L, dim=1)  # [(p-1)/2]
order = torch.argsort(norms_L, descending=True)
print("W_L per-frequency norms, largest first:", [(int(i) + 1, round(float(norms_L[i]), 2)) for i in order[:6]])
ratios = norms_L[order[:-1]] / norms_L[order[1:]]
print(
    "largest ratio between neighbours:", round(float(ratios.max()), 2), "after", int(ratios.argmax()) + 1, "frequencies"
)
keys = key_frequencies_from_norms(norms_L)
print("key frequencies (W_L_dft):", keys)
for rule in KEY_FREQ_RULES:
    print(f"  rule {rule:15} -> {key_frequencies(model, task, rule)}")

# %% [markdown]
# ## 4. Neurons cluster by frequency
#
# Each MLP neuron's activation over the `p x p` grid of inputs `(a, b)` is transformed by the 2D Fourier
# basis; the fraction of its variance in the 3x3 block `{const, cos k, sin k}^2` of one frequency `k` says
# how well that single frequency explains it. Neurons with a fraction >= 0.85 are assigned to that frequency.

# %%
acts = mlp_activations(model, task)  # [p*p, d_mlp], grid order (row a*p + b)
fracs = neuron_frequency_fractions(acts, p)  # [(p-1)/2, d_mlp]
best, arg = fracs.max(dim=0)
explained = best >= NEURON_FVE_THRESHOLD
clusters = {int(k) + 1: int((arg[explained] == k).sum()) for k in arg[explained].unique()}
print(f"{int(explained.sum())} of {acts.shape[1]} neurons explained by one frequency (>= {NEURON_FVE_THRESHOLD})")
print("cluster sizes {frequency: neurons}:", clusters)

# %% [markdown]
# ## 5. Restricted and excluded loss
#
# Fit every logit column on the waves `cos(w_k c*)`, `sin(w_k c*)` of the correct answer `c*` (plus a
# constant), for the key frequencies `k`, by least squares over all `p^2` inputs. *Restricted loss*: the
# loss of the fitted part alone (all inputs) — low once the circuit works. *Excluded loss*: the loss of the
# logits with the key-frequency part removed, on the training inputs — high once the network relies on the
# circuit rather than on memorisation. `progress_measures` computes both; here they are recomputed by hand.

# %%
measures = progress_measures(model, task, key_freqs=keys)
table = logit_table(model, task)  # [p*p, p] float64, row a*p + b
labels = torch.empty(p * p, dtype=torch.long)
labels[task.pair_index] = task.labels  # the answer of every grid row
train_rows = task.pair_index[task.train_idx]

w = 2 * torch.pi * labels.to(torch.float64)[:, None] * torch.tensor(keys, dtype=torch.float64)[None, :] / p
X = torch.cat([torch.ones(p * p, 1, dtype=torch.float64), torch.cos(w), torch.sin(w)], dim=1)  # [p*p, 1+2K]
beta = torch.linalg.lstsq(X, table).solution  # [1+2K, p]
key_part = X[:, 1:] @ beta[1:]
restricted = F.cross_entropy(X @ beta, labels).item()
excluded = F.cross_entropy((table - key_part)[train_rows], labels[train_rows]).item()
train_loss = F.cross_entropy(table[train_rows], labels[train_rows]).item()
print(f"restricted loss: by hand {restricted:.4g}, progress_measures {measures['restricted_loss']:.4g}")
print(
    f"excluded loss:   by hand {excluded:.4g}, progress_measures {measures['excluded_loss']:.4g}  (train loss "
    f"{train_loss:.4g}, chance ln p = {torch.log(torch.tensor(float(p))):.3g})"
)
for k in keys:
    print(f"  excluded loss with only k={k} removed: {measures[f'excluded_loss_k{k}']:.4g}")
assert abs(restricted - measures["restricted_loss"]) <= 1e-6 * max(1.0, restricted)
assert abs(excluded - measures["excluded_loss"]) <= 1e-6 * max(1.0, excluded)

# %%
summary = {
    "run": str(run.dir),
    "p": p,
    "top_W_E_components": [names[i] for i in top],
    "gini_W_E": gini(freq_norms_E),
    "key_frequencies": keys,
    "neuron_clusters": clusters,
    "n_explained": int(explained.sum()),
    "restricted_loss": restricted,
    "excluded_loss": excluded,
    "train_loss": train_loss,
}
OUT.mkdir(parents=True, exist_ok=True)
(OUT / "fourier_walkthrough.json").write_text(json.dumps(summary, indent=2))
print(f"wrote {OUT / 'fourier_walkthrough.json'}")
