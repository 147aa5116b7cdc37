"""Engine.fork and the run-until helpers: forks continue bit-identically and independently."""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from typing import Any

import numpy as np
import polars as pl
import pytest
from fakes import AlwaysZeroFake, LeastTokensFake, RoundRobinFake, WaitThenRouteFake
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from routeplay.replay import WAIT, ClusterConfig, Engine, ReplayConfig, make_router, run_replay
from routeplay.replay.engine._result import ReplayResult
from routeplay.replay.routers._check import make_uniform_cluster
from test_properties import cases

ROUTERS = [RoundRobinFake, LeastTokensFake, lambda: WaitThenRouteFake(n_waits=1)]


def _same(a: ReplayResult, b: ReplayResult) -> None:
    assert_frame_equal(a.requests, b.requests, check_exact=True)
    assert_frame_equal(a.timelines, b.timelines, check_exact=True)
    assert a.utilisation == b.utilisation


def _engine(trace: pl.DataFrame, cluster: ClusterConfig, cfg: ReplayConfig, router: Any) -> Engine:
    eng = Engine(trace, cluster, config=cfg)
    router.reset(cluster, eng.router_rng())
    return eng


def _finish(eng: Engine, router: Any) -> ReplayResult:
    while (d := eng.next_decision()) is not None:
        eng.apply(router.route(*d))
    return eng.result()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=cases(),
    router_index=st.integers(0, len(ROUTERS) - 1),
    mode=st.sampled_from(["fast", "reference"]),
    delay_s=st.sampled_from([0.0, 0.013]),
    where=st.floats(0.0, 0.999),
    pause=st.floats(0.0, 1.0),
)
def test_fork_and_continue_equals_the_uninterrupted_run(
    case: tuple[pl.DataFrame, ClusterConfig],
    router_index: int,
    mode: str,
    delay_s: float,
    where: float,
    pause: float,
) -> None:
    trace, cluster = case
    cluster = dataclasses.replace(cluster, state_delay_s=delay_s)
    cfg = ReplayConfig(mode=mode, timeline_sample_interval_s=math.pi / 1000)  # type: ignore[arg-type]
    whole = run_replay(trace, cluster, ROUTERS[router_index](), config=cfg)
    n_decisions = int(whole.requests["router_wait_s"].gt(0).sum()) + trace.height  # lower bound
    k = int(where * n_decisions)

    router = ROUTERS[router_index]()
    eng = _engine(trace, cluster, cfg, router)
    for _ in range(k):  # advance to decision k (or the end)
        d = eng.next_decision()
        if d is None:
            break
        eng.apply(router.route(*d))
    pending = eng.next_decision()
    # a fork driven by another policy, to the end: must not disturb the original
    other = eng.fork()
    other_router = AlwaysZeroFake()
    _finish(other, other_router)
    # a fork continued with (a copy of) the same router: the same run
    same = eng.fork()
    if pending is not None:
        assert same.next_decision() == pending
    same_result = _finish(same, copy.deepcopy(router))
    # the original, paused in the middle of the rest of the run, then continued
    t_pause = eng.now_s + pause * max(float(whole.requests["finish_s"].max()) - eng.now_s, 0.0)  # type: ignore[arg-type]
    eng.run_until(t_pause, router.route)
    assert eng.now_s >= t_pause
    _same(same_result, whole)
    _same(_finish(eng, router), whole)


