"""The router registry: every routing policy by its kebab-case name, open to other packages.

It works like Gymnasium's ``register``/``make``: a router is registered under a name
with an *entry point*, either a ``"module:attr"`` string (imported with importlib only
when the router is first needed) or a router class or factory (a callable taking
keyword parameters and returning a router); :func:`make_router` builds one with
keyword parameters, :func:`list_routers` lists the names and :data:`ROUTERS` maps each
name to its :class:`RouterSpec`.

Three sources fill the registry, in this order:

* **built-in** routers: a fixed table of ``"routeplay.replay.routers._x:Class"``
  strings. This module imports no router module, so router modules may import
  :func:`make_router` at module level (a router built on another one, e.g.
  ``session-affinity``'s fallback) without an import circle.
* **installed packages**, through the ``routeplay.routers`` entry-point group, read the
  first time the registry is queried (nothing is imported for that; a router's module
  is imported when the router is first built or described). Each entry point names a
  router class or factory; in the package's ``pyproject.toml``::

      [project.entry-points."routeplay.routers"]
      tiny-first = "tinyrouter:FirstRouter"

  After ``pip install`` the router is listed by ``routeplay routers`` (with its package
  as the source) and works wherever a router name does: ``routeplay replay --router
  tiny-first``, job files, sweeps, :func:`make_router`.
* :func:`register_router` calls at run time (scripts, notebooks).

Rules: names are kebab-case (``[a-z0-9]+(-[a-z0-9]+)*``: they become file names and
comma-separated ``--router`` lists). A name is registered once: an entry point or a
:func:`register_router` call that reuses a built-in's name is an error naming both
(``round-robin`` always means the built-in), as are two packages' entry points with
the same name. An entry point that cannot be imported, or that is not a router class or
factory, is an error when it is first used, naming the entry point, its package and the
fix. A router class needs ``name``, ``oracle``, ``reset(cluster, rng)`` and
``route(request, state)`` (or ``schedule(queue, state)`` for a router-queue scheduler);
its docstring's first line is its description unless one is given. A factory may carry
an ``oracle`` attribute (default: not an oracle).
"""

# Why this module is long: the table of the built-in routers (one entry each) and the
# open registry with its entry-point discovery and error messages are one contract.

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from .._types import Router

__all__ = [
    "BUILTIN_SOURCE",
    "ENTRY_POINT_GROUP",
    "ROUTERS",
    "RouterFactory",
    "RouterSpec",
    "list_routers",
    "make_router",
    "register_router",
    "unregister_router",
]

#: The entry-point group other packages register routers in.
ENTRY_POINT_GROUP = "routeplay.routers"

#: :attr:`RouterSpec.source` of the routers that ship with routeplay.
BUILTIN_SOURCE = "built-in"

#: A router class or a function returning a router, called with keyword parameters.
RouterFactory = Callable[..., Router]

_NAME = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")
_ENTRY_POINT = re.compile(r"^\s*([\w.]+)\s*:\s*([\w.]+)\s*$")


def _kebab(name: str) -> str:
    """The closest kebab-case name (for messages)."""
    return re.sub(r"[^a-z0-9]+", "-", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "-", name).lower()).strip(
        "-"
    )


