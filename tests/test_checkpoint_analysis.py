"""A checkpoint grokscope did not train gets exactly what a run gets (issue 21, item 2): the analysis in the task's
basis with the ``zoo`` block, the file's own step (or none, never 0), and ``--split FILE``, the model's own train
indices, recorded in the run directory written for it.

The external checkpoints are tiny grokscope runs whose weights are re-saved as plain safetensors state dicts
(no grokscope metadata), so the run's own analysis is an independent reference for the checkpoint path.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from grokscope import apply_overrides, load_run, train
from grokscope.analysis.run import analyze_model, analyze_run, file_step
from grokscope.cli import main
from grokscope.presets import tiny
from grokscope.store import RunError
from grokscope.store.split import SPLIT_FILE, apply_split, read_split_file, run_split
from grokscope.tasks import make_task

pytestmark = pytest.mark.usefixtures("one_thread")

P = 13


def _run(tmp_path_factory, formula):
    cfg = apply_overrides(tiny(), {"task.formula": formula, "train.epochs": 10, "train.checkpoint_every": 5,
                                   "train.measure_every": 0})
    return train(cfg, tmp_path_factory.mktemp("ext") / "run", progress=False)


@pytest.fixture(scope="module")
def add_run(tmp_path_factory):
    return _run(tmp_path_factory, "a+b")


@pytest.fixture(scope="module")
def mul_run(tmp_path_factory):
    return _run(tmp_path_factory, "a*b")


def _export(run, path, metadata=None):
    """Re-save the run's last weights as a plain state dict (what another tool would write)."""
    state = {k: v.detach().contiguous() for k, v in run.load_model(run.checkpoints[-1]).state_dict().items()}
    save_file(state, str(path), metadata=metadata)
    return path


def _analyze(capsys, argv):
    capsys.readouterr()
    assert main(["analyze", *argv]) == 0
    return capsys.readouterr().out


