"""Routers: the shared contract on every registered router, then hand-computed behaviour."""

from __future__ import annotations

import re
import zlib
from typing import Any

import numpy as np
import pytest
from routeplay.estimator._impact import ImpactConfig, estimate_impact
from routeplay.estimator._latency import LinearLatencyModel
from routeplay.replay import (
    ROUTERS,
    WAIT,
    ClusterConfig,
    ClusterState,
    DecodeBalancerOracleRouter,
    DecodeBalancerRouter,
    DedicatedSmallLargeRouter,
    DynamoKVRouter,
    ImpactGreedyRouter,
    InstanceConfig,
    LLMDWeightedScorerRouter,
    MaxCapacityRouter,
    MinMinRouter,
    OracleRequestView,
    PowerOfTwoRouter,
    RequestView,
    RouterError,
    SessionAffinityRouter,
    SGLangCacheAwareRouter,
    WeightedRoundRobinRouter,
    check_router,
    list_routers,
    make_cluster_state,
    make_router,
)
from routeplay.replay.routers._common import ClusterLatency, PrefixBlockIndex
from routeplay.replay.routers._paper import estimate_completion_s
from routeplay.replay.routers._production import AIBrixLeastLatencyRouter

LAT = LinearLatencyModel.from_throughput(1000.0)


def _cluster(n: int = 3, **kw: Any) -> ClusterConfig:
    return ClusterConfig(
        instances=tuple(InstanceConfig(name=f"i{k}", latency=LAT, **kw) for k in range(n))
    )


def _ready(router: Any, n: int = 3, seed: int = 0, **kw: Any) -> Any:
    router.reset(_cluster(n, **kw), np.random.default_rng(np.random.SeedSequence(seed)))
    return router


def _req(k: int = 0, prompt: int = 100, **kw: Any) -> RequestView:
    return RequestView(request_id=k, arrival_s=0.0, prompt_tokens=prompt, **kw)


# --------------------------------------------------------------------------- contract


@pytest.mark.parametrize("name", list_routers())
def test_every_registered_router_keeps_the_contract(name: str) -> None:
    result = check_router(make_router(name), n_instances=4, seed=0, n_decisions=150)
    assert result.router_name == name
    assert result.oracle is ROUTERS[name].oracle
    assert len(result.choices) == 150
    assert all(c == WAIT or 0 <= c < 4 for c in result.choices)


@pytest.mark.parametrize("name", list_routers())
def test_every_router_on_an_odd_cluster_and_another_seed(name: str) -> None:
    result = check_router(make_router(name), n_instances=7, seed=11, n_decisions=60)
    assert result.n_decisions == 60
    assert result.to_frame()["n_decisions"].sum() == 60


def test_registry_names_match_classes_and_flags() -> None:
    assert list_routers() == list(ROUTERS)
    assert len(ROUTERS) == 24
    for key, spec in ROUTERS.items():
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", key)
        assert spec.router_class.name == key
        assert spec.oracle is spec.router_class.oracle
        assert spec.description and "\n" not in spec.description
        assert spec.router_class.__doc__ and "Source:" in spec.router_class.__doc__
    assert [k for k, s in ROUTERS.items() if s.oracle] == [
        "decode-balancer-oracle",
        "min-min-oracle",
        "lookahead-oracle",
        "late-binding-spf-oracle",
    ]
    assert "decode-balancer-oracle" not in list_routers(include_oracle=False)


def test_make_router_unknown_name_hints_the_closest() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "unknown router 'least-conections'. Did you mean 'least-connections'? "
            "Valid routers: ['round-robin',"
        ),
    ):
        make_router("least-conections")


