"""The package's import graph, read from the source (imports inside functions count: a lazy import is still a
dependency): no import cycle, no import from a higher floor (FLOORS below, drawn in docs/architecture.md), no
private name imported across modules."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "grokscope"


def module_sources(root: Path = PACKAGE) -> dict[str, str]:
    """{dotted module name: source} for every module of the package (a package is its ``__init__``)."""
    out = {}
    for f in sorted(root.rglob("*.py")):
        parts = f.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = f.read_text()
    return out


def from_imports(sources: dict[str, str]):
    """(module, ``from`` statement, the absolute module it imports from) for every ``from ... import`` of every
    module, relative imports resolved against the module's package."""
    for module, text in sources.items():
        package = module if any(m.startswith(module + ".") for m in sources) else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package
                    for _ in range(node.level - 1):
                        up = up.rpartition(".")[0]
                    base = f"{up}.{base}" if base else up
                yield module, node, base


def import_graph(sources: dict[str, str], top: str = "grokscope") -> dict[str, set[str]]:
    """Module -> the package modules it imports (``from pkg import name`` counts as ``pkg.name`` when that is a
    module)."""

    def resolve(name: str) -> str | None:
        while name and name not in sources:
            name = name.rpartition(".")[0]
        return name or None

    targets: list[tuple[str, str]] = []  # (importer, imported name)
    for module, text in sources.items():
        targets += [
            (module, a.name) for node in ast.walk(ast.parse(text)) if isinstance(node, ast.Import) for a in node.names
        ]
    for module, node, base in from_imports(sources):
        targets += [(module, f"{base}.{a.name}" if f"{base}.{a.name}" in sources else base) for a in node.names]
    graph: dict[str, set[str]] = {m: set() for m in sources}
    for module, t in targets:
        if t == top or t.startswith(top + "."):
            r = resolve(t)
            if r is not None and r != module:
                graph[module].add(r)
    return graph


def plugin_edges(sources: dict[str, str]) -> set[str]:
    """The feature CLIs ``grokscope.cli`` loads by name (its ``PLUGIN_COMMANDS`` strings, which no import statement
    shows): dependencies all the same."""
    for node in ast.walk(ast.parse(sources["grokscope.cli"])):
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "PLUGIN_COMMANDS" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    raise AssertionError("grokscope.cli has no PLUGIN_COMMANDS")


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_the_checker_finds_planted_cycles_and_resolves_relative_and_lazy_imports():
    sources = {
        "grokscope": "",
        "grokscope.a": "from grokscope.b import f\n",
        "grokscope.b": "def f():\n    from grokscope import c  # lazy\n",
        "grokscope.c": "from .a import g\nimport torch\n",
        "grokscope.d": "import grokscope.a\n",
        "grokscope.sub": "from . import e\n",
        "grokscope.sub.e": "from ..d import x\n",
    }
    graph = import_graph(sources)
    assert graph["grokscope.b"] == {"grokscope.c"} and graph["grokscope.c"] == {"grokscope.a"}
    assert graph["grokscope.sub"] == {"grokscope.sub.e"} and graph["grokscope.sub.e"] == {"grokscope.d"}
    assert import_cycles(graph) == [["grokscope.a", "grokscope.b", "grokscope.c"]]
    assert import_cycles({"x": {"y"}, "y": set()}) == []


def test_the_package_has_no_import_cycles():
    sources = module_sources()
    graph = import_graph(sources)
    assert len(graph) > 50 and graph["grokscope.training.loop"] >= {"grokscope.runtime", "grokscope.training.adamw"}
    plugins = plugin_edges(sources)
    assert {"grokscope.analysis.cli", "grokscope.sweep.cli"} <= plugins <= set(sources)
    graph["grokscope.cli"] |= plugins
    assert import_cycles(graph) == []


def private_imports(sources: dict[str, str]) -> set[tuple[str, str]]:
    """(importer, "module.name") for every ``from grokscope... import _name`` (relative imports resolved)."""
    return {
        (module, f"{base}.{a.name}")
        for module, node, base in from_imports(sources)
        if base.startswith("grokscope")
        for a in node.names
        if a.name.startswith("_") and a.name != "__version__"
    }