class RouterSpec:
    """One registry entry: a name, an entry point and where it came from.

    The entry point is loaded (imported) on first use and kept; ``description`` and
    ``oracle`` are read from the loaded class or factory unless they were given.

    Attributes:
        name: registry key (kebab-case); a built-in router's class has the same ``name``.
        entry_point: ``"module:attr"`` or the router class or factory itself.
        source: ``"built-in"``, the name of the package whose entry point registered it,
            or the top-level module of a :func:`register_router` call's entry point.

    Example:
        >>> from routeplay.replay import ROUTERS
        >>> spec = ROUTERS["round-robin"]
        >>> spec.entry_point, spec.source, spec.oracle
        ('routeplay.replay.routers._basic:RoundRobinRouter', 'built-in', False)
        >>> spec.router_class.__name__
        'RoundRobinRouter'
    """

    __slots__ = ("_description", "_factory", "_oracle", "entry_point", "name", "origin", "source")

    def __init__(
        self,
        name: str,
        entry_point: str | RouterFactory,
        *,
        description: str | None = None,
        oracle: bool | None = None,
        source: str = BUILTIN_SOURCE,
        origin: str | None = None,
    ) -> None:
        self.name = name
        self.entry_point = entry_point
        self.source = source
        #: how messages name this entry (e.g. the entry point and its package)
        self.origin = origin or f"the built-in router {name!r} ({entry_point!r})"
        self._description = description
        self._oracle = oracle
        self._factory: RouterFactory | None = None if isinstance(entry_point, str) else entry_point

    def __repr__(self) -> str:
        return (
            f"RouterSpec(name={self.name!r}, entry_point={self.entry_point!r}, "
            f"source={self.source!r})"
        )

    @property
    def router_class(self) -> RouterFactory:
        """The router class (or factory) :func:`make_router` calls; imports it on first use.

        Raises:
            ValueError: the entry point cannot be imported or is not callable (the
                message names the entry point, its package and the fix).
        """
        if self._factory is None:
            self._factory = self._load()
        return self._factory

    @property
    def description(self) -> str:
        """One line saying what the router does (the given one or its docstring's first)."""
        if self._description is not None:
            return self._description
        doc = inspect.getdoc(self.router_class) or ""
        return doc.strip().splitlines()[0] if doc.strip() else ""

    @property
    def oracle(self) -> bool:
        """True if the router sees true output lengths (not deployable)."""
        if self._oracle is not None:
            return self._oracle
        return bool(getattr(self.router_class, "oracle", False))

    def _load(self) -> RouterFactory:
        assert isinstance(self.entry_point, str)
        match = _ENTRY_POINT.match(self.entry_point)
        if match is None:  # pragma: no cover - checked when registered
            raise ValueError(f"{self.origin}: expected 'module:attr'.")
        module_name, attr = match.groups()
        try:
            obj: Any = importlib.import_module(module_name)
            for part in attr.split("."):
                obj = getattr(obj, part)
        except Exception as exc:  # noqa: BLE001 - any import failure is reported the same way
            raise ValueError(
                f"router {self.name!r}: {self.origin} does not load: "
                f"{type(exc).__name__}: {exc}. Fix: {self._fix()}"
            ) from exc
        if not callable(obj):
            raise ValueError(
                f"router {self.name!r}: {self.origin} points to {obj!r}, not a router class or "
                f"factory. Fix: {self._fix()}"
            )
        return cast(RouterFactory, obj)

    def _fix(self) -> str:
        if self.source == BUILTIN_SOURCE:  # pragma: no cover - a broken installation
            return "reinstall routeplay."
        if self.origin.startswith("entry point"):
            return (
                f"reinstall or repair the package {self.source!r} (its entry point must name "
                f"an importable router class or factory, 'module:attr'), or uninstall it "
                f"(pip uninstall {self.source})."
            )
        return "pass register_router an importable 'module:attr' or the class itself."


def _builtin(name: str, entry_point: str, description: str, *, oracle: bool = False) -> RouterSpec:
    return RouterSpec(
        name, f"routeplay.replay.{entry_point}", description=description, oracle=oracle
    )


