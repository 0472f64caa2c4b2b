"""The Appendix D.3 tasks of Nanda et al. (2023): data against brute-force references, the multi-position loss
against a dense hand computation, fresh-data training and resume, at tiny size."""

import math

import pytest
import torch
from faults_util import interrupted_at_update

from grokscope.config import (
    ConfigError,
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    TaskConfig,
    TrainConfig,
    apply_overrides,
)
from grokscope.tasks import make_task
from grokscope.tasks.sequence import IGNORE
from grokscope.training import loop
from grokscope.training.losses import cross_entropy


def _rows(task):
    return task.tokens.tolist(), task.labels.tolist()


def test_digit_addition_targets_are_the_digits_of_the_integer_sum():
    n = 3
    task = make_task(TaskConfig(kind="digit_addition", n_digits=n, n_examples=400, n_train=100))
    assert task.tokens.shape == (400, 3 * n + 2) and (task.d_vocab, task.d_vocab_out) == (12, 10)
    for toks, labs in zip(*_rows(task)):
        a = int("".join(map(str, toks[:n])))
        assert toks[n] == 10 and toks[2 * n + 1] == 11
        b = int("".join(map(str, toks[n + 1 : 2 * n + 1])))
        want = [int(c) for c in str(a + b).zfill(n + 1)]
        assert labs[: 2 * n + 1] == [IGNORE] * (2 * n + 1)
        assert labs[2 * n + 1 :] == want  # '=' predicts the leading digit, each sum digit the next one
        assert toks[2 * n + 2 :] == want[:-1]  # teacher forcing: the sum's digits are the later inputs


def test_repeated_subsequence_labels_follow_the_earlier_occurrence():
    T, V, R = 12, 10, 4
    task = make_task(
        TaskConfig(kind="repeated_subsequence", seq_len=T, n_tokens=V, repeat_len=R, n_examples=300, n_train=100)
    )
    for toks, labs in zip(*_rows(task)):
        repeats = [t for t in range(T) if toks[t] in toks[:t]]
        assert len(repeats) == R and repeats == list(range(repeats[0], repeats[0] + R))  # one contiguous copy
        first = [toks.index(toks[t]) for t in repeats]
        assert first == list(range(first[0], first[0] + R)) and first[-1] < repeats[0]  # of an earlier block
        assert len(set(toks)) == T - R and max(toks) < V
        for t in range(T):
            earlier = [u for u in range(t) if toks[u] == toks[t]]
            scored = bool(earlier) and t != repeats[-1]
            assert labs[t] == (toks[earlier[0] + 1] if scored else IGNORE), (toks, labs, t)


def test_skip_trigram_label_is_the_one_big_token():
    T, V = 6, 8
    task = make_task(TaskConfig(kind="skip_trigram", seq_len=T, n_tokens=V, n_examples=300, n_train=100))
    assert (task.d_vocab, task.d_vocab_out) == (V + 1, V)
    for toks, labs in zip(*_rows(task)):
        big = [x for x in toks[:-1] if x >= V // 2]
        assert len(big) == 1 and toks[-1] == V
        assert labs == [IGNORE] * (T - 1) + big


@pytest.mark.parametrize("kind", ["digit_addition", "repeated_subsequence", "skip_trigram"])
def test_rows_are_distinct_split_disjoint_and_deterministic(kind):
    cfg = TaskConfig(kind=kind, n_digits=1, seq_len=6, n_tokens=6, repeat_len=2, n_examples=90, n_train=30)
    a, b = make_task(cfg), make_task(cfg)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.labels, b.labels)
    assert len({tuple(r) for r in a.tokens.tolist()}) == 90
    assert len(a.train_idx) == 30 and len(a.test_idx) == 60 and not set(a.train_idx.tolist()) & set(a.test_idx.tolist())
    x1, y1 = a.fresh_batch(16, 0, 5)
    x2, _ = b.fresh_batch(16, 0, 5)
    x3, _ = a.fresh_batch(16, 0, 6)
    assert torch.equal(x1, x2) and not torch.equal(x1, x3) and x1.shape == (16, a.n_ctx) and y1.shape == x1.shape


def test_digit_addition_covers_every_pair_when_asked_for_all():
    task = make_task(TaskConfig(kind="digit_addition", n_digits=1, n_examples=100, n_train=50))
    assert sorted(tuple(r[:3:2]) for r in task.tokens.tolist()) == [(a, b) for a in range(10) for b in range(10)]


