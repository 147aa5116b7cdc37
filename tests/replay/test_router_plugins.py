"""The open router registry: register_router, and routers from other installed packages.

A "third-party package" here is a folder on ``sys.path`` holding the package and a
``*.dist-info`` folder with ``METADATA`` and ``entry_points.txt``: exactly what ``pip
install`` leaves behind, so importlib.metadata finds its ``routeplay.routers`` entry
points without the network or pip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from routeplay.replay import (
    ROUTERS,
    check_router,
    list_routers,
    make_router,
    register_router,
    unregister_router,
)
from routeplay.replay.routers import _registry as registry

from routeplay.cli import main

TINY_ROUTER = '''
"""A third-party router package (test fixture)."""


class FirstRouter:
    """Always the first instance (a third-party test router)."""

    name = "tiny-first"
    oracle = False

    def __init__(self, *, instance: int = 0) -> None:
        self.instance = instance

    def reset(self, cluster, rng):
        self.n = cluster.n_instances

    def route(self, request, state):
        return min(self.instance, self.n - 1)


NOT_A_ROUTER = 42
'''


def _install(
    site: Path,
    dist: str,
    entry_points: dict[str, str],
    *,
    module: str | None = "tinyrouter",
    source: str = TINY_ROUTER,
) -> None:
    """Lay out an installed distribution ``dist`` 0.1 in the folder ``site``."""
    if module is not None:
        (site / module).mkdir(parents=True, exist_ok=True)
        (site / module / "__init__.py").write_text(source, encoding="utf-8")
    info = site / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8"
    )
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[routeplay.routers]\n{lines}", encoding="utf-8")


@pytest.fixture()
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A registry of the built-ins only, entry points not yet read; restored afterwards."""
    builtins = {k: v for k, v in registry._REGISTRY.items() if v.source == "built-in"}
    monkeypatch.setattr(registry, "_REGISTRY", builtins)
    monkeypatch.setattr(registry, "_discovered", False)
    before = set(sys.modules)
    yield
    for name in set(sys.modules) - before:
        if name.startswith(("tinyrouter", "lazyrouter")):
            del sys.modules[name]


