import os
import re
from dataclasses import dataclass

import pytest
import torch

from grokscope.device import mps_available

# Tests use tiny models: one thread avoids oversubscription (threads spin-waiting on each other) on small CPUs.
torch.set_num_threads(1)


@pytest.fixture
def one_thread():
    """One torch thread for the test, the caller's count again after it: on a shared 2-core machine two threads thrash
    on small tensors (modules that need it: ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


#: Every device a computing test can run on: the CPU always, CUDA and MPS where present (skipped elsewhere with a
#: reason that EXPECTED_SKIPS accepts in CI).
DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda", id="cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
    ),
    pytest.param("mps", id="mps", marks=pytest.mark.skipif(not mps_available(), reason="MPS not available")),
]


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """Each device of :data:`DEVICES` in turn, by name."""
    return request.param


@pytest.fixture
def tiny_config():
    from grokscope.presets import tiny

    return tiny()


# --------------------------------------------------------------------------- skips under CI
#
# CI (.ci/run, which sets CI=true) installs everything the suite can use: the "dev" extra (plotly, Playwright,
# TransformerLens, Ray, the trackers, pyarrow, mkdocs, build, jupytext, ruff, mypy), Debian's chromium, and it runs as
# root (the tmpfs full-disk test mounts a filesystem). So under CI a skip means a test did not run that should have:
# every skip must match an entry of EXPECTED_SKIPS (a test id pattern and a reason pattern, both regular expressions
# searched in the text), or the session fails and names it. Outside CI skips are only reported (-rs).


@dataclass(frozen=True)
class ExpectedSkip:
    nodeid: str  # regular expression searched in the test id ("tests/test_x.py::test_y[param]")
    reason: str  # regular expression searched in the skip reason
    why: str  # why this skip is legitimate in CI


EXPECTED_SKIPS: tuple[ExpectedSkip, ...] = (
    # CI installs the CPU build of torch (README, "Install"), so a check that needs a GPU cannot run there.
    ExpectedSkip(r".", r"(?i)\b(cuda|gpu)\b", "CI has no GPU and installs the CPU build of torch"),
    # Apple's MPS device exists only on Apple silicon; CI runs on Linux.
    ExpectedSkip(r".", r"(?i)\bmps\b", "CI runs on Linux, which has no MPS device"),
    # torch < 2.9 has no torch.optim.Muon; grokscope's own Muon runs there, only the comparison with torch's skips.
    ExpectedSkip(r"test_muon\.py", r"torch\.optim\.Muon not in this torch", "older torch has no Muon"),
)


def ci_enabled(environ=os.environ) -> bool:
    return environ.get("CI", "").strip().lower() not in ("", "0", "false", "no", "off")


def skip_reason(report) -> str:
    """The message of a skipped test or collection report ('Skipped: ' prefix removed)."""
    longrepr = report.longrepr
    text = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def unexpected_skips(skips, allowed=EXPECTED_SKIPS) -> list[tuple[str, str]]:
    """The (test id, reason) pairs of ``skips`` that no entry of ``allowed`` explains."""
    return [
        (nodeid, reason)
        for nodeid, reason in skips
        if not any(re.search(e.nodeid, nodeid) and re.search(e.reason, reason) for e in allowed)
    ]


class SkipCheck:
    """Records every skip of the session; with ``strict`` (under CI) fails the session on one EXPECTED_SKIPS lacks."""

    def __init__(self, strict: bool, allowed=EXPECTED_SKIPS):
        self.strict, self.allowed = strict, allowed
        self.skips: list[tuple[str, str]] = []
        self.unexpected: list[tuple[str, str]] = []

    def _record(self, report) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):  # an xfail is reported as skipped too: not a skip
            self.skips.append((report.nodeid, skip_reason(report)))

    def pytest_runtest_logreport(self, report):
        self._record(report)

    def pytest_collectreport(self, report):  # a module-level skip (importorskip at import) skips the whole file
        self._record(report)

    def pytest_sessionfinish(self, session, exitstatus):
        if not self.strict:
            return
        self.unexpected = unexpected_skips(self.skips, self.allowed)
        if self.unexpected and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        if not self.unexpected:
            return
        terminalreporter.section("unexpected skips under CI", sep="!", red=True)
        for nodeid, reason in self.unexpected:
            terminalreporter.line(f"UNEXPECTED SKIP {nodeid}: {reason}", red=True)
        terminalreporter.line(
            f"{len(self.unexpected)} skipped test(s) that CI must run (.ci/run installs what they need): find out why "
            "they skipped, or add a justified entry to EXPECTED_SKIPS in tests/conftest.py",
            red=True,
        )


def pytest_configure(config):
    config.pluginmanager.register(SkipCheck(ci_enabled()), "grokscope-skipcheck")