def test_make_router_unknown_parameter_lists_the_valid_ones() -> None:
    msg = (
        "router 'max-capacity' got unknown parameter(s) ['mdoe']; expected some of "
        "['mode', 'default_output_tokens']. Did you mean 'mode'?"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        make_router("max-capacity", mdoe="best-fit")
    with pytest.raises(ValueError, match=re.escape("expected no parameters")):
        make_router("round-robin", weights=(1, 2))


def test_bad_parameter_values_are_refused_with_the_value() -> None:
    with pytest.raises(
        ValueError, match=re.escape("weights[1] = -2; expected a finite number > 0")
    ):
        make_router("weighted-round-robin", weights=(1, -2))
    with pytest.raises(
        ValueError, match=re.escape("mode = 'fullest'; expected one of ['most-free', 'best-fit']")
    ):
        make_router("max-capacity", mode="fullest")
    with pytest.raises(
        ValueError, match=re.escape("cache_threshold = 1.5; expected a match rate in [0, 1]")
    ):
        make_router("sglang-cache-aware", cache_threshold=1.5)
    with pytest.raises(
        ValueError, match=re.escape("small_fraction = 1.0; expected a share in (0, 1)")
    ):
        make_router("dedicated-small-large", small_fraction=1.0)
    wrr = WeightedRoundRobinRouter(weights=(1, 2))
    with pytest.raises(
        ValueError, match=re.escape("got 2 weights [1, 2] for a cluster of 3 instances")
    ):
        _ready(wrr, 3)


def test_route_before_reset_is_a_clear_error() -> None:
    with pytest.raises(
        RuntimeError, match=re.escape("route() was called before reset(cluster, rng)")
    ):
        make_router("least-connections").route(_req(), make_cluster_state(2))


# ------------------------------------------------------------------ the checker itself


class _Fake:
    name = "fake"
    oracle = False

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.k = 0

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        self.k = 0

    def route(self, request: RequestView, state: ClusterState) -> Any:
        self.k += 1
        if self.rule == "out-of-range":
            return state.n_instances if self.k == 3 else 0
        if self.rule == "global-random":
            return int(np.random.randint(state.n_instances))
        if self.rule == "mutate":
            state.n_queued[0] = 99
        if self.rule == "float":
            return 0.0
        if self.rule == "no-reset":
            return self.k % 2 if request.request_id == 0 or self.k < 3 else 0
        return 0


def test_check_router_catches_an_index_out_of_range() -> None:
    with pytest.raises(
        RouterError,
        match=re.escape(
            "router 'fake' returned 4 at step 2 for request 2; expected an index in "
            "range(4) or WAIT (-1)."
        ),
    ):
        check_router(_Fake("out-of-range"))


def test_check_router_catches_global_randomness() -> None:
    with pytest.raises(RouterError, match=re.escape("router 'fake' is not deterministic")):
        check_router(_Fake("global-random"))


def test_check_router_catches_state_mutation_and_non_int_choices() -> None:
    with pytest.raises(RouterError, match=re.escape("router 'fake' raised ValueError at step 0")):
        check_router(_Fake("mutate"))
    with pytest.raises(RouterError, match=re.escape("returned 0.0 (float) at step 0")):
        check_router(_Fake("float"))


def test_check_router_requires_name_and_oracle_attributes() -> None:
    fake = _Fake("ok")
    fake.name = ""
    with pytest.raises(
        RouterError, match=re.escape("_Fake has name = ''; expected a non-empty str")
    ):
        check_router(fake)
    fake = _Fake("ok")
    fake.oracle = "no"  # type: ignore[assignment]
    with pytest.raises(RouterError, match=re.escape("has oracle = 'no'; expected a bool")):
        check_router(fake)


def test_check_router_requires_oracle_routers_to_refuse_plain_views() -> None:
    fake = _Fake("ok")
    fake.oracle = True
    with pytest.raises(
        RouterError, match=re.escape("has oracle=True but routed a plain RequestView")
    ):
        check_router(fake)


def test_make_cluster_state_validates_and_is_read_only() -> None:
    s = make_cluster_state(n_running=[1, 2])
    assert not s.n_running.flags.writeable and s.oracle_decode_tokens_left is None
    assert s.kv_capacity_tokens.tolist() == [100_000, 100_000]
    with pytest.raises(ValueError, match=re.escape("unknown field(s) ['n_runing']")):
        make_cluster_state(n_runing=[1])
    with pytest.raises(
        ValueError, match=re.escape("arrays {'n_queued': 3} do not match n_instances=2")
    ):
        make_cluster_state(n_running=[1, 2], n_queued=[0, 0, 0])


# ------------------------------------------------------------------ basic routers


def test_round_robin_cycles_and_restarts_on_reset() -> None:
    r = _ready(make_router("round-robin"), 3)
    s = make_cluster_state(3)
    assert [r.route(_req(k), s) for k in range(5)] == [0, 1, 2, 0, 1]
    _ready(r, 3)
    assert r.route(_req(), s) == 0


def test_weighted_round_robin_is_smooth_and_defaults_to_capacity() -> None:
    r = _ready(WeightedRoundRobinRouter(weights=(5, 1, 1)), 3)
    s = make_cluster_state(3)
    # nginx's documented sequence for weights 5,1,1: a a b a c a a
    assert [r.route(_req(k), s) for k in range(7)] == [0, 0, 1, 0, 2, 0, 0]
    slots_3_5_7 = ClusterConfig(
        instances=tuple(
            InstanceConfig(name=f"s{c}", latency=LAT, max_running_seqs=c) for c in (3, 5, 7)
        )
    )
    r = WeightedRoundRobinRouter()
    r.reset(slots_3_5_7, np.random.default_rng(0))
    picks = [r.route(_req(k), s) for k in range(15)]
    assert [picks.count(i) for i in range(3)] == [3, 5, 7]


def test_random_uses_only_the_reset_generator() -> None:
    s = make_cluster_state(4)
    r = make_router("random")
    before = np.random.get_state()[1].copy()
    a = [_ready(r, 4, seed=5).route(_req(0), s)] + [r.route(_req(k), s) for k in range(1, 60)]
    b = [_ready(r, 4, seed=5).route(_req(0), s)] + [r.route(_req(k), s) for k in range(1, 60)]
    c = [_ready(r, 4, seed=6).route(_req(0), s)] + [r.route(_req(k), s) for k in range(1, 60)]
    expected = np.random.default_rng(np.random.SeedSequence(5)).integers(4, size=60)
    assert a == b == [int(x) for x in expected]
    assert a != c and set(a) == {0, 1, 2, 3}
    assert np.array_equal(np.random.get_state()[1], before)


def test_least_connections_picks_argmin_with_ties_to_lowest_index() -> None:
    r = _ready(make_router("least-connections"), 4)
    s = make_cluster_state(n_queued=[1, 0, 2, 0], n_running=[1, 3, 0, 2])
    assert r.route(_req(), s) == 0  # 2, 3, 2, 2 -> first of the 2s
    s = make_cluster_state(n_queued=[5, 0, 2, 0], n_running=[1, 3, 0, 1])
    assert r.route(_req(), s) == 3


def test_jsq_tokens_counts_pending_prefill_plus_predicted_decode() -> None:
    r = _ready(make_router("jsq-tokens"), 3)
    s = make_cluster_state(
        prefill_tokens_pending=[100, 0, 50],
        predicted_decode_tokens_left=[0.0, 120.0, 60.0],
        n_running=[9, 0, 0],
    )
    assert r.route(_req(predicted_output_tokens=50.0), s) == 0  # 100 < 110 < 120


def test_token_routers_fall_back_to_counts_without_a_predictor() -> None:
    # a replay without a predictor reports 0 predicted tokens everywhere; the routers must
    # not collapse onto instance 0 but count default_output_tokens per outstanding request
    s = make_cluster_state(
        prefill_tokens_pending=[0, 0, 0],
        predicted_decode_tokens_left=[0.0, 0.0, 0.0],
        n_queued=[1, 0, 0],
        n_running=[2, 1, 3],
    )
    for name in ("jsq-tokens", "least-work-left", "decode-balancer"):
        assert _ready(make_router(name), 3).route(_req(), s) == 1, name


def test_least_loaded_normalises_by_concurrency() -> None:
    r = _ready(make_router("least-loaded"), 3)
    s = make_cluster_state(n_running=[2, 3, 4], n_queued=[0, 1, 0], max_running_seqs=[3, 5, 7])
    assert r.route(_req(), s) == 2  # 0.667, 0.8, 0.571


def test_least_work_left_reads_predictions_only() -> None:
    r = _ready(make_router("least-work-left"), 3)
    s = make_cluster_state(
        predicted_decode_tokens_left=[300.0, 100.0, 200.0],
        oracle_decode_tokens_left=[0, 999, 999],
    )
    assert r.route(_req(predicted_output_tokens=10.0), s) == 1


def test_power_of_two_picks_the_lighter_of_its_two_draws() -> None:
    m = 5
    load = np.array([4, 0, 3, 1, 2])
    s = make_cluster_state(n_running=load)
    r = _ready(PowerOfTwoRouter(), m, seed=3)
    got = [r.route(_req(k), s) for k in range(40)]
    twin = np.random.default_rng(np.random.SeedSequence(3))
    expected = []
    for _ in range(40):
        a, b = (int(x) for x in twin.choice(m, size=2, replace=False))
        expected.append(b if load[b] < load[a] else a)
    assert got == expected
    assert 0 not in got  # the most loaded instance never wins a pair
    r2 = _ready(PowerOfTwoRouter(), 2, seed=9)
    assert {r2.route(_req(k), make_cluster_state(n_running=[3, 1])) for k in range(20)} == {1}


def test_max_capacity_most_free_and_best_fit() -> None:
    s = make_cluster_state(
        kv_used_tokens=[90_000, 50_000, 10_000],
        n_running=[10, 10, 250],
        kv_capacity_tokens=[100_000, 100_000, 100_000],
        max_running_seqs=[256, 256, 256],
    )
    # free shares: min(0.10, 0.96)=0.10, min(0.50, 0.96)=0.50, min(0.90, 0.023)=0.023
    assert _ready(MaxCapacityRouter(), 3).route(_req(), s) == 1
    best_fit = _ready(MaxCapacityRouter(mode="best-fit"), 3)
    # needs 1000 + 500 tokens and a slot: all three fit; the least capacity left wins
    assert best_fit.route(_req(prompt=1000, predicted_output_tokens=500.0), s) == 2
    # needs 20_000: only instances 1 (50k free) and 2 (90k free) have KV; 2 has slots too
    assert best_fit.route(_req(prompt=19_000, predicted_output_tokens=1000.0), s) == 2
    # nothing fits 200k tokens -> fall back to most free
    assert best_fit.route(_req(prompt=150_000, predicted_output_tokens=50_000.0), s) == 1


# ------------------------------------------------------------------ paper routers


def test_decode_balancer_oracle_needs_the_oracle_view() -> None:
    r = _ready(DecodeBalancerOracleRouter(), 3)
    s = make_cluster_state(oracle_decode_tokens_left=[500, 100, 300], max_running_seqs=[4, 1, 4])
    # (500+20)/4 = 130, (100+20)/1 = 120, (300+20)/4 = 80
    assert r.route(OracleRequestView(0, 0.0, 10, output_tokens=20), s) == 2
    msg = (
        "router 'decode-balancer-oracle' is an oracle router (oracle=True) and needs an "
        "OracleRequestView carrying the true output length; got RequestView for request 7."
    )
    with pytest.raises(TypeError, match=re.escape(msg)):
        r.route(_req(7), s)
    with pytest.raises(
        TypeError, match=re.escape("got a ClusterState without oracle_decode_tokens_left")
    ):
        r.route(OracleRequestView(0, 0.0, 10, output_tokens=20), make_cluster_state(3))


def test_decode_balancer_predicted_works_on_a_plain_request_view() -> None:
    view = _req(prompt=10, predicted_output_tokens=20.0)
    assert not hasattr(view, "output_tokens")  # a slots dataclass: reading it would raise
    r = _ready(DecodeBalancerRouter(), 3)
    s = make_cluster_state(
        predicted_decode_tokens_left=[500.0, 100.0, 300.0],
        max_running_seqs=[4, 1, 4],
        oracle_decode_tokens_left=None,
    )
    assert r.route(view, s) == 2  # 130, 120, 80
    # without a prediction (no predictor in the replay) each outstanding request and the
    # new one count the default 128 tokens: (0+128)/4, (0+128)/1, (0+128)/4 -> 0
    assert r.route(_req(prompt=10), s) == 0
    two = make_cluster_state(predicted_decode_tokens_left=[0.0, 90.0], max_running_seqs=[1, 4])
    pred = _req(predicted_output_tokens=128.0)
    assert _ready(DecodeBalancerRouter(), 2).route(pred, two) == 1  # 128 vs 54.5
    pred10 = _req(predicted_output_tokens=10.0)
    assert _ready(DecodeBalancerRouter(), 2).route(pred10, two) == 0  # 10 vs 25


def test_dedicated_small_large_split_and_rule() -> None:
    r = _ready(DedicatedSmallLargeRouter(), 4)
    s = make_cluster_state(n_running=[3, 1, 5, 2])
    assert r.route(_req(prompt=30, predicted_output_tokens=20.0), s) == 1  # LL -> {0,1}
    assert r.route(_req(prompt=30, predicted_output_tokens=143.0), s) == 3  # LH -> {2,3}
    assert r.route(_req(prompt=40, predicted_output_tokens=1.0), s) == 3  # HL
    assert r.route(_req(prompt=39), s) == 1  # no prediction: prompt alone, light
    quarter = _ready(DedicatedSmallLargeRouter(small_fraction=0.25), 4)
    assert quarter.route(_req(prompt=10, predicted_output_tokens=1.0), s) == 0
    assert quarter.route(_req(prompt=5000), s) == 1
    assert (
        _ready(DedicatedSmallLargeRouter(small_fraction=0.9), 2).route(
            _req(prompt=5000), make_cluster_state(2)
        )
        == 1
    )
    assert (
        _ready(DedicatedSmallLargeRouter(), 1).route(_req(prompt=5000), make_cluster_state(1)) == 0
    )


def test_completion_estimate_matches_the_latency_model_on_an_idle_instance() -> None:
    model = LinearLatencyModel(
        intercept_s=0.004,
        prefill_s_per_token=2e-4,
        prefill_s_per_token2=1e-8,
        decode_s_per_seq=3e-4,
        decode_s_per_context_token=2e-7,
        prefill_batch_s=0.002,
    )
    cluster = ClusterConfig(instances=(InstanceConfig(name="a", latency=model),))
    est = estimate_completion_s(
        ClusterLatency.from_cluster(cluster), make_cluster_state(1, now_s=2.0), 700, 90
    )
    assert est.tolist() == pytest.approx([2.0 + float(model.request_time_s(700, 90))], rel=1e-12)


def test_min_min_hand_computed() -> None:
    slow = LinearLatencyModel.from_throughput(1000.0)
    fast = LinearLatencyModel.from_throughput(4000.0)
    cluster = ClusterConfig(
        instances=(
            InstanceConfig(name="slow", latency=slow, max_running_seqs=8),
            InstanceConfig(name="fast", latency=fast, max_running_seqs=8),
        )
    )
    r = MinMinRouter()
    r.reset(cluster, np.random.default_rng(0))
    s = make_cluster_state(n_running=[0, 3], max_running_seqs=[8, 8], now_s=1.0)
    # slow idle: 200/1000 + 49 * 1/1000 = 0.249 s; fast: (200+3)/4000 + 49 * 4/4000 = 0.09975 s
    assert r.route(_req(prompt=200, predicted_output_tokens=50.0), s) == 1
    est = estimate_completion_s(ClusterLatency.from_cluster(cluster), s, 200, 50)
    assert est.tolist() == pytest.approx([1.249, 1.09975], rel=1e-12)
    # the fast instance is full: its request waits until the earliest completion (t=3)
    s_full = make_cluster_state(
        n_running=[0, 8], max_running_seqs=[8, 8], now_s=1.0, earliest_completion_s=[1.0, 3.0]
    )
    assert r.route(_req(prompt=200, predicted_output_tokens=50.0), s_full) == 0


def test_impact_greedy_follows_the_estimator() -> None:
    r = _ready(ImpactGreedyRouter(), 3)
    s = make_cluster_state(tokens_in_system=[5000, 0, 1200])
    assert r.route(_req(prompt=20, predicted_output_tokens=100.0), s) == 1
    rng = np.random.default_rng(1)
    for k in range(30):
        tis = rng.integers(0, 20_000, size=3)
        p, d = int(rng.integers(1, 3000)), float(rng.uniform(1, 500))
        best = estimate_impact(p, d, tis, ImpactConfig()).best_instance
        assert (
            r.route(
                _req(k, prompt=p, predicted_output_tokens=d),
                make_cluster_state(tokens_in_system=tis),
            )
            == best
        )
    hetero = _ready(ImpactGreedyRouter(relative_cost=(1.0, 0.01, 1.0)), 3)
    # instance 1 is 100x cheaper: it wins even though it holds the most tokens
    assert (
        hetero.route(
            _req(prompt=20, predicted_output_tokens=100.0),
            make_cluster_state(tokens_in_system=[20_000, 30_000, 20_000]),
        )
        == 1
    )


# ------------------------------------------------------------------ production routers


def test_prefix_index_matches_leading_blocks_and_evicts_lru() -> None:
    idx = PrefixBlockIndex(n_instances=3, capacity_blocks=[3, 3, 1])
    idx.insert(0, [1, 2, 3])
    idx.insert(1, [1, 2])
    idx.insert(2, [1])
    assert idx.match([1, 2, 3, 4]).tolist() == [3, 2, 1]
    assert idx.match([2, 3]).tolist() == [2, 1, 0]  # block keys are chained prefix hashes
    assert idx.match([9, 1]).tolist() == [0, 0, 0]  # a match stops at the first miss
    idx.insert(0, [1, 9])  # 1 refreshed, 9 added, LRU victim is 2
    assert idx.match([1, 2, 3]).tolist() == [1, 2, 1]
    idx.insert(2, [7])  # capacity 1: block 1 leaves instance 2
    assert idx.match([1]).tolist() == [1, 1, 0] and idx.size_blocks().tolist() == [3, 2, 1]


def test_llmd_scores_are_normalised_and_weighted() -> None:
    r = _ready(LLMDWeightedScorerRouter(), 3)
    s = make_cluster_state(n_queued=[4, 0, 2], kv_used_tokens=[0, 50_000, 100_000])
    # queue: (4-q)/4 = 0, 1, 0.5; kv: 1, 0.5, 0; no prefix blocks -> 0
    assert r.scores(_req(), s).tolist() == pytest.approx([2.0, 3.0, 1.0])
    same = make_cluster_state(n_queued=[3, 3, 3])
    assert r.scores(_req(), same).tolist() == pytest.approx([4.0, 4.0, 4.0])  # all queues 1.0


def test_llmd_prefers_the_instance_that_saw_the_prefix() -> None:
    r = _ready(LLMDWeightedScorerRouter(), 3)
    blocks = (11, 12, 13, 14)
    first = r.route(
        _req(0, prompt=2048, prefix_blocks=blocks), make_cluster_state(n_queued=[1, 1, 0])
    )
    assert first == 2
    # now instance 2 has a longer queue (score 0) but the full prefix (3 x 1.0)
    s = make_cluster_state(n_queued=[0, 0, 1])
    assert r.scores(_req(1, prompt=2048, prefix_blocks=blocks), s).tolist() == pytest.approx(
        [4.0, 4.0, 5.0]
    )
    assert r.route(_req(1, prompt=2048, prefix_blocks=blocks), s) == 2
    # half the prefix matched: 3 * 0.5 = 1.5 < 2 from the queue scorer
    assert r.route(_req(2, prompt=2048, prefix_blocks=(11, 12, 99, 98)), s) == 0


def test_sglang_thresholds_and_cache_preference() -> None:
    r = _ready(SGLangCacheAwareRouter(), 2)
    blocks = (5, 6)
    calm = make_cluster_state(n_running=[0, 0])
    assert r.route(_req(0, prompt=1024, prefix_blocks=blocks), calm) == 0  # empty trees tie
    assert r.route(_req(1, prompt=1024, prefix_blocks=(8,)), calm) == 1  # smallest tree
    assert (
        r.route(_req(2, prompt=1024, prefix_blocks=blocks), make_cluster_state(n_running=[50, 0]))
        == 0
    )
    # 200 - 130 = 70 > 64 and 200 > 1.5 * 130 = 195: imbalanced -> least loaded
    assert (
        r.route(
            _req(3, prompt=1024, prefix_blocks=blocks), make_cluster_state(n_running=[200, 130])
        )
        == 1
    )
    # 200 - 140 = 60 <= 64: balanced -> cache (instance 0 holds the prefix)
    assert (
        r.route(
            _req(4, prompt=1024, prefix_blocks=blocks), make_cluster_state(n_running=[200, 140])
        )
        == 0
    )
    # a match of 512 / 4096 tokens = 0.125 <= 0.3 -> smallest tree (instance 1 has 2 < 3 blocks)
    r2 = _ready(SGLangCacheAwareRouter(), 2)
    r2.route(_req(0, prompt=2048, prefix_blocks=(1, 2, 3)), calm)
    assert r2.route(_req(1, prompt=4096, prefix_blocks=(1, 20, 21, 22, 23, 24, 25, 26)), calm) == 1


def test_dynamo_cost_and_prefix_overlap() -> None:
    r = _ready(DynamoKVRouter(), 2, kv_block_tokens=16, prefix_block_tokens=64)
    req = _req(0, prompt=640, prefix_blocks=tuple(range(10)))
    s = make_cluster_state(kv_used_tokens=[160, 0], prefill_tokens_pending=[0, 320])
    # prefill (0+640)/16 = 40 | (320+640)/16 = 60 ; decode 10+40 | 0+40
    assert r.costs(req, s).tolist() == [90.0, 100.0]
    assert r.route(req, s) == 0
    assert r.costs(req, s).tolist() == [50.0, 100.0]  # 640 cached tokens on instance 0
    no_overlap = _ready(DynamoKVRouter(overlap_score_weight=0.0), 2, kv_block_tokens=16)
    assert no_overlap.costs(req, s).tolist() == [50.0, 40.0]
    hot = _ready(DynamoKVRouter(temperature=1.0), 2, seed=4)
    a = [hot.route(_req(k, prompt=640), s) for k in range(30)]
    _ready(hot, 2, seed=4)
    assert a == [hot.route(_req(k, prompt=640), s) for k in range(30)] and set(a) == {0, 1}


def test_aibrix_least_latency_uses_a_typical_request() -> None:
    r = _ready(AIBrixLeastLatencyRouter(), 2)
    s = make_cluster_state(
        n_running=[4, 0], kv_used_tokens=[0, 0], prefill_tokens_pending=[0, 600], n_queued=[0, 1]
    )
    # typical request (100 prompt, 20 output) at 1000 tok/s:
    # inst 0: prefill (100 + 4)/1000 + decode 20 * 5/1000 = 0.204
    # inst 1: backlog 600/1000 + prefill 100/1000 + decode 20 * 1/1000 = 0.72
    assert r.expected_latency_s(s, 100.0, 20.0).tolist() == pytest.approx([0.204, 0.72])
    assert r.route(_req(0, prompt=100, predicted_output_tokens=20.0), s) == 0
    # the typical size is a running mean: a huge request does not change the choice alone
    r2 = _ready(AIBrixLeastLatencyRouter(), 2)
    assert r2.route(_req(0, prompt=10), make_cluster_state(2)) == 0


def test_session_affinity_is_sticky_and_hash_mode_is_stable() -> None:
    r = _ready(SessionAffinityRouter(), 3)
    assert r.route(_req(0, session_id="u1"), make_cluster_state(n_running=[2, 0, 1])) == 1
    assert r.route(_req(1, session_id="u2"), make_cluster_state(n_running=[2, 1, 0])) == 2
    assert r.route(_req(2, session_id="u1"), make_cluster_state(n_running=[0, 9, 0])) == 1
    assert r.route(_req(3), make_cluster_state(n_running=[0, 9, 0])) == 0  # no session: fallback
    _ready(r, 3)
    assert (
        r.route(_req(4, session_id="u1"), make_cluster_state(n_running=[0, 9, 0])) == 0
    )  # forgotten
    small = _ready(SessionAffinityRouter(max_sessions=1), 3)
    small.route(_req(0, session_id="a"), make_cluster_state(n_running=[0, 1, 1]))
    small.route(_req(1, session_id="b"), make_cluster_state(n_running=[1, 0, 1]))
    assert small.route(_req(2, session_id="a"), make_cluster_state(n_running=[1, 1, 0])) == 2
    hashed = [_ready(SessionAffinityRouter(mode="hash"), 5, seed=k) for k in range(2)]
    for sid in ("alice", "bob", "carol", "dave"):
        expected = zlib.crc32(sid.encode("utf-8")) % 5
        assert {h.route(_req(0, session_id=sid), make_cluster_state(5)) for h in hashed} == {
            expected
        }
    rr = _ready(SessionAffinityRouter(fallback="round-robin"), 3)
    assert [rr.route(_req(k, session_id=f"s{k}"), make_cluster_state(3)) for k in range(4)] == [
        0,
        1,
        2,
        0,
    ]
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the others ['bogus'] go to the fallback router 'least-connections', which refused them"
        ),
    ):
        SessionAffinityRouter(bogus=1)
    with pytest.raises(
        ValueError, match=re.escape("fallback = 'decode-balancer-oracle' is an oracle router")
    ):
        SessionAffinityRouter(fallback="decode-balancer-oracle")