@pytest.fixture()
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fresh_registry: None) -> Path:
    """A folder on sys.path to "install" packages into."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    return folder


class HeadRouter:
    """Always the first instance."""

    name = "head"
    oracle = False

    def __init__(self, *, offset: int = 0) -> None:
        self.offset = offset

    def reset(self, cluster: Any, rng: np.random.Generator) -> None:
        self.n = cluster.n_instances

    def route(self, request: Any, state: Any) -> int:
        return self.offset % self.n


# --------------------------------------------------------------------------- register_router


def test_register_make_list_and_unregister(fresh_registry: None) -> None:
    spec = register_router("head", HeadRouter, description="always instance 0 (test)")
    assert (spec.name, spec.source, spec.oracle) == ("head", __name__.partition(".")[0], False)
    assert list_routers()[-1] == "head" and "head" in list_routers(include_oracle=False)
    assert ROUTERS["head"] is spec and ROUTERS["head"].description == "always instance 0 (test)"
    router = make_router("head", offset=1)
    assert isinstance(router, HeadRouter) and router.offset == 1
    result = check_router(make_router("head"), n_instances=3, seed=0, n_decisions=20)
    assert set(result.choices) == {0}
    with pytest.raises(ValueError, match=r"router 'head' got unknown parameter\(s\) \['ofset'\]"):
        make_router("head", ofset=1)
    unregister_router("head")
    assert "head" not in list_routers()
    with pytest.raises(ValueError, match="unknown router 'head'"):
        make_router("head")


def test_register_a_factory_and_its_docstring_description(fresh_registry: None) -> None:
    def build(offset: int = 2) -> HeadRouter:
        """Instance ``offset`` (a factory)."""
        return HeadRouter(offset=offset)

    build.oracle = True  # type: ignore[attr-defined]
    spec = register_router("head-factory", build)
    assert spec.description == "Instance ``offset`` (a factory)."
    assert spec.oracle and "head-factory" not in list_routers(include_oracle=False)
    assert make_router("head-factory", offset=5).offset == 5  # type: ignore[attr-defined]


def test_a_module_attr_entry_point_is_imported_lazily(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = register_router("lazy", "lazyrouter.impl:FirstRouter", description="lazy")
    assert "lazyrouter.impl" not in sys.modules and spec.description == "lazy"
    with pytest.raises(ValueError) as info:
        make_router("lazy")
    assert str(info.value).startswith(
        "router 'lazy': register_router('lazy', 'lazyrouter.impl:FirstRouter') does not load: "
        "ModuleNotFoundError: No module named 'lazyrouter'. Fix: pass register_router an "
        "importable 'module:attr'"
    )
    (site / "lazyrouter").mkdir()
    (site / "lazyrouter" / "__init__.py").write_text("")
    (site / "lazyrouter" / "impl.py").write_text(TINY_ROUTER)
    assert make_router("lazy").name == "tiny-first"
    assert spec.router_class.__module__ == "lazyrouter.impl"


@pytest.mark.parametrize(
    ("name", "entry_point", "error", "message"),
    [
        ("Head", HeadRouter, ValueError, "router name 'Head' is not kebab-case; .* 'head'"),
        ("my_router", HeadRouter, ValueError, r"not kebab-case; .*\(e\.g\. 'my-router'\)"),
        ("head", "routers.HeadRouter", ValueError, "expected 'module:attr' naming a router"),
        ("head", 42, TypeError, "expected a router class, a factory or a 'module:attr'"),
    ],
)
def test_register_rejects_bad_names_and_entry_points(
    fresh_registry: None, name: str, entry_point: Any, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        register_router(name, entry_point)
    assert "head" not in list_routers() and name not in list_routers()


def test_register_clashes_name_both_registrations(fresh_registry: None) -> None:
    with pytest.raises(ValueError) as info:
        register_router("round-robin", HeadRouter)
    assert str(info.value) == (
        "router 'round-robin' is already registered: the built-in router 'round-robin' "
        "('routeplay.replay.routers._basic:RoundRobinRouter'). Fix: choose another name."
    )
    with pytest.raises(ValueError, match="already registered: the built-in router"):
        register_router("round-robin", HeadRouter, replace=True)  # never a built-in
    register_router("head", HeadRouter)
    with pytest.raises(ValueError, match=r"already registered: register_router\('head', .*"):
        register_router("head", "routeplay.replay:RoundRobinRouter")
    replaced = register_router("head", "routeplay.replay:RoundRobinRouter", replace=True)
    assert make_router("head").name == "round-robin" and ROUTERS["head"] is replaced
    with pytest.raises(ValueError, match="only register_router's routers can be unregistered"):
        unregister_router("round-robin")


def test_an_entry_point_that_is_not_a_router(fresh_registry: None) -> None:
    register_router("not-callable", "routeplay.replay:WAIT")
    with pytest.raises(ValueError, match="points to -1, not a router class or factory"):
        make_router("not-callable")
    register_router("not-a-router", lambda: object())
    with pytest.raises(ValueError, match=r"lacks name, oracle, reset\(cluster, rng\), route"):
        make_router("not-a-router")


# --------------------------------------------------------------------------- entry points


def test_entry_point_routers_are_discovered_on_first_query(site: Path) -> None:
    _install(site, "tinyrouter", {"tiny-first": "tinyrouter:FirstRouter"})
    assert "tinyrouter" not in sys.modules
    assert list_routers()[-1] == "tiny-first"
    assert "tinyrouter" not in sys.modules  # listing names imports nothing
    spec = ROUTERS["tiny-first"]
    assert (spec.source, spec.entry_point, spec.oracle) == (
        "tinyrouter",
        "tinyrouter:FirstRouter",
        False,
    )
    assert spec.description == "Always the first instance (a third-party test router)."
    router = make_router("tiny-first", instance=2)
    result = check_router(router, n_instances=4, seed=0, n_decisions=10)
    assert set(result.choices) == {2}
    # an entry point is never replaced or unregistered at run time
    with pytest.raises(ValueError, match="already registered: entry point 'tiny-first'"):
        register_router("tiny-first", HeadRouter, replace=True)
    with pytest.raises(ValueError, match="only register_router's routers"):
        unregister_router("tiny-first")


def test_an_entry_point_clashing_with_a_builtin_names_both(site: Path) -> None:
    _install(site, "tinyrouter", {"round-robin": "tinyrouter:FirstRouter"})
    for _ in range(2):  # every query says it until the package is fixed
        with pytest.raises(ValueError) as info:
            list_routers()
        assert str(info.value) == (
            "router name clash: entry point 'round-robin' = 'tinyrouter:FirstRouter' (group "
            "'routeplay.routers') of the package 'tinyrouter' 0.1 and the built-in router "
            "'round-robin' ('routeplay.replay.routers._basic:RoundRobinRouter') are both named "
            "'round-robin'. Fix: rename the entry point in the package 'tinyrouter' "
            '([project.entry-points."routeplay.routers"] in its pyproject.toml), or uninstall '
            "it (pip uninstall tinyrouter)."
        )


def test_two_packages_with_the_same_router_name(site: Path) -> None:
    _install(site, "tinyrouter", {"tiny-first": "tinyrouter:FirstRouter"})
    _install(site, "otherrouter", {"tiny-first": "tinyrouter:FirstRouter"}, module=None)
    with pytest.raises(ValueError, match="router name clash: entry point 'tiny-first'") as info:
        make_router("round-robin")
    assert "package 'otherrouter' 0.1" in str(info.value)
    assert "package 'tinyrouter' 0.1" in str(info.value)


def test_an_entry_point_name_that_is_not_kebab_case(site: Path) -> None:
    _install(site, "tinyrouter", {"TinyFirst": "tinyrouter:FirstRouter"})
    with pytest.raises(ValueError) as info:
        list_routers()
    assert str(info.value).startswith(
        "entry point 'TinyFirst' = 'tinyrouter:FirstRouter' (group 'routeplay.routers') of the "
        "package 'tinyrouter' 0.1: the name is not kebab-case (lower-case letters and digits "
        "joined by '-', e.g. 'tiny-first'). Fix: change it in the package 'tinyrouter'"
    )


def test_a_broken_entry_point_fails_when_used_naming_it_and_the_fix(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _install(
        site,
        "tinyrouter",
        {"tiny-missing": "tinyrouter.gone:FirstRouter", "tiny-int": "tinyrouter:NOT_A_ROUTER"},
    )
    assert list_routers()[-2:] == ["tiny-int", "tiny-missing"]  # names need no import
    assert make_router("round-robin").name == "round-robin"  # the others still work
    with pytest.raises(ValueError) as info:
        make_router("tiny-missing")
    assert str(info.value) == (
        "router 'tiny-missing': entry point 'tiny-missing' = 'tinyrouter.gone:FirstRouter' "
        "(group 'routeplay.routers') of the package 'tinyrouter' 0.1 does not load: "
        "ModuleNotFoundError: No module named 'tinyrouter.gone'. Fix: reinstall or repair the "
        "package 'tinyrouter' (its entry point must name an importable router class or "
        "factory, 'module:attr'), or uninstall it (pip uninstall tinyrouter)."
    )
    with pytest.raises(ValueError, match="'tinyrouter:NOT_A_ROUTER'.* points to 42, not a rout"):
        make_router("tiny-int")
    # `routeplay routers` describes every router: one line naming the entry point, exit 2
    assert main(["routers"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("routeplay routers: error: router 'tiny-")


# --------------------------------------------------------------------------- the CLI


def test_an_installed_router_is_listed_and_replayed_by_the_cli(tmp_path: Path) -> None:
    """Acceptance (issue 13): a package's entry point in `routeplay routers` and `replay`."""
    _install(tmp_path, "tinyrouter", {"tiny-first": "tinyrouter:FirstRouter"})
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "routeplay.cli", *args],
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=env,
            timeout=300,
        )

    listed = cli("routers")
    assert listed.returncode == 0, listed.stderr
    lines = {line.split()[0]: line.split(None, 2)[1:] for line in listed.stdout.splitlines()}
    assert lines["round-robin"][0] == "built-in"
    assert lines["tiny-first"] == [
        "tinyrouter",
        "Always the first instance (a third-party test router).",
    ]
    out = tmp_path / "run"
    replayed = cli(
        "replay",
        "--trace",
        "azure-2023-conv",
        "--cluster",
        "a100x4",
        "--router",
        "tiny-first,round-robin",
        "--first-requests",
        "40",
        "--out",
        str(out),
        "--quiet",
    )
    assert replayed.returncode == 0, replayed.stderr
    rows = [line.split()[0] for line in replayed.stdout.splitlines()]
    assert "tiny-first" in rows and "round-robin" in rows
    summary = json.loads((out / "summary.json").read_text())
    assert summary["routers"]["tiny-first"]["summary"]["n_requests"] == 40
    instances = pl.read_parquet(out / "tiny-first.parquet")["instance_id"]
    assert instances.len() == 40 and set(instances.to_list()) == {0}  # the plugin routed
    assert len(set(pl.read_parquet(out / "round-robin.parquet")["instance_id"])) == 4
