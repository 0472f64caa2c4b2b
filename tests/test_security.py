"""Security: no pickle or code execution in the source, a formula parser that only builds data, and a viewer that
is read-only, stays inside its root and escapes whatever run folders contain. (test_serve.py covers path traversal
in URLs and the basic escaping; these add what it does not.)"""

from __future__ import annotations

import ast
import hashlib
import http.client
import json
import threading
from pathlib import Path

import pytest

import grokscope
from grokscope.formula import FormulaError, parse_formula

SOURCE = Path(grokscope.__file__).parent

# --------------------------------------------------------------------------- the source tree

UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}
UNSAFE_CALLS = {"eval", "exec", "compile", "__import__", "breakpoint"}
UNSAFE_ATTRS = {
    ("torch", "load"),
    ("torch", "jit"),
    ("os", "system"),
    ("os", "popen"),
    ("pd", "read_pickle"),
    ("pandas", "read_pickle"),
    ("yaml", "load"),
    ("yaml", "unsafe_load"),
    ("yaml", "full_load"),
}
# Deliberate dynamic imports: the CLI's own subcommand modules (a constant list), the figures' lazy attributes, and a
# Python sweep spec the user names on the command line (their own code, as 'python spec.py' would run it). Nothing
# read from a run or sweep folder is ever imported or executed.
DYNAMIC_IMPORTS = {"cli.py", "figures/__init__.py", "sweep/spec_files.py"}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    parts.append(node.id if isinstance(node, ast.Name) else "<expr>")  # build_model(...).eval() is not eval()
    return ".".join(reversed(parts))


def scan(path: Path, rel: str | None = None) -> list[str]:
    """Unsafe constructs in one file, as 'file:line: what'."""
    rel = rel or path.relative_to(SOURCE).as_posix()
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = f"grokscope/{rel}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in UNSAFE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in UNSAFE_MODULES:
            found.append(f"{where}: from {node.module} import ...")
        elif isinstance(node, ast.Call):
            name = _dotted(node.func)
            kwargs = {k.arg: k.value for k in node.keywords}
            if name in UNSAFE_CALLS or name in {f"builtins.{c}" for c in UNSAFE_CALLS}:
                found.append(f"{where}: {name}()")
            if any(name == f"{m}.{a}" or name.startswith(f"{m}.{a}.") for m, a in UNSAFE_ATTRS) or name.endswith(
                ".read_pickle"
            ):
                found.append(f"{where}: {name}()")
            if (
                name.split(".")[0] in ("subprocess", "sp")
                and isinstance(kwargs.get("shell"), ast.Constant)
                and kwargs["shell"].value
            ):
                found.append(f"{where}: {name}(shell=True)")
            if name.split(".")[-1] == "load" and name.split(".")[0] in ("np", "numpy") and "allow_pickle" in kwargs:
                found.append(f"{where}: {name}(allow_pickle=...)")
            if name.split(".")[-1] in ("exec_module", "import_module") and rel not in DYNAMIC_IMPORTS:
                found.append(f"{where}: {name}() outside the allowed places")
    return found


def test_the_source_has_no_pickle_eval_exec_or_shell():
    files = sorted(SOURCE.rglob("*.py"))
    assert len(files) > 40
    problems = [p for f in files for p in scan(f)]
    assert not problems, "\n".join(problems)


def test_the_scanner_finds_what_it_looks_for(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nfrom dill import loads\nimport torch\nx = torch.load('m.pt')\ny = eval('1')\n"
        "import subprocess\nsubprocess.run('ls', shell=True)\nimport numpy as np\nnp.load('a', allow_pickle=True)\n"
        "import importlib\nimportlib.import_module(name)\n"
    )
    found = scan(bad, "bad.py")
    assert [f.split(": ", 1)[1] for f in found] == [
        "import pickle",
        "from dill import ...",
        "torch.load()",
        "eval()",
        "subprocess.run(shell=True)",
        "np.load(allow_pickle=...)",
        "importlib.import_module() outside the allowed places",
    ]


def test_checkpoints_are_safetensors_with_no_pickle_inside(tmp_path):
    from grokscope import apply_overrides, train
    from grokscope.presets import tiny

    run = train(apply_overrides(tiny(), {"train.epochs": 4}), tmp_path / "run", progress=False)
    stored = [p for p in run.dir.rglob("*") if p.is_file()]
    assert {p.suffix for p in stored} <= {".json", ".sqlite", ".safetensors", ".sqlite-wal", ".sqlite-shm", ""}
    for p in stored:
        head = p.read_bytes()[:4]
        assert not head.startswith(b"PK\x03\x04") and head[:1] != b"\x80", p  # torch.save's zip, a bare pickle
    for p in run.dir.rglob("*.safetensors"):
        data = p.read_bytes()
        n = int.from_bytes(data[:8], "little")
        json.loads(data[8 : 8 + n])  # a JSON header, then raw tensor bytes


