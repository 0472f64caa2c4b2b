"""The viewer's HTML: the run list, the comparison page, error pages, and the run and sweep reports as served
(they load plotly.js from :data:`PLOTLY_URL`)."""

from __future__ import annotations

import html
import json
from pathlib import Path
from urllib.parse import quote

from grokscope.measures.names import TEST_ACC, TEST_LOSS, TRAIN_ACC, TRAIN_LOSS
from grokscope.store.run import Run

PLOTLY_URL = "/static/plotly.min.js"
NO_RUNS = ('<tr><td colspan="9">No runs found here. Train one: '
           "<code>grokscope train --preset quick --out DIR/quick</code></td></tr>")

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
button { font: inherit; padding: 5px 12px; border: 1px solid #9aa5b1; border-radius: 4px; background: #fff; \
cursor: pointer; }
.small { color: #667; font-size: 12px; }
a { color: #1f77b4; }
"""

COMPARE_JS = r"""
(function () {
  var ids = window.GROKSCOPE_RUNS;
  var palette = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
  var div = document.getElementById('plot-compare'), sel = document.getElementById('metric');
  var cache = {};
  function draw() {
    var col = sel.value, traces = [];
    ids.forEach(function (id, i) {
      var d = cache[id]; if (!d) return;
      traces.push({x: d.steps, y: d.columns[col], name: id, mode: 'lines',
                   line: {color: palette[i % palette.length], width: 2}});
    });
    Plotly.react(div, traces, {height: 520, title: {text: col + ' — ' + traces.length + ' runs', x: 0.01},
      xaxis: {title: {text: 'epoch'}, showline: true, linecolor: '#888'},
      yaxis: {title: {text: col}, type: col.indexOf('loss') >= 0 ? 'log' : 'linear', exponentformat: 'power',
              showline: true, linecolor: '#888'},
      paper_bgcolor: 'white', plot_bgcolor: 'white', legend: {orientation: 'h', y: -0.2}},
      {responsive: true, displaylogo: false});
  }
  function load() {
    var pending = ids.map(function (id) {
      return fetch('/api/run/' + id.split('/').map(encodeURIComponent).join('/') + '/metrics', {cache: 'no-store'})
        .then(function (r) { return r.json(); }).then(function (d) { cache[id] = d; return d.status; });
    });
    Promise.all(pending).then(function (statuses) {
      draw(); if (statuses.indexOf('running') >= 0) setTimeout(load, 3000);
    });
  }
  sel.addEventListener('change', draw);
  load();
})();
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def _fmt(value, spec: str = "") -> str:
    return "–" if value is None else format(value, spec)


def _run_row(info: dict) -> str:
    """One row of the run list, from a :func:`~grokscope.serve.catalogue.run_summary`."""
    rid, status, epoch, epochs = info["id"], info["status"], info["epoch"], info["epochs"]
    about = " · ".join(esc(info.get(key, "")) for key in ("name", "task", "arch"))
    numbers = (f"{epoch if epoch is not None else 0} / {epochs if epochs is not None else '?'}",
               _fmt(info.get(TRAIN_ACC), ".3f"), _fmt(info.get(TEST_ACC), ".3f"), _fmt(info.get(TEST_LOSS), ".2e"),
               _fmt(info.get("grok_epoch")), info.get("checkpoints", "–"))
    return (f'<tr data-run="{esc(rid)}"><td><input type="checkbox" name="run" value="{esc(rid)}" form="cmp"></td>'
            f'<td><a href="{esc("/run/" + quote(rid))}">{esc(rid)}</a><div class="small">{about}</div></td>'
            f'<td><span class="status {esc(status)}">{esc(status)}</span></td>'
            + "".join(f'<td class="num">{esc(number)}</td>' for number in numbers) + "</tr>")


def index_page(root: Path, summaries: list[dict], sweep_ids) -> str:
    """The run list (``summaries`` in id order) with a form to compare runs, and the sweeps' links."""
    sweep_items = "".join(f'<li><a href="/sweep/{esc(quote(sid))}">{esc(sid)}</a></li>' for sid in sorted(sweep_ids))
    sweep_html = f'<h2>Sweeps</h2><ul class="sweeps">{sweep_items}</ul>' if sweep_items else ""
    body = "".join(_run_row(info) for info in summaries) or NO_RUNS
    head = "<th>test loss</th><th>grok epoch</th><th>ckpts</th>"
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">\
<title>grokscope — runs in {esc(root.name)}</title>
<style>{PAGE_CSS}</style></head><body>
<header class="top"><h1>grokscope runs</h1><div class="sub">{esc(root)} · {len(summaries)} run(s)</div></header>
<main>
<form id="cmp" action="/compare" method="get"></form>
<table class="runs"><tr><th></th><th>run</th><th>status</th><th>epoch</th><th>train acc</th><th>test acc</th>{head}</tr>
{body}</table>
{sweep_html}
<p><button type="submit" form="cmp">Compare selected runs</button> <span class="small">Tick two or more runs to \
overlay their curves. The list is read when the page loads; reload to refresh.</span></p>
</main></body></html>"""


def compare_page(ids: list[str]) -> str:
    """The curves of the runs ``ids`` overlaid, one metric at a time."""
    items = "".join(f'<li><a href="/run/{esc(quote(i))}">{esc(i)}</a></li>' for i in ids)
    ids_json = json.dumps(ids).replace("<", "\\u003c")  # no '</script>' or '<!--' inside the script element
    options = "".join(f"<option>{name}</option>" for name in (TEST_LOSS, TRAIN_LOSS, TEST_ACC, TRAIN_ACC))
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>grokscope — compare {len(ids)} runs\
</title>
<style>{PAGE_CSS}</style><script src="{PLOTLY_URL}"></script></head><body>
<header class="top"><h1>Compare runs</h1><div class="sub"><a href="/">all runs</a></div></header>
<main><ul>{items}</ul>
<label>metric <select id="metric">{options}</select></label>
<div id="plot-compare"></div></main>
<script>window.GROKSCOPE_RUNS = {ids_json};</script><script>{COMPARE_JS}</script>
</body></html>"""


def error_page(status: int, message: str) -> str:
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>{status}</title></head><body><h1>{status}</h1>'
            f'<p>{esc(message)}</p><p><a href="/">all runs</a></p></body></html>')


def run_page(run: Run, run_id: str) -> str:
    """The run's report with live curves (polling its metrics JSON) and a link back to the run list."""
    from grokscope.figures.report import build_report

    back = '<style>.backlink{position:absolute;right:28px;top:18px;color:#9fd3ff}</style>'
    live_url = "/api/run/" + quote(run_id) + "/metrics"
    text = build_report(run, plotly_src=PLOTLY_URL, live_url=live_url, extra_head=back)
    link = '<header class="top" style="position:relative"><a class="backlink" href="/">all runs</a>'
    return text.replace('<header class="top">', link, 1)


def sweep_page(sweep_dir: Path) -> str | None:
    """The sweep report over the sweep's stored index (None when it has no index yet; the viewer never writes)."""
    from grokscope.sweep.figures import build_sweep_report
    from grokscope.sweep.layout import SweepDir

    if not SweepDir(sweep_dir).index_path.is_file():
        return None
    return build_sweep_report(sweep_dir, plotly_src=PLOTLY_URL, refresh=False)
