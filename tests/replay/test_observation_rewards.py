from __future__ import annotations

import math
import re

import numpy as np
import pytest
from routeplay.estimator._latency import LinearLatencyModel
from routeplay.replay._check import make_cluster_state, make_uniform_cluster
from routeplay.replay._clusters import make_cluster
from routeplay.replay._observation import (
    ObservationEncoder,
    ObservationLayout,
    encode_observation,
    impact_relative_cost,
    instance_speed_index,
)
from routeplay.replay._rewards import PaperReward, Seed000Reward, StepOutcome, make_reward
from routeplay.replay._routers import MinMinRouter
from routeplay.replay._types import (
    WAIT,
    ClusterConfig,
    ClusterState,
    InstanceConfig,
    OracleRequestView,
    RequestView,
)

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
    hetero = make_cluster("seed000-hetero")  # 3000 / 5000 / 7000 tokens per second
    assert instance_speed_index(hetero).tolist() == pytest.approx([3 / 7, 5 / 7, 1.0])
    assert impact_relative_cost(hetero).tolist() == pytest.approx(
        [544 / r / REF_IMPACT_S for r in (3000, 5000, 7000)]
    )


def test_minmin_is_the_argmin_of_its_observation_block() -> None:
    cluster = _two_speed_cluster()
    layout = ObservationLayout(n_instances=2, n_prompt_buckets=4, n_decode_buckets=5)
    enc = ObservationEncoder(layout, cluster)
    router = MinMinRouter()
    router.reset(cluster, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    agree = 0
    for k in range(200):
        state = make_cluster_state(
            n_queued=rng.integers(0, 20, 2),
            n_running=rng.integers(0, 40, 2),
            prefill_tokens_pending=rng.integers(0, 5000, 2),
            kv_used_tokens=rng.integers(0, 20_000, 2),
            earliest_completion_s=rng.random(2) * 5,
        )
        pred = None if k % 3 == 0 else float(rng.integers(1, 500))
        request = RequestView(k, 0.0, int(rng.integers(1, 2000)), predicted_output_tokens=pred)
        eta = enc.minmin_eta_s(request, state)
        if abs(eta[0] - eta[1]) < 1e-6 * max(eta.max(), 1.0):
            continue  # a tie could round either way in float32
        agree += 1
        assert int(np.argmin(enc(request, state)[layout.block_slice("minmin_eta")])) == (
            router.route(request, state)
        )
    assert agree > 150


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
        if n.split("_")[0] in ("P", "D", "local", "prefill", "earliest", "minmin", "impact")
    ]
    assert len(scaled) == 2 * (4 + 5) + 5 * 2
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


def test_seed000_reward_terms() -> None:
    z = np.zeros(2, dtype=np.int64)
    s = _state(m=2, n_queued=z, n_running=z)
    idle = Seed000Reward()(_outcome(state=s, next_state=s, action=1))
    assert idle == pytest.approx(0.1 * (1 - 1.0))  # outstanding [0, 1]: CV = 1
    late = Seed000Reward()(
        _outcome(state=s, next_state=s, action=WAIT, response_times_s=(2.1, 1.0))
    )
    assert late == -5.0
    with pytest.raises(ValueError, match="unknown reward 'paper'"):
        make_reward("paper")
