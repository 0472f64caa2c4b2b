"""The CI skip check of tests/conftest.py: under CI=true a skip that EXPECTED_SKIPS does not explain fails the
session and is named; outside CI skips are only reported."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import EXPECTED_SKIPS, ExpectedSkip, ci_enabled, unexpected_skips

pytest_plugins = ["pytester"]

CONFTEST = Path(__file__).with_name("conftest.py")

INNER_TESTS = """
import pytest

def test_runs():
    pass

def test_needs_a_package():
    pytest.importorskip("no_such_package_xyz", reason="no_such_package_xyz not installed")

def test_needs_a_gpu():
    pytest.skip("no CUDA device")

@pytest.mark.xfail(reason="known bug", strict=True)
def test_known_bug():
    assert False
"""


def test_unexpected_skips_keeps_only_what_no_entry_explains():
    allowed = (ExpectedSkip(r"test_a\.py::", r"needs root", "why"),)
    skips = [
        ("tests/test_a.py::t1", "needs root"),
        ("tests/test_a.py::t2", "no plotly"),
        ("tests/test_b.py::t", "needs root"),
    ]
    # both patterns must match: the right reason in another file, or another reason in the right file, is unexpected
    assert unexpected_skips(skips, allowed) == [
        ("tests/test_a.py::t2", "no plotly"),
        ("tests/test_b.py::t", "needs root"),
    ]
    assert unexpected_skips([], allowed) == []


@pytest.mark.parametrize(
    "nodeid, reason",
    [
        (
            "tests/test_browser.py::test_report_page",
            "no Chromium binary found (apt-get install chromium, or set GROKSCOPE_CHROMIUM): browser tests skipped",
        ),
        (
            "tests/test_report.py::test_report_renders_in_headless_chromium",
            "no Chromium on this machine (apt-get install chromium) - browser check skipped",
        ),
        (
            "tests/test_faults.py::test_a_real_full_filesystem_then_more_space_resumes_identically[48k]",
            "cannot mount a small tmpfs here (not root; needs root)",
        ),
        ("tests/test_security.py", "plotly not installed (extra 'plot'): viewer security tests skipped"),
        ("tests/test_sweep_ray.py", "could not import 'ray': No module named 'ray'"),
        ("tests/test_analysis.py::test_cli_exit_code_2_on_missing_run", "could not import 'grokscope.cli': boom"),
    ],
)
def test_the_skips_ci_must_not_have_are_not_on_the_allow_list(nodeid, reason):
    """What .ci/run installs (chromium, the dev extra) or provides (root) is never an expected skip."""
    assert unexpected_skips([(nodeid, reason)], EXPECTED_SKIPS) == [(nodeid, reason)]


def test_a_gpu_skip_is_expected_in_ci():
    assert unexpected_skips([("tests/test_fast.py::test_on_cuda", "CUDA is not available")], EXPECTED_SKIPS) == []


@pytest.mark.parametrize(
    "value, on", [("true", True), ("1", True), ("yes", True), ("", False), ("false", False), ("0", False)]
)
def test_ci_enabled(value, on):
    assert ci_enabled({"CI": value}) is on
    assert ci_enabled({}) is False


def _inner_session(pytester, monkeypatch, ci: str | None, tests: str = INNER_TESTS):
    pytester.makeconftest(CONFTEST.read_text())  # the real check, verbatim
    pytester.makepyfile(test_inner=tests)
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    return pytester.runpytest_subprocess("-rfEs", "-p", "no:cacheprovider")


def test_under_ci_an_unexpected_skip_fails_the_session_and_is_named(pytester, monkeypatch):
    result = _inner_session(pytester, monkeypatch, "true")
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)  # the tests themselves pass: only the check fails
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*unexpected skips under CI*",
            "UNEXPECTED SKIP test_inner.py::test_needs_a_package: no_such_package_xyz not installed",
        ]
    )
    out = result.stdout.str()
    assert "UNEXPECTED SKIP test_inner.py::test_needs_a_gpu" not in out  # on the allow-list
    assert "test_known_bug" not in out.split("unexpected skips under CI")[1]  # an xfail is not a skip


def test_under_ci_a_module_level_skip_is_caught(pytester, monkeypatch):
    pytester.makepyfile(test_other="def test_y():\n    pass\n")
    result = _inner_session(
        pytester,
        monkeypatch,
        "true",
        'import pytest\npytest.importorskip("no_such_package_xyz")\n\ndef test_x():\n    pass\n',
    )
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["UNEXPECTED SKIP test_inner.py: could not import 'no_such_package_xyz'*"])


def test_under_ci_expected_skips_only_pass(pytester, monkeypatch):
    result = _inner_session(
        pytester,
        monkeypatch,
        "true",
        'import pytest\n\ndef test_gpu():\n    pytest.skip("needs a GPU")\n\ndef test_x():\n    pass\n',
    )
    result.assert_outcomes(passed=1, skipped=1)
    assert result.ret == pytest.ExitCode.OK and "UNEXPECTED SKIP" not in result.stdout.str()


def test_outside_ci_skips_are_reported_not_failed(pytester, monkeypatch):
    result = _inner_session(pytester, monkeypatch, None)
    result.assert_outcomes(passed=1, skipped=2, xfailed=1)
    assert result.ret == pytest.ExitCode.OK and "UNEXPECTED SKIP" not in result.stdout.str()
    result.stdout.fnmatch_lines(["SKIPPED*no_such_package_xyz not installed"])


def test_a_real_failure_keeps_its_exit_status(pytester, monkeypatch):
    result = _inner_session(
        pytester,
        monkeypatch,
        "true",
        'import pytest\n\ndef test_x():\n    assert False\n\ndef test_y():\n    pytest.skip("no plotly")\n',
    )
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["UNEXPECTED SKIP test_inner.py::test_y: no plotly"])
