"""``grokscope serve``: the run list, a run page, the live JSON, no path traversal, escaping, loopback only."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

pytest.importorskip("plotly")

from figure_runs import copy_run  # noqa: E402

from grokscope.cli import main  # noqa: E402
from grokscope.serve import ServeError, find_runs, is_loopback, make_server  # noqa: E402

EVIL = "<img src=x onerror=alert(1)>"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("viewer")
    copy_run("tiny", root / "tiny")
    copy_run("mlp", root / "group" / "mlp")
    # a run whose name and directory look like HTML
    run = copy_run("tiny", root / "evil<b>dir")
    cfg = json.loads((run.dir / "config.json").read_text())
    cfg["name"] = EVIL
    (run.dir / "config.json").write_text(json.dumps(cfg))
    (root / "secret.txt").write_text("top secret")
    return root


@pytest.fixture(scope="module")
def server(root):
    srv = make_server(root, port=0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def get(server, path: str, method: str = "GET") -> tuple[int, str, dict]:
    host, port = server.server_address[:2]
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)  # raw path: no client-side normalisation
        conn.endheaders()
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace"), dict(resp.getheaders())
    finally:
        conn.close()


def test_binds_loopback_by_default(server):
    assert server.server_address[0] == "127.0.0.1"


def test_refuses_non_loopback_without_allow_remote(root):
    with pytest.raises(ServeError, match="loopback"):
        make_server(root, host="0.0.0.0", port=0)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")


def test_run_discovery(root):
    assert set(find_runs(root)) == {"tiny", "group/mlp", "evil<b>dir"}


def test_run_list_page_and_json(server):
    status, body, headers = get(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'href="/run/tiny"' in body and 'href="/run/group/mlp"' in body
    assert "completed" in body
    status, body, _ = get(server, "/api/runs")
    runs = {r["id"]: r for r in json.loads(body)}
    assert runs["tiny"]["status"] == "completed" and runs["tiny"]["epoch"] == 30
    assert runs["group/mlp"]["arch"] == "mlp"


def test_html_looking_names_are_escaped(server):
    _, body, _ = get(server, "/")
    assert EVIL not in body and "<b>dir" not in body
    assert "&lt;img src=x onerror=alert(1)&gt;" in body and "evil&lt;b&gt;dir" in body
    status, page, _ = get(server, "/run/evil%3Cb%3Edir")
    assert status == 200
    assert EVIL not in page and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_run_page_is_the_report_with_live_curves(server):
    status, body, _ = get(server, "/run/tiny")
    assert status == 200
    assert '<script src="/static/plotly.min.js"></script>' in body
    assert "GROKSCOPE_LIVE" in body and "/api/run/tiny/metrics" in body
    assert 'data-target="plot-curves"' in body
    status, js, headers = get(server, "/static/plotly.min.js")
    assert status == 200 and "javascript" in headers["Content-Type"] and len(js) > 1_000_000


def test_live_metrics_json_grows_while_a_run_trains(server, root):
    status, body, _ = get(server, "/api/run/tiny/metrics")
    first = json.loads(body)
    assert status == 200 and first["status"] == "completed"
    assert first["steps"][-1] == 30 and len(first["columns"]["train_loss"]) == len(first["steps"])
    from grokscope import load_run

    run = load_run(root / "tiny")
    run.write_metrics(35, {"train_loss": 0.5, "train_acc": 0.9, "test_loss": 1.0, "test_acc": 0.4})
    run.set_meta({"status": "running"})
    try:
        later = json.loads(get(server, "/api/run/tiny/metrics")[1])
        assert later["steps"][-1] == 35 and later["status"] == "running"
        assert later["columns"]["test_acc"][-1] == 0.4
        since = json.loads(get(server, "/api/run/tiny/metrics?since=30")[1])
        assert since["steps"] == [35]
    finally:
        run.set_meta({"status": "completed"})


def test_compare_page(server):
    status, body, _ = get(server, "/compare?run=tiny&run=group/mlp")
    assert status == 200 and "GROKSCOPE_RUNS" in body and '"group/mlp"' in body
    assert get(server, "/compare?run=../secret.txt")[0] == 404


@pytest.mark.parametrize(
    "path",
    [
        "/run/../secret.txt",
        "/run/%2e%2e/secret.txt",
        "/run/..%2Fsecret.txt",
        "/static/../secret.txt",
        "/api/run/../tiny/metrics",
        "/api/run/%2e%2e%2f%2e%2e%2fetc/metrics",
        "/run/tiny/../../secret.txt",
        "/run//etc/passwd",
        "/secret.txt",
        "/run/tiny/config.json",
        "/run/nope",
    ],
)
def test_paths_outside_runs_are_404(server, path):
    status, body, _ = get(server, path)
    assert status == 404, (path, status)
    assert "top secret" not in body


def test_read_only(server):
    assert get(server, "/", method="POST")[0] == 405
    assert get(server, "/run/tiny", method="DELETE")[0] == 405


def test_cli_serve_errors_are_one_line(tmp_path, capsys):
    assert main(["serve", str(tmp_path / "missing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--host", "0.0.0.0", "--port", "0"]) == 2
    assert "loopback" in capsys.readouterr().err


def test_favicon_is_no_content_not_404(server):
    # browsers request it on every page; a 404 shows up as a console error
    status, body, _ = get(server, "/favicon.ico")
    assert status == 204 and body == ""


def test_viewer_lists_and_shows_sweeps_without_writing(tmp_path):
    from grokscope.serve import find_sweeps
    from grokscope.sweep.local import run_sweep
    from grokscope.sweep.spec import make_spec

    spec = make_spec(name="vs", base="tiny", set={"train.epochs": 10}, axes={"optim.weight_decay": [0.0, 1.0]}, seeds=1)
    run_sweep(spec, tmp_path / "sweeps" / "wd", workers=0, progress=False, log=lambda s: None)
    (tmp_path / "sweeps" / "empty").mkdir()
    (tmp_path / "sweeps" / "empty" / "sweep.json").write_text((tmp_path / "sweeps" / "wd" / "sweep.json").read_text())
    assert set(find_sweeps(tmp_path)) == {"sweeps/wd", "sweeps/empty"}

    def files():  # SQLite creates its -wal/-shm side files for any reader of a WAL database; they hold no new data
        return {
            p: p.stat().st_mtime_ns
            for p in tmp_path.rglob("*")
            if p.is_file() and not p.name.endswith(("-shm", "-wal"))
        }

    before = files()
    srv = make_server(tmp_path, port=0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        status, body, _ = get(srv, "/")
        assert status == 200 and 'href="/sweep/sweeps/wd"' in body and "Sweeps" in body
        status, body, _ = get(srv, "/sweep/sweeps/wd")
        assert (
            status == 200
            and "memorisation" in body
            and "/static/plotly.min.js" in body
            and '<script src="/static/plotly.min.js">' in body
        )
        assert get(srv, "/sweep/sweeps/empty")[0] == 404  # no index yet: the viewer does not build one
        assert get(srv, "/sweep/sweeps/../sweeps/wd")[0] == 404
        assert get(srv, "/sweep/nope")[0] == 404
    finally:
        srv.shutdown()
        srv.server_close()
    assert files() == before