def test_a_fork_shares_only_immutable_state() -> None:
    # every attribute of the fork (and of its instances) is either a distinct object or
    # an immutable/read-only one: a guard against state added later without a copy
    rng = np.random.default_rng(np.random.SeedSequence(3))
    n = 60
    trace = pl.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": np.cumsum(rng.exponential(0.01, n)),
            "prompt_tokens": rng.integers(1, 300, n),
            "output_tokens": rng.integers(1, 200, n),
        }
    )
    cluster = dataclasses.replace(make_uniform_cluster(2), state_delay_s=0.01)
    cfg = ReplayConfig(timeline_sample_interval_s=0.05)
    router = RoundRobinFake()
    eng = _engine(trace, cluster, cfg, router)
    for _ in range(30):
        d = eng.next_decision()
        assert d is not None
        eng.apply(router.route(*d))
    fork = eng.fork()
    immutable = (int, float, bool, str, type(None), tuple, frozenset)

    def check(a: object, b: object, where: str) -> None:
        for key, va in vars(a).items():
            vb = vars(b)[key]
            if vb is not va:
                continue
            if isinstance(va, immutable) or dataclasses.is_dataclass(va):
                continue
            if isinstance(va, np.ndarray) and not va.flags.writeable:
                continue
            if key in ("_trace", "_edges", "pred_bucket", "pred_tokens", "_block"):
                continue  # inputs, never written (the block list is replaced, not mutated)
            raise AssertionError(f"{where}.{key} ({type(va).__name__}) is shared by the fork")

    check(eng, fork, "Engine")
    assert len(eng.inst) == len(fork.inst)
    for a, b in zip(eng.inst, fork.inst, strict=True):
        assert a is not b
        check(a, b, "_Instance")
        assert np.shares_memory(b.pb_counts, fork._pb_counts)  # rows of the fork's matrix
        assert not np.shares_memory(b.pb_counts, eng._pb_counts)


def test_the_fork_is_independent_both_ways() -> None:
    trace = pl.DataFrame(
        {
            "request_id": [0, 1, 2],
            "arrival_s": [0.0, 0.05, 0.06],
            "prompt_tokens": [100, 100, 100],
            "output_tokens": [50, 1, 1],
        }
    )
    eng = Engine(trace, make_uniform_cluster(2))
    eng.next_decision()
    eng.apply(0)
    request, state = eng.next_decision()  # type: ignore[misc]
    fork = eng.fork()
    assert fork.next_decision() == (request, state)
    fork.apply(0)
    assert fork.next_decision()[0].request_id == 2  # type: ignore[index]
    # the original still has request 1 pending, with nothing of the fork's routing
    assert eng.next_decision() == (request, state)
    assert eng.instance_id.tolist() == [0, -1, -1]
    assert eng.state().n_queued.tolist() == [0, 0]
    eng.apply(1)  # ... and the original's routing never reaches the fork
    assert fork.instance_id.tolist() == [0, 0, -1]
    assert fork.state().n_queued.tolist() == [1, 0]


def test_drain_stops_arrivals_and_finishes_the_requests_in_flight() -> None:
    # 1,000 tok/s: request 0 (prefill 0.1 s, then 99 decodes of 1 ms) ends at 0.199 s
    trace = pl.DataFrame(
        {
            "request_id": [10, 11, 12],
            "arrival_s": [0.0, 0.05, 5.0],
            "prompt_tokens": [100, 100, 100],
            "output_tokens": [100, 1, 1],
        }
    )
    eng = Engine(trace, make_uniform_cluster(2))
    eng.next_decision()
    eng.apply(WAIT)  # request 0 waits at the router: draining needs a route for it
    assert eng.n_arrived == 1 and eng.first_in_flight == 0 and eng.n_in_flight == 1
    with pytest.raises(RuntimeError, match=re.escape("(request 10 waiting at the router)")):
        eng.drain()
    fork = Engine(trace, make_uniform_cluster(2))
    fork.next_decision()
    fork.apply(0)
    assert fork.run_until(0.01) == 0 and fork.now_s == 0.01
    assert fork.drain() == 0  # nothing arrived after t = 0.01 is admitted
    assert fork.done and fork.n_arrived == 1
    assert fork.e2e_sum_s() == pytest.approx(0.199)
    res = fork.result()
    assert res.requests["request_id"].to_list() == [10]
    assert res.requests["finish_s"].to_list() == pytest.approx([0.199])


