"""Resuming a single run after its config.json was edited (``grokscope.resume`` / ``grokscope train --resume RUN``).

Resume trains with the config stored in the run, so an edit of config.json between the interruption and the resume
takes effect from the resume point (the last saved state) on. What must hold, each checked against straight runs:

- more epochs: the run equals a straight run of the new length, bit for bit;
- other log, measure or checkpoint intervals: the rows and checkpoints up to the resume point are those of the old
  schedule, the ones after it those of the new schedule, with the same numbers (the intervals never change training);
- fewer epochs, still past the resume point: the run equals a straight run of the new length;
- fewer epochs than the resume point, or a changed shape of the model: one clear error, and the run is left as it was.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from faults_util import assert_same_run, interrupted_at_update

from grokscope.cli import main
from grokscope.config import ExperimentConfig, apply_overrides
from grokscope.store import load_run
from grokscope.store.errors import RunError
from grokscope.training import resume, train

BASE = {"train.log_every": 5, "train.measure_every": 10, "train.checkpoint_every": 20}


@pytest.fixture
def cfg(tiny_config) -> ExperimentConfig:
    return apply_overrides(tiny_config, BASE | {"train.epochs": 60})


def _interrupted(cfg: ExperimentConfig, out: Path, update: int) -> Path:
    """Train ``cfg`` into ``out``, interrupted (as by Ctrl-C) in the ``update``-th update (full batch: epoch
    ``update``)."""
    with interrupted_at_update(update):
        train(cfg, out, progress=False)
    return out


def _edit_config(run_dir: Path, overrides: dict) -> ExperimentConfig:
    """Edit the run's config.json as a user would (through the JSON, not through grokscope)."""
    path = run_dir / "config.json"
    new = apply_overrides(ExperimentConfig.from_json(path.read_text()), overrides)
    path.write_text(new.to_json() + "\n")
    return new


def _rows(run) -> dict[tuple[int, str], float]:
    return {(step, name): value for step, name, value in run.metric_rows()}


def _state_epoch(run_dir: Path) -> int:
    from grokscope.store.run import state_epoch

    epoch = state_epoch(run_dir)
    assert epoch is not None
    return epoch


def _file_hashes(run_dir: Path) -> dict[str, str]:
    """Every file of the run by content. SQLite's side files are left out, but a write-ahead log must be empty (a
    read-only check of the database may leave an empty one and its index behind; a write would fill it)."""
    wal = run_dir / "metrics.sqlite-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    files = [p for p in sorted(run_dir.rglob("*")) if p.is_file() and not p.name.endswith(("-wal", "-shm"))]
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_more_epochs_after_an_interruption_equal_a_straight_run_of_the_new_length(tmp_path, cfg):
    short = apply_overrides(cfg, {"train.epochs": 40})
    run_dir = _interrupted(short, tmp_path / "run", update=31)
    assert _state_epoch(run_dir) == 20 and load_run(run_dir).metrics.index[-1] == 30
    _edit_config(run_dir, {"train.epochs": 60})
    resumed = resume(run_dir, progress=False)
    straight = train(cfg, tmp_path / "straight", progress=False)
    assert resumed.metrics.index[-1] == 60 and resumed.meta["final_epoch"] == "60"
    assert_same_run(straight, resumed)  # metrics, checkpoint steps, checkpoint bytes; completed; no temporary file


