"""Trackers mirror exactly the rows the SQLite store gets; each is read back with its own library's reader."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from faults_util import interrupted_at_update

from grokscope import trackers as trk
from grokscope.cli import main
from grokscope.config import apply_overrides
from grokscope.store.metrics import MetricsDB
from grokscope.training import resume, train


@pytest.fixture(autouse=True)
def _tracker_env(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    for var in ("WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def cfg(tiny_config):
    # log every 5 epochs, progress measures at 0 and 25 only: metric names differ between steps
    return apply_overrides(tiny_config, {"train.epochs": 40})


def stored_rows(run_dir: Path) -> dict[tuple[int, str], float]:
    """The SQLite rows with a value, read straight from the database."""
    with MetricsDB(Path(run_dir) / "metrics.sqlite", readonly=True) as db:
        return {(s, n): v for s, n, v in db.rows() if v is not None}


def assert_same_rows(got: dict[tuple[int, str], float], run_dir: Path, *, float32: bool = False) -> None:
    want = stored_rows(run_dir)
    assert set(got) == set(want)
    for key, v in want.items():
        assert got[key] == (float(np.float32(v)) if float32 else v), key
    steps = sorted({s for s, _ in want})
    assert steps == list(range(0, 41, 5))
    assert {n for _, n in want} >= {"train_loss", "train_acc", "test_loss", "test_acc"}


class Recorder:
    """A tracker that remembers every call."""

    name = "recorder"

    def __init__(self):
        self.calls: list[tuple] = []

    def start(self, config, run_dir, *, step=0):
        self.calls.append(("start", Path(run_dir).name, step))

    def log(self, step, metrics):
        self.calls.append(("log", step, dict(metrics)))

    def finish(self, status):
        self.calls.append(("finish", status))

    def rows(self) -> dict[tuple[int, str], float]:
        return {(c[1], n): v for c in self.calls if c[0] == "log" for n, v in c[2].items()}


# --------------------------------------------------------------------------- pure pieces


def test_flatten_config_gives_dotted_scalar_keys():
    flat = trk.flatten_config({"name": "x", "optim": {"lr": 0.01, "betas": [0.9, 0.98]}, "train": {"batch_size": None}})
    assert flat == {"name": "x", "optim.lr": 0.01, "optim.betas": "[0.9, 0.98]", "train.batch_size": None}


def test_make_trackers_parses_lists_and_targets_and_rejects_unknown_names(monkeypatch):
    monkeypatch.setattr(trk, "_require", lambda *a: None)  # no library is imported before start()
    ts = trk.make_trackers(["wandb,tensorboard=/tmp/tb", "mlflow=sqlite:///x.db"])
    assert [type(t).__name__ for t in ts] == ["WandbTracker", "TensorBoardTracker", "MLflowTracker"]
    assert [t.target for t in ts] == [None, "/tmp/tb", "sqlite:///x.db"]
    with pytest.raises(trk.TrackerError, match="unknown tracker 'neptune'"):
        trk.make_trackers(["neptune"])


def test_a_missing_library_is_one_line_naming_the_extra_and_writes_nothing(tmp_path, cfg, monkeypatch, capsys):
    real = trk.importlib.util.find_spec
    monkeypatch.setattr(trk.importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(trk.TrackerError, match=r'pip install "grokscope\[wandb\]"'):
        train(cfg, tmp_path / "py", progress=False, trackers=["wandb"])
    assert not (tmp_path / "py").exists()
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "cli"), "--log", "wandb", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "grokscope[wandb]" in err
    assert not (tmp_path / "cli").exists()
    assert main(["train", "--preset", "tiny", "--out", str(tmp_path / "cli"), "--log", "nope"]) == 2
    assert not (tmp_path / "cli").exists()


def test_a_failing_tracker_warns_once_and_training_and_the_store_carry_on(tmp_path, cfg, capsys):
    class Broken(Recorder):
        name = "broken"

        def log(self, step, metrics):
            if step == 10:
                raise RuntimeError("disk full\nsecond line")
            super().log(step, metrics)

    class BrokenStart(Recorder):
        name = "nostart"

        def start(self, config, run_dir, *, step=0):
            raise ConnectionError("offline")

    plain = train(cfg, tmp_path / "plain", progress=False)
    broken, healthy, nostart = Broken(), Recorder(), BrokenStart()
    run = train(cfg, tmp_path / "tracked", progress=False, trackers=[broken, healthy, nostart])
    assert run.status == "completed" and run.metrics.equals(plain.metrics)
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 2 and "tracker broken failed at step 10 (RuntimeError: disk full)" in err[1] and "nostart" in err[0]
    )
    assert max(s for s, _ in broken.rows()) == 5 and broken.calls[-1] == ("finish", "failed")
    assert_same_rows(healthy.rows(), run.dir)
    assert healthy.calls[0] == ("start", "tracked", 0) and healthy.calls[-1] == ("finish", "completed")


def test_a_resumed_run_sends_only_the_new_rows_and_tensorboard_hides_the_stale_ones(tmp_path, tiny_config):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = apply_overrides(tiny_config, {"train.epochs": 80, "train.checkpoint_every": 20})
    straight = train(cfg, tmp_path / "straight", progress=False)
    first = Recorder()
    with interrupted_at_update(48):  # during epoch 48: rows up to 45 are logged, the state is at 40
        train(cfg, tmp_path / "run", progress=False, trackers=[first, "tensorboard"])
    assert first.calls[-1] == ("finish", "interrupted") and max(s for s, _ in first.rows()) == 45

    second = Recorder()
    run = resume(tmp_path / "run", progress=False, trackers=[second, "tensorboard"])
    assert second.calls[0] == ("start", "run", 40)
    want = {k: v for k, v in stored_rows(run.dir).items() if k[0] > 40}
    assert second.rows() == want and want
    third = Recorder()
    trk.replay(run.dir, [third])  # the whole stored run as one new session
    assert third.rows() == stored_rows(run.dir) and third.calls[-1] == ("finish", "completed")

    acc = EventAccumulator(str(run.dir / "tensorboard"))
    acc.Reload()
    for tag in ("train_loss", "test_acc"):
        events = acc.Scalars(tag)
        steps = [e.step for e in events]
        assert steps == list(range(0, 81, 5))  # each step once: the crashed session's step 45 is purged
        assert [e.value for e in events] == [float(np.float32(v)) for v in straight.metrics[tag]]


# --------------------------------------------------------------------------- the three libraries


def test_tensorboard_event_file_holds_the_stored_curves_and_the_config(tmp_path, cfg):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    assert (
        main(
            [
                "train",
                "--config",
                _write(tmp_path / "c.json", cfg.to_json()),
                "--out",
                str(tmp_path / "run"),
                "--log",
                "tensorboard",
                "--quiet",
            ]
        )
        == 0
    )
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    got = {(e.step, tag): e.value for tag in acc.Tags()["scalars"] for e in acc.Scalars(tag)}
    assert_same_rows(got, tmp_path / "run", float32=True)  # TensorBoard scalars are float32

    start = next(
        c
        for c in acc.PluginTagToContent("hparams").values()
        if HParamsPluginData.FromString(c).HasField("session_start_info")
    )
    hp = HParamsPluginData.FromString(start).session_start_info.hparams
    assert hp["optim.weight_decay"].number_value == 1.0 and hp["task.p"].number_value == 13
    assert hp["task.formula"].string_value == "a+b" and hp["optim.betas"].string_value == "[0.9, 0.98]"


def test_mlflow_run_holds_the_stored_curves_and_the_config_as_params(tmp_path, cfg):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run = train(cfg, tmp_path / "run", progress=False, trackers=["mlflow"])
    client = MlflowClient(tracking_uri=(run.dir / "mlruns").as_uri())
    exp = client.get_experiment_by_name("grokscope")
    (info,) = client.search_runs([exp.experiment_id])
    assert info.info.run_name == "run" and info.info.status == "FINISHED"
    got = {
        (m.step, name): m.value for name in info.data.metrics for m in client.get_metric_history(info.info.run_id, name)
    }
    assert_same_rows(got, run.dir)
    params = info.data.params
    assert params["optim.weight_decay"] == "1.0" and params["task.p"] == "13" and params["task.formula"] == "a+b"
    assert params["train.batch_size"] == "null" and len(params) == len(trk.flatten_config(cfg))


def test_wandb_offline_run_holds_the_stored_curves_and_the_config(tmp_path, cfg):
    wandb = pytest.importorskip("wandb")
    from wandb.proto import wandb_internal_pb2 as pb

    run = train(cfg, tmp_path / "run", progress=False, trackers=["wandb"])
    wandb.teardown()  # W&B's service writes the log in the background; this waits for it (atexit does in a CLI)
    (log,) = (run.dir / "wandb").glob("offline-run-*/run-*.wandb")
    records = [pb.Record.FromString(r) for r in _leveldb_log_records(log.read_bytes())]
    kinds = [r.WhichOneof("record_type") for r in records]

    got = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            for item in r.history.item:
                key = item.key or "/".join(item.nested_key)
                if not key.startswith("_"):
                    got[(r.history.step.num, key)] = json.loads(item.value_json)
    assert_same_rows(got, run.dir)

    (run_rec,) = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run_rec.display_name == "run"
    config = {i.key: json.loads(i.value_json) for i in run_rec.config.update}
    assert config["optim.weight_decay"] == 1.0 and config["task.p"] == 13 and config["task.formula"] == "a+b"
    assert "exit" in kinds and next(r.exit.exit_code for r in records if r.WhichOneof("record_type") == "exit") == 0


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _leveldb_log_records(data: bytes) -> list[bytes]:
    """Payloads of a W&B transaction log: a 7-byte header (':W&B', magic, version), then LevelDB log blocks of
    32 KiB holding chunks (crc32c u32, length u16, type u8: 1 full, 2 first, 3 middle, 4 last)."""
    assert data[:4] == b":W&B"
    out, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # a block's tail too short for a chunk header is zero padding
            pos += 32768 - pos % 32768
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            out.append(chunk)
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            out.append(pending + chunk)
    return out