# ------------------------------------------------------------------ through the engine


def _trace(n: int = 80, seed: int = 0) -> Any:
    import polars as pl

    rng = np.random.default_rng(seed)
    families = rng.integers(0, 4, size=n)
    return pl.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.uint64),
            "arrival_s": np.cumsum(rng.exponential(0.02, size=n)),
            "prompt_tokens": rng.integers(16, 1500, size=n).astype(np.uint32),
            "output_tokens": rng.integers(1, 200, size=n).astype(np.uint32),
            "session_id": [f"s{int(x)}" for x in rng.integers(0, 10, size=n)],
            "prefix_blocks": [[int(100 * f + k) for k in range(3)] for f in families],
        },
        schema={
            "request_id": pl.UInt64,
            "arrival_s": pl.Float64,
            "prompt_tokens": pl.UInt32,
            "output_tokens": pl.UInt32,
            "session_id": pl.String,
            "prefix_blocks": pl.List(pl.UInt64),
        },
    )


@pytest.mark.parametrize("name", list_routers())
def test_every_router_drives_a_short_replay(name: str) -> None:
    from polars.testing import assert_frame_equal
    from routeplay.replay.engine._engine import run_replay

    cluster = ClusterConfig(
        instances=tuple(
            InstanceConfig(
                name=f"i{k}",
                latency=LinearLatencyModel.from_throughput(4000.0 * (k + 1)),
                max_running_seqs=8,
                kv_capacity_tokens=40_000,
                prefix_block_tokens=256,
            )
            for k in range(3)
        )
    )
    trace = _trace()
    first = run_replay(trace, cluster, make_router(name))
    again = run_replay(trace, cluster, make_router(name))
    assert first.requests.height == trace.height
    assert set(first.requests["instance_id"].to_list()) <= {0, 1, 2}
    assert_frame_equal(first.requests, again.requests)