_BUILTINS: tuple[RouterSpec, ...] = (
    _builtin(
        "round-robin", "routers._basic:RoundRobinRouter", "cycle through the instances in order"
    ),
    _builtin(
        "weighted-round-robin",
        "routers._basic:WeightedRoundRobinRouter",
        "smooth weighted round robin (nginx); weights default to max_running_seqs",
    ),
    _builtin(
        "random",
        "routers._basic:RandomRouter",
        "uniformly random instance from the replay's seeded generator",
    ),
    _builtin(
        "least-connections",
        "routers._basic:LeastConnectionsRouter",
        "fewest outstanding requests (queued + running), JSQ by count",
    ),
    _builtin(
        "jsq-tokens",
        "routers._basic:JSQTokensRouter",
        "the paper's JSQ: fewest outstanding tokens (pending prefill + predicted decode)",
    ),
    _builtin(
        "least-loaded",
        "routers._basic:LeastLoadedRouter",
        "fewest outstanding requests per sequence slot (System B's least loaded)",
    ),
    _builtin(
        "least-work-left",
        "routers._basic:LeastWorkLeftRouter",
        "fewest predicted decode tokens left (never the true lengths)",
    ),
    _builtin(
        "power-of-two",
        "routers._basic:PowerOfTwoRouter",
        "two random distinct instances, keep the one with fewer requests",
    ),
    _builtin(
        "decode-balancer-oracle",
        "routers._paper:DecodeBalancerOracleRouter",
        "ORACLE: balance true decode tokens per slot (paper's decode balancer)",
        oracle=True,
    ),
    _builtin(
        "decode-balancer",
        "routers._paper:DecodeBalancerRouter",
        "balance predicted decode tokens per slot (deployable decode balancer)",
    ),
    _builtin(
        "dedicated-small-large",
        "routers._paper:DedicatedSmallLargeRouter",
        "instances dedicated to light (LL) vs heavy requests (paper's classes)",
    ),
    _builtin(
        "max-capacity",
        "routers._basic:MaxCapacityRouter",
        "most free capacity: min(free KV share, free slot share); best-fit optional",
    ),
    _builtin(
        "min-min",
        "routers._paper:MinMinRouter",
        "earliest estimated completion from each instance's latency model",
    ),
    _builtin(
        "impact-greedy",
        "routers._impact:ImpactGreedyRouter",
        "argmax of the workload-impact reward r_mix (the paper's heuristic)",
    ),
    _builtin(
        "llm-d",
        "routers._production:LLMDWeightedScorerRouter",
        "llm-d default scorer: queue 2 + KV utilisation 2 + prefix cache 3",
    ),
    _builtin(
        "sglang-cache-aware",
        "routers._production:SGLangCacheAwareRouter",
        "SGLang cache-aware: balance thresholds, prefix match, smallest tree",
    ),
    _builtin(
        "dynamo-kv",
        "routers._production:DynamoKVRouter",
        "NVIDIA Dynamo KV cost: overlap-weighted prefill blocks + decode blocks",
    ),
    _builtin(
        "aibrix-least-latency",
        "routers._production:AIBrixLeastLatencyRouter",
        "AIBrix least-latency: lowest expected queue + prefill + decode time",
    ),
    _builtin(
        "session-affinity",
        "routers._production:SessionAffinityRouter",
        "sticky sessions (or stable crc32 hash) with a fallback router",
    ),
    _builtin(
        "min-total-latency",
        "routers._reference:MinTotalLatencyRouter",
        "min-min plus the delay the request imposes on the requests already on the instance",
    ),
    _builtin(
        "min-min-oracle",
        "routers._reference:MinMinOracleRouter",
        "ORACLE: min-min with the request's true output length",
        oracle=True,
    ),
    _builtin(
        "lookahead-oracle",
        "routers._reference:LookaheadOracleRouter",
        "ORACLE reference: fork the simulator, try every action, roll out min-min, keep the best",
        oracle=True,
    ),
    _builtin(
        "late-binding-spf",
        "routers._schedulers:LateBindingSPFScheduler",
        "scheduler: hold requests until an instance is free, release the shortest predicted job",
    ),
    _builtin(
        "late-binding-spf-oracle",
        "routers._schedulers:LateBindingSPFOracleScheduler",
        "ORACLE scheduler: late binding + shortest job first with true output lengths",
        oracle=True,
    ),
)

_REGISTRY: dict[str, RouterSpec] = {spec.name: spec for spec in _BUILTINS}
_discovered = False
_lock = threading.Lock()


def _discover() -> None:
    """Add the ``routeplay.routers`` entry points, once (before anything else is read)."""
    global _discovered
    if _discovered:
        return
    with _lock:
        if _discovered:
            return
        found: dict[str, RouterSpec] = {}
        eps = importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)
        for ep in sorted(eps, key=lambda e: (e.name, e.value)):
            spec = _entry_point_spec(ep)
            other = _REGISTRY.get(spec.name) or found.get(spec.name)
            if other is not None:
                raise ValueError(
                    f"router name clash: {spec.origin} and {other.origin} are both named "
                    f"{spec.name!r}. Fix: rename the entry point in the package "
                    f'{spec.source!r} ([project.entry-points."{ENTRY_POINT_GROUP}"] in its '
                    f"pyproject.toml), or uninstall it (pip uninstall {spec.source})."
                )
            found[spec.name] = spec
        _REGISTRY.update(found)
        _discovered = True


def _entry_point_spec(ep: importlib.metadata.EntryPoint) -> RouterSpec:
    dist = ep.dist
    package = dist.name if dist is not None else "<unknown package>"
    version = f" {dist.version}" if dist is not None else ""
    origin = (
        f"entry point {ep.name!r} = {ep.value!r} (group {ENTRY_POINT_GROUP!r}) of the package "
        f"{package!r}{version}"
    )
    fix = (
        f"Fix: change it in the package {package!r} ([project.entry-points."
        f'"{ENTRY_POINT_GROUP}"] in its pyproject.toml) and reinstall it, or uninstall it '
        f"(pip uninstall {package})."
    )
    if not _NAME.match(ep.name):
        raise ValueError(
            f"{origin}: the name is not kebab-case (lower-case letters and digits joined by "
            f"'-', e.g. {_kebab(ep.name)!r}). {fix}"
        )
    if _ENTRY_POINT.match(ep.value) is None:
        raise ValueError(
            f"{origin}: expected 'module:attr' naming a router class or factory. {fix}"
        )
    return RouterSpec(ep.name, ep.value, source=package, origin=origin)


