"""The router contract checker (like gymnasium's ``env_checker``) and a state builder.

:func:`check_router` drives a router through randomly generated, valid cluster
snapshots and raises :class:`RouterError` with a precise message at the first broken
rule; :func:`make_cluster_state` builds a read-only :class:`ClusterState` from a few
arrays (everything else defaulted), for tests and docstring examples.
"""

# Why this module is long: the contract checker spells out every rule a router must
# follow, each with its own precise error message.

from __future__ import annotations

import random as _stdlib_random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import polars as pl
from routeplay.estimator._latency import LinearLatencyModel

from .._types import (
    WAIT,
    ClusterConfig,
    ClusterState,
    InstanceConfig,
    OracleRequestView,
    RequestView,
    Router,
    RouterError,
    Scheduler,
)

__all__ = ["RouterCheckResult", "check_router", "make_cluster_state", "make_uniform_cluster"]

_N_PROMPT_BUCKETS = 4
_N_DECODE_BUCKETS = 5

_INT_FIELDS = (
    "n_queued",
    "n_running",
    "prefill_tokens_pending",
    "decode_tokens_done",
    "kv_used_tokens",
    "kv_capacity_tokens",
    "max_running_seqs",
    "n_completed",
    "tokens_in_system",
)


def _ro(a: Any, dtype: Any) -> npt.NDArray[Any]:
    arr = np.array(a, dtype=dtype)
    arr.setflags(write=False)
    return arr


def make_uniform_cluster(n_instances: int, *, tokens_per_s: float = 1000.0) -> ClusterConfig:
    """``n_instances`` identical tokens-per-second servers (for examples and tests).

    Example:
        >>> [i.name for i in make_uniform_cluster(2).instances]
        ['i0', 'i1']
    """
    lat = LinearLatencyModel.from_throughput(tokens_per_s)
    return ClusterConfig(
        instances=tuple(InstanceConfig(name=f"i{k}", latency=lat) for k in range(n_instances))
    )


def make_cluster_state(
    n_instances: int | None = None,
    *,
    now_s: float = 0.0,
    router_queue_len: int = 0,
    **arrays: Any,
) -> ClusterState:
    """Build a read-only :class:`ClusterState`, defaulting every array not given.

    Defaults: idle instances (zeros), ``kv_capacity_tokens = 100_000``,
    ``max_running_seqs = 256``, 4 prompt and 5 decode buckets of zero counts,
    ``earliest_completion_s = now_s``; ``oracle_decode_tokens_left`` stays ``None``
    unless given. The instance count comes from ``n_instances`` or the first array.

    Args:
        n_instances: number of instances (optional when any array is given).
        now_s: decision time.
        router_queue_len: requests waiting at the router.
        **arrays: any ClusterState array field, as a list or array.

    Returns:
        A snapshot whose arrays are all read-only.

    Raises:
        ValueError: unknown field, or arrays of different lengths.

    Example:
        >>> s = make_cluster_state(n_queued=[2, 0, 1])
        >>> s.n_instances, s.n_outstanding.tolist(), s.n_queued.flags.writeable
        (3, [2, 0, 1], False)
    """
    valid = {f.name for f in fields(ClusterState)} - {"now_s", "router_queue_len"}
    unknown = sorted(set(arrays) - valid)
    if unknown:
        raise ValueError(
            f"make_cluster_state: unknown field(s) {unknown}; expected some of {sorted(valid)}."
        )
    lengths = {k: len(np.atleast_1d(v)) for k, v in arrays.items() if v is not None}
    if n_instances is None:
        if not lengths:
            raise ValueError(
                "make_cluster_state: give n_instances or at least one per-instance array."
            )
        n_instances = next(iter(lengths.values()))
    bad = {k: n for k, n in lengths.items() if n != n_instances}
    if bad:
        raise ValueError(
            f"make_cluster_state: arrays {bad} do not match n_instances={n_instances}; "
            "expected one entry per instance."
        )
    m = n_instances
    defaults: dict[str, Any] = {name: np.zeros(m, dtype=np.int64) for name in _INT_FIELDS}
    defaults["kv_capacity_tokens"] = np.full(m, 100_000, dtype=np.int64)
    defaults["max_running_seqs"] = np.full(m, 256, dtype=np.int64)
    defaults["predicted_decode_tokens_left"] = np.zeros(m, dtype=np.float64)
    defaults["prompt_bucket_counts"] = np.zeros((m, _N_PROMPT_BUCKETS), dtype=np.int64)
    defaults["decode_bucket_counts"] = np.zeros((m, _N_DECODE_BUCKETS), dtype=np.int64)
    defaults["earliest_completion_s"] = np.full(m, now_s, dtype=np.float64)
    defaults.update({k: v for k, v in arrays.items() if v is not None})
    kwargs: dict[str, Any] = {}
    for name, value in defaults.items():
        dtype = (
            np.float64
            if name in ("predicted_decode_tokens_left", "earliest_completion_s")
            else np.int64
        )
        kwargs[name] = _ro(value, dtype)
    oracle = arrays.get("oracle_decode_tokens_left")
    kwargs["oracle_decode_tokens_left"] = None if oracle is None else _ro(oracle, np.int64)
    return ClusterState(now_s=float(now_s), router_queue_len=int(router_queue_len), **kwargs)


