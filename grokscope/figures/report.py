"""The run report: one self-contained HTML file (Plotly's JavaScript embedded, nothing fetched from the network)
with a header that states the config, the grok epoch, the phases and the Table 5 row, then every figure.

``write_report(run)`` writes ``RUN/report.html`` and returns its path; ``build_report(run)`` returns the HTML
text (the viewer uses it with ``plotly_src`` pointing at its own copy of plotly.js and live curves).
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable
from pathlib import Path

from grokscope import measures
from grokscope.config import flat_dict
from grokscope.figures.data import (
    analysis,
    as_run,
    find_key,
    grok_epoch,
    key_frequencies,
    metrics_or_empty,
    phases,
    safe_meta,
)
from grokscope.figures.group import basis_label, group_keys, operation_bases, run_basis
from grokscope.measures import names
from grokscope.store.run import Run

__all__ = ["build_report", "export_images", "figure_section", "header_data", "plotly_js", "write_report"]


def plotly_js() -> str:
    """The plotly.js bundle shipped inside the plotly Python package (no network)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def _esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if (abs(v) >= 1e-3 or v == 0) else f"{v:.3e}"
    return str(v)


# --------------------------------------------------------------------------- header facts


def header_data(run: Run | str | Path) -> dict:
    """The facts the report header states (also served as JSON by the viewer)."""
    run = as_run(run)
    m = metrics_or_empty(run)
    meta = safe_meta(run)
    last = {}
    if len(m):
        for col in (names.TRAIN_LOSS, names.TRAIN_ACC, names.TEST_LOSS, names.TEST_ACC):
            if col in m and m[col].notna().any():
                last[col] = float(m[col].dropna().iloc[-1])
    found, rule = phases(run, m)
    basis_text = None
    try:
        basis = run_basis(run)
        if basis is None:
            keys, key_rule = key_frequencies(run)
        else:  # over Z_n of the task's group basis
            basis_text = basis_label(basis)
            keys, key_rule = group_keys(run, basis, run.checkpoints[-1]) if run.checkpoints else ([], "no checkpoints")
        if run.config.task.kind == "multi":
            basis_text = "per operation: " + "; ".join(f"{f}: {label}" for f, _, label, _ in operation_bases(run))
    except Exception as e:  # noqa: BLE001 - a damaged checkpoint must not cost the header
        keys, key_rule = [], f"unavailable ({e})"
    extra = {} if basis_text is None else {"basis": basis_text}  # addition's header as it was
    return {
        **extra,
        "name": run.config.name,
        "dir": str(run.dir),
        "status": meta.get("status", "new"),
        "message": meta.get("message", ""),
        "epoch": int(m.index[-1]) if len(m) else 0,
        "epochs": run.config.train.epochs,
        "grok_epoch": grok_epoch(run, m),
        "train_fit_epoch": measures.grok_epoch(m, names.TRAIN_ACC, measures.FIT_ACC),
        "last": last,
        "phases": [{"name": p.name, "start": p.start, "end": p.end} for p in found],
        "phase_rule": rule,
        "key_frequencies": keys,
        "key_frequency_rule": key_rule,
        "table5": table5_row(run, m, keys),
        "checkpoints": len(run.checkpoints),
        "config": run.config.to_dict(),
    }


def table5_row(run: Run, m, keys: list[int]) -> dict:
    """The Appendix C.2.3 (Table 5) row: from ``analysis.json`` when present, else what the metrics give."""
    data = analysis(run)
    if data is not None:
        row = find_key(data, "table5", "table_5", "table5_row", "table_row")
        if isinstance(row, dict) and row:
            return {"source": "analysis.json",
                    **{k: v for k, v in row.items() if not isinstance(v, (dict, list)) or k == "key_frequencies"}}
    row = {"source": "metrics (run 'grokscope analyze' for logit and MLP FVE)", "key_frequencies": keys}
    for col in (names.GINI_W_E, names.GINI_W_L, names.TEST_LOSS):
        if col in m and m[col].notna().any():
            row[col] = float(m[col].dropna().iloc[-1])
    return row


