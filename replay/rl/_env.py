"""A gymnasium environment over the replay engine: one step = one routing decision.

:class:`RoutingEnv` drives the same :class:`~routeplay.replay.engine._engine.Engine` as
:func:`routeplay.replay.run_replay` and the transition writer, with the same
observation (:func:`encode_observation`), action indices (``0..m-1`` = instance,
``m`` = WAIT) and reward inputs (:class:`~routeplay.replay.rl._outcomes.OutcomeTracker`),
so a policy trained offline on logged transitions sees the same MDP online.

* ``reset(seed=...)`` picks an episode with the env's ``np_random``: uniformly from a
  list of traces (or ``options={"episode": i}`` for a given one), the single trace, or
  ``episodes(np_random)`` for a callable. It returns the first decision's observation.
* ``step(action)`` applies the action to the pending request and runs the simulation
  to the next decision. ``terminated`` when every request of the episode finished
  (the observation is then zeros, as in the transition files); ``truncated`` after
  ``max_steps`` decisions.
* The episode counter ``k`` (for the workload-guided reward weight ``exp(-0.5 k)``)
  counts the episodes started since the env was created *or last seeded*: 0 for the
  first. *Choice*: ``reset(seed=s)`` restarts the count, so that a seeded reset fully
  determines the trajectory (rewards included), as gymnasium requires. A loop that
  seeds every episode passes ``options={"episode_index": k}`` to keep the decay going.
* ``info`` holds the step's outcome numbers (``time_s``, ``request_id``,
  ``n_completed``, ``n_admitted``, ``progress_deficit``, ``response_times_s``,
  ``estimated_time_s``, ``impact_penalty``, ``episode``, ``dt_s`` — the simulated
  seconds the step spans, for a per-second discount ``gamma ** dt_s``).
* ``expert`` (optional): a router asked at every decision the env presents (the first
  one in ``reset``, the next one in each ``step``); its answer, as an action index, is
  ``info["expert_action"]`` (absent once the episode ended). It is reset with the
  episode's router generator and then bound to the engine (``engine.bind_router``),
  exactly as :func:`~routeplay.replay.run_replay` does, so routers that need the
  simulator (``lookahead-oracle``) can label the states a learner visits (DAgger). An
  oracle expert sees true output lengths; the observation never does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
import numpy.typing as npt
import polars as pl
from routeplay.estimator._impact import ImpactEstimate, impact_penalty
from routeplay.estimator._protocols import OutputLengthPredictor

from .._types import WAIT, ClusterConfig, ClusterState, RequestView, Router
from ..engine._engine import Engine
from ..engine._result import ReplayConfig, ReplayResult
from ._observation import ObservationEncoder, ObservationLayout
from ._outcomes import OutcomeConfig, OutcomeTracker
from ._rewards import RewardFunction, StepOutcome, make_reward
from ._transitions import action_to_index, default_layout, index_to_action

__all__ = ["RoutingEnv"]

_Obs = npt.NDArray[np.float32]
EpisodeSource = (
    Sequence[pl.DataFrame] | pl.DataFrame | Callable[[np.random.Generator], pl.DataFrame]
)


class RoutingEnv(gym.Env[_Obs, np.int64]):
    """Route requests of replayed traces, one decision per step (module docstring).

    Args:
        episodes: a list of traces, one trace, or a callable ``rng -> trace`` that
            builds an episode from the env's generator (e.g. a task-mix generator).
        cluster: the cluster to replay on.
        reward: a reward function or a name from ``REWARD_VARIANTS``.
        predictor: optional output-length predictor (called once per episode).
        layout: observation layout (default: from the cluster, config and predictor).
        max_steps: truncate an episode after this many decisions (``None``: never).
        config: replay settings.
        outcome_config: settings of the reward inputs.
        expert: optional router whose answer at every decision is reported as
            ``info["expert_action"]`` (module docstring).

    Example:
        >>> from routeplay.estimator import LinearLatencyModel
        >>> from routeplay.replay import ClusterConfig, InstanceConfig
        >>> lat = LinearLatencyModel.from_throughput(1000.0)
        >>> cluster = ClusterConfig(instances=(InstanceConfig(name="a", latency=lat),
        ...                                    InstanceConfig(name="b", latency=lat)))
        >>> trace = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.1],
        ...                       "prompt_tokens": [100, 50], "output_tokens": [5, 9]})
        >>> env = RoutingEnv(trace, cluster, reward="paper-baseline")
        >>> obs, info = env.reset(seed=0)
        >>> obs.shape == env.observation_space.shape, env.action_space.n
        (True, np.int64(3))
        >>> _, r, terminated, truncated, info = env.step(0)
        >>> _, r, terminated, truncated, info = env.step(1)
        >>> terminated, truncated, env.result().requests["instance_id"].to_list()
        (True, False, [0, 1])
    """

    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        episodes: EpisodeSource,
        cluster: ClusterConfig,
        *,
        reward: RewardFunction | str = "paper-workload-guided",
        predictor: OutputLengthPredictor | None = None,
        layout: ObservationLayout | None = None,
        max_steps: int | None = None,
        config: ReplayConfig | None = None,
        outcome_config: OutcomeConfig | None = None,
        expert: Router | None = None,
    ) -> None:
        super().__init__()
        if isinstance(episodes, pl.DataFrame):
            self._traces: list[pl.DataFrame] | None = [episodes]
            self._make: Callable[[np.random.Generator], pl.DataFrame] | None = None
        elif callable(episodes):
            self._traces = None
            self._make = episodes
        else:
            self._traces = list(episodes)
            self._make = None
            if not self._traces:
                raise ValueError(
                    "RoutingEnv got an empty list of episodes; expected at least one trace."
                )
            for k, t in enumerate(self._traces):
                if not isinstance(t, pl.DataFrame):
                    raise ValueError(
                        f"RoutingEnv episode {k} is a {type(t).__name__}; expected a polars "
                        "DataFrame trace (use [e.trace for e in split_episodes(...)])."
                    )
        if max_steps is not None and (
            isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1
        ):
            raise ValueError(f"RoutingEnv max_steps = {max_steps!r}; expected None or an int >= 1.")
        self.cluster = cluster
        self.reward_fn: RewardFunction = make_reward(reward) if isinstance(reward, str) else reward
        self.predictor = predictor
        self.config = config if config is not None else ReplayConfig()
        self.layout = (
            layout if layout is not None else default_layout(cluster, self.config, predictor)
        )
        if self.layout.n_instances != cluster.n_instances:
            raise ValueError(
                f"layout.n_instances = {self.layout.n_instances} but the cluster has "
                f"{cluster.n_instances} instances; expected them equal."
            )
        self.outcome_config = outcome_config
        self.expert = expert
        self.encoder = ObservationEncoder(self.layout, cluster)
        self.max_steps = max_steps
        self.n_instances = cluster.n_instances
        self.observation_space = gym.spaces.Box(
            low=0.0, high=1.0, shape=(self.layout.size,), dtype=np.float32
        )
        self.action_space = gym.spaces.Discrete(self.n_instances + 1)
        self._zeros = np.zeros(self.layout.size, np.float32)
        self._engine: Engine | None = None
        self._tracker: OutcomeTracker | None = None
        self._decision: tuple[RequestView, ClusterState] | None = None
        # the pending decision's impact estimate, from its encoding (None: not shared)
        self._impact: ImpactEstimate | None = None
        self._share_impact = False
        self._n_episodes = 0
        self._episode = -1
        self._trace_index: int | None = None
        self._steps = 0

    @property
    def episode(self) -> int:
        """Index ``k`` of the current episode (-1 before the first reset)."""
        return self._episode

    def _pick(self, options: dict[str, Any] | None) -> pl.DataFrame:
        if self._make is not None:
            self._trace_index = None
            return self._make(self.np_random)
        assert self._traces is not None
        n = len(self._traces)
        if options and "episode" in options:
            i = options["episode"]
            if isinstance(i, bool) or not isinstance(i, int | np.integer) or not 0 <= i < n:
                raise ValueError(f"reset option episode = {i!r}; expected an index in range({n}).")
            idx = int(i)
        else:
            idx = int(self.np_random.integers(n)) if n > 1 else 0
        self._trace_index = idx
        return self._traces[idx]

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[_Obs, dict[str, Any]]:
        """Start the next episode; returns its first observation and info."""
        super().reset(seed=seed)
        if seed is not None:
            self._n_episodes = 0
        if options and "episode_index" in options:
            k = options["episode_index"]
            if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
                raise ValueError(
                    f"reset option episode_index = {k!r}; expected an int >= 0 (the "
                    "workload-guided reward's episode k)."
                )
            self._n_episodes = int(k)
        trace = self._pick(options)
        self._engine = Engine(
            trace,
            self.cluster,
            config=self.config,
            predictor=self.predictor,
            oracle=bool(getattr(self.expert, "oracle", False)),
            router_name="RoutingEnv",
        )
        if self.expert is not None:
            self.expert.reset(self.cluster, self._engine.router_rng())
            self._engine.bind_router(self.expert)
        self._tracker = OutcomeTracker(self._engine, self.outcome_config)
        self._share_impact = self._tracker.shares_impact_with(self.encoder)
        self._episode = self._n_episodes
        self._n_episodes += 1
        self._steps = 0
        self._decision = self._engine.next_decision()
        if self._decision is None:  # pragma: no cover - a valid trace has >= 1 request
            raise ValueError("RoutingEnv episode has no routing decision (empty trace).")
        request, state = self._decision
        info = {
            "episode": self._episode,
            "trace_index": self._trace_index,
            "time_s": self._engine.now_s,
            "request_id": request.request_id,
        }
        self._add_expert(info, request, state)
        return self._encode(request, state), info

    def _encode(self, request: RequestView, state: ClusterState) -> _Obs:
        """Encode the decision the env presents next (keeping its impact estimate)."""
        if self._share_impact:
            obs, self._impact = self.encoder.encode(request, state)
            return obs
        self._impact = None
        return self.encoder(request, state)

    def _add_expert(self, info: dict[str, Any], request: RequestView, state: ClusterState) -> None:
        if self.expert is None:
            return
        action = self.expert.route(request, state)
        try:
            info["expert_action"] = action_to_index(action, self.n_instances)
        except ValueError:
            raise ValueError(
                f"RoutingEnv expert {getattr(self.expert, 'name', self.expert)!r} returned "
                f"{action!r} for request {request.request_id}; expected an instance index in "
                f"range({self.n_instances}) or WAIT ({WAIT})."
            ) from None

    def observe(self, request: RequestView, state: ClusterState) -> _Obs:
        """Encode ``(request, state)`` as this env does (its layout and cluster)."""
        return self.encoder(request, state)

    def step(
        self, action: np.int64 | int
    ) -> tuple[_Obs, SupportsFloat, bool, bool, dict[str, Any]]:
        """Apply ``action`` (``0..m-1`` instance, ``m`` WAIT) and run to the next decision.

        Raises:
            RuntimeError: when called before :meth:`reset` or after the episode ended.
            ValueError: when ``action`` is not in the action space.
        """
        engine, tracker, decision = self._engine, self._tracker, self._decision
        if engine is None or tracker is None or decision is None:
            raise RuntimeError(
                "RoutingEnv.step called without a pending decision; expected reset() first "
                "(and again after terminated or truncated)."
            )
        m = self.n_instances
        if type(action) is int and 0 <= action <= m:  # the common case, checked
            router_action = WAIT if action == m else action
        else:
            idx = action.item() if isinstance(action, np.ndarray) else action
            router_action = index_to_action(idx, m)  # type: ignore[arg-type]
        request, state = decision
        time_s = engine.now_s
        terms = tracker.decision_terms(request, state, router_action, self._impact)
        engine.apply(router_action)
        nxt = engine.next_decision()
        self._steps += 1
        terminated = nxt is None
        truncated = (
            (not terminated) and self.max_steps is not None and self._steps >= self.max_steps
        )
        next_state = nxt[1] if nxt is not None else engine.state()
        outcome = tracker.outcome(
            request, state, router_action, next_state, terms, episode=self._episode
        )
        reward = float(self.reward_fn(outcome))
        if nxt is not None:
            obs = self._encode(nxt[0], nxt[1])
        else:
            obs = self._zeros
            self._impact = None
        self._decision = None if (terminated or truncated) else nxt
        info = _info(outcome, time_s, self._episode, terminated)
        if nxt is not None and not truncated:
            self._add_expert(info, nxt[0], nxt[1])
        return obs, reward, terminated, truncated, info

    def result(self) -> ReplayResult:
        """The current episode's :class:`ReplayResult` (once it terminated).

        Raises:
            RuntimeError: before :meth:`reset` or while the episode has decisions left.
        """
        if self._engine is None:
            raise RuntimeError("RoutingEnv.result called before reset(); run an episode first.")
        if not self._engine.done:
            raise RuntimeError(
                "RoutingEnv.result called before the episode terminated; expected every "
                "request finished (step until terminated is True)."
            )
        return self._engine.result()

    def close(self) -> None:
        """Drop the current episode's engine."""
        self._engine = None
        self._tracker = None
        self._decision = None
        self._impact = None
        super().close()  # type: ignore[no-untyped-call]


def _info(outcome: StepOutcome, time_s: float, episode: int, terminated: bool) -> dict[str, Any]:
    estimate = outcome.impact_estimate()
    penalty = 0.0
    action = outcome.action
    if estimate is not None and action != WAIT:
        r_mix = estimate.r_mix
        if 0 <= action < r_mix.shape[0]:  # impact_penalty's formula, without its checks
            penalty = float(r_mix[estimate.best_instance] - r_mix[action])
        else:
            penalty = impact_penalty(estimate, action)
    return {
        "episode": episode,
        "time_s": time_s,
        "request_id": outcome.request.request_id,
        "n_completed": outcome.n_completed,
        "n_admitted": outcome.n_admitted,
        "progress_deficit": outcome.progress_deficit,
        "response_times_s": outcome.response_times_s,
        "estimated_time_s": outcome.estimated_time_s,
        "impact_penalty": penalty,
        "dt_s": outcome.dt_s,
        "terminated": terminated,
    }