@dataclass(frozen=True, slots=True)
class RouterCheckResult:
    """What :func:`check_router` saw: the decisions of one checked run.

    Attributes:
        router_name: the router's ``name``.
        oracle: the router's ``oracle`` flag.
        n_instances: instances of the random cluster.
        n_decisions: route calls made in one run.
        n_wait: how many of them returned WAIT.
        choices: every decision of the run, in order (for a scheduler: the instance
            or WAIT of each ``(index, instance)`` answer).
        queue_indices: for a scheduler, the queue index of every answer (empty for
            a router, which always takes the head).
    """

    router_name: str
    oracle: bool
    n_instances: int
    n_decisions: int
    n_wait: int
    choices: tuple[int, ...]
    queue_indices: tuple[int, ...] = ()

    def to_frame(self) -> pl.DataFrame:
        """Decision counts per choice (``-1`` = WAIT), sorted by choice."""
        counts = Counter(self.choices)
        keys = sorted(counts)
        return pl.DataFrame(
            {"choice": keys, "n_decisions": [counts[k] for k in keys]},
            schema={"choice": pl.Int64, "n_decisions": pl.Int64},
        )


def _random_cluster(rng: np.random.Generator, m: int) -> ClusterConfig:
    instances = []
    for i in range(m):
        speed = float(rng.uniform(0.5, 2.0))
        latency = LinearLatencyModel(
            intercept_s=0.01 * speed,
            prefill_s_per_token=2e-4 * speed,
            prefill_s_per_token2=float(rng.uniform(0.0, 1e-8)),
            decode_s_per_seq=5e-4 * speed,
            decode_s_per_context_token=float(rng.uniform(0.0, 1e-7)),
        )
        instances.append(
            InstanceConfig(
                name=f"check-{i}",
                latency=latency,
                max_running_seqs=int(rng.integers(4, 64)),
                kv_capacity_tokens=int(rng.integers(20_000, 200_000)),
            )
        )
    return ClusterConfig(instances=tuple(instances))


def _random_state(
    rng: np.random.Generator, cluster: ClusterConfig, now_s: float, oracle: bool
) -> ClusterState:
    m = cluster.n_instances
    max_seqs = np.array([c.max_running_seqs for c in cluster.instances], dtype=np.int64)
    kv_cap = np.array([c.kv_capacity_tokens for c in cluster.instances], dtype=np.int64)
    idle = rng.random(m) < 0.2
    n_running = np.where(idle, 0, rng.integers(0, max_seqs + 1))
    n_queued = np.where(idle, 0, rng.integers(0, 20, size=m))
    kv_used = np.minimum((rng.random(m) * kv_cap).astype(np.int64), kv_cap)
    kv_used = np.where(n_running == 0, 0, kv_used)
    prefill_pending = n_queued * rng.integers(1, 2000, size=m)
    decode_done = n_running * rng.integers(0, 300, size=m)
    pred_left = (n_running + n_queued) * rng.uniform(0.0, 400.0, size=m)
    ec = now_s + np.where(n_running > 0, rng.exponential(1.0, size=m), 0.0)
    pb = (
        rng.multinomial(1, np.full(_N_PROMPT_BUCKETS, 1 / _N_PROMPT_BUCKETS), size=m)
        * (n_running + n_queued)[:, None]
    )
    db = (
        rng.multinomial(1, np.full(_N_DECODE_BUCKETS, 1 / _N_DECODE_BUCKETS), size=m)
        * (n_running + n_queued)[:, None]
    )
    oracle_left = (n_running + n_queued) * rng.integers(1, 400, size=m) if oracle else None
    return make_cluster_state(
        m,
        now_s=now_s,
        router_queue_len=int(rng.integers(0, 512)),
        n_queued=n_queued,
        n_running=n_running,
        prefill_tokens_pending=prefill_pending,
        decode_tokens_done=decode_done,
        predicted_decode_tokens_left=pred_left,
        kv_used_tokens=kv_used,
        kv_capacity_tokens=kv_cap,
        max_running_seqs=max_seqs,
        prompt_bucket_counts=pb,
        decode_bucket_counts=db,
        earliest_completion_s=ec,
        n_completed=rng.integers(0, 1000, size=m),
        tokens_in_system=prefill_pending + decode_done + n_running * 500,
        oracle_decode_tokens_left=oracle_left,
    )