# --------------------------------------------------------------------------- HTML

CSS = """
:root { --fg:#222; --muted:#667; --line:#e3e6ea; --accent:#ff7f0e; --bg:#fafbfc; }
* { box-sizing: border-box; }
body { font: 14px/1.45 Helvetica, Arial, sans-serif; color: var(--fg); margin: 0; background: var(--bg); }
header.top { background: #1f2933; color: #fff; padding: 14px 28px; }
header.top h1 { margin: 0; font-size: 22px; font-weight: 600; }
header.top .sub { color: #cbd2d9; font-size: 13px; margin-top: 4px; }
header.top a { color: #9fd3ff; }
main { max-width: 1280px; margin: 0 auto; padding: 18px 28px 60px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0 18px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; min-width: 150px; }
.card .k { color: var(--muted); font-size: 12px; text-transform: uppercase; letter-spacing: .04em; }
.card .v { font-size: 20px; font-weight: 600; }
.grid2 { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
@media (max-width: 900px) { .grid2 { grid-template-columns: 1fr; } }
table.kv { border-collapse: collapse; width: 100%; background: #fff; border: 1px solid var(--line); }
table.kv td, table.kv th { padding: 3px 8px; border-bottom: 1px solid var(--line); text-align: left; \
font-size: 13px; vertical-align: top; }
table.kv th { background: #f2f4f7; font-weight: 600; }
table.kv td.key { color: var(--muted); white-space: nowrap; font-family: Menlo, Consolas, monospace; font-size: 12px; }
details { margin: 4px 0; }
nav.toc { margin: 16px 0; font-size: 13px; }
nav.toc a { margin-right: 12px; color: #1f77b4; text-decoration: none; white-space: nowrap; }
section.fig { background: #fff; border: 1px solid var(--line); border-radius: 6px; padding: 12px 16px; margin: 18px 0; }
section.fig h2 { font-size: 17px; margin: 0 0 4px; }
p.caption { color: var(--muted); margin: 0 0 6px; font-size: 13px; }
p.note { color: #8a5a00; background: #fff8e6; border: 1px solid #f3deb0; border-radius: 4px; \
padding: 6px 10px; margin: 4px 0; }
.small { color: var(--muted); font-size: 12px; }
.phase { display: inline-block; padding: 1px 8px; border-radius: 10px; margin-right: 6px; font-size: 12px; }
.phase.memorisation { background: rgba(31,119,180,0.15); } .phase.circuit { background: rgba(255,127,14,0.2); }
.phase.cleanup { background: rgba(44,160,44,0.2); } .phase.generalisation { background: rgba(255,127,14,0.2); }
.live { color: #2ca02c; font-weight: 600; }
"""


def _phase_html(h: dict) -> str:
    if not h["phases"]:
        return '<span class="small">not detected (the run has not fitted its training set)</span>'
    parts = []
    for p in h["phases"]:
        cls = p["name"].split()[0]
        parts.append(f'<span class="phase {_esc(cls)}">{_esc(p["name"])}: {int(p["start"])}–{int(p["end"])}</span>')
    return "".join(parts) + f'<div class="small">rule: {_esc(h["phase_rule"])}</div>'


def _kv_table(rows: list[tuple[str, object]], head: tuple[str, str] | None = None) -> str:
    body = "".join(f'<tr><td class="key">{_esc(k)}</td><td>{_esc(_fmt(v))}</td></tr>' for k, v in rows)
    th = f"<tr><th>{_esc(head[0])}</th><th>{_esc(head[1])}</th></tr>" if head else ""
    return f'<table class="kv">{th}{body}</table>'