def test_session_affinity_keeps_each_session_on_one_instance_in_a_replay() -> None:
    import polars as pl
    from routeplay.replay.engine._engine import run_replay

    trace = _trace(120, seed=3)
    result = run_replay(trace, _cluster(4, max_running_seqs=8), make_router("session-affinity"))
    per_session = (
        result.requests.select("request_id", "instance_id")
        .join(trace.select("request_id", "session_id"), on="request_id")
        .group_by("session_id")
        .agg(pl.col("instance_id").n_unique().alias("n_instances"))
    )
    assert per_session.height == 10
    assert per_session["n_instances"].to_list() == [1] * 10


# ------------------------------------------------------ scalar fast paths = numpy formulas
#
# The routers score the 2-8 instances of a cluster in plain Python (cheaper than dozens of
# numpy operations on tiny arrays). Their choices must stay exactly those of the numpy
# formulas below (the routers' documented definitions), ties and floating-point rounding
# included, so the formulas are kept here and compared on random states built to tie.


def _random_cluster(rng: np.random.Generator, m: int) -> ClusterConfig:
    instances = []
    for k in range(m):
        intercept = float(rng.choice([0.0, rng.uniform(0.001, 0.03)]))
        model = LinearLatencyModel(
            intercept_s=intercept,
            prefill_s_per_token=float(rng.uniform(1e-5, 3e-4)),
            prefill_s_per_token2=float(rng.choice([0.0, rng.uniform(0.0, 2e-8)])),
            decode_s_per_seq=float(rng.uniform(0.0, 1e-3)),
            decode_s_per_context_token=float(rng.choice([0.0, rng.uniform(0.0, 1e-6)])),
            prefill_batch_s=float(rng.uniform(-intercept, 0.005)),  # negative as in presets
        )
        instances.append(
            InstanceConfig(
                name=f"i{k}",
                latency=model,
                max_running_seqs=int(rng.integers(1, 9)),
                kv_block_tokens=int(rng.choice([1, 16, 32])),
                prefix_block_tokens=int(rng.choice([16, 64])),
            )
        )
    return ClusterConfig(instances=tuple(instances))