def _random_request(
    rng: np.random.Generator, request_id: int, arrival_s: float, oracle: bool
) -> RequestView:
    prompt = int(rng.integers(1, 4000))
    n_blocks = int(rng.integers(0, 6))
    family = int(rng.integers(0, 4))
    blocks = tuple(int(1000 * family + k) for k in range(n_blocks))
    has_pred = rng.random() < 0.8
    pred_out = float(rng.uniform(1, 800)) if has_pred else None
    bucket = int(rng.integers(0, _N_DECODE_BUCKETS)) if has_pred else None
    session = f"session-{int(rng.integers(0, 8))}" if rng.random() < 0.7 else None
    task = ("code", "conversation", "summarize", None)[int(rng.integers(0, 4))]
    common: dict[str, Any] = {
        "request_id": request_id,
        "arrival_s": arrival_s,
        "prompt_tokens": prompt,
        "task": task,
        "session_id": session,
        "prefix_blocks": blocks,
        "predicted_bucket": bucket,
        "predicted_output_tokens": pred_out,
    }
    if oracle:
        return OracleRequestView(**common, output_tokens=int(rng.integers(1, 1000)))
    return RequestView(**common)


def _snapshot(state: ClusterState) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(ClusterState):
        value = getattr(state, f.name)
        out[f.name] = value.copy() if isinstance(value, np.ndarray) else value
    return out


