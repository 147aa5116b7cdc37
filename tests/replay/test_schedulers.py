"""Router-queue schedulers: any queued request may go next, late binding, hand-computed cases."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from polars.testing import assert_frame_equal
from routeplay.estimator._latency import LinearLatencyModel
from routeplay.estimator._protocols import LengthPrediction
from routeplay.replay import (
    HOLD,
    WAIT,
    ClusterConfig,
    ClusterState,
    Engine,
    InstanceConfig,
    LateBindingSPFOracleScheduler,
    LateBindingSPFScheduler,
    LookaheadOracleRouter,
    ReplayConfig,
    RequestView,
    RouterError,
    check_router,
    free_instances,
    is_scheduler,
    make_cluster_state,
    make_router,
    replay_episodes,
    run_replay,
)
from routeplay.replay.routers._check import make_uniform_cluster
from test_properties import TIME_COLUMNS, cases

from routeplay.cli import main

LAT = LinearLatencyModel.from_throughput(1000.0)  # 1 ms per prefill token or decode step


def _trace(rows: list[tuple[float, int, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "request_id": list(range(len(rows))),
            "arrival_s": [r[0] for r in rows],
            "prompt_tokens": [r[1] for r in rows],
            "output_tokens": [r[2] for r in rows],
        }
    )


def _one_slot(n: int = 1) -> ClusterConfig:
    return ClusterConfig(
        instances=tuple(
            InstanceConfig(name=f"i{k}", latency=LAT, max_running_seqs=1) for k in range(n)
        )
    )


class _PromptPredictor:
    """Predicts 40 output tokens for prompts >= 15 tokens, else 5 (two buckets)."""

    n_buckets = 2
    bucket_edges_tokens = (1.0, 10.0, float("inf"))

    def predict(self, trace: pl.DataFrame) -> LengthPrediction:
        big = trace["prompt_tokens"].to_numpy() >= 15
        return LengthPrediction(
            bucket=big.astype(np.int64), expected_output_tokens=np.where(big, 40.0, 5.0)
        )


class _FifoScheduler:
    """A scheduler that always takes the head, routed round robin after one WAIT each."""

    name = "fifo-scheduler"
    oracle = False

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        self._m = cluster.n_instances
        self._next = 0
        self._seen: set[int] = set()

    def _choose(self, request: RequestView) -> int:
        if request.request_id not in self._seen:
            self._seen.add(request.request_id)
            return WAIT
        k = self._next
        self._next = (k + 1) % self._m
        return k

    def schedule(self, queue: tuple[RequestView, ...], state: ClusterState) -> tuple[int, int]:
        return 0, self._choose(queue[0])


class _FifoRouter(_FifoScheduler):
    """The same policy as a plain router (no ``schedule``)."""

    name = "fifo-router"
    schedule = None  # type: ignore[assignment]

    def route(self, request: RequestView, state: ClusterState) -> int:
        return self._choose(request)


class _LastFirstScheduler:
    """Always dispatches the newest queued request to the least-loaded instance."""

    name = "last-first"
    oracle = False

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        pass

    def schedule(self, queue: tuple[RequestView, ...], state: ClusterState) -> tuple[int, int]:
        return len(queue) - 1, int(np.argmin(state.n_running + state.n_queued))


# ----------------------------------------------------------------- the engine interface


def test_a_head_only_scheduler_equals_the_same_router_bit_for_bit() -> None:
    rng = np.random.default_rng(np.random.SeedSequence(5))
    n = 80
    trace = _trace(
        [
            (float(t), int(p), int(o))
            for t, p, o in zip(
                np.cumsum(rng.exponential(0.01, n)),
                rng.integers(1, 400, n),
                rng.integers(1, 120, n),
                strict=True,
            )
        ]
    )
    cluster = make_uniform_cluster(3)
    for mode in ("fast", "reference"):
        cfg = ReplayConfig(mode=mode, timeline_sample_interval_s=math.pi / 1000)  # type: ignore[arg-type]
        as_scheduler = run_replay(trace, cluster, _FifoScheduler(), config=cfg)
        as_router = run_replay(trace, cluster, _FifoRouter(), config=cfg)
        assert_frame_equal(as_scheduler.requests, as_router.requests, check_exact=True)
        assert_frame_equal(as_scheduler.timelines, as_router.timelines, check_exact=True)
    assert (as_router.requests["router_wait_s"] > 0).all()  # every request waited once


def test_any_queued_request_may_overtake_the_head() -> None:
    # three requests at t = 0 on one instance: the newest goes first each time
    trace = _trace([(0.0, 100, 1), (0.0, 200, 1), (0.0, 300, 1)])
    eng = Engine(trace, make_uniform_cluster(1))
    assert eng.next_decision() is not None
    assert [v.request_id for v in eng.router_queue()] == [0]  # one arrival processed
    eng.apply(WAIT)
    eng.next_decision()
    eng.next_decision()
    assert [v.request_id for v in eng.router_queue()] == [0, 1]
    eng.apply(0, index=1)  # request 1 overtakes 0
    eng.next_decision()
    assert [v.request_id for v in eng.router_queue()] == [0]
    eng.dispatch(HOLD)
    # request 2 arrives (same time): queue [0, 2]; send 2, then 0
    eng.next_decision()
    assert [v.request_id for v in eng.router_queue()] == [0, 2]
    eng.dispatch((1, 0))
    eng.next_decision()
    eng.dispatch((0, 0))
    assert eng.next_decision() is None
    res = eng.result().requests
    # one iteration prefills all three (600 tokens at 1,000 tok/s), routed in order 1, 2, 0
    assert res["routed_s"].to_list() == [0.0, 0.0, 0.0]
    assert res["finish_s"].to_list() == pytest.approx([0.6, 0.6, 0.6])


def test_a_scheduler_holding_requests_then_releasing_newest_first() -> None:
    # three requests 1 ms apart on one slot: hold until all three wait, then the offer
    # goes on after each dispatch: newest first (2, 1, 0), all at t = 0.002
    trace = _trace([(0.0, 100, 1), (0.001, 100, 1), (0.002, 100, 1)])
    eng = Engine(trace, _one_slot(1))
    seen: list[list[int]] = []
    decision = eng.next_decision()
    while decision is not None:
        queue = eng.router_queue()
        seen.append([v.request_id for v in queue])
        if len(queue) < 3 and eng.now_s < 0.002:
            eng.dispatch(HOLD)
        else:
            eng.dispatch((len(queue) - 1, 0))
        decision = eng.next_decision()
    res = eng.result().requests
    assert seen == [[0], [0, 1], [0, 1, 2], [0, 1], [0]]
    assert res["routed_s"].to_list() == [0.002] * 3
    # the local queue is FCFS in routing order: 2 (0.002 - 0.102), 1, then 0, 0.1 s each
    assert res["finish_s"].to_list() == pytest.approx([0.302, 0.202, 0.102])


def test_bad_scheduler_answers_are_clear_errors() -> None:
    trace = _trace([(0.0, 100, 1), (0.0, 100, 1)])
    eng = Engine(trace, make_uniform_cluster(2), router_name="mine")
    eng.next_decision()
    with pytest.raises(
        RouterError,
        match=re.escape(
            "router 'mine' chose queue index 3 of a router queue of 1 request(s) at t=0.0; "
            "expected an int in range(0, 1)."
        ),
    ):
        eng.apply(0, index=3)
    with pytest.raises(
        RouterError, match=re.escape("scheduler 'mine' returned 1; expected a pair")
    ):
        eng.dispatch(1)  # type: ignore[arg-type]
    with pytest.raises(RouterError, match=re.escape("returned 5 for request 0")):
        eng.dispatch((0, 5))
    with pytest.raises(ValueError, match="got both route and schedule"):
        eng.drain(lambda r, s: 0, schedule=lambda q, s: (0, 0))
    with pytest.raises(TypeError, match=re.escape("'late-binding-spf' is a router-queue sched")):
        make_router("late-binding-spf").route(RequestView(0, 0.0, 10), make_cluster_state(2))
    with pytest.raises(ValueError, match=re.escape("max_local_queue = -1; expected an int >= 0")):
        make_router("late-binding-spf", max_local_queue=-1)


# ------------------------------------------------------------------- late binding + SPF


def test_free_instances_rule() -> None:
    s = make_cluster_state(
        n_running=[2, 2, 1, 0], n_queued=[0, 1, 0, 0], max_running_seqs=[2, 8, 8, 8]
    )
    assert free_instances(s).tolist() == [False, False, True, True]
    assert free_instances(s, 1).tolist() == [False, True, True, True]


def test_late_binding_spf_holds_then_releases_the_shortest_predicted_job() -> None:
    # one slot at 1,000 tok/s. Request 0 (t=0, prompt 100, 1 token) runs 0 - 0.1 s.
    # At 0.01 request 1 (prompt 20: predicted 40 tokens, truly 2) and request 2
    # (prompt 10: predicted 5, truly 30) arrive and are held (the slot is taken).
    # At the tick t = 0.1 (the iteration end comes first) the slot is free:
    # * predicted SPF releases 2 (prefill 10 ms -> 0.11, 29 decodes -> 0.139), then 1 at
    #   the tick 0.14 (prefill 20 ms -> 0.16, one decode -> 0.161);
    # * the oracle releases 1 (-> 0.12, 0.121), then 2 at the tick 0.14 (-> 0.15, 0.179).
    trace = _trace([(0.0, 100, 1), (0.01, 20, 2), (0.01, 10, 30)])
    predicted = run_replay(
        trace, _one_slot(), LateBindingSPFScheduler(), predictor=_PromptPredictor()
    )
    oracle = run_replay(
        trace, _one_slot(), LateBindingSPFOracleScheduler(), predictor=_PromptPredictor()
    )
    fifo = run_replay(
        trace, _one_slot(), make_router("round-robin"), predictor=_PromptPredictor()
    ).requests
    p, o = predicted.requests, oracle.requests
    assert p["routed_s"].to_list() == pytest.approx([0.0, 0.14, 0.1])
    assert p["finish_s"].to_list() == pytest.approx([0.1, 0.161, 0.139])
    assert o["routed_s"].to_list() == pytest.approx([0.0, 0.1, 0.14])
    assert o["finish_s"].to_list() == pytest.approx([0.1, 0.121, 0.179])
    # routed at once to the local queue, FIFO: 1 (0.1 -> 0.121), then 2 (0.121 -> 0.16)
    assert fifo["routed_s"].to_list() == pytest.approx([0.0, 0.01, 0.01])
    assert fifo["finish_s"].to_list() == pytest.approx([0.1, 0.121, 0.16])
    assert p["router_wait_s"][2] == pytest.approx(0.09)


def test_late_binding_sends_to_the_free_instance_where_the_job_ends_first() -> None:
    slow = LinearLatencyModel.from_throughput(1000.0)
    fast = LinearLatencyModel.from_throughput(4000.0)
    cluster = ClusterConfig(
        instances=(
            InstanceConfig(name="slow", latency=slow, max_running_seqs=1),
            InstanceConfig(name="fast", latency=fast, max_running_seqs=1),
        )
    )
    s = LateBindingSPFScheduler()
    s.reset(cluster, np.random.default_rng(0))
    queue = (RequestView(0, 0.0, 400), RequestView(1, 0.0, 100))
    assert s.schedule(queue, make_cluster_state(2)) == (1, 1)  # shortest, to the fast one
    busy_fast = make_cluster_state(n_running=[0, 1], max_running_seqs=[1, 1])
    assert s.schedule(queue, busy_fast) == (1, 0)  # only the slow one is free
    assert s.schedule(queue, make_cluster_state(n_running=[1, 1], max_running_seqs=[1, 1])) == HOLD
    # job size: prefill + (d - 1) decode steps under the mean latency model
    # (mean of 1 ms and 0.25 ms per token or step = 0.625 ms): (100 + 10) * 0.625 ms
    size = s.size_s(RequestView(0, 0.0, 100, predicted_output_tokens=11.0))
    assert size == pytest.approx(110 * 0.000625, abs=1e-12)


def test_schedulers_are_registered_and_keep_the_contract() -> None:
    for name, oracle in (("late-binding-spf", False), ("late-binding-spf-oracle", True)):
        scheduler = make_router(name)
        assert is_scheduler(scheduler) and scheduler.oracle is oracle
        result = check_router(scheduler, n_instances=3, seed=4, n_decisions=40)
        assert len(result.queue_indices) == 40 and result.n_wait > 0
        assert any(k > 0 for k in result.queue_indices)  # it does overtake the head


def test_check_router_catches_a_bad_scheduler() -> None:
    class OutOfQueue(_LastFirstScheduler):
        name = "out-of-queue"

        def schedule(self, queue: tuple[RequestView, ...], state: ClusterState) -> tuple[int, int]:
            return len(queue), 0

    with pytest.raises(RouterError, match=re.escape("scheduler 'out-of-queue' returned queue")):
        check_router(OutOfQueue(), n_instances=2, n_decisions=5)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), which=st.sampled_from(["late-binding-spf", "last-first"]))
def test_schedulers_fast_equals_reference(
    case: tuple[pl.DataFrame, ClusterConfig], which: str
) -> None:
    trace, cluster = case

    def make() -> Any:
        return make_router(which) if which != "last-first" else _LastFirstScheduler()

    cfg = ReplayConfig(timeline_sample_interval_s=math.pi / 1000, mode="reference")
    ref = run_replay(trace, cluster, make(), config=cfg).requests
    fast = run_replay(trace, cluster, make(), config=dataclasses.replace(cfg, mode="fast")).requests
    assert ref["instance_id"].to_list() == fast["instance_id"].to_list()
    for col in TIME_COLUMNS:
        a, b = fast[col].to_numpy(), ref[col].to_numpy()
        assert np.array_equal(np.isnan(a), np.isnan(b)), col
        assert_allclose(a, b, rtol=1e-9, atol=1e-12, err_msg=col)
    assert ref["finish_s"].null_count() == 0


# --------------------------------------------------------------------- every driver


def test_schedulers_run_from_replay_episodes_the_cli_and_as_a_lookahead_base(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ep = _trace([(0.01 * k, 50 + 10 * k, 5 + k) for k in range(12)])
    out = replay_episodes([ep, ep], _one_slot(2), {"spf": lambda: make_router("late-binding-spf")})
    assert out.summaries["n_requests"].to_list() == [12.0, 12.0]
    assert out.summaries["e2e_s_mean"][0] == out.summaries["e2e_s_mean"][1]
    lookahead = LookaheadOracleRouter(base="late-binding-spf-oracle", horizon_s=0.05)
    res = run_replay(ep, _one_slot(2), lookahead)
    assert res.requests["finish_s"].null_count() == 0 and lookahead.n_rollouts > 0
    code = main(
        [
            "replay",
            "--trace",
            "azure-2023-conv",
            "--cluster",
            "a100x4",
            "--router",
            "round-robin,late-binding-spf",
            "--first-requests",
            "100",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ]
    )
    assert code == 0
    assert "\nlate-binding-spf " in capsys.readouterr().out
