"""RoutingEnv: gymnasium contract, determinism, equivalence with run_replay, rewards."""

from __future__ import annotations

import re
import warnings

import numpy as np
import polars as pl
import pytest
from gymnasium.utils.env_checker import check_env
from polars.testing import assert_frame_equal
from routeplay.datasets import TaskMixConfig, generate_task_mix, split_episodes
from routeplay.estimator._latency import LinearLatencyModel
from routeplay.replay._types import ClusterConfig, InstanceConfig
from routeplay.replay.engine._engine import run_replay
from routeplay.replay.rl._env import RoutingEnv
from routeplay.replay.rl._outcomes import OutcomeTracker
from routeplay.replay.rl._rewards import PaperReward
from routeplay.replay.rl._transitions import log_transitions, read_transitions
from routeplay.replay.routers._builtin import RoundRobinRouter


@pytest.fixture(scope="module")
def cluster() -> ClusterConfig:
    lat = LinearLatencyModel.from_throughput(4000.0)
    return ClusterConfig(
        instances=tuple(
            InstanceConfig(name=f"i{k}", latency=lat, max_running_seqs=4, max_batched_tokens=4096)
            for k in range(2)
        )
    )


@pytest.fixture(scope="module")
def episodes() -> list[pl.DataFrame]:
    trace = generate_task_mix(TaskMixConfig(n_requests=30, rate_per_s=30.0, seed=4))
    return [e.trace for e in split_episodes(trace, n_requests=10)]


def test_check_env_passes(cluster, episodes) -> None:
    env = RoutingEnv(episodes, cluster, max_steps=40)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env, skip_render_check=True)
    env.close()


def test_check_env_with_callable_episodes(cluster) -> None:
    def make(rng: np.random.Generator) -> pl.DataFrame:
        seed = int(rng.integers(2**31))
        return generate_task_mix(TaskMixConfig(n_requests=8, rate_per_s=20.0, seed=seed))

    env = RoutingEnv(make, cluster, reward="queue-balance", max_steps=30)
    check_env(env, skip_render_check=True)


def _rollout(env: RoutingEnv, seed: int, n_max: int = 500) -> tuple[list, list, list]:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    observations, rewards, actions = [obs], [], []
    for _ in range(n_max):
        a = int(rng.integers(env.action_space.n))
        obs, r, term, trunc, _ = env.step(a)
        observations.append(obs)
        rewards.append(r)
        actions.append(a)
        if term or trunc:
            break
    return observations, rewards, actions


def test_same_seed_same_trajectory(cluster, episodes) -> None:
    a = _rollout(RoutingEnv(episodes, cluster), seed=3)
    b = _rollout(RoutingEnv(episodes, cluster), seed=3)
    assert a[2] == b[2]
    assert a[1] == b[1]
    for x, y in zip(a[0], b[0], strict=True):
        np.testing.assert_array_equal(x, y)
    assert len(a[1]) > 10


def test_round_robin_actions_match_run_replay(cluster, episodes) -> None:
    env = RoutingEnv(episodes, cluster, reward="paper-baseline")
    env.reset(seed=0, options={"episode": 1})
    k = 0
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(k % 2)
        k += 1
    assert terminated and not truncated
    assert k == episodes[1].height
    ref = run_replay(episodes[1], cluster, RoundRobinRouter())
    assert_frame_equal(env.result().requests, ref.requests)


def test_env_rewards_equal_logged_rewards(tmp_path, cluster, episodes) -> None:
    """Same MDP online and offline: the env's rewards for RR actions equal the log's."""
    log = log_transitions(
        [episodes[0]],
        cluster,
        RoundRobinRouter(),
        reward="paper-workload-guided",
        path=tmp_path / "a.parquet",
    )
    frame, _ = read_transitions(log.path)
    env = RoutingEnv([episodes[0]], cluster, reward="paper-workload-guided")
    obs, _ = env.reset(seed=0)
    rewards, observations = [], [obs]
    for a in frame["action"].to_list():
        obs, r, term, trunc, _ = env.step(a)
        rewards.append(r)
        observations.append(obs)
    assert term and not trunc
    assert rewards == frame["reward"].to_list()
    np.testing.assert_array_equal(np.stack(observations[:-1]), frame["obs"].to_numpy())
    np.testing.assert_array_equal(np.stack(observations[1:]), frame["next_obs"].to_numpy())


def test_completion_term_sums_to_60_per_request(cluster, episodes) -> None:
    env = RoutingEnv(episodes, cluster, reward=PaperReward(variant="baseline"))
    _, info = env.reset(seed=1, options={"episode": 2})
    completions = 0
    total_reward = 0.0
    deficit = 0.0
    term = trunc = False
    k = 0
    while not (term or trunc):
        _, r, term, trunc, info = env.step(k % 3)  # includes WAIT (index 2)
        completions += info["n_completed"]
        deficit += info["progress_deficit"]
        total_reward += r
        k += 1
    assert completions == episodes[2].height
    assert total_reward == pytest.approx(60.0 * episodes[2].height - deficit, rel=1e-12)
    assert k > episodes[2].height  # WAIT decisions are steps too


