"""The example scripts in examples/ run at tiny size (GROKSCOPE_EXAMPLE_TINY=1) and write what they promise.

They run in order in one output directory, as a user would run them: 01 trains the weight-decay-1 run,
02 and 03 reuse it (03 trains the weight-decay-0.1 run).
"""

from __future__ import annotations

import ast
import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("plotly")

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SCRIPTS = ["01_reproduce_paper_figures.py", "02_fourier_walkthrough.py", "03_compare_two_runs.py",
           "04_own_model_and_task.py"]


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("examples")
    env = {
        **os.environ,
        "GROKSCOPE_EXAMPLE_TINY": "1",
        "GROKSCOPE_EXAMPLE_OUT": str(work / "out"),
        "OMP_NUM_THREADS": "1",
    }
    env.pop("GROKSCOPE_EXAMPLE_RUN", None)
    logs = {}
    for name in SCRIPTS:
        proc = subprocess.run(
            [sys.executable, str(EXAMPLES / name)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
        logs[name] = proc.stdout
    return {"out": work / "out", "logs": logs}


def _script_literal(script: str, target: str):
    """The literal assigned to ``target`` in an example script, or the iterable of the comprehension assigned to it."""
    tree = ast.parse((EXAMPLES / script).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == target for t in node.targets):
            value = node.value
            if isinstance(value, ast.DictComp):
                return [ast.literal_eval(e) for e in value.generators[0].iter.elts]
            return [ast.literal_eval(k) for k in value.keys]
    raise AssertionError(f"no {target} in {script}")


def test_reproduce_paper_figures_writes_the_figures(outputs):
    html = (outputs["out"] / "paper_figures.html").read_text()
    builders = _script_literal(SCRIPTS[0], "BUILDERS")  # the figures the script asks for, read from its source
    assert len(builders) >= 8
    assert re.findall(r"<h2>(\w+)</h2>", html) == builders  # each drawn once, in order (none unavailable)
    assert html.count("Plotly.newPlot") == len(builders)  # to_html writes one newPlot call per figure
    assert outputs["logs"][SCRIPTS[0]].count("drawn: " + ", ".join(builders)) == 1
    assert html.count("<script") >= 8 and "plotly.js" in html.lower()  # plotly.js embedded: opens offline
    analysis = json.loads((outputs["out"] / "runs" / "tiny-wd1.0" / "analysis.json").read_text())
    assert analysis["key_frequencies"] and analysis["phases"]["grok_epoch"] is not None  # the tiny run groks
    assert "not drawn" not in outputs["logs"][SCRIPTS[0]]


def test_fourier_walkthrough_numbers(outputs):
    s = json.loads((outputs["out"] / "fourier_walkthrough.json").read_text())
    p = s["p"]
    # a grokked network: its loss lives in the key frequencies; removing them is worse than chance
    assert s["restricted_loss"] < 0.1 < math.log(p) < s["excluded_loss"]
    assert {int(k) for k in s["neuron_clusters"]} <= set(s["key_frequencies"])
    assert s["n_explained"] == sum(s["neuron_clusters"].values())
    top_freqs = {int(name.split()[1]) for name in s["top_W_E_components"]}
    assert top_freqs & set(s["key_frequencies"])
    assert "by hand" in outputs["logs"][SCRIPTS[1]]


def test_compare_two_runs_table_and_figures(outputs):
    with open(outputs["out"] / "compare_two_runs.csv") as f:
        rows = {float(r["weight_decay"]): r for r in csv.DictReader(f)}
    assert set(rows) == {1.0, 0.1}
    strong, weak = rows[1.0], rows[0.1]
    assert strong["grok_epoch"] and float(strong["final_test_acc"]) >= 0.99
    assert not weak["grok_epoch"] or float(weak["grok_epoch"]) > float(strong["grok_epoch"])  # less decay groks later
    assert float(weak["sum_sq_weights"]) > float(strong["sum_sq_weights"])
    html = (outputs["out"] / "compare_two_runs.html").read_text()
    metrics = _script_literal(SCRIPTS[2], "figures")  # the metrics the script overlays, read from its source
    assert len(metrics) == len(set(metrics)) >= 5
    assert html.count("Plotly.newPlot") == len(metrics)  # to_html writes one newPlot call per figure
    assert "tiny-wd1.0" in html and "tiny-wd0.1" in html  # both runs are in the overlays
    assert len(list((outputs["out"] / "runs").iterdir())) == 2  # 01 and 02 reused one run, 03 added one


def test_own_model_and_task_trains_the_users_module_and_reports(outputs):
    log = outputs["logs"][SCRIPTS[3]]
    assert "task: 121 rows, tokens [121, 3], 11 labels" in log
    assert "forward: user (last position); measures skipped" in log
    assert (outputs["out"] / "own-model-report.html").stat().st_size > 10_000
    run = outputs["out"] / "own-model-run"
    assert json.loads((run / "config.json").read_text())["task"]["name"] == "shuffled-add"


def test_examples_are_jupytext_notebooks(tmp_path):
    jupytext = pytest.importorskip("jupytext")
    import nbformat

    for name in SCRIPTS:
        nb = jupytext.read(EXAMPLES / name)
        kinds = [c.cell_type for c in nb.cells]
        assert kinds.count("markdown") >= 3 and kinds.count("code") >= 3, name
        assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# ")
        path = tmp_path / name.replace(".py", ".ipynb")
        jupytext.write(nb, path)
        nbformat.validate(nbformat.read(path, as_version=4))
