"""``grokscope serve``: a local, read-only web viewer over a directory of runs (standard library only, plus
Plotly for the report pages).

Routes (GET/HEAD only; anything else is 405, any unknown path 404)::

    /                              the run list: status, epochs, accuracies, grok epoch; pick runs to compare
    /run/<id>                      a run's report page; its curves and header update live while the run trains
    /run/<id>/report.html          the run's saved report.html, if there is one
    /compare?run=<id>&run=<id>     curves of several runs overlaid
    /api/runs                      the run list as JSON
    /api/run/<id>/metrics          {status, epoch, epochs, grok_epoch, steps, columns: {name: [...]}} (polled)
    /api/run/<id>/header           the report header facts as JSON
    /static/plotly.min.js          plotly.js from the installed plotly package (no network)

``<id>`` is a run directory's path relative to DIR. Only run directories found under DIR (up to depth
:data:`MAX_DEPTH`, not following symlinks out of DIR) can be named, so ``..`` or absolute paths never reach a
file outside DIR: they get 404. The server binds 127.0.0.1 by default and refuses a non-loopback address unless
``allow_remote=True``; bound to loopback it answers only requests whose Host header is a loopback name (a web page
elsewhere cannot reach it through a DNS name rebound to 127.0.0.1). It never writes anything, serves no directory
listing, and serves a file only when it resolves inside DIR.
"""

from __future__ import annotations

import html
import ipaddress
import json
import math
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from grokscope.measures.phases import GROK_ACC
from grokscope.store.run import Run, RunError, is_run_dir

MAX_DEPTH = 4
LIVE_COLUMNS = ("train_loss", "train_acc", "test_loss", "test_acc")
SKIP_DIRS = {"checkpoints", "__pycache__", "node_modules"}


class ServeError(ValueError):
    """A bad server setting (for example a non-loopback host without allow_remote)."""


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# --------------------------------------------------------------------------- run discovery


def _find_dirs(root: Path, is_hit, default_name: str, max_depth: int, *, skip=lambda d: False) -> dict[str, Path]:
    """{id: directory} for every directory under ``root`` (at most ``max_depth`` levels down) for which ``is_hit``
    holds; ids are POSIX paths relative to root, a root that is itself a hit is listed under its own name. Hits
    and directories for which ``skip`` holds are not descended into; symlinks that leave root are ignored."""
    root = Path(root).resolve()
    if is_hit(root):
        return {root.name or default_name: root}
    out: dict[str, Path] = {}

    def walk(d: Path, depth: int) -> None:
        try:
            children = sorted(d.iterdir())
        except OSError:
            return
        for c in children:
            if c.name.startswith(".") or c.name in SKIP_DIRS or not c.is_dir():
                continue
            try:
                real = c.resolve()
            except OSError:
                continue
            if not real.is_relative_to(root):
                continue
            if is_hit(c):
                out[c.relative_to(root).as_posix()] = real
            elif depth < max_depth and not skip(c):
                walk(c, depth + 1)

    walk(root, 1)
    return out


def find_runs(root: Path, max_depth: int = MAX_DEPTH) -> dict[str, Path]:
    """{id: run directory} for every run under ``root`` (ids are POSIX paths relative to root)."""
    return _find_dirs(root, is_run_dir, "run", max_depth)


def find_sweeps(root: Path, max_depth: int = MAX_DEPTH) -> dict[str, Path]:
    """{id: sweep directory} for every sweep (a directory with ``sweep.json``) under ``root``; runs are not entered."""
    return _find_dirs(root, lambda d: (d / "sweep.json").is_file(), "sweep", max_depth, skip=is_run_dir)


def run_summary(run_id: str, path: Path) -> dict:
    """The key numbers of one run for the list (never raises: a broken run is listed with its error)."""
    info: dict = {"id": run_id, "name": run_id, "status": "?", "epoch": None, "epochs": None, "grok_epoch": None}
    try:
        run = Run(path)
        info["name"] = run.config.name
        info["epochs"] = run.config.train.epochs
        info["task"] = f"{run.config.task.formula} mod {run.config.task.p}"
        info["arch"] = run.config.model.arch
        meta = run.meta
        info["status"] = meta.get("status", "new")
        rows = run.metric_rows(list(LIVE_COLUMNS)) if meta else []
        last: dict[str, float] = {}
        grok: str | int | None = meta.get("grok_epoch") or None
        for step, name, value in rows:
            if value is None:
                continue
            info["epoch"] = max(info["epoch"] or 0, step)
            last[name] = value
            if grok is None and name == "test_acc" and value >= GROK_ACC:
                grok = step
        info.update({k: last.get(k) for k in LIVE_COLUMNS})
        info["grok_epoch"] = int(grok) if grok not in (None, "") else None
        info["checkpoints"] = len(run.checkpoints)
        info["mtime"] = max((path / f).stat().st_mtime for f in ("config.json", "metrics.sqlite") if (path / f).exists())
    except (RunError, OSError, ValueError) as e:
        info["status"] = "unreadable"
        info["error"] = str(e)
    return info