def _random_state(rng: np.random.Generator, cluster: ClusterConfig, now_s: float) -> ClusterState:
    m = cluster.n_instances

    def small(hi: int) -> Any:
        return rng.integers(0, hi, size=m)

    def mixed(tied: list[float], hi: float) -> Any:  # values that tie, and values that round
        return np.where(rng.random(m) < 0.5, rng.choice(tied, size=m), rng.uniform(0, hi, m))

    return make_cluster_state(
        now_s=now_s,
        n_running=small(6),
        n_queued=small(8),
        max_running_seqs=[inst.max_running_seqs for inst in cluster.instances],
        prefill_tokens_pending=mixed([0, 0, 512], 9000).astype(np.int64),
        predicted_decode_tokens_left=mixed([0.0, 120.5, 300.0], 3000.0),
        kv_used_tokens=mixed([0, 800, 20_000], 120_000).astype(np.int64),
        kv_capacity_tokens=rng.choice([1, 30_000, 117_000], size=m),
        earliest_completion_s=now_s + mixed([-0.5, 0.0, 0.2], 3.0),
        oracle_decode_tokens_left=small(400),
        tokens_in_system=small(5000),
    )


def _random_request(rng: np.random.Generator, k: int) -> OracleRequestView:
    options = [None, float(rng.integers(1, 400)), float(rng.uniform(0.5, 700.0))]
    pred = options[int(rng.integers(0, 3))]
    blocks = tuple(int(b) for b in rng.integers(0, 6, size=int(rng.integers(0, 5))))
    return OracleRequestView(
        k,
        0.0,
        int(rng.choice([1, 40, int(rng.integers(1, 6000))])),
        prefix_blocks=blocks,
        predicted_output_tokens=pred,
        output_tokens=int(rng.integers(1, 500)),
    )


