"""``grokscope report``: one self-contained HTML file, no network references, every built figure in it."""

from __future__ import annotations

import base64
import json
import re
import shutil
import sqlite3
import subprocess

import pytest

pytest.importorskip("plotly")

from figure_runs import copy_run  # noqa: E402

from grokscope.cli import main  # noqa: E402
from grokscope.figures import build_all, write_report  # noqa: E402
from grokscope.figures.report import build_report, header_data  # noqa: E402

EXTERNAL = re.compile(r"""<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*["']?\s*(https?:)?//""", re.I)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """(run, path, html) of the tiny transformer run's report, written into a copy of the run."""
    run = copy_run("tiny", tmp_path_factory.mktemp("rep") / "tiny")
    path = write_report(run)
    return run, path, path.read_text(encoding="utf-8")


def test_report_is_one_self_contained_file(report):
    run, path, html = report
    assert path == run.dir / "report.html"
    assert html.startswith("<!DOCTYPE html>")
    assert not EXTERNAL.search(html), EXTERNAL.search(html).group(0)
    assert "<script src" not in html and "<link " not in html
    assert "Plotly.newPlot" in html and len(html) > 1_000_000  # plotly.js embedded
    assert path.stat().st_mode & 0o044  # readable by others (atomic writes start at 0600)


def test_report_holds_every_built_figure(report):
    run, _, html = report
    results = build_all(run)
    built = [r.key for r in results if r.figure is not None]
    shown = re.findall(r'class="figure-data" data-target="plot-([\w-]+)"', html)
    assert shown == built and len(built) >= 8
    for r in results:
        if r.figure is None and r.applicable:
            assert f'id="fig-{r.key}"' in html  # a note says why it is missing


def expected_figures(run_dir) -> set[str]:
    """The figures the report of this run must draw, derived from what the run holds (config.json read as JSON,
    the metric names read with plain sqlite3, the files beside them), not from the figure registry."""
    arch = json.loads((run_dir / "config.json").read_text())["model"]["arch"]
    con = sqlite3.connect(f"file:{run_dir / 'metrics.sqlite'}?mode=ro", uri=True)
    try:
        cols = {r[0] for r in con.execute("SELECT DISTINCT name FROM metrics WHERE value IS NOT NULL")}
    finally:
        con.close()
    assert any((run_dir / "checkpoints").iterdir()) and "train_loss" in cols
    want = {"curves", "fourier_norms", "neurons", "logit_fourier", "clusters"}  # metrics and checkpoints suffice
    want |= {"attention"} if arch == "transformer" else {"stars", "star_trajectory"}
    if cols & {"excluded_loss", "restricted_loss", "gini_W_E", "gini_W_L", "sum_sq_weights", "ffs", "fcr"}:
        want.add("progress")
    if cols & {"excluded_loss", "restricted_loss"}:
        want.add("ablations")
    if cols & {"act_sparsity", "abs_weight_entropy", "weight_entropy_normalised", "logit_efficiency"}:
        want.add("extra_measures")
    if (run_dir / "analysis.json").is_file() and json.loads((run_dir / "analysis.json").read_text()).get(
        "key_frequencies"
    ):
        want |= {"interference", "logit_coefficients"}
    if any(re.fullmatch(r"excluded_loss_k\d+(_fixed)?", c) for c in cols):
        want.add("excluded_per_k")
    for name, keys in {
        "interp_patch.json": ("interp_patching", "interp_attribution"),
        "interp_probe.json": ("interp_probes",),
        "interp_sae.json": ("interp_sae",),
    }.items():
        if (run_dir / name).is_file():
            want |= set(keys)
    return want


def _typed(arr) -> list:
    if isinstance(arr, dict) and "bdata" in arr:
        import numpy as np

        return np.frombuffer(base64.b64decode(arr["bdata"]), dtype=np.dtype(arr["dtype"])).tolist()
    return list(arr)


