from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import polars as pl
import pytest
from routeplay.estimator._impact import ImpactConfig, ImpactEstimate
from routeplay.estimator._latency import LinearLatencyModel
from routeplay.replay._types import (
    WAIT,
    ClusterConfig,
    ClusterState,
    InstanceConfig,
    OracleRequestView,
    RequestView,
)
from routeplay.replay.engine._clusters import cluster_from_dict, make_cluster
from routeplay.replay.engine._engine import Engine
from routeplay.replay.rl import _observation as observation_module
from routeplay.replay.rl._observation import (
    ObservationEncoder,
    ObservationLayout,
    encode_observation,
    impact_relative_cost,
    instance_speed_index,
)
from routeplay.replay.rl._outcomes import (
    OutcomeConfig,
    OutcomeTracker,
    _linear_coefficients,
    _request_time_s,
)
from routeplay.replay.rl._rewards import (
    REWARD_VARIANTS,
    LatencyAreaReward,
    PaperReward,
    QueueBalanceReward,
    StepOutcome,
    make_reward,
)
from routeplay.replay.routers._builtin import MinMinRouter
from routeplay.replay.routers._check import make_cluster_state, make_uniform_cluster
from routeplay.replay.routers._reference import MinTotalLatencyRouter

#: the paper's gradients priced on the reference work (512-token prefill beside 32
#: decoding sequences of 512 context): 3.2e-4 * 512 + 3.3e-5 * 32 * 512
REF_IMPACT_S = 3.2e-4 * 512 + 3.3e-5 * 32 * 512


def _two_speed_cluster() -> ClusterConfig:
    """Instance 0: 1 ms per prompt token, 10 ms per decoding sequence; instance 1: 2x slower."""

    def lat(k: float) -> LinearLatencyModel:
        return LinearLatencyModel(
            intercept_s=0.0,
            prefill_s_per_token=1e-3 * k,
            prefill_s_per_token2=0.0,
            decode_s_per_seq=0.01 * k,
            decode_s_per_context_token=0.0,
        )

    return ClusterConfig(
        instances=(
            InstanceConfig(name="a", latency=lat(1.0)),
            InstanceConfig(name="b", latency=lat(2.0)),
        )
    )


def _lg(x: float, cap: float) -> float:
    return math.log1p(x) / math.log1p(cap)


def _state(m: int = 3, bp: int = 2, bd: int = 4, **over: object) -> ClusterState:
    rng = np.random.default_rng(0)
    base = dict(
        now_s=5.0,
        router_queue_len=1000,
        n_queued=rng.integers(0, 5, m),
        n_running=rng.integers(0, 8, m),
        prefill_tokens_pending=rng.integers(0, 500, m),
        decode_tokens_done=rng.integers(0, 500, m),
        predicted_decode_tokens_left=rng.random(m) * 100,
        kv_used_tokens=rng.integers(0, 1000, m),
        kv_capacity_tokens=np.full(m, 1000),
        max_running_seqs=np.full(m, 8),
        prompt_bucket_counts=rng.integers(0, 100, (m, bp)),
        decode_bucket_counts=rng.integers(0, 100, (m, bd)),
        earliest_completion_s=5.0 + rng.random(m) * 3,
    )
    base.update(over)
    return ClusterState(**base)  # type: ignore[arg-type]


def test_observation_is_bounded_and_named() -> None:
    state = _state()
    layout = ObservationLayout.for_state(state)
    cluster = make_uniform_cluster(3)
    obs = encode_observation(
        RequestView(1, 0.0, 10**6, predicted_bucket=3), state, layout, cluster=cluster
    )
    assert obs.shape == (layout.size,) == (len(layout.names()),)
    assert obs.min() >= 0.0 and obs.max() <= 1.0
    names = layout.names()
    assert obs[names.index("queue")] == pytest.approx(_lg(512, 512))  # capped at 512
    assert obs[names.index("decode_bucket_3")] == 1.0
    for block in ("local_queue", "speed", "minmin_eta", "impact_cost"):
        assert names[layout.block_slice(block)] == [f"{block}_{i}" for i in range(3)]


