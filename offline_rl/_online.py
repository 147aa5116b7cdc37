"""Offline-to-online fine-tuning against :class:`~routeplay.replay.RoutingEnv` (d3rlpy fit_online).

:func:`fine_tune_online` continues a policy trained offline (or starts a fresh one
from a :class:`~routeplay.offline_rl.TrainConfig`, e.g. DoubleDQN for online RL on a
heterogeneous cluster, System B of docs/design.md) with ``algo.fit_online`` in the
replay simulator.

*Choice*: the offline algorithm itself is continued (DiscreteCQL/DiscreteBCQ keep
their conservative penalty / action filter online), rather than a DoubleDQN
initialised with ``copy_q_function_from``: it needs no second network, keeps the
constraint that made the offline policy safe while the online data is still scarce,
and works for every algorithm ``train_router`` trains (BC included). The replay
buffer is a FIFO buffer seeded with the offline dataset's episodes when one is given
(``offline_dataset=``), so early updates mix offline and fresh transitions.

Exploration: ``LinearDecayEpsilonGreedy(epsilon_start -> epsilon_end over
epsilon_decay_steps)``. d3rlpy draws exploration numbers from numpy's global state;
``d3rlpy.seed(config.seed)`` is called inside the call, and the env and its action
space are seeded, so a run is reproducible (same torch thread count).

Episode counter: the workload-guided reward weighs the heuristic penalty by
``exp(-0.5 k)`` for episode ``k``. fit_online resets the env without options, so the
env is wrapped (:class:`_CurveRecorder`) to pass ``options={"episode_index": k}`` on
every reset, with ``k`` = episodes started in this call (0, 1, 2, ...): the decay
advances exactly once per episode. The same wrapper records the learning curve.

Unbounded WAITs: episodes are truncated after ``max_steps_per_episode`` decisions
(default ``4 x`` the longest episode's requests), so a policy that WAITs forever
cannot stall training; a truncated episode has a null mean E2E in the curve.

Learning curve (``run_dir/learning_curve.parquet``, one row per finished or
truncated episode): ``step`` (env steps done at the episode's end), ``episode``
(``k``), ``return`` (undiscounted reward sum), ``mean_e2e_s`` and ``p99_e2e_s``
(queueing included; null when truncated), ``n_requests``, ``truncated``,
``epsilon`` (exploration rate at that step), ``reward`` (reward name).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np
import polars as pl
from routeplay.estimator._protocols import OutputLengthPredictor
from routeplay.replay._types import ClusterConfig
from routeplay.replay.rl._env import RoutingEnv
from routeplay.replay.rl._rewards import RewardFunction, make_reward

from ._dataset import RoutingDataset, quiet_d3rlpy
from ._train import TrainConfig, TrainResult, make_learnable

if TYPE_CHECKING:
    from d3rlpy.logging import LoggerAdapterFactory

__all__ = ["CURVE_SCHEMA", "OnlineConfig", "OnlineResult", "fine_tune_online"]

#: Columns of the learning curve.
CURVE_SCHEMA = pl.Schema(
    {
        "step": pl.Int64(),
        "episode": pl.Int64(),
        "return": pl.Float64(),
        "mean_e2e_s": pl.Float64(),
        "p99_e2e_s": pl.Float64(),
        "n_requests": pl.Int64(),
        "truncated": pl.Boolean(),
        "epsilon": pl.Float64(),
        "reward": pl.String(),
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class OnlineConfig:
    """Settings of an online fine-tuning run.

    Attributes:
        n_steps: environment steps (= routing decisions) in total.
        n_steps_per_epoch: steps per d3rlpy epoch (logging granularity).
        update_start_step: env steps before the first gradient update.
        update_interval: env steps between updates.
        buffer_limit: FIFO replay buffer capacity (transitions).
        epsilon_start: exploration rate at step 0.
        epsilon_end: exploration rate after the decay.
        epsilon_decay_steps: steps of the linear decay (``None``: half of ``n_steps``).
        max_steps_per_episode: truncate an episode after this many decisions
            (``None``: 4 x the longest episode's request count).
        seed: seeds d3rlpy (torch, numpy's global state for the explorer), the env
            and its action space.

    Example:
        >>> OnlineConfig(n_steps=100).epsilon_start
        0.3
        >>> OnlineConfig(epsilon_start=0.1, epsilon_end=0.2)
        Traceback (most recent call last):
        ...
        ValueError: OnlineConfig epsilon_end = 0.2 > epsilon_start = 0.1; expected a decay.
    """

    n_steps: int = 10_000
    n_steps_per_epoch: int = 1000
    update_start_step: int = 0
    update_interval: int = 1
    buffer_limit: int = 200_000
    epsilon_start: float = 0.3
    epsilon_end: float = 0.02
    epsilon_decay_steps: int | None = None
    max_steps_per_episode: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_steps", "n_steps_per_epoch", "update_interval", "buffer_limit"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"OnlineConfig {name} = {value!r}; expected an int >= 1.")
        for name in ("update_start_step", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"OnlineConfig {name} = {value!r}; expected an int >= 0.")
        for name in ("epsilon_decay_steps", "max_steps_per_episode"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"OnlineConfig {name} = {value!r}; expected None or an int >= 1.")
        for name in ("epsilon_start", "epsilon_end"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"OnlineConfig {name} = {value!r}; expected a value in [0, 1].")
        if self.epsilon_end > self.epsilon_start:
            raise ValueError(
                f"OnlineConfig epsilon_end = {self.epsilon_end} > epsilon_start = "
                f"{self.epsilon_start}; expected a decay."
            )

    @property
    def decay_steps(self) -> int:
        """Steps of the epsilon decay (``epsilon_decay_steps`` or ``n_steps // 2``)."""
        if self.epsilon_decay_steps is not None:
            return self.epsilon_decay_steps
        return max(1, self.n_steps // 2)

    def epsilon_at(self, step: int) -> float:
        """The exploration rate after ``step`` env steps (d3rlpy's linear decay)."""
        frac = min(1.0, step / self.decay_steps)
        return self.epsilon_start + (self.epsilon_end - self.epsilon_start) * frac


@dataclass(frozen=True, slots=True, kw_only=True)
class OnlineResult:
    """A finished online fine-tuning run.

    Attributes:
        algo: the fine-tuned d3rlpy learnable.
        config: the online settings.
        reward: the reward's name.
        curve: the learning curve (:data:`CURVE_SCHEMA`).
        n_steps_done: env steps taken.
        n_episodes: episodes started.
        run_dir: folder with ``learning_curve.parquet``, ``online.json`` and d3rlpy logs.
        wall_time_s: wall time of the call.
    """

    algo: Any
    config: OnlineConfig
    reward: str
    curve: pl.DataFrame
    n_steps_done: int
    n_episodes: int
    run_dir: Path
    wall_time_s: float

    def to_frame(self) -> pl.DataFrame:
        """The learning curve."""
        return self.curve


class _CurveRecorder(gym.Wrapper[Any, Any, Any, Any]):
    """Pass ``episode_index=k`` on every reset and record one curve row per episode."""

    def __init__(self, env: RoutingEnv, config: OnlineConfig, reward: str) -> None:
        super().__init__(env)
        self._cfg = config
        self._reward = reward
        self.rows: list[dict[str, Any]] = []
        self.n_episodes = 0
        self.n_steps = 0
        self._return = 0.0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        opts = dict(options or {})
        opts.setdefault("episode_index", self.n_episodes)
        self.n_episodes += 1
        self._return = 0.0
        return self.env.reset(seed=seed, options=opts)

    def step(self, action: Any) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.n_steps += 1
        self._return += float(reward)
        if terminated or truncated:
            env: RoutingEnv = self.env
            mean = p99 = None
            n_req = 0
            if terminated:
                req = env.result().requests
                n_req = req.height
                mean = float(req["e2e_s"].mean())
                p99 = float(req["e2e_s"].quantile(0.99, "linear"))
            self.rows.append(
                {
                    "step": self.n_steps,
                    "episode": env.episode,
                    "return": self._return,
                    "mean_e2e_s": mean,
                    "p99_e2e_s": p99,
                    "n_requests": n_req,
                    "truncated": bool(truncated),
                    "epsilon": self._cfg.epsilon_at(self.n_steps),
                    "reward": self._reward,
                }
            )
        return obs, reward, terminated, truncated, info


def _algo_from(start: TrainResult | TrainConfig | Any, env: RoutingEnv) -> Any:
    if isinstance(start, TrainResult):
        return start.algo
    if isinstance(start, TrainConfig):
        return make_learnable(start, obs_size=env.layout.size, n_actions=int(env.action_space.n))
    if hasattr(start, "fit_online") and getattr(start, "impl", None) is not None:
        return start
    raise ValueError(
        f"fine_tune_online got a {type(start).__name__} to start from; expected a "
        "TrainResult, a TrainConfig (fresh algorithm) or a built d3rlpy Q-learning algorithm."
    )


def fine_tune_online(
    start: TrainResult | TrainConfig | Any,
    episodes: Sequence[pl.DataFrame] | Callable[[np.random.Generator], pl.DataFrame],
    cluster: ClusterConfig,
    *,
    reward: RewardFunction | str,
    run_dir: str | Path,
    config: OnlineConfig | None = None,
    predictor: OutputLengthPredictor | None = None,
    offline_dataset: RoutingDataset | None = None,
    logger_adapter: LoggerAdapterFactory | None = None,
    show_progress: bool = False,
) -> OnlineResult:
    """Fine-tune (or train from scratch) a routing policy online in the replay simulator.

    Args:
        start: a :class:`TrainResult` (continue its algorithm), a :class:`TrainConfig`
            (build a fresh one: e.g. ``algorithm="double-dqn"``) or a built d3rlpy
            algorithm.
        episodes: training traces (the env picks one uniformly per episode with its
            seeded generator) or a callable ``rng -> trace``.
        cluster: the cluster.
        reward: reward function or name (``paper-baseline``, ``paper-workload-aware``,
            ``paper-workload-guided``, ``queue-balance``, ``latency-area``).
        run_dir: output folder (created).
        config: online settings (default :class:`OnlineConfig`).
        predictor: output-length predictor (the one the offline policy was trained with).
        offline_dataset: if given, its episodes seed the replay buffer.
        logger_adapter: d3rlpy logger factory (default ``FileAdapterFactory(run_dir)``).
        show_progress: d3rlpy's progress bar.

    Returns:
        An :class:`OnlineResult`; the curve is also written to
        ``run_dir/learning_curve.parquet``.

    Raises:
        ValueError: a bad ``start``, or a policy whose shape does not fit the env.
    """
    import d3rlpy
    import torch
    from d3rlpy.algos import LinearDecayEpsilonGreedy
    from d3rlpy.dataset import create_fifo_replay_buffer
    from d3rlpy.logging import FileAdapterFactory

    cfg = config if config is not None else OnlineConfig()
    t0 = time.perf_counter()
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    reward_fn = make_reward(reward) if isinstance(reward, str) else reward
    if callable(episodes):
        max_steps = cfg.max_steps_per_episode or 100_000
    else:
        longest = max(int(e.height) for e in episodes)
        max_steps = cfg.max_steps_per_episode or 4 * longest
    env = RoutingEnv(
        episodes if callable(episodes) else list(episodes),
        cluster,
        reward=reward_fn,
        predictor=predictor,
        max_steps=max_steps,
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with quiet_d3rlpy():
            d3rlpy.seed(cfg.seed)
            algo = _algo_from(start, env)
            shape = (int(algo.impl.observation_shape[0]), int(algo.impl.action_size))
            want = (env.layout.size, int(env.action_space.n))
            if shape != want:
                raise ValueError(
                    f"policy has (observation size, actions) = {shape} but the env gives "
                    f"{want}; expected them equal. Fix: fine-tune on the cluster and "
                    "predictor the policy was trained with."
                )
            # seed the env's generator and action space (fit_online resets without a seed)
            env.reset(seed=cfg.seed)
            env.action_space.seed(cfg.seed)
            wrapped = _CurveRecorder(env, cfg, str(reward_fn.name))
            kwargs: dict[str, Any] = {}
            if offline_dataset is not None:
                kwargs["episodes"] = offline_dataset.mdp.episodes
            else:
                kwargs["env"] = wrapped
            buffer = create_fifo_replay_buffer(limit=cfg.buffer_limit, **kwargs)
            explorer = LinearDecayEpsilonGreedy(
                start_epsilon=cfg.epsilon_start,
                end_epsilon=cfg.epsilon_end,
                duration=cfg.decay_steps,
            )
            algo.fit_online(
                wrapped,
                buffer=buffer,
                explorer=explorer,
                n_steps=cfg.n_steps,
                n_steps_per_epoch=min(cfg.n_steps_per_epoch, cfg.n_steps),
                update_interval=cfg.update_interval,
                update_start_step=cfg.update_start_step,
                experiment_name="online",
                with_timestamp=False,
                logger_adapter=(
                    logger_adapter
                    if logger_adapter is not None
                    else FileAdapterFactory(root_dir=str(out))
                ),
                show_progress=show_progress,
            )
    finally:
        torch.set_num_threads(previous)
    curve = pl.DataFrame(wrapped.rows, schema=CURVE_SCHEMA)
    tmp = out / "learning_curve.parquet.tmp"
    curve.write_parquet(tmp)
    os.replace(tmp, out / "learning_curve.parquet")
    (out / "online.json").write_text(
        json.dumps(
            {
                "config": dataclasses.asdict(cfg),
                "reward": str(reward_fn.name),
                "start": type(start).__name__,
                "n_steps_done": wrapped.n_steps,
                "n_episodes": wrapped.n_episodes,
            },
            indent=2,
            sort_keys=True,
        ),
        encoding="utf-8",
    )
    return OnlineResult(
        algo=algo,
        config=cfg,
        reward=str(reward_fn.name),
        curve=curve,
        n_steps_done=wrapped.n_steps,
        n_episodes=wrapped.n_episodes,
        run_dir=out,
        wall_time_s=time.perf_counter() - t0,
    )