def metrics_payload(run: Run, columns: list[str] | None = None, since: int | None = None) -> dict:
    """The polled JSON: status, progress and the chosen metric columns (non-finite values as null)."""
    meta = run.meta
    names = list(columns) if columns else list(LIVE_COLUMNS)
    rows = run.metric_rows(names) if (run.dir / "metrics.sqlite").exists() else []
    steps: list[int] = []
    index: dict[int, int] = {}
    cols: dict[str, list] = {n: [] for n in names}
    for step, name, value in rows:
        if since is not None and step <= since:
            continue
        if step not in index:
            index[step] = len(steps)
            steps.append(step)
            for n in names:
                cols[n].append(None)
        v = value if value is None or math.isfinite(value) else None
        cols[name][index[step]] = v
    grok: str | int | None = meta.get("grok_epoch") or None
    if grok is None and "test_acc" in cols:
        grok = next((s for s, v in zip(steps, cols["test_acc"]) if v is not None and v >= GROK_ACC), None)
    return {
        "status": meta.get("status", "new"),
        "message": meta.get("message", ""),
        "epoch": steps[-1] if steps else 0,
        "epochs": run.config.train.epochs,
        "grok_epoch": int(grok) if grok not in (None, "") else None,
        "steps": steps,
        "columns": cols,
    }


# --------------------------------------------------------------------------- pages

PAGE_CSS = """
body { font: 14px/1.45 Helvetica, Arial, sans-serif; color: #222; margin: 0; background: #fafbfc; }
header.top { background: #1f2933; color: #fff; padding: 14px 28px; } header.top h1 { margin: 0; font-size: 22px; }
header.top .sub { color: #cbd2d9; font-size: 13px; } header.top a { color: #9fd3ff; }
main { max-width: 1280px; margin: 0 auto; padding: 18px 28px 60px; }
table.runs { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid #e3e6ea; }
table.runs th, table.runs td { padding: 6px 10px; border-bottom: 1px solid #e3e6ea; text-align: left; }
table.runs th { background: #f2f4f7; font-size: 12px; text-transform: uppercase; letter-spacing: .04em; color: #556; }
table.runs td.num { text-align: right; font-variant-numeric: tabular-nums; }
.status { padding: 1px 8px; border-radius: 10px; font-size: 12px; background: #eee; }
.status.running { background: #dff3e0; color: #1a7f2a; } .status.completed { background: #e3eefb; color: #1f5fa8; }
.status.failed, .status.unreadable { background: #fde2e1; color: #a8271f; }
button { font: inherit; padding: 5px 12px; border: 1px solid #9aa5b1; border-radius: 4px; background: #fff; cursor: pointer; }
.small { color: #667; font-size: 12px; }
a { color: #1f77b4; }
"""


def _fmt(v, kind: str) -> str:
    if v is None:
        return "–"
    if kind == "acc":
        return f"{v:.3f}"
    if kind == "loss":
        return f"{v:.2e}"
    return str(v)


