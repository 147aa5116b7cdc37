"""Tests of fine_tune_online (fit_online against RoutingEnv, learning curves)."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl
import pytest
from d3rlpy.logging import NoopAdapterFactory
from polars.testing import assert_frame_equal
from routeplay.datasets import TaskMixConfig, generate_task_mix
from routeplay.offline_rl import (
    CURVE_SCHEMA,
    OnlineConfig,
    TrainConfig,
    build_dataset,
    fine_tune_online,
    train_router,
)
from routeplay.replay import make_cluster, make_router
from routeplay.replay.rl._transitions import log_transitions

CLUSTER = make_cluster("v100x2")
EPISODES = [generate_task_mix(TaskMixConfig(n_requests=8, seed=s)) for s in range(2)]
# always route (never WAIT) early on: epsilon 1 -> 0 over the run, so episodes finish
CFG = OnlineConfig(
    n_steps=40, n_steps_per_epoch=20, update_start_step=8, epsilon_start=1.0, epsilon_end=0.0
)


def _run(tmp: Path, reward: str, start: object = None, **kw: object) -> object:
    return fine_tune_online(
        start if start is not None else TrainConfig(algorithm="double-dqn", batch_size=8),
        EPISODES,
        CLUSTER,
        reward=reward,
        run_dir=tmp,
        config=CFG,
        logger_adapter=NoopAdapterFactory(),
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    "reward", ["paper-baseline", "paper-workload-aware", "paper-workload-guided", "queue-balance"]
)
def test_each_reward_variant_runs_and_writes_a_curve(tmp_path: Path, reward: str) -> None:
    res = _run(tmp_path, reward)
    assert res.n_steps_done == 40  # type: ignore[attr-defined]
    curve: pl.DataFrame = res.curve  # type: ignore[attr-defined]
    assert curve.schema == CURVE_SCHEMA
    assert curve.height >= 1
    # the episode counter k advances once per episode (workload-guided decay)
    assert curve["episode"].to_list() == list(range(curve.height))
    assert (curve["reward"] == reward).all()
    finished = curve.filter(~pl.col("truncated"))
    assert (finished["n_requests"] == 8).all()
    assert (finished["mean_e2e_s"] > 0).all()
    assert_frame_equal(pl.read_parquet(tmp_path / "learning_curve.parquet"), curve)


def test_reward_changes_returns_not_episodes(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", "paper-baseline").curve  # type: ignore[attr-defined]
    b = _run(tmp_path / "b", "paper-workload-aware").curve  # type: ignore[attr-defined]
    # same seed: the first episode's actions are all exploratory (epsilon ~1), identical
    assert a["mean_e2e_s"][0] == b["mean_e2e_s"][0]
    assert a["return"][0] >= b["return"][0]  # aware subtracts a non-negative penalty


def test_deterministic_with_the_same_seed(tmp_path: Path) -> None:
    a = _run(tmp_path / "a", "paper-workload-guided").curve  # type: ignore[attr-defined]
    b = _run(tmp_path / "b", "paper-workload-guided").curve  # type: ignore[attr-defined]
    assert_frame_equal(a, b)


def test_continues_an_offline_policy_with_its_data(tmp_path: Path) -> None:
    log = log_transitions(
        EPISODES,
        CLUSTER,
        make_router("round-robin"),
        reward="paper-workload-guided",
        path=tmp_path / "log.parquet",
        epsilon=0.1,
    )
    dataset = build_dataset(log.path)
    cfg = TrainConfig(
        algorithm="cql", n_steps=10, n_steps_per_epoch=10, checkpoint_every_steps=10, batch_size=8
    )
    offline = train_router(
        cfg, dataset, run_dir=tmp_path / "run", logger_adapter=NoopAdapterFactory()
    )
    res = _run(tmp_path / "online", "paper-workload-guided", offline, offline_dataset=dataset)
    assert res.algo is offline.algo  # type: ignore[attr-defined]
    assert res.algo.grad_step > 10  # type: ignore[attr-defined]


def test_bad_start_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=re.escape("fine_tune_online got a str to start from")):
        _run(tmp_path, "paper-baseline", "cql")


def test_config_validates() -> None:
    with pytest.raises(ValueError, match=re.escape("OnlineConfig n_steps = 0; expected an int")):
        OnlineConfig(n_steps=0)