def test_the_private_import_checker_sees_plain_and_relative_imports():
    sources = {
        "grokscope": "",
        "grokscope.p": "",
        "grokscope.p.a": "from ._core import _x, y\n",
        "grokscope.b": "from grokscope.p.a import _z\n",
    }
    assert private_imports(sources) == {("grokscope.p.a", "grokscope.p._core._x"), ("grokscope.b", "grokscope.p.a._z")}


def test_no_private_name_is_imported_across_modules():
    found = private_imports(module_sources())
    assert not found, f"private names imported across modules: {sorted(found)}; make them public or move them"


def test_a_missing_extra_is_skipped_but_a_broken_grokscope_module_is_an_error():
    import pytest

    from grokscope.cli_args import raise_unless_extra

    raise_unless_extra(ModuleNotFoundError("No module named 'plotly'", name="plotly"))  # an extra: the caller skips
    for broken in (
        ImportError("cannot import name 'x' from 'grokscope.figures.report'", name="grokscope.figures.report"),
        ImportError("something inside failed"),
    ):  # no module named: not provably an extra
        with pytest.raises(ImportError):
            raise_unless_extra(broken)


#: The floors of the package, lowest first (docs/architecture.md draws them). A module may import from its own floor
#: and the floors below, never from a floor above; the most specific pattern decides a module's floor, and every
#: feature package's ``cli`` module is on the top floor.
FLOORS: dict[str, int] = {
    # 0 the language: configs, the formula grammar they validate, how and where computations run
    "grokscope.config": 0,
    "grokscope.config_fields": 0,
    "grokscope.formula": 0,
    "grokscope.runtime": 0,
    "grokscope.device": 0,
    "grokscope.registry": 0,
    # 1 pure math: datasets, models, measures; presets (functions returning configs)
    "grokscope.tasks": 1,
    "grokscope.models": 1,
    "grokscope.measures": 1,
    "grokscope.presets": 1,
    "grokscope.presets_zoo": 1,
    "grokscope.presets_recent": 1,
    # 2 training and storage: the loop, the run directory, trackers, conversions, what every command line shares
    "grokscope.training": 2,
    "grokscope.store": 2,
    "grokscope.trackers": 2,
    "grokscope.interop": 2,
    "grokscope.cli_args": 2,
    # 3 reverse engineering of checkpoints
    "grokscope.analysis": 3,
    "grokscope.interp": 3,
    # 4 pictures, sweeps, the viewer, exports and benchmarks
    "grokscope.figures": 4,
    "grokscope.sweep": 4,
    "grokscope.serve": 4,
    "grokscope.export": 4,
    "grokscope.bench": 4,
    "grokscope.bench_loops": 4,
    "grokscope.bench_run": 4,
    # 5 the command line and the public API
    "grokscope.cli": 5,
    "grokscope.__main__": 5,
    "grokscope": 5,
}


def floor_of(module: str) -> int:
    if module.rpartition(".")[2] == "cli":
        return 5
    name = module
    while name not in FLOORS:
        if "." not in name:
            raise AssertionError(f"{module} is on no floor: add it to FLOORS (and docs/architecture.md)")
        name = name.rpartition(".")[0]
    return FLOORS[name]


def upward_imports(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(m, t) for m, targets in graph.items() for t in targets if floor_of(t) > floor_of(m)}


def test_the_floor_checker_sees_an_upward_import():
    graph = {
        "grokscope.config": {"grokscope.tasks.modular"},
        "grokscope.sweep.cli": {"grokscope.sweep.local"},
        "grokscope.tasks.modular": {"grokscope.config"},
        "grokscope.sweep.local": set(),
    }
    assert upward_imports(graph) == {("grokscope.config", "grokscope.tasks.modular")}
    assert floor_of("grokscope.analysis.cli") == 5 and floor_of("grokscope.measures.names") == 1


def test_no_module_imports_from_a_floor_above_its_own():
    graph = import_graph(module_sources())
    found = upward_imports(graph)
    assert not found, "imports from a higher floor:\n" + "\n".join(
        f"  {m} (floor {floor_of(m)}) -> {t} (floor {floor_of(t)})" for m, t in sorted(found)
    )


#: The longest a module may grow: past it, a module holds more than one thing (docs/architecture.md).
MAX_MODULE_LINES = 450


def test_no_module_is_longer_than_the_house_limit():
    long = {name: text.count("\n") for name, text in module_sources().items() if text.count("\n") > MAX_MODULE_LINES}
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split them along a seam): {long}"