# --------------------------------------------------------------------------- the formula parser


@pytest.mark.parametrize(
    "text",
    [
        "a.__class__",
        "(a).real",
        "abs(a)",
        "a(b)",
        "pow(a, 2)",
        "__builtins__",
        "__class__ + a",
        "a[0]",
        "'a'",
        '"a"+b',
        "eval('a')",
        "exec('import os')",
        "[a for a in b]",
        "(a := b)",
        "a if b else a",
        "a and b",
        "not a",
        "a @ b",
        "a % b",
        "a == b",
        "a << b",
        "{}",
        "f'{a}'",
        "a;import os",
        "a\nimport os",
        "getattr(a, 'b')",
        "a.__dict__",
        "x.__globals__",
        "().__class__.__bases__[0].__subclasses__()",
    ],
)
def test_the_parser_rejects_python_beyond_its_grammar(text):
    with pytest.raises(FormulaError):
        parse_formula(text)


def test_a_parsed_formula_is_plain_data():
    """The parse tree holds only operator names, the variables a and b and integers: there is nothing to call."""
    allowed = {"num", "var", "neg", "pow", "if", "+", "-", "*", "/", "a", "b"}

    def walk(node):
        assert isinstance(node, tuple) and node[0] in allowed, node
        for item in node[1:]:
            if isinstance(item, tuple):
                walk(item)
            else:
                assert type(item) is int or item in allowed, item

    for text in [
        "a+b",
        "x*y - 3*x",
        "(a+b)^3 / (a - b)",
        "-a**2 + 7",
        "x/y if y is odd else x-y",
        "a*b if a is even else a+b",
    ]:
        walk(parse_formula(text).tree)


# --------------------------------------------------------------------------- the viewer
# Only the viewer and report tests need plotly (extra 'plot'): they skip without it through the fixture below and
# the report test's own check; the source scan and parser tests above run regardless.


def _needs_plotly() -> None:
    pytest.importorskip("plotly", reason="plotly not installed (extra 'plot'): viewer security tests skipped")


EVIL_DIR = "<script>alert(1)<!--<script>"  # no '/': a directory name cannot hold '</script>'
EVIL_NAME = "<img src=x onerror=alert(2)>\"' <!--<script>"
OUTSIDE = "OUTSIDE-SECRET-2718"


@pytest.fixture(scope="module")
def viewer_root(tmp_path_factory):
    _needs_plotly()
    from figure_runs import copy_run

    base = tmp_path_factory.mktemp("viewer-sec")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    copy_run("tiny", root / "tiny")
    evil = copy_run("tiny", root / EVIL_DIR)
    cfg = json.loads((evil.dir / "config.json").read_text())
    cfg["name"] = EVIL_NAME
    (evil.dir / "config.json").write_text(json.dumps(cfg))
    evil.write_metrics(30, {"<!--<script>alert(3)": 1.0, "test_acc": 0.5})  # metric names are data too
    evil.set_meta({"message": EVIL_NAME, "grok_epoch": "<b>7</b>"})
    # outside the root: a run and a secret file, reached only through symlinks placed inside the root
    copy_run("tiny", outside / "run")
    (outside / "secret.html").write_text(f"<p>{OUTSIDE}</p>")
    (root / "linked-run").symlink_to(outside / "run", target_is_directory=True)
    (root / "tiny-link").symlink_to(root / "tiny", target_is_directory=True)  # inside the root: fine
    (root / "tiny" / "report.html").symlink_to(outside / "secret.html")
    (root / "group").mkdir()
    (root / "group" / "notes.txt").write_text("listing me would be a directory listing")
    return root


@pytest.fixture(scope="module")
def server(viewer_root):
    from grokscope.serve import make_server

    srv = make_server(viewer_root, port=0)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def request(
    server, path: str, method: str = "GET", body: bytes | None = None, host: str | None = None
) -> tuple[int, str]:
    h, port = server.server_address[:2]
    conn = http.client.HTTPConnection(h, port, timeout=120)
    try:
        conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        resp = conn.getresponse()
        return resp.status, resp.read().decode("utf-8", "replace")
    finally:
        conn.close()


