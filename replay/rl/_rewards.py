"""Reward functions for routing decisions, as separate objects.

A reward is computed for each routing decision from a :class:`StepOutcome`: what the
router saw, what it did, and what happened until the next decision. The transition
writer and the gymnasium environment build the outcome; rewards never touch the engine.

Five rewards are provided:

* :class:`PaperReward` with ``variant="baseline"`` / ``"workload-aware"`` /
  ``"workload-guided"`` — the Intelligent Router paper's reward (docs/design.md, System A)::

      r_t = -sum_j (1/T_j) (1 - f_jt) + r_w * (completions in (t, t']) - w_k * h(s_t, s_t+1)

  ``f_jt`` = produced / predicted output tokens of in-flight request j, and ``1 - f_jt``
  is floored at ``OutcomeConfig.min_remaining_fraction`` (0.1) so that a request that
  outlives its predicted length keeps costing until it finishes (the paper's literal
  ``min(f, 1)`` makes it free; :mod:`routeplay.replay.rl._outcomes`),
  ``T_j`` its ideal (alone-on-an-idle-instance) service time, ``r_w = 60`` per
  completion, ``h`` the impact penalty of not choosing the minimum-impact instance
  (:func:`routeplay.estimator.impact_penalty`, with each instance's gradients scaled by
  its own latency model), and ``w_k = 0`` (baseline RL), ``1`` (workload-aware) or
  ``exp(-0.5 k)`` (workload-guided) for *training episode* ``k``.
  *Choice*: the first term is evaluated at the end of the step (time ``t'``); the
  paper's image leaves the instant open. A WAIT action has no impact penalty.
  *Choice (k)*: ``k`` is the index of the training episode — the position of the
  trace in the episode list given to :func:`~routeplay.replay.log_transitions`, or the
  episode counter of :class:`~routeplay.replay.RoutingEnv` — never the behaviour
  that logged it nor a file's ``episode`` numbering: two behaviours logging the same
  episodes get the same weights (``StepOutcome.episode``; the ``train_episode``
  column of a transition file).
* :class:`QueueBalanceReward` (``"queue-balance"``) — the reward of System B's online
  RL router on heterogeneous servers (docs/design.md): ``-0.01 * estimated_time
  - 0.1 * queue_length - 10 [chosen server full] + 0.1 * balance + 1 per admitted
  request - 5 per response over 2 s``, with response time including queueing.
* :class:`LatencyAreaReward` (``"latency-area"``) — minus the request-seconds spent in
  the system during the step: summed over an episode, minus the summed E2E latency.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
from routeplay.estimator._impact import ImpactEstimate, impact_penalty

from .._types import WAIT, ClusterState, RequestView

__all__ = [
    "REWARD_VARIANTS",
    "LatencyAreaReward",
    "PaperReward",
    "QueueBalanceReward",
    "RewardFunction",
    "StepOutcome",
    "canonical_reward_name",
    "make_reward",
]

PaperVariant = Literal["baseline", "workload-aware", "workload-guided"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StepOutcome:
    """What happened between one routing decision (at ``state.now_s``) and the next.

    Attributes:
        request: the request the decision was about.
        action: the instance index chosen, or ``WAIT``.
        state: the snapshot the router saw.
        next_state: the snapshot at the next decision (or the end of the episode).
        episode: training episode index ``k`` (for the decaying heuristic weight; see
            the module docstring: never depends on the behaviour policy).
        n_completed: requests that finished in the interval.
        n_admitted: requests admitted into an instance's batch in the interval.
        progress_deficit: ``sum_j (1/T_j) (1 - f_jt)`` over requests in flight at the
            end of the interval (1/s).
        response_times_s: E2E latencies (queueing included) of the requests that
            finished in the interval.
        impact_r_mix: per-instance r_mix of the routed request at decision time
            (higher = less impact), or ``None`` when not computed.
        impact: the full :class:`~routeplay.estimator.ImpactEstimate` behind
            ``impact_r_mix`` when the caller has it (its ``r_mix`` must equal
            ``impact_r_mix``); rewards use it in preference to ``impact_r_mix``.
        estimated_time_s: estimated service time of the request on the chosen instance
            (``None`` for WAIT).
        dt_s: simulated seconds from this decision to the next one (or to the end of
            the episode): the semi-MDP holding time, for a per-second discount
            ``gamma ** dt_s``.
    """

    request: RequestView
    action: int
    state: ClusterState
    next_state: ClusterState
    episode: int = 0
    n_completed: int = 0
    n_admitted: int = 0
    progress_deficit: float = 0.0
    response_times_s: tuple[float, ...] = ()
    impact_r_mix: npt.NDArray[np.float64] | None = None
    estimated_time_s: float | None = None
    impact: ImpactEstimate | None = None
    dt_s: float = 0.0

    def impact_estimate(self) -> ImpactEstimate | None:
        """The impact estimate (``impact``, else one built from ``impact_r_mix``).

        Built from ``impact_r_mix`` alone, the estimate's ``r_p``/``r_d`` are NaN
        (unknown) and ``best_instance`` is ``argmax(r_mix)`` (ties: lowest index), which
        is all :func:`~routeplay.estimator.impact_penalty` reads.
        """
        if self.impact is not None:
            return self.impact
        if self.impact_r_mix is None:
            return None
        r_mix = np.asarray(self.impact_r_mix, dtype=np.float64)
        unknown = np.full_like(r_mix, np.nan)
        return ImpactEstimate(
            r_p=unknown, r_d=unknown, r_mix=r_mix, best_instance=int(np.argmax(r_mix))
        )


class RewardFunction(Protocol):
    """Maps a :class:`StepOutcome` to a scalar reward (``name`` labels it in datasets)."""

    @property
    def name(self) -> str:
        """The reward's label, stored with every transition dataset."""
        ...

    def __call__(self, outcome: StepOutcome) -> float:
        """The reward of one decision."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class PaperReward:
    """The Intelligent Router paper's reward (see the module docstring).

    Attributes:
        variant: "baseline" (w = 0), "workload-aware" (w = 1), "workload-guided"
            (w = exp(-decay * k) for training episode k).
        completion_reward: r_w, reward per completed request (paper: 60).
        decay: the workload-guided decay rate (paper: 0.5).

    Example:
        >>> import numpy as np
        >>> from routeplay.replay import RequestView, make_cluster_state
        >>> s = make_cluster_state(2)
        >>> out = StepOutcome(request=RequestView(0, 0.0, 10), action=1, state=s,
        ...     next_state=s, episode=2, n_completed=1, progress_deficit=0.5,
        ...     impact_r_mix=np.array([0.9, 0.4]))
        >>> PaperReward(variant="baseline")(out)
        59.5
        >>> round(PaperReward(variant="workload-aware")(out), 6)
        59.0
        >>> round(PaperReward(variant="workload-guided")(out), 6)  # 59.5 - exp(-1) * 0.5
        59.31606
    """

    variant: PaperVariant = "workload-guided"
    completion_reward: float = 60.0
    decay: float = 0.5

    def __post_init__(self) -> None:
        if self.variant not in ("baseline", "workload-aware", "workload-guided"):
            raise ValueError(
                f"PaperReward.variant = {self.variant!r}; expected one of "
                "['baseline', 'workload-aware', 'workload-guided']."
            )
        if self.decay < 0:
            raise ValueError(f"PaperReward.decay = {self.decay!r}; expected >= 0.")

    @property
    def name(self) -> str:
        """The reward's label, e.g. ``paper-workload-guided``."""
        return f"paper-{self.variant}"

    def heuristic_weight(self, episode: int) -> float:
        """The weight ``w_k`` of the impact penalty in training episode ``episode``.

        A function of the episode index only (module docstring).

        Example:
            >>> w = PaperReward(variant="workload-guided")
            >>> w.heuristic_weight(0), round(w.heuristic_weight(2), 6)
            (1.0, 0.367879)
        """
        if (type(episode) is not int or episode < 0) and (
            isinstance(episode, bool) or not isinstance(episode, int | np.integer) or episode < 0
        ):
            raise ValueError(
                f"PaperReward.heuristic_weight: episode = {episode!r}; expected a training "
                "episode index (int >= 0)."
            )
        if self.variant == "baseline":
            return 0.0
        if self.variant == "workload-aware":
            return 1.0
        return math.exp(-self.decay * episode)

    def __call__(self, outcome: StepOutcome) -> float:
        """The reward of one decision."""
        reward = -outcome.progress_deficit + self.completion_reward * outcome.n_completed
        weight = self.heuristic_weight(outcome.episode)
        action = outcome.action
        if weight and action != WAIT:
            estimate = outcome.impact_estimate()
            if estimate is not None:
                r_mix = estimate.r_mix
                if type(action) is int and 0 <= action < r_mix.shape[0]:
                    # impact_penalty's formula; it also validates the action
                    penalty = float(r_mix[estimate.best_instance] - r_mix[action])
                else:
                    penalty = impact_penalty(estimate, action)
                reward -= weight * penalty
        return float(reward)


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueBalanceReward:
    """Queue length, slot overflow and load balance per decision (reward ``"queue-balance"``).

    The reward of System B, online RL on a heterogeneous cluster (docs/design.md; cluster
    ``hetero-3k5k7k``):

    ``-time_weight * estimated_time - queue_weight * queue_length - full_penalty
    [chosen instance full] + balance_weight * balance + admit_reward * admitted
    - slo_penalty * (responses over slo_s)``. ``queue_length`` is the chosen
    instance's local queue at decision time; ``balance = 1 - CV`` of the instances'
    outstanding requests after the decision (1 = perfectly balanced). Response times
    include queueing (System B's code excluded it; we do not).

    Example:
        >>> from routeplay.replay import RequestView, make_cluster_state
        >>> s = make_cluster_state(n_queued=[2, 0], n_running=[3, 1], max_running_seqs=[3, 5])
        >>> out = StepOutcome(request=RequestView(0, 0.0, 10), action=0, state=s,
        ...     next_state=s, n_admitted=1, response_times_s=(2.5,), estimated_time_s=1.0)
        >>> round(QueueBalanceReward()(out), 4)  # -0.01 - 0.2 - 10 + 0.1*(1-CV) + 1 - 5
        -14.1814
    """

    time_weight: float = 0.01
    queue_weight: float = 0.1
    full_penalty: float = 10.0
    balance_weight: float = 0.1
    admit_reward: float = 1.0
    slo_penalty: float = 5.0
    slo_s: float = 2.0
    name: str = "queue-balance"

    def __call__(self, outcome: StepOutcome) -> float:
        """The reward of one decision."""
        reward = self.admit_reward * outcome.n_admitted
        reward -= self.slo_penalty * sum(1 for t in outcome.response_times_s if t > self.slo_s)
        if outcome.action == WAIT:
            return float(reward)
        s = outcome.state
        i = outcome.action
        if outcome.estimated_time_s is not None:
            reward -= self.time_weight * outcome.estimated_time_s
        reward -= self.queue_weight * float(s.n_queued[i])
        if s.n_running[i] >= s.max_running_seqs[i]:
            reward -= self.full_penalty
        outstanding = np.asarray(s.n_queued + s.n_running, dtype=np.float64)
        outstanding[i] += 1.0
        mean = outstanding.mean()
        cv = float(outstanding.std() / mean) if mean > 0 else 0.0
        reward += self.balance_weight * (1.0 - cv)
        return float(reward)


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyAreaReward:
    """Minus the request-seconds spent in the system between two decisions (trapezoid).

    ``r_t = -(N(t) + N(t')) / 2 * (t' - t)`` with ``N`` = requests in the system:
    waiting at the router, queued at an instance and running. Summed over an episode it
    is (up to the trapezoid) minus the total time requests spend in the system, i.e.
    minus the summed E2E latency (Little's law), so maximising the return minimises mean
    latency — without the paper reward's completion bursts (``r_w = 60`` per completion
    credited to whichever decision precedes it). It reads only the two snapshots, so it
    needs no predictor and no impact estimate.

    Example:
        >>> from routeplay.replay import LatencyAreaReward, RequestView, StepOutcome
        >>> from routeplay.replay import make_cluster_state as state
        >>> out = StepOutcome(request=RequestView(0, 0.0, 10), action=0,
        ...     state=state(router_queue_len=1, n_queued=[1, 0], n_running=[2, 1]),
        ...     next_state=state(now_s=0.5, router_queue_len=1, n_queued=[0, 0], n_running=[2, 2]))
        >>> LatencyAreaReward()(out)  # -(5 + 5) / 2 * 0.5
        -2.5
    """

    name: str = "latency-area"

    @staticmethod
    def _in_system(state: ClusterState) -> float:
        return float(state.router_queue_len + state.n_queued.sum() + state.n_running.sum())

    def __call__(self, outcome: StepOutcome) -> float:
        """The reward of one decision."""
        dt = float(outcome.next_state.now_s - outcome.state.now_s)
        return -0.5 * (self._in_system(outcome.state) + self._in_system(outcome.next_state)) * dt


