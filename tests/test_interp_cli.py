"""`grokscope patch|probe|sae` on a tiny trained run: output, JSON files, report figures and one-line errors."""

import json

import pytest

from grokscope.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from grokscope.config import apply_overrides
    from grokscope.presets import tiny
    from grokscope.training import train

    cfg = apply_overrides(tiny(), {"train.epochs": 60, "train.checkpoint_every": 30})
    return train(cfg, tmp_path_factory.mktemp("interpcli") / "run", progress=False).dir


def test_patch_probe_sae_commands(run_dir, capsys):
    assert main(["patch", str(run_dir), "--key-freqs", "1,2", "--n", "24", "--random-clusters", "5"]) == 0
    out = capsys.readouterr().out
    assert "attribution patching vs activation patching" in out and "neuron clusters" in out
    data = json.loads((run_dir / "interp_patch.json").read_text())
    assert set(data["sweeps"]) == {"heads", "neurons", "neurons_pre", "positions"}
    assert data["sweeps"]["neurons"]["pearson"] > 0.99

    assert main(["probe", str(run_dir), "--key-freqs", "1,2", "--steps", "all", "--extra-freqs", "3"]) == 0
    data = json.loads((run_dir / "interp_probe.json").read_text())
    from grokscope.store import load_run

    assert [r["step"] for r in data["reports"]] == load_run(run_dir).checkpoints and "a+b k=3" in data["reports"][0][
        "r2"
    ]

    assert (
        main(
            [
                "sae",
                str(run_dir),
                "--key-freqs",
                "1,2",
                "--features",
                "8",
                "--k",
                "2",
                "--train-steps",
                "20",
                "--compare",
                "30",
            ]
        )
        == 0
    )
    data = json.loads((run_dir / "interp_sae.json").read_text())
    assert [r["step"] for r in data["reports"]] == [60, 30] and len(data["comparisons"]) == 1

    from grokscope.figures.registry import build_all

    results = {
        r.key: r
        for r in build_all(run_dir, only=["interp_patching", "interp_attribution", "interp_probes", "interp_sae"])
    }
    assert all(results[k].figure is not None for k in results), {k: r.note for k, r in results.items()}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["patch", "/nonexistent/run"], "no such run directory"),
        (["probe", "{run}", "--key-freqs", "x"], "--key-freqs: expected comma-separated integers"),
        (["probe", "{run}", "--key-freqs", "99"], "frequencies must be in 1..6"),
        (["probe", "{run}", "--key-freqs", "1", "--steps", "7"], "no checkpoint at [7]"),
        (["probe", "{run}", "--key-freqs", "1", "--hook", "blocks.0.nope"], "no activation named"),
        (["patch", "{run}", "--key-freqs", "1", "--sweeps", "bogus"], "--sweeps: unknown"),
        (["sae", "{run}", "--key-freqs", "1", "--features", "4", "--k", "9"], "k: must be in 1..n_features=4"),
    ],
)
def test_errors_are_one_line_exit_2(run_dir, capsys, argv, message):
    argv = [a.replace("{run}", str(run_dir)) for a in argv]
    assert main(argv + ["--no-write"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