def test_e2e_sum_refuses_unfinished_requests() -> None:
    trace = pl.DataFrame(
        {"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [10], "output_tokens": [5]}
    )
    eng = Engine(trace, make_uniform_cluster(1))
    eng.next_decision()
    with pytest.raises(RuntimeError, match=re.escape("1 of rows 0..0 have not finished")):
        eng.e2e_sum_s()


def test_run_until_without_route_refuses_a_decision() -> None:
    trace = pl.DataFrame(
        {"request_id": [0], "arrival_s": [0.5], "prompt_tokens": [10], "output_tokens": [5]}
    )
    eng = Engine(trace, make_uniform_cluster(1))
    assert eng.run_until(0.4) == 0 and eng.now_s == 0.4
    with pytest.raises(RuntimeError, match=re.escape("met a routing decision at t=0.5")):
        eng.run_until(1.0)


class _NeedsEngine:
    name = "needs-engine"
    oracle = False
    needs_engine = True

    def __init__(self) -> None:
        self.forks: list[tuple[int, int]] = []
        self._fork: Any = None

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        self._fork = None

    def bind_engine(self, fork: Any) -> None:
        self._fork = fork

    def route(self, request: Any, state: Any) -> int:
        f = self._fork()
        pending = f.next_decision()
        self.forks.append((pending[0].request_id, request.request_id))
        f.apply(0)  # the fork's actions never reach the replay
        f.drain(lambda r, s: 0)
        return 1


def test_run_replay_binds_routers_that_need_the_engine() -> None:
    trace = pl.DataFrame(
        {
            "request_id": [0, 1],
            "arrival_s": [0.0, 0.1],
            "prompt_tokens": [10, 10],
            "output_tokens": [5, 5],
        }
    )
    router = _NeedsEngine()
    res = run_replay(trace, make_uniform_cluster(2), router)
    assert router.forks == [(0, 0), (1, 1)]  # each fork sits at the decision being routed
    assert res.requests["instance_id"].to_list() == [1, 1]


def test_bind_router_needs_bind_engine() -> None:
    class NoBind:
        name = "no-bind"
        needs_engine = True

    trace = pl.DataFrame(
        {"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [10], "output_tokens": [5]}
    )
    with pytest.raises(TypeError, match=re.escape("declares needs_engine = True but has no")):
        Engine(trace, make_uniform_cluster(1)).bind_router(NoBind())


def _finish_scheduled(eng: Engine, scheduler: Any) -> ReplayResult:
    while (d := eng.next_decision()) is not None:
        eng.dispatch(scheduler.schedule(eng.router_queue(), d[1]))
    return eng.result()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    case=cases(),
    mode=st.sampled_from(["fast", "reference"]),
    where=st.floats(0.0, 0.999),
    pause=st.floats(0.0, 1.0),
)
def test_fork_and_continue_with_a_scheduler_equals_the_uninterrupted_run(
    case: tuple[pl.DataFrame, ClusterConfig], mode: str, where: float, pause: float
) -> None:
    # late binding holds requests at the router and overtakes the head: the router
    # queue a fork copies is then more than a FIFO of arrivals
    trace, cluster = case
    cfg = ReplayConfig(mode=mode, timeline_sample_interval_s=math.pi / 1000)  # type: ignore[arg-type]
    whole = run_replay(trace, cluster, make_router("late-binding-spf"), config=cfg)
    k = int(where * trace.height)
    scheduler = make_router("late-binding-spf")
    eng = _engine(trace, cluster, cfg, scheduler)
    for _ in range(k):
        d = eng.next_decision()
        if d is None:
            break
        eng.dispatch(scheduler.schedule(eng.router_queue(), d[1]))  # type: ignore[attr-defined]
    pending = eng.next_decision()
    queue = eng.router_queue()
    other = eng.fork()  # driven to the end FIFO to instance 0: must not disturb the rest
    _finish(other, AlwaysZeroFake())
    same = eng.fork()
    if pending is not None:
        assert same.next_decision() == pending and same.router_queue() == queue
    _same(_finish_scheduled(same, copy.deepcopy(scheduler)), whole)
    t_pause = eng.now_s + pause * max(float(whole.requests["finish_s"].max()) - eng.now_s, 0.0)  # type: ignore[arg-type]
    eng.run_until(t_pause, schedule=scheduler.schedule)  # type: ignore[attr-defined]
    _same(_finish_scheduled(eng, scheduler), whole)
