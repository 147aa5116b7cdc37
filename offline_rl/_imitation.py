"""Imitate the lookahead: counterfactual labels from an oracle teacher, a deployable student.

A small network learns to route like ``lookahead-oracle``
(:class:`~routeplay.replay.routers._reference.LookaheadOracleRouter`) from
(observation, lookahead action) pairs, with d3rlpy's DiscreteBC, and one or more DAgger
rounds (Ross, Gordon & Bagnell, "A reduction of imitation learning and structured
prediction to no-regret online learning", AISTATS 2011):

1. **Label** (:func:`label_states`): a *behaviour* policy drives the simulator (round
   0: a heuristic, default min-min; DAgger round ``r >= 1``: the student trained in
   round ``r - 1``). At every ``label_every``-th decision the lookahead is asked what
   it would do: it forks the engine at the decision and rolls every action out
   (``LookaheadOracleRouter.route``). The label is its action; its per-action rollout
   costs (sum of E2E seconds over the affected requests; lower is better) are kept
   too (``costs_s``). The behaviour's action is then applied, so the states visited
   are the behaviour's, not the teacher's (that is the point of DAgger).
2. **Train** (:func:`imitate_lookahead`): DiscreteBC (``TrainConfig(algorithm="bc")``
   through :func:`~routeplay.offline_rl.train_router`: seeded batches, checkpoints,
   exact resume) on the union of every round's labels, from scratch each round.
3. **Export**: :func:`~routeplay.offline_rl.save_router` writes the last round's
   network as a router folder; :func:`~routeplay.offline_rl.load_router` serves it as
   a :class:`~routeplay.offline_rl.PolicyRouter`.

Honesty about what is oracle and what is not:

* The **labels come from an oracle teacher**: inside its forks the simulator knows
  every request's true output length, and each rollout sees the trace's future
  arrivals for ``horizon_s`` simulated seconds. The teacher exists only at training
  time.
* The **student is a deployable router**: it sees the observation of
  :class:`~routeplay.replay.rl._observation.ObservationEncoder` (the one encoder of the
  logger, ``RoutingEnv`` and ``PolicyRouter``), which is computed from a plain
  :class:`~routeplay.replay._types.RequestView` (predicted lengths at most) and the
  cluster state. Here the engine runs in oracle mode (the teacher needs it), so every
  request view is converted to a plain ``RequestView`` before the behaviour policy or
  the encoder sees it (:func:`plain_view`); the exported router is replayed like any
  other router (``oracle = False``: the engine never hands it an
  ``OracleRequestView``).
* Evaluate only on held-out episodes (seeds never used for labelling, training or
  selection); ``routeplay evaluate`` and ``benchmarks/rl_imitation.py`` do.

Episodes and seeds: round ``r`` walks the given training episodes in order, starting
after the last episode used by round ``r - 1`` (cycling when they run out), labelling
until it has ``label_decisions`` labels. Episode ``k`` of round ``r`` resets the
behaviour and the teacher with generators from ``SeedSequence([seed, r, k])``; the
network trains with ``seed``. Same inputs and seed give identical labels and (same
torch thread count) identical weights.

Cost: the lookahead dominates (``m + 1`` forks and rollouts per labelled decision): ~11
ms per label on the hetero cluster at 80 req/s (figure 8 of ``benchmarks/speed.py``).
The behaviour's trajectory does not depend on the teacher, so ``label_states(
n_workers=2)`` (``imitate_lookahead(label_workers=2)``) splits each episode's labels
between two worker processes with the same result: 1.85-1.95x there
(``offline_rl/_labelling.py``).
"""

# Why this module is long: labelling, DAgger rounds, validation selection and the run
# folder are one algorithm whose steps share the run's fingerprint and files.

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt
import polars as pl
from routeplay.estimator._protocols import OutputLengthPredictor
from routeplay.replay._types import ClusterConfig, Router
from routeplay.replay.engine._result import ReplayConfig
from routeplay.replay.rl._observation import ObservationLayout
from routeplay.replay.rl._transitions import default_layout
from routeplay.replay.routers._reference import LookaheadOracleRouter

from routeplay._checks import check_bool, check_int, check_number

from ._dataset import RoutingDataset, build_dataset
from ._files import sha256_arrays, sha256_json, write_json_atomic
from ._labelling import LabelTask, check_n_workers, collect_labels, plain_view
from ._train import TrainConfig, TrainResult, train_router

if TYPE_CHECKING:
    from d3rlpy.logging import LoggerAdapterFactory

__all__ = [
    "ImitationConfig",
    "ImitationResult",
    "LookaheadLabels",
    "imitate_lookahead",
    "label_states",
    "plain_view",
]

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]
_I64 = npt.NDArray[np.int64]

_OWNER = "ImitationConfig"

TieBreak = Literal["teacher", "min-min", "min-total-latency"]
_TIE_BREAKS = ("teacher", "min-min", "min-total-latency")
#: the observation block whose argmin is each heuristic's choice (layout 3)
_TIE_BLOCKS = {"min-min": "minmin_eta", "min-total-latency": "total_latency_gap"}