def test_observation_never_reads_true_output_length() -> None:
    state = _state()
    cluster = make_uniform_cluster(3)
    plain = RequestView(1, 0.0, 100, predicted_bucket=1)
    oracle = OracleRequestView(1, 0.0, 100, predicted_bucket=1, output_tokens=999)
    np.testing.assert_array_equal(
        encode_observation(plain, state, cluster=cluster),
        encode_observation(oracle, state, cluster=cluster),
    )


def test_observation_shape_mismatch_is_a_clear_error() -> None:
    cluster = make_uniform_cluster(3)
    layout = ObservationLayout(n_instances=3, n_prompt_buckets=2, n_decode_buckets=5)
    with pytest.raises(ValueError, match=re.escape("but the observation layout expects")):
        encode_observation(RequestView(1, 0.0, 10), _state(), layout, cluster=cluster)
    with pytest.raises(ValueError, match=re.escape("predicted_bucket=7; expected a bucket")):
        encode_observation(RequestView(1, 0.0, 10, predicted_bucket=7), _state(), cluster=cluster)
    with pytest.raises(ValueError, match=re.escape("n_instances = 3 but the cluster has 2")):
        ObservationEncoder(layout, make_uniform_cluster(2))


def test_new_per_instance_features_hand_computed() -> None:
    cluster = _two_speed_cluster()
    layout = ObservationLayout(n_instances=2, n_prompt_buckets=4, n_decode_buckets=5)
    enc = ObservationEncoder(layout, cluster)
    state = make_cluster_state(
        n_queued=[3, 0], prefill_tokens_pending=[1000, 0], tokens_in_system=[5000, 0]
    )
    request = RequestView(0, 0.0, 100, predicted_output_tokens=11.0)
    obs = enc(request, state)

    def block(name: str) -> list[float]:
        return [float(v) for v in obs[layout.block_slice(name)]]

    assert block("local_queue") == pytest.approx([_lg(3, 65_536), 0.0], rel=1e-6)
    assert block("prefill_pending") == pytest.approx([_lg(1000, 2**24), 0.0], rel=1e-6)
    # reference iteration: 512 prompt tokens + 32 decoding sequences -> 0.832 s and 1.664 s
    assert block("speed") == pytest.approx([1.0, 0.5])
    # min-min: backlog (1000 pending tokens: 1.0 s on instance 0) + prefill 100 tokens
    # + 10 decode iterations of one sequence (0.01 s each; instance 1 twice as slow)
    assert enc.minmin_eta_s(request, state).tolist() == pytest.approx([1.2, 0.4])
    assert block("minmin_eta") == pytest.approx([_lg(1.2, 3600), _lg(0.4, 3600)], rel=1e-6)
    # impact: gradients scaled by each instance's marginal reference time / the paper's
    cost = [0.832 / REF_IMPACT_S, 1.664 / REF_IMPACT_S]
    assert impact_relative_cost(cluster).tolist() == pytest.approx(cost)
    expected = []
    for c, s_m in zip(cost, (5000, 0), strict=True):
        t_p = 3.2e-4 * c * (100**2 + s_m)
        r_p = 1.0 if t_p <= 0.5 else 1.0 - t_p / 0.5
        r_d = math.tanh(3.3e-5 * c * ((100 + 11) - s_m))
        expected.append(_lg(1.0 - (0.5 * r_p + 0.5 * r_d), 1e6))
    assert block("impact_cost") == pytest.approx(expected, rel=1e-6)


def test_speed_index_and_impact_cost_of_builtin_clusters() -> None:
    paper = make_cluster("paper-4xv100")
    assert instance_speed_index(paper).tolist() == [1.0] * 4
    # the paper's gradients are the v100-paper coefficients: its reward is unchanged
    assert impact_relative_cost(paper).tolist() == pytest.approx([1.0] * 4, rel=1e-12)
    hetero = make_cluster("hetero-3k5k7k")  # 3000 / 5000 / 7000 tokens per second
    assert instance_speed_index(hetero).tolist() == pytest.approx([3 / 7, 5 / 7, 1.0])
    assert impact_relative_cost(hetero).tolist() == pytest.approx(
        [544 / r / REF_IMPACT_S for r in (3000, 5000, 7000)]
    )


