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
HEAVY = {"torch": {"offline_rl"}, "d3rlpy": {"offline_rl"}, "altair": {"reports"},
         "vl_convert": {"reports"}}


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


def _imports(path: Path) -> list[tuple[str, int]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.ImportFrom) and node.level >= 2 and node.module:
            found.append(("routeplay." + node.module, node.lineno))
    return found


def test_one_way_import_order_and_heavy_imports() -> None:
    problems = []
    for pkg in ORDER:
        for path in sorted((REPO / pkg).rglob("*.py")):
            for name, line in _imports(path):
                head = name.split(".")
                if head[0] == "routeplay" and len(head) > 1 and head[1] in ORDER:
                    if ORDER.index(head[1]) > ORDER.index(pkg):
                        problems.append(f"{path.relative_to(REPO)}:{line} imports {name}")
                allowed = HEAVY.get(head[0])
                if allowed is not None and pkg not in allowed:
                    problems.append(f"{path.relative_to(REPO)}:{line} imports {head[0]}")
    assert problems == []


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
