"""Static checks: ruff (lint) and mypy (types) pass with the settings in pyproject.toml ([tool.ruff], [tool.mypy])."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False
    )


def test_ruff_check_is_clean():
    pytest.importorskip("ruff", reason="ruff not installed (extra 'dev')")
    proc = _run(["ruff", "check", "--no-cache", "."], timeout=300)
    assert proc.returncode == 0, f"ruff check . failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


def test_mypy_is_clean():
    pytest.importorskip("mypy", reason="mypy not installed (extra 'dev')")
    proc = _run(["mypy"], timeout=900)  # files and options from [tool.mypy]; ~1 min without a .mypy_cache
    assert proc.returncode == 0, f"mypy failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