def _loaded_decision(
    rng: np.random.Generator, k: int, m: int, *, decode_left: bool = False
) -> tuple[RequestView, ClusterState]:
    """Request ``k`` (every third without a prediction) and a random state of ``m`` instances."""
    extra = {"predicted_decode_tokens_left": rng.random(m) * 5000} if decode_left else {}
    state = make_cluster_state(
        n_queued=rng.integers(0, 20, m),
        n_running=rng.integers(0, 40, m),
        prefill_tokens_pending=rng.integers(0, 5000, m),
        kv_used_tokens=rng.integers(0, 20_000, m),
        earliest_completion_s=rng.random(m) * 5,
        **extra,
    )
    pred = None if k % 3 == 0 else float(rng.integers(1, 500))
    request = RequestView(k, 0.0, int(rng.integers(1, 2000)), predicted_output_tokens=pred)
    return request, state


def test_minmin_is_the_argmin_of_its_observation_block() -> None:
    cluster = _two_speed_cluster()
    layout = ObservationLayout(n_instances=2, n_prompt_buckets=4, n_decode_buckets=5)
    enc = ObservationEncoder(layout, cluster)
    router = MinMinRouter()
    router.reset(cluster, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    agree = 0
    for k in range(200):
        request, state = _loaded_decision(rng, k, 2)
        eta = enc.minmin_eta_s(request, state)
        if abs(eta[0] - eta[1]) < 1e-6 * max(eta.max(), 1.0):
            continue  # a tie could round either way in float32
        agree += 1
        assert int(np.argmin(enc(request, state)[layout.block_slice("minmin_eta")])) == (
            router.route(request, state)
        )
    assert agree > 150


def test_the_gap_blocks_are_zero_exactly_on_each_heuristics_choice() -> None:
    # version 3: minmin_gap / total_latency_gap are 0 on min-min's / min-total-latency's
    # pick (ties: both 0) and > 0 elsewhere, for 3 instances of two speeds
    cluster = cluster_from_dict(
        {
            "instances": [
                {"name": "slow", "count": 2, "tokens_per_s": 1000.0},
                {"name": "fast", "count": 1, "tokens_per_s": 3000.0},
            ]
        }
    )
    layout = ObservationLayout(n_instances=3, n_prompt_buckets=4, n_decode_buckets=5)
    enc = ObservationEncoder(layout, cluster)
    routers = {"minmin_gap": MinMinRouter(), "total_latency_gap": MinTotalLatencyRouter()}
    for r in routers.values():
        r.reset(cluster, np.random.default_rng(0))
    rng = np.random.default_rng(2)
    differ = 0
    for k in range(200):
        request, state = _loaded_decision(rng, k, 3, decode_left=True)
        obs = enc(request, state)
        picks = {}
        for block, router in routers.items():
            gap = obs[layout.block_slice(block)]
            pick = router.route(request, state)
            picks[block] = pick
            assert gap[pick] == 0.0
            assert (gap >= 0.0).all() and (gap <= 1.0).all()
        differ += picks["minmin_gap"] != picks["total_latency_gap"]
    assert differ > 10  # the two blocks carry different choices


def test_overload_counts_do_not_saturate() -> None:
    layout = ObservationLayout(n_instances=2, n_prompt_buckets=4, n_decode_buckets=5)
    enc = ObservationEncoder(layout, make_uniform_cluster(2))
    state = make_cluster_state(
        n_queued=[1000, 1001],
        prompt_bucket_counts=np.array([[64, 500, 0, 0], [65, 501, 0, 0]]),
        decode_bucket_counts=np.full((2, 5), 300),
        prefill_tokens_pending=[400_000, 400_001],
        tokens_in_system=[2_000_000, 0],
        earliest_completion_s=[300.0, 0.0],
    )
    obs = enc(RequestView(0, 0.0, 100), state)
    names = layout.names()
    scaled = [
        v
        for n, v in zip(names, obs.tolist(), strict=True)
        if n.split("_")[0]
        in ("P", "D", "local", "prefill", "earliest", "minmin", "impact", "total")
    ]
    assert len(scaled) == 2 * (4 + 5) + 7 * 2
    assert max(scaled) < 1.0  # version 1 clipped counts at 64: all of these saturated
    for block in ("local_queue", "prefill_pending"):
        a, b = obs[layout.block_slice(block)]
        assert 0 < a < b < 1
    assert obs[names.index("P_0_0")] < obs[names.index("P_1_0")] < obs[names.index("P_0_1")]


def _outcome(**over: object) -> StepOutcome:
    s = _state(m=2)
    base = dict(request=RequestView(0, 0.0, 10), action=0, state=s, next_state=s)
    base.update(over)
    return StepOutcome(**base)  # type: ignore[arg-type]


def test_paper_reward_variants() -> None:
    r_mix = np.array([0.2, 0.7])
    out = _outcome(action=0, n_completed=2, progress_deficit=1.5, impact_r_mix=r_mix, episode=4)
    assert PaperReward(variant="baseline")(out) == pytest.approx(120 - 1.5)
    assert PaperReward(variant="workload-aware")(out) == pytest.approx(120 - 1.5 - 0.5)
    guided = PaperReward(variant="workload-guided")
    assert guided(out) == pytest.approx(120 - 1.5 - math.exp(-2.0) * 0.5)
    # choosing the minimum-impact instance costs nothing; WAIT has no impact penalty
    assert guided(_outcome(action=1, impact_r_mix=r_mix)) == 0.0
    assert guided(_outcome(action=WAIT, impact_r_mix=r_mix)) == 0.0
    assert guided.heuristic_weight(0) == 1.0 > guided.heuristic_weight(1)
    with pytest.raises(ValueError, match=re.escape("episode = -1; expected a training episode")):
        guided.heuristic_weight(-1)


def test_queue_balance_reward_terms() -> None:
    z = np.zeros(2, dtype=np.int64)
    s = _state(m=2, n_queued=z, n_running=z)
    idle = QueueBalanceReward()(_outcome(state=s, next_state=s, action=1))
    assert idle == pytest.approx(0.1 * (1 - 1.0))  # outstanding [0, 1]: CV = 1
    late = QueueBalanceReward()(
        _outcome(state=s, next_state=s, action=WAIT, response_times_s=(2.1, 1.0))
    )
    assert late == -5.0
    assert make_reward("queue-balance") == QueueBalanceReward()
    assert "queue-balance" in REWARD_VARIANTS
    with pytest.raises(ValueError, match="unknown reward 'paper'"):
        make_reward("paper")


def test_former_reward_name_still_works_with_a_deprecation_warning() -> None:
    with pytest.warns(DeprecationWarning, match="'seed000' is deprecated; use 'queue-balance'"):
        reward = make_reward("seed000")
    assert reward == QueueBalanceReward() and reward.name == "queue-balance"
    assert "seed000" not in REWARD_VARIANTS


def test_latency_area_reward_is_minus_the_request_seconds_of_the_step() -> None:
    # N(t) = router 3 + queued [1, 0] + running [2, 1] = 7; N(t') = 1 + 0 + 4 = 5
    s0 = _state(
        m=2, now_s=2.0, router_queue_len=3, n_queued=np.array([1, 0]), n_running=np.array([2, 1])
    )
    s1 = _state(
        m=2, now_s=2.5, router_queue_len=1, n_queued=np.array([0, 0]), n_running=np.array([2, 2])
    )
    reward = make_reward("latency-area")
    assert isinstance(reward, LatencyAreaReward) and reward.name == "latency-area"
    assert reward(_outcome(state=s0, next_state=s1)) == pytest.approx(-(7 + 5) / 2 * 0.5)
    # no time passes: no cost, whatever the action (WAIT included)
    assert reward(_outcome(state=s0, next_state=s0, action=WAIT)) == 0.0
    assert "latency-area" in REWARD_VARIANTS


def test_transformed_reward_is_in_the_trained_units() -> None:
    from routeplay.offline_rl import RewardTransform

    s0 = _state(
        m=2, now_s=0.0, router_queue_len=0, n_queued=np.array([1, 0]), n_running=np.array([1, 0])
    )
    s1 = _state(
        m=2, now_s=1.0, router_queue_len=0, n_queued=np.array([0, 0]), n_running=np.array([2, 0])
    )
    out = _outcome(state=s0, next_state=s1)
    t = RewardTransform(
        normalization="standardize", shift=-1.0, factor=0.5, raw_mean=-1.0, raw_std=2.0
    )
    wrapped = t.wrap("latency-area")
    assert wrapped.name == "latency-area"
    assert wrapped(out) == pytest.approx((-2.0 - (-1.0)) * 0.5)


# -- fast paths: the same numbers, bit for bit, as the numpy reference functions --------


def _random_cluster(rng: np.random.Generator, m: int) -> ClusterConfig:
    def lat() -> LinearLatencyModel:
        return LinearLatencyModel(
            intercept_s=float(rng.choice([0.0, 0.01])),
            prefill_batch_s=float(rng.choice([0.0, 0.005])),
            prefill_s_per_token=float(rng.random() * 1e-3),
            prefill_s_per_token2=float(rng.random() * 1e-8),
            decode_s_per_seq=float(rng.random() * 1e-3),
            decode_s_per_context_token=float(rng.random() * 1e-6),
        )

    return ClusterConfig(
        instances=tuple(InstanceConfig(name=f"i{k}", latency=lat()) for k in range(m))
    )


def _random_decision(
    rng: np.random.Generator, m: int, bp: int, bd: int
) -> tuple[RequestView, ClusterState]:
    hi = 10**9 if rng.random() < 0.1 else 50
    now = float(rng.choice([0.0, rng.random() * 100, 1e6 * rng.random()]))
    kv_cap = rng.integers(0, 3000, m)
    earliest = now + (rng.random(m) - 0.3) * float(rng.choice([0.0, 1.0, 1e4]))
    state = ClusterState(
        now_s=now,
        router_queue_len=int(rng.integers(0, 600)),
        n_queued=rng.integers(0, 5, m) * (rng.random() < 0.7),
        n_running=rng.integers(0, 8, m),
        prefill_tokens_pending=rng.integers(0, hi, m) * (rng.random() < 0.5),
        decode_tokens_done=rng.integers(0, 100, m),
        predicted_decode_tokens_left=rng.random(m),
        kv_used_tokens=np.minimum(rng.integers(0, 3500, m), kv_cap + 100),
        kv_capacity_tokens=kv_cap,
        max_running_seqs=rng.integers(0, 6, m),
        prompt_bucket_counts=rng.integers(0, hi, (m, bp)),
        decode_bucket_counts=rng.integers(0, hi, (m, bd)),
        earliest_completion_s=earliest,
        tokens_in_system=rng.integers(0, hi, m) if rng.random() < 0.9 else np.zeros(0, np.int64),
    )
    prompt = int(rng.choice([0, 1, int(rng.integers(1, 5000)), int(rng.integers(1, 10**6))]))
    pred = rng.choice([None, 0.0, 0.5, 1.0, 2.0, float(rng.random() * 3000), 1e7])
    bucket = None if rng.random() < 0.5 else int(rng.integers(bd))
    request = RequestView(
        0,
        0.0,
        prompt,
        predicted_bucket=bucket,
        predicted_output_tokens=None if pred is None else float(pred),
    )
    return request, state


def _same_estimate(a: ImpactEstimate, b: ImpactEstimate) -> bool:
    return (
        a.best_instance == b.best_instance
        and a.r_p.tobytes() == b.r_p.tobytes()
        and a.r_d.tobytes() == b.r_d.tobytes()
        and a.r_mix.tobytes() == b.r_mix.tobytes()
    )


@pytest.mark.parametrize("m", [1, 3, 5])
def test_scalar_encoder_is_the_vectorised_one_bit_for_bit(monkeypatch, m: int) -> None:
    rng = np.random.default_rng(m)
    cluster = _random_cluster(rng, m)
    layouts = [
        ObservationLayout(n_instances=m, n_prompt_buckets=1, n_decode_buckets=1),
        ObservationLayout(
            n_instances=m, n_prompt_buckets=3, n_decode_buckets=5, default_output_tokens=1.0
        ),
    ]
    configs = [ImpactConfig(), ImpactConfig(prompt_power=1, alpha=0.3, eps_s=2.0)]
    for layout, config in zip(layouts, configs, strict=True):
        fast = ObservationEncoder(layout, cluster, config)
        monkeypatch.setattr(observation_module, "SCALAR_MAX_INSTANCES", 0)
        slow = ObservationEncoder(layout, cluster, config)  # numpy over instances
        monkeypatch.undo()
        assert fast._c.scalar and not slow._c.scalar
        for _ in range(400):
            request, state = _random_decision(
                rng, m, layout.n_prompt_buckets, layout.n_decode_buckets
            )
            obs, est = fast.encode(request, state)
            ref_obs, ref_est = slow.encode(request, state)
            assert obs.dtype == np.float32 and obs.tobytes() == ref_obs.tobytes()
            assert fast(request, state).tobytes() == obs.tobytes()
            # the estimate is instance_impact's and the min-min block is estimate_completion_s's
            assert _same_estimate(est, ref_est) and _same_estimate(est, fast.impact(request, state))
            eta = np.minimum(
                np.log1p(fast.minmin_eta_s(request, state)) / math.log1p(layout.eta_cap_s), 1.0
            )
            assert (
                obs[layout.block_slice("minmin_eta")].tobytes() == eta.astype(np.float32).tobytes()
            )
            # min-total-latency's scores from the scalar tail's min-min estimates (what the
            # encoder passes it) are its own, in float64
            tail = fast._scalar_tail(request, state, np.empty(layout.size))
            if tail is not None:
                own = fast._mtl._scores(request, state)
                given = fast._mtl._scores(request, state, tail[4])
                assert np.array(given).tobytes() == np.array(own).tobytes()


def test_scalar_encoder_refuses_bad_impact_inputs_like_the_estimator() -> None:
    cluster = make_uniform_cluster(2)
    layout = ObservationLayout(n_instances=2, n_prompt_buckets=4, n_decode_buckets=5)
    enc = ObservationEncoder(layout, cluster)
    bad = make_cluster_state(tokens_in_system=[-5, 0])
    with pytest.raises(ValueError, match=re.escape("tokens_in_system has value -5.0 at index 0")):
        enc(RequestView(0, 0.0, 10), bad)
    with pytest.raises(ValueError, match="predicted_output_tokens has value nan"):
        enc(RequestView(0, 0.0, 10, predicted_output_tokens=math.nan), make_cluster_state(2))


def test_encoder_cluster_constants_are_read_only() -> None:
    enc = ObservationEncoder(
        ObservationLayout(n_instances=2, n_prompt_buckets=4, n_decode_buckets=5),
        make_uniform_cluster(2),
    )
    for arr in (enc.speed, enc.impact_cost):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 2.0


def test_request_time_fast_path_is_the_latency_model_bit_for_bit() -> None:
    rng = np.random.default_rng(7)
    for _ in range(2000):
        lat = _random_cluster(rng, 1).instances[0].latency
        coefs = _linear_coefficients(lat)
        assert coefs is not None
        p = float(rng.choice([0, 1, int(rng.integers(1, 10**5))]))
        d = float(rng.choice([0.0, 0.5, 1.0, 2.0, rng.random() * 4000]))
        n_other = int(rng.choice([0, int(rng.integers(1, 300))]))
        ctx = int(rng.choice([0, int(rng.integers(1, 10**6))]))
        ref = float(lat.request_time_s(p, d, n_other_seqs=n_other, other_context_tokens=ctx))
        assert _request_time_s(coefs, p, d, n_other, ctx).hex() == ref.hex()


def test_tracker_shares_impact_only_with_an_identical_encoder() -> None:
    cluster = make_cluster("hetero-3k5k7k")
    trace = pl.DataFrame(
        {"request_id": [0], "arrival_s": [0.0], "prompt_tokens": [10], "output_tokens": [5]}
    )
    layout = ObservationLayout(n_instances=3, n_prompt_buckets=4, n_decode_buckets=1)
    tracker = OutcomeTracker(Engine(trace, cluster))
    assert tracker.shares_impact_with(ObservationEncoder(layout, cluster))
    assert not tracker.shares_impact_with(
        ObservationEncoder(layout, cluster, ImpactConfig(alpha=0.4))
    )
    other_default = dataclasses.replace(layout, default_output_tokens=64.0)
    assert not tracker.shares_impact_with(ObservationEncoder(other_default, cluster))
    assert not tracker.shares_impact_with(ObservationEncoder(layout, make_uniform_cluster(3)))
    tracker64 = OutcomeTracker(Engine(trace, cluster), OutcomeConfig(fallback_output_tokens=64.0))
    assert tracker64.shares_impact_with(ObservationEncoder(other_default, cluster))


def _reference_outcomes(
    engine: Engine, tracker: OutcomeTracker
) -> tuple[int, int, list[float], float]:
    """The progress terms from their definition (module docstring of _outcomes), over all rows."""
    now = engine.now_s
    arrived = np.flatnonzero(engine.arrival <= now)
    fin = ~np.isnan(engine.finish_s[arrived])
    live = arrived[~fin]
    r_idx, r_gen = engine.running_tokens()
    gen = engine.saved_gen.astype(np.int64).copy()
    gen[r_idx] = r_gen
    d = np.maximum(tracker._d_hat[live], 1.0)
    remaining = np.maximum(
        1.0 - gen[live].astype(np.float64) / d, tracker.config.min_remaining_fraction
    )
    deficit = float((tracker._inv_ideal[live] * remaining).sum()) if live.size else 0.0
    done = arrived[fin]
    return (
        int(np.count_nonzero(~np.isnan(engine.admitted_s))),
        done.size,
        (engine.finish_s[done] - engine.arrival[done]).tolist(),
        deficit,
    )


def test_outcome_tracker_matches_its_definition_under_preemption() -> None:
    from routeplay.datasets import TaskMixConfig, generate_task_mix
    from routeplay.estimator import fit_length_predictor, quantile_buckets

    trace = generate_task_mix(TaskMixConfig(n_requests=300, rate_per_s=40.0, seed=2))
    predictor = fit_length_predictor(trace, quantile_buckets(trace["output_tokens"], 3))
    lat = make_cluster("a100x4").instances[0].latency
    cluster = ClusterConfig(  # small KV caches: requests get preempted and re-admitted
        instances=tuple(
            InstanceConfig(name=f"i{k}", latency=lat, kv_capacity_tokens=6000) for k in range(3)
        )
    )
    eng = Engine(trace, cluster, predictor=predictor)
    tracker = OutcomeTracker(eng, OutcomeConfig(min_remaining_fraction=0.25))
    admitted = completed = 0
    responses: list[float] = []
    k = 0
    while (d := eng.next_decision()) is not None:
        action = WAIT if k % 17 == 5 else k % 3
        terms = tracker.decision_terms(d[0], d[1], action)
        eng.apply(action)
        nxt = eng.next_decision()
        out = tracker.outcome(d[0], d[1], action, nxt[1] if nxt else eng.state(), terms)
        n_adm, n_done, all_responses, deficit = _reference_outcomes(eng, tracker)
        admitted += out.n_admitted
        completed += out.n_completed
        responses.extend(out.response_times_s)
        assert (admitted, completed) == (n_adm, n_done)
        assert sorted(responses) == sorted(all_responses)
        assert out.progress_deficit.hex() == deficit.hex()
        k += 1
    assert int(eng.n_preempt.sum()) > 0
    assert completed == trace.height


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("n_instances", 0, "ObservationLayout.n_instances = 0; expected an integer >= 1."),
        ("queue_cap", 2.5, "ObservationLayout.queue_cap = 2.5 (float); expected an integer >= 1."),
        ("eta_cap_s", -1.0, "ObservationLayout.eta_cap_s = -1.0; expected a finite number > 0."),
        ("count_cap", float("nan"), "ObservationLayout.count_cap = nan; expected a finite number"),
    ],
)
def test_layout_refuses_bad_values_naming_them(field: str, value: object, message: str) -> None:
    fields: dict[str, object] = {"n_instances": 2, "n_prompt_buckets": 1, "n_decode_buckets": 1}
    fields[field] = value
    with pytest.raises(ValueError, match=re.escape(message)):
        ObservationLayout(**fields)  # type: ignore[arg-type]
