"""grokscope export: metrics and analysis tables of a run, the index of a sweep; CSV and Parquet round trips."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest

import grokscope
from grokscope import export as ex
from grokscope.cli import main
from grokscope.config import apply_overrides
from grokscope.training import train


@pytest.fixture(scope="module")
def analysed_run(tmp_path_factory):
    """A tiny run with an analysis.json (key frequencies given, so the key columns are not empty)."""
    from grokscope.presets import tiny

    run = train(
        apply_overrides(tiny(), {"train.epochs": 30}), tmp_path_factory.mktemp("export") / "run", progress=False
    )
    assert main(["analyze", str(run.dir), "--key-freqs", "2,5", "--quiet"]) == 0
    return run


def read_csv(path: Path) -> pd.DataFrame:
    exact = {} if int(pd.__version__.split(".")[0]) >= 3 else {"float_precision": "round_trip"}  # pandas 3: the default
    return pd.read_csv(path, **exact)


def exit_code(args: list[str]) -> int:
    try:
        return main(args)
    except SystemExit as e:  # argparse's own errors (an unknown --format)
        return int(e.code)


def test_metrics_round_trip_through_csv_and_parquet(analysed_run, tmp_path, capsys):
    run = analysed_run
    assert main(["export", str(run.dir), "--out", str(tmp_path / "csv")]) == 0
    printed = capsys.readouterr().out.split()
    assert str(tmp_path / "csv" / "metrics.csv") in printed and all(Path(p).is_file() for p in printed)
    from_csv = read_csv(tmp_path / "csv" / "metrics.csv").set_index("step")
    pd.testing.assert_frame_equal(from_csv, run.metrics, check_exact=True, check_index_type=False)
    assert list(from_csv.index) == list(range(0, 31, 5))

    pytest.importorskip("pyarrow")
    assert main(["export", str(run.dir), "--format", "parquet", "--out", str(tmp_path / "pq")]) == 0
    from_pq = pd.read_parquet(tmp_path / "pq" / "metrics.parquet").set_index("step")
    pd.testing.assert_frame_equal(from_pq, run.metrics, check_exact=True)
    assert sorted(p.stem for p in (tmp_path / "pq").iterdir()) == sorted(p.stem for p in (tmp_path / "csv").iterdir())


def test_analysis_tables_match_analysis_json(analysed_run, tmp_path):
    data = json.loads((analysed_run.dir / "analysis.json").read_text())
    paths = ex.export(analysed_run.dir, "csv", tmp_path)
    assert {p.name for p in paths} >= {
        "metrics.csv",
        "analysis_summary.csv",
        "analysis_frequencies.csv",
        "analysis_neurons.csv",
        "analysis_table5.csv",
        "analysis_ablations.csv",
        "analysis_key_frequencies.csv",
    }
    freqs = read_csv(tmp_path / "analysis_frequencies.csv")
    assert list(freqs["frequency"]) == list(range(1, (13 - 1) // 2 + 1))
    assert (
        list(freqs["W_E_norm"]) == data["W_E_frequency_norms"]
        and list(freqs["W_L_norm"]) == data["W_L_frequency_norms"]
    )
    assert list(freqs.loc[freqs["key"], "frequency"]) == data["key_frequencies"] == [2, 5]
    assert list(freqs.loc[freqs["key"], "logit_alpha"]) == [data["logit_fit"]["alpha"][k] for k in ("2", "5")]
    assert freqs.loc[~freqs["key"], "logit_alpha"].isna().all()
    clusters = {str(k): int(n) for k, n in zip(freqs["frequency"], freqs["cluster_neurons"]) if n}
    assert clusters == data["neurons"]["clusters"]

    neurons = read_csv(tmp_path / "analysis_neurons.csv")
    assert len(neurons) == data["neurons"]["n_neurons"] == 64
    assert list(neurons["fve"]) == data["neurons"]["fve"] and list(neurons["frequency"]) == data["neurons"]["frequency"]
    assert int(neurons["clustered"].sum()) == data["neurons"]["n_explained"]

    (t5,) = read_csv(tmp_path / "analysis_table5.csv").to_dict("records")
    assert {**t5, "key_frequencies": json.loads(t5["key_frequencies"])} == data["table5"]
    assert read_csv(tmp_path / "analysis_ablations.csv").to_dict("records") == data["ablations"]
    (summary,) = read_csv(tmp_path / "analysis_summary.csv").to_dict("records")
    assert summary["restricted_loss"] == data["losses"]["restricted_loss"] and summary["step"] == data["step"]
    assert summary["gini_W_L"] == data["gini_W_L"] and summary["logit_fve"] == data["logit_fit"]["fve"]


def test_analysis_tables_of_a_small_hand_made_analysis():
    data = {
        "p": 7,
        "step": 3,
        "key_frequencies": [2],
        "key_freq_rule": "W_L_dft",
        "key_frequencies_by_rule": {"W_L_dft": [2], "W_E_norm": [1, 2]},
        "losses": {"test_loss": 0.5},
        "W_E_frequency_norms": [1.0, 2.0, 3.0],
        "W_L_frequency_norms": [0.1, 0.2, None],
        "neurons": {"frequency": [2, 2, 1], "fve": [0.9, 0.5, 0.95], "threshold": 0.85, "clusters": {"2": 1, "1": 1}},
        "logit_fit": {"alpha": {"2": 4.0}, "sin_coefficient": {"2": 0.0}, "fve": 0.75},
        "star": [],
        "phases": None,
    }
    t = ex.analysis_tables(data)
    assert set(t) == {"summary", "frequencies", "key_frequencies", "neurons"}
    f = t["frequencies"]
    assert f["frequency"].tolist() == [1, 2, 3] and f["key"].tolist() == [False, True, False]
    assert (
        f["cluster_neurons"].tolist() == [1, 1, 0]
        and f["logit_alpha"].tolist()[1] == 4.0
        and math.isnan(f["W_L_norm"][2])
    )
    assert t["neurons"]["clustered"].tolist() == [True, False, True]
    assert t["key_frequencies"].values.tolist() == [
        ["W_L_dft", 2, True],
        ["W_E_norm", 1, False],
        ["W_E_norm", 2, False],
    ]
    assert t["summary"].iloc[0]["key_frequencies"] == "[2]" and t["summary"].iloc[0]["logit_fve"] == 0.75


def test_a_sweep_exports_its_index_and_python_gets_it_as_a_dataframe(tmp_path):
    from grokscope.sweep import make_spec, run_sweep

    spec = make_spec(name="e", base="tiny", set={"train.epochs": 10}, axes={"task.formula": ["a+b", "a-b"]}, seeds=1)
    run_sweep(spec, tmp_path / "sw", workers=0, progress=False, log=lambda s: None)
    df = grokscope.load_sweep(tmp_path / "sw")
    assert list(df["task.formula"]) == ["a+b", "a-b"]
    assert main(["export", str(tmp_path / "sw")]) == 0
    back = read_csv(tmp_path / "sw" / "export" / "index.csv")
    assert list(back.columns) == list(df.columns) and back["name"].tolist() == df["name"].tolist()
    assert back["final_test_loss"].tolist() == df["final_test_loss"].tolist()
    pytest.importorskip("pyarrow")
    assert main(["export", str(tmp_path / "sw"), "--format", "parquet"]) == 0
    pq = pd.read_parquet(tmp_path / "sw" / "export" / "index.parquet")
    pd.testing.assert_frame_equal(pq, df, check_dtype=False)


def test_bad_inputs_give_one_line_exit_2_and_write_nothing(analysed_run, tmp_path, monkeypatch, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    cases = [
        [str(tmp_path / "missing")],
        [str(plain)],
        [str(afile)],
        [str(analysed_run.dir), "--out", str(afile)],
        [str(analysed_run.dir), "--format", "xlsx", "--out", str(tmp_path / "o")],
    ]
    for args in cases:
        assert exit_code(["export", *args]) == 2, args
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("grokscope export: error:"), err
    assert list(plain.iterdir()) == [] and not (tmp_path / "o").exists()

    monkeypatch.setattr(ex.importlib.util, "find_spec", lambda name, *a: None)
    assert main(["export", str(analysed_run.dir), "--format", "parquet", "--out", str(tmp_path / "o")]) == 2
    assert 'pip install "grokscope[parquet]"' in capsys.readouterr().err and not (tmp_path / "o").exists()
    monkeypatch.undo()

    run = train(
        apply_overrides(grokscope.get_preset("tiny"), {"train.epochs": 5}), tmp_path / "damaged", progress=False
    )
    (run.dir / "analysis.json").write_text("{not json")
    assert main(["export", str(run.dir)]) == 2
    assert "analysis.json" in capsys.readouterr().err and not (run.dir / "export").exists()
