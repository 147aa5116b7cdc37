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

Validation selection (``validation_episodes=``): online RL can make a good offline
policy much worse (docs/notes/offline-rl-results.md measured -120 % to -244 %), so a
run is kept only where it beats its start. The start policy is replayed on the
validation episodes before the first step, then the current policy every
``eval_every_steps`` env steps and at the last step (greedy policy, wrapped in
:class:`~routeplay.offline_rl.BoundedWaitRouter` exactly as
:func:`~routeplay.offline_rl.evaluate_routers` wraps learned routers; the score is the
mean over episodes of each episode's mean E2E, the function ``imitate_lookahead``'s
round selection uses). The best policy so far, the start included, is kept (its
networks and optimizer states are snapshotted in memory); an evaluation counts as an
improvement only when it is below the best by more than ``min_improvement_s``; after
``patience`` evaluations in a row without one, training stops early. At the end the
kept policy's weights are loaded back into the algorithm: if no evaluation beat the
start, the start is returned unchanged (``OnlineResult.kept_step == 0``,
``improved`` False). Validation episodes must come from the TRAINING side (e.g. the
last training windows, held out of the online episodes), never from test episodes;
an episode that equals one of the online training episodes is refused. Evaluations
save and restore the global random states (numpy, torch, ``random``), so the
training trajectory does not depend on when evaluations happen.

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

Files in ``run_dir``:

