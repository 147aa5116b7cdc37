"""Tests of evaluate_routers and BoundedWaitRouter (paired replays, fallback accounting)."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from routeplay.datasets import TaskMixConfig, generate_task_mix
from routeplay.offline_rl import BoundedWaitRouter, evaluate_routers
from routeplay.replay import WAIT, ClusterConfig, ClusterState, RequestView, make_cluster

N_REQ = 12


class AlwaysWait:
    """A learned-policy stand-in that never routes."""

    name = "always-wait"
    oracle = False

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        pass

    def route(self, request: RequestView, state: ClusterState) -> int:
        return WAIT


@pytest.fixture(scope="module")
def episodes() -> list[pl.DataFrame]:
    return [
        generate_task_mix(TaskMixConfig(n_requests=N_REQ, rate_per_s=20.0, seed=s))
        for s in range(3)
    ]


def test_pairing_and_immediate_fallback_equals_fallback_router(
    episodes: list[pl.DataFrame],
) -> None:
    res = evaluate_routers(
        {"wait": AlwaysWait()},
        ["round-robin", "least-loaded"],
        episodes,
        make_cluster("v100x2"),
        max_router_wait_s=0.0,
        n_boot=100,
    )
    assert res.learned == ("wait+fallback",)
    req = res.replays.requests
    # every router replayed exactly the same episodes, every request once
    sets = req.group_by("router").agg(pl.col("episode").unique().sort())
    assert all(s.to_list() == [0, 1, 2] for s in sets["episode"])
    assert req.group_by("router").len()["len"].to_list() == [3 * N_REQ] * 3
    # with a zero bound every decision is the fallback's (least-loaded), counted per episode
    assert res.fallbacks["n_fallback_routes"].to_list() == [N_REQ] * 3
    assert res.fallbacks["n_decisions"].to_list() == [N_REQ] * 3
    cols = ["episode", "request_id", "instance_id", "e2e_s"]
    ll = req.filter(pl.col("router") == "least-loaded").select(cols)
    wait = req.filter(pl.col("router") == "wait+fallback").select(cols)
    assert_frame_equal(ll, wait)
    table = res.to_frame()
    assert (
        table.filter(pl.col("router") == "wait+fallback")["n_fallback_routes"].item() == 3 * N_REQ
    )
    assert table.filter(pl.col("router") == "round-robin")["improvement_vs_baseline"].item() == 0.0
    assert "wait+fallback" in res.summary() and "fallback heuristic" in res.summary()


def test_fallback_after_waiting_counts_waits(episodes: list[pl.DataFrame]) -> None:
    res = evaluate_routers(
        {"wait": AlwaysWait()},
        ["round-robin"],
        episodes[:2],
        make_cluster("v100x2"),
        max_router_wait_s=0.1,
        n_boot=100,
    )
    fb = res.fallbacks
    assert fb["n_fallback_routes"].to_list() == [N_REQ, N_REQ]
    # each request is offered again every 0.02 s tick before the fallback takes it
    assert all(n > N_REQ for n in fb["n_decisions"].to_list())
    waits = res.replays.requests.filter(pl.col("router") == "wait+fallback")["router_wait_s"]
    assert float(waits.min()) >= 0.1 - 1e-9  # type: ignore[operator]


def test_unwrapped_waiting_router_hits_the_time_guard(episodes: list[pl.DataFrame]) -> None:
    with pytest.raises(RuntimeError):
        evaluate_routers(
            {"wait": AlwaysWait()},
            ["round-robin"],
            episodes[:2],
            make_cluster("v100x2"),
            max_router_wait_s=None,
            sim_slack_s=1.0,
        )


def test_bounded_wait_router_validates() -> None:
    with pytest.raises(ValueError, match=re.escape("max_router_wait_s = -1.0; expected")):
        BoundedWaitRouter(AlwaysWait(), max_router_wait_s=-1.0)


def test_baseline_must_be_a_heuristic(episodes: list[pl.DataFrame]) -> None:
    msg = "baseline 'round-robin' is not among the heuristics ['least-loaded']"
    with pytest.raises(ValueError, match=re.escape(msg)):
        evaluate_routers({}, ["least-loaded"], episodes, make_cluster("v100x2"))
