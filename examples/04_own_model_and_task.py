# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     name: python3
# ---

# %% [markdown]
# # Your own model and your own task
#
# grokscope trains any `nn.Module` that maps tokens [batch, n_ctx] to logits, on any task given as a Python
# callable or a lookup table over a finite alphabet. Here: a 2-layer transformer with LayerNorm and rotary
# positions learns a table with no formula in sight (addition mod p with the symbols shuffled), and the run gets
# the usual store, resume and full report. The model is grokscope's own transformer set by TransformerLens's knobs
# (`normalization_type="LN"`, `positional_embedding_type="rotary"`, `n_layers=2`), so its checkpoints load into a
# `HookedTransformer`; section 4 trains the same architecture written in plain PyTorch, as any module can be.
#
# Settings: `GROKSCOPE_EXAMPLE_TINY=1` / `--tiny` uses p = 11 and 30 epochs (seconds, what the tests run);
# otherwise p = 31 and 2000 epochs for each of the two runs (see docs/own-model-and-task.md for their outcome and
# wall time on one core). `GROKSCOPE_EXAMPLE_OUT=DIR` is where the runs and their reports go.

# %%
import os
import sys
from pathlib import Path

import torch
from torch import nn

import grokscope
from grokscope.config import ExperimentConfig, ModelConfig, OptimConfig, TaskConfig, TrainConfig
from grokscope.figures.report import write_report
from grokscope.tasks import register_task, table_task

torch.set_num_threads(1)
TINY = os.environ.get("GROKSCOPE_EXAMPLE_TINY") == "1" or "--tiny" in sys.argv
OUT = Path(os.environ.get("GROKSCOPE_EXAMPLE_OUT", "example-output"))
P, EPOCHS = (11, 30) if TINY else (31, 2000)

# %% [markdown]
# ## 1. Your own task: a lookup table
#
# Symbols `s0 .. s{p-1}`, shuffled once; the label of (x, y) is the symbol at position pos(x) + pos(y) mod p. The
# table is a group, but nothing in it says so. `table_task` turns any `{inputs: label}` table (or a generator of
# rows) into a task; a table with two labels for one input is refused with one line. `register_task` names it,
# so a config (and a sweep spec) can use it: `TaskConfig(kind="registered", name=...)`.

# %%
gen = torch.Generator().manual_seed(0)
SYMBOLS = [f"s{i}" for i in torch.randperm(P, generator=gen).tolist()]
TABLE = {(x, y): SYMBOLS[(i + j) % P] for i, x in enumerate(SYMBOLS) for j, y in enumerate(SYMBOLS)}
register_task("shuffled-add", table_task(TABLE, alphabet=sorted(SYMBOLS, key=lambda s: int(s[1:]))), replace=True)