def _same(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    changed = []
    for key, va in a.items():
        vb = b[key]
        if isinstance(va, np.ndarray):
            if not (isinstance(vb, np.ndarray) and np.array_equal(va, vb)):
                changed.append(key)
        elif va != vb:
            changed.append(key)
    return changed


_T = TypeVar("_T")


def _must_refuse(call: Callable[[], object], message: str) -> None:
    """Raise RouterError(``message``) unless ``call`` raises (any clear refusal is fine)."""
    try:
        call()
    except Exception:  # noqa: BLE001 - any clear refusal is acceptable
        return
    raise RouterError(message)


def _call_read_only(
    kind: str, name: str, step: int, context: str, state: ClusterState, call: Callable[[], _T]
) -> _T:
    """Run one route/schedule call: its exceptions re-raised with context, ``state`` unchanged."""
    before = _snapshot(state)
    try:
        result = call()
    except Exception as exc:  # re-raised with the context a user needs
        raise RouterError(
            f"{kind} {name!r} raised {type(exc).__name__} at step {step} ({context}): {exc}"
        ) from exc
    changed = _same(before, _snapshot(state))
    if changed:
        raise RouterError(
            f"{kind} {name!r} changed the cluster state's {changed} at step {step}; "
            f"{kind}s must treat the snapshot as read-only."
        )
    return result


def _checked_route(
    router: Router, m: int, step: int, request: RequestView, state: ClusterState
) -> int:
    """One route call with every per-call rule checked."""
    name = getattr(router, "name", type(router).__name__)
    context = f"request {request.request_id}, {m} instances"
    choice = _call_read_only(
        "router", name, step, context, state, lambda: router.route(request, state)
    )
    if isinstance(choice, (bool, np.bool_)) or not isinstance(choice, (int, np.integer)):
        raise RouterError(
            f"router {name!r} returned {choice!r} ({type(choice).__name__}) at step {step}; "
            f"expected an int in range({m}) or WAIT ({WAIT})."
        )
    if not (0 <= int(choice) < m or int(choice) == WAIT):
        raise RouterError(
            f"router {name!r} returned {int(choice)} at step {step} for request "
            f"{request.request_id}; expected an index in range({m}) or WAIT ({WAIT})."
        )
    return int(choice)


def _checked_schedule(
    scheduler: Scheduler,
    m: int,
    step: int,
    queue: tuple[RequestView, ...],
    state: ClusterState,
) -> tuple[int, int]:
    """One schedule call with every per-call rule checked."""
    name = getattr(scheduler, "name", type(scheduler).__name__)
    context = f"queue of {len(queue)}, {m} instances"
    choice: Any = _call_read_only(
        "scheduler", name, step, context, state, lambda: scheduler.schedule(queue, state)
    )
    ok = isinstance(choice, tuple) and len(choice) == 2
    ok = ok and all(
        isinstance(c, (int, np.integer)) and not isinstance(c, (bool, np.bool_)) for c in choice
    )
    if not ok:
        raise RouterError(
            f"scheduler {name!r} returned {choice!r} at step {step}; expected a pair of ints "
            f"(queue index, instance in range({m}) or WAIT ({WAIT}))."
        )
    index, instance = int(choice[0]), int(choice[1])
    if not 0 <= index < len(queue):
        raise RouterError(
            f"scheduler {name!r} returned queue index {index} at step {step} for a queue of "
            f"{len(queue)}; expected an index in range({len(queue)})."
        )
    if not (0 <= instance < m or instance == WAIT):
        raise RouterError(
            f"scheduler {name!r} returned instance {instance} at step {step}; expected an "
            f"index in range({m}) or WAIT ({WAIT})."
        )
    return index, instance


def _random_queues(
    rng: np.random.Generator, n: int, oracle: bool, inputs: list[tuple[RequestView, ClusterState]]
) -> list[tuple[tuple[RequestView, ...], ClusterState]]:
    """Router queues of 1..8 random requests (in arrival order) beside ``inputs``' states."""
    out = []
    next_id = 0
    for _, state in inputs[:n]:
        size = int(rng.integers(1, 9))
        arrivals = np.sort(state.now_s - rng.uniform(0.0, 0.5, size))
        queue = tuple(
            _random_request(rng, next_id + k, float(arrivals[k]), oracle) for k in range(size)
        )
        next_id += size
        out.append((queue, state))
    return out


def _run_schedule(
    scheduler: Scheduler,
    cluster: ClusterConfig,
    inputs: list[tuple[tuple[RequestView, ...], ClusterState]],
    seed: int,
) -> list[tuple[int, int]]:
    scheduler.reset(cluster, np.random.default_rng(np.random.SeedSequence(seed)))
    m = cluster.n_instances
    return [
        _checked_schedule(scheduler, m, step, queue, state)
        for step, (queue, state) in enumerate(inputs)
    ]


def _schedule_on_engine(
    scheduler: Scheduler, cluster: ClusterConfig, trace: pl.DataFrame, seed: int, n: int
) -> list[tuple[int, int]]:
    """Drive a real replay with ``scheduler`` for ``n`` decisions (per-call rules checked)."""
    from ..engine._engine import Engine

    oracle = bool(getattr(scheduler, "oracle", False))
    engine = Engine(trace, cluster, oracle=oracle, router_name=str(scheduler.name))
    scheduler.reset(cluster, np.random.default_rng(np.random.SeedSequence(seed)))
    engine.bind_router(scheduler)
    made: list[tuple[int, int]] = []
    m = cluster.n_instances
    while len(made) < n and (decision := engine.next_decision()) is not None:
        choice = _checked_schedule(scheduler, m, len(made), engine.router_queue(), decision[1])
        engine.dispatch(choice)
        made.append(choice)
    return made


def _check_scheduler(
    scheduler: Scheduler,
    cluster: ClusterConfig,
    inputs: list[tuple[RequestView, ClusterState]],
    seed: int,
    n_decisions: int,
) -> list[tuple[int, int]]:
    """Synthetic queues twice and a real replay twice, under different global random states."""
    name = str(scheduler.name)
    oracle = bool(scheduler.oracle)
    qrng = np.random.default_rng(np.random.SeedSequence([seed, 11]))
    queues = _random_queues(qrng, n_decisions, oracle, inputs)
    trace = _random_trace(np.random.default_rng(np.random.SeedSequence([seed, 7])), n_decisions)
    runs = []
    for global_seed in (1, 2):
        np.random.seed(global_seed)
        _stdlib_random.seed(global_seed)
        synthetic = _run_schedule(scheduler, cluster, queues, seed)
        replay = _schedule_on_engine(scheduler, cluster, trace, seed, n_decisions)
        runs.append((synthetic, replay))
    for where, a, b in (
        ("on random queues", runs[0][0], runs[1][0]),
        ("on the engine", runs[0][1], runs[1][1]),
    ):
        if a != b:
            step = next(i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y)
            raise RouterError(
                f"scheduler {name!r} is not deterministic {where}: after reset with the same "
                f"seed it chose {b[step]} instead of {a[step]} at step {step}. Fix: draw "
                "randomness only from the generator given to reset() and clear all "
                "per-replay state in reset()."
            )
    if oracle:
        queue = tuple(
            RequestView(
                request_id=v.request_id, arrival_s=v.arrival_s, prompt_tokens=v.prompt_tokens
            )
            for v in queues[0][0]
        )
        scheduler.reset(cluster, np.random.default_rng(np.random.SeedSequence(seed)))
        _must_refuse(
            lambda: scheduler.schedule(queue, queues[0][1]),
            f"scheduler {name!r} has oracle=True but scheduled plain RequestViews (no true "
            "output length) without complaint; oracle schedulers must refuse them.",
        )
    if getattr(scheduler, "fixed_n_instances", None) is None:
        single = _random_cluster(np.random.default_rng(np.random.SeedSequence(seed + 1)), 1)
        srng = np.random.default_rng(np.random.SeedSequence(seed + 2))
        single_inputs = [
            (
                _random_request(srng, k, 0.1 * k, oracle),
                _random_state(srng, single, 0.1 * k, oracle),
            )
            for k in range(min(n_decisions, 20))
        ]
        _run_schedule(
            scheduler, single, _random_queues(srng, len(single_inputs), oracle, single_inputs), seed
        )
    return runs[0][0]


def _run(
    router: Router,
    cluster: ClusterConfig,
    inputs: list[tuple[RequestView, ClusterState]],
    seed: int,
) -> list[int]:
    router.reset(cluster, np.random.default_rng(np.random.SeedSequence(seed)))
    m = cluster.n_instances
    return [
        _checked_route(router, m, step, request, state)
        for step, (request, state) in enumerate(inputs)
    ]


def _random_trace(rng: np.random.Generator, n: int) -> pl.DataFrame:
    """A valid, light trace of ``n`` requests for the engine-driven checks.

    It fits every random cluster (prompts < 1,000 tokens, prompt + output < 20,000 KV
    tokens) and keeps a few requests in flight (~5 req/s), so that routers that fork
    and drain the simulator at every decision are checked in seconds.
    """
    return pl.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.int64),
            "arrival_s": np.cumsum(rng.exponential(0.2, n)),
            "prompt_tokens": rng.integers(1, 1000, n),
            "output_tokens": rng.integers(1, 100, n),
        }
    )