def test_sequence_config_errors_name_the_field():
    cases = [
        ({"kind": "repeated_subsequence", "seq_len": 10, "n_tokens": 5, "repeat_len": 3}, "task.n_tokens"),
        ({"kind": "repeated_subsequence", "seq_len": 10, "repeat_len": 6}, "task.repeat_len"),
        ({"kind": "skip_trigram", "n_tokens": 7}, "task.n_tokens"),
        ({"kind": "digit_addition", "n_digits": 1, "n_examples": 101}, "task.n_examples"),
        ({"kind": "digit_addition", "n_digits": 10}, "task.n_digits"),
        ({"kind": "modular", "fresh_data": True}, "task.fresh_data"),
    ]
    for fields, path in cases:
        with pytest.raises(ConfigError, match=f"^{path}:"):
            TaskConfig(**fields)
    with pytest.raises(ConfigError, match="^model.arch:"):
        ExperimentConfig(task=TaskConfig(kind="skip_trigram"), model=ModelConfig(arch="mlp"))


# --------------------------------------------------------------------------- loss and metrics


def test_masked_loss_equals_a_dense_hand_computation():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 7, 4, generator=gen, dtype=torch.float64)
    labels = torch.full((5, 7), IGNORE)
    labels[:, 4:] = torch.randint(0, 4, (5, 3), generator=gen)
    labels[2, 5] = IGNORE
    total, count = 0.0, 0
    for i in range(5):
        for t in range(7):
            if labels[i, t] != IGNORE:
                z = logits[i, t].tolist()
                total += math.log(sum(math.exp(v) for v in z)) - z[labels[i, t]]
                count += 1
    got = loop._on_answers(cross_entropy)(logits, labels, torch.float64)
    assert count == 14 and got.item() == pytest.approx(total / count, rel=1e-12)


def _tiny_cfg(task: TaskConfig, epochs: int = 4) -> ExperimentConfig:
    return ExperimentConfig(
        name="d3-tiny",
        task=task,
        model=ModelConfig(d_model=16, n_heads=2, d_head=8, d_mlp=32),
        optim=OptimConfig(lr=1e-2),
        train=TrainConfig(epochs=epochs, log_every=1, measure_every=0, checkpoint_every=2),
    )


def test_logged_metrics_match_a_hand_evaluation_of_the_checkpoint(tmp_path):
    cfg = _tiny_cfg(TaskConfig(kind="digit_addition", n_digits=2, n_examples=80, n_train=50))
    run = loop.train(cfg, tmp_path / "run", progress=False)
    assert run.meta["forward"] == "sequence"
    task, model = run.task(), run.load_model(4).eval()
    with torch.no_grad():
        logits = model.forward_all(task.tokens).double()  # [N, T, C]
    logp = logits.log_softmax(-1)
    m = run.metrics.loc[4]
    for split, rows in (("train", task.train_idx.tolist()), ("test", task.test_idx.tolist())):
        per_slot: dict[int, list[tuple[float, bool]]] = {}
        seq_right = 0
        for r in rows:
            ok_all = True
            for j, t in enumerate(range(5, 8)):  # the 3 answer positions of 2-digit addition
                y = int(task.labels[r, t])
                right = int(logp[r, t].argmax()) == y
                per_slot.setdefault(j, []).append((-float(logp[r, t, y]), right))
                ok_all &= right
            seq_right += ok_all
        flat = [v for vals in per_slot.values() for v in vals]
        assert m[f"{split}_loss"] == pytest.approx(sum(v for v, _ in flat) / len(flat), rel=1e-6)
        assert m[f"{split}_acc"] == pytest.approx(sum(ok for _, ok in flat) / len(flat))
        assert m[f"{split}_seq_acc"] == pytest.approx(seq_right / len(rows))
        for j, vals in per_slot.items():
            assert m[f"{split}_loss_ans{j}"] == pytest.approx(sum(v for v, _ in vals) / len(vals), rel=1e-6)


def test_fresh_data_trains_on_new_batches_and_resumes_exactly(tmp_path, monkeypatch):
    task = TaskConfig(kind="skip_trigram", seq_len=5, n_tokens=6, n_examples=60, n_train=20, fresh_data=True)
    cfg = apply_overrides(
        _tiny_cfg(task, epochs=6), {"train.batch_size": 8, "train.checkpoint_every": 3, "train.checkpoint_early": False}
    )
    seen = []
    real = loop.train_step

    def spy(forward, opt, x, y, *args, **kwargs):
        seen.append(x.clone())
        return real(forward, opt, x, y, *args, **kwargs)

    monkeypatch.setattr(loop, "train_step", spy)
    full = loop.train(cfg, tmp_path / "full", progress=False)
    assert len(seen) == 6 and all(x.shape == (8, 5) for x in seen)  # one update per epoch, batch_size rows
    assert not torch.equal(seen[0], seen[1])
    built = make_task(cfg.task)
    assert torch.equal(seen[2], built.fresh_batch(8, cfg.train.data_seed, 3)[0])

    monkeypatch.setattr(loop, "train_step", real)
    with interrupted_at_update(5):
        loop.train(cfg, tmp_path / "part", progress=False)
    resumed = loop.resume(tmp_path / "part", progress=False)
    assert full.metrics["test_loss"].tolist() == resumed.metrics["test_loss"].tolist()