@dataclass(frozen=True, slots=True, kw_only=True)
class ImitationConfig:
    """Everything that determines a lookahead-imitation run (module docstring).

    Attributes:
        label_decisions: labelled decisions per round (round 0 and each DAgger round).
        dagger_rounds: DAgger rounds after round 0 (0 = plain behaviour cloning of the
            lookahead on the heuristic's states).
        behaviour: registered heuristic driving round 0 (deployable: not an oracle,
            not a router that needs the engine).
        label_every: ask the teacher at every ``label_every``-th decision (the
            behaviour still decides every one); > 1 spreads a label budget over more
            simulated time.
        horizon_s: the lookahead's rollout horizon (simulated seconds of arrivals).
        teacher_base: the router continuing the lookahead's rollouts.
        include_wait: the lookahead also tries WAIT (the registered
            ``lookahead-oracle`` does).
        wait_limit: when the student drives (DAgger), consecutive WAITs on one request
            before ``behaviour`` routes it (a guard against a student that never
            routes; the teacher still labels every such decision).
        n_steps: BC gradient steps per round (each round trains from scratch on the
            union of the labels so far).
        batch_size: labelled decisions per gradient step.
        hidden_units: MLP layer widths of the student.
        learning_rate: Adam learning rate.
        bc_beta: DiscreteBC's logit regularisation.
        tie_break: the training target when several actions tie for the teacher's
            least rollout cost (within ``tie_tolerance_s``): "teacher" = the
            lookahead's own pick (lowest index, WAIT last), "min-min" (default) = the
            tied instance min-min prefers (argmin of the observation's ``minmin_eta``
            block; WAIT only when it is the sole best), "min-total-latency" = the tied
            instance ``min-total-latency`` prefers (argmin of ``total_latency_gap``).
            Every tied action costs the teacher the same (within the tolerance), so
            these only make the target a simpler function of the observation; with a
            tolerance of a fraction of a second, "min-total-latency" keeps that
            heuristic's choice unless the lookahead's best is clearly better (a
            residual teacher). Measured on the hetero cluster at 80 req/s: 47 % of
            round-0 labels are exact ties, yet "min-min" changed none of them (min-min's
            own choice was never among the tied actions; ties were between identical
            instances, where both rules pick the lower index).
        tie_tolerance_s: rollout costs within this many seconds of the least count as
            tied.
        seed: seeds labelling (``SeedSequence([seed, round, episode])``) and training.

    Example:
        >>> ImitationConfig(label_decisions=300, dagger_rounds=1).train_config().algorithm
        'bc'
        >>> ImitationConfig(label_decisions=0)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ImitationConfig.label_decisions = 0; expected an integer >= 1.
    """

    label_decisions: int = 3000
    dagger_rounds: int = 1
    behaviour: str = "min-min"
    label_every: int = 1
    horizon_s: float = 0.5
    teacher_base: str = "min-min"
    include_wait: bool = True
    wait_limit: int = 8
    n_steps: int = 5000
    batch_size: int = 256
    hidden_units: tuple[int, ...] = (128, 128)
    learning_rate: float = 1e-3
    bc_beta: float = 0.5
    tie_break: TieBreak = "min-min"
    tie_tolerance_s: float = 1e-6
    seed: int = 0

    def __post_init__(self) -> None:
        check_int(_OWNER, "label_decisions", self.label_decisions, minimum=1)
        check_int(_OWNER, "dagger_rounds", self.dagger_rounds, minimum=0)
        check_int(_OWNER, "label_every", self.label_every, minimum=1)
        check_int(_OWNER, "wait_limit", self.wait_limit, minimum=0)
        check_int(_OWNER, "n_steps", self.n_steps, minimum=1)
        check_int(_OWNER, "batch_size", self.batch_size, minimum=1)
        check_int(_OWNER, "seed", self.seed, minimum=0)
        check_number(_OWNER, "horizon_s", self.horizon_s, minimum=0.0, unit="s")
        check_number(_OWNER, "learning_rate", self.learning_rate, minimum=0.0, strict=True)
        check_number(_OWNER, "bc_beta", self.bc_beta, minimum=0.0)
        check_bool(_OWNER, "include_wait", self.include_wait)
        check_number(_OWNER, "tie_tolerance_s", self.tie_tolerance_s, minimum=0.0, unit="s")
        if self.tie_break not in _TIE_BREAKS:
            raise ValueError(
                f"{_OWNER}.tie_break = {self.tie_break!r}; expected one of {list(_TIE_BREAKS)}."
            )
        for name in ("behaviour", "teacher_base"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ValueError(
                    f"{_OWNER}.{name} = {getattr(self, name)!r}; expected a registered "
                    "router name, e.g. 'min-min'."
                )
        _check_behaviour(_make(self.behaviour), f"{_OWNER}.behaviour")
        # fails early on an unknown/unsuitable base (LookaheadOracleRouter checks it)
        self.teacher()
        self.train_config()  # validates hidden_units

    def teacher(self) -> LookaheadOracleRouter:
        """A new lookahead teacher with this config's horizon, base and WAIT setting."""
        return LookaheadOracleRouter(
            base=self.teacher_base, horizon_s=self.horizon_s, include_wait=self.include_wait
        )

    def train_config(self) -> TrainConfig:
        """The DiscreteBC :class:`TrainConfig` of every round."""
        per_epoch = min(1000, self.n_steps)
        return TrainConfig(
            algorithm="bc",
            hidden_units=tuple(self.hidden_units),
            learning_rate=self.learning_rate,
            batch_size=self.batch_size,
            n_steps=self.n_steps,
            n_steps_per_epoch=per_epoch,
            checkpoint_every_steps=per_epoch,
            bc_beta=self.bc_beta,
            seed=self.seed,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = dataclasses.asdict(self)
        out["hidden_units"] = list(self.hidden_units)
        return out


def _make(name: str) -> Router:
    from routeplay.replay.routers._registry import make_router

    return make_router(name)


def _check_behaviour(router: Router, what: str) -> None:
    name = getattr(router, "name", type(router).__name__)
    if getattr(router, "oracle", False) or getattr(router, "needs_engine", False):
        raise ValueError(
            f"{what} = {name!r} is an oracle or needs the simulator; expected a deployable "
            "router (the states it visits must be states a deployed router could reach), "
            "e.g. 'min-min'."
        )


_LABEL_COLUMNS = (
    "round",
    "episode",
    "request_id",
    "time_s",
    "action",
    "behaviour_action",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LookaheadLabels:
    """Labelled decisions: the observation and what the lookahead would do there.

    Attributes:
        observations: ``(n, obs_size)`` float32 student observations (no true lengths).
        actions: ``(n,)`` the teacher's action index (``n_actions - 1`` = WAIT).
        behaviour_actions: ``(n,)`` the action the driving policy took.
        costs_s: ``(n, n_actions)`` the teacher's rollout cost of every action (sum of
            E2E seconds of the requests it scores; NaN for an action it did not try,
            e.g. WAIT with ``include_wait=False``); comparable within a row only.
        episode: ``(n,)`` index of the training episode.
        round: ``(n,)`` 0 = heuristic driver, ``r >= 1`` = DAgger round ``r``.
        request_id: ``(n,)`` the request decided.
        time_s: ``(n,)`` simulated time of the decision.
        n_actions: instances + WAIT.
        teacher_wall_time_s: wall time spent in the teacher.
    """

    observations: _F32
    actions: _I64
    behaviour_actions: _I64
    costs_s: _F64
    episode: _I64
    round: _I64
    request_id: _I64
    time_s: _F64
    n_actions: int
    teacher_wall_time_s: float = 0.0

    @property
    def n_labels(self) -> int:
        """Number of labelled decisions."""
        return int(self.actions.shape[0])

    def agreement(self) -> float:
        """Share of decisions where the driving policy did what the teacher would do."""
        if self.n_labels == 0:
            return float("nan")
        return float(np.mean(self.actions == self.behaviour_actions))

    def subset(self, mask: npt.NDArray[np.bool_]) -> LookaheadLabels:
        """The labels where ``mask`` is True (e.g. ``labels.round == 0``)."""
        return LookaheadLabels(
            observations=self.observations[mask],
            actions=self.actions[mask],
            behaviour_actions=self.behaviour_actions[mask],
            costs_s=self.costs_s[mask],
            episode=self.episode[mask],
            round=self.round[mask],
            request_id=self.request_id[mask],
            time_s=self.time_s[mask],
            n_actions=self.n_actions,
            teacher_wall_time_s=self.teacher_wall_time_s if mask.all() else 0.0,
        )

    def concat(self, other: LookaheadLabels) -> LookaheadLabels:
        """Both label sets, ``self`` first (the union a DAgger round trains on)."""
        if other.n_actions != self.n_actions:
            raise ValueError(
                f"label sets with {self.n_actions} and {other.n_actions} actions; expected "
                "labels of one cluster."
            )
        return LookaheadLabels(
            observations=np.concatenate([self.observations, other.observations]),
            actions=np.concatenate([self.actions, other.actions]),
            behaviour_actions=np.concatenate([self.behaviour_actions, other.behaviour_actions]),
            costs_s=np.concatenate([self.costs_s, other.costs_s]),
            episode=np.concatenate([self.episode, other.episode]),
            round=np.concatenate([self.round, other.round]),
            request_id=np.concatenate([self.request_id, other.request_id]),
            time_s=np.concatenate([self.time_s, other.time_s]),
            n_actions=self.n_actions,
            teacher_wall_time_s=self.teacher_wall_time_s + other.teacher_wall_time_s,
        )

    def to_frame(self) -> pl.DataFrame:
        """One row per label (``obs`` and ``costs_s`` as fixed-size arrays)."""
        return pl.DataFrame(
            {
                "round": self.round,
                "episode": self.episode,
                "request_id": self.request_id,
                "time_s": self.time_s,
                "action": self.actions,
                "behaviour_action": self.behaviour_actions,
                "obs": self.observations,
                "costs_s": self.costs_s,
            },
            schema_overrides={
                "obs": pl.Array(pl.Float32, self.observations.shape[1]),
                "costs_s": pl.Array(pl.Float64, self.n_actions),
            },
        )

    @classmethod
    def from_frame(
        cls, frame: pl.DataFrame, *, n_actions: int, teacher_wall_time_s: float = 0.0
    ) -> LookaheadLabels:
        """Inverse of :meth:`to_frame`."""
        obs = frame["obs"].to_numpy().astype(np.float32, copy=False)
        costs = frame["costs_s"].to_numpy().astype(np.float64, copy=False)
        return cls(
            observations=obs.reshape(frame.height, -1),
            actions=frame["action"].to_numpy().astype(np.int64),
            behaviour_actions=frame["behaviour_action"].to_numpy().astype(np.int64),
            costs_s=costs.reshape(frame.height, n_actions),
            episode=frame["episode"].to_numpy().astype(np.int64),
            round=frame["round"].to_numpy().astype(np.int64),
            request_id=frame["request_id"].to_numpy().astype(np.int64),
            time_s=frame["time_s"].to_numpy().astype(np.float64),
            n_actions=n_actions,
            teacher_wall_time_s=teacher_wall_time_s,
        )

    def targets(
        self,
        layout: ObservationLayout,
        *,
        tie_break: TieBreak = "min-min",
        tolerance_s: float = 1e-6,
    ) -> _I64:
        """Training targets: the teacher's action, ties broken by ``tie_break``.

        ``"teacher"`` returns :attr:`actions`. ``"min-min"``: among the actions whose
        rollout cost is within ``tolerance_s`` of the least, the instance with the
        least ``minmin_eta`` in the observation (min-min's choice among them); WAIT
        only when no instance ties with it. ``"min-total-latency"``: the same with the
        ``total_latency_gap`` block. Every target costs at most the least plus
        ``tolerance_s``.

        Example:
            >>> lay = ObservationLayout(n_instances=2, n_prompt_buckets=1, n_decode_buckets=1)
            >>> obs = np.zeros((1, lay.size), np.float32)
            >>> obs[0, lay.block_slice("minmin_eta")] = [0.5, 0.2]   # min-min prefers 1
            >>> labels = LookaheadLabels(observations=obs, actions=np.array([0]),
            ...     behaviour_actions=np.array([1]), costs_s=np.array([[3.0, 3.0, 3.0]]),
            ...     episode=np.array([0]), round=np.array([0]), request_id=np.array([0]),
            ...     time_s=np.array([0.0]), n_actions=3)
            >>> labels.targets(lay).tolist(), labels.targets(lay, tie_break="teacher").tolist()
            ([1], [0])
        """
        if tie_break == "teacher":
            return self.actions.copy()
        if tie_break not in _TIE_BLOCKS:
            raise ValueError(f"tie_break = {tie_break!r}; expected one of {list(_TIE_BREAKS)}.")
        m = self.n_actions - 1
        costs = np.where(np.isnan(self.costs_s), np.inf, self.costs_s)
        best = costs.min(axis=1, keepdims=True)
        tied = costs <= best + tolerance_s
        eta = self.observations[:, layout.block_slice(_TIE_BLOCKS[tie_break])].astype(np.float64)
        eta = np.where(tied[:, :m], eta, np.inf)
        out: _I64 = np.asarray(np.argmin(eta, axis=1), dtype=np.int64)
        no_instance = ~tied[:, :m].any(axis=1)
        out[no_instance] = self.actions[no_instance]
        return out

    def dataset(self, actions: _I64 | None = None) -> RoutingDataset:
        """The labels as a :class:`RoutingDataset` for DiscreteBC (rewards are zeros).

        ``actions``: the training targets (default :attr:`actions`, see :meth:`targets`).

        Each (round, episode) is one d3rlpy episode ending by timeout; ``next_obs`` is
        the next labelled observation (BC reads neither).
        """
        n = self.n_labels
        if n == 0:
            raise ValueError("no labelled decisions; expected at least one.")
        key = self.round * 1_000_000 + self.episode
        last = np.ones(n, dtype=bool)
        last[:-1] = key[1:] != key[:-1]
        next_obs = np.zeros_like(self.observations)
        next_obs[:-1] = self.observations[1:]
        next_obs[last] = 0.0
        step = np.zeros(n, dtype=np.int64)
        for i in range(1, n):
            step[i] = 0 if key[i] != key[i - 1] else step[i - 1] + 1
        width = self.observations.shape[1]
        frame = pl.DataFrame(
            {
                "episode": key,
                "step": step,
                "obs": self.observations,
                "action": self.actions if actions is None else actions,
                "reward": np.zeros(n, dtype=np.float64),
                "next_obs": next_obs,
                "terminal": np.zeros(n, dtype=bool),
                "timeout": last,
                "behaviour": ["lookahead-labels"] * n,
            },
            schema_overrides={
                "obs": pl.Array(pl.Float32, width),
                "next_obs": pl.Array(pl.Float32, width),
            },
        )
        return build_dataset(frame, n_actions=self.n_actions)


def label_states(
    episodes: Sequence[pl.DataFrame],
    cluster: ClusterConfig,
    behaviour: Router,
    *,
    n_labels: int,
    teacher: LookaheadOracleRouter | None = None,
    layout: ObservationLayout | None = None,
    predictor: OutputLengthPredictor | None = None,
    replay_config: ReplayConfig | None = None,
    label_every: int = 1,
    seed: int = 0,
    round_index: int = 0,
    start_episode: int = 0,
    show_progress: bool = False,
    n_workers: int = 1,
) -> tuple[LookaheadLabels, int]:
    """Drive the simulator with ``behaviour`` and label its states with the lookahead.

    Episodes are taken in order from ``start_episode`` (cycling) until ``n_labels``
    decisions are labelled (the last episode is cut there). At a labelled decision the
    teacher forks the engine and rolls out every action; then the behaviour's action
    is applied. The behaviour and the observation encoder get a plain ``RequestView``
    (:func:`plain_view`), never the true output length.

    Args:
        episodes: training traces (never the evaluation episodes).
        cluster: the cluster.
        behaviour: the driving router (a heuristic or a
            :class:`~routeplay.offline_rl.PolicyRouter`); reset per episode.
        n_labels: labelled decisions to collect (>= 1).
        teacher: the lookahead (default: the registered ``lookahead-oracle`` settings).
        layout: observation layout (default ``default_layout(cluster, config,
            predictor)``).
        predictor: output-length predictor (the student's observation and the
            engine's predictions).
        replay_config: replay settings.
        label_every: label every ``label_every``-th decision.
        seed: labelling seed (``SeedSequence([seed, round_index, episode])``).
        round_index: recorded in the labels (and part of the seed).
        start_episode: index of the first episode to drive.
        show_progress: a progress bar of labelled decisions.
        n_workers: 1 labels in this process; more splits each episode's labelled
            decisions between that many worker processes (``spawn``; the behaviour,
            teacher and predictor are pickled to them; each drives the whole episode and
            labels every ``n_workers``-th decision). The labels are the same either way,
            bit for bit; ``teacher_wall_time_s`` is then summed over the workers.

    Returns:
        The labels and the index of the next unused episode (modulo the list).

    Raises:
        ValueError: no episodes, ``behaviour`` is an oracle/needs the engine,
            ``n_labels``/``label_every``/``n_workers`` < 1, or (``n_workers > 1``) a
            router or predictor that cannot be pickled.

    Example:
        >>> from routeplay.estimator import LinearLatencyModel
        >>> from routeplay.replay import ClusterConfig, InstanceConfig, make_router
        >>> slow = LinearLatencyModel.from_throughput(1000.0)
        >>> fast = LinearLatencyModel.from_throughput(4000.0)
        >>> cluster = ClusterConfig(instances=(InstanceConfig(name="slow", latency=slow),
        ...                                    InstanceConfig(name="fast", latency=fast)))
        >>> trace = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.001],
        ...                       "prompt_tokens": [100, 100], "output_tokens": [1, 1]})
        >>> labels, _ = label_states([trace], cluster, make_router("round-robin"), n_labels=2)
        >>> labels.actions.tolist(), labels.behaviour_actions.tolist()
        ([1, 1], [0, 1])

        On two worker processes (the same labels; from a script, its top-level code
        under ``if __name__ == "__main__":``, since the workers start with ``spawn``)::

            labels, next_episode = label_states(episodes, cluster, make_router("min-min"),
                                                n_labels=3000, n_workers=2)
    """
    check_int("label_states", "n_labels", n_labels, minimum=1)
    check_int("label_states", "label_every", label_every, minimum=1)
    n_workers = check_n_workers(n_workers)
    if not episodes:
        raise ValueError("label_states got no episodes; expected at least one training trace.")
    _check_behaviour(behaviour, "behaviour")
    config = replay_config if replay_config is not None else ReplayConfig()
    task = LabelTask(
        episodes=list(episodes),
        cluster=cluster,
        behaviour=behaviour,
        teacher=teacher if teacher is not None else LookaheadOracleRouter(),
        layout=layout if layout is not None else default_layout(cluster, config, predictor),
        predictor=predictor,
        config=config,
        label_every=label_every,
        seed=seed,
        round_index=round_index,
    )
    from tqdm.auto import tqdm

    bar = tqdm(total=n_labels, disable=not show_progress, desc=f"label round {round_index}")
    try:
        parts, next_episode = collect_labels(
            task, n_labels, start_episode, n_workers=n_workers, on_labels=bar.update
        )
    finally:
        bar.close()
    n_actions = cluster.n_instances + 1
    size = task.layout.size
    obs = [o for part in parts for o in part.observations]
    costs = [c for part in parts for c in part.costs_s]
    labels = LookaheadLabels(
        observations=np.asarray(obs, dtype=np.float32).reshape(len(obs), size),
        actions=np.asarray([a for part in parts for a in part.actions], dtype=np.int64),
        behaviour_actions=np.asarray(
            [a for part in parts for a in part.behaviour_actions], dtype=np.int64
        ),
        costs_s=np.asarray(costs, dtype=np.float64).reshape(len(costs), n_actions),
        episode=np.asarray([part.episode for part in parts for _ in part.actions], np.int64),
        round=np.full(len(obs), round_index, dtype=np.int64),
        request_id=np.asarray([r for part in parts for r in part.request_id], dtype=np.int64),
        time_s=np.asarray([t for part in parts for t in part.time_s], dtype=np.float64),
        n_actions=n_actions,
        teacher_wall_time_s=sum(part.teacher_wall_s for part in parts),
    )
    return labels, next_episode


@dataclass(frozen=True, slots=True, kw_only=True)
class ImitationResult:
    """A finished lookahead-imitation run.

    Attributes:
        train: the kept round's :class:`TrainResult` (pass it to ``save_router``).
        selected_round: the kept round (the last, or the best on validation episodes).
        labels: every round's labels (the union the last round trained on).
        rounds: one row per round: ``round``, ``driver``, ``n_labels`` (this round),
            ``n_train`` (union), ``driver_agreement`` (share of this round's labels
            where the driver did what the teacher would), ``train_accuracy`` (share of
            the union where the student hits its BC target), ``train_least_cost``
            (share where it picks a least-cost action), ``validation_e2e_s`` and
            ``behaviour_validation_e2e_s`` (NaN without validation episodes),
            ``teacher_wall_s``, ``train_wall_s``, ``selected``.
        layout: the observation layout of the student.
        config: the run's config.
        run_dir: folder with the labels, per-round training runs and ``imitation.json``.
    """

    train: TrainResult
    selected_round: int
    labels: LookaheadLabels
    rounds: pl.DataFrame
    layout: ObservationLayout
    config: ImitationConfig
    run_dir: Path

    def router(self, *, name: str = "imitate-lookahead", wait_limit: int | None = None) -> Any:
        """The trained student as a :class:`~routeplay.offline_rl.PolicyRouter`."""
        from ._policy import PolicyRouter

        return PolicyRouter(self.train.algo, layout=self.layout, name=name, wait_limit=wait_limit)


def _student_fit(algo: Any, labels: LookaheadLabels, targets: _I64) -> tuple[float, float]:
    """(share equal to the targets, share of least-cost actions) of the student's picks."""
    import torch

    with torch.inference_mode():
        pred = algo.impl.predict_best_action(torch.tensor(labels.observations))
    picks = pred.numpy().reshape(-1).astype(np.int64)
    costs = np.where(np.isnan(labels.costs_s), np.inf, labels.costs_s)
    best = costs.min(axis=1)
    chosen = costs[np.arange(picks.shape[0]), picks]
    return float(np.mean(picks == targets)), float(np.mean(chosen <= best + 1e-9))


def _mean_e2e_s(
    router: Any,
    episodes: Sequence[pl.DataFrame],
    cluster: ClusterConfig,
    config: ReplayConfig,
    predictor: OutputLengthPredictor | None,
) -> float:
    """Mean over episodes of each episode's mean E2E under ``router``."""
    from routeplay.replay.engine._engine import run_replay

    means = [
        float(
            run_replay(t, cluster, router, config=config, predictor=predictor)
            .requests["e2e_s"]
            .mean()
        )  # fmt: skip
        for t in episodes
    ]
    return float(np.mean(means))


def _labels_path(run_dir: Path, round_: int) -> Path:
    return run_dir / f"labels-round-{round_}.parquet"


_ROUND0_FIELDS = (
    "label_decisions",
    "label_every",
    "horizon_s",
    "teacher_base",
    "include_wait",
    "behaviour",
    "seed",
)


def _labels_key(config: ImitationConfig, round_: int, episodes_sha256: str) -> str:
    """The sha256 key of what a round's labels depend on.

    Round 0: the labelling fields; later rounds: every field but ``dagger_rounds`` (the
    student that drives depends on training too); and the episodes.
    """
    fields = config.to_dict()
    fields.pop("dagger_rounds")
    if round_ == 0:
        fields = {k: fields[k] for k in _ROUND0_FIELDS}
    return sha256_json({"round": round_, "config": fields, "episodes": episodes_sha256})


def _episodes_sha256(episodes: Sequence[pl.DataFrame]) -> str:
    cols = ("arrival_s", "prompt_tokens", "output_tokens")
    return sha256_arrays(*[t[c].to_numpy() for t in episodes for c in cols])


def _write_labels(path: Path, labels: LookaheadLabels, next_episode: int, key: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        labels.to_frame().write_parquet(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    write_json_atomic(
        path.with_suffix(".json"),
        {
            "n_labels": labels.n_labels,
            "next_episode": next_episode,
            "teacher_wall_time_s": labels.teacher_wall_time_s,
            "key": key,
        },
    )


def _read_labels(path: Path, n_actions: int, key: str) -> tuple[LookaheadLabels, int] | None:
    """Labels saved by an earlier call for the same key; refuses labels of another run."""
    meta_path = path.with_suffix(".json")
    if not (path.is_file() and meta_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    if meta.get("key") != key:
        raise ValueError(
            f"{str(path)!r} holds labels of another run (other labelling settings, seed or "
            "episodes); refusing to reuse them (nothing was changed). Fix: use a new "
            "run_dir, or start over with resume=False (routeplay train --overwrite)."
        )
    labels = LookaheadLabels.from_frame(
        pl.read_parquet(path),
        n_actions=n_actions,
        teacher_wall_time_s=float(meta["teacher_wall_time_s"]),
    )
    if labels.n_labels != int(meta["n_labels"]):
        return None
    return labels, int(meta["next_episode"])


def imitate_lookahead(
    config: ImitationConfig,
    episodes: Sequence[pl.DataFrame],
    cluster: ClusterConfig,
    *,
    run_dir: str | Path,
    predictor: OutputLengthPredictor | None = None,
    replay_config: ReplayConfig | None = None,
    show_progress: bool = False,
    resume: bool = True,
    logger_adapter: LoggerAdapterFactory | None = None,
    validation_episodes: Sequence[pl.DataFrame] | None = None,
    initial_labels: LookaheadLabels | None = None,
    say: Any = None,
    label_workers: int = 1,
) -> ImitationResult:
    """Train a router that imitates ``lookahead-oracle``: labels, BC, DAgger rounds.

    Round 0: ``config.behaviour`` drives, the lookahead labels ``label_decisions``
    decisions, DiscreteBC trains on them. Each DAgger round ``r``: the round ``r - 1``
    student drives (``PolicyRouter`` with ``wait_limit``; ``behaviour`` routes a
    request after that many consecutive WAITs), the lookahead labels another
    ``label_decisions`` decisions, BC retrains from scratch on the union. BC's targets
    are the teacher's actions with ties broken by ``config.tie_break``. The result's
    ``train`` is the last round's, or, with ``validation_episodes``, the round whose
    student has the least mean E2E on them (each round's student is replayed on them,
    ``wait_limit`` fallback as when it drives; the behaviour heuristic too, for
    reference). Validation episodes must be disjoint from the labelling episodes and
    from any evaluation episode (module docstring: what is oracle and what is not).

    ``run_dir`` holds ``labels-round-<r>.parquet`` (+ ``.json``), ``round-<r>/`` (each
    round's :func:`train_router` run) and ``imitation.json`` (config and per-round
    table). With ``resume=True`` a round's labels already in ``run_dir`` are reused
    when they were made with the same settings and episodes (refused otherwise; adding
    DAgger rounds reuses the earlier ones) and training resumes from its checkpoint
    (refused if the data differ).

    Args:
        config: the run's config.
        episodes: training traces (disjoint from any evaluation episode).
        cluster: the cluster.
        run_dir: the run folder (created if missing).
        predictor: output-length predictor (the student sees its predictions only).
        replay_config: replay settings.
        show_progress: progress bars for labelling and training.
        resume: reuse labels and checkpoints found in ``run_dir``.
        logger_adapter: d3rlpy logger factory (tests: ``NoopAdapterFactory()``).
        validation_episodes: traces on which each round's student is replayed to pick
            the round kept (``None``: the last round is kept).
        initial_labels: round-0 labels to use instead of labelling (e.g. another
            seed's, shared when the behaviour and the teacher's rollouts use no
            randomness); they must come from ``label_states`` on the same ``episodes``,
            cluster and predictor (round 0 continues at the episode after their last).
        say: optional ``str -> None`` called with one line per stage.
        label_workers: processes that share the labelling (:func:`label_states`'s
            ``n_workers``); the labels, and so the whole run, are the same for any
            count. Not part of the run's settings (resume ignores it).

    Returns:
        The :class:`ImitationResult`.

    Example:
        Not run here (3,000 lookahead labels take minutes)::

            from routeplay.offline_rl import ImitationConfig, imitate_lookahead, save_router
            result = imitate_lookahead(ImitationConfig(label_decisions=3000), episodes,
                                       cluster, run_dir="runs/imitate")
            save_router(result.train, "routers/imitate", layout=result.layout)
    """
    from ._policy import PolicyRouter

    check_n_workers(label_workers, "imitate_lookahead label_workers =")
    if not episodes:
        raise ValueError("imitate_lookahead got no episodes; expected training traces.")
    run_path = Path(run_dir)
    run_path.mkdir(parents=True, exist_ok=True)
    rc = replay_config if replay_config is not None else ReplayConfig()
    layout = default_layout(cluster, rc, predictor)
    n_actions = cluster.n_instances + 1
    train_cfg = config.train_config()
    episodes_sha = _episodes_sha256(episodes)
    union: LookaheadLabels | None = None
    result: TrainResult | None = None
    next_episode = 0
    rows: list[dict[str, Any]] = []
    results: list[TrainResult] = []
    behaviour_val = float("nan")
    if validation_episodes:
        behaviour_val = _mean_e2e_s(
            _make(config.behaviour), validation_episodes, cluster, rc, predictor
        )
        if say is not None:
            say(f"validation: {config.behaviour} mean E2E {behaviour_val:.3f} s")
    for r in range(config.dagger_rounds + 1):
        driver: Router
        if r == 0 or result is None:
            driver = _make(config.behaviour)
        else:
            driver = PolicyRouter(
                result.algo,
                layout=layout,
                name=f"student-round-{r - 1}",
                wait_limit=config.wait_limit,
                fallback=_make(config.behaviour),
            )
        driver_name = str(getattr(driver, "name", "driver"))
        path = _labels_path(run_path, r)
        key = _labels_key(config, r, episodes_sha)
        cached: tuple[LookaheadLabels, int] | None = None
        if r == 0 and initial_labels is not None:
            if initial_labels.n_actions != n_actions or initial_labels.observations.shape[1] != (
                layout.size
            ):
                raise ValueError(
                    "initial_labels do not fit this cluster's observation layout; expected "
                    "round-0 labels of the same cluster, predictor and episodes."
                )
            cached = (initial_labels, (int(initial_labels.episode[-1]) + 1) % len(episodes))
        elif resume:
            cached = _read_labels(path, n_actions, key)
        if cached is not None:
            labels, next_episode = cached
            if say is not None:
                where = "initial_labels" if r == 0 and initial_labels is not None else path
                say(f"round {r}: reusing {labels.n_labels} labels from {where}")
        else:
            labels, next_episode = label_states(
                episodes,
                cluster,
                driver,
                n_labels=config.label_decisions,
                teacher=config.teacher(),
                layout=layout,
                predictor=predictor,
                replay_config=rc,
                label_every=config.label_every,
                seed=config.seed,
                round_index=r,
                start_episode=next_episode,
                show_progress=show_progress,
                n_workers=label_workers,
            )
            _write_labels(path, labels, next_episode, key)
            if say is not None:
                say(
                    f"round {r}: {driver_name} drove, lookahead labelled {labels.n_labels} "
                    f"decisions in {labels.teacher_wall_time_s:.1f} s (driver agreed "
                    f"{labels.agreement():.1%})"
                )
        union = labels if union is None else union.concat(labels)
        targets = union.targets(
            layout, tie_break=config.tie_break, tolerance_s=config.tie_tolerance_s
        )
        result = train_router(
            train_cfg,
            union.dataset(targets),
            run_dir=run_path / f"round-{r}",
            show_progress=show_progress,
            resume=resume,
            logger_adapter=logger_adapter,
        )
        results.append(result)
        accuracy, least_cost = _student_fit(result.algo, union, targets)
        val = float("nan")
        if validation_episodes:
            student = PolicyRouter(
                result.algo,
                layout=layout,
                name=f"student-round-{r}",
                wait_limit=config.wait_limit,
                fallback=_make(config.behaviour),
            )
            val = _mean_e2e_s(student, validation_episodes, cluster, rc, predictor)
        if say is not None:
            say(
                f"round {r}: BC on {union.n_labels} labels, {result.n_steps_done} steps in "
                f"{result.wall_time_s:.1f} s; student hits the target on {accuracy:.1%} and "
                f"a least-cost action on {least_cost:.1%} of them"
                + (f"; validation mean E2E {val:.3f} s" if validation_episodes else "")
            )
        rows.append(
            {
                "round": r,
                "driver": driver_name,
                "n_labels": labels.n_labels,
                "n_train": union.n_labels,
                "driver_agreement": labels.agreement(),
                "train_accuracy": accuracy,
                "train_least_cost": least_cost,
                "validation_e2e_s": val,
                "behaviour_validation_e2e_s": behaviour_val,
                "teacher_wall_s": labels.teacher_wall_time_s,
                "train_wall_s": result.wall_time_s,
            }
        )
    assert union is not None and result is not None
    selected = len(results) - 1
    if validation_episodes:
        vals = [row["validation_e2e_s"] for row in rows]
        selected = int(np.argmin(vals))  # ties: the earliest round
        result = results[selected]
        if say is not None:
            kept = float(vals[selected])
            verdict = "faster" if kept < behaviour_val else "NOT faster"
            say(
                f"kept round {selected} (least validation mean E2E {kept:.3f} s; "
                f"{verdict} than {config.behaviour}'s {behaviour_val:.3f} s)"
            )
    rounds = pl.DataFrame(rows).with_columns((pl.col("round") == selected).alias("selected"))
    write_json_atomic(
        run_path / "imitation.json",
        {
            "config": config.to_dict(),
            "teacher": {
                "router": "lookahead-oracle",
                "oracle": True,
                "horizon_s": config.horizon_s,
                "base": config.teacher_base,
                "include_wait": config.include_wait,
                "note": "labels come from an oracle teacher (true output lengths and future "
                "arrivals inside its forks); the student sees plain observations only",
            },
            "selected_round": selected,
            "rounds": rounds.to_dicts(),
        },
    )
    return ImitationResult(
        train=result,
        selected_round=selected,
        labels=union,
        rounds=rounds,
        layout=layout,
        config=config,
        run_dir=run_path,
    )
