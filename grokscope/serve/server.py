"""``grokscope serve``: a local, read-only web viewer over a directory of runs (standard library and Plotly).
:data:`ROUTES` lists what it answers to GET/HEAD (any other method: 405, path: 404). It binds 127.0.0.1 unless
``allow_remote=True``; bound to loopback it answers only requests whose Host header is a loopback name (a web page
elsewhere cannot reach it through a DNS name rebound to 127.0.0.1). It never writes, lists no directory, and serves
a file only when it resolves inside the root."""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import re
import socket
import threading
import webbrowser
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from grokscope.analysis.run import ANALYSIS_FILE
from grokscope.serve.catalogue import find_runs, find_sweeps, header_payload, metrics_payload, run_summary
from grokscope.serve.pages import PLOTLY_URL, compare_page, error_page, index_page, run_page, sweep_page
from grokscope.store.run import Run, RunError

HTML = "text/html; charset=utf-8"


class ServeError(ValueError):
    """A bad server setting (for example a non-loopback host without allow_remote)."""


class NotFound(LookupError):
    """Answered 404 with its message."""


def is_loopback(host: str) -> bool:
    with contextlib.suppress(ValueError):
        return host in ("localhost", "localhost.localdomain") or ipaddress.ip_address(host.strip("[]")).is_loopback
    return False


class Viewer:
    """The state behind the handler: the root directory, plotly.js and a cache of built report pages."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ServeError(f"{root}: not a directory")
        self._pages: dict[str, tuple[tuple, bytes]] = {}
        self._lock = threading.Lock()

    def summaries(self) -> list[dict]:
        return [run_summary(run_id, path) for run_id, path in sorted(find_runs(self.root).items())]

    def lookup(self, run_id: str, *, sweep: bool = False) -> Path | None:
        if not run_id or ".." in run_id.split("/") or run_id.startswith("/") or "\\" in run_id or "\0" in run_id:
            return None
        return (find_sweeps if sweep else find_runs)(self.root).get(run_id)

    def find(self, run_id: str, *, sweep: bool = False) -> Path:
        """The directory of run (or sweep) ``run_id``; NotFound if there is none."""
        found = self.lookup(run_id, sweep=sweep)
        if found is None:
            raise NotFound("no such sweep" if sweep else "no such run")
        return found

    @functools.cached_property
    def plotly_js(self) -> bytes:
        from grokscope.figures.report import plotly_js

        return plotly_js().encode("utf-8")

    def run_page(self, run_id: str, path: Path) -> bytes:
        """The run's page, rebuilt when a checkpoint, the status or the analysis changed (16 pages kept)."""
        run, analysis = Run(path), path / ANALYSIS_FILE
        steps = run.checkpoints
        key = (len(steps), steps[-1] if steps else None, run.status,
               analysis.stat().st_mtime if analysis.exists() else None)
        with self._lock:
            hit = self._pages.get(run_id)
            if hit is not None and hit[0] == key:
                return hit[1]
            page = run_page(run, run_id).encode("utf-8")
            self._pages[run_id] = (key, page)
            if len(self._pages) > 16:
                self._pages.pop(next(iter(self._pages)))
            return page


#: (path pattern, Handler method): the first pattern that matches the whole unquoted path answers; its groups
#: (an id) are passed to the method with the query string.
ROUTES = tuple((re.compile(pattern, re.S), method) for pattern, method in (
    (r"/|/index\.html", "show_index"),  # the run list: status, epochs, accuracies, grok epoch; pick runs to compare
    (r"/api/runs", "show_run_list"),  # the run list as JSON
    (r"/favicon\.ico", "show_favicon"),  # browsers ask for it on every page: answer "nothing" rather than a 404
    (re.escape(PLOTLY_URL), "show_plotly"),  # plotly.js from the installed plotly package (no network)
    (r"/compare", "show_compare"),  # ?run=<id>&run=<id>: curves of several runs overlaid
    (r"/api/run/(.*)/metrics", "show_metrics"),  # {status, epoch, epochs, grok_epoch, steps, columns} (polled)
    (r"/api/run/(.*)/header", "show_header"),  # the report header facts as JSON
    (r"/sweep/(.*?)/*", "show_sweep"),  # the sweep report over its stored index
    (r"/run/(.*)/report\.html/*", "show_saved_report"),  # the run's saved report.html, if there is one
    (r"/run/(.*?)/*", "show_run"),  # the run's report page; its curves and header update live while it trains
))


