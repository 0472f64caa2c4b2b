"""``grokscope serve [DIR] [--port N] [--host 127.0.0.1]``: browse runs, their reports and live curves."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(sub) -> None:
    parser = sub.add_parser(
        "serve",
        help="a local web viewer over a directory of runs (live curves, reports, comparisons)",
        description="Serve a read-only web viewer over the runs under DIR: the run list, each run's report with "
        "curves that update while it trains, and overlays of several runs. Binds 127.0.0.1 by default.",
    )
    parser.add_argument("dir", nargs="?", type=Path, default=Path("runs"),
                        help="directory holding run directories (default ./runs)")
    parser.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1; non-loopback needs --allow-remote)")
    parser.add_argument("--allow-remote", action="store_true",
                        help="allow a non-loopback --host (the viewer has no authentication)")
    parser.add_argument("--open", action="store_true", help="open the viewer in a web browser")
    parser.add_argument("--verbose", "-v", action="store_true", help="log every request")
    parser.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from grokscope.cli_args import UserError
    from grokscope.serve.server import ServeError, serve

    if not args.dir.is_dir():
        raise UserError(f"{args.dir}: no such directory "
                        f"(train a run first: grokscope train --preset quick --out {args.dir}/quick)")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be in 0..65535")
    try:
        import plotly  # noqa: F401
    except ImportError:
        raise UserError("the viewer needs Plotly: pip install 'grokscope[plot]'") from None
    try:
        serve(args.dir, args.host, args.port, allow_remote=args.allow_remote, quiet=not args.verbose,
              open_browser=args.open)
    except ServeError as e:
        raise UserError(str(e)) from None
    except OSError as e:
        raise UserError(f"cannot listen on {args.host}:{args.port} ({e.strerror or e})") from None
    return 0