def _ref_aibrix(
    lat: ClusterLatency, state: ClusterState, p: float, d: float
) -> np.ndarray[Any, np.dtype[np.float64]]:
    n_run = state.n_running.astype(np.float64)
    ctx = state.kv_used_tokens.astype(np.float64)
    full = (state.n_running + state.n_queued) >= state.max_running_seqs
    slot_wait = np.where(full, np.maximum(state.earliest_completion_s - state.now_s, 0.0), 0.0)
    pending = state.prefill_tokens_pending.astype(np.float64)
    n_q = np.maximum(state.n_queued, 1).astype(np.float64)
    backlog = np.where(pending > 0, lat.iteration_s(pending, pending**2 / n_q, n_run, ctx), 0.0)
    pa = np.full_like(n_run, p)
    prefill = lat.iteration_s(pa, pa * pa, n_run, ctx)
    decode = d * lat.decode_iteration_s(n_run + 1.0, ctx + pa)
    out: np.ndarray[Any, np.dtype[np.float64]] = slot_wait + backlog + prefill + decode
    return out


def _ref_llmd(r: Any, request: RequestView, state: ClusterState) -> Any:
    q = state.n_queued.astype(np.float64)
    spread = q.max() - q.min()
    queue = np.ones_like(q) if spread == 0 else (q.max() - q) / spread
    kv = 1.0 - state.kv_used_tokens / np.maximum(state.kv_capacity_tokens, 1)
    keys = r._keys(request)
    prefix = r._index.match(keys) / len(keys) if request.prefix_blocks else np.zeros_like(q)
    return r.queue_weight * queue + r.kv_weight * kv + r.prefix_weight * prefix