cfg = ExperimentConfig(
    name="own-model",
    task=TaskConfig(kind="registered", name="shuffled-add", train_fraction=0.5, split_seed=0),
    model=ModelConfig(n_layers=2, d_model=64, n_heads=4, d_head=16, d_mlp=256, normalization_type="LN",
                      positional_embedding_type="rotary"),
    optim=OptimConfig(lr=3e-3, weight_decay=1.0, warmup_steps=10),
    train=TrainConfig(epochs=EPOCHS, log_every=10, checkpoint_every=max(EPOCHS // 10, 1), measure_every=0),
)
task = grokscope.make_task(cfg.task)
print(f"task: {task.tokens.shape[0]} rows, tokens {list(task.tokens.shape)}, {task.d_vocab_out} labels")

# %% [markdown]
# ## 2. The model: LayerNorm and rotary positions, two layers, by configuration
#
# `ModelConfig` carries TransformerLens's architecture knobs with TransformerLens's meanings: rotary positions
# rotate each head's queries and keys (GPT-NeoX halves, base 10000, all of d_head unless `rotary_dim` says less) and
# the model has no `W_pos`. The fast path covers the paper's one-layer model only; the run's meta says which
# forward ran. Train, resume and write the full report:

# %%
knob_dir = OUT / "own-model-run"
if (knob_dir / "config.json").exists() and grokscope.load_run(knob_dir).status != "completed":
    knob_run = grokscope.resume(knob_dir)
elif (knob_dir / "config.json").exists():
    knob_run = grokscope.load_run(knob_dir)
else:
    knob_run = grokscope.train(cfg, knob_dir)
last = knob_run.metrics.iloc[-1]
grokked = knob_run.meta.get("grok_epoch") or "none"
print(f"config model: forward {knob_run.meta['forward']}; epoch {knob_run.metrics.index[-1]}: train acc "
      f"{last['train_acc']:.3f}, test acc {last['test_acc']:.3f}; grok epoch {grokked}")
print(f"report: {write_report(knob_run, OUT / 'own-model-report.html')}")
try:  # the checkpoint as a TransformerLens model (the extra "tl")
    hooked = grokscope.to_hooked_transformer(knob_run)
    print(f"HookedTransformer: positional_embedding_type={hooked.cfg.positional_embedding_type}, "
          f"rotary_dim={hooked.cfg.rotary_dim}, normalization_type={hooked.cfg.normalization_type}")
except ImportError as e:
    print(f"(no TransformerLens: {e})")

# %% [markdown]
# ## 3. Your own model: the same architecture in plain PyTorch
#
# Any module works: the loop reads its output shape once ([batch, d_vocab_out] or [batch, n_ctx, d_vocab_out], the
# last position scored) and records it in the run's meta. Checkpoints are the module's own state dict.


# %%
def rotate(x: torch.Tensor) -> torch.Tensor:
    """Rotary positions on [batch, heads, n_ctx, d_head]: pairs of features turned by position-dependent angles."""
    T, d = x.shape[-2], x.shape[-1]
    freq = 10000 ** (-torch.arange(0, d, 2, dtype=x.dtype) / d)  # [d/2]
    angle = torch.arange(T, dtype=x.dtype)[:, None] * freq  # [T, d/2]
    cos, sin = angle.cos(), angle.sin()
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).flatten(-2)


class Block(nn.Module):
    def __init__(self, d: int, heads: int, d_mlp: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, d_mlp), nn.ReLU(), nn.Linear(d_mlp, d))
        self.heads = heads

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [batch, n_ctx, d]
        B, T, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        att = nn.functional.scaled_dot_product_attention(rotate(q), rotate(k), v, is_causal=True)
        x = x + self.o(att.transpose(1, 2).reshape(B, T, d))
        return x + self.mlp(self.ln2(x))


class RotaryTransformer(nn.Module):
    def __init__(self, d_vocab: int, d_out: int, d: int = 64, heads: int = 4, d_mlp: int = 256, layers: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(d_vocab, d)
        self.blocks = nn.ModuleList(Block(d, heads, d_mlp) for _ in range(layers))
        self.ln_final, self.unembed = nn.LayerNorm(d), nn.Linear(d, d_out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # [batch, n_ctx] -> [batch, d_out]
        x = self.embed(tokens)
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_final(x[:, -1]))


# %% [markdown]
# ## 4. Train, resume, report: the module

# %%
run_dir = OUT / "own-module-run"
if (run_dir / "config.json").exists() and grokscope.load_run(run_dir).status != "completed":
    run = grokscope.resume(run_dir, model=RotaryTransformer(task.d_vocab, task.d_vocab_out))  # same class
elif (run_dir / "config.json").exists():
    run = grokscope.load_run(run_dir)
else:
    run = grokscope.train(cfg, run_dir, model=RotaryTransformer(task.d_vocab, task.d_vocab_out))
meta = run.meta
print(f"forward: {meta['forward']} ({meta['logits_at']}); measures {meta['measures']}")
last = run.metrics.iloc[-1]
print(f"epoch {run.metrics.index[-1]}: train acc {last['train_acc']:.3f}, test acc {last['test_acc']:.3f}; "
      f"grok epoch {meta.get('grok_epoch') or 'none'}")

model = run.load_model(model=RotaryTransformer(task.d_vocab, task.d_vocab_out))  # the module, with its weights
report = write_report(run, OUT / "own-module-report.html")
print(f"report: {report}")
