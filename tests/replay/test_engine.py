"""Engine rules on hand-computed timelines, router-layer behaviour, errors, views."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import polars as pl
import polars.testing
import pytest
from fakes import (
    AlwaysZeroFake,
    BadIndexFake,
    RecordingFake,
    RoundRobinFake,
    WaitThenRouteFake,
)
from numpy.testing import assert_allclose
from routeplay.estimator._latency import LinearLatencyModel
from routeplay.estimator._protocols import LengthPrediction
from routeplay.replay._types import (
    ClusterConfig,
    ClusterState,
    InstanceConfig,
    OracleRequestView,
    RequestView,
    RouterError,
)
from routeplay.replay.engine._engine import Engine, _is_set, run_replay
from routeplay.replay.engine._result import ReplayConfig

# 1 ms per token, no intercept: a prefill of p tokens takes p ms, a decode iteration
# takes 1 ms per sequence in the batch.
MS_PER_TOKEN = LinearLatencyModel.from_throughput(1000.0)
CONFIG = ReplayConfig(timeline_sample_interval_s=None)


def _trace(rows: list[tuple[float, int, int]], **extra: list[object]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "request_id": list(range(len(rows))),
            "arrival_s": [r[0] for r in rows],
            "prompt_tokens": [r[1] for r in rows],
            "output_tokens": [r[2] for r in rows],
            **extra,
        }
    )


def _one(**options: object) -> ClusterConfig:
    opts = {"max_batched_tokens": 4096, "kv_capacity_tokens": 100_000, **options}
    return ClusterConfig(instances=(InstanceConfig(name="a", latency=MS_PER_TOKEN, **opts),))  # type: ignore[arg-type]


def _col(res: object, name: str) -> list[float]:
    return res.requests[name].to_list()  # type: ignore[attr-defined]


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_single_request_timeline(mode: str) -> None:
    # prefill 100 tokens: 0.100 s -> token 1; then two decode iterations of 1 ms each
    res = run_replay(
        _trace([(0.0, 100, 3)]),
        _one(),
        AlwaysZeroFake(),
        config=dataclasses.replace(CONFIG, mode=mode),
    )
    r = res.requests.row(0, named=True)
    assert r["first_token_s"] == pytest.approx(0.100)
    assert r["finish_s"] == pytest.approx(0.102)
    assert r["ttft_s"] == pytest.approx(0.100)
    assert r["tbt_mean_s"] == pytest.approx(0.001)
    assert r["tbt_max_s"] == pytest.approx(0.001)
    assert r["admitted_s"] == 0.0 and r["routed_s"] == 0.0 and r["instance_id"] == 0


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_two_requests_batched_together(mode: str) -> None:
    # A(p=100, n=3), B(p=50, n=2) at t=0: one prefill iteration of 150 tokens (0.150 s),
    # then a 2-sequence decode (0.002 s: B finishes at 0.152), then A alone (0.001 s).
    res = run_replay(
        _trace([(0.0, 100, 3), (0.0, 50, 2)]),
        _one(),
        AlwaysZeroFake(),
        config=dataclasses.replace(CONFIG, mode=mode),
    )
    assert_allclose(_col(res, "first_token_s"), [0.150, 0.150], rtol=1e-12)
    assert_allclose(_col(res, "finish_s"), [0.153, 0.152], rtol=1e-12)
    assert_allclose(_col(res, "tbt_max_s"), [0.002, 0.002], rtol=1e-9)
    assert_allclose(_col(res, "tbt_mean_s"), [0.0015, 0.002], rtol=1e-9)


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_one_sequence_at_a_time_queues(mode: str) -> None:
    # max_running_seqs=1: A(p=100, n=2) at 0 runs 0-0.101; B(p=100, n=1) at 0.05 waits.
    res = run_replay(
        _trace([(0.0, 100, 2), (0.05, 100, 1)]),
        _one(max_running_seqs=1),
        AlwaysZeroFake(),
        config=dataclasses.replace(CONFIG, mode=mode),
    )
    assert_allclose(_col(res, "finish_s"), [0.101, 0.201], rtol=1e-12)
    assert_allclose(_col(res, "admitted_s"), [0.0, 0.101], rtol=1e-12)
    assert_allclose(_col(res, "queue_wait_s"), [0.0, 0.051], rtol=1e-9)
    assert_allclose(_col(res, "ttft_s"), [0.100, 0.151], rtol=1e-9)
    assert res.requests["tbt_mean_s"][1] is None  # one output token: no TBT


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_preemption_timeline(mode: str) -> None:
    # KV 10 tokens, 1-token blocks. A, B (p=4, n=4) both admitted at 0 (each reserves
    # 4+1 KV). Prefill 8 tokens -> 0.008 s. Next batch would need 6+6 > 10: B (newest)
    # is preempted. A decodes alone at 0.009, 0.010, 0.011 (finishes). B is then
    # recomputed: prefill 4+1 = 5 tokens -> token 2 at 0.016, tokens 3, 4 at 0.017, 0.018.
    res = run_replay(
        _trace([(0.0, 4, 4), (0.0, 4, 4)]),
        _one(kv_capacity_tokens=10, kv_block_tokens=1, max_batched_tokens=64, max_running_seqs=8),
        AlwaysZeroFake(),
        config=dataclasses.replace(CONFIG, mode=mode),
    )
    assert_allclose(_col(res, "first_token_s"), [0.008, 0.008], rtol=1e-12)
    assert_allclose(_col(res, "finish_s"), [0.011, 0.018], rtol=1e-12)
    assert _col(res, "n_preemptions") == [0, 1]
    assert_allclose(_col(res, "tbt_max_s"), [0.001, 0.008], rtol=1e-9)
    assert _col(res, "admitted_s") == [0.0, 0.0]  # first admission counts
    assert res.summary["n_preemptions"] == 1.0


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_chunked_prefill_timeline(mode: str) -> None:
    # budget 64 tokens: chunks 64 then 36. With prefill_s_per_token2 = 1e-6 the attention
    # term is chunk * (chunk + already in KV): 64*64 then 36*(36+64).
    lat = dataclasses.replace(MS_PER_TOKEN, prefill_s_per_token2=1e-6)
    cluster = ClusterConfig(
        instances=(
            InstanceConfig(
                name="a",
                latency=lat,
                max_batched_tokens=64,
                max_running_seqs=8,
                chunked_prefill=True,
            ),
        )
    )
    res = run_replay(
        _trace([(0.0, 100, 2)]),
        cluster,
        AlwaysZeroFake(),
        config=dataclasses.replace(CONFIG, mode=mode),
    )
    t1 = 0.064 + 1e-6 * 64 * 64 + 0.036 + 1e-6 * 36 * 100
    assert_allclose(_col(res, "first_token_s"), [t1], rtol=1e-12)
    assert_allclose(_col(res, "finish_s"), [t1 + 0.001], rtol=1e-12)


def test_prefix_cache_removes_cached_blocks_from_prefill() -> None:
    # two requests share 2 leading 512-token blocks; the second prefills 1100 - 1024 tokens
    cluster = _one(prefix_cache=True, prefix_cache_blocks=8)
    trace = _trace([(0.0, 1100, 1), (5.0, 1100, 1)], prefix_blocks=[[1, 2, 3], [1, 2, 9]])
    res = run_replay(trace, cluster, AlwaysZeroFake(), config=CONFIG)
    assert_allclose(_col(res, "e2e_s"), [1.100, 0.076], rtol=1e-9)
    no_cache = run_replay(trace, _one(), AlwaysZeroFake(), config=CONFIG)
    assert_allclose(_col(no_cache, "e2e_s"), [1.100, 1.100], rtol=1e-9)


def test_wait_holds_until_next_tick_on_the_grid() -> None:
    # arrives at 0.005, WAITed once: offered again at the next 0.02 s grid point
    router = WaitThenRouteFake(n_waits=1)
    res = run_replay(_trace([(0.005, 10, 1)]), _one(), router, config=CONFIG)
    assert [(c[0], c[1]) for c in router.calls] == [(0, 0.005), (0, 0.02)]
    assert_allclose(_col(res, "router_wait_s"), [0.015], rtol=1e-9)


def test_wait_blocks_the_rest_of_the_queue_fifo() -> None:
    # A at 0 is WAITed; B's arrival at 0.001 re-offers A (routed) then B (WAITed); B goes
    # at the 0.02 tick. Nothing overtakes a waiting head.
    router = WaitThenRouteFake(n_waits=1)
    res = run_replay(_trace([(0.0, 10, 1), (0.001, 10, 1)]), _one(), router, config=CONFIG)
    assert [(c[0], c[1]) for c in router.calls] == [(0, 0.0), (0, 0.001), (1, 0.001), (1, 0.02)]
    assert _col(res, "routed_s") == [0.001, 0.02]


@pytest.mark.parametrize("value", [7, -2, 1.0, "0", True])
def test_bad_router_index_raises_router_error(value: object) -> None:
    with pytest.raises(
        RouterError,
        match=re.escape(
            f"router 'fake-bad-index' returned {value!r} for request 0; expected an instance "
            "index in range(0, 1) or WAIT (-1). Fix: return an int index of ClusterState's "
            "instances."
        ),
    ):
        run_replay(_trace([(0.0, 10, 1)]), _one(), BadIndexFake(value), config=CONFIG)


def test_prompt_over_budget_without_chunking_is_an_error() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "request 0 has prompt_tokens = 5000 > max_batched_tokens = 4096 of instance 0 ('a') "
            "without chunked prefill"
        ),
    ):
        run_replay(_trace([(0.0, 5000, 1)]), _one(), AlwaysZeroFake(), config=CONFIG)


def test_request_larger_than_kv_is_an_error() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "request 0 needs 112 KV tokens (prompt 90 + output 20, block-rounded) > "
            "kv_capacity_tokens = 100"
        ),
    ):
        run_replay(
            _trace([(0.0, 90, 20)]), _one(kv_capacity_tokens=100), AlwaysZeroFake(), config=CONFIG
        )


def test_router_that_waits_forever_hits_the_time_guard() -> None:
    router = WaitThenRouteFake(n_waits=10**9)
    cfg = dataclasses.replace(CONFIG, max_sim_time_s=1.0)
    with pytest.raises(RuntimeError, match=re.escape("replay passed max_sim_time_s = 1.0 s")):
        run_replay(_trace([(0.0, 10, 1)]), _one(), router, config=cfg)


def test_non_oracle_routers_never_see_output_lengths() -> None:
    trace = _trace([(0.0, 10, 7), (0.01, 20, 9)])
    plain = RecordingFake(oracle=False)
    run_replay(trace, _one(), plain, config=CONFIG)
    assert all(type(v) is RequestView for v in plain.views)
    assert not any(hasattr(v, "output_tokens") for v in plain.views)
    assert all(s.oracle_decode_tokens_left is None for s in plain.states)
    oracle = RecordingFake(oracle=True)
    run_replay(trace, _one(), oracle, config=CONFIG)
    assert all(isinstance(v, OracleRequestView) for v in oracle.views)
    assert [v.output_tokens for v in oracle.views] == [7, 9]  # type: ignore[attr-defined]
    # at 0.01 request 0 has produced token 1 of 7 -> 6 true tokens left
    assert oracle.states[1].oracle_decode_tokens_left.tolist() == [6]  # type: ignore[union-attr]


class _PromptPredictor:
    """Predicts bucket 1 (40 tokens) for prompts >= 15 tokens, else bucket 0 (5 tokens)."""

    n_buckets = 2
    bucket_edges_tokens = (1.0, 10.0, float("inf"))

    def predict(self, trace: pl.DataFrame) -> LengthPrediction:
        big = trace["prompt_tokens"].to_numpy() >= 15
        return LengthPrediction(
            bucket=big.astype(np.int64), expected_output_tokens=np.where(big, 40.0, 5.0)
        )


def test_predictions_fill_views_and_decode_buckets() -> None:
    trace = _trace([(0.0, 10, 7), (0.01, 20, 9)])
    router = RecordingFake()
    run_replay(trace, _one(), router, config=CONFIG, predictor=_PromptPredictor())
    assert [(v.predicted_bucket, v.predicted_output_tokens) for v in router.views] == [
        (0, 5.0),
        (1, 40.0),
    ]
    s = router.states[1]
    assert s.decode_bucket_counts.tolist() == [[1, 0]]
    # request 0 predicted 5 tokens, 1 generated -> 4 predicted left
    assert s.predicted_decode_tokens_left.tolist() == [4.0]
    bare = RecordingFake()
    run_replay(trace, _one(), bare, config=CONFIG)
    assert [(v.predicted_bucket, v.predicted_output_tokens) for v in bare.views] == [
        (None, None),
        (None, None),
    ]
    assert bare.states[1].decode_bucket_counts.tolist() == [[1]]
    assert bare.states[1].predicted_decode_tokens_left.tolist() == [0.0]


def test_state_fields_mid_run() -> None:
    # request 0 (p=10, n=100) at 0: prefill 0.010, then 1-seq decodes of 1 ms each.
    # at 0.0505 (request 1 arrives) 40 decode iterations have completed: 41 tokens.
    router = RecordingFake()
    run_replay(
        _trace([(0.0, 10, 100), (0.0505, 30, 1)]), _one(kv_block_tokens=16), router, config=CONFIG
    )
    s = router.states[1]
    assert s.now_s == 0.0505
    assert s.n_running.tolist() == [1] and s.n_queued.tolist() == [0]
    assert s.decode_tokens_done.tolist() == [41]
    assert s.tokens_in_system.tolist() == [51]
    assert s.kv_used_tokens.tolist() == [64]  # blocks(10 + 41) with 16-token blocks
    assert s.prompt_bucket_counts.sum() == 1
    assert not s.n_running.flags.writeable


def test_stale_state_lags_by_the_delay() -> None:
    trace = _trace([(0.0, 100, 500), (0.3, 10, 1), (0.7005, 10, 1)])
    fresh = RecordingFake()
    run_replay(trace, _one(), fresh, config=CONFIG)
    stale = RecordingFake()
    run_replay(trace, dataclasses.replace(_one(), state_delay_s=0.5), stale, config=CONFIG)
    # at 0.3 the fresh router sees request 0 running; the stale one sees the empty
    # cluster (t = -0.2)
    assert fresh.states[1].n_running.tolist() == [1]
    assert stale.states[1].n_running.tolist() == [0]
    assert stale.states[1].decode_tokens_done.tolist() == [0]
    # at 0.7005 the stale router sees t = 0.2005: token 1 at 0.100, then one per ms
    # (tokens 2..101 by 0.200) -> 101 tokens; the fresh one sees request 0 finished
    # (its 500th token came before 0.7) and nothing running.
    assert stale.states[2].now_s == pytest.approx(0.2005)
    assert stale.states[2].decode_tokens_done.tolist() == [101]
    assert fresh.states[2].n_running.tolist() == [0]


def test_engine_step_api() -> None:
    eng = Engine(_trace([(0.0, 10, 2), (0.0, 10, 1)]), _one(max_running_seqs=4), config=CONFIG)
    with pytest.raises(RuntimeError, match="without a pending decision"):
        eng.apply(0)
    first = eng.next_decision()
    again = eng.next_decision()
    assert first is not None and again is not None
    assert first[0] == again[0] and first[1] is again[1]
    eng.apply(0)
    second = eng.next_decision()
    assert second is not None and second[0].request_id == 1
    eng.apply(0)
    assert eng.next_decision() is None
    res = eng.result()
    assert res.requests["finish_s"].null_count() == 0


def test_determinism_same_seed_same_frames() -> None:
    rng = np.random.default_rng(np.random.SeedSequence(1))
    n = 300
    trace = pl.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": np.cumsum(rng.exponential(0.05, n)),
            "prompt_tokens": rng.integers(1, 500, n),
            "output_tokens": rng.integers(1, 200, n),
            "task": pl.Series(rng.choice(["chat", "code"], n)).cast(pl.Categorical),
        }
    )
    cluster = ClusterConfig(
        instances=tuple(
            InstanceConfig(name=f"i{k}", latency=MS_PER_TOKEN, kv_capacity_tokens=3000)
            for k in range(3)
        )
    )
    cfg = ReplayConfig(seed=4, timeline_sample_interval_s=0.5)
    a = run_replay(trace, cluster, RoundRobinFake(), config=cfg)
    b = run_replay(trace, cluster, RoundRobinFake(), config=cfg)
    polars.testing.assert_frame_equal(a.requests, b.requests)
    polars.testing.assert_frame_equal(a.timelines, b.timelines)
    assert a.summary == b.summary and a.seed == 4 and a.router_name == "fake-round-robin"
    assert a.requests.columns[4] == "task"
    assert a.requests.schema["instance_id"] == pl.UInt16
    assert a.to_frame() is a.requests


def test_replay_config_validation() -> None:
    with pytest.raises(
        ValueError, match=re.escape("ReplayConfig.prompt_bucket_edges_tokens = (0, 5, 5)")
    ):
        ReplayConfig(prompt_bucket_edges_tokens=(0, 5, 5))
    with pytest.raises(
        ValueError, match=re.escape("ReplayConfig.timeline_sample_interval_s = 0.0")
    ):
        ReplayConfig(timeline_sample_interval_s=0.0)


def _busy_trace(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    return pl.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.uint64) + 1000,
            "arrival_s": np.cumsum(rng.exponential(0.02, n)),
            "prompt_tokens": rng.integers(1, 40, n).astype(np.uint32),
            "output_tokens": rng.integers(1, 30, n).astype(np.uint32),
            "task": pl.Series(rng.choice(["a", "b"], n).tolist(), dtype=pl.Categorical),
            "session_id": [f"s{k % 7}" for k in range(n)],
            "prefix_blocks": [list(range(k % 3)) for k in range(n)],
        }
    )


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_records_exist_only_in_flight_and_blocks_do_not_change_results(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = _busy_trace(300, seed=4)
    cluster = ClusterConfig(
        instances=tuple(
            InstanceConfig(
                name=f"i{k}",
                latency=MS_PER_TOKEN,
                max_batched_tokens=64,
                kv_capacity_tokens=120,
                kv_block_tokens=4,
                max_running_seqs=8,
                prefix_cache=True,
                prefix_block_tokens=4,
                prefix_cache_blocks=2,
            )
            for k in range(2)
        )
    )
    config = dataclasses.replace(CONFIG, mode=mode)
    reference = run_replay(trace, cluster, RoundRobinFake(), config=config)
    assert reference.requests["n_preemptions"].sum() > 0  # the case with preemption state
    monkeypatch.setattr("routeplay.replay.engine._engine._BLOCK", 7)  # many block boundaries
    router = RecordingFake(oracle=True)
    eng = Engine(trace, cluster, config=config, oracle=True)
    router.reset(cluster, eng.router_rng())
    peak = 0
    k = 0
    while (d := eng.next_decision()) is not None:
        unfinished = np.isnan(eng.finish_s) & (eng.arrival <= eng.now_s)
        assert set(eng._live) == set(np.flatnonzero(unfinished).tolist())
        peak = max(peak, len(eng._live))
        router.route(*d)
        eng.apply(k % 2)
        k += 1
    res = eng.result()
    assert eng._live == {} and eng._last_token == {}  # everything freed at finish
    assert peak < trace.height // 4
    assert [v.request_id for v in router.views] == list(range(1000, 1300))
    assert [v.session_id for v in router.views[:8]] == [f"s{k % 7}" for k in range(8)]
    assert router.views[5].prefix_blocks == (0, 1)
    assert router.views[0].task == trace["task"].cast(pl.String)[0]
    polars.testing.assert_frame_equal(res.requests, reference.requests)


# --- bounded work (nothing unbounded from a bad router or a bad setting) ---------------


@pytest.mark.parametrize("mode", ["fast", "reference"])
def test_a_router_that_waits_while_the_cluster_is_idle_is_stopped(mode: str) -> None:
    # An always-WAIT router used to tick on until max_sim_time_s (4-5 minutes of wall time
    # with the default bound; forever with max_sim_time_s = inf, now refused).
    # WAIT 40,000 times: the first request arrives at t = 1 and is the only one; after
    # 2 s of idle waiting (ticks every 0.02 s) the replay stops.
    config = dataclasses.replace(CONFIG, mode=mode, max_idle_wait_s=2.0)
    router = WaitThenRouteFake(n_waits=40_000)
    with pytest.raises(
        RuntimeError,
        match=re.escape(
            "router 'fake-wait-then-route' kept 1 request(s) waiting at the router for 2.02 s "
            "of simulated time (since t = 1 s) while every instance was idle"
        ),
    ):
        run_replay(_trace([(1.0, 10, 2)]), _one(), router, config=config)
    assert 100 < len(router.calls) < 110  # stopped after ~2 s of 0.02 s ticks


def test_waiting_while_an_instance_is_busy_is_not_idle_waiting() -> None:
    # request 0 keeps the instance busy for 10 s (4,000 prefill tokens at 1 ms/token, then
    # 6,000 decode iterations of 1 ms); request 1 waits 300 ticks (6 s) at the router
    # meanwhile: allowed, since work is running, even with a 1 s idle-wait bound
    config = dataclasses.replace(CONFIG, max_idle_wait_s=1.0)

    class WaitForSecond(WaitThenRouteFake):
        def route(self, request: RequestView, state: object) -> int:
            if request.request_id == 0:
                return 0
            return super().route(request, state)  # type: ignore[arg-type]

    res = run_replay(
        _trace([(0.0, 4_000, 6_001), (0.5, 10, 1)]),
        _one(),
        WaitForSecond(n_waits=300),
        config=config,
    )
    assert res.requests["routed_s"].to_list()[1] == pytest.approx(0.5 + 300 * 0.02, abs=0.021)


def test_timelines_start_at_the_first_arrival() -> None:
    # epoch-second arrivals: sampled from t = 0 this was ~1.7e9 samples (~55 MB/s growth)
    t0 = 1.7e9
    res = run_replay(
        _trace([(t0, 10, 2), (t0 + 2.0, 10, 2)]),
        _one(),
        AlwaysZeroFake(),
        config=ReplayConfig(timeline_sample_interval_s=1.0),
    )
    # the second request finishes at t0 + 2.012 s, so the sample at t0 + 3 is the last
    assert res.timelines["time_s"].to_list() == [t0, t0 + 1.0, t0 + 2.0, t0 + 3.0]


def test_a_timeline_that_would_not_fit_is_refused_before_the_replay() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "timeline_sample_interval_s = 1e-09 over a trace spanning 10 s needs more than "
            "2,000,000 samples per instance (ReplayConfig.max_timeline_samples)"
        ),
    ):
        run_replay(
            _trace([(0.0, 10, 2), (10.0, 10, 2)]),
            _one(),
            AlwaysZeroFake(),
            config=ReplayConfig(timeline_sample_interval_s=1e-9),
        )


def test_a_timeline_that_reaches_its_cap_during_the_drain_stops_the_replay() -> None:
    # one request of 100 ms; sampled every 1 ms with a cap of 50 samples
    config = ReplayConfig(timeline_sample_interval_s=0.001, max_timeline_samples=50)
    with pytest.raises(
        RuntimeError,
        match=re.escape("the timeline reached ReplayConfig.max_timeline_samples = 50 samples"),
    ):
        run_replay(_trace([(0.0, 100, 1)]), _one(), AlwaysZeroFake(), config=config)


@pytest.mark.parametrize("mode", ["fast", "reference"])
@pytest.mark.parametrize("policy", ["least-connections", "late-binding-spf", "fake-wait"])
def test_progress_bar_replays_bit_for_bit(
    mode: str, policy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # show_progress runs the replay in 200 slices (Engine.run_until); nothing may change
    from routeplay.replay import make_cluster, make_router

    rng = np.random.default_rng(5)
    n = 300
    trace = _trace(
        [
            (float(t), int(p), int(o))
            for t, p, o in zip(
                np.sort(rng.uniform(0, 20, n)),
                rng.integers(10, 2000, n),
                rng.integers(1, 300, n),
                strict=True,
            )
        ]
    )
    cluster = make_cluster("v100x2")

    def make() -> object:
        return WaitThenRouteFake(n_waits=2) if policy == "fake-wait" else make_router(policy)

    config = ReplayConfig(mode=mode, timeline_sample_interval_s=0.5)
    plain = run_replay(trace, cluster, make(), config=config)  # type: ignore[arg-type]
    shown = run_replay(trace, cluster, make(), config=config, show_progress=True)  # type: ignore[arg-type]
    polars.testing.assert_frame_equal(plain.requests, shown.requests)
    polars.testing.assert_frame_equal(plain.timelines, shown.timelines)
    assert plain.summary == shown.summary
    err = capsys.readouterr().err
    assert re.search(r"replay \S+: 100%\|.*\| 300/300 \[", err), err[-500:]


def test_pairwise_sum_matches_numpy_bit_for_bit() -> None:
    # the state's predicted tokens left are summed in Python exactly as numpy sums a
    # contiguous float64 array (pinned figures depend on the last bit)
    from routeplay.replay.engine._instance import pairwise_sum

    rng = np.random.default_rng(7)
    for trial in range(20_000):
        n = int(rng.integers(0, 400))
        kind = trial % 3
        if kind == 0:
            x = rng.random(n) * 10.0 ** rng.integers(-3, 6, n)
        elif kind == 1:
            x = np.maximum(rng.normal(100, 300, n), 0.0)
        else:
            x = rng.integers(0, 2000, n) + rng.random(n)
        lo = int(rng.integers(0, 3))
        values = [0.5] * lo + x.tolist()
        assert pairwise_sum(values, lo, n).hex() == float(x.sum()).hex(), (trial, n)


def _lazy_trace(n: int = 60) -> pl.DataFrame:
    rng = np.random.default_rng(3)
    return pl.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": np.cumsum(rng.exponential(0.05, n)),
            "prompt_tokens": rng.integers(10, 500, n),
            "output_tokens": rng.integers(1, 200, n),
        }
    )


def test_a_kept_state_shows_its_decision_moment_after_the_engine_moved_on() -> None:
    from routeplay.replay import make_uniform_cluster

    eng = Engine(_lazy_trace(), make_uniform_cluster(2))
    kept = []
    while (decision := eng.next_decision()) is not None:
        eager = eng.state()  # computed now, eagerly
        kept.append((decision[1], eager))
        decision = None
        eng.apply(len(kept) % 2)
    assert len(kept) == 60
    for lazy, eager in kept:  # read only now, long after each decision
        for name in (
            "now_s",
            "n_queued",
            "n_running",
            "kv_used_tokens",
            "tokens_in_system",
            "earliest_completion_s",
            "decode_bucket_counts",
            "n_completed",
        ):
            assert np.array_equal(getattr(lazy, name), getattr(eager, name)), name


def test_predicted_tokens_left_of_a_kept_state_are_its_decision_moments() -> None:
    # with a predictor a lazy state sums the predicted tokens left only when they are
    # read, or before the engine changes if the state is still held
    from routeplay.replay import make_uniform_cluster

    eng = Engine(_lazy_trace(), make_uniform_cluster(2), predictor=_PromptPredictor())
    kept = []
    while (decision := eng.next_decision()) is not None:
        state = decision[1]
        eager = eng.state()
        if len(kept) % 3 == 0:
            assert np.array_equal(state.n_running, eager.n_running)  # the rest computed
        elif len(kept) % 3 == 1:  # read before the engine moves on
            assert (
                state.predicted_decode_tokens_left.tobytes()
                == eager.predicted_decode_tokens_left.tobytes()
            )
        kept.append((state, eager))
        decision = state = None
        eng.apply(len(kept) % 2)
    assert len(kept) == 60
    assert any(float(e.predicted_decode_tokens_left.sum()) > 0 for _, e in kept)
    for lazy, eager in kept:  # read only now, long after each decision
        for name in ("predicted_decode_tokens_left", "earliest_completion_s", "n_running"):
            assert getattr(lazy, name).tobytes() == getattr(eager, name).tobytes(), name
            assert not getattr(lazy, name).flags.writeable


def test_a_state_nobody_reads_is_never_computed(monkeypatch: pytest.MonkeyPatch) -> None:
    from routeplay.replay import make_router, make_uniform_cluster, run_replay

    calls: list[float] = []
    lists: list[float] = []
    real = Engine._state_values  # every state's arrays are computed here
    real_columns = Engine._state_columns  # and its columns of Python numbers here

    def counting(self: Engine, t: float, defer_pred: bool = False) -> object:
        calls.append(t)
        return real(self, t, defer_pred)

    def counting_columns(self: Engine, t: float) -> object:
        lists.append(t)
        return real_columns(self, t)

    monkeypatch.setattr(Engine, "_state_values", counting)
    monkeypatch.setattr(Engine, "_state_columns", counting_columns)
    config = ReplayConfig(timeline_sample_interval_s=None)
    run_replay(_lazy_trace(), make_uniform_cluster(2), make_router("round-robin"), config=config)
    assert calls == [] and lists == []  # round robin never looks at the state
    run_replay(_lazy_trace(), make_uniform_cluster(2), make_router("min-min"), config=config)
    # min-min reads the columns at every decision and never needs the arrays
    assert len(lists) == 60 and calls == []
    run_replay(_lazy_trace(), make_uniform_cluster(2), make_router("jsq-tokens"), config=config)
    assert len(lists) == 120 and calls == []  # jsq-tokens without a predictor: columns too

    class ReadsAnArray(RecordingFake):
        def route(self, request: RequestView, state: ClusterState) -> int:
            return int(np.argmin(state.n_running))

    run_replay(_lazy_trace(), make_uniform_cluster(2), ReadsAnArray(), config=config)
    assert len(calls) == 60  # a router that reads an array gets them at every decision


def test_copies_and_pickles_of_a_pending_state_carry_its_values() -> None:
    import copy
    import pickle

    from routeplay.replay import make_uniform_cluster

    eng = Engine(_lazy_trace(), make_uniform_cluster(2))
    eng.next_decision()
    eng.apply(0)
    _, state = eng.next_decision()  # nothing computed yet
    eager = eng.state()
    for other in (copy.copy(state), copy.deepcopy(state), pickle.loads(pickle.dumps(state))):
        assert other.n_instances == 2
        assert np.array_equal(other.tokens_in_system, eager.tokens_in_system)
        assert other.now_s == eager.now_s


def _random_trace(
    *, seed: int, n: int, span_s: float, max_prompt: int, max_output: int
) -> pl.DataFrame:
    """``n`` requests arriving uniformly over ``span_s`` with uniform lengths."""
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": np.sort(rng.random(n) * span_s),
            "prompt_tokens": rng.integers(1, max_prompt, n),
            "output_tokens": rng.integers(1, max_output, n),
        }
    )


@pytest.mark.parametrize("chunked", [False, True])
def test_lazy_decoders_keep_the_numbers_an_eager_update_would(chunked: bool) -> None:
    # vllm-v1 decoders store token counts minus the instance tick (replay/engine/
    # _instance.py, the comment at _EV/_FT): at every decision, with preemptions and
    # partial prefills, the actual counts rebuilt from them must match every aggregate
    # the instance keeps, and the residue counts the direct KV sums
    from routeplay.replay.engine._instance import _CTX, _FT, _GEN, _OUT, _PLEFT, _blocks_after

    trace = _random_trace(seed=3, n=400, span_s=4.0, max_prompt=700, max_output=1200)
    lat = LinearLatencyModel.from_throughput(20_000.0)
    inst = InstanceConfig(
        name="small-kv",
        latency=lat,
        kv_capacity_tokens=5_000,
        max_batched_tokens=768,
        chunked_prefill=chunked,
    )
    eng = Engine(trace, ClusterConfig(instances=(inst, inst)))
    preempted = 0
    k = 0
    while eng.next_decision() is not None:
        for ins in eng.inst:
            assert ins.lazy
            slots = ins.slots
            d = len(slots) - ins.n_prefilling
            gens = [sl[_GEN] + ins.tick for sl in slots[:d]] + [sl[_GEN] for sl in slots[d:]]
            ctxs = [sl[_CTX] + ins.tick for sl in slots[:d]] + [sl[_CTX] for sl in slots[d:]]
            assert ins.gen_sum == sum(gens) and ins.ctx_sum == sum(ctxs)
            assert all(sl[_PLEFT] == 0 for sl in slots[:d])
            assert all(sl[_PLEFT] > 0 for sl in slots[d:])
            assert all(sl[_FT] == sl[_OUT] - sl[_GEN] for sl in slots[:d])
            assert all(g < sl[_OUT] for g, sl in zip(gens, slots, strict=True))
            if ins.busy and ins.run_k > 1:
                continue  # in the middle of a decode run the stored numbers lag by design
            decoders = [[0, c] for c in ctxs[:d]]
            for j in range(4):
                assert ins.dec_blocks_after(j) == _blocks_after(decoders, j, ins.block)
            assert ins.kv_now() == _blocks_after([[0, c] for c in ctxs], 0, ins.block)
        preempted = int(eng.n_preempt.sum())
        eng.apply(k % 2)
        k += 1
    assert preempted > 0  # the scenario does exercise preemption


def test_a_pending_state_gives_its_columns_without_its_arrays() -> None:
    # StateColumns of a state the engine hands out come from the instances' numbers
    # directly; they must equal .tolist() of the arrays, types included, before and
    # after the arrays exist, and are computed once
    from routeplay.replay import make_uniform_cluster

    eng = Engine(_lazy_trace(), make_uniform_cluster(2), predictor=_PromptPredictor())
    n = 0
    while (decision := eng.next_decision()) is not None:
        state = decision[1]
        early = state.columns()
        assert not _is_set(state, "now_s")  # the arrays were not built for it
        assert state.columns() is early
        late = ClusterState.columns(eng.state())
        assert early == late and all(type(v) is tuple for v in early[1:])
        assert [[type(x) for x in v] for v in early[1:]] == [[type(x) for x in v] for v in late[1:]]
        assert state.n_running.tolist() == list(late.n_running)  # now computed: the same
        decision = state = None
        eng.apply(n % 2)
        n += 1
    assert n == 60


def test_min_min_on_a_pending_state_equals_the_numpy_estimate_on_full_instances() -> None:
    # min-min's scalar estimate reads a pending state's columns and, only for an
    # instance whose slots are all taken, its earliest completion (computed then, at
    # the decision's moment); every estimate must equal the numpy formula on the
    # state computed directly, bit for bit, also while instances are full
    from routeplay.replay.routers._common import ClusterLatency
    from routeplay.replay.routers._paper import completion_s_list, estimate_completion_s

    lat = LinearLatencyModel.from_throughput(3_000.0)
    inst = InstanceConfig(name="tight", latency=lat, max_running_seqs=3)
    cluster = ClusterConfig(instances=(inst, inst))
    model = ClusterLatency.from_cluster(cluster)
    rows = model.instances()
    eng = Engine(_lazy_trace(200), cluster, predictor=_PromptPredictor())
    full = 0
    while (decision := eng.next_decision()) is not None:
        request, state = decision
        eager = eng.state()
        out = float(request.predicted_output_tokens or 0.0)
        got = completion_s_list(rows, state, request.prompt_tokens, out)
        want = estimate_completion_s(model, eager, request.prompt_tokens, out)
        assert np.array(got).tobytes() == want.tobytes()
        full += bool(np.any(eager.n_running + eager.n_queued >= eager.max_running_seqs))
        decision = state = None
        eng.apply(got.index(min(got)))
    assert full > 20  # the slot-wait branch ran
