"""Browser acceptance of issue 5 in headless Chromium (Playwright for Python driving Debian's ``chromium``):
the report of a small trained run opens without console errors, renders every figure, and its checkpoint
slider changes the weight views; the viewer lists runs, opens a run, and shows a curve grow while a run trains.

Screenshots go into each test's tmp dir, and also into ``$GROKSCOPE_SCREENSHOTS`` when that is set.
Skipped (with the reason) only when Playwright or a Chromium binary is missing.
"""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

pytest.importorskip("plotly")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]'): browser tests skipped"
)

from figure_runs import copy_run  # noqa: E402

from grokscope.figures import build_all, write_report  # noqa: E402
from grokscope.serve import make_server  # noqa: E402

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# every figure of a report page has been drawn (RENDER_JS sets data-ready once Plotly.newPlot resolves)
# page waits are on page state; their timeout only bounds a hang (a shared 2-core machine may be slow, never this slow)
HANG_MS = 300_000
ALL_READY = (
    "document.querySelectorAll('script.figure-data').length > 0 && "
    "document.querySelectorAll('.plot[data-ready=\"1\"]').length === "
    "document.querySelectorAll('script.figure-data').length"
)


def chromium_path() -> str | None:
    env = os.environ.get("GROKSCOPE_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None


@pytest.fixture(scope="module")
def browser():
    exe = chromium_path()
    if exe is None:
        pytest.skip(
            "no Chromium binary found (apt-get install chromium, or set GROKSCOPE_CHROMIUM): browser tests skipped"
        )
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = ctx.new_page()
    pg.set_default_timeout(HANG_MS)  # navigation and locator waits too
    pg.errors = []  # console errors and uncaught exceptions
    pg.on("console", lambda m: pg.errors.append(f"console: {m.text}") if m.type == "error" else None)
    pg.on("pageerror", lambda e: pg.errors.append(f"pageerror: {e}"))
    yield pg
    ctx.close()


def shot(target, tmp_path: Path, name: str, **kw) -> Path:
    """Screenshot a page or an element into the test's tmp dir (and $GROKSCOPE_SCREENSHOTS when set)."""
    path = tmp_path / f"{name}.png"
    target.screenshot(path=str(path), **kw)
    extra = os.environ.get("GROKSCOPE_SCREENSHOTS")
    if extra:
        Path(extra).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(extra) / path.name)
    assert path.stat().st_size > 5_000  # not blank
    return path


def plot_count(page) -> int:
    return page.evaluate("document.querySelectorAll('.js-plotly-plot').length")


# --------------------------------------------------------------------------- the report


@pytest.fixture(scope="module")
def report_paths(tmp_path_factory):
    """{name: (report path, number of figures built)} for the tiny transformer and MLP runs."""
    out = {}
    for name in ("tiny", "mlp"):
        run = copy_run(name, tmp_path_factory.mktemp("brep") / name)
        results = build_all(run)
        path = write_report(run)
        out[name] = (path, sum(r.figure is not None for r in results))
    return out


@pytest.mark.parametrize("name", ["tiny", "mlp"])
def test_report_renders_every_figure_without_errors(page, report_paths, tmp_path, name):
    path, n_built = report_paths[name]
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_function(ALL_READY, timeout=HANG_MS)
    n_toc = page.evaluate("document.querySelectorAll('nav.toc a').length")  # what the report says it holds
    assert n_toc == n_built > 5
    assert plot_count(page) == n_toc
    # every plot has drawn something: an SVG with at least one trace or heatmap image
    empty = page.evaluate(
        "[...document.querySelectorAll('.js-plotly-plot')].filter(d => !d._fullLayout || !d.data || !d.data.length"
        " || !d.querySelector('svg.main-svg')).map(d => d.id)"
    )
    assert empty == []
    assert page.errors == []
    shot(page, tmp_path, f"report-{name}", full_page=True)
    shot(page.locator("#fig-curves"), tmp_path, f"report-{name}-curves")


def _trace_values(page, div_id: str) -> list[float]:
    # the plot's data as the page holds it (Plotly decodes typed-array JSON into _fullData)
    return page.evaluate(f"Array.from(document.getElementById('{div_id}')._fullData[0].y)")


def test_report_checkpoint_slider_changes_weight_view(page, report_paths, tmp_path):
    path, _ = report_paths["tiny"]
    page.goto(path.as_uri(), wait_until="load")
    page.wait_for_function(ALL_READY, timeout=HANG_MS)
    div = "plot-fourier_norms"
    assert page.evaluate(f"Number(document.getElementById('{div}').dataset.frames)") >= 2
    n_frames = page.evaluate(f"document.getElementById('{div}')._fullLayout.sliders[0].steps.length")
    active = f"document.getElementById('{div}')._fullLayout.sliders[0].active"
    assert page.evaluate(active) == n_frames - 1  # the final checkpoint is shown at load
    before = _trace_values(page, div)
    page.evaluate(f"window.__before = Array.from(document.getElementById('{div}')._fullData[0].y).join()")
    label_before = page.locator(f"#{div} .slider-label").first.text_content()
    # drag the slider from the last checkpoint to the first: press on the rail's left end
    rail = page.locator(f"#{div} .slider-rail-touch-rect").first
    rail.scroll_into_view_if_needed()
    box = rail.bounding_box()  # viewport coordinates
    assert box is not None
    page.mouse.click(box["x"] + 2, box["y"] + box["height"] / 2)
    page.wait_for_function(f"{active} === 0", timeout=HANG_MS)
    page.wait_for_function(  # the animation frame is applied asynchronously
        f"Array.from(document.getElementById('{div}')._fullData[0].y).join() !== window.__before", timeout=HANG_MS
    )
    after = _trace_values(page, div)
    label_after = page.locator(f"#{div} .slider-label").first.text_content()
    assert label_after != label_before and label_after.strip().endswith(": 0"), (label_before, label_after)
    assert len(after) == len(before)
    assert max(abs(a - b) for a, b in zip(after, before)) > 1e-3  # the spectrum at step 0 differs from the final one
    assert page.errors == []
    shot(page.locator("#fig-fourier_norms"), tmp_path, "report-fourier-norms-step0")