@pytest.mark.parametrize(
    "change",
    [
        {"train.log_every": 4, "train.measure_every": 12, "train.checkpoint_every": 15},
        {"train.log_every": 10, "train.measure_every": 0, "train.checkpoint_every": 7, "train.checkpoint_early": False},
    ],
    ids=["denser", "measures-off"],
)
def test_changed_intervals_apply_from_the_resume_point_and_change_no_number(tmp_path, cfg, change):
    run_dir = _interrupted(cfg, tmp_path / "run", update=47)
    resume_point = _state_epoch(run_dir)
    assert resume_point == 40
    new_cfg = _edit_config(run_dir, change)
    resumed = resume(run_dir, progress=False)
    old = train(cfg, tmp_path / "old", progress=False)  # the whole run on the old schedule
    new = train(new_cfg, tmp_path / "new", progress=False)  # ... and on the new one

    # the intervals do not change training: where both straight runs have a checkpoint, the weights are equal
    common = set(old.checkpoints) & set(new.checkpoints)
    assert {0, 60} <= common
    for step in common:
        a, b = old.load_state_dict(step), new.load_state_dict(step)
        assert all(torch.equal(a[k], b[k]) for k in a), step

    old_rows, new_rows = _rows(old), _rows(new)
    expected = {k: v for k, v in old_rows.items() if k[0] <= resume_point} | {
        k: v for k, v in new_rows.items() if k[0] > resume_point
    }
    assert _rows(resumed) == expected
    steps_after = sorted({s for s, _ in expected if s > resume_point})
    assert steps_after == [e for e in range(resume_point + 1, 61) if e % new_cfg.train.log_every == 0 or e == 60]
    if new_cfg.train.measure_every == 0:
        assert not any(name == "restricted_loss" for s, name in expected if s > resume_point)
    else:
        measured = sorted({s for s, name in expected if name == "restricted_loss" and s > resume_point})
        assert measured == [s for s in steps_after if s % new_cfg.train.measure_every == 0]

    assert resumed.checkpoints == sorted(
        {s for s in old.checkpoints if s <= resume_point} | {s for s in new.checkpoints if s > resume_point}
    )
    for step in resumed.checkpoints:
        ref = old if step in old.checkpoints else new
        a, b = ref.load_state_dict(step), resumed.load_state_dict(step)
        assert all(torch.equal(a[k], b[k]) for k in a), step
    assert resumed.status == "completed" and resumed.meta["final_epoch"] == "60"


def test_fewer_epochs_still_past_the_resume_point_equal_a_straight_run_of_the_new_length(tmp_path, cfg):
    run_dir = _interrupted(cfg, tmp_path / "run", update=52)  # state at 40, rows up to 50 (dropped on resume)
    assert _state_epoch(run_dir) == 40 and load_run(run_dir).metrics.index[-1] == 50
    _edit_config(run_dir, {"train.epochs": 43})
    resumed = resume(run_dir, progress=False)
    straight = train(apply_overrides(cfg, {"train.epochs": 43}), tmp_path / "straight", progress=False)
    assert resumed.metrics.index[-1] == 43
    assert_same_run(straight, resumed)


def test_fewer_epochs_than_the_resume_point_is_one_clear_error_that_changes_nothing(tmp_path, cfg, capsys):
    run_dir = _interrupted(cfg, tmp_path / "run", update=47)
    assert _state_epoch(run_dir) == 40
    _edit_config(run_dir, {"train.epochs": 30})
    before = _file_hashes(run_dir)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "train.epochs" in err and "40" in err, err
    assert _file_hashes(run_dir) == before


def test_fewer_epochs_than_the_resume_point_loses_no_stored_row_or_checkpoint(tmp_path, cfg):
    """Whatever resume does with train.epochs below the resume point, nothing trained before is lost or changed."""
    run_dir = _interrupted(cfg, tmp_path / "run", update=47)
    rows, steps = _rows(load_run(run_dir)), load_run(run_dir).checkpoints
    kept = {k: v for k, v in rows.items() if k[0] <= 40}
    ckpt = {
        s: hashlib.sha256((run_dir / "checkpoints" / f"step_{s:08d}.safetensors").read_bytes()).hexdigest()
        for s in steps
    }
    _edit_config(run_dir, {"train.epochs": 30})
    try:
        resume(run_dir, progress=False)
    except RunError:
        pass
    run = load_run(run_dir)
    assert {k: v for k, v in _rows(run).items() if k[0] <= 40} == kept
    for s, digest in ckpt.items():
        assert (
            hashlib.sha256((run_dir / "checkpoints" / f"step_{s:08d}.safetensors").read_bytes()).hexdigest() == digest
        ), s