class _RouterTable(Mapping[str, RouterSpec]):
    """The live, read-only view of the registry (reading it discovers entry points)."""

    def __getitem__(self, name: str) -> RouterSpec:
        _discover()
        return _REGISTRY[name]

    def __iter__(self) -> Iterator[str]:
        _discover()
        return iter(list(_REGISTRY))

    def __len__(self) -> int:
        _discover()
        return len(_REGISTRY)

    def __repr__(self) -> str:
        return f"ROUTERS({list(self)})"


#: Every registered router by name, in registry order: the built-ins, then the installed
#: packages' entry points, then :func:`register_router` calls (a live read-only mapping).
ROUTERS: Mapping[str, RouterSpec] = _RouterTable()


def register_router(
    name: str,
    entry_point: str | RouterFactory,
    *,
    description: str | None = None,
    oracle: bool | None = None,
    replace: bool = False,
) -> RouterSpec:
    """Register a router under ``name`` (Gymnasium's ``register``, for routers).

    Installed packages register through the ``routeplay.routers`` entry-point group
    instead (see the module docstring); this is for scripts and notebooks.

    Args:
        name: the router's kebab-case name (what ``--router``, job files and
            :func:`make_router` use).
        entry_point: the router class or a factory returning a router (called with
            :func:`make_router`'s keyword parameters), or ``"module:attr"`` naming one
            (imported when the router is first built or described).
        description: one line for ``routeplay routers`` (default: the first line of the
            class's or factory's docstring).
        oracle: True if the router sees true output lengths (default: the class's or
            factory's ``oracle`` attribute, else False).
        replace: replace an earlier :func:`register_router` registration of ``name``
            (built-in and entry-point routers are never replaced).

    Returns:
        The new :class:`RouterSpec`.

    Raises:
        ValueError: a name that is not kebab-case, a malformed ``"module:attr"``, a
            multi-line description, or a name that is already registered (the message
            names both registrations).
        TypeError: an entry point that is neither a string nor callable.

    Example:
        >>> from routeplay.replay import make_router, register_router, unregister_router
        >>> class FirstRouter:
        ...     '''Always the first instance.'''
        ...     name = "first"
        ...     oracle = False
        ...     def reset(self, cluster, rng):
        ...         pass
        ...     def route(self, request, state):
        ...         return 0
        >>> register_router("first", FirstRouter).description
        'Always the first instance.'
        >>> make_router("first").name
        'first'
        >>> register_router("round-robin", FirstRouter)
        Traceback (most recent call last):
        ...
        ValueError: router 'round-robin' is already registered: the built-in router ...
        >>> unregister_router("first")
    """
    if not isinstance(name, str) or not _NAME.match(name):
        suggestion = f" (e.g. {_kebab(name)!r})" if isinstance(name, str) and _kebab(name) else ""
        raise ValueError(
            f"router name {name!r} is not kebab-case; expected lower-case letters and digits "
            f"joined by '-'{suggestion}."
        )
    if isinstance(entry_point, str):
        match = _ENTRY_POINT.match(entry_point)
        if match is None:
            raise ValueError(
                f"register_router({name!r}, {entry_point!r}): expected 'module:attr' naming a "
                "router class or factory, e.g. 'mypackage.routers:MyRouter'."
            )
        module = match.group(1)
    elif callable(entry_point):
        module = str(getattr(entry_point, "__module__", None) or "__main__")
    else:
        raise TypeError(
            f"register_router({name!r}, {entry_point!r}): expected a router class, a factory "
            "or a 'module:attr' string."
        )
    if description is not None and (not isinstance(description, str) or "\n" in description):
        raise ValueError(f"register_router({name!r}): description must be one line of text.")
    _discover()
    old = _REGISTRY.get(name)
    if old is not None and (not replace or old.source == BUILTIN_SOURCE or _is_entry_point(old)):
        hint = (
            " Pass replace=True to replace it."
            if old.source != BUILTIN_SOURCE and not _is_entry_point(old)
            else " Fix: choose another name."
        )
        raise ValueError(f"router {name!r} is already registered: {old.origin}.{hint}")
    spec = RouterSpec(
        name,
        entry_point,
        description=description,
        oracle=oracle,
        source=module.partition(".")[0],
        origin=f"register_router({name!r}, {entry_point!r})",
    )
    _REGISTRY[name] = spec
    return spec