def _header_html(h: dict, *, live: bool) -> str:
    cfg = h["config"]
    task, model = cfg["task"], cfg["model"]
    arch = (f"{model['n_layers']}-layer transformer, d_model {model['d_model']}, {model['n_heads']}×{model['d_head']} "
            f"heads, d_mlp {model['d_mlp']}" if model["arch"] == "transformer"
            else f"MLP, d_model {model['d_model']}, {model['d_mlp']} neurons, {model['act_fn']}")
    last = h["last"]
    cards = [
        ("status", h["status"]),
        ("epoch", f"{h['epoch']} / {h['epochs']}"),
        ("grok epoch", h["grok_epoch"] if h["grok_epoch"] is not None else "not yet"),
        ("train acc", f"{last['train_acc']:.3f}" if "train_acc" in last else "–"),
        ("test acc", f"{last['test_acc']:.3f}" if "test_acc" in last else "–"),
        ("test loss", f"{last['test_loss']:.2e}" if "test_loss" in last else "–"),
        ("key frequencies", ", ".join(map(str, h["key_frequencies"])) or "none"),
        *([("basis", h["basis"])] if h.get("basis") else []),
    ]
    card_html = "".join(f'<div class="card"><div class="k">{_esc(k)}</div><div class="v" data-field="{_esc(k)}">'
                        f'{_esc(v)}</div></div>' for k, v in cards)
    t5 = [(k, ", ".join(map(str, v)) if isinstance(v, list) else v) for k, v in h["table5"].items()]
    sub = (f"{_esc(task['formula'])} mod {task['p']}, {task['train_fraction']:.0%} train · {_esc(arch)} · "
           f"AdamW lr {cfg['optim']['lr']:g}, wd {cfg['optim']['weight_decay']:g}")
    live_html = ' · <span class="live" id="live-status">live</span>' if live else ""
    return f"""
<header class="top"><h1>{_esc(h['name'])}</h1><div class="sub">{sub}{live_html}</div>\
<div class="sub">{_esc(h['dir'])}</div></header>
<main>
<div class="cards">{card_html}</div>
<div><b>Phases</b> {_phase_html(h)}</div>
<div class="small">key frequencies: {_esc(h['key_frequency_rule'])}\
{(' · ' + _esc(h['message'])) if h['message'] else ''}</div>
<div class="grid2" style="margin-top:14px">
  <div><b>Table 5 row</b>{_kv_table(t5)}</div>
  <div><details><summary><b>Config</b> ({len(flat_dict(cfg))} fields)</summary>\
{_kv_table(list(flat_dict(cfg).items()))}</details></div>
</div>
"""


LIVE_JS = """
(function () {
  var cfg = window.GROKSCOPE_LIVE; if (!cfg) return;
  var div = document.getElementById('plot-curves');
  var status = document.getElementById('live-status');
  var cols = ['train_loss', 'train_acc', 'test_loss', 'test_acc'];
  var colors = {train: '#1f77b4', test: '#d62728'};
  function ensurePlot() {
    if (div && div.data) return true;
    if (!div) {
      var sec = document.createElement('section'); sec.className = 'fig'; sec.id = 'fig-curves';
      sec.innerHTML = '<h2>Loss and accuracy</h2>';
      div = document.createElement('div'); div.id = 'plot-curves'; div.className = 'plot'; sec.appendChild(div);
      var main = document.querySelector('main'); main.insertBefore(sec, main.querySelector('section.fig'));
    }
    var traces = cols.map(function (c) {
      var split = c.split('_')[0], acc = c.indexOf('acc') > 0;
      return {x: [], y: [], name: split, meta: c, mode: 'lines', line: {color: colors[split], width: 2},
              legendgroup: split, showlegend: !acc, xaxis: acc ? 'x2' : 'x', yaxis: acc ? 'y2' : 'y'};
    });
    Plotly.newPlot(div, traces, {height: 420, title: {text: 'Loss and accuracy (live)', x: 0.01},
      xaxis: {domain: [0, 0.45], title: {text: 'epoch'}}, \
yaxis: {type: 'log', title: {text: 'loss'}, exponentformat: 'power'},
      xaxis2: {domain: [0.55, 1], title: {text: 'epoch'}}, \
yaxis2: {anchor: 'x2', range: [-0.02, 1.02], title: {text: 'accuracy'}},
      paper_bgcolor: 'white', plot_bgcolor: 'white'}, {responsive: true, displaylogo: false});
    return true;
  }
  function update(data) {
    ensurePlot();
    var idx = [], xs = [], ys = [];
    div.data.forEach(function (tr, i) {
      if (tr.meta && data.columns[tr.meta]) { idx.push(i); xs.push(data.steps); ys.push(data.columns[tr.meta]); }
    });
    if (idx.length) Plotly.restyle(div, {x: xs, y: ys}, idx);
    var f = function (name, v) { var el = document.querySelector('[data-field="' + name + '"]'); \
if (el && v !== null && v !== undefined) el.textContent = v; };
    f('status', data.status); f('epoch', data.epoch + ' / ' + data.epochs);
    if (data.grok_epoch !== null) f('grok epoch', data.grok_epoch);
    var last = function (c) { var a = data.columns[c]; return a && a.length ? a[a.length - 1] : null; };
    if (last('train_acc') !== null) f('train acc', last('train_acc').toFixed(3));
    if (last('test_acc') !== null) f('test acc', last('test_acc').toFixed(3));
    if (last('test_loss') !== null) f('test loss', last('test_loss').toExponential(2));
    if (status) status.textContent = data.status === 'running' ? \
'live: updating every ' + (cfg.interval / 1000) + ' s' : 'live: run ' + data.status;
    return data.status === 'running';
  }
  function poll() {
    fetch(cfg.url, {cache: 'no-store'}).then(function (r) { return r.json(); }).then(function (data) {
      if (update(data)) setTimeout(poll, cfg.interval);
    }).catch(function () { if (status) status.textContent = 'live: connection lost'; \
setTimeout(poll, cfg.interval * 3); });
  }
  poll();
})();
"""

