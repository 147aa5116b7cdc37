"""train_router: every algorithm path, reproducibility, checkpoints and exact resume."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from d3rlpy.logging import NoopAdapterFactory
from rl_fakes import make_frame
from routeplay.offline_rl import (
    ALGORITHMS,
    RoutingDataset,
    TrainConfig,
    TrainResult,
    build_dataset,
    train_router,
)

TINY: dict[str, Any] = {
    "hidden_units": (16, 16),
    "batch_size": 16,
    "n_steps": 20,
    "n_steps_per_epoch": 5,
    "checkpoint_every_steps": 5,
    "target_update_interval": 4,
}


@pytest.fixture(scope="module")
def dataset() -> RoutingDataset:
    frame = make_frame(
        n_episodes=4,
        n_steps=10,
        obs_size=6,
        n_actions=3,
        seed=11,
        ends=("terminal", "timeout", "terminal", "timeout"),
    )
    return build_dataset(frame, n_actions=3)


def _weights(result: TrainResult) -> list[np.ndarray]:
    """Every parameter of every network (targets included) of the trained learnable."""
    modules = result.algo.impl.modules
    out: list[np.ndarray] = []
    for f in dataclasses.fields(modules):
        module = getattr(modules, f.name)
        if isinstance(module, torch.nn.Module):
            out += [p.detach().numpy().copy() for p in module.parameters()]
    assert out
    return out


def _train(cfg: TrainConfig, ds: RoutingDataset, run_dir: Path, **kw: Any) -> TrainResult:
    return train_router(cfg, ds, run_dir=run_dir, logger_adapter=NoopAdapterFactory(), **kw)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_each_algorithm_trains_and_records_its_run(
    algorithm: str, dataset: RoutingDataset, tmp_path: Path
) -> None:
    cfg = TrainConfig(algorithm=algorithm, seed=3, **TINY)  # type: ignore[arg-type]
    res = _train(cfg, dataset, tmp_path)
    assert type(res.algo).__name__ == ALGORITHMS[algorithm]
    assert res.n_steps_done == 20 and res.n_steps_resumed_from == 0 and res.seed == 3
    assert res.losses["epoch"].to_list() == [1, 2, 3, 4]
    assert res.losses["step"].to_list() == [5, 10, 15, 20]
    assert res.losses["loss"].is_finite().all()
    actions = res.algo.predict(dataset.observations[:5])
    assert actions.shape == (5,) and set(actions.tolist()) <= {0, 1, 2}
    # every d3rlpy default that matters was overridden
    d3cfg = res.algo.config
    assert (d3cfg.batch_size, d3cfg.learning_rate, d3cfg.gamma) == (16, 3e-4, 0.99)
    if algorithm != "bc":
        assert d3cfg.target_update_interval == 4
    assert list(d3cfg.encoder_factory.hidden_units) == [16, 16]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"] == cfg.to_dict() and saved["seed"] == 3
    assert set(saved["versions"]) == {"routeplay", "d3rlpy", "torch"}
    assert saved["versions"]["d3rlpy"] == "2.8.1"
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert state["step"] == 20
    assert (tmp_path / "checkpoint" / "model.pt").is_file()


def test_same_seed_is_bit_identical_and_other_seed_differs(
    dataset: RoutingDataset, tmp_path: Path
) -> None:
    cfg = TrainConfig(algorithm="cql", seed=5, **TINY)
    a = _train(cfg, dataset, tmp_path / "a")
    b = _train(cfg, dataset, tmp_path / "b")
    c = _train(TrainConfig(algorithm="cql", seed=6, **TINY), dataset, tmp_path / "c")
    assert all(np.array_equal(x, y) for x, y in zip(_weights(a), _weights(b), strict=True))
    assert a.losses.equals(b.losses)
    assert not all(np.array_equal(x, y) for x, y in zip(_weights(a), _weights(c), strict=True))


class _Crash(RuntimeError):
    pass


@pytest.mark.parametrize("algorithm", ["cql", "double-dqn"])
def test_resume_after_crash_matches_straight_run_bit_for_bit(
    algorithm: str, dataset: RoutingDataset, tmp_path: Path
) -> None:
    cfg = TrainConfig(algorithm=algorithm, seed=2, **TINY)  # type: ignore[arg-type]
    straight = _train(cfg, dataset, tmp_path / "straight")

    steps_seen: list[int] = []

    def crash_at_12(done: int) -> None:
        steps_seen.append(done)
        if done == 12:
            raise _Crash("simulated interruption")

    with pytest.raises(_Crash):
        _train(cfg, dataset, tmp_path / "resumed", callback=crash_at_12)
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 10  # last checkpoint before the crash

    resumed = _train(cfg, dataset, tmp_path / "resumed", callback=steps_seen.append)
    assert resumed.n_steps_resumed_from == 10
    assert resumed.n_steps_done == 20
    # steps 11..20 run after the resume: none skipped, none run twice from the checkpoint
    assert steps_seen == list(range(1, 13)) + list(range(11, 21))
    assert all(
        np.array_equal(x, y) for x, y in zip(_weights(straight), _weights(resumed), strict=True)
    )
    assert straight.losses.equals(resumed.losses)


def test_finished_run_resumes_to_a_no_op_and_resume_false_starts_over(
    dataset: RoutingDataset, tmp_path: Path
) -> None:
    cfg = TrainConfig(algorithm="bc", seed=1, **TINY)
    first = _train(cfg, dataset, tmp_path)
    again = _train(cfg, dataset, tmp_path)
    assert again.n_steps_resumed_from == 20 and again.n_steps_done == 20
    assert all(np.array_equal(x, y) for x, y in zip(_weights(first), _weights(again), strict=True))
    fresh = _train(cfg, dataset, tmp_path, resume=False)
    assert fresh.n_steps_resumed_from == 0 and fresh.n_steps_done == 20


def test_resume_into_a_run_dir_of_another_config_is_an_error(
    dataset: RoutingDataset, tmp_path: Path
) -> None:
    _train(TrainConfig(algorithm="bc", seed=1, **TINY), dataset, tmp_path)
    other = TrainConfig(algorithm="bc", seed=2, **TINY)
    with pytest.raises(
        ValueError, match=re.escape("holds a checkpoint of a different run; differing fields")
    ) as info:
        _train(other, dataset, tmp_path)
    assert "'seed': (1, 2)" in str(info.value)


def test_default_logger_writes_into_run_dir_not_cwd(
    dataset: RoutingDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    cfg = TrainConfig(algorithm="bc", seed=0, **{**TINY, "n_steps": 10})
    train_router(cfg, dataset, run_dir=tmp_path / "run")
    assert list(cwd.iterdir()) == []
    assert (tmp_path / "run" / "d3rlpy" / "loss.csv").read_text().count("\n") == 2


def test_config_validation_messages() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "TrainConfig.algorithm = 'sac'; expected one of ['cql', 'bcq', 'bc', 'double-dqn']."
        ),
    ):
        TrainConfig(algorithm="sac")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError, match=re.escape("TrainConfig.batch_size = 0; expected a positive int.")
    ):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match=re.escape("TrainConfig.hidden_units = ()")):
        TrainConfig(hidden_units=())
    with pytest.raises(ValueError, match=re.escape("TrainConfig.gamma = 1.5")):
        TrainConfig(gamma=1.5)
    cfg = TrainConfig(algorithm="bcq", hidden_units=(8,))
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_show_progress_draws_a_tqdm_bar_on_stderr(
    dataset: RoutingDataset, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = TrainConfig(algorithm="bc", seed=0, **{**TINY, "n_steps": 10})
    _train(cfg, dataset, tmp_path / "quiet")
    assert "train bc" not in capsys.readouterr().err
    _train(cfg, dataset, tmp_path / "bar", show_progress=True)
    assert "train bc" in capsys.readouterr().err


# -- reward normalisation ------------------------------------------------------------


def test_reward_scale_is_applied_to_every_sampled_batch(
    dataset: RoutingDataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from routeplay.offline_rl import _train as train_mod

    seen: list[tuple[np.ndarray, np.ndarray]] = []
    original = train_mod._Sampler.batch

    def spy(self: Any, step: int) -> Any:
        batch = original(self, step)
        raw = original(train_mod._Sampler(dataset, self._seed, self._batch_size), step)
        seen.append((np.asarray(batch.rewards), np.asarray(raw.rewards)))
        return batch

    monkeypatch.setattr(train_mod._Sampler, "batch", spy)
    cfg = TrainConfig(
        algorithm="cql", seed=3, reward_normalization="scale", reward_scale=0.25, **TINY
    )
    result = _train(cfg, dataset, tmp_path)
    assert len(seen) == 20
    for scaled, raw in seen:
        assert np.any(raw != 0.0)
        np.testing.assert_array_equal(scaled, (raw.astype(np.float64) * 0.25).astype(np.float32))
    t = result.reward_transform
    assert t is not None and (t.normalization, t.shift, t.factor) == ("scale", 0.0, 0.25)


def test_standardize_uses_training_statistics_and_is_recorded(
    dataset: RoutingDataset, tmp_path: Path
) -> None:
    cfg = TrainConfig(algorithm="bc", seed=0, reward_normalization="standardize", **TINY)
    result = _train(cfg, dataset, tmp_path)
    raw = dataset.rewards.astype(np.float64)
    t = result.reward_transform
    assert t is not None
    assert t.shift == pytest.approx(raw.mean()) and t.factor == pytest.approx(1.0 / raw.std())
    z = t.apply(dataset.rewards).astype(np.float64)
    assert z.mean() == pytest.approx(0.0, abs=1e-5) and z.std() == pytest.approx(1.0, rel=1e-5)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["config"]["reward_normalization"] == "standardize"
    assert saved["config"]["reward_scale"] == 1.0
    assert saved["reward_transform"] == t.to_dict()
    assert TrainConfig.from_dict(saved["config"]) == cfg


def test_raw_rewards_are_the_default_and_scaling_changes_training(
    dataset: RoutingDataset, tmp_path: Path
) -> None:
    raw = _train(TrainConfig(algorithm="cql", seed=4, **TINY), dataset, tmp_path / "raw")
    assert raw.reward_transform is not None and raw.reward_transform.factor == 1.0
    np.testing.assert_array_equal(raw.reward_transform.apply(dataset.rewards), dataset.rewards)
    scaled_cfg = TrainConfig(
        algorithm="cql", seed=4, reward_normalization="scale", reward_scale=1 / 60, **TINY
    )
    scaled = _train(scaled_cfg, dataset, tmp_path / "scaled")
    assert not all(
        np.array_equal(x, y) for x, y in zip(_weights(raw), _weights(scaled), strict=True)
    )


def test_resume_with_standardized_rewards_is_bit_identical(
    dataset: RoutingDataset, tmp_path: Path
) -> None:
    cfg = TrainConfig(
        algorithm="cql", seed=5, reward_normalization="standardize", reward_scale=0.5, **TINY
    )
    straight = _train(cfg, dataset, tmp_path / "straight")

    def crash_at_7(done: int) -> None:
        if done == 7:
            raise _Crash("simulated interruption")

    with pytest.raises(_Crash):
        _train(cfg, dataset, tmp_path / "resumed", callback=crash_at_7)
    resumed = _train(cfg, dataset, tmp_path / "resumed")
    assert resumed.n_steps_resumed_from == 5 and resumed.n_steps_done == 20
    assert all(
        np.array_equal(x, y) for x, y in zip(_weights(straight), _weights(resumed), strict=True)
    )
    assert straight.losses.equals(resumed.losses)
    assert straight.reward_transform == resumed.reward_transform
    state = json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())
    assert state["reward_transform"] == straight.reward_transform.to_dict()


def test_reward_normalization_validation_messages() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape(
            "TrainConfig.reward_normalization = 'minmax'; expected one of "
            "['none', 'scale', 'standardize']."
        ),
    ):
        TrainConfig(reward_normalization="minmax")
    with pytest.raises(
        ValueError, match=re.escape("TrainConfig.reward_scale = 0.0; expected a finite float > 0.")
    ):
        TrainConfig(reward_normalization="scale", reward_scale=0.0)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "TrainConfig.reward_scale = 2.0 with reward_normalization='none'; expected 1.0."
        ),
    ):
        TrainConfig(reward_scale=2.0)


def test_standardize_on_constant_rewards_is_an_error(tmp_path: Path) -> None:
    frame = make_frame(n_episodes=2, n_steps=5, obs_size=3, n_actions=2, seed=0)
    frame = frame.with_columns(pl.lit(1.0).alias("reward"))
    ds = build_dataset(frame, n_actions=2)
    cfg = TrainConfig(algorithm="bc", reward_normalization="standardize", **TINY)
    with pytest.raises(
        ValueError,
        match=re.escape("reward_normalization='standardize' but the training rewards have std"),
    ):
        _train(cfg, ds, tmp_path)