@pytest.mark.parametrize("name", ["tiny", "mlp"])
def test_report_draws_each_expected_figure_once(name, tmp_path):
    """One figure-data script (each drawn by the single Plotly.newPlot call of RENDER_JS), one plot div and one
    table-of-contents link per figure the run should show: a figure dropped, duplicated or added fails here."""
    run = copy_run(name, tmp_path / name)
    run.write_json("analysis.json", {"key_frequencies": [2, 5]})
    if name == "mlp":
        run.write_metrics(30, {"excluded_loss_k2": 1.5, "excluded_loss_k5": 2.5})
    want = expected_figures(run.dir)
    html = write_report(run).read_text(encoding="utf-8")
    toc = re.findall(r'href="#fig-([\w-]+)"', re.search(r'<nav class="toc">(.*?)</nav>', html, re.S).group(1))
    scripts = re.findall(r'<script type="application/json" class="figure-data" data-target="plot-([\w-]+)">', html)
    divs = re.findall(r'<div class="plot" id="plot-([\w-]+)">', html)
    assert len(scripts) == len(set(scripts)) == len(want), (sorted(scripts), sorted(want))
    assert set(scripts) == want
    assert toc == scripts == divs  # the same figures, in the same order
    render = html[
        html.index("var pending = Array.prototype.slice.call(document.querySelectorAll('script.figure-data'))") :
    ]
    assert render.count("Plotly.newPlot(") == 1  # one call, looped over every figure-data script
    # the embedded curves are the database's rows
    blob = re.search(r'data-target="plot-curves">(.*?)</script>', html, re.S).group(1)
    traces = json.loads(blob)["data"]
    con = sqlite3.connect(f"file:{run.dir / 'metrics.sqlite'}?mode=ro", uri=True)
    try:
        for t in traces:
            rows = con.execute(
                "SELECT step, value FROM metrics WHERE name = ? AND value IS NOT NULL ORDER BY step", (t["meta"],)
            ).fetchall()
            assert _typed(t["x"]) == [r[0] for r in rows] and _typed(t["y"]) == pytest.approx(
                [r[1] for r in rows], rel=1e-12
            ), t["meta"]
    finally:
        con.close()
    assert sorted(t["meta"] for t in traces) == ["test_acc", "test_loss", "train_acc", "train_loss"]


def test_report_header_states_config_grok_phases_table5(report):
    run, _, html = report
    h = header_data(run)
    assert h["config"]["task"]["p"] == 13 and h["epoch"] == 30
    assert "Table 5 row" in html and "Phases" in html and "grok epoch" in html.lower()
    assert "task.formula" in html and "optim.weight_decay" in html
    assert "gini_W_E" in html


def test_header_key_frequency_line_names_the_analysis_rule(tmp_path, capsys):
    """analysis.json holds several "rule" strings (the phases have one); the header must show the key-frequency rule."""
    import json

    run = copy_run("tiny", tmp_path / "tiny")
    assert main(["analyze", str(run.dir), "--key-freqs", "1,3"]) == 0
    capsys.readouterr()
    data = json.loads((run.dir / "analysis.json").read_text())
    assert data["key_freq_rule"] == "given" and isinstance(data["phases"]["rule"], str)
    h = header_data(run)
    assert h["key_frequencies"] == [1, 3]
    assert h["key_frequency_rule"] == "analysis.json (given)"


def test_html_looking_run_name_is_escaped(tmp_path):
    from grokscope import apply_overrides, get_preset, train

    cfg = apply_overrides(
        get_preset("tiny"), {"name": "<img src=x onerror=alert(1)>", "train.epochs": 4, "train.checkpoint_every": 2}
    )
    run = train(cfg, tmp_path / "x", progress=False)
    html = build_report(run, plotly_src="/static/plotly.min.js")
    assert "<img src=x" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_cli_report_prints_path_and_honours_out(tmp_path, capsys):
    run = copy_run("mlp", tmp_path / "m")
    out = tmp_path / "elsewhere" / "r.html"
    assert main(["report", str(run.dir), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    html = out.read_text(encoding="utf-8")
    assert 'data-target="plot-stars"' in html  # star plots for the MLP run
    assert not (run.dir / "report.html").exists()


def test_cli_report_missing_run_is_one_line_exit_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "no such run directory" in err and len(err.strip().splitlines()) == 1


def test_image_export_is_skipped_cleanly_without_kaleido(tmp_path, monkeypatch, capsys):
    import builtins

    real_import = builtins.__import__

    def no_kaleido(name, *args, **kwargs):
        if name == "kaleido":
            raise ImportError("no kaleido")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_kaleido)
    run = copy_run("tiny", tmp_path / "t")
    assert main(["report", str(run.dir), "--png", str(tmp_path / "png")]) == 0
    captured = capsys.readouterr()
    assert "image export skipped" in captured.err
    assert (run.dir / "report.html").exists()


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.mark.skipif(
    _chromium() is None, reason="no Chromium on this machine (apt-get install chromium) - browser check skipped"
)
def test_report_renders_in_headless_chromium(report, tmp_path):
    """Every figure becomes a Plotly plot in a real browser, with no script errors."""
    run, path, _ = report
    n_built = sum(r.figure is not None for r in build_all(run))
    proc = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-extensions",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=15000",
            "--dump-dom",
            path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    dom = proc.stdout
    assert dom.count('data-ready="1"') == n_built, proc.stderr[-2000:]
    assert dom.count("main-svg") >= n_built
    errors = [
        line for line in proc.stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)
    ]
    assert not errors, errors