def test_truncation_and_episode_counter(cluster, episodes) -> None:
    env = RoutingEnv(episodes, cluster, max_steps=3)
    assert env.episode == -1
    for expected_k in range(3):
        _, info = env.reset(seed=7) if expected_k == 0 else env.reset()
        assert info["episode"] == expected_k == env.episode
        for _ in range(3):
            _, _, term, trunc, info = env.step(0)
            assert info["episode"] == expected_k
        assert trunc and not term
    with pytest.raises(RuntimeError, match=re.escape("RoutingEnv.step called without a pending")):
        env.step(0)
    _, info = env.reset(seed=1)  # a seeded reset restarts the count
    assert info["episode"] == 0
    _, info = env.reset(seed=1, options={"episode_index": 5})
    assert info["episode"] == 5


def test_workload_guided_weight_decays_with_episodes(cluster, episodes) -> None:
    reward = PaperReward(variant="workload-guided")
    env = RoutingEnv([episodes[0]], cluster, reward=reward)
    penalties = []
    for k in range(2):
        env.reset(seed=0) if k == 0 else env.reset()
        env.step(0)
        _, r, _, _, info = env.step(0)  # instance 0 holds the first request: penalised
        penalties.append((r, info))
    (r0, i0), (r1, i1) = penalties
    assert i0["impact_penalty"] == i1["impact_penalty"] > 0
    base = 60.0 * i0["n_completed"] - i0["progress_deficit"]
    assert r0 == pytest.approx(base - 1.0 * i0["impact_penalty"], rel=1e-12)
    assert r1 == pytest.approx(base - np.exp(-0.5) * i1["impact_penalty"], rel=1e-12)


def test_invalid_action_and_inputs(cluster, episodes) -> None:
    env = RoutingEnv(episodes, cluster)
    env.reset(seed=0)
    with pytest.raises(
        ValueError, match=re.escape("action index = 3; expected an int in range(3)")
    ):
        env.step(3)
    with pytest.raises(ValueError, match="empty list of episodes"):
        RoutingEnv([], cluster)
    with pytest.raises(ValueError, match=re.escape("reset option episode = 9")):
        env.reset(options={"episode": 9})
    with pytest.raises(RuntimeError, match="before the episode terminated"):
        env.result()


def _hetero() -> ClusterConfig:
    slow = LinearLatencyModel.from_throughput(1000.0)
    fast = LinearLatencyModel.from_throughput(4000.0)
    return ClusterConfig(
        instances=(
            InstanceConfig(name="slow", latency=slow, max_running_seqs=4),
            InstanceConfig(name="fast", latency=fast, max_running_seqs=4),
        )
    )


def test_minmin_expert_is_recoverable_from_the_observation(episodes) -> None:
    """Min-min's choice is the argmin of the observation's minmin_eta block, every step."""
    from routeplay.replay.routers._registry import make_router

    env = RoutingEnv(episodes[0], _hetero(), expert=make_router("min-min"))
    block = env.layout.block_slice("minmin_eta")
    obs, info = env.reset(seed=0)
    n = 0
    while True:
        assert info["expert_action"] == int(np.argmin(obs[block]))
        obs, _, terminated, truncated, info = env.step(info["expert_action"])
        n += 1
        if terminated or truncated:
            break
    assert "expert_action" not in info and n == episodes[0].height
    # driven by the expert, the env replays exactly like min-min itself
    plain = run_replay(episodes[0], _hetero(), make_router("min-min"))
    assert_frame_equal(env.result().requests, plain.requests)


def test_lookahead_oracle_expert_labels_the_env(episodes) -> None:
    from routeplay.replay.routers._registry import make_router

    expert = make_router("lookahead-oracle")
    env = RoutingEnv(episodes[0], _hetero(), expert=expert)
    obs, info = env.reset(seed=0)
    labels = [info["expert_action"]]
    dts = []
    for _ in range(4):
        obs, _, terminated, _, info = env.step(0)  # the learner drives, the oracle labels
        dts.append(info["dt_s"])
        if terminated:
            break
        labels.append(info["expert_action"])
    assert all(0 <= a <= 2 for a in labels)
    assert expert.n_decisions == len(labels)  # type: ignore[attr-defined]
    assert all(dt >= 0 for dt in dts)


def _trajectory(env: RoutingEnv, seed: int) -> list[tuple[object, ...]]:
    """Every observation (bytes), reward (hex), flag and info value of one episode."""

    def info_key(info: dict[str, object]) -> tuple[object, ...]:
        return tuple((k, repr(v)) for k, v in sorted(info.items()))

    rng = np.random.default_rng(seed)
    obs, info = env.reset(seed=seed)
    rows: list[tuple[object, ...]] = [(obs.tobytes(), info_key(info))]
    while True:
        a = env.n_instances if rng.random() < 0.05 else int(rng.integers(env.n_instances))
        obs, r, term, trunc, info = env.step(a)
        rows.append((obs.tobytes(), float(r).hex(), term, trunc, info_key(info)))
        if term or trunc:
            return rows


def test_shared_impact_estimate_changes_nothing(monkeypatch, episodes) -> None:
    """The tracker reusing the encoder's impact estimate gives the same numbers, bit for bit."""
    env = RoutingEnv(episodes, _hetero(), reward="paper-workload-aware")
    shared = _trajectory(env, seed=2)
    assert env._share_impact
    monkeypatch.setattr(OutcomeTracker, "shares_impact_with", lambda self, encoder: False)
    env = RoutingEnv(episodes, _hetero(), reward="paper-workload-aware")
    separate = _trajectory(env, seed=2)
    assert not env._share_impact
    assert shared == separate
    penalties = [dict(row[4])["impact_penalty"] for row in shared[1:]]  # type: ignore[arg-type]
    assert any(p != "0.0" for p in penalties)  # impact penalties were charged
