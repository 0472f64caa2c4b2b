import math
from dataclasses import replace

import pytest
import torch
from faults_util import interrupted_at_update

from grokscope.config import OptimConfig, TrainConfig, apply_overrides
from grokscope.store import load_run
from grokscope.training import TrainingDiverged, checkpoint_epochs, loop, lr_at, resume, train


def test_warmup_schedule_is_linear_from_zero():
    optim = OptimConfig(lr=1e-3, warmup_steps=10)
    assert [lr_at(t, optim) for t in (0, 1, 5, 10, 50)] == pytest.approx([0.0, 1e-4, 5e-4, 1e-3, 1e-3])
    assert lr_at(0, OptimConfig(lr=2e-3, warmup_steps=0)) == 2e-3


def test_checkpoint_schedule_is_dense_early_and_keeps_the_final_epoch():
    eps = checkpoint_epochs(TrainConfig(epochs=1050, checkpoint_every=100))
    assert {0, 1, 2, 4, 8, 16, 32, 64, 100, 200, 1000, 1050} <= eps
    assert 128 not in eps and 150 not in eps
    assert checkpoint_epochs(TrainConfig(epochs=300, checkpoint_every=100, checkpoint_early=False)) == {
        0,
        100,
        200,
        300,
    }


def test_training_a_tiny_model_reduces_the_loss_and_fills_the_store(tmp_path, tiny_config):
    cfg = apply_overrides(tiny_config, {"train.epochs": 60})
    run = train(cfg, tmp_path / "run", progress=False)
    m = run.metrics
    assert list(m.index[:3]) == [0, 5, 10] and m.index[-1] == 60
    assert m["train_loss"].iloc[-1] < 0.5 * m["train_loss"].iloc[0]
    assert 0.8 * math.log(13) < m["train_loss"].iloc[0] < 1.3 * math.log(13)
    assert run.status == "completed" and run.meta["final_epoch"] == "60"
    assert run.checkpoints == sorted(checkpoint_epochs(cfg.train))
    model = run.load_model()
    with torch.no_grad():
        logits = model(run.task().train_tokens)
    loss = torch.nn.functional.cross_entropy(logits.double(), run.task().train_labels).item()
    assert loss == pytest.approx(m["train_loss"].iloc[-1], rel=1e-5)
    assert (run.dir / "config.json").read_text().strip() == cfg.to_json().strip()


def test_the_evaluation_shares_its_forward_with_the_next_update_and_changes_no_number(
    tmp_path, tiny_config, monkeypatch
):
    """Full batch on the fast path: a log epoch's training logits are the next update's forward, computed once."""
    cfg = apply_overrides(tiny_config, {"train.epochs": 40, "train.measure_every": 20})
    real_choose = loop.choose_forward
    rows = []

    def counting(path_name):
        def choose(*args, **kwargs):
            choice = real_choose(*args, **kwargs)
            assert choice.path == "fast"
            return replace(choice, fn=lambda tokens: rows.append(tokens.shape[0]) or choice.fn(tokens), path=path_name)

        return choose

    monkeypatch.setattr(loop, "choose_forward", counting("fast"))
    shared = train(cfg, tmp_path / "shared", progress=False)
    shared_rows, rows[:] = sum(rows), []
    monkeypatch.setattr(loop, "choose_forward", counting("fast, evaluated apart"))  # not "fast": no sharing
    apart = train(cfg, tmp_path / "apart", progress=False)
    task = apart.task()
    n_logs = len(apart.metrics)
    assert (
        sum(rows) - shared_rows == (n_logs - 1) * task.train_idx.numel()
    )  # one train forward saved per log but the last
    assert shared.metrics.equals(apart.metrics)
    a, b = shared.load_state_dict(), apart.load_state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_same_config_gives_the_same_run_bit_for_bit(tmp_path, tiny_config, dropout):
    """Dropout too: its draws are seeded by (train.data_seed, epoch), whatever torch's generator held before; the
    caller's generator state is restored."""
    cfg = apply_overrides(tiny_config, {"train.epochs": 30, "train.batch_size": 20, "model.dropout": dropout})
    a = train(cfg, tmp_path / "a", progress=False)
    torch.manual_seed(12345)
    state = torch.random.get_rng_state()
    b = train(cfg, tmp_path / "b", progress=False)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.metrics.equals(b.metrics)
    sa, sb = a.load_state_dict(), b.load_state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("batch_size,dropout", [(None, 0.0), (24, 0.0), (24, 0.3)])