def _run_on_engine(
    router: Router,
    cluster: ClusterConfig,
    trace: pl.DataFrame,
    seed: int,
    n_decisions: int,
    choices: list[int] | None = None,
) -> tuple[list[int], dict[str, Any], npt.NDArray[Any]]:
    """Drive a real replay for ``n_decisions`` decisions (the router's, or ``choices``).

    Returns the decisions, a snapshot of the exact state after the last one, and the
    instance of every request.
    """
    from ..engine._engine import Engine

    oracle = bool(getattr(router, "oracle", False))
    engine = Engine(trace, cluster, oracle=oracle, router_name=str(router.name))
    if choices is None:
        router.reset(cluster, np.random.default_rng(np.random.SeedSequence(seed)))
        engine.bind_router(router)
    made: list[int] = []
    m = cluster.n_instances
    while len(made) < n_decisions and (decision := engine.next_decision()) is not None:
        step = len(made)
        if choices is None:
            choice = _checked_route(router, m, step, decision[0], decision[1])
        else:
            choice = choices[step]
        engine.apply(choice)
        made.append(choice)
    return made, _snapshot(engine.state()), engine.instance_id.copy()


def _check_on_engine(router: Router, cluster: ClusterConfig, seed: int, n: int) -> list[int]:
    """Check a ``needs_engine`` router on a real replay of a random trace.

    Such a router cannot route a synthetic snapshot (it forks the simulator), so it is
    driven by the engine for ``n`` decisions, twice under different global random
    states (the decisions must agree), and the decisions are replayed without it (the
    replay must reach the same state: nothing the router does to its forks leaks).
    """
    name = str(router.name)
    trace = _random_trace(np.random.default_rng(np.random.SeedSequence([seed, 7])), n)
    np.random.seed(1)
    _stdlib_random.seed(1)
    first, state, where = _run_on_engine(router, cluster, trace, seed, n)
    np.random.seed(2)
    _stdlib_random.seed(2)
    second, _, _ = _run_on_engine(router, cluster, trace, seed, n)
    if first != second:
        step = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
        raise RouterError(
            f"router {name!r} is not deterministic on the engine: after reset with the same "
            f"seed it chose {second[step]} instead of {first[step]} at step {step}. Fix: draw "
            "randomness only from the generator given to reset()."
        )
    _, replayed, replayed_where = _run_on_engine(router, cluster, trace, seed, n, first)
    changed = _same(state, replayed)
    if changed or not np.array_equal(where, replayed_where):
        raise RouterError(
            f"router {name!r} changed the replay it routes (state fields {changed} differ from "
            "a replay of the same decisions without it); routers that need the engine must "
            "only drive the forks they are given."
        )
    return first


