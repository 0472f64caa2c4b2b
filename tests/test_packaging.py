"""Packaging: the version, the wheel and sdist built from the repository, and the wheel installed into a fresh
virtual environment (torch from the package index, as in CI) where it trains the quick preset."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tomllib
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
TORCH = "torch==2.13.0"  # what .ci/run installs


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def test_version_flag_and_attribute(capsys):
    import grokscope
    from grokscope.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"grokscope {VERSION}"
    assert grokscope.__version__ == VERSION


def test_changelog_has_the_current_version():
    text = (ROOT / "CHANGELOG.md").read_text()
    assert f"## [{VERSION}] - " in text
    assert "## [Unreleased]" in text


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> dict[str, Path]:
    pytest.importorskip("build")
    out = tmp_path_factory.mktemp("dist")
    # no --sdist/--wheel: build makes the sdist, then the wheel from the unpacked sdist (so a file missing from
    # the sdist breaks the wheel too, and nothing is written to ROOT/build)
    _run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], cwd=ROOT, timeout=600)
    wheels, sdists = list(out.glob("*.whl")), list(out.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1
    return {"wheel": wheels[0], "sdist": sdists[0]}


def test_sdist_holds_the_project(dists):
    with tarfile.open(dists["sdist"]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    for required in [
        "README.md",
        "LICENSE",
        "CHANGELOG.md",
        "pyproject.toml",
        "mkdocs.yml",
        "grokscope/cli.py",
        "docs/index.md",
        "tests/conftest.py",
        "examples/01_reproduce_paper_figures.py",
    ]:
        assert required in names, required
    assert not any("__pycache__" in n or n.endswith(".pyc") for n in names)


def test_wheel_holds_the_package_only(dists):
    assert dists["wheel"].name == f"grokscope-{VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(dists["wheel"]) as whl:
        names = whl.namelist()
        meta = whl.read(f"grokscope-{VERSION}.dist-info/METADATA").decode()
        entry_points = whl.read(f"grokscope-{VERSION}.dist-info/entry_points.txt").decode()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"grokscope", f"grokscope-{VERSION}.dist-info"}, tops  # no tests, docs, examples
    assert "grokscope/cli.py" in names and "grokscope/measures/progress.py" in names
    assert f"Version: {VERSION}\n" in meta and "Requires-Dist: torch" in meta
    assert "grokscope = grokscope.cli:main" in entry_points


def test_wheel_installs_in_a_fresh_venv_and_trains(dists, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    bindir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    python, grokscope = bindir / "python", bindir / "grokscope"
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}}
    env.update(OMP_NUM_THREADS="1", COLUMNS="100")
    _run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-compile", TORCH, str(dists["wheel"])],
        env=env,
        timeout=1200,
    )

    work = tmp_path / "work"  # outside the repository, so only the installed copy can be imported
    work.mkdir()
    where = _run(
        [str(python), "-c", "import grokscope; print(grokscope.__file__); print(grokscope.__version__)"],
        cwd=work,
        env=env,
    ).stdout.split()
    assert Path(where[0]).is_relative_to(env_dir) and where[1] == VERSION
    helptext = _run([str(grokscope), "--help"], cwd=work, env=env, timeout=300).stdout
    assert "usage: grokscope" in helptext and "train" in helptext and "analyze" in helptext
    assert _run([str(grokscope), "--version"], cwd=work, env=env, timeout=300).stdout.strip() == f"grokscope {VERSION}"

    out = work / "runs" / "quick"
    summary = _run(
        [str(grokscope), "train", "--preset", "quick", "--set", "train.epochs=30", "--out", str(out), "--quiet"],
        cwd=work,
        env=env,
        timeout=900,
    ).stdout
    assert "status:     completed" in summary and "epochs:     30 of 30" in summary
    assert (out / "config.json").is_file() and (out / "metrics.sqlite").is_file()
    assert (out / "checkpoints" / "step_00000030.safetensors").is_file()
