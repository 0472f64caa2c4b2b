"""The documentation site: it builds with warnings as errors, lists every page, and its generated and
hand-written references match the code (CLI --help, the analysis.json schema)."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
GENERATED_PAGES = {"changelog.md"}  # added by docs/hooks.py at build time


def _nav_pages() -> list[str]:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages: list[str] = []

    def walk(node) -> None:
        if isinstance(node, str):
            pages.append(node)
        elif isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            for value in node.values():
                walk(value)

    walk(config["nav"])
    return pages


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    site = tmp_path / "site"
    assert (
        "grokscope.measures.progress.progress_measures" in (site / "api" / "index.html").read_text()
    )  # API from docstrings
    cli = (site / "cli" / "index.html").read_text()
    assert "grokscope-cli-help" not in cli and "usage: grokscope train" in cli  # the hook replaced the marker
    assert "0.1.0" in (site / "changelog" / "index.html").read_text()


def test_every_docs_page_is_in_the_nav():
    nav = _nav_pages()
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert sorted(on_disk - set(nav)) == [], "add these pages to the nav in mkdocs.yml"
    assert sorted(set(nav) - on_disk - GENERATED_PAGES) == [], "nav entries without a page"
    assert len(nav) == len(set(nav)), "a page is listed twice"


def test_every_measure_page_names_its_source_and_formula():
    pages = sorted((DOCS / "measures").glob("*.md"))
    assert len(pages) >= 8
    for page in pages:
        text = page.read_text()
        assert "**Source:**" in text and "arxiv.org/abs/" in text, page.name
        assert "```" in text, f"{page.name}: no formula block"


def test_cli_reference_is_the_real_help(monkeypatch, capsys):
    """The generated page holds, for every subcommand, exactly what `grokscope NAME --help` prints."""
    spec = importlib.util.spec_from_file_location("grokscope_docs_hooks", DOCS / "hooks.py")
    hooks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hooks)
    from grokscope.cli import build_parser, main

    page = hooks.cli_reference()
    monkeypatch.setenv("COLUMNS", hooks.HELP_WIDTH)
    names = sorted(name for name, _ in hooks._subcommands(build_parser()))
    assert {"train", "run", "analyze", "report", "sweep"} <= set(names)
    for name in [None, *names]:
        argv = [*(name.split() if name else []), "--help"]
        with pytest.raises(SystemExit):
            main(argv)
        text = capsys.readouterr().out.rstrip()
        title = f"grokscope {name}" if name else "grokscope"
        assert f"## `{title}`\n\n```text\n{text}\n```" in page, title
    assert os.environ.get("COLUMNS") == hooks.HELP_WIDTH  # the hook restored the environment it found


# ----------------------------------------------------------------------------- analysis.json schema


def _documented(section: str) -> list[str]:
    """The first-column keys of the table under '## `section`' (or '## Top level') in docs/analysis-json.md."""
    text = (DOCS / "analysis-json.md").read_text()
    heading = "## Top level" if section == "" else f"## `{section}`"
    body = text.split(heading + "\n", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for m in re.finditer(r"^\| `([^`]+)` \|", body, flags=re.MULTILINE)]


@pytest.fixture(scope="module")
def analysis_json(tmp_path_factory):
    import grokscope
    from grokscope.analysis.run import analyze_run

    run = grokscope.train(grokscope.get_preset("tiny"), tmp_path_factory.mktemp("docs") / "run", progress=False)
    _, data = analyze_run(run, key_freqs=[1, 3], all_steps=True)
    return data


def test_analysis_json_top_level_keys_are_documented(analysis_json):
    documented = _documented("")
    assert len(documented) == len(set(documented))
    # `source` appears only with `analyze --checkpoint FILE` (tests/test_interop.py checks its contents)
    assert "source" not in analysis_json
    assert set(analysis_json) | {"source"} == set(documented)
    assert "`fixed_key_measures` | object | with `--all-steps`" in (DOCS / "analysis-json.md").read_text()


@pytest.mark.parametrize(
    "section", ["losses", "neurons", "logit_fit", "ablations", "attention", "table5", "phases", "fixed_key_measures"]
)
def test_analysis_json_nested_keys_are_documented(analysis_json, section):
    value = analysis_json[section]
    if isinstance(value, list):
        assert value, f"{section} is empty for the tiny transformer"
        value = value[0]
    keys = set(value)
    if section == "losses":  # one excluded_loss_k{K} per key frequency
        assert {"excluded_loss_k1", "excluded_loss_k3"} <= keys
        keys = {k for k in keys if not re.fullmatch(r"excluded_loss_k\d+", k)} | {"excluded_loss_k{K}"}
    assert keys == set(_documented(section))


def test_analysis_json_star_keys_are_documented():
    from grokscope.analysis import StarNeuron

    assert [f.name for f in dataclasses.fields(StarNeuron)] == _documented("star")
