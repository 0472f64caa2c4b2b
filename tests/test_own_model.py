"""Your own model (issue 22 item 3): any nn.Module mapping tokens [batch, n_ctx] to logits trains, resumes after
kill -9 to the same bits, loads back and reports; a module that does not fit is one line.

Run as a script, this file trains the run of :data:`CFG` with :class:`Tiny` and SIGKILLs itself just after the
N-th safetensors write: ``python tests/test_own_model.py OUT N``.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch
from faults_util import run_killed_script
from torch import nn

from grokscope.config import ExperimentConfig, OptimConfig, TaskConfig, TrainConfig
from grokscope.models import build_model
from grokscope.store.run import Run, RunError
from grokscope.tasks import make_task, register_task, table_task
from grokscope.training import resume, train

HERE = Path(__file__).resolve()
_G = torch.Generator().manual_seed(1)
_TABLE = torch.randint(0, 6, (6, 6), generator=_G)  # a lookup table the test builds: no formula behind it
register_task("own-model-table6", table_task({(a, b): int(_TABLE[a, b]) for a in range(6) for b in range(6)}),
              replace=True)
CFG = ExperimentConfig(
    name="own-model",
    task=TaskConfig(kind="registered", name="own-model-table6", train_fraction=0.7),
    optim=OptimConfig(lr=3e-3, weight_decay=0.5, warmup_steps=5),
    train=TrainConfig(epochs=40, log_every=5, checkpoint_every=10, measure_every=0),
)


class Tiny(nn.Module):
    """Embeddings, flattened, through a ReLU MLP: logits at the last position [batch, d_vocab_out]."""

    def __init__(self, d_vocab: int = 7, n_ctx: int = 3, d_out: int = 6, d: int = 16, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(d_vocab, d)
        self.mlp = nn.Sequential(nn.Linear(n_ctx * d, 32), nn.ReLU(), nn.Linear(32, d_out))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.emb(tokens).flatten(1))  # [batch, d_out]


class EveryPosition(nn.Module):
    """A causal running mean of embeddings, then a linear read-out: logits at every position [batch, n_ctx, d_out]."""

    def __init__(self, d_vocab: int = 7, d_out: int = 6, d: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(d_vocab, d)
        self.out = nn.Linear(d, d_out)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens).cumsum(1) / torch.arange(1, tokens.shape[1] + 1)[:, None]
        return self.out(torch.relu(x))


def _same_weights(a: Run, b: Run) -> bool:
    x, y = a.load_state_dict(), b.load_state_dict()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _rows(run: Run) -> list:
    return [r for r in run.metric_rows() if "seconds" not in r[1]]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """The uninterrupted run of CFG with Tiny (one thread here and in the killed process: the same sums)."""
    return train(CFG, tmp_path_factory.mktemp("own") / "full", model=Tiny(), progress=False, threads=1)


def test_a_user_module_trains_and_the_run_says_how(full):
    meta = full.meta
    assert meta["status"] == "completed" and meta["forward"] == "user"
    assert meta["model_class"].endswith("Tiny") and meta["logits_at"] == "last position"
    assert meta["measures"].startswith("skipped")
    assert set(full.load_state_dict()) == set(Tiny().state_dict())  # checkpoints: the module's own state dict
    first, last = full.metrics["train_loss"].iloc[0], full.metrics["train_loss"].iloc[-1]
    assert last < 0.7 * first  # it learns


def test_a_user_module_resumes_after_kill_9_to_the_same_bits(full, tmp_path):
    out = tmp_path / "killed"
    run_killed_script(HERE, out, 5)
    assert Run(out).status == "running"
    with pytest.raises(RunError, match="resume it with model="):
        resume(out, progress=False)
    resumed = resume(out, model=Tiny(seed=7), progress=False, threads=1)  # weights replaced by the resume point
    assert resumed.status == "completed"
    assert _same_weights(full, resumed) and _rows(full) == _rows(resumed)


def test_it_loads_back_and_reports(full, tmp_path):
    from grokscope.figures.report import write_report

    model = full.load_model(model=Tiny(seed=3))
    task = make_task(CFG.task)
    with torch.no_grad():
        acc = (model(task.tokens[task.train_idx]).argmax(-1) == task.labels[task.train_idx]).double().mean()
    assert acc.item() == pytest.approx(full.metrics["train_acc"].iloc[-1])
    with pytest.raises(RunError, match=r"load it into a new one with model="):
        full.load_model()
    assert write_report(full, tmp_path / "report.html").exists()


def test_logits_at_every_position_are_read_at_the_last(tmp_path):
    run = train(dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, epochs=5)), tmp_path / "all",
                model=EveryPosition(), progress=False)
    assert run.meta["logits_at"] == "every position"
    model, task = run.load_model(model=EveryPosition()), make_task(CFG.task)
    with torch.no_grad():
        z = model(task.train_tokens)[:, -1]
    loss = torch.nn.functional.cross_entropy(z.double(), task.train_labels).item()
    assert loss == pytest.approx(run.metrics["train_loss"].iloc[-1], rel=1e-6)


def test_a_module_that_does_not_fit_is_one_line(full, tmp_path):
    short = dataclasses.replace(CFG, train=dataclasses.replace(CFG.train, epochs=5))
    with pytest.raises(RunError, match=r"^model: .*Tiny returned logits \[2, 5\] on tokens \[2, 3\]; expected") as e:
        train(short, tmp_path / "bad", model=Tiny(d_out=5), progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(RunError, match="not .*EveryPosition; pass a module of that class"):
        resume(full.dir, model=EveryPosition(), progress=False)
    with pytest.raises(RunError, match="trained grokscope's own model"):
        half = train(short, tmp_path / "own", progress=False)
        resume(half.dir, model=Tiny(), progress=False)


def test_grokscope_s_own_transformer_passed_as_a_module_is_the_general_path_bit_for_bit(tmp_path):
    """A module exposing TransformerLens names gets the progress measures; passed as model= it trains exactly as the
    config's own model on the general path."""
    cfg = ExperimentConfig(task=TaskConfig(formula="a+b", p=7, train_fraction=0.6),
                           train=TrainConfig(epochs=10, log_every=5, measure_every=5, checkpoint_every=5,
                                             fast_path=False))
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, d_model=16, n_heads=2, d_head=8, d_mlp=32))
    ref = train(cfg, tmp_path / "ref", progress=False)
    task = make_task(cfg.task)
    mine = train(cfg, tmp_path / "mine", progress=False,
                 model=build_model(cfg.model, d_vocab=task.d_vocab, d_vocab_out=task.d_vocab_out, n_ctx=task.n_ctx))
    assert mine.meta["measures"].startswith("applied")
    assert _same_weights(ref, mine) and _rows(ref) == _rows(mine)


