"""Learned schedulers' simulator side: shortlist, observation, queue-time reward, logging."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from routeplay.datasets import TaskMixConfig, generate_task_mix
from routeplay.replay import (
    RequestView,
    SchedulerEncoder,
    SchedulerLayout,
    log_scheduler_transitions,
    make_cluster,
    make_cluster_state,
    make_router,
    make_uniform_cluster,
    queue_time_rewards,
    run_replay,
    write_scheduler_transitions,
)
from routeplay.replay.rl._scheduling import shortlist


@given(
    sizes=st.lists(st.integers(0, 5).map(float), min_size=1, max_size=30),
    n=st.integers(2, 9),
)
@settings(max_examples=200, deadline=None)
def test_shortlist_is_the_smallest_sizes_plus_the_oldest(sizes: list[float], n: int) -> None:
    slots = shortlist(sizes, n)
    assert len(slots) == n
    distinct = list(dict.fromkeys(slots))
    # brute force: n - 1 smallest by (size, position), then the oldest if missing
    order = sorted(range(len(sizes)), key=lambda k: (sizes[k], k))
    want = order[: n - 1]
    if 0 not in want:
        want.append(0)
    want.sort(key=lambda k: (sizes[k], k))
    assert distinct == want
    # a short queue repeats its entries cyclically, so every slot names a request
    assert slots == [distinct[j % len(distinct)] for j in range(n)]
    assert 0 in slots


def test_shortlist_of_empty_queue_is_refused() -> None:
    with pytest.raises(ValueError, match="empty queue"):
        shortlist([], 4)


def test_queue_time_rewards_sum_to_total_latency() -> None:
    rng = np.random.default_rng(3)
    arrival = np.sort(rng.uniform(0, 10, 50))
    finish = arrival + rng.uniform(0.1, 5, 50)
    decisions = np.concatenate([[arrival[0]], np.sort(rng.uniform(arrival[0], 12, 30))])
    rewards = queue_time_rewards(decisions, arrival, finish)
    assert rewards.shape == decisions.shape
    assert (rewards <= 0).all()
    assert -rewards.sum() == pytest.approx((finish - arrival).sum(), rel=1e-12)


def test_queue_time_rewards_refuse_bad_input() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        queue_time_rewards([1.0, 0.5], [0.0], [2.0])
    with pytest.raises(ValueError, match="finite"):
        queue_time_rewards([0.0], [0.0], [np.nan])


def test_layout_names_match_size_and_bad_values_are_refused() -> None:
    layout = SchedulerLayout(n_instances=3, n_candidates=5)
    assert len(layout.names()) == layout.size == 5 * 8 + 3 * 4 + 2
    assert layout.n_actions == 5
    with pytest.raises(ValueError, match="n_candidates = 1"):
        SchedulerLayout(n_instances=2, n_candidates=1)
    with pytest.raises(ValueError, match="time_cap_s"):
        SchedulerLayout(n_instances=2, time_cap_s=float("inf"))


def test_encoder_marks_oldest_and_repeats_and_refuses_when_none_is_free() -> None:
    enc = SchedulerEncoder(SchedulerLayout(n_instances=2, n_candidates=3))
    with pytest.raises(RuntimeError, match="reset"):
        enc.encode((RequestView(0, 0.0, 10),), make_cluster_state(2), [True, True])
    enc.reset(make_uniform_cluster(2))
    queue = (
        RequestView(0, 0.0, 900, predicted_output_tokens=50.0),
        RequestView(1, 0.5, 10, predicted_output_tokens=5.0),
    )
    state = make_cluster_state(n_running=[0, 0], now_s=2.0)
    obs, slots = enc.encode(queue, state, enc.free(state))
    assert slots == [1, 0, 1]
    per = obs[: 3 * 8].reshape(3, 8)
    assert per[:, 6].tolist() == [0.0, 1.0, 0.0]  # oldest flag
    assert per[:, 7].tolist() == [0.0, 0.0, 1.0]  # repeat flag
    assert (obs >= 0).all() and (obs <= 1).all()
    with pytest.raises(ValueError, match="free instance"):
        enc.encode(queue, state, [False, False])
    with pytest.raises(ValueError, match="instances"):
        enc.reset(make_uniform_cluster(3))


def _trace(n: int = 150, seed: int = 0, rate_per_s: float = 20.0) -> pl.DataFrame:
    return generate_task_mix(TaskMixConfig(n_requests=n, rate_per_s=rate_per_s, seed=seed))


def test_greedy_logging_of_spf_replays_spf_exactly() -> None:
    trace = _trace()
    cluster = make_cluster("v100x2")
    frame = log_scheduler_transitions([trace], cluster, "late-binding-spf", epsilon=0.0)
    assert frame["action"].unique().to_list() == [0]  # slot 0 is SPF's choice
    plain = run_replay(trace, cluster, make_router("late-binding-spf"))
    assert frame.height == trace.height  # one release per request
    # Little's law: minus the return is the total latency when the first decision is
    # the first arrival (it is: the cluster starts idle)
    total = float(plain.requests["e2e_s"].sum())
    assert -float(frame["reward"].sum()) == pytest.approx(total, rel=1e-9)
    assert frame["terminal"].to_list()[-1] and not frame["timeout"].any()
    assert (frame["dt_s"] >= 0).all()
    # next_obs is the following decision's obs
    obs = np.stack(frame["obs"].to_list())
    nxt = np.stack(frame["next_obs"].to_list())
    assert np.array_equal(nxt[:-1], obs[1:])


def test_logging_is_deterministic_and_explores_within_the_shortlist() -> None:
    traces = [_trace(120, 1, 200.0), _trace(120, 2, 200.0)]  # overload: queues form
    cluster = make_cluster("v100x2")
    kw = {"epsilon": 0.5, "seed": 7, "episode_offset": 3}
    a = log_scheduler_transitions(traces, cluster, "late-binding-spf", **kw)  # type: ignore[arg-type]
    b = log_scheduler_transitions(traces, cluster, "late-binding-spf", **kw)  # type: ignore[arg-type]
    assert_frame_equal(a, b)
    assert a["episode"].unique().sort().to_list() == [3, 4]
    assert a["action"].n_unique() > 1
    assert a["action"].min() >= 0 and a["action"].max() < 8  # type: ignore[operator]
    assert a["behaviour"].unique().to_list() == ["late-binding-spf+eps0.5"]
    other = log_scheduler_transitions(traces, cluster, "late-binding-spf", epsilon=0.5, seed=8)
    assert not a["action"].equals(other["action"])


def test_observations_never_read_true_output_lengths() -> None:
    """Traces that differ only in output lengths give equal observations until a finish."""
    trace = _trace(60)
    other = trace.with_columns(pl.col("output_tokens") * 3 + 1)
    cluster = make_cluster("v100x2")
    frames = [
        log_scheduler_transitions([t], cluster, "late-binding-spf", epsilon=0.0)
        for t in (trace, other)
    ]
    first_finish = min(
        float(run_replay(t, cluster, make_router("late-binding-spf")).requests["finish_s"].min())  # type: ignore[arg-type]
        for t in (trace, other)
    )
    start = float(trace["arrival_s"].min())  # type: ignore[arg-type]
    dt = frames[0]["dt_s"].to_numpy()
    times = start + np.concatenate([[0.0], np.cumsum(dt[:-1])])
    n_before = int((times < first_finish).sum())
    assert n_before >= 2
    a = np.stack(frames[0]["obs"].to_list())[:n_before]
    b = np.stack(frames[1]["obs"].to_list())[:n_before]
    assert np.array_equal(a, b)


def test_router_behaviour_is_refused() -> None:
    with pytest.raises(ValueError, match="is a router, not a scheduler"):
        log_scheduler_transitions([_trace(20)], make_cluster("v100x2"), "min-min")
    with pytest.raises(ValueError, match="epsilon"):
        log_scheduler_transitions(
            [_trace(20)], make_cluster("v100x2"), "late-binding-spf", epsilon=2
        )


def test_written_logs_carry_metadata_and_refuse_a_wrong_layout(tmp_path: object) -> None:
    from pathlib import Path

    frame = log_scheduler_transitions([_trace(40)], make_cluster("v100x2"), "late-binding-spf")
    layout = SchedulerLayout(n_instances=2)
    out = write_scheduler_transitions(frame, Path(str(tmp_path)) / "s.parquet", layout)
    meta = pl.read_parquet_metadata(out)
    assert meta["routeplay.kind"] == "scheduler"
    assert meta["routeplay.n_actions"] == "8"
    assert_frame_equal(pl.read_parquet(out), frame)
    with pytest.raises(ValueError, match="Array"):
        write_scheduler_transitions(
            frame, Path(str(tmp_path)) / "t.parquet", dataclasses.replace(layout, n_instances=3)
        )