def index_page(root: Path, runs: dict[str, Path], sweeps: dict[str, Path] | None = None) -> str:
    sweep_items = "".join(f'<li><a href="/sweep/{_esc(quote(sid))}">{_esc(sid)}</a></li>' for sid in sorted(sweeps or {}))
    sweep_html = f'<h2>Sweeps</h2><ul class="sweeps">{sweep_items}</ul>' if sweep_items else ""
    rows = []
    for rid in sorted(runs):
        s = run_summary(rid, runs[rid])
        href = "/run/" + quote(rid)
        status = s["status"]
        prog = f"{s['epoch'] if s['epoch'] is not None else 0} / {s['epochs'] if s['epochs'] is not None else '?'}"
        rows.append(
            f'<tr data-run="{_esc(rid)}"><td><input type="checkbox" name="run" value="{_esc(rid)}" form="cmp"></td>'
            f'<td><a href="{_esc(href)}">{_esc(rid)}</a><div class="small">{_esc(s.get("name", ""))} · {_esc(s.get("task", ""))} · {_esc(s.get("arch", ""))}</div></td>'
            f'<td><span class="status {_esc(status)}">{_esc(status)}</span></td>'
            f'<td class="num">{_esc(prog)}</td><td class="num">{_esc(_fmt(s.get("train_acc"), "acc"))}</td>'
            f'<td class="num">{_esc(_fmt(s.get("test_acc"), "acc"))}</td><td class="num">{_esc(_fmt(s.get("test_loss"), "loss"))}</td>'
            f'<td class="num">{_esc(_fmt(s.get("grok_epoch"), ""))}</td><td class="num">{_esc(s.get("checkpoints", "–"))}</td></tr>'
        )
    body = "".join(rows) or '<tr><td colspan="9">No runs found here. Train one: <code>grokscope train --preset quick --out DIR/quick</code></td></tr>'
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>grokscope — runs in {_esc(root.name)}</title>
<style>{PAGE_CSS}</style></head><body>
<header class="top"><h1>grokscope runs</h1><div class="sub">{_esc(root)} · {len(runs)} run(s)</div></header>
<main>
<form id="cmp" action="/compare" method="get"></form>
<table class="runs"><tr><th></th><th>run</th><th>status</th><th>epoch</th><th>train acc</th><th>test acc</th><th>test loss</th><th>grok epoch</th><th>ckpts</th></tr>
{body}</table>
{sweep_html}
<p><button type="submit" form="cmp">Compare selected runs</button> <span class="small">Tick two or more runs to overlay their curves. The list is read when the page loads; reload to refresh.</span></p>
</main></body></html>"""


COMPARE_JS = r"""
(function () {
  var ids = window.GROKSCOPE_RUNS, palette = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
  var div = document.getElementById('plot-compare'), sel = document.getElementById('metric');
  var cache = {};
  function draw() {
    var col = sel.value, traces = [];
    ids.forEach(function (id, i) {
      var d = cache[id]; if (!d) return;
      traces.push({x: d.steps, y: d.columns[col], name: id, mode: 'lines', line: {color: palette[i % palette.length], width: 2}});
    });
    Plotly.react(div, traces, {height: 520, title: {text: col + ' — ' + traces.length + ' runs', x: 0.01},
      xaxis: {title: {text: 'epoch'}, showline: true, linecolor: '#888'},
      yaxis: {title: {text: col}, type: col.indexOf('loss') >= 0 ? 'log' : 'linear', exponentformat: 'power', showline: true, linecolor: '#888'},
      paper_bgcolor: 'white', plot_bgcolor: 'white', legend: {orientation: 'h', y: -0.2}}, {responsive: true, displaylogo: false});
  }
  function load() {
    var pending = ids.map(function (id) {
      return fetch('/api/run/' + id.split('/').map(encodeURIComponent).join('/') + '/metrics', {cache: 'no-store'})
        .then(function (r) { return r.json(); }).then(function (d) { cache[id] = d; return d.status; });
    });
    Promise.all(pending).then(function (st) { draw(); if (st.indexOf('running') >= 0) setTimeout(load, 3000); });
  }
  sel.addEventListener('change', draw);
  load();
})();
"""


def compare_page(ids: list[str]) -> str:
    items = "".join(f'<li><a href="/run/{_esc(quote(i))}">{_esc(i)}</a></li>' for i in ids)
    ids_json = json.dumps(ids).replace("<", "\\u003c")  # no '</script>' or '<!--' inside the script element
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>grokscope — compare {len(ids)} runs</title>
<style>{PAGE_CSS}</style><script src="/static/plotly.min.js"></script></head><body>
<header class="top"><h1>Compare runs</h1><div class="sub"><a href="/">all runs</a></div></header>
<main><ul>{items}</ul>
<label>metric <select id="metric"><option>test_loss</option><option>train_loss</option><option>test_acc</option><option>train_acc</option></select></label>
<div id="plot-compare"></div></main>
<script>window.GROKSCOPE_RUNS = {ids_json};</script><script>{COMPARE_JS}</script>
</body></html>"""


# --------------------------------------------------------------------------- the server