def test_a_hooked_transformer_trains_with_the_measures(tmp_path):
    """TransformerLens's HookedTransformer (LayerNorm, logits at every position): the measures apply (it exposes
    W_E, W_U, blocks), and the logged loss is the loaded module's own loss at the last position."""
    tl = pytest.importorskip("transformer_lens")
    cfg = ExperimentConfig(task=TaskConfig(formula="a+b", p=7, train_fraction=0.6),
                           train=TrainConfig(epochs=6, log_every=3, measure_every=3, checkpoint_every=3))
    task = make_task(cfg.task)

    def hooked():
        return tl.HookedTransformer(tl.HookedTransformerConfig(
            n_layers=1, d_model=16, n_ctx=3, d_head=8, n_heads=2, d_mlp=32, d_vocab=task.d_vocab,
            d_vocab_out=task.d_vocab_out, act_fn="relu", normalization_type="LN", seed=0))

    run = train(cfg, tmp_path / "tl", model=hooked(), progress=False)
    assert run.meta["logits_at"] == "every position" and run.meta["measures"].startswith("applied")
    assert "restricted_loss" in run.metrics.columns
    model = run.load_model(model=hooked())
    with torch.no_grad():
        z = model(task.train_tokens)[:, -1]
    loss = torch.nn.functional.cross_entropy(z.double(), task.train_labels).item()
    assert loss == pytest.approx(run.metrics["train_loss"].iloc[-1], rel=1e-6)


if __name__ == "__main__":
    from faults_util import die_after_safetensors_write

    die_after_safetensors_write(int(sys.argv[2]))
    train(CFG, sys.argv[1], model=Tiny(), progress=False, threads=1)