def _cli_error(capsys, argv):
    capsys.readouterr()
    code = main(["analyze", *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


def _without(data, *keys):
    return {k: v for k, v in data.items() if k not in keys}


def test_a_checkpoint_gets_what_its_run_gets_zoo_block_included(mul_run, tmp_path, capsys):
    path = _export(mul_run, tmp_path / "mul.safetensors")
    out = _analyze(capsys, ["--checkpoint", str(path), "--preset", "tiny", "--set", 'task.formula="a*b"'])
    data = json.loads((tmp_path / "mul-analysis" / "analysis.json").read_text())
    _, want = analyze_run(mul_run, write=False)
    assert data["basis"]["name"] == "dlog" and "spectra" in data["zoo"]  # a*b: the discrete-log basis, both spectra
    assert data["zoo"] == want["zoo"]
    # everything but where it came from and the (unknown) step is the run's own analysis, number for number
    skip = ("run", "checkpoints", "phases", "source", "step")
    assert _without(data, *skip) == _without(json.loads(json.dumps(want)), *skip)
    assert data["step"] is None and want["step"] == 10
    assert "step unknown" in out and "at step 0" not in out
    assert "config's split was assumed" in out and "split_seed=0" in out
    assert data["source"]["step"] is None and data["source"]["split"] is None
    assert "config's split was assumed" in data["source"]["split_note"]
    assert not (tmp_path / "mul-analysis" / SPLIT_FILE).exists()
    # the Python API gives the same dict (no run, no source)
    api = analyze_model(mul_run.load_model(10).state_dict(), mul_run.config)
    assert api["zoo"] == data["zoo"] and api["step"] is None and api["key_frequencies"] == data["key_frequencies"]


def test_the_step_is_the_files_own(add_run, tmp_path, capsys):
    meta = _export(add_run, tmp_path / "weights.safetensors", metadata={"step": "10"})
    out = _analyze(capsys, ["--checkpoint", str(meta), "--preset", "tiny", "--quiet"])
    data = json.loads((tmp_path / "weights-analysis" / "analysis.json").read_text())
    assert out.strip() == "" and data["step"] == 10 and data["checkpoints"] == [10] and data["source"]["step"] == 10
    assert load_run(tmp_path / "weights-analysis").checkpoints == [10]

    named = _export(add_run, tmp_path / "model_step_7.safetensors")  # no metadata: the name says 7
    out = _analyze(capsys, ["--checkpoint", str(named), "--preset", "tiny"])
    data = json.loads((tmp_path / "model_step_7-analysis" / "analysis.json").read_text())
    assert data["step"] == 7 and "at step 7" in out and "step unknown" not in out

    assert file_step(tmp_path / "x.safetensors", {"step": "3"}) == 3
    assert file_step(tmp_path / "step-0042.safetensors") == 42
    assert file_step(tmp_path / "final.safetensors") is None
    assert file_step(tmp_path / "stepwise_100.safetensors") is None  # a number not after "step"
    with pytest.raises(RunError, match=r"metadata field step is '-1'"):
        file_step(tmp_path / "x.safetensors", {"step": "-1"})


def _other_split(task, seed=7, fraction=0.7):
    """Flat indices a*p + b of a train set that is not the config's (a different size and seed)."""
    gen = torch.Generator().manual_seed(seed)
    rows = torch.randperm(len(task.pair_index), generator=gen)[: int(fraction * len(task.pair_index))]
    return sorted(int(i) for i in task.pair_index[rows])


def test_split_gives_the_models_own_train_and_test_losses(add_run, tmp_path, capsys):
    task = make_task(add_run.config.task)
    train_pairs = _other_split(task)
    assert sorted(int(i) for i in task.pair_index[task.train_idx]) != train_pairs
    split = tmp_path / "train_idx.json"
    split.write_text(json.dumps(train_pairs))
    path = _export(add_run, tmp_path / "ext.safetensors")
    out = _analyze(capsys, ["--checkpoint", str(path), "--preset", "tiny", "--split", str(split)])
    run_dir = tmp_path / "ext-analysis"
    data = json.loads((run_dir / "analysis.json").read_text())

    # independent reference: the model's logits, scored on the rows of the given pairs
    with torch.no_grad():
        logits = add_run.load_model(10)(task.tokens).to(torch.float64)
    in_train = torch.isin(task.pair_index, torch.tensor(train_pairs))
    assert data["losses"]["train_loss"] == pytest.approx(
        F.cross_entropy(logits[in_train], task.labels[in_train]).item(), rel=1e-6)  # float32 logits
    assert data["losses"]["test_loss"] == pytest.approx(
        F.cross_entropy(logits[~in_train], task.labels[~in_train]).item(), rel=1e-6)  # float32 logits
    config_split = analyze_model(add_run.load_model(10), add_run.config)["losses"]
    assert config_split["test_loss"] != pytest.approx(data["losses"]["test_loss"])  # the split mattered
    assert data["losses"]["loss"] == pytest.approx(config_split["loss"], rel=1e-12)  # over all pairs: the same
    assert f"{len(train_pairs)} train pairs from {split}" in out and "assumed" not in out
    assert data["source"]["split"] == str(split)

    # the run directory records the split; what reads it gets the model's own split back
    recorded = json.loads((run_dir / SPLIT_FILE).read_text())
    assert recorded["train"] == train_pairs and read_split_file(run_dir / SPLIT_FILE) == train_pairs
    rebuilt = run_split(run_dir, make_task(load_run(run_dir).config.task))
    assert torch.equal(rebuilt.train_idx, torch.nonzero(in_train).flatten())
    assert torch.equal(rebuilt.test_idx, torch.nonzero(~in_train).flatten())
    assert run_split(add_run.dir, task) is task  # a run without split.json: its config's split

    # the object form gives the same numbers
    obj = tmp_path / "split_obj.json"
    obj.write_text(json.dumps({"train": list(reversed(train_pairs))}))
    _analyze(capsys, ["--checkpoint", str(path), "--preset", "tiny", "--split", str(obj), "--out",
                      str(tmp_path / "obj"), "--quiet"])
    again = json.loads((tmp_path / "obj" / "analysis.json").read_text())
    assert again["losses"] == data["losses"]


@pytest.mark.parametrize("content, words", [
    ("[1, 2.5]", "must be integers"),
    ("[1, true]", "must be integers"),
    ('["3"]', "must be integers"),
    ("[]", "no train indices"),
    ("[0, 169]", "outside 0..168"),
    ("[-1]", "outside 0..168"),
    ("[4, 5, 4]", "duplicate train indices, e.g. 4"),
    (json.dumps(list(range(P * P))), "needs a test set"),
    ('{"test": [1]}', 'needs a "train" list'),
    ('"0,1"', "expected a JSON list"),
    ("[1, 2", "not JSON"),
])
def test_bad_splits_are_one_line_naming_the_file(add_run, tmp_path, capsys, content, words):
    path = _export(add_run, tmp_path / "m.safetensors")
    split = tmp_path / "split.json"
    split.write_text(content)
    err = _cli_error(capsys, ["--checkpoint", str(path), "--preset", "tiny", "--split", str(split)])
    assert words in err and str(split) in err
    assert not (tmp_path / "m-analysis").exists()  # nothing written


def test_split_errors_without_a_model(tmp_path, capsys, add_run):
    path = _export(add_run, tmp_path / "m.safetensors")
    err = _cli_error(capsys, ["--checkpoint", str(path), "--preset", "tiny", "--split", str(tmp_path / "none.json")])
    assert "no such split file" in err and "none.json" in err
    (tmp_path / "s.json").write_text("[1]")
    assert "go with --checkpoint" in _cli_error(capsys, [str(add_run.dir), "--split", str(tmp_path / "s.json")])
    # a/b has no b = 0 pairs: their indices are not examples of the task
    div = make_task(apply_overrides(tiny(), {"task.formula": "a/b"}).task)
    with pytest.raises(RunError, match=r"1 train indices are not examples of a/b mod 13, e\.g\. 13 \(a=1, b=0\)"):
        apply_split(div, [1, 13, 14], "s.json")
    ok = apply_split(div, [1, 14], "s.json")
    assert [int(div.pair_index[i]) for i in ok.train_idx] == [1, 14]
    assert len(ok.train_idx) + len(ok.test_idx) == len(div.pair_index)
    s5 = make_task(apply_overrides(tiny(), {"task.kind": "s5", "task.formula": "x*y"}).task)
    with pytest.raises(RunError, match="needs a modular task"):
        apply_split(s5, [1], "s.json")


def test_a_task_outside_the_fourier_analysis_gets_the_zoo_as_a_run_does(mul_run, tmp_path, capsys):
    path = _export(mul_run, tmp_path / "div.safetensors")  # the same shapes as an a/b model of p = 13
    out = _analyze(capsys, ["--checkpoint", str(path), "--preset", "tiny", "--set", 'task.formula="a/b"',
                            "--basis", "additive"])  # a/b in the additive basis: not a full grid, no Fourier analysis
    data = json.loads((tmp_path / "div-analysis" / "analysis.json").read_text())
    assert data["step"] is None and data["formula"] == "a/b" and "key_frequencies" not in data
    assert "spectra" in data["zoo"] and "Fourier analysis and progress measures" in data["zoo"]["skipped"]
    assert "on a/b mod 13 (step unknown)" in out and "config's split was assumed" in out


def test_the_run_directory_uses_its_recorded_split(add_run, tmp_path, capsys):
    task = make_task(add_run.config.task)
    train_pairs = _other_split(task, seed=3)
    split = tmp_path / "s.json"
    split.write_text(json.dumps(train_pairs))
    path = _export(add_run, tmp_path / "e.safetensors")
    _analyze(capsys, ["--checkpoint", str(path), "--preset", "tiny", "--split", str(split), "--quiet"])
    first = json.loads((tmp_path / "e-analysis" / "analysis.json").read_text())
    run = load_run(tmp_path / "e-analysis")
    assert [int(task.pair_index[i]) for i in run.task().train_idx] == train_pairs
    _analyze(capsys, [str(run.dir), "--quiet"])  # analyse the directory again: the model's own split
    again = json.loads((tmp_path / "e-analysis" / "analysis.json").read_text())
    assert again["losses"] == first["losses"]
    capsys.readouterr()
    assert main(["show", str(run.dir)]) == 0
    shown = capsys.readouterr().out
    assert f"split:      {len(train_pairs)} train / {len(task.pair_index) - len(train_pairs)} test pairs" in shown
