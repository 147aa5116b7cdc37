"""Reference policies (issue 11): min-total-latency, min-min-oracle, lookahead-oracle, pooled."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from routeplay.estimator._latency import LinearLatencyModel
from routeplay.replay import (
    ClusterConfig,
    InstanceConfig,
    LookaheadOracleRouter,
    MinMinOracleRouter,
    MinMinRouter,
    MinTotalLatencyRouter,
    OracleRequestView,
    RequestView,
    check_router,
    load_cluster,
    make_cluster,
    make_cluster_state,
    make_router,
    pooled_cluster,
    run_replay,
)
from routeplay.replay.routers._check import make_uniform_cluster

SLOW = LinearLatencyModel.from_throughput(1000.0)
FAST = LinearLatencyModel.from_throughput(4000.0)
HETERO = ClusterConfig(
    instances=(InstanceConfig(name="slow", latency=SLOW), InstanceConfig(name="fast", latency=FAST))
)


def _reset(router: object, cluster: ClusterConfig) -> None:
    router.reset(cluster, np.random.default_rng(0))  # type: ignore[attr-defined]


# ------------------------------------------------------------------ min-total-latency


def test_min_total_latency_counts_the_delay_imposed_on_the_others() -> None:
    # 1 ms per token. Request p=100, d=11 (10 decode iterations after the prefill).
    # instance 0: 10 running. own: prefill 0.1 + 10 decodes 0.01 = 0.11, then 10 x
    #   11 seqs x 1 ms = 0.11 -> 0.22; imposed: 10 x 0.1 (its prefill) + 1 ms x
    #   min(10 x 10, 1000 tokens left) = 1.1 -> 1.32.
    # instance 1: 1 queued with 300 prompt tokens. own: backlog 0.3 + prefill 0.1 +
    #   10 x 1 ms = 0.41; imposed: 1 x 0.1 + 1 ms x min(1 x 10, 50) = 0.11 -> 0.52.
    s = make_cluster_state(
        n_running=[10, 0],
        n_queued=[0, 1],
        prefill_tokens_pending=[0, 300],
        predicted_decode_tokens_left=[1000.0, 50.0],
    )
    request = RequestView(0, 0.0, 100, predicted_output_tokens=11.0)
    r = MinTotalLatencyRouter()
    _reset(r, make_uniform_cluster(2))
    assert r.scores_s(request, s).tolist() == pytest.approx([1.32, 0.52])
    assert r.route(request, s) == 1
    mm = MinMinRouter()
    _reset(mm, make_uniform_cluster(2))
    assert mm.route(request, s) == 0
    zero = MinTotalLatencyRouter(weight=0.0)
    _reset(zero, make_uniform_cluster(2))
    assert zero.scores_s(request, s).tolist() == pytest.approx([0.22, 0.41])
    # never reads the true length: an oracle view with another length changes nothing
    view = OracleRequestView(0, 0.0, 100, predicted_output_tokens=11.0, output_tokens=5000)
    assert r.scores_s(view, s).tolist() == r.scores_s(request, s).tolist()


def test_min_total_latency_with_weight_zero_is_min_min() -> None:
    a = check_router(MinTotalLatencyRouter(weight=0.0), n_instances=5, seed=4, n_decisions=80)
    b = check_router(MinMinRouter(), n_instances=5, seed=4, n_decisions=80)
    assert a.choices == b.choices


def test_min_total_latency_refuses_a_negative_weight() -> None:
    with pytest.raises(ValueError, match=re.escape("weight = -1.0; expected a finite number >= 0")):
        make_router("min-total-latency", weight=-1.0)


# ------------------------------------------------------------------ min-min-oracle


def test_min_min_oracle_uses_the_true_length() -> None:
    # slow idle (1 ms/token) vs fast (0.25 ms/token) with 40 running sequences.
    # true d=2: slow 0.1 + 0.001 = 0.101; fast prefill 0.025 + 0.01 + 1 decode of 41
    #   seqs 0.01025 = 0.04525 -> fast. predicted 500: slow 0.599, fast ~5.15 -> slow.
    s = make_cluster_state(n_running=[0, 40])
    view = OracleRequestView(0, 0.0, 100, predicted_output_tokens=500.0, output_tokens=2)
    r = MinMinOracleRouter()
    _reset(r, HETERO)
    mm = MinMinRouter()
    _reset(mm, HETERO)
    assert (r.route(view, s), mm.route(view, s)) == (1, 0)
    with pytest.raises(TypeError, match="needs an OracleRequestView"):
        r.route(RequestView(0, 0.0, 100, predicted_output_tokens=500.0), s)
    # with a perfect prediction it is min-min
    exact = OracleRequestView(0, 0.0, 100, predicted_output_tokens=2.0, output_tokens=2)
    assert r.route(exact, s) == mm.route(exact, s) == 1


# ------------------------------------------------------------------ lookahead-oracle

TWO = pl.DataFrame(
    {
        "request_id": [0, 1],
        "arrival_s": [0.0, 0.001],
        "prompt_tokens": [100, 100],
        "output_tokens": [1, 1],
    }
)


class _Spy(LookaheadOracleRouter):
    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.seen: list[tuple[tuple[int, ...], tuple[float, ...]]] = []

    def route(self, request: RequestView, state: object) -> int:
        action = super().route(request, state)  # type: ignore[arg-type]
        self.seen.append((self.last_actions, self.last_costs_s))
        return action


def test_lookahead_rollout_costs_by_hand() -> None:
    # slow: 1 ms/token, fast: 0.25 ms/token; two 100-token prompts, 1 output token each.
    # decision 0 (t = 0, request 1 arrives at 0.001 within the horizon, min-min routes it):
    #   slow: 0.1 + request 1 on the idle fast 0.025                        = 0.125
    #   fast: 0.025 + request 1 behind it on fast (0.05 - 0.001)            = 0.074
    #   WAIT: at 0.001 min-min routes both to fast, one 200-token prefill:
    #         0.051 + 0.050                                                 = 0.101
    # decision 1 (t = 0.001, request 0 on fast): slow 0.025 + 0.1 = 0.125, fast 0.074,
    #   WAIT (routed at the 0.02 tick, still behind request 0 on fast)        = 0.074
    r = _Spy()
    res = run_replay(TWO, HETERO, r)
    assert res.requests["instance_id"].to_list() == [1, 1]
    assert [a for a, _ in r.seen] == [(0, 1, -1), (0, 1, -1)]
    assert r.seen[0][1] == pytest.approx((0.125, 0.074, 0.101))
    assert r.seen[1][1] == pytest.approx((0.125, 0.074, 0.074))  # tie: the instance wins
    assert (r.n_decisions, r.n_rollouts, r.n_policy_calls) == (2, 6, 5)
    assert r.cost()["wall_time_s"] == r.wall_time_s > 0.0
    no_wait = _Spy(include_wait=False)
    run_replay(TWO, HETERO, no_wait)
    assert [a for a, _ in no_wait.seen] == [(0, 1), (0, 1)]


def test_lookahead_is_deterministic_and_at_least_as_good_as_min_min_here() -> None:
    rng = np.random.default_rng(np.random.SeedSequence(5))
    n = 40
    trace = pl.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": np.cumsum(rng.exponential(0.05, n)),
            "prompt_tokens": rng.integers(10, 400, n),
            "output_tokens": rng.integers(1, 200, n),
        }
    )
    cluster = dataclasses.replace(
        HETERO,
        instances=tuple(dataclasses.replace(i, max_running_seqs=4) for i in HETERO.instances),
    )
    a = run_replay(trace, cluster, make_router("lookahead-oracle"))
    b = run_replay(trace, cluster, make_router("lookahead-oracle"))
    assert_frame_equal(a.requests, b.requests, check_exact=True)
    mm = run_replay(trace, cluster, make_router("min-min"))
    assert a.oracle and not mm.oracle
    assert a.summary["e2e_s_mean"] <= mm.summary["e2e_s_mean"]


def test_lookahead_needs_a_bound_engine_and_a_plain_base() -> None:
    r = LookaheadOracleRouter()
    _reset(r, HETERO)
    view = OracleRequestView(0, 0.0, 100, output_tokens=3)
    with pytest.raises(RuntimeError, match=re.escape("no engine is bound. Fix: replay it")):
        r.route(view, make_cluster_state(2))
    with pytest.raises(TypeError, match="needs an OracleRequestView"):
        r.route(RequestView(0, 0.0, 100), make_cluster_state(2))
    with pytest.raises(ValueError, match=re.escape("needs the engine itself")):
        LookaheadOracleRouter(base=LookaheadOracleRouter())
    with pytest.raises(ValueError, match=re.escape("horizon_s = -0.1; expected a finite")):
        make_router("lookahead-oracle", horizon_s=-0.1)
    assert make_router("lookahead-oracle", base="round-robin").base.name == "round-robin"


# ------------------------------------------------------------------ pooled cluster


def test_pooled_cluster_sums_the_capacity() -> None:
    four = make_uniform_cluster(4)  # 4 x 1,000 tokens/s -> one 4,000 tokens/s instance
    pooled = pooled_cluster(four)
    (inst,) = pooled.instances
    assert inst.max_running_seqs == 4 * 256 and inst.kv_capacity_tokens == 4 * 200_000
    assert inst.max_batched_tokens == 4 * 8192
    assert inst.latency.prefill_s_per_token == pytest.approx(0.25e-3)
    assert inst.latency.decode_s_per_seq == pytest.approx(0.25e-3)
    trace = pl.DataFrame(
        {"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [100], "output_tokens": [5]}
    )
    res = run_replay(trace, pooled, make_router("round-robin"))
    # prefill 100 tokens = 0.025 s, then 4 decode iterations of 0.25 ms
    assert res.requests["finish_s"].to_list() == pytest.approx([0.026])
    assert load_cluster("pooled:paper-4xv100") == pooled_cluster(make_cluster("paper-4xv100"))


def test_pooled_cluster_refuses_unlike_instances() -> None:
    mixed = ClusterConfig(
        instances=(
            InstanceConfig(name="a", latency=SLOW),
            InstanceConfig(name="b", latency=SLOW, batching="least-work-left"),
        )
    )
    with pytest.raises(ValueError, match=re.escape("different batching values")):
        pooled_cluster(mixed)