RENDER_JS = r"""
(function () {
  // Draw the first two figures at once, then the others one per task so the page paints and scrolls in
  // between; a figure scrolled into view jumps the queue. A drawn plot is marked with dataset.ready.
  var conf = {responsive: true, displaylogo: false, modeBarButtonsToRemove: ['sendDataToCloud'], showLink: false};
  var pending = Array.prototype.slice.call(document.querySelectorAll('script.figure-data'));
  function draw(el) {
    var i = pending.indexOf(el);
    if (i < 0) return;
    pending.splice(i, 1);
    var fig = JSON.parse(el.textContent);
    var div = document.getElementById(el.dataset.target);
    Plotly.newPlot(div, fig.data, fig.layout, conf).then(function () {
      if (fig.frames && fig.frames.length) {
        Plotly.addFrames(div, fig.frames);
        div.dataset.frames = fig.frames.length;
      }
      div.dataset.ready = '1';
    });
  }
  pending.slice(0, 2).forEach(draw);
  if ('IntersectionObserver' in window) {
    var io = new IntersectionObserver(function (entries) {
      entries.forEach(function (e) {
        if (!e.isIntersecting) return;
        io.unobserve(e.target);
        pending.filter(function (el) { return el.dataset.target === e.target.id; }).forEach(draw);
      });
    }, {rootMargin: '300px'});
    pending.forEach(function (el) { var d = document.getElementById(el.dataset.target); if (d) io.observe(d); });
  }
  function next() { if (pending.length) { draw(pending[0]); setTimeout(next, 0); } }
  setTimeout(next, 0);
})();
"""


def _script_safe(json_text: str) -> str:
    """JSON text that can sit inside a <script> element: no '</script>' or '<!--' from a name or label."""
    return json_text.replace("<", "\\u003c")


def fig_json(fig) -> str:
    import plotly.io as pio

    return _script_safe(pio.to_json(fig, validate=False, remove_uids=True))


def plotly_script_tag(plotly_src: str | None) -> str:
    """The <script> element that loads plotly.js: the bundle itself (offline) when ``plotly_src`` is None, else a
    reference to ``plotly_src``."""
    if plotly_src is None:
        return "<script>" + plotly_js().replace("</script", "<\\/script") + "</script>"
    return f'<script src="{_esc(plotly_src)}"></script>'


