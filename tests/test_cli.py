import json
import subprocess
import sys

from grokscope.cli import main
from grokscope.presets import tiny
from grokscope.store import load_run
from grokscope.training import train

# The table of malformed inputs lives in test_bad_inputs.py; SIGKILL and other faults in test_faults.py.


def test_errors_on_a_directory_that_is_not_a_run_change_nothing(tmp_path, capsys):
    folder = tmp_path / "notarun"
    folder.mkdir()
    (folder / "keep.txt").write_text("precious")
    before = sorted(p.name for p in folder.iterdir())
    assert main(["train", "--resume", str(folder)]) == 2
    assert main(["train", "--preset", "tiny", "--out", str(folder)]) == 2
    assert main(["show", str(folder)]) == 2
    assert sorted(p.name for p in folder.iterdir()) == before and (folder / "keep.txt").read_text() == "precious"
    err = capsys.readouterr().err
    assert "not a grokscope run" in err and "not an empty directory" in err


def test_training_into_an_existing_run_is_refused(tmp_path, capsys):
    run = train(tiny(), tmp_path / "r", progress=False)
    before = {p.name: p.stat().st_mtime_ns for p in run.dir.rglob("*")}
    assert main(["train", "--preset", "tiny", "--out", str(run.dir)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert {p.name: p.stat().st_mtime_ns for p in run.dir.rglob("*")} == before


def test_train_show_and_presets_commands(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "tiny",
                "--set",
                "optim.weight_decay=0.5",
                "--epochs",
                "20",
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert f"run:        {out}" in text and "status:     completed" in text
    run = load_run(out)
    assert run.config.optim.weight_decay == 0.5 and run.config.train.epochs == 20
    assert main(["show", str(out), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["config"]["optim"]["weight_decay"] == 0.5 and shown["meta"]["status"] == "completed"
    assert main(["presets"]) == 0
    listing = capsys.readouterr().out
    assert "nanda-mainline" in listing and "quick" in listing
    assert main(["presets", "quick"]) == 0
    assert json.loads(capsys.readouterr().out)["task"]["p"] == 53


def test_python_dash_m_and_help():
    proc = subprocess.run([sys.executable, "-m", "grokscope", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "train" in proc.stdout and "presets" in proc.stdout