def check_router(
    router: Router,
    *,
    n_instances: int = 4,
    seed: int = 0,
    n_decisions: int = 200,
) -> RouterCheckResult:
    """Check that ``router`` keeps the router contract; raise at the first violation.

    On a random heterogeneous cluster of ``n_instances`` and ``n_decisions`` random but
    valid (request, snapshot) pairs, it checks that the router

    * has a non-empty ``name`` (str), a bool ``oracle`` flag, ``reset`` and ``route``;
    * returns a plain int in ``range(n_instances)`` or ``WAIT`` every time;
    * never changes the snapshot (arrays are read-only and compared before/after);
    * works with a plain :class:`RequestView` and ``oracle_decode_tokens_left=None``
      when ``oracle`` is False (so it cannot read the true output length), and, when
      ``oracle`` is True, refuses a plain RequestView with an exception;
    * makes the same decisions after ``reset`` with an equally seeded generator, and
      whatever the global ``random``/``numpy.random`` state is (no hidden randomness);
    * works on a single-instance cluster (always 0 or WAIT) — skipped for routers that
      declare ``fixed_n_instances`` (e.g. a trained policy, whose observation layout
      fixes the instance count and which must refuse any other cluster).

    A scheduler (it has ``schedule``; :func:`routeplay.replay.is_scheduler`) is checked
    on ``n_decisions`` random router queues (1-8 requests each) beside the same random
    snapshots — every answer a pair of ints ``(index in range(len(queue)), instance or
    WAIT)``, the snapshot unchanged, the same answers under other global random states,
    plain views refused when ``oracle`` is True, a single-instance cluster handled —
    and on a real replay of a random trace for ``n_decisions`` decisions (twice: the
    same answers).

    Routers that declare ``needs_engine = True`` (they fork the simulator, e.g.
    ``lookahead-oracle``) cannot route synthetic snapshots: they are checked on a real
    replay of a random trace on the same random cluster instead (``n_decisions``
    decisions, with the same per-call rules), which must also reach the same state as a
    replay of their decisions without them (their forks must not leak into the replay).

    Args:
        router: the router to check (it is reset several times).
        n_instances: instances of the random cluster (>= 1).
        seed: seed of the random cluster, states and requests, and of the generator
            handed to ``reset``.
        n_decisions: route calls per run.

    Returns:
        The decisions of the first run.

    Raises:
        RouterError: the router broke a rule (the message says which and where).
        ValueError: bad arguments.

    Example:
        >>> from routeplay.replay import make_router
        >>> result = check_router(make_router("round-robin"), n_instances=3, n_decisions=6)
        >>> result.choices
        (0, 1, 2, 0, 1, 2)
    """
    if isinstance(n_instances, bool) or not isinstance(n_instances, int) or n_instances < 1:
        raise ValueError(f"check_router: n_instances = {n_instances!r}; expected an int >= 1.")
    if isinstance(n_decisions, bool) or not isinstance(n_decisions, int) or n_decisions < 1:
        raise ValueError(f"check_router: n_decisions = {n_decisions!r}; expected an int >= 1.")
    name = getattr(router, "name", None)
    if not isinstance(name, str) or not name:
        raise RouterError(
            f"{type(router).__name__} has name = {name!r}; expected a non-empty str attribute."
        )
    oracle = getattr(router, "oracle", None)
    if not isinstance(oracle, bool):
        raise RouterError(
            f"router {name!r} has oracle = {oracle!r}; expected a bool attribute (True only "
            "for routers allowed to see true output lengths)."
        )
    scheduler = callable(getattr(router, "schedule", None))
    for method in ("reset", "schedule" if scheduler else "route"):
        if not callable(getattr(router, method, None)):
            raise RouterError(f"router {name!r} has no callable {method}() method.")
    fixed = getattr(router, "fixed_n_instances", None)
    if fixed is not None and fixed != n_instances:
        raise ValueError(
            f"router {name!r} declares fixed_n_instances={fixed} but check_router was asked "
            f"for n_instances={n_instances}; expected the router's own instance count."
        )

    rng = np.random.default_rng(np.random.SeedSequence(seed))
    cluster = _random_cluster(rng, n_instances)
    inputs = []
    now_s = 0.0
    for k in range(n_decisions):
        now_s += float(rng.exponential(0.05))
        inputs.append(
            (_random_request(rng, k, now_s, oracle), _random_state(rng, cluster, now_s, oracle))
        )

    if scheduler:
        state_np, state_py = np.random.get_state(), _stdlib_random.getstate()
        try:
            pairs = _check_scheduler(router, cluster, inputs, seed, n_decisions)  # type: ignore[arg-type]
        finally:
            np.random.set_state(state_np)
            _stdlib_random.setstate(state_py)
        return RouterCheckResult(
            router_name=name,
            oracle=oracle,
            n_instances=n_instances,
            n_decisions=n_decisions,
            n_wait=sum(c == WAIT for _, c in pairs),
            choices=tuple(c for _, c in pairs),
            queue_indices=tuple(k for k, _ in pairs),
        )

    needs_engine = bool(getattr(router, "needs_engine", False))
    if needs_engine and not callable(getattr(router, "bind_engine", None)):
        raise RouterError(
            f"router {name!r} declares needs_engine = True but has no callable bind_engine()."
        )
    state_np, state_py = np.random.get_state(), _stdlib_random.getstate()
    try:
        if needs_engine:
            first = second = _check_on_engine(router, cluster, seed, n_decisions)
        else:
            np.random.seed(1)
            _stdlib_random.seed(1)
            first = _run(router, cluster, inputs, seed)
            np.random.seed(2)
            _stdlib_random.seed(2)
            second = _run(router, cluster, inputs, seed)
    finally:
        np.random.set_state(state_np)
        _stdlib_random.setstate(state_py)
    if first != second:
        step = next(i for i, (a, b) in enumerate(zip(first, second, strict=True)) if a != b)
        raise RouterError(
            f"router {name!r} is not deterministic: after reset with the same seed it chose "
            f"{second[step]} instead of {first[step]} at step {step}. Fix: draw randomness only "
            "from the generator given to reset() and clear all per-replay state in reset()."
        )

    if oracle:
        plain = RequestView(
            request_id=inputs[0][0].request_id,
            arrival_s=inputs[0][0].arrival_s,
            prompt_tokens=inputs[0][0].prompt_tokens,
        )
        router.reset(cluster, np.random.default_rng(np.random.SeedSequence(seed)))
        _must_refuse(
            lambda: router.route(plain, inputs[0][1]),
            f"router {name!r} has oracle=True but routed a plain RequestView (no true "
            "output length) without complaint; oracle routers must refuse it.",
        )

    if fixed is None and needs_engine:
        single = _random_cluster(np.random.default_rng(np.random.SeedSequence(seed + 1)), 1)
        _check_on_engine(router, single, seed, min(n_decisions, 20))
    elif fixed is None:
        single = _random_cluster(np.random.default_rng(np.random.SeedSequence(seed + 1)), 1)
        srng = np.random.default_rng(np.random.SeedSequence(seed + 2))
        single_inputs = [
            (
                _random_request(srng, k, 0.1 * k, oracle),
                _random_state(srng, single, 0.1 * k, oracle),
            )
            for k in range(min(n_decisions, 20))
        ]
        _run(router, single, single_inputs, seed)

    return RouterCheckResult(
        router_name=name,
        oracle=oracle,
        n_instances=n_instances,
        n_decisions=n_decisions,
        n_wait=sum(c == WAIT for c in first),
        choices=tuple(first),
    )