def _ref_matched(r: Any, request: RequestView, cluster: ClusterConfig) -> Any:
    blocks = np.array([inst.prefix_block_tokens for inst in cluster.instances], dtype=np.int64)
    matched = r._index.match(r._keys(request))
    if not request.prefix_blocks:
        return np.zeros(matched.shape, dtype=np.float64)
    return np.minimum(matched * blocks, request.prompt_tokens).astype(np.float64)


def _ref_dynamo(r: Any, request: RequestView, state: ClusterState, cl: ClusterConfig) -> Any:
    p = float(request.prompt_tokens)
    block = np.array([inst.kv_block_tokens for inst in cl.instances], dtype=np.float64)
    prefill_blocks = (state.prefill_tokens_pending + p - _ref_matched(r, request, cl)) / block
    decode_blocks = np.ceil(state.kv_used_tokens / block) + np.ceil(p / block)
    return r.overlap_score_weight * prefill_blocks + decode_blocks


def _ref_choice(
    name: str, r: Any, request: OracleRequestView, state: ClusterState, cl: ClusterConfig
) -> Any:
    """What router ``name`` chooses by its numpy formula (before ``r`` routes ``request``)."""
    lat = ClusterLatency.from_cluster(cl)
    pred = request.predicted_output_tokens
    slots = np.maximum(state.max_running_seqs, 1)
    load = state.n_queued + state.n_running
    from routeplay.replay.routers._basic import outstanding_tokens
    from routeplay.replay.routers._common import decode_tokens_left
    from routeplay.replay.routers._reference import imposed_delay_s

    if name in ("min-min", "min-total-latency"):
        out = r.default_output_tokens if pred is None else float(pred)
        own = estimate_completion_s(lat, state, request.prompt_tokens, out) - state.now_s
        if name == "min-total-latency":
            left = decode_tokens_left(state, request, r.default_output_tokens)
            own = own + r.weight * imposed_delay_s(lat, state, request.prompt_tokens, out, left)
            assert r.scores_s(request, state).tobytes() == own.tobytes()
        return int(np.argmin(own))
    if name == "min-min-oracle":
        est = estimate_completion_s(lat, state, request.prompt_tokens, float(request.output_tokens))
        return int(np.argmin(est))
    if name == "aibrix-least-latency":
        n_seen = r._n_seen + 1
        sum_p = r._sum_prompt + request.prompt_tokens
        n_pred = r._n_pred + (pred is not None)
        sum_d = r._sum_output + (float(pred) if pred is not None else 0.0)
        typical_d = sum_d / n_pred if n_pred else 100.0
        est = _ref_aibrix(lat, state, sum_p / n_seen, typical_d)
        assert r.expected_latency_s(state, sum_p / n_seen, typical_d).tobytes() == est.tobytes()
        return int(np.argmin(est))
    if name == "least-connections":
        return int(np.argmin(load))
    if name == "least-loaded":
        return int(np.argmin(load / slots))
    if name == "jsq-tokens":
        return int(np.argmin(outstanding_tokens(state, request, r.default_output_tokens)))
    if name == "least-work-left":
        return int(np.argmin(decode_tokens_left(state, request, r.default_output_tokens)))
    if name == "decode-balancer":
        add = r.default_output_tokens if pred is None else float(pred)
        return int(np.argmin((decode_tokens_left(state, request, 128.0) + add) / slots))
    if name == "decode-balancer-oracle":
        assert state.oracle_decode_tokens_left is not None
        return int(np.argmin((state.oracle_decode_tokens_left + request.output_tokens) / slots))
    if name == "dedicated-small-large":
        n_small = r._n_small
        if cl.n_instances == 1:
            return 0
        if r.is_large(request):
            return n_small + int(np.argmin(load[n_small:]))
        return int(np.argmin(load[:n_small]))
    if name == "max-capacity":
        kv_cap = np.maximum(state.kv_capacity_tokens, 1).astype(np.float64)
        free_kv = kv_cap - state.kv_used_tokens - state.prefill_tokens_pending
        seq_slots = np.maximum(state.max_running_seqs, 1).astype(np.float64)
        free_slots = seq_slots - state.n_running - state.n_queued
        capacity = np.minimum(free_kv / kv_cap, free_slots / seq_slots)
        if r.mode == "best-fit":
            need = request.prompt_tokens + (r.default_output_tokens if pred is None else pred)
            fits = (free_kv >= need) & (free_slots >= 1)
            if fits.any():
                return int(np.argmin(np.where(fits, capacity, np.inf)))
        return int(np.argmax(capacity))
    if name == "weighted-round-robin":
        r._ref_current = getattr(r, "_ref_current", np.zeros(cl.n_instances)) + r._weights
        choice = int(np.argmax(r._ref_current))
        r._ref_current[choice] -= r._weights.sum()
        return choice
    if name == "llm-d":
        scores = _ref_llmd(r, request, state)
        assert r.scores(request, state).tobytes() == scores.tobytes()
        return int(np.argmax(scores))
    if name == "dynamo-kv":
        costs = _ref_dynamo(r, request, state, cl)
        assert r.costs(request, state).tobytes() == costs.tobytes()
        return int(np.argmin(costs))
    if name == "sglang-cache-aware":
        lo, hi = int(load.min()), int(load.max())
        if hi - lo > r.balance_abs_threshold and hi > r.balance_rel_threshold * lo:
            return int(np.argmin(load))
        matched = _ref_matched(r, request, cl)
        best = int(np.argmax(matched))
        if matched[best] / max(request.prompt_tokens, 1) > r.cache_threshold:
            return best
        sizes = r._index.size_blocks()
        return int(np.argmin(np.where(sizes == sizes.min(), load, np.iinfo(np.int64).max)))
    raise AssertionError(name)  # pragma: no cover