class Viewer:
    """The state behind the handler: the root directory, plotly.js and a cache of built report pages."""

    def __init__(self, root: Path | str):
        self.root = Path(root).resolve()
        if not self.root.is_dir():
            raise ServeError(f"{root}: not a directory")
        self._plotly: bytes | None = None
        self._pages: dict[str, tuple[tuple, bytes]] = {}
        self._lock = threading.Lock()

    def runs(self) -> dict[str, Path]:
        return find_runs(self.root)

    def sweeps(self) -> dict[str, Path]:
        return find_sweeps(self.root)

    def lookup(self, run_id: str, *, sweep: bool = False) -> Path | None:
        if not run_id or ".." in run_id.split("/") or run_id.startswith("/") or "\\" in run_id or "\0" in run_id:
            return None
        return (self.sweeps() if sweep else self.runs()).get(run_id)

    def sweep_page(self, sweep_dir: Path) -> bytes | None:
        """The sweep report over the sweep's stored index (None when it has no index yet; the viewer never writes)."""
        from grokscope.sweep.figures import build_sweep_report
        from grokscope.sweep.layout import SweepDir

        if not SweepDir(sweep_dir).index_path.is_file():
            return None
        return build_sweep_report(sweep_dir, plotly_src="/static/plotly.min.js", refresh=False).encode("utf-8")

    def plotly_js(self) -> bytes:
        if self._plotly is None:
            from grokscope.figures.report import plotly_js

            self._plotly = plotly_js().encode("utf-8")
        return self._plotly

    def run_page(self, run_id: str, path: Path) -> bytes:
        from grokscope.figures.report import build_report

        run = Run(path)
        steps = run.checkpoints
        analysis = path / "analysis.json"
        key = (len(steps), steps[-1] if steps else None, run.status, analysis.stat().st_mtime if analysis.exists() else None)
        with self._lock:
            hit = self._pages.get(run_id)
            if hit is not None and hit[0] == key:
                return hit[1]
            back = '<style>.backlink{position:absolute;right:28px;top:18px;color:#9fd3ff}</style>'
            text = build_report(run, plotly_src="/static/plotly.min.js", live_url="/api/run/" + quote(run_id) + "/metrics", extra_head=back)
            text = text.replace('<header class="top">', '<header class="top" style="position:relative"><a class="backlink" href="/">all runs</a>', 1)
            page = text.encode("utf-8")
            self._pages[run_id] = (key, page)
            if len(self._pages) > 16:
                self._pages.pop(next(iter(self._pages)))
            return page


