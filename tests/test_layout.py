"""The package layout and the one-way import order of docs/design.md."""

from __future__ import annotations

import ast
import doctest
import importlib
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import routeplay

REPO = Path(__file__).resolve().parents[1]
ORDER = ["datasets", "estimator", "replay", "offline_rl", "reports"]
HEAVY = {
    "torch": {"offline_rl"},
    "d3rlpy": {"offline_rl"},
    "altair": {"reports"},
    "vl_convert": {"reports"},
}


def _modules() -> list[str]:
    names = []
    for pkg in ORDER:
        mod = importlib.import_module(f"routeplay.{pkg}")
        names.append(mod.__name__)
        names += [m.name for m in pkgutil.walk_packages(mod.__path__, prefix=f"{mod.__name__}.")]
    # the command line's own modules (routeplay/*.py; the packages live in other folders)
    names += [m.name for m in pkgutil.iter_modules(routeplay.__path__, "routeplay.") if not m.ispkg]
    return names


@pytest.mark.parametrize("pkg", ORDER)
def test_packages_import_from_this_repo(pkg: str) -> None:
    mod = importlib.import_module(f"routeplay.{pkg}")
    assert Path(mod.__file__).resolve().parent == REPO / pkg
    assert isinstance(mod.__all__, list)


def _module_files() -> dict[str, Path]:
    """Every routeplay module by dotted name -> its file (packages: their ``__init__.py``)."""
    folders = {pkg: f"routeplay.{pkg}" for pkg in ORDER} | {"routeplay": "routeplay"}
    files = {}
    for folder, package in folders.items():
        for path in sorted((REPO / folder).rglob("*.py")):
            parts = list(path.relative_to(REPO / folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            files[".".join([package, *parts])] = path
    return files


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    source = path.read_text(encoding="utf-8")
    return _imports_of_source(module, source, is_package=path.name == "__init__.py")


def _imports_of_source(module: str, source: str, *, is_package: bool) -> list[tuple[str, int]]:
    """Absolute names imported by ``module`` (every import, deferred and TYPE_CHECKING too).

    Relative imports are resolved against the module's own package (its name for a
    package's ``__init__``, its parent otherwise), as Python resolves them;
    ``from P import n`` yields ``P.n`` (a submodule of ``P`` or a name defined in ``P``).
    """
    tree = ast.parse(source)
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - (node.level - 1)])
                assert base, f"{module}:{node.lineno}: relative import beyond the top package"
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            found += [
                (base if a.name == "*" else f"{base}.{a.name}", node.lineno) for a in node.names
            ]
    return found


def _import_graph() -> dict[str, dict[str, int]]:
    """routeplay module -> the routeplay modules it imports (-> line of the first import).

    An imported name maps to the longest module prefix of it (``routeplay.replay.make_router``
    -> the package ``routeplay.replay``, whose ``__init__`` runs; ``routeplay.replay._types.X``
    -> ``routeplay.replay._types``); a module's imports of itself are dropped.
    """
    files = _module_files()
    graph: dict[str, dict[str, int]] = {m: {} for m in files}
    for module, path in files.items():
        for name, line in _imports(module, path):
            target = name
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != module:
                graph[module].setdefault(target, line)
    return graph


def _cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
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
                    found.append(sorted(component))
    return found


def _cycle_path(graph: dict[str, dict[str, int]], component: list[str]) -> str:
    """One cycle through the component's first module, with the import lines."""
    members = set(component)
    start = component[0]
    # breadth-first search back to start, inside the component
    previous: dict[str, str] = {}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v]):
            if w not in members:
                continue
            if w == start:
                path = [v]
                while path[-1] != start:
                    path.append(previous[path[-1]])
                path.reverse()
                path.append(start)
                return (
                    " -> ".join(
                        f"{a} (line {graph[a][b]})" for a, b in zip(path, path[1:], strict=False)
                    )
                    + f" -> {start}"
                )
            if w not in previous:
                previous[w] = v
                queue.append(w)
    return " <-> ".join(component)  # pragma: no cover - a component always has a cycle


