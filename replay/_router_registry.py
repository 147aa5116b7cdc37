"""The router registry: every built-in routing policy by its kebab-case name.

:data:`ROUTERS` maps each name to a :class:`RouterSpec` (class, one-line description,
oracle flag); :func:`make_router` builds one with parameters; :func:`list_routers`
lists the names. Nothing is registered at import time beyond this fixed table.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ._routers_basic import (
    JSQTokensRouter,
    LeastConnectionsRouter,
    LeastLoadedRouter,
    LeastWorkLeftRouter,
    MaxCapacityRouter,
    PowerOfTwoRouter,
    RandomRouter,
    RoundRobinRouter,
    WeightedRoundRobinRouter,
)
from ._routers_impact import ImpactGreedyRouter
from ._routers_paper import (
    DecodeBalancerOracleRouter,
    DecodeBalancerRouter,
    DedicatedSmallLargeRouter,
    MinMinRouter,
)
from ._routers_production import (
    AIBrixLeastLatencyRouter,
    DynamoKVRouter,
    LLMDWeightedScorerRouter,
    SessionAffinityRouter,
    SGLangCacheAwareRouter,
)
from ._routers_reference import (
    LookaheadOracleRouter,
    MinMinOracleRouter,
    MinTotalLatencyRouter,
)
from ._schedulers import LateBindingSPFOracleScheduler, LateBindingSPFScheduler
from ._types import Router

__all__ = ["ROUTERS", "RouterSpec", "list_routers", "make_router"]


@dataclass(frozen=True, slots=True)
class RouterSpec:
    """One registry entry.

    Attributes:
        name: registry key (kebab-case), equal to the class's ``name``.
        router_class: the class :func:`make_router` instantiates.
        description: one line saying what the router does.
        oracle: True if the router sees true output lengths (not deployable).
    """

    name: str
    router_class: type
    description: str
    oracle: bool


_SPECS: tuple[tuple[type, str], ...] = (
    (RoundRobinRouter, "cycle through the instances in order"),
    (
        WeightedRoundRobinRouter,
        "smooth weighted round robin (nginx); weights default to max_running_seqs",
    ),
    (RandomRouter, "uniformly random instance from the replay's seeded generator"),
    (LeastConnectionsRouter, "fewest outstanding requests (queued + running), JSQ by count"),
    (
        JSQTokensRouter,
        "the paper's JSQ: fewest outstanding tokens (pending prefill + predicted decode)",
    ),
    (LeastLoadedRouter, "fewest outstanding requests per sequence slot (seed 000's least loaded)"),
    (LeastWorkLeftRouter, "fewest predicted decode tokens left (never the true lengths)"),
    (PowerOfTwoRouter, "two random distinct instances, keep the one with fewer requests"),
    (
        DecodeBalancerOracleRouter,
        "ORACLE: balance true decode tokens per slot (paper's decode balancer)",
    ),
    (DecodeBalancerRouter, "balance predicted decode tokens per slot (deployable decode balancer)"),
    (
        DedicatedSmallLargeRouter,
        "instances dedicated to light (LL) vs heavy requests (paper's classes)",
    ),
    (
        MaxCapacityRouter,
        "most free capacity: min(free KV share, free slot share); best-fit optional",
    ),
    (MinMinRouter, "earliest estimated completion from each instance's latency model"),
    (ImpactGreedyRouter, "argmax of the workload-impact reward r_mix (the paper's heuristic)"),
    (LLMDWeightedScorerRouter, "llm-d default scorer: queue 2 + KV utilisation 2 + prefix cache 3"),
    (SGLangCacheAwareRouter, "SGLang cache-aware: balance thresholds, prefix match, smallest tree"),
    (DynamoKVRouter, "NVIDIA Dynamo KV cost: overlap-weighted prefill blocks + decode blocks"),
    (
        AIBrixLeastLatencyRouter,
        "AIBrix least-latency: lowest expected queue + prefill + decode time",
    ),
    (SessionAffinityRouter, "sticky sessions (or stable crc32 hash) with a fallback router"),
    (
        MinTotalLatencyRouter,
        "min-min plus the delay the request imposes on the requests already on the instance",
    ),
    (MinMinOracleRouter, "ORACLE: min-min with the request's true output length"),
    (
        LookaheadOracleRouter,
        "ORACLE reference: fork the simulator, try every action, roll out min-min, keep the best",
    ),
    (
        LateBindingSPFScheduler,
        "scheduler: hold requests until an instance is free, release the shortest predicted job",
    ),
    (
        LateBindingSPFOracleScheduler,
        "ORACLE scheduler: late binding + shortest job first with true output lengths",
    ),
)

#: Every built-in router by name (read-only mapping, registry order).
ROUTERS: Mapping[str, RouterSpec] = MappingProxyType(
    {
        cls.name: RouterSpec(  # type: ignore[attr-defined]
            name=cls.name,  # type: ignore[attr-defined]
            router_class=cls,
            description=desc,
            oracle=bool(cls.oracle),  # type: ignore[attr-defined]
        )
        for cls, desc in _SPECS
    }
)


def list_routers(*, include_oracle: bool = True) -> list[str]:
    """Names of the built-in routers, in registry order.

    Args:
        include_oracle: include oracle routers (they see true output lengths).

    Returns:
        The registry keys.

    Example:
        >>> names = list_routers()
        >>> names[:3], "decode-balancer-oracle" in list_routers(include_oracle=False)
        (['round-robin', 'weighted-round-robin', 'random'], False)
    """
    return [k for k, spec in ROUTERS.items() if include_oracle or not spec.oracle]


def make_router(name: str, **params: Any) -> Router:
    """Build the registered router ``name`` with keyword parameters.

    Args:
        name: a key of :data:`ROUTERS` (see :func:`list_routers`).
        **params: keyword parameters of that router's class.

    Returns:
        A fresh router (call ``reset(cluster, rng)`` before routing; the engine does),
        or a router-queue scheduler (``late-binding-spf*``: it has ``schedule``, see
        :func:`routeplay.replay.is_scheduler`).

    Raises:
        ValueError: unknown name (with the closest valid name and the full list), an
            unknown parameter (with the router's valid parameters) or a bad value.

    Example:
        >>> make_router("power-of-two").name
        'power-of-two'
        >>> make_router("max-capacity", mode="best-fit").mode
        'best-fit'
        >>> make_router("round-robbin")
        Traceback (most recent call last):
        ...
        ValueError: unknown router 'round-robbin'. Did you mean 'round-robin'? Valid routers: ...
    """
    spec = ROUTERS.get(name)
    if spec is None:
        close = difflib.get_close_matches(str(name), list(ROUTERS), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown router {name!r}.{hint} Valid routers: {list(ROUTERS)}.")
    sig = inspect.signature(spec.router_class)
    accepts_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values())
    valid = [
        p.name
        for p in sig.parameters.values()
        if p.name != "self" and p.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = [k for k in params if k not in valid]
    if unknown and not accepts_any:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        expected = f"some of {valid}" if valid else "no parameters"
        raise ValueError(
            f"router {name!r} got unknown parameter(s) {unknown}; expected {expected}.{hint}"
        )
    router: Router = spec.router_class(**params)
    return router