# --------------------------------------------------------------------------- the viewer


@pytest.fixture
def viewer(tmp_path):
    root = tmp_path / "runs"
    copy_run("tiny", root / "done")
    srv = make_server(root, port=0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    host, port = srv.server_address[:2]
    yield root, f"http://{host}:{port}"
    srv.shutdown()
    srv.server_close()


def test_viewer_lists_runs_and_opens_a_run(page, viewer, tmp_path):
    root, url = viewer
    page.goto(url + "/", wait_until="load")
    assert page.locator("tr[data-run]").count() == 1
    assert page.locator("tr[data-run='done'] .status").inner_text() == "completed"
    shot(page, tmp_path, "viewer-index", full_page=True)
    page.locator("a[href='/run/done']").click()
    page.wait_for_url(url + "/run/done")
    page.wait_for_function(ALL_READY, timeout=HANG_MS)
    assert plot_count(page) == page.evaluate("document.querySelectorAll('nav.toc a').length") > 5
    assert page.evaluate("document.getElementById('live-status').textContent").startswith("live: run completed")
    assert page.errors == []
    shot(page, tmp_path, "viewer-run", full_page=True)


def _curve_points(page) -> int:
    return page.evaluate(
        "(() => { const d = document.getElementById('plot-curves'); if (!d || !d._fullData) return -1;"
        " const t = d._fullData.find(t => t.meta === 'train_loss'); return t && t.x ? t.x.length : -1; })()"
    )


def test_viewer_curve_grows_while_a_run_trains(page, viewer, tmp_path):
    """A run marked running is logged to by this test (MetricsDB.log, one transaction per epoch, as training does):
    the open page must draw exactly the new epochs without a reload. The test writes only after reading the page's
    first curve, so the growth can come from nothing but the page's polling; it waits on page state, not clocks."""
    from grokscope import load_run

    root, url = viewer
    run = copy_run("tiny", root / "live")  # 30 epochs logged every 5
    run.set_meta({"status": "running"})
    page.goto(url + "/", wait_until="load")
    assert page.locator("tr[data-run='live'] .status").inner_text() == "running"
    page.goto(url + "/run/live", wait_until="load")
    page.wait_for_function(
        "document.getElementById('plot-curves') && document.getElementById('plot-curves')._fullData", timeout=HANG_MS
    )
    page.wait_for_function(
        "document.getElementById('live-status').textContent.indexOf('updating') >= 0", timeout=HANG_MS
    )
    page.wait_for_function(
        "(() => { const d = document.getElementById('plot-curves');"
        " const t = d._fullData.find(t => t.meta === 'train_loss'); return t && t.x && t.x.length "
        "=== 7; })()",
        timeout=HANG_MS,
    )
    first = _curve_points(page)
    assert first == 7  # epochs 0, 5, ..., 30
    page.evaluate("window.__same_page = true")  # gone if the page reloads
    shot(page.locator("#fig-curves"), tmp_path, "viewer-live-before")
    run = load_run(root / "live")
    for epoch, loss in ((35, 0.5), (40, 0.25)):
        run.write_metrics(epoch, {"train_loss": loss, "train_acc": 0.9, "test_loss": 2 * loss, "test_acc": 0.4})
    # the page polls the metrics every 2 s: the curve must gain exactly the two epochs without a reload
    grown = (
        "(() => { const d = document.getElementById('plot-curves');"
        " const t = d._fullData.find(t => t.meta === 'train_loss'); return t.x.length > 7; })()"
    )
    page.wait_for_function(grown, timeout=HANG_MS)
    assert page.evaluate("window.__same_page === true")
    xs = page.evaluate(
        "Array.from(document.getElementById('plot-curves')._fullData.find(t => t.meta === 'train_loss').x)"
    )
    ys = page.evaluate(
        "Array.from(document.getElementById('plot-curves')._fullData.find(t => t.meta === 'train_loss').y)"
    )
    assert xs == [0, 5, 10, 15, 20, 25, 30, 35, 40] and ys[-2:] == [0.5, 0.25]
    assert page.errors == []
    shot(page.locator("#fig-curves"), tmp_path, "viewer-live-after")
    run.set_meta({"status": "completed"})
    page.wait_for_function(
        "document.getElementById('live-status').textContent.indexOf('live: run completed') >= 0", timeout=HANG_MS
    )