class Handler(BaseHTTPRequestHandler):
    server_version = "grokscope-viewer"
    viewer: Viewer  # set on the subclass made by make_server
    quiet = True
    check_host = True  # answer only requests addressed to a loopback name (no DNS rebinding); off with allow_remote

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler's signature
        if not self.quiet:
            super().log_message(format, *args)

    # -- responses --------------------------------------------------------------------------
    def _send(self, status: int, body: bytes, ctype: str, *, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _html(self, text: str, status: int = 200) -> None:
        self._send(status, text.encode("utf-8"), "text/html; charset=utf-8")

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj, allow_nan=False).encode("utf-8"), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._html(f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{status}</title></head><body><h1>{status}</h1><p>{_esc(message)}</p><p><a href="/">all runs</a></p></body></html>', status)

    def do_POST(self) -> None:  # noqa: N802
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "the viewer is read-only")

    do_PUT = do_DELETE = do_PATCH = do_POST  # noqa: N815

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_GET(self) -> None:  # noqa: N802
        try:
            self._route()
        except (BrokenPipeError, ConnectionResetError):
            pass
        except RunError as e:
            self._error(404, str(e))
        except Exception as e:  # noqa: BLE001 - answer 500 rather than drop the connection
            self._error(500, f"{type(e).__name__}: {e}")

    def _host_allowed(self) -> bool:
        host = (self.headers.get("Host") or "").strip()
        if not self.check_host or not host:
            return True
        name = host[1 : host.find("]")] if host.startswith("[") else host.rsplit(":", 1)[0]
        return is_loopback(name)

    def _route(self) -> None:
        if not self._host_allowed():
            return self._error(403, "this viewer answers requests for localhost only (see grokscope serve --allow-remote)")
        parts = urlsplit(self.path)
        raw = parts.path
        path = unquote(raw)
        if ".." in path.split("/") or "\0" in path or "\\" in path:
            return self._error(404, "not found")
        v = self.viewer
        if path in ("/", "/index.html"):
            return self._html(index_page(v.root, v.runs(), v.sweeps()))
        if path == "/api/runs":
            return self._json([run_summary(i, p) for i, p in sorted(v.runs().items())])
        if path == "/favicon.ico":  # browsers ask for it on every page: answer "nothing" rather than a 404
            return self._send(204, b"", "image/x-icon", cache="max-age=86400")
        if path == "/static/plotly.min.js":
            return self._send(200, v.plotly_js(), "text/javascript; charset=utf-8", cache="max-age=86400")
        if path == "/compare":
            ids = [i for i in parse_qs(parts.query).get("run", []) if v.lookup(i) is not None]
            if not ids:
                return self._error(404, "no such runs to compare")
            return self._html(compare_page(ids))
        if path.startswith("/api/run/"):
            rest = path[len("/api/run/"):]
            for suffix in ("/metrics", "/header"):
                if rest.endswith(suffix):
                    rid = rest[: -len(suffix)]
                    run_dir = v.lookup(rid)
                    if run_dir is None:
                        return self._error(404, "no such run")
                    run = Run(run_dir)
                    if suffix == "/header":
                        from grokscope.figures.report import header_data

                        return self._json(_jsonable(header_data(run)))
                    q = parse_qs(parts.query)
                    cols = [c for c in q.get("col", []) if c.replace("_", "").isalnum()] or None
                    since = int(q["since"][0]) if q.get("since", [""])[0].isdigit() else None
                    return self._json(metrics_payload(run, cols, since))
            return self._error(404, "not found")
        if path.startswith("/sweep/"):
            sweep_dir = v.lookup(path[len("/sweep/"):].rstrip("/"), sweep=True)
            if sweep_dir is None:
                return self._error(404, "no such sweep")
            page = v.sweep_page(sweep_dir)
            if page is None:
                return self._error(404, "this sweep has no index yet (it is written when its first cell finishes)")
            return self._send(200, page, "text/html; charset=utf-8")
        if path.startswith("/run/"):
            rest = path[len("/run/"):].rstrip("/")
            if rest.endswith("/report.html"):
                run_dir = v.lookup(rest[: -len("/report.html")])
                if run_dir is None or not (run_dir / "report.html").is_file() or not (run_dir / "report.html").resolve().is_relative_to(v.root):
                    return self._error(404, "no saved report for this run (make one: grokscope report RUN)")
                return self._send(200, (run_dir / "report.html").read_bytes(), "text/html; charset=utf-8")
            run_dir = v.lookup(rest)
            if run_dir is None:
                return self._error(404, "no such run")
            return self._send(200, v.run_page(rest, run_dir), "text/html; charset=utf-8")
        return self._error(404, "not found")


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def make_server(root: Path | str, host: str = "127.0.0.1", port: int = 8765, *, allow_remote: bool = False, quiet: bool = True) -> ThreadingHTTPServer:
    """A viewer server bound to (host, port) (port 0: any free port; see ``server.server_address``)."""
    if not is_loopback(host) and not allow_remote:
        raise ServeError(f"refusing to bind {host}: not a loopback address; the viewer has no authentication (pass --allow-remote to expose it anyway)")
    viewer = Viewer(root)
    handler = type("BoundHandler", (Handler,), {"viewer": viewer, "quiet": quiet, "check_host": not allow_remote})
    cls = ThreadingHTTPServer
    if ":" in host:
        import socket

        class V6Server(ThreadingHTTPServer):
            address_family = socket.AF_INET6

        cls = V6Server
    server = cls((host.strip("[]"), port), handler)
    server.daemon_threads = True
    return server


def serve(root: Path | str, host: str = "127.0.0.1", port: int = 8765, *, allow_remote: bool = False, quiet: bool = True, open_browser: bool = False) -> None:
    server = make_server(root, host, port, allow_remote=allow_remote, quiet=quiet)
    h, p = server.server_address[:2]
    assert isinstance(h, str)  # an AF_INET or AF_INET6 address
    url = f"http://{'[' + h + ']' if ':' in h else h}:{p}/"
    print(f"grokscope viewer on {url} (serving {Path(root).resolve()}; Ctrl-C to stop)", flush=True)
    if open_browser:
        import webbrowser

        def open_soon() -> None:
            time.sleep(0.5)
            webbrowser.open(url)

        threading.Thread(target=open_soon, daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