def _is_entry_point(spec: RouterSpec) -> bool:
    return spec.origin.startswith("entry point")


def unregister_router(name: str) -> None:
    """Remove a router added by :func:`register_router` (built-ins and entry points stay).

    Raises:
        ValueError: ``name`` is not registered, or it is a built-in or an installed
            package's router.

    Example:
        >>> from routeplay.replay import register_router, unregister_router, list_routers
        >>> _ = register_router("first-2", "routeplay.replay:RoundRobinRouter")
        >>> unregister_router("first-2")
        >>> "first-2" in list_routers()
        False
    """
    _discover()
    spec = _REGISTRY.get(name)
    if spec is None:
        raise ValueError(f"unknown router {name!r}; nothing to unregister.")
    if spec.source == BUILTIN_SOURCE or _is_entry_point(spec):
        raise ValueError(
            f"router {name!r} is {spec.origin}; only register_router's routers can be unregistered."
        )
    del _REGISTRY[name]


def list_routers(*, include_oracle: bool = True) -> list[str]:
    """Names of the registered routers, in registry order (built-ins first).

    Args:
        include_oracle: include oracle routers (they see true output lengths); without
            them, every installed package's router is imported to read its flag.

    Returns:
        The registry keys.

    Example:
        >>> from routeplay.replay import list_routers
        >>> names = list_routers()
        >>> names[:3], "decode-balancer-oracle" in list_routers(include_oracle=False)
        (['round-robin', 'weighted-round-robin', 'random'], False)
    """
    _discover()
    return [k for k, spec in list(_REGISTRY.items()) if include_oracle or not spec.oracle]


def make_router(name: str, **params: Any) -> Router:
    """Build the registered router ``name`` with keyword parameters (Gymnasium's ``make``).

    Args:
        name: a key of :data:`ROUTERS` (see :func:`list_routers`).
        **params: keyword parameters of that router's class or factory.

    Returns:
        A fresh router (call ``reset(cluster, rng)`` before routing; the engine does),
        or a router-queue scheduler (``late-binding-spf*``: it has ``schedule``, see
        :func:`routeplay.replay.is_scheduler`).

    Raises:
        ValueError: unknown name (with the closest valid name and the full list), an
            unknown parameter (with the router's valid parameters), a bad value, or an
            installed package's router that does not load or build a router (naming the
            entry point, its package and the fix).

    Example:
        >>> from routeplay.replay import make_router
        >>> make_router("power-of-two").name
        'power-of-two'
        >>> make_router("max-capacity", mode="best-fit").mode
        'best-fit'
        >>> make_router("round-robbin")
        Traceback (most recent call last):
        ...
        ValueError: unknown router 'round-robbin'. Did you mean 'round-robin'? Valid routers: ...
    """
    _discover()
    spec = _REGISTRY.get(name)
    if spec is None:
        names = list(_REGISTRY)
        close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown router {name!r}.{hint} Valid routers: {names}.")
    factory = spec.router_class
    try:
        sig: inspect.Signature | None = inspect.signature(factory)
    except (TypeError, ValueError):  # pragma: no cover - e.g. a C callable: pass through
        sig = None
    if sig is not None:
        kinds = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
        valid = [p.name for p in sig.parameters.values() if p.name != "self" and p.kind in kinds]
        unknown = [k for k in params if k not in valid]
        if unknown and not accepts_any:
            close = difflib.get_close_matches(unknown[0], valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            expected = f"some of {valid}" if valid else "no parameters"
            raise ValueError(
                f"router {name!r} got unknown parameter(s) {unknown}; expected {expected}.{hint}"
            )
    router: Router = factory(**params)
    if spec.source != BUILTIN_SOURCE:
        missing = [
            what
            for what, ok in (
                ("name", isinstance(getattr(router, "name", None), str)),
                ("oracle", hasattr(router, "oracle")),
                ("reset(cluster, rng)", callable(getattr(router, "reset", None))),
                (
                    "route(request, state) or schedule(queue, state)",
                    callable(getattr(router, "route", None))
                    or callable(getattr(router, "schedule", None)),
                ),
            )
            if not ok
        ]
        if missing:
            raise ValueError(
                f"router {name!r}: {spec.origin} built {router!r}, which lacks "
                f"{', '.join(missing)}; expected a router. Fix: {spec._fix()}"
            )
    return router