def test_more_epochs_for_a_completed_run_train_the_added_epochs(tmp_path, cfg):
    run_dir = tmp_path / "run"
    train(apply_overrides(cfg, {"train.epochs": 40}), run_dir, progress=False)
    _edit_config(run_dir, {"train.epochs": 60})
    resumed = resume(run_dir, progress=False)
    straight = train(cfg, tmp_path / "straight", progress=False)
    assert resumed.meta["final_epoch"] == "60"
    assert resumed.metrics.equals(straight.metrics)  # 40 is on the log schedule of both
    assert set(resumed.checkpoints) == set(straight.checkpoints) | {40}
    a, b = straight.load_state_dict(60), resumed.load_state_dict(60)
    assert all(torch.equal(a[k], b[k]) for k in a)


# --------------------------------------------------------------------------- a changed shape

SHAPE_CHANGES = {"d_mlp": {"model.d_mlp": 32}, "p": {"task.p": 17}, "n_layers": {"model.n_layers": 2}}


@pytest.mark.parametrize("change", list(SHAPE_CHANGES))
def test_a_changed_shape_on_resume_is_one_clear_error_with_exit_code_2(tmp_path, cfg, capsys, change):
    run_dir = _interrupted(cfg, tmp_path / "run", update=27)
    _edit_config(run_dir, SHAPE_CHANGES[change])
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("grokscope train: error: ") and "Traceback" not in out.err, out.err
    assert "config.json" in lines[0] and "shape" in lines[0], lines[0]


@pytest.mark.parametrize("change", list(SHAPE_CHANGES))
def test_a_changed_shape_on_resume_damages_nothing(tmp_path, cfg, change):
    """The resume fails (however it reports it) before writing: every file is as it was, and with config.json restored
    the run resumes to the straight run, bit for bit."""
    run_dir = _interrupted(cfg, tmp_path / "run", update=27)
    original = (run_dir / "config.json").read_text()
    _edit_config(run_dir, SHAPE_CHANGES[change])
    before = _file_hashes(run_dir)
    with pytest.raises(Exception) as info:  # noqa: B017 - the kind of error is the subject of the test above
        resume(run_dir, progress=False)
    assert not isinstance(info.value, AssertionError)
    assert _file_hashes(run_dir) == before
    (run_dir / "config.json").write_text(original)
    resumed = resume(run_dir, progress=False)
    assert_same_run(train(cfg, tmp_path / "straight", progress=False), resumed)


def test_an_unchanged_config_resumed_through_the_cli_equals_a_straight_run(tmp_path, cfg, capsys):
    """The CLI path (grokscope train --resume): exit 0, the summary of the finished run, bitwise the straight run."""
    run_dir = _interrupted(cfg, tmp_path / "run", update=33)
    capsys.readouterr()
    assert main(["train", "--resume", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "status:     completed" in out and "epochs:     60 of 60" in out
    assert_same_run(train(cfg, tmp_path / "straight", progress=False), load_run(run_dir))
    assert json.loads((run_dir / "config.json").read_text()) == cfg.to_dict()


def test_loading_a_checkpoint_after_a_shape_edit_is_one_line(tmp_path, capsys):
    """analyze and the figures load checkpoints through Run.load_model: an edited config.json is one clear line."""
    import json

    from grokscope.cli import main
    from grokscope.presets import tiny
    from grokscope.store.run import Run, RunError
    from grokscope.training import train

    cfg = tiny()
    run = train(
        type(cfg).from_dict({**cfg.to_dict(), "train": {**cfg.to_dict()["train"], "epochs": 4}}),
        tmp_path / "r",
        progress=False,
    )
    data = json.loads((run.dir / "config.json").read_text())
    data["model"]["d_mlp"] = data["model"]["d_mlp"] * 2
    (run.dir / "config.json").write_text(json.dumps(data))
    with pytest.raises(RunError, match="does not fit the model of config.json .*blocks.0.mlp.W_in"):
        Run(run.dir).load_model()
    assert main(["analyze", str(run.dir), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and len(err.strip().splitlines()) == 1
