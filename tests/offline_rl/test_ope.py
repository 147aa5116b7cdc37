"""Tests of evaluate_off_policy (DiscreteFQE on held-out logs, support caveats)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from d3rlpy.logging import NoopAdapterFactory
from routeplay.datasets import TaskMixConfig, generate_task_mix
from routeplay.offline_rl import (
    OPEConfig,
    TrainConfig,
    TrainResult,
    build_dataset,
    evaluate_off_policy,
    train_router,
)
from routeplay.replay import make_cluster, make_router, read_transitions
from routeplay.replay.rl._transitions import log_transitions


def _log(tmp: Path, name: str, seeds: range, epsilon: float) -> Path:
    eps = [generate_task_mix(TaskMixConfig(n_requests=10, seed=s)) for s in seeds]
    res = log_transitions(
        eps,
        make_cluster("v100x2"),
        make_router("round-robin"),
        reward="paper-baseline",
        path=tmp / f"{name}.parquet",
        epsilon=epsilon,
        seed=0,
    )
    return res.path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path, Path]:
    tmp = tmp_path_factory.mktemp("ope")
    train = _log(tmp, "train", range(3), 0.1)
    cfg = TrainConfig(
        algorithm="cql", n_steps=10, n_steps_per_epoch=10, checkpoint_every_steps=10, batch_size=16
    )
    result = train_router(
        cfg, build_dataset(train), run_dir=tmp / "run", logger_adapter=NoopAdapterFactory()
    )
    held_eps = _log(tmp, "held-eps", range(100, 102), 0.1)
    held_det = _log(tmp, "held-det", range(100, 102), 0.0)
    return result, held_eps, held_det


def test_fqe_value_and_caveats(trained: tuple[object, Path, Path]) -> None:
    result, held, _ = trained
    ope = evaluate_off_policy(result, held, config=OPEConfig(n_steps=10, batch_size=16))
    frame, _ = read_transitions(held)
    assert ope.n_transitions == frame.height
    assert ope.n_episodes == 2 and len(ope.fqe_values) == 2
    assert np.isfinite(ope.fqe_value)
    assert ope.fqe_value == pytest.approx(float(np.mean(ope.fqe_values)))
    # epsilon-random logs give every action non-zero propensity
    assert ope.support == 1.0
    assert sum(ope.logged_action_counts) == sum(ope.policy_action_counts) == frame.height
    # behaviour return = mean over episodes of sum_t gamma^t r_t (hand-computed here)
    expected = []
    for _, g in frame.sort("episode", "step").group_by("episode", maintain_order=True):
        r = g["reward"].to_numpy()
        expected.append(float(np.sum(r * 0.99 ** np.arange(r.size))))
    ((name, value, n),) = ope.behaviour_returns
    assert name == "round-robin+eps0.1" and n == 2
    assert value == pytest.approx(float(np.mean(expected)), rel=1e-9)
    table = ope.to_frame()
    assert table["kind"].to_list() == ["fqe", "behaviour-empirical"]
    assert "support" in ope.summary() and "caveat" in ope.summary()


def test_deterministic_logs_support_equals_agreement(trained: tuple[object, Path, Path]) -> None:
    result, _, held_det = trained
    ope = evaluate_off_policy(result, held_det, config=OPEConfig(n_steps=10, batch_size=16))
    assert ope.support == ope.agreement
    logged = np.array(ope.logged_action_counts)
    expected_unsupported = tuple(
        int(a) for a, c in enumerate(ope.policy_action_counts) if c > 0 and logged[a] == 0
    )
    assert ope.unsupported_actions == expected_unsupported


def test_width_mismatch_is_an_error(trained: tuple[object, Path, Path]) -> None:
    result, held, _ = trained
    frame, _ = read_transitions(held)
    narrow = frame.with_columns(
        pl.col("obs").arr.head(3).list.to_array(3), pl.col("next_obs").arr.head(3).list.to_array(3)
    )
    with pytest.raises(ValueError, match=re.escape("held-out observations have width 3")):
        evaluate_off_policy(result, narrow, config=OPEConfig(n_steps=10))


def test_config_validates() -> None:
    with pytest.raises(ValueError, match=re.escape("OPEConfig.n_steps = 0; expected an int >= 1.")):
        OPEConfig(n_steps=0)


def test_training_reward_transform_is_applied_to_fqe_and_behaviour_returns(
    trained: tuple[object, Path, Path], tmp_path: Path
) -> None:
    result, held, _ = trained
    assert isinstance(result, TrainResult)
    cfg = TrainConfig.from_dict(
        {**result.config.to_dict(), "reward_normalization": "scale", "reward_scale": 1 / 60}
    )
    train = build_dataset(_log(tmp_path, "train", range(3), 0.1))
    scaled = train_router(cfg, train, run_dir=tmp_path / "run", logger_adapter=NoopAdapterFactory())
    raw_ope = evaluate_off_policy(result, held, config=OPEConfig(n_steps=10, batch_size=16))
    ope = evaluate_off_policy(scaled, held, config=OPEConfig(n_steps=10, batch_size=16))
    assert (ope.reward_shift, ope.reward_factor) == (0.0, 1 / 60)
    assert (raw_ope.reward_shift, raw_ope.reward_factor) == (0.0, 1.0)
    ((_, raw_value, _),) = raw_ope.behaviour_returns
    ((_, value, _),) = ope.behaviour_returns
    assert value == pytest.approx(raw_value / 60, rel=1e-6)
    assert any("transformed reward units" in c for c in ope.caveats())
    assert not any("transformed reward units" in c for c in raw_ope.caveats())