def _quoted(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")


def _scripts_are_intact(page: str) -> None:
    """Every <script> element closes where it should: no '<!--' or '<script' inside a script's text (which would
    make the HTML parser swallow the rest of the page), and as many openings as closings."""
    import re

    bodies = re.findall(r"<script[^>]*>(.*?)</script>", page, flags=re.S)
    assert page.count("<script") == page.count("</script>") == len(bodies)
    for text in bodies:
        assert "<!--" not in text and "<script" not in text.lower(), text[:200]


def test_names_from_run_folders_are_escaped_on_the_list_run_and_compare_pages(server):
    status, page = request(server, "/")
    assert status == 200
    for raw in (EVIL_DIR, EVIL_NAME, "<img", "<script>alert"):
        assert raw not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page and "&lt;script&gt;alert(1)" in page
    _scripts_are_intact(page)
    status, page = request(server, "/run/" + _quoted(EVIL_DIR))
    assert status == 200 and "<img src=x" not in page and "<script>alert" not in page
    assert "&lt;img src=x onerror=alert(2)&gt;" in page
    _scripts_are_intact(page)
    status, page = request(server, "/compare?run=tiny&run=" + _quoted(EVIL_DIR))
    assert status == 200 and "<script>alert" not in page
    _scripts_are_intact(page)
    status, body = request(server, "/api/runs")
    assert {r["name"] for r in json.loads(body)} >= {EVIL_NAME, "tiny"}  # JSON carries the name as data


def test_symlinks_out_of_the_root_are_not_followed(server, viewer_root):
    from grokscope.serve import find_runs

    assert "linked-run" not in find_runs(viewer_root) and "tiny-link" in find_runs(viewer_root)
    for path in [
        "/run/linked-run",
        "/api/run/linked-run/metrics",
        "/api/run/linked-run/header",
        "/run/tiny/report.html",
        "/compare?run=linked-run",
        "/run/tiny-link/report.html",
    ]:
        status, body = request(server, path)
        assert status == 404 and OUTSIDE not in body, path
    assert "linked-run" not in request(server, "/")[1]
    assert request(server, "/run/tiny-link")[0] == 200


@pytest.mark.parametrize(
    "path",
    [
        "/run/",
        "/run/tiny/checkpoints",
        "/run/tiny/checkpoints/",
        "/group/",
        "/group",
        "/static/",
        "/api/",
        "/api/run/",
        "/api/run/tiny",
        "/sweep/",
        "/.",
        "/tiny/",
    ],
)
def test_no_directory_listing(server, path):
    status, body = request(server, path)
    assert status == 404, path
    assert "notes.txt" not in body and "step_0" not in body and "config.json" not in body


def snapshot(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink() and not p.name.endswith(("-shm", "-wal"))
    }


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize("path", ["/", "/run/tiny", "/api/run/tiny/metrics", "/run/tiny/config.json", "/new.txt"])
def test_writing_methods_get_405_and_write_nothing(server, viewer_root, method, path):
    before = snapshot(viewer_root)
    status, _ = request(server, path, method=method, body=b'{"status": "completed", "x": 1}')
    assert status == 405
    assert snapshot(viewer_root) == before
    assert not (viewer_root / "new.txt").exists()


def test_requests_for_another_host_are_refused(server):
    """A web page elsewhere cannot read the viewer through a DNS name rebound to 127.0.0.1: the Host header must be
    a loopback name."""
    port = server.server_address[1]
    assert request(server, "/api/runs", host=f"127.0.0.1:{port}")[0] == 200
    assert request(server, "/api/runs", host=f"localhost:{port}")[0] == 200
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1.evil.example:{port}"):
        status, body = request(server, "/api/runs", host=host)
        assert status == 403 and "tiny" not in body, host


def test_the_viewer_binds_loopback_unless_told_otherwise(viewer_root):
    from grokscope.serve import ServeError, make_server

    srv = make_server(viewer_root, port=0)
    try:
        assert srv.server_address[0] == "127.0.0.1"
    finally:
        srv.server_close()
    for host in ("0.0.0.0", "::", "192.168.0.10", "example.com"):
        with pytest.raises(ServeError):
            make_server(viewer_root, host=host, port=0)


def test_figure_json_in_a_report_cannot_break_out_of_its_script_element():
    _needs_plotly()
    import plotly.graph_objects as go

    from grokscope.figures.report import fig_json

    label = "</script><!--<script>alert(4)"
    text = fig_json(go.Figure(go.Scatter(x=[1], y=[2], name=label), layout={"title": {"text": label + "<br>x"}}))
    assert "<" not in text
    assert json.loads(text)["data"][0]["name"] == label  # the browser's JSON.parse gets the text back unchanged
