"""``grokscope report RUN [--out FILE] [--png DIR]``: write a run's self-contained HTML report."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grokscope.cli_args import UserError, raise_unless_extra


def register(sub) -> None:
    p = sub.add_parser(
        "report",
        help="write a run's self-contained HTML report (every figure, offline)",
        description="Build every figure of a run (curves, progress measures, Fourier spectra, heatmaps, clusters, "
        "ablations, star plots, ...) into one self-contained HTML file with Plotly embedded; prints its path.",
    )
    p.add_argument("run", type=Path, help="run directory (or a sweep directory: its phase diagrams and sweep figures)")
    p.add_argument("--out", type=Path, help="output file (default RUN/report.html)")
    p.add_argument("--png", type=Path, metavar="DIR",
                   help="also export each figure as an image into DIR (needs kaleido and Chromium; skipped otherwise)")
    p.add_argument("--format", default="png", choices=("png", "svg", "pdf"),
                   help="image format for --png (default png)")
    p.add_argument("--verbose", "-v", action="store_true", help="print each figure's build time or why it was skipped")
    p.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    from grokscope.store.run import Run

    sweep = (Path(args.run) / "sweep.json").is_file()  # a sweep directory: the sweep report (grokscope.sweep.figures)
    run = None if sweep else Run(args.run)  # RunError -> one line, exit 2 (handled by the CLI)
    try:
        from grokscope.figures.report import write_report
        from grokscope.sweep.figures import write_sweep_report
    except ImportError as e:
        raise_unless_extra(e)
        raise UserError(f"the report needs Plotly: pip install 'grokscope[plot]' ({e})") from None

    def log(line: str) -> None:
        if args.verbose or line.startswith("image export"):
            print(line, file=sys.stderr)

    try:
        if run is None:
            path = write_sweep_report(args.run, args.out)
        else:
            path = write_report(run, args.out, png_dir=args.png, image_format=args.format, log=log)
    except OSError as e:
        raise UserError(f"cannot write the report: {e.strerror or e}") from None
    print(path)
    return 0
