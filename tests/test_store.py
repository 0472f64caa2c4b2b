import math
import os
import sqlite3

import pytest
import torch

from grokscope.store import MetricsDB, RunError, atomic_write_bytes, load_run, load_tensors, save_tensors
from grokscope.store.run import checkpoint_path
from grokscope.training import train


def test_tensors_round_trip_with_metadata(tmp_path):
    t = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    save_tensors(tmp_path / "x.safetensors", t, metadata={"step": "7"})
    back, meta = load_tensors(tmp_path / "x.safetensors")
    assert torch.equal(back["a"], t["a"]) and torch.equal(back["b"], t["b"]) and meta == {"step": "7"}


def test_damaged_tensor_files_raise_value_errors(tmp_path):
    path = tmp_path / "x.safetensors"
    save_tensors(path, {"a": torch.randn(100)})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="damaged safetensors file"):
        load_tensors(path)
    path.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="damaged"):
        load_tensors(path)


def test_atomic_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "f.bin"
    atomic_write_bytes(path, b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write_bytes(path, b"new contents")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_metrics_db_round_trip_and_truncate(tmp_path):
    with MetricsDB(tmp_path / "m.sqlite") as db:
        db.log(0, {"loss": 1.0, "acc": 0.5})
        db.log(10, {"loss": 0.5, "acc": float("nan")})
        db.log(20, {"loss": 0.25})
        db.truncate_after(10)
        db.set_meta({"status": "running"})
        assert db.rows() == [(0, "acc", 0.5), (0, "loss", 1.0), (10, "acc", None), (10, "loss", 0.5)]
        assert db.meta() == {"status": "running"}
    # plain SQL works on it
    conn = sqlite3.connect(tmp_path / "m.sqlite")
    assert conn.execute("SELECT value FROM metrics WHERE step = 10 AND name = 'loss'").fetchone() == (0.5,)


def test_run_handle_exposes_config_metrics_checkpoints_and_models(tmp_path, tiny_config):
    run = train(tiny_config, tmp_path / "r", progress=False)
    again = load_run(tmp_path / "r")
    assert again.config == tiny_config
    # the wide frame is the database's rows, read here with plain SQL: a column per name, a row per step, each stored
    # value in its cell and NaN exactly where a metric was not logged at a step
    m = again.metrics
    conn = sqlite3.connect(tmp_path / "r" / "metrics.sqlite")
    stored = conn.execute("SELECT step, name, value FROM metrics").fetchall()
    conn.close()
    assert {"train_loss", "test_acc", "restricted_loss"} <= set(m.columns) == {name for _, name, _ in stored}
    assert list(m.index) == sorted({step for step, _, _ in stored}) == list(range(0, 51, 5)) and m.index.name == "step"
    assert all(
        math.isnan(m.at[step, name]) if value is None else m.at[step, name] == value for step, name, value in stored
    )
    assert int(m.notna().to_numpy().sum()) == sum(value is not None for _, _, value in stored)
    assert m["restricted_loss"].notna().tolist() == [step % 25 == 0 for step in m.index]  # measures every 25 epochs
    assert again.checkpoints == run.checkpoints and again.checkpoints[-1] == 50
    sd = again.load_state_dict(25)
    assert "blocks.0.attn.W_Q" in sd
    model = again.load_model(25)
    assert not model.training
    with pytest.raises(RunError, match="no checkpoint at step 26"):
        again.load_state_dict(26)


def test_run_errors_are_one_line(tmp_path, tiny_config):
    with pytest.raises(RunError, match="no such run directory"):
        load_run(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a grokscope run"):
        load_run(tmp_path / "empty")
    run = train(tiny_config, tmp_path / "r", progress=False)
    ckpt = checkpoint_path(run.dir, 50)
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(RunError) as err:
        run.load_model(50)
    assert "step_00000050.safetensors" in str(err.value) and "\n" not in str(err.value)
    (run.dir / "config.json").write_text("{not json")
    with pytest.raises(RunError, match="invalid run config"):
        load_run(run.dir)


def test_atomic_writes_get_ordinary_file_permissions(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_bytes(tmp_path / "f.json", b"{}")
    assert (tmp_path / "f.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_stale_temporaries_of_a_killed_writer_are_removed_and_nothing_else(tmp_path):
    from grokscope.store.run import remove_stale_temporaries

    (tmp_path / "checkpoints").mkdir()
    stale = [
        tmp_path / ".state.safetensors.ab12.tmp",
        tmp_path / ".config.json.x.tmp",
        tmp_path / "checkpoints" / ".step_00000100.safetensors.q.tmp",
    ]
    kept = [
        tmp_path / ".report.html.zz.tmp",
        tmp_path / "state.safetensors",
        tmp_path / "checkpoints" / "step_00000100.safetensors",
    ]
    for path in stale + kept:
        path.write_bytes(b"x")
    assert sorted(remove_stale_temporaries(tmp_path)) == sorted(stale)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in stale)
