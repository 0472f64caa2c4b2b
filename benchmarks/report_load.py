"""How long a report takes to open in headless Chromium, against a page that holds only plotly.js.

    python benchmarks/report_load.py RUN_OR_REPORT [--repeats 5] [--chromium /usr/bin/chromium]

RUN_OR_REPORT is a run directory (its report.html is written when missing) or an HTML file. Each round opens,
in one browser and in turn, (ref) a page with nothing but the same embedded plotly.js and (report) the report,
and prints the median of: the ``load`` event (header, plotly.js and the first two figures drawn), the moment
every figure is drawn, and the ratio to the plotly.js-only page. Needs the ``dev`` extra (Playwright) and a
Chromium.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ALL_DRAWN = (
    "document.querySelectorAll('script.figure-data').length === "
    "[...document.querySelectorAll('.js-plotly-plot')].filter(d => d.querySelector('svg.main-svg')).length"
)


def _open(browser, path: Path, wait_all: bool) -> tuple[float, float, list[str]]:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    t0 = time.perf_counter()
    page.goto(path.as_uri(), wait_until="load")
    loaded = time.perf_counter() - t0
    if wait_all:
        page.wait_for_function(ALL_DRAWN, timeout=120_000, polling=20)
    drawn = time.perf_counter() - t0
    page.close()
    return loaded, drawn, errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", type=Path, help="a run directory or a report HTML file")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    args = ap.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from grokscope.figures.report import plotly_js, write_report

    report = args.target
    if report.is_dir():
        report = report / "report.html"
        if not report.exists():
            write_report(args.target)
    with tempfile.TemporaryDirectory() as tmp:
        ref = Path(tmp) / "plotly-only.html"
        ref.write_text(
            "<!DOCTYPE html><html><body><p>plotly.js only</p><script>"
            + plotly_js().replace("</script", "<\\/script")
            + "</script></body></html>"
        )
        times: dict[str, list[tuple[float, float]]] = {"ref": [], "report": []}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=args.chromium, args=["--no-sandbox", "--disable-gpu"])
            for _ in range(args.repeats):
                times["ref"].append(_open(browser, ref, False)[:2])
                loaded, drawn, errors = _open(browser, report, True)
                if errors:
                    print(f"page errors: {errors}", file=sys.stderr)
                    return 1
                times["report"].append((loaded, drawn))
            browser.close()
    ref_load = statistics.median(t[0] for t in times["ref"])
    load = statistics.median(t[0] for t in times["report"])
    drawn = statistics.median(t[1] for t in times["report"])
    size = report.stat().st_size / 1e6
    print(f"report: {report} ({size:.1f} MB), {args.repeats} rounds, medians")
    print(f"(ref) plotly.js only       load {ref_load:5.2f} s")
    print(
        f"(report) opened             load {load:5.2f} s  = {load / ref_load:.2f}x ref  (header + first figures drawn)"
    )
    print(f"(report) every figure drawn      {drawn:5.2f} s  = {drawn / ref_load:.2f}x ref")
    print(f"all rounds (load, drawn): {[(round(a, 2), round(b, 2)) for a, b in times['report']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
