from __future__ import annotations

import re

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from routeplay.estimator import compare_routers
from routeplay.replay import make_cluster, make_router, replay_episodes


def _episode(seed: int, n: int = 40) -> pl.DataFrame:
    import numpy as np

    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "request_id": list(range(n)),
            "arrival_s": np.cumsum(rng.exponential(0.05, n)).tolist(),
            "prompt_tokens": rng.integers(10, 400, n).tolist(),
            "output_tokens": rng.integers(1, 200, n).tolist(),
        }
    )


def test_every_router_sees_the_same_episodes_and_compare_routers_reads_the_result() -> None:
    episodes = [_episode(s) for s in range(4)]
    routers = {
        "rr": lambda: make_router("round-robin"),
        "random": lambda: make_router("random"),
    }
    out = replay_episodes(
        episodes, make_cluster("paper-2xv100"), routers, episode_ids=[10, 11, 12, 13]
    )
    counts = out.requests.group_by("router", "episode").len().sort("router", "episode")
    assert counts["len"].to_list() == [40] * 8
    assert sorted(set(out.requests["episode"].to_list())) == [10, 11, 12, 13]
    # paired: identical request ids per episode across routers
    ids = out.requests.group_by("router", "episode").agg(pl.col("request_id").sort())
    by_router = {
        r: ids.filter(pl.col("router") == r).sort("episode")["request_id"].to_list()
        for r in routers
    }
    assert by_router["rr"] == by_router["random"]
    result = compare_routers(out.requests, baseline="rr")
    assert {c.router for c in result.comparisons} == {"random"}
    # reruns are identical (seeds per episode are derived from the base seed)
    again = replay_episodes(
        episodes, make_cluster("paper-2xv100"), routers, episode_ids=[10, 11, 12, 13]
    )
    assert_frame_equal(out.requests, again.requests)


def test_random_router_draws_differ_between_episodes_but_not_between_runs() -> None:
    ep = _episode(0)
    out = replay_episodes(
        [ep, ep], make_cluster("paper-2xv100"), {"random": lambda: make_router("random")}
    )
    a = out.requests.filter(pl.col("episode") == 0)["instance_id"].to_list()
    b = out.requests.filter(pl.col("episode") == 1)["instance_id"].to_list()
    assert a != b  # same trace, different per-episode seeds


def test_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match=re.escape("replay_episodes got no episodes")):
        replay_episodes([], make_cluster("a100x4"), {"rr": lambda: make_router("round-robin")})
    with pytest.raises(ValueError, match=re.escape("episode_ids has 1 entries for 2 episodes")):
        replay_episodes(
            [_episode(0), _episode(1)],
            make_cluster("a100x4"),
            {"rr": lambda: make_router("round-robin")},
            episode_ids=[3],
        )