class Handler(BaseHTTPRequestHandler):
    server_version = "grokscope-viewer"
    viewer: Viewer  # set on the subclass made by make_server
    quiet = True
    check_host = True  # answer only requests addressed to a loopback name (no DNS rebinding); off with allow_remote

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        if not self.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, ctype: str, *, cache: str = "no-store") -> None:
        self.send_response(status)
        for name, value in (("Content-Type", ctype), ("Content-Length", str(len(body))), ("Cache-Control", cache),
                            ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "no-referrer")):
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, text: str, status: int = 200) -> None:
        self._send(status, text.encode("utf-8"), HTML)

    def _json(self, obj) -> None:
        self._send(200, json.dumps(obj, allow_nan=False).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._html(error_page(status, message), status)

    def do_POST(self) -> None:  # noqa: N802
        self._error(405, "the viewer is read-only")

    do_PUT = do_DELETE = do_PATCH = do_POST  # noqa: N815

    def do_GET(self) -> None:  # noqa: N802
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except RunError as e:
            self._error(404, str(e))
        except Exception as e:  # noqa: BLE001 - answer 500 rather than drop the connection
            self._error(500, f"{type(e).__name__}: {e}")

    do_HEAD = do_GET  # noqa: N815 - _send writes no body for HEAD

    def _host_allowed(self) -> bool:
        host = (self.headers.get("Host") or "").strip()
        if not self.check_host or not host:
            return True
        name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        return is_loopback(name)

    def _route(self) -> None:
        if not self._host_allowed():
            return self._error(403, "this viewer answers requests for localhost only "
                               "(see grokscope serve --allow-remote)")
        parts = urlsplit(self.path)
        path = unquote(parts.path)
        try:
            if ".." in path.split("/") or "\0" in path or "\\" in path:
                raise NotFound("not found")
            for pattern, method in ROUTES:
                if match := pattern.fullmatch(path):
                    return getattr(self, method)(*match.groups(), query=parts.query)
            raise NotFound("not found")
        except NotFound as e:
            self._error(404, str(e))

    # The routes: what ROUTES names.
    def show_index(self, *, query: str) -> None:
        self._html(index_page(self.viewer.root, self.viewer.summaries(), find_sweeps(self.viewer.root)))

    def show_run_list(self, *, query: str) -> None:
        self._json(self.viewer.summaries())

    def show_favicon(self, *, query: str) -> None:
        self._send(204, b"", "image/x-icon", cache="max-age=86400")

    def show_plotly(self, *, query: str) -> None:
        self._send(200, self.viewer.plotly_js, "text/javascript; charset=utf-8", cache="max-age=86400")

    def show_compare(self, *, query: str) -> None:
        ids = [i for i in parse_qs(query).get("run", []) if self.viewer.lookup(i) is not None]
        if not ids:
            raise NotFound("no such runs to compare")
        self._html(compare_page(ids))

    def show_metrics(self, run_id: str, *, query: str) -> None:
        run, q = Run(self.viewer.find(run_id)), parse_qs(query)
        cols = [c for c in q.get("col", []) if c.replace("_", "").isalnum()] or None
        since = int(q["since"][0]) if q.get("since", [""])[0].isdigit() else None
        self._json(metrics_payload(run, cols, since))

    def show_header(self, run_id: str, *, query: str) -> None:
        self._json(header_payload(Run(self.viewer.find(run_id))))

    def show_sweep(self, sweep_id: str, *, query: str) -> None:
        page = sweep_page(self.viewer.find(sweep_id, sweep=True))
        if page is None:
            raise NotFound("this sweep has no index yet (it is written when its first cell finishes)")
        self._html(page)

    def show_saved_report(self, run_id: str, *, query: str) -> None:
        run_dir = self.viewer.lookup(run_id)
        report = None if run_dir is None else run_dir / "report.html"
        if report is None or not report.is_file() or not report.resolve().is_relative_to(self.viewer.root):
            raise NotFound("no saved report for this run (make one: grokscope report RUN)")
        self._send(200, report.read_bytes(), HTML)

    def show_run(self, run_id: str, *, query: str) -> None:
        self._send(200, self.viewer.run_page(run_id, self.viewer.find(run_id)), HTML)


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def make_server(root: Path | str, host: str = "127.0.0.1", port: int = 8765, *, allow_remote: bool = False,
                quiet: bool = True) -> ThreadingHTTPServer:
    """A viewer server bound to (host, port) (port 0: any free port; see ``server.server_address``)."""
    if not is_loopback(host) and not allow_remote:
        raise ServeError(f"refusing to bind {host}: not a loopback address; the viewer has no authentication "
                         "(pass --allow-remote to expose it anyway)")
    viewer = Viewer(root)
    handler = type("BoundHandler", (Handler,), {"viewer": viewer, "quiet": quiet, "check_host": not allow_remote})
    server = (_V6Server if ":" in host else ThreadingHTTPServer)((host.strip("[]"), port), handler)
    server.daemon_threads = True
    return server


def serve(root: Path | str, host: str = "127.0.0.1", port: int = 8765, *, allow_remote: bool = False,
          quiet: bool = True, open_browser: bool = False) -> None:
    server = make_server(root, host, port, allow_remote=allow_remote, quiet=quiet)
    address, bound_port = server.server_address[:2]
    assert isinstance(address, str)  # an AF_INET or AF_INET6 address
    url = f"http://{'[' + address + ']' if ':' in address else address}:{bound_port}/"
    print(f"grokscope viewer on {url} (serving {Path(root).resolve()}; Ctrl-C to stop)", flush=True)
    if open_browser:
        opener = threading.Timer(0.5, webbrowser.open, (url,))
        opener.daemon = True
        opener.start()
    with server, contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