def test_import_graph_sees_relative_deferred_and_type_checking_imports() -> None:
    graph = _import_graph()
    # relative imports resolve against the module's package (a package's own __init__ too)
    assert "routeplay.replay._types" in graph["routeplay.replay.engine._engine"]
    assert "routeplay.reports._pipeline" in graph["routeplay.reports"]
    # TYPE_CHECKING-only imports count (reports/_pipeline.py's replay types)
    assert "routeplay.replay" in graph["routeplay.reports._pipeline"]
    # `from .. import x` in a package's submodule: the grand-parent package
    source = "from .. import cli\nfrom . import _types\n\ndef f():\n    from .._x import y\n"
    assert _imports_of_source("routeplay.replay._x", source, is_package=False) == [
        ("routeplay.cli", 1),
        ("routeplay.replay._types", 2),
        ("routeplay._x.y", 5),
    ]
    # in a package's __init__, `.` is the package itself
    source = "from ._engine import Engine\n"
    assert _imports_of_source("routeplay.replay", source, is_package=True) == [
        ("routeplay.replay._engine.Engine", 1)
    ]
    assert _cycles({"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}}) == [
        ["a", "b", "c"]
    ]
    assert _cycle_path({"a": {"b": 1}, "b": {"a": 2}}, ["a", "b"]) == (
        "a (line 1) -> b (line 2) -> a"
    )


def test_no_import_cycles() -> None:
    """No two routeplay modules import each other, directly or through others.

    Every import counts: module level, deferred (inside functions) and under
    ``if TYPE_CHECKING:`` (a deferred import only hides a circle until someone moves it).
    """
    graph = _import_graph()
    cycles = [_cycle_path(graph, component) for component in _cycles(graph)]
    assert cycles == [], "import cycles:\n" + "\n".join(cycles)


def test_one_way_import_order_and_heavy_imports() -> None:
    problems = []
    for module, path in _module_files().items():
        pkg = module.split(".")[1] if module.count(".") else ""
        if pkg not in ORDER:
            continue  # the command line's own modules (routeplay/*.py)
        for name, line in _imports(module, path):
            head = name.split(".")
            if head[0] == "routeplay" and len(head) > 1 and head[1] in ORDER:
                if ORDER.index(head[1]) > ORDER.index(pkg):
                    problems.append(f"{path.relative_to(REPO)}:{line} imports {name}")
            allowed = HEAVY.get(head[0])
            if allowed is not None and pkg not in allowed:
                problems.append(f"{path.relative_to(REPO)}:{line} imports {head[0]}")
    assert list(dict.fromkeys(problems)) == []


def test_estimator_import_is_light() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import routeplay.estimator; "
        "dt = time.perf_counter() - t; "
        "bad = [m for m in ('torch', 'd3rlpy', 'altair', 'routeplay.replay', 'gymnasium') "
        "if m in sys.modules]; print(bad, dt)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    bad, _seconds = out.stdout.rsplit("]", 1)
    assert bad + "]" == "[]", out.stdout


def test_version_is_exposed() -> None:
    assert routeplay.__version__.count(".") >= 2


@pytest.mark.parametrize("module_name", _modules())
def test_docstring_examples(module_name: str) -> None:
    module = importlib.import_module(module_name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in finder.find(module, module_name, extraglobs={"np": __import__("numpy")}):
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module_name}"


def test_test_module_basenames_are_unique() -> None:
    # tests/ folders are not packages (pytest's default import mode): two test files with
    # the same basename in different folders break collection of the whole suite.
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_long_modules_say_why() -> None:
    # a module over ~600 lines must say, near its top, why it is kept in one piece
    long = []
    for pkg in [*ORDER, "routeplay"]:
        for path in sorted((REPO / pkg).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            tree = ast.parse(text)
            doc_end = tree.body[0].end_lineno if tree.body else 0
            head = "\n".join(text.splitlines()[: (doc_end or 0) + 10])  # right after the docstring
            if text.count("\n") > 600 and "# Why this module is long:" not in head:
                long.append(f"{path.relative_to(REPO)} ({text.count(chr(10))} lines)")
    assert long == [], long