FAST_PATH_ROUTERS: dict[str, dict[str, Any]] = {
    "min-min": {},
    "min-total-latency": {},
    "min-total-latency-w0": {"weight": 0.0},
    "min-min-oracle": {},
    "aibrix-least-latency": {},
    "least-connections": {},
    "least-loaded": {},
    "jsq-tokens": {},
    "least-work-left": {},
    "decode-balancer": {},
    "decode-balancer-oracle": {},
    "dedicated-small-large": {},
    "max-capacity": {},
    "max-capacity-best-fit": {"mode": "best-fit"},
    "weighted-round-robin": {},
    "llm-d": {},
    "dynamo-kv": {},
    "sglang-cache-aware": {"balance_abs_threshold": 3, "cache_threshold": 0.1},
}


@pytest.mark.parametrize("key", list(FAST_PATH_ROUTERS))
def test_fast_path_chooses_exactly_what_the_numpy_formula_does(key: str) -> None:
    name = key.removesuffix("-w0").removesuffix("-best-fit")
    rng = np.random.default_rng(np.random.SeedSequence([7, len(key)]))
    for m in (1, 2, 3, 4, 8):
        cluster = _random_cluster(rng, m)
        r = make_router(name, **FAST_PATH_ROUTERS[key])
        r.reset(cluster, np.random.default_rng(0))
        for k in range(60):
            state = _random_state(rng, cluster, now_s=float(rng.choice([0.0, 3.25, 7.1])))
            request = _random_request(rng, k)
            expected = _ref_choice(name, r, request, state, cluster)
            assert r.route(request, state) == expected, (key, m, k)


def test_scalar_helpers_follow_numpy_bit_for_bit() -> None:
    from routeplay.replay.routers._common import (
        argmax_list,
        argmin_list,
        decode_tokens_left,
        decode_tokens_left_list,
        np_maximum,
        np_minimum,
    )
    from routeplay.replay.routers._paper import completion_s_list

    nan = float("nan")
    for values in ([1.0, 1.0], [2.0, nan, 0.0], [nan, nan], [0.0, -0.0], [-0.0, 0.0], [3, 1, 1]):
        assert argmin_list(values) == int(np.argmin(values))
        assert argmax_list(values) == int(np.argmax(values))
    for x in (-0.0, 0.0, 1.0, -1.0, nan):
        for y in (-0.0, 0.0, 1.0, nan):
            for mine, ref in ((np_maximum, np.maximum), (np_minimum, np.minimum)):
                got, want = np.float64(mine(x, y)), ref(np.float64(x), np.float64(y))
                assert got.tobytes() == want.tobytes() or (np.isnan(got) and np.isnan(want))
    rng = np.random.default_rng(3)
    for m in (1, 4, 8):
        cluster = _random_cluster(rng, m)
        lat = ClusterLatency.from_cluster(cluster)
        rows = lat.instances()
        for k in range(100):
            state = _random_state(rng, cluster, now_s=float(rng.uniform(0, 100)))
            request = _random_request(rng, k)
            p = float(rng.choice([request.prompt_tokens, rng.uniform(0.5, 3000.0)]))
            d = float(rng.choice([0.5, 1.0, 37.0, rng.uniform(1.0, 1000.0)]))
            est = estimate_completion_s(lat, state, p, d)
            assert np.array(completion_s_list(rows, state, p, d)).tobytes() == est.tobytes()
            left = decode_tokens_left(state, request, 128.0)
            assert np.array(decode_tokens_left_list(state, request, 128.0)).tobytes() == (
                left.tobytes()
            )
            args = [rng.choice([0.0, 1.0, 250.0], size=m) for _ in range(4)]
            ref = lat.iteration_s(*args)
            mine = [row.iteration_s(*(float(a[i]) for a in args)) for i, row in enumerate(rows)]
            assert np.array(mine).tobytes() == ref.tobytes()


@pytest.mark.parametrize("name", ["late-binding-spf", "late-binding-spf-oracle"])
def test_late_binding_fast_path_releases_what_the_numpy_formula_does(name: str) -> None:
    from routeplay.replay.routers._schedulers import HOLD, free_instances

    rng = np.random.default_rng(np.random.SeedSequence([11, len(name)]))
    for m in (1, 3, 4, 8):
        cluster = _random_cluster(rng, m)
        lat = ClusterLatency.from_cluster(cluster)
        s = make_router(name, max_local_queue=int(rng.integers(0, 2)))
        s.reset(cluster, np.random.default_rng(0))
        for k in range(60):
            state = _random_state(rng, cluster, now_s=float(rng.uniform(0, 9)))
            queue = tuple(_random_request(rng, 10 * k + j) for j in range(int(rng.integers(1, 5))))
            free = free_instances(state, s.max_local_queue)
            if not free.any():
                expected = HOLD
            else:
                sizes = [s.size_s(v) for v in queue]
                best = int(np.argmin(sizes))
                chosen = queue[best]
                est = estimate_completion_s(
                    lat, state, chosen.prompt_tokens, s.output_tokens(chosen)
                )
                expected = (best, int(np.argmin(np.where(free, est, np.inf))))
            assert s.schedule(queue, state) == expected, (m, k)