def figure_section(key: str, title: str, caption: str, fig) -> str:
    """A figure's ``<section>``: its heading, caption, plot element and the figure's JSON (drawn by RENDER_JS)."""
    return (f'<section class="fig" id="fig-{_esc(key)}"><h2>{_esc(title)}</h2><p class="caption">{_esc(caption)}</p>'
            f'<div class="plot" id="plot-{_esc(key)}"></div><script type="application/json" class="figure-data" '
            f'data-target="plot-{_esc(key)}">{fig_json(fig)}</script></section>')


def build_report(run: Run | str | Path, *, plotly_src: str | None = None, live_url: str | None = None,
                 live_interval_ms: int = 2000, results=None, log: Callable[[str], None] | None = None,
                 extra_head: str = "") -> str:
    """The report as HTML text. ``plotly_src`` None embeds plotly.js; a URL references it instead (the viewer).
    ``live_url`` adds polling of a metrics JSON endpoint that updates the curves and the header cards."""
    from grokscope.figures.registry import build_all

    run = as_run(run)
    h = header_data(run)
    if results is None:
        results = build_all(run, log=log)
    toc = " ".join(f'<a href="#fig-{_esc(r.key)}">{_esc(r.title)}</a>' for r in results if r.figure is not None)
    sections = []
    na = [r for r in results if not r.applicable]
    for r in results:
        if not r.applicable:
            continue
        if r.figure is None:
            sections.append(f'<section class="fig skipped" id="fig-{_esc(r.key)}"><h2>{_esc(r.title)}</h2>'
                            f'<p class="note">Not shown: {_esc(r.note)}</p></section>')
        else:
            sections.append(figure_section(r.key, r.title, r.caption, r.figure))
    plotly_tag = plotly_script_tag(plotly_src)
    live = ""
    if live_url is not None:
        settings = _script_safe(json.dumps({"url": live_url, "interval": int(live_interval_ms)}))
        live = f"<script>window.GROKSCOPE_LIVE = {settings};</script><script>{LIVE_JS}</script>"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>grokscope report — {_esc(h['name'])}</title>
<style>{CSS}</style>
{extra_head}
</head><body>
{_header_html(h, live=live_url is not None)}
<nav class="toc">{toc}</nav>
{('<p class="small">Not applicable to this model: ' + _esc(', '.join(r.title for r in na)) + '</p>') if na else ''}
{''.join(sections)}
<p class="small">Made by grokscope {_esc(_version())}. Figures are interactive: hover for values, drag to zoom, \
double-click to reset.</p>
</main>
{plotly_tag}
<script>{RENDER_JS}</script>
{live}
</body></html>
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("grokscope")
    except PackageNotFoundError:
        return "unknown"


def export_images(results, directory: Path | str, fmt: str = "png",
                  log: Callable[[str], None] | None = None) -> list[Path]:
    """Write each figure as ``DIR/<key>.<fmt>`` through kaleido; returns the files written. When kaleido or a
    browser for it is missing, writes nothing and says so through ``log`` (export is optional)."""
    say = log or (lambda s: None)
    try:
        import kaleido  # noqa: F401
    except ImportError:
        say("image export skipped: kaleido is not installed (pip install kaleido; it also needs Chrome/Chromium)")
        return []
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for r in results:
        if r.figure is None:
            continue
        path = directory / f"{r.key}.{fmt}"
        try:
            r.figure.write_image(str(path), format=fmt)
        except Exception as e:  # noqa: BLE001 - kaleido raises many kinds of errors when no browser is found
            say(f"image export skipped: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            return written
        written.append(path)
    return written


def write_report(run: Run | str | Path, out: Path | str | None = None, *, png_dir: Path | str | None = None,
                 image_format: str = "png", log: Callable[[str], None] | None = None) -> Path:
    """Write the self-contained report (default ``RUN/report.html``) and return its path. With ``png_dir``,
    also export every figure as an image there when kaleido can."""
    from grokscope.figures.registry import build_all
    from grokscope.store.files import atomic_write_bytes

    run = as_run(run)
    results = build_all(run, log=log)
    text = build_report(run, results=results, log=log)
    path = Path(out) if out is not None else run.dir / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, text.encode("utf-8"))
    if png_dir is not None:
        export_images(results, png_dir, image_format, log=log)
    return path