* ``learning_curve.parquet`` (:data:`CURVE_SCHEMA`, one row per finished or truncated
  training episode): ``step`` (env steps done at the episode's end), ``episode``
  (``k``), ``return`` (undiscounted reward sum), ``mean_e2e_s`` and ``p99_e2e_s``
  (queueing included; null when truncated), ``n_requests``, ``truncated``,
  ``epsilon`` (exploration rate at that step), ``reward`` (reward name);
* ``validation_curve.parquet`` (:data:`VALIDATION_SCHEMA`, one row per evaluation,
  step 0 = the start; only with validation episodes);
* ``online_curve_long.parquet``: the validation curve as a long frame ``step``,
  ``metric``, ``value``, ``run`` (:meth:`OnlineResult.chart_frame`), the shape
  ``routeplay.reports``' learning-curve chart reads;
* ``online.json``: settings and the selection (start and kept validation mean E2E,
  kept step, early stop).
"""

# Why this module is long: one function runs the online loop, its validation replays,
# the keep-the-best snapshots and early stopping; the config and the result that
# record them sit beside it.

from __future__ import annotations

import copy
import dataclasses
import math
import os
import random
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
from routeplay.replay.engine._result import ReplayConfig
from routeplay.replay.rl._env import RoutingEnv
from routeplay.replay.rl._rewards import RewardFunction, make_reward
from routeplay.replay.routers._registry import make_router

from ._dataset import RoutingDataset, quiet_d3rlpy
from ._evaluate import (
    DEFAULT_FALLBACK,
    DEFAULT_MAX_ROUTER_WAIT_S,
    DEFAULT_SIM_SLACK_S,
    BoundedWaitRouter,
)
from ._files import write_json_atomic
from ._imitation import _mean_e2e_s
from ._replay_buffer import fifo_replay_buffer
from ._train import TrainConfig, TrainResult, _checkpoint_modules, make_learnable

if TYPE_CHECKING:
    from d3rlpy.logging import LoggerAdapterFactory

__all__ = [
    "CURVE_SCHEMA",
    "VALIDATION_SCHEMA",
    "OnlineConfig",
    "OnlineResult",
    "fine_tune_online",
]

#: Columns of the learning curve (one row per training episode).
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

#: Columns of the validation curve (one row per evaluation; step 0 = the start).
#: ``online_return_mean``: mean return of the training episodes finished since the
#: previous evaluation (null if none); ``loss_mean``: mean of the algorithm's ``loss``
#: over the updates since the previous evaluation (null if none); ``best_so_far``: the
#: evaluation was the best up to then; ``kept``: the returned policy (one row).
VALIDATION_SCHEMA = pl.Schema(
    {
        "step": pl.Int64(),
        "validation_mean_e2e_s": pl.Float64(),
        "improvement_vs_start": pl.Float64(),
        "validation_fallback_routes": pl.Int64(),
        "n_episodes_finished": pl.Int64(),
        "online_return_mean": pl.Float64(),
        "loss_mean": pl.Float64(),
        "n_updates": pl.Int64(),
        "epsilon": pl.Float64(),
        "best_so_far": pl.Boolean(),
        "kept": pl.Boolean(),
        "reward": pl.String(),
    }
)

#: Metrics of :meth:`OnlineResult.chart_frame` (columns of the validation curve).
CHART_METRICS = ("validation_mean_e2e_s", "online_return_mean", "loss_mean")


def _bad_int(value: object, minimum: int) -> bool:
    return isinstance(value, bool) or not isinstance(value, int) or value < minimum


def _bad_number(value: object, *, minimum: float, strict: bool) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    v = float(value)
    return not math.isfinite(v) or (v <= minimum if strict else v < minimum)


@dataclass(frozen=True, slots=True, kw_only=True)
class OnlineConfig:
    """Settings of an online fine-tuning run.

    Attributes:
        n_steps: environment steps (= routing decisions) in total.
        n_steps_per_epoch: steps per d3rlpy epoch (logging granularity).
        update_start_step: env steps before the first gradient update.
        update_interval: env steps between updates.
        buffer_limit: FIFO replay buffer capacity (transitions, >= 2).
        epsilon_start: exploration rate at step 0.
        epsilon_end: exploration rate after the decay.
        epsilon_decay_steps: steps of the linear decay (``None``: half of ``n_steps``).
        max_steps_per_episode: truncate an episode after this many decisions
            (``None``: 4 x the longest episode's request count).
        seed: seeds d3rlpy (torch, numpy's global state for the explorer), the env
            and its action space.
        eval_every_steps: env steps between validation evaluations (with validation
            episodes; the last step is always evaluated); at most ``n_steps``
            (``None``: ``n_steps // 10``, at least 1).
        patience: stop after this many evaluations in a row without improvement
            (``None``: never stop early).
        min_improvement_s: an evaluation improves on the best only when its validation
            mean E2E is lower by more than this (seconds, >= 0).
        learning_rate: learning rate of every optimizer during fine-tuning (``None``:
            keep the start's); the kept start gets its own back.
        max_router_wait_s: validation replays route a request the policy kept waiting
            this long with ``fallback`` (as ``evaluate_routers`` does).
        fallback: registered heuristic of those fallback decisions.
        sim_slack_s: validation replays stop with an error past the latest arrival +
            this many simulated seconds.

    Example:
        >>> OnlineConfig(n_steps=100).epsilon_start, OnlineConfig(n_steps=100).eval_interval
        (0.3, 10)
        >>> OnlineConfig(epsilon_start=0.1, epsilon_end=0.2)
        Traceback (most recent call last):
        ...
        ValueError: OnlineConfig epsilon_end = 0.2 > epsilon_start = 0.1; expected a decay.
        >>> OnlineConfig(n_steps=100, eval_every_steps=500)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: OnlineConfig eval_every_steps = 500 > n_steps = 100; expected at most ...
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
    eval_every_steps: int | None = None
    patience: int | None = 5
    min_improvement_s: float = 0.0
    learning_rate: float | None = None
    max_router_wait_s: float = DEFAULT_MAX_ROUTER_WAIT_S
    fallback: str = DEFAULT_FALLBACK
    sim_slack_s: float = DEFAULT_SIM_SLACK_S

    def __post_init__(self) -> None:
        for name in ("n_steps", "n_steps_per_epoch", "update_interval"):
            value = getattr(self, name)
            if _bad_int(value, 1):
                raise ValueError(f"OnlineConfig {name} = {value!r}; expected an int >= 1.")
        if _bad_int(self.buffer_limit, 2):
            # d3rlpy's FIFO eviction compares the two oldest transitions
            raise ValueError(
                f"OnlineConfig buffer_limit = {self.buffer_limit!r}; expected an int >= 2."
            )
        for name in ("update_start_step", "seed"):
            value = getattr(self, name)
            if _bad_int(value, 0):
                raise ValueError(f"OnlineConfig {name} = {value!r}; expected an int >= 0.")
        for name in (
            "epsilon_decay_steps",
            "max_steps_per_episode",
            "eval_every_steps",
            "patience",
        ):
            value = getattr(self, name)
            if value is not None and _bad_int(value, 1):
                raise ValueError(f"OnlineConfig {name} = {value!r}; expected None or an int >= 1.")
        for name in ("epsilon_start", "epsilon_end"):
            value = getattr(self, name)
            if _bad_number(value, minimum=0.0, strict=False) or value > 1.0:
                raise ValueError(f"OnlineConfig {name} = {value!r}; expected a value in [0, 1].")
        if self.epsilon_end > self.epsilon_start:
            raise ValueError(
                f"OnlineConfig epsilon_end = {self.epsilon_end} > epsilon_start = "
                f"{self.epsilon_start}; expected a decay."
            )
        if self.eval_every_steps is not None and self.eval_every_steps > self.n_steps:
            raise ValueError(
                f"OnlineConfig eval_every_steps = {self.eval_every_steps} > n_steps = "
                f"{self.n_steps}; expected at most n_steps (otherwise only the last step "
                "is evaluated). Fix: lower eval_every_steps or raise n_steps."
            )
        for name in ("min_improvement_s", "max_router_wait_s"):
            value = getattr(self, name)
            if _bad_number(value, minimum=0.0, strict=False):
                raise ValueError(
                    f"OnlineConfig {name} = {value!r}; expected a finite number of seconds >= 0."
                )
        if _bad_number(self.sim_slack_s, minimum=0.0, strict=True):
            raise ValueError(
                f"OnlineConfig sim_slack_s = {self.sim_slack_s!r}; expected a finite number "
                "of seconds > 0."
            )
        if self.learning_rate is not None and _bad_number(
            self.learning_rate, minimum=0.0, strict=True
        ):
            raise ValueError(
                f"OnlineConfig learning_rate = {self.learning_rate!r}; expected None (keep "
                "the start's) or a finite number > 0, e.g. 1e-4."
            )
        if not isinstance(self.fallback, str):
            raise ValueError(
                f"OnlineConfig fallback = {self.fallback!r}; expected a registered heuristic "
                f"name, e.g. {DEFAULT_FALLBACK!r}."
            )
        try:
            make_router(self.fallback)
        except ValueError as exc:
            raise ValueError(f"OnlineConfig fallback: {exc}") from None

    @property
    def eval_interval(self) -> int:
        """Steps between evaluations (``eval_every_steps`` or ``n_steps // 10``)."""
        if self.eval_every_steps is not None:
            return self.eval_every_steps
        return max(1, self.n_steps // 10)

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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (every field)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True, kw_only=True)
class OnlineResult:
    """A finished online fine-tuning run.

    Attributes:
        algo: the d3rlpy learnable holding the KEPT policy (the start when no
            evaluation beat it; the last policy without validation episodes).
        config: the online settings.
        reward: the reward's name.
        curve: the learning curve (:data:`CURVE_SCHEMA`).
        validation: the validation curve (:data:`VALIDATION_SCHEMA`; empty without
            validation episodes).
        n_steps_done: env steps taken (fewer than ``config.n_steps`` after an early stop).
        n_episodes: episodes started.
        kept_step: env step of the kept policy (0 = the start), ``None`` without
            validation episodes.
        start_validation_e2e_s: the start's validation mean E2E (``None`` without).
        kept_validation_e2e_s: the kept policy's validation mean E2E (``None`` without).
        stopped_early: training stopped after ``patience`` evaluations without improvement.
        run_dir: folder with the curves, ``online.json`` and d3rlpy logs.
        wall_time_s: wall time of the call.
    """

    algo: Any
    config: OnlineConfig
    reward: str
    curve: pl.DataFrame
    validation: pl.DataFrame
    n_steps_done: int
    n_episodes: int
    kept_step: int | None
    start_validation_e2e_s: float | None
    kept_validation_e2e_s: float | None
    stopped_early: bool
    run_dir: Path
    wall_time_s: float

    @property
    def improved(self) -> bool | None:
        """Whether a fine-tuned policy beat the start (``None`` without validation)."""
        return None if self.kept_step is None else self.kept_step > 0

    def to_frame(self) -> pl.DataFrame:
        """The learning curve."""
        return self.curve

    def chart_frame(self, run: str | None = None) -> pl.DataFrame:
        """The validation curve as a long frame ``step, metric, value, run``.

        ``metric`` is one of :data:`CHART_METRICS`; null values (no finished episode or
        no update since the previous evaluation) are dropped. ``run`` defaults to the
        reward's name. This is the frame ``routeplay.reports``' learning-curve chart
        reads.
        """
        return _long_curve(self.validation, run if run is not None else self.reward)

    def selection(self) -> dict[str, Any]:
        """JSON-ready summary of the validation selection (``online.json``'s ``selection``)."""
        return {
            "validation": self.kept_step is not None,
            "start_validation_e2e_s": self.start_validation_e2e_s,
            "kept_step": self.kept_step,
            "kept_validation_e2e_s": self.kept_validation_e2e_s,
            "improved": self.improved,
            "start_returned_unchanged": self.kept_step == 0,
            "n_evaluations": self.validation.height,
            "stopped_early": self.stopped_early,
            "n_steps_done": self.n_steps_done,
        }


def _long_curve(validation: pl.DataFrame, run: str) -> pl.DataFrame:
    schema = {"step": pl.Int64, "metric": pl.String, "value": pl.Float64, "run": pl.String}
    parts = [
        validation.select(
            pl.col("step"),
            pl.lit(m).alias("metric"),
            pl.col(m).cast(pl.Float64).alias("value"),
            pl.lit(run).alias("run"),
        ).drop_nulls("value")
        for m in CHART_METRICS
    ]
    if not parts:  # pragma: no cover - CHART_METRICS is not empty
        return pl.DataFrame(schema=schema)
    return pl.concat(parts).cast(schema)  # type: ignore[arg-type]


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


class _EarlyStop(Exception):
    """Raised from fit_online's callback to end training (patience exhausted)."""


class _Selector:
    """Validation evaluations, the best snapshot so far and the early-stopping counter."""

    def __init__(
        self,
        algo: Any,
        episodes: Sequence[pl.DataFrame],
        cluster: ClusterConfig,
        config: OnlineConfig,
        predictor: OutputLengthPredictor | None,
        layout: Any,
        recorder: _CurveRecorder,
        reward: str,
        replay_config: ReplayConfig | None,
    ) -> None:
        self.algo = algo
        self.episodes = list(episodes)
        self.cluster = cluster
        self.cfg = config
        self.predictor = predictor
        self.layout = layout
        self.recorder = recorder
        self.reward = reward
        last = max(float(e["arrival_s"].max()) for e in self.episodes)  # type: ignore[arg-type]
        base = replay_config if replay_config is not None else ReplayConfig()
        if base.max_sim_time_s is None:
            base = dataclasses.replace(base, max_sim_time_s=last + float(config.sim_slack_s))
        self.replay_config = base
        self.rows: list[dict[str, Any]] = []
        self.losses: list[float] = []
        self.best_e2e_s = math.inf
        self.best_step = 0
        self.best_state: dict[str, Any] = {}
        self.since_best = 0
        self._episodes_seen = 0

    def score(self) -> tuple[float, int]:
        """(validation mean E2E, fallback decisions) of the current greedy policy."""
        from ._policy import PolicyRouter

        router = BoundedWaitRouter(
            PolicyRouter(self.algo, layout=self.layout, name="online"),
            max_router_wait_s=self.cfg.max_router_wait_s,
            fallback=make_router(self.cfg.fallback),
        )
        means: list[float] = []
        n_fallback = 0
        for trace in self.episodes:  # one call per episode to read its fallback count
            means.append(
                _mean_e2e_s(router, [trace], self.cluster, self.replay_config, self.predictor)
            )
            n_fallback += router.n_fallback_routes
        return float(np.mean(means)), n_fallback

    def evaluate(self, step: int) -> None:
        """Score the policy after ``step`` env steps; keep it if best; maybe stop early."""
        import torch

        # the evaluation must not move the random streams training draws from
        states = (np.random.get_state(), torch.get_rng_state(), random.getstate())
        try:
            value, n_fallback = self.score()
        finally:
            np.random.set_state(states[0])
            torch.set_rng_state(states[1])
            random.setstate(states[2])
        finished = self.recorder.rows[self._episodes_seen :]
        self._episodes_seen = len(self.recorder.rows)
        returns = [float(r["return"]) for r in finished]
        improved = not self.rows or value < self.best_e2e_s - self.cfg.min_improvement_s
        if improved:
            self.best_e2e_s = value
            self.best_step = step
            self.best_state = {
                name: copy.deepcopy(module.state_dict())
                for name, module in _checkpoint_modules(self.algo).items()
            }
            self.since_best = 0
        else:
            self.since_best += 1
        start = value if not self.rows else float(self.rows[0]["validation_mean_e2e_s"])
        self.rows.append(
            {
                "step": step,
                "validation_mean_e2e_s": value,
                "improvement_vs_start": 1.0 - value / start if start > 0 else None,
                "validation_fallback_routes": n_fallback,
                "n_episodes_finished": len(self.recorder.rows),
                "online_return_mean": float(np.mean(returns)) if returns else None,
                "loss_mean": float(np.mean(self.losses)) if self.losses else None,
                "n_updates": len(self.losses),
                "epsilon": self.cfg.epsilon_at(step),
                "best_so_far": improved,
                "kept": False,
                "reward": self.reward,
            }
        )
        self.losses.clear()
        if self.cfg.patience is not None and self.since_best >= self.cfg.patience:
            raise _EarlyStop

    def callback(self, algo: Any, epoch: int, total_step: int) -> None:
        """fit_online's per-step callback: evaluate every ``eval_every_steps`` and at the end."""
        if total_step % self.cfg.eval_interval == 0 or total_step == self.cfg.n_steps:
            self.evaluate(total_step)

    def restore_best(self) -> None:
        """Load the kept policy's networks and optimizer states into the algorithm."""
        for name, module in _checkpoint_modules(self.algo).items():
            module.load_state_dict(self.best_state[name])

    def frame(self) -> pl.DataFrame:
        """The validation curve with the kept row flagged."""
        rows = [dict(r, kept=r["step"] == self.best_step) for r in self.rows]
        return pl.DataFrame(rows, schema=VALIDATION_SCHEMA)


class _LossTap:
    """Record the ``loss`` of every ``algo.update`` call (fit_online does not expose it)."""

    def __init__(self, algo: Any, sink: Callable[[float], None]) -> None:
        self._algo = algo
        self._sink = sink

    def __enter__(self) -> None:
        original = type(self._algo).update

        def update(batch: Any) -> dict[str, float]:
            out: dict[str, float] = original(self._algo, batch)
            if out:
                self._sink(float(out.get("loss", next(iter(out.values())))))
            return out

        self._algo.update = update  # instance attribute shadows the method

    def __exit__(self, *exc: object) -> None:
        self._algo.__dict__.pop("update", None)


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


def _set_learning_rate(algo: Any, learning_rate: float) -> None:
    for module in _checkpoint_modules(algo).values():
        optim = getattr(module, "optim", None)
        for group in getattr(optim, "param_groups", ()):
            group["lr"] = learning_rate


def _check_validation(
    validation: Sequence[pl.DataFrame] | None,
    episodes: Sequence[pl.DataFrame] | Callable[[np.random.Generator], pl.DataFrame],
) -> list[pl.DataFrame] | None:
    if validation is None:
        return None
    if isinstance(validation, pl.DataFrame):
        validation = [validation]
    out = list(validation)
    if not out:
        raise ValueError(
            "fine_tune_online got validation_episodes = []; expected at least one trace "
            "from the training side, or None for no selection."
        )
    for j, v in enumerate(out):
        if not isinstance(v, pl.DataFrame) or v.height == 0:
            raise ValueError(
                f"validation episode {j} is {type(v).__name__}"
                + (" with no rows" if isinstance(v, pl.DataFrame) else "")
                + "; expected a non-empty polars DataFrame trace."
            )
        if not callable(episodes):
            for i, e in enumerate(episodes):
                if e.shape == v.shape and e.equals(v):
                    raise ValueError(
                        f"validation episode {j} equals training episode {i}; expected "
                        "validation episodes held out of the online training episodes (from "
                        "the training side, never test). Fix: split the training windows, "
                        "e.g. the last N validate and the rest train."
                    )
    return out


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
    validation_episodes: Sequence[pl.DataFrame] | None = None,
    replay_config: ReplayConfig | None = None,
    logger_adapter: LoggerAdapterFactory | None = None,
    show_progress: bool = False,
) -> OnlineResult:
    """Fine-tune (or train from scratch) a routing policy online in the replay simulator.

    With ``validation_episodes`` the policy is scored on them before training and every
    ``config.eval_every_steps`` steps; the best one (the start included) is returned,
    and training stops after ``config.patience`` evaluations without improvement.

    Args:
        start: a :class:`TrainResult` (continue its algorithm), a :class:`TrainConfig`
            (build a fresh one: e.g. ``algorithm="double-dqn"``) or a built d3rlpy
            algorithm. Its algorithm is changed in place.
        episodes: training traces (the env picks one uniformly per episode with its
            seeded generator) or a callable ``rng -> trace``.
        cluster: the cluster.
        reward: reward function or name (``paper-baseline``, ``paper-workload-aware``,
            ``paper-workload-guided``, ``queue-balance``, ``latency-area``); for a start
            trained on normalised rewards pass ``start.reward_transform.wrap(name)``.
        run_dir: output folder (created).
        config: online settings (default :class:`OnlineConfig`).
        predictor: output-length predictor (the one the offline policy was trained with).
        offline_dataset: if given, its episodes seed the replay buffer.
        validation_episodes: traces from the TRAINING side (never test), disjoint from
            ``episodes``, on which the kept policy is chosen; ``None``: no selection,
            the last policy is returned.
        replay_config: replay settings of the env and the validation replays (default
            ``ReplayConfig()``; validation replays get ``max_sim_time_s`` = latest
            arrival + ``config.sim_slack_s`` unless it is set).
        logger_adapter: d3rlpy logger factory (default ``FileAdapterFactory(run_dir)``).
        show_progress: d3rlpy's progress bar.

    Returns:
        An :class:`OnlineResult`; the curves and ``online.json`` are also written to
        ``run_dir``.

    Raises:
        ValueError: a bad ``start``, a policy whose shape does not fit the env, empty
            validation episodes or one equal to a training episode.

    Example:
        Not run here (a run takes seconds to minutes)::

            from routeplay.offline_rl import OnlineConfig, fine_tune_online
            res = fine_tune_online(offline, train_windows[:-3], cluster,
                                   reward=offline.reward_transform.wrap("paper-baseline"),
                                   run_dir="runs/ft", validation_episodes=train_windows[-3:],
                                   config=OnlineConfig(n_steps=10_000, eval_every_steps=1000))
            res.kept_step, res.start_validation_e2e_s, res.kept_validation_e2e_s
    """
    import d3rlpy
    import torch
    from d3rlpy.algos import LinearDecayEpsilonGreedy
    from d3rlpy.dataset import create_fifo_replay_buffer
    from d3rlpy.logging import FileAdapterFactory

    cfg = config if config is not None else OnlineConfig()
    t0 = time.perf_counter()
    validation = _check_validation(validation_episodes, episodes)
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
        config=replay_config,
    )
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    selector: _Selector | None = None
    stopped_early = False
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
            if validation is not None:
                selector = _Selector(
                    algo, validation, cluster, cfg, predictor, env.layout, wrapped,
                    str(reward_fn.name), replay_config,
                )  # fmt: skip
                selector.evaluate(0)  # the start (patience cannot trigger on it)
            if cfg.learning_rate is not None:
                _set_learning_rate(algo, cfg.learning_rate)
            kwargs: dict[str, Any] = {}
            if offline_dataset is not None:
                kwargs["episodes"] = offline_dataset.mdp.episodes
            else:
                kwargs["env"] = wrapped
            if getattr(algo, "need_returns_to_go", False):
                buffer = create_fifo_replay_buffer(limit=cfg.buffer_limit, **kwargs)
            else:  # the same mini-batches from the same draws, gathered by indexing
                buffer = fifo_replay_buffer(cfg.buffer_limit, **kwargs)
            explorer = LinearDecayEpsilonGreedy(
                start_epsilon=cfg.epsilon_start,
                end_epsilon=cfg.epsilon_end,
                duration=cfg.decay_steps,
            )
            try:
                with _LossTap(algo, selector.losses.append if selector else lambda _: None):
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
                        callback=selector.callback if selector is not None else None,
                    )
            except _EarlyStop:
                stopped_early = True
            if selector is not None:
                selector.restore_best()
    finally:
        torch.set_num_threads(previous)
    curve = pl.DataFrame(wrapped.rows, schema=CURVE_SCHEMA)
    validation_curve = (
        selector.frame() if selector is not None else pl.DataFrame(schema=VALIDATION_SCHEMA)
    )
    result = OnlineResult(
        algo=algo,
        config=cfg,
        reward=str(reward_fn.name),
        curve=curve,
        validation=validation_curve,
        n_steps_done=wrapped.n_steps,
        n_episodes=wrapped.n_episodes,
        kept_step=selector.best_step if selector is not None else None,
        start_validation_e2e_s=(
            float(selector.rows[0]["validation_mean_e2e_s"]) if selector is not None else None
        ),
        kept_validation_e2e_s=selector.best_e2e_s if selector is not None else None,
        stopped_early=stopped_early,
        run_dir=out,
        wall_time_s=time.perf_counter() - t0,
    )
    _write_parquet(curve, out / "learning_curve.parquet")
    if selector is not None:
        _write_parquet(validation_curve, out / "validation_curve.parquet")
        _write_parquet(result.chart_frame(), out / "online_curve_long.parquet")
    write_json_atomic(
        out / "online.json",
        {
            "config": cfg.to_dict(),
            "reward": str(reward_fn.name),
            "start": type(start).__name__,
            "n_steps_done": wrapped.n_steps,
            "n_episodes": wrapped.n_episodes,
            "n_validation_episodes": 0 if validation is None else len(validation),
            "selection": result.selection(),
        },
    )
    return result


def _write_parquet(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, path)