#: Reward names accepted by :func:`make_reward`.
REWARD_VARIANTS: tuple[str, ...] = (
    "paper-baseline",
    "paper-workload-aware",
    "paper-workload-guided",
    "queue-balance",
    "latency-area",
)

#: Former reward names still accepted (with a ``DeprecationWarning``) -> current names.
_DEPRECATED_REWARD_NAMES: dict[str, str] = {"seed000": "queue-balance"}


def canonical_reward_name(name: str, *, stacklevel: int = 1) -> str:
    """``name``, or the current name of a deprecated reward name (with a ``DeprecationWarning``).

    Job files written for earlier versions may name a reward by its former name; this maps
    it to its name in :data:`REWARD_VARIANTS` and warns. Any other string is returned
    unchanged (validation is the caller's). ``stacklevel`` 1 attributes the warning to the
    caller, 2 to the caller's caller, and so on.

    Example:
        >>> canonical_reward_name("latency-area")
        'latency-area'
    """
    new = _DEPRECATED_REWARD_NAMES.get(name)
    if new is None:
        return name
    warnings.warn(
        f"reward name {name!r} is deprecated; use {new!r} (the same reward).",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )
    return new


def make_reward(name: str) -> PaperReward | QueueBalanceReward | LatencyAreaReward:
    """A reward function by name (one of :data:`REWARD_VARIANTS`).

    Example:
        >>> make_reward("paper-workload-aware").name
        'paper-workload-aware'
        >>> make_reward("latency-area").name
        'latency-area'
        >>> make_reward("queue-balance").name
        'queue-balance'
    """
    name = canonical_reward_name(name, stacklevel=2)
    if name == "queue-balance":
        return QueueBalanceReward()
    if name == "latency-area":
        return LatencyAreaReward()
    if name.startswith("paper-") and name[len("paper-") :] in (
        "baseline",
        "workload-aware",
        "workload-guided",
    ):
        return PaperReward(variant=name[len("paper-") :])  # type: ignore[arg-type]
    raise ValueError(f"unknown reward {name!r}; expected one of {list(REWARD_VARIANTS)}.")
