from __future__ import annotations

import math
import re

import numpy as np
import pytest
from routeplay.replay._observation import ObservationLayout, encode_observation
from routeplay.replay._rewards import PaperReward, Seed000Reward, StepOutcome, make_reward
from routeplay.replay._types import WAIT, ClusterState, OracleRequestView, RequestView


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
    obs = encode_observation(RequestView(1, 0.0, 10**6, predicted_bucket=3), state, layout)
    assert obs.shape == (layout.size,) == (len(layout.names()),)
    assert obs.min() >= 0.0 and obs.max() <= 1.0
    names = layout.names()
    assert obs[names.index("queue")] == 1.0  # 1000 queued saturates at the cap
    assert obs[names.index("decode_bucket_3")] == 1.0


def test_observation_never_reads_true_output_length() -> None:
    state = _state()
    plain = RequestView(1, 0.0, 100, predicted_bucket=1)
    oracle = OracleRequestView(1, 0.0, 100, predicted_bucket=1, output_tokens=999)
    np.testing.assert_array_equal(
        encode_observation(plain, state), encode_observation(oracle, state)
    )


def test_observation_shape_mismatch_is_a_clear_error() -> None:
    layout = ObservationLayout(n_instances=3, n_prompt_buckets=2, n_decode_buckets=5)
    with pytest.raises(ValueError, match=re.escape("but the observation layout expects")):
        encode_observation(RequestView(1, 0.0, 10), _state(), layout)
    with pytest.raises(ValueError, match=re.escape("predicted_bucket=7; expected a bucket")):
        encode_observation(RequestView(1, 0.0, 10, predicted_bucket=7), _state())


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
