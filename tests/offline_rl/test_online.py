"""Tests of fine_tune_online (fit_online against RoutingEnv, learning curves)."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import torch
from d3rlpy.logging import NoopAdapterFactory
from polars.testing import assert_frame_equal
from routeplay.datasets import TaskMixConfig, generate_task_mix
from routeplay.offline_rl import (
    CURVE_SCHEMA,
    VALIDATION_SCHEMA,
    BoundedWaitRouter,
    OnlineConfig,
    OnlineResult,
    PolicyRouter,
    TrainConfig,
    build_dataset,
    fine_tune_online,
    train_router,
)
from routeplay.offline_rl._online import CHART_METRICS
from routeplay.replay import (
    WAIT,
    ReplayConfig,
    default_layout,
    make_cluster,
    make_router,
    run_replay,
)
from routeplay.replay.rl._rewards import StepOutcome
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


# -- validation selection (issue 12): the kept policy never loses to its start ----------

VALIDATION = [generate_task_mix(TaskMixConfig(n_requests=20, seed=100 + s)) for s in range(2)]
SELECT = OnlineConfig(
    n_steps=60,
    n_steps_per_epoch=20,
    update_start_step=8,
    epsilon_start=1.0,
    epsilon_end=0.0,
    eval_every_steps=20,
    max_router_wait_s=1.0,
)


class _WaitReward:
    """+1 for WAIT, -1 for routing: fine-tuning on it is forced to learn "always WAIT"."""

    def __init__(self, sign: float = 1.0) -> None:
        self.name = "wait-lover" if sign > 0 else "wait-hater"
        self._sign = sign

    def __call__(self, outcome: StepOutcome) -> float:
        return self._sign * (1.0 if outcome.action == WAIT else -1.0)


def _select(
    tmp: Path, start: object, reward: object, config: OnlineConfig = SELECT, **kw: object
) -> OnlineResult:
    return fine_tune_online(
        start,
        EPISODES,
        CLUSTER,
        reward=reward,  # type: ignore[arg-type]
        run_dir=tmp,
        config=config,
        logger_adapter=NoopAdapterFactory(),
        **{"validation_episodes": VALIDATION, **kw},  # type: ignore[arg-type]
    )


def _weights(algo: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in algo.impl.q_function.state_dict().items()}


def _rescore(algo: Any) -> float:
    """The validation mean E2E of a policy, computed here independently of the selector."""
    layout = default_layout(CLUSTER, None, None)
    router = BoundedWaitRouter(
        PolicyRouter(algo, layout=layout),
        max_router_wait_s=1.0,
        fallback=make_router("least-loaded"),
    )
    means = [
        float(run_replay(t, CLUSTER, router, config=ReplayConfig(max_sim_time_s=1e4))
              .requests["e2e_s"].mean())
        for t in VALIDATION
    ]  # fmt: skip
    return sum(means) / len(means)


def test_forced_bad_fine_tuning_returns_the_start_unchanged(tmp_path: Path) -> None:
    # a start that routes: fine-tuned (no selection) on a reward that punishes WAIT
    start = fine_tune_online(
        TrainConfig(algorithm="double-dqn", batch_size=8, learning_rate=1e-2),
        EPISODES, CLUSTER, reward=_WaitReward(-1.0), run_dir=tmp_path / "start",
        config=dataclasses.replace(SELECT, patience=None, eval_every_steps=None),
        logger_adapter=NoopAdapterFactory(),
    ).algo  # fmt: skip
    res = _select(tmp_path / "ft", start, _WaitReward(), dataclasses.replace(SELECT, patience=None))
    val = res.validation
    assert val.schema == VALIDATION_SCHEMA
    assert val["step"].to_list() == [0, 20, 40, 60]
    # the start routes every request; fine-tuning learned to WAIT (the fallback decides)
    assert val["validation_fallback_routes"].to_list()[0] == 0
    assert (val["validation_fallback_routes"][1:] > 0).all()
    assert (val["validation_mean_e2e_s"][1:] > val["validation_mean_e2e_s"][0]).all()
    # ... so the start is kept, unchanged, and the result says so
    assert res.kept_step == 0 and res.improved is False
    assert val["kept"].to_list() == [True, False, False, False]
    assert res.kept_validation_e2e_s == res.start_validation_e2e_s
    assert _rescore(res.algo) == pytest.approx(res.start_validation_e2e_s, rel=1e-12)
    info = json.loads((tmp_path / "ft" / "online.json").read_text())
    assert info["selection"]["start_returned_unchanged"] is True
    assert_frame_equal(pl.read_parquet(tmp_path / "ft" / "validation_curve.parquet"), val)


def test_the_returned_policy_is_the_kept_one_and_never_worse(tmp_path: Path) -> None:
    # a bad start (always WAIT), then fine-tuning that punishes WAIT: it improves
    cfg = dataclasses.replace(SELECT, patience=None, learning_rate=1e-2)
    bad = fine_tune_online(
        TrainConfig(algorithm="double-dqn", batch_size=8, learning_rate=1e-2),
        EPISODES, CLUSTER, reward=_WaitReward(), run_dir=tmp_path / "bad",
        config=dataclasses.replace(cfg, eval_every_steps=None), logger_adapter=NoopAdapterFactory(),
    )  # fmt: skip
    assert bad.kept_step is None and bad.validation.height == 0  # no selection asked
    start_weights = _weights(bad.algo)
    res = _select(tmp_path / "ft", bad.algo, _WaitReward(-1.0), cfg)
    assert res.kept_step is not None and res.kept_step > 0 and res.improved
    assert res.kept_validation_e2e_s is not None and res.start_validation_e2e_s is not None
    assert res.kept_validation_e2e_s < res.start_validation_e2e_s
    kept = res.validation.filter(pl.col("kept"))
    assert kept["step"].to_list() == [res.kept_step]
    assert kept["validation_mean_e2e_s"].item() == res.validation["validation_mean_e2e_s"].min()
    assert _rescore(res.algo) == pytest.approx(res.kept_validation_e2e_s, rel=1e-12)
    assert any(not torch.equal(start_weights[k], v) for k, v in _weights(res.algo).items())
    # the chart frame: long, one value per (step, metric)
    long = pl.read_parquet(tmp_path / "ft" / "online_curve_long.parquet")
    assert long.columns == ["step", "metric", "value", "run"]
    assert set(long["metric"]) <= set(CHART_METRICS)
    assert long.filter(pl.col("metric") == "validation_mean_e2e_s").height == res.validation.height
    assert (long["run"] == "wait-hater").all()


def test_early_stopping_stops_after_patience(tmp_path: Path) -> None:
    start = TrainConfig(algorithm="double-dqn", batch_size=8, learning_rate=1e-2)
    cfg = dataclasses.replace(SELECT, n_steps=200, patience=2)
    res = _select(tmp_path, start, _WaitReward(), cfg)
    assert res.stopped_early
    assert res.n_steps_done == 40  # start, then 2 evaluations without improvement
    assert res.validation["step"].to_list() == [0, 20, 40]
    assert res.kept_step == 0
    assert json.loads((tmp_path / "online.json").read_text())["selection"]["stopped_early"]


def test_selection_is_deterministic_for_a_seed(tmp_path: Path) -> None:
    start = TrainConfig(algorithm="double-dqn", batch_size=8)
    a = _select(tmp_path / "a", start, "paper-baseline")
    b = _select(tmp_path / "b", start, "paper-baseline")
    assert_frame_equal(a.validation, b.validation)
    assert_frame_equal(a.curve, b.curve)
    assert a.validation["loss_mean"].drop_nulls().len() >= 1  # losses are recorded


def test_evaluations_do_not_change_the_training_trajectory(tmp_path: Path) -> None:
    start = TrainConfig(algorithm="double-dqn", batch_size=8)
    plain = fine_tune_online(
        start, EPISODES, CLUSTER, reward="paper-baseline", run_dir=tmp_path / "a",
        config=dataclasses.replace(SELECT, patience=None), logger_adapter=NoopAdapterFactory(),
    )  # fmt: skip
    selected = _select(
        tmp_path / "b", start, "paper-baseline", dataclasses.replace(SELECT, patience=None)
    )
    assert_frame_equal(plain.curve, selected.curve)


def test_validation_episodes_must_be_held_out(tmp_path: Path) -> None:
    start = TrainConfig(algorithm="double-dqn", batch_size=8)
    with pytest.raises(
        ValueError, match=re.escape("validation episode 1 equals training episode 0")
    ):
        _select(tmp_path, start, "paper-baseline", validation_episodes=[VALIDATION[0], EPISODES[0]])
    with pytest.raises(ValueError, match=re.escape("validation_episodes = []; expected at least")):
        _select(tmp_path, start, "paper-baseline", validation_episodes=[])


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"eval_every_steps": 0},
         "OnlineConfig eval_every_steps = 0; expected None or an int >= 1."),
        ({"n_steps": 10, "eval_every_steps": 20},
         "OnlineConfig eval_every_steps = 20 > n_steps = 10; expected at most n_steps"),
        ({"patience": 0}, "OnlineConfig patience = 0; expected None or an int >= 1."),
        ({"patience": 1.5}, "OnlineConfig patience = 1.5; expected None or an int >= 1."),
        ({"min_improvement_s": -0.1},
         "OnlineConfig min_improvement_s = -0.1; expected a finite number of seconds >= 0."),
        ({"learning_rate": 0.0}, "OnlineConfig learning_rate = 0.0; expected None (keep"),
        ({"learning_rate": float("nan")}, "OnlineConfig learning_rate = nan; expected None"),
        ({"max_router_wait_s": float("inf")}, "OnlineConfig max_router_wait_s = inf; expected"),
        ({"sim_slack_s": 0},
         "OnlineConfig sim_slack_s = 0; expected a finite number of seconds > 0."),
        ({"fallback": "nosuch"}, "OnlineConfig fallback: unknown router 'nosuch'"),
        ({"epsilon_start": 2.0}, "OnlineConfig epsilon_start = 2.0; expected a value in [0, 1]."),
    ],
)  # fmt: skip
def test_bad_selection_settings_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        OnlineConfig(**fields)