def test_an_interrupted_run_resumes_exactly(tmp_path, tiny_config, batch_size, dropout):
    cfg = apply_overrides(
        tiny_config,
        {"train.epochs": 80, "train.batch_size": batch_size, "train.checkpoint_every": 20, "model.dropout": dropout},
    )
    straight = train(cfg, tmp_path / "straight", progress=False)

    with interrupted_at_update(47 * (1 if batch_size is None else 4) + 1):  # 84 train pairs: 4 batches of <= 24
        train(cfg, tmp_path / "crashed", progress=False)
    assert load_run(tmp_path / "crashed").metrics.index[-1] == 45
    resumed = resume(tmp_path / "crashed", progress=False)
    assert resumed.metrics.equals(straight.metrics)
    assert resumed.checkpoints == straight.checkpoints
    for step in straight.checkpoints:
        a, b = straight.load_state_dict(step), resumed.load_state_dict(step)
        assert all(torch.equal(a[k], b[k]) for k in a), step
    assert resumed.status == "completed"
    again = resume(tmp_path / "crashed", progress=False)  # resuming a finished run changes nothing
    assert again.metrics.equals(straight.metrics)


def test_an_interrupted_run_releases_its_database_at_once(tmp_path, tiny_config):
    """Ctrl-C in a notebook: the loop closes the SQLite database before the exception leaves it, even while the
    traceback (and with it the loop's frames) is still referenced, so metrics.sqlite alone holds every row and a
    copy of the folder is complete."""
    with interrupted_at_update(26) as excinfo:
        train(apply_overrides(tiny_config, {"train.epochs": 40}), tmp_path / "run", progress=False)
    assert excinfo.value.__traceback__ is not None  # the frames holding the database are alive
    wal = tmp_path / "run" / "metrics.sqlite-wal"
    assert (
        not wal.exists() or wal.stat().st_size == 0
    )  # SQLite folds its log into the file when the last connection closes


def test_non_finite_loss_stops_with_a_clear_message_and_keeps_good_checkpoints(tmp_path, tiny_config, monkeypatch):
    cfg = apply_overrides(tiny_config, {"train.epochs": 60})
    real_step = loop.train_step
    calls = {"n": 0}

    def nan_step(*args, **kwargs):
        calls["n"] += 1
        loss = real_step(*args, **kwargs)
        return loss * float("nan") if calls["n"] >= 30 else loss

    monkeypatch.setattr(loop, "train_step", nan_step)
    with pytest.raises(
        TrainingDiverged, match="non-finite training loss at epoch 30; the last good checkpoint is step 25"
    ):
        train(cfg, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    assert run.status == "failed" and max(run.checkpoints) == 25


def test_stop_after_grok_stops_at_the_documented_epoch(tmp_path, tiny_config, monkeypatch):
    cfg = apply_overrides(tiny_config, {"train.epochs": 60, "train.stop_after_grok": 1.5})
    real_loss_acc = loop.loss_and_accuracy
    calls = {"n": 0}

    def fake(logits, labels, dtype=torch.float64):
        loss, acc = real_loss_acc(logits, labels, dtype)
        calls["n"] += 1
        # evaluations come in (train, test) pairs at epochs 0, 5, 10, ...: test "groks" at epoch 20
        epoch = 5 * ((calls["n"] - 1) // 2)
        return loss, (1.0 if (calls["n"] % 2 == 0 and epoch >= 20) else acc)

    monkeypatch.setattr(loop, "loss_and_accuracy", fake)
    run = train(cfg, tmp_path / "run", progress=False)
    assert run.meta["grok_epoch"] == "20"
    assert run.meta["final_epoch"] == "30" and run.metrics.index[-1] == 30
    assert 30 in run.checkpoints
