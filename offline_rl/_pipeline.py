"""The offline-RL half of the experiment pipeline: log -> train -> evaluate a scenario.

A :class:`~routeplay.replay.Scenario` fixes the workload, episodes, cluster, predictor,
replay settings and seed; :class:`LearningConfig` fixes how routers are learned and
replayed. Three functions run the pipeline, and every entry point calls them
(``routeplay train``/``routeplay evaluate``, the report job's ``[training]``, the
benchmark scripts), so they cannot drift:

1. :func:`train_scenario`: every behaviour heuristic is logged on the scenario's
   *training* episodes with epsilon-random exploration
   (:func:`routeplay.replay.log_behaviours`, one Parquet file per behaviour, the named
   reward), the logs become one dataset (:func:`build_dataset`), and each algorithm is
   trained on it (:func:`train_router`, ``<run_dir>/<algorithm>/``) and exported
   (:func:`save_router`, ``<run_dir>/<algorithm>/router/``);
2. :func:`learned_routers`: the trained policies as routers labelled with their
   algorithm key (``cql``);
3. :func:`evaluate_scenario`: learned and heuristic routers replayed on the *test*
   episodes, paired (:func:`evaluate_routers`): each learned router is wrapped in
   :class:`BoundedWaitRouter` (a request it kept waiting ``max_router_wait_s`` is routed
   by ``fallback``; those decisions are counted in ``n_fallback_routes``, never hidden)
   and keeps its label; every replay stops with an error when simulated time passes the
   latest test arrival by ``sim_slack_s``; the bootstrap is seeded with the scenario's
   seed.

Defaults are defined once: the training fields of :class:`LearningConfig` default to
:class:`TrainConfig`'s, the fallback bound and simulated-time slack to
:func:`evaluate_routers`'; job files and command-line flags build these classes.
"""

# Why this module is long: it is the pipeline's one definition: the learning config (its
# validation and defaults), the result (with the sentence reports print about how a
# router was trained) and the three functions every entry point calls; split, the
# config and the code that reads it would drift apart.

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from ._evaluate import (
    DEFAULT_FALLBACK,
    DEFAULT_MAX_ROUTER_WAIT_S,
    DEFAULT_SIM_SLACK_S,
    EvaluationResult,
    evaluate_routers,
)
from ._train import ALGORITHMS, RewardTransform, TrainConfig

if TYPE_CHECKING:
    from routeplay.replay import (
        BehaviourLog,
        ObservationLayout,
        PreparedScenario,
        Router,
        SchedulerLayout,
    )

    from ._dataset import DatasetCard

__all__ = [
    "DECISIONS",
    "DEFAULT_BEHAVIOURS",
    "DEFAULT_SCHEDULER_BEHAVIOURS",
    "LearningConfig",
    "LearningResult",
    "evaluate_scenario",
    "learned_routers",
    "train_scenario",
]

logger = logging.getLogger(__name__)

#: Behaviour heuristics logged by default (each with the config's epsilon).
#: The heuristic whose logs a learned router is trained from by default: the strongest
#: deployable one (docs/notes/headroom.md). Chosen on probe runs that never saw a
#: reported test episode: with observation layout 3, BC and CQL on its logs matched it on
#: the mixed cluster at 80 req/s (a probe trace seed, docs/notes/offline-rl-results.md),
#: and tied it on the main job's validation windows (docs/notes/reports.md); logs that
#: mix weaker heuristics (the former default included round robin) teach a mixture.
DEFAULT_BEHAVIOURS: tuple[str, ...] = ("min-total-latency",)

#: The scheduler whose logs a learned scheduler is trained from by default: late binding
#: with shortest predicted job first, the best deployable scheduler of
#: docs/notes/headroom.md (+14 % vs round robin in the paper's overload regime).
DEFAULT_SCHEDULER_BEHAVIOURS: tuple[str, ...] = ("late-binding-spf",)

#: What a learned policy may decide (``LearningConfig.decision``).
DECISIONS: tuple[str, ...] = ("route", "schedule")


def _train_default(name: str) -> Any:
    """The default of a :class:`TrainConfig` field (the one place it is defined)."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == name:
            return f.default
    raise KeyError(name)  # pragma: no cover - a field name typo


def _finite_seconds(value: Any, *, strict: bool) -> bool:
    """A finite int/float (not bool) > 0 (``strict``) or >= 0: inf would never end a replay."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value > 0 if strict else value >= 0


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True, slots=True, kw_only=True)
class LearningConfig:
    """How routers are learned offline and replayed (a job file's ``[training]`` section).

    Attributes:
        decision: what the learned policy decides. ``"route"`` (default): the instance
            of each request (a router). ``"schedule"``: which queued request to release
            when an instance is free (a scheduler over a shortlist of the queue, placed
            where it finishes earliest; ``routeplay.replay.SchedulerLayout``); its logs
            use the queue-time reward (``routeplay.replay.queue_time_rewards``), not
            ``reward``.
        behaviours: heuristics whose epsilon-random replays of the training episodes
            are logged (names from ``routeplay routers``): routers for ``"route"``,
            schedulers for ``"schedule"``. Empty (the default) means the decision's
            default: :data:`DEFAULT_BEHAVIOURS` or :data:`DEFAULT_SCHEDULER_BEHAVIOURS`.
        epsilon: probability of a uniformly random action (WAIT included; for a
            scheduler a random shortlist slot) instead of the behaviour's own, in
            [0, 1]; the same for every behaviour.
        reward: reward function of routing logs (``routeplay.replay.REWARD_VARIANTS``).
        n_candidates: shortlist slots of a scheduler (``"schedule"`` only; >= 2).
        algorithms: offline RL algorithms, each trained once on the same dataset and
            replayed under its own label (``cql``, ``bcq``, ``bc``, ``double-dqn``).
        n_steps: gradient steps per algorithm.
        n_steps_per_epoch: losses are averaged (one learning-curve point) every this
            many steps.
        batch_size: transitions per gradient step.
        learning_rate: Adam learning rate.
        gamma: discount factor (default 0.9).
        hidden_units: MLP widths.
        target_update_interval: steps between target-network copies (Q-learning;
            default 100).
        reward_normalization: ``"none"``, ``"scale"`` or ``"standardize"`` (default;
            statistics of the training logs; see :class:`TrainConfig`) — what keeps
            CQL/BCQ from collapsing on the paper reward's large values. The defaults of
            ``gamma``, ``target_update_interval`` and this one were chosen on the main
            job's validation windows (docs/notes/reports.md); :class:`TrainConfig`
            keeps its own for direct use.
        reward_scale: multiplier of ``"scale"``/``"standardize"`` (1.0 with ``"none"``).
        seed: training seed (logging exploration and d3rlpy); ``None`` = the scenario's.
        max_router_wait_s: a request a learned router has kept WAITing this long
            (seconds) is routed by ``fallback``; the count is reported.
        fallback: the heuristic used for such requests.
        sim_slack_s: replays stop with an error when simulated time passes the latest
            arrival of a test episode by this much.

    Raises:
        ValueError: ``LearningConfig.<field> = <value>; expected ...`` (job files show
            it as ``[training] <key> = ...``).

    Example:
        >>> from routeplay.offline_rl import LearningConfig, TrainConfig
        >>> LearningConfig().n_steps == TrainConfig().n_steps
        True
        >>> LearningConfig(n_steps=40).train_config("bc", seed=1).n_steps
        40
        >>> LearningConfig(algorithms=("cql", "sac"))
        Traceback (most recent call last):
        ...
        ValueError: LearningConfig.algorithms = contains 'sac'; expected names from ['cql', ...].
    """

    decision: str = "route"
    behaviours: tuple[str, ...] = ()
    epsilon: float = 0.1
    reward: str = "paper-workload-guided"
    algorithms: tuple[str, ...] = ("cql",)
    n_steps: int = _train_default("n_steps")
    n_steps_per_epoch: int = _train_default("n_steps_per_epoch")
    batch_size: int = _train_default("batch_size")
    learning_rate: float = _train_default("learning_rate")
    # chosen on the main job's validation windows (docs/notes/reports.md): the former
    # defaults (raw rewards, gamma 0.99, sync every 1,000 steps) were the worst CQL there
    gamma: float = 0.9
    hidden_units: tuple[int, ...] = _train_default("hidden_units")
    target_update_interval: int = 100
    reward_normalization: str = "standardize"
    reward_scale: float = _train_default("reward_scale")
    seed: int | None = None
    max_router_wait_s: float = DEFAULT_MAX_ROUTER_WAIT_S
    fallback: str = DEFAULT_FALLBACK
    sim_slack_s: float = DEFAULT_SIM_SLACK_S
    n_candidates: int = 8

    def __post_init__(self) -> None:
        from routeplay.replay import REWARD_VARIANTS, is_scheduler, list_routers, make_router
        from routeplay.replay.rl._rewards import canonical_reward_name

        def bad(key: str, message: str) -> ValueError:
            return ValueError(f"LearningConfig.{key} = {message}")

        if self.decision not in DECISIONS:
            raise bad("decision", f"{self.decision!r}; expected one of {list(DECISIONS)}.")
        schedule = self.decision == "schedule"
        default = DEFAULT_SCHEDULER_BEHAVIOURS if schedule else DEFAULT_BEHAVIOURS
        object.__setattr__(self, "behaviours", tuple(self.behaviours) or default)
        object.__setattr__(self, "algorithms", tuple(self.algorithms))
        object.__setattr__(self, "hidden_units", tuple(self.hidden_units))
        known = list_routers()
        for name in self.behaviours:
            if name not in known:
                raise bad(
                    "behaviours",
                    f"contains unknown router {name!r}. Run `routeplay routers` for the list.",
                )
            if is_scheduler(make_router(name)) != schedule:
                kind, want = ("a router", "schedulers") if schedule else ("a scheduler", "routers")
                raise bad(
                    "behaviours",
                    f"contains {name!r}, {kind}; decision = {self.decision!r} logs {want}. "
                    f"Fix: use e.g. {list(default)}, or leave behaviours empty for that default.",
                )
        if not _positive_int(self.n_candidates) or self.n_candidates < 2:
            raise bad("n_candidates", f"{self.n_candidates!r}; expected an integer >= 2.")
        if len(set(self.behaviours)) != len(self.behaviours):
            raise bad("behaviours", f"{list(self.behaviours)}; expected each router once.")
        if not (
            isinstance(self.epsilon, int | float)
            and not isinstance(self.epsilon, bool)
            and 0.0 <= self.epsilon <= 1.0
        ):
            raise bad("epsilon", f"{self.epsilon!r}; expected a probability in [0, 1].")
        # a former reward name (job files of earlier versions): warn, use the current one;
        # stacklevel 3 = whoever built the LearningConfig (__post_init__ <- __init__ <- it)
        object.__setattr__(self, "reward", canonical_reward_name(self.reward, stacklevel=3))
        if self.reward not in REWARD_VARIANTS:
            raise bad("reward", f"{self.reward!r}; expected one of {list(REWARD_VARIANTS)}.")
        if not self.algorithms:
            raise bad("algorithms", f"[]; expected names from {list(ALGORITHMS)}.")
        for algo in self.algorithms:
            if algo not in ALGORITHMS:
                raise bad(
                    "algorithms", f"contains {algo!r}; expected names from {list(ALGORITHMS)}."
                )
        if len(set(self.algorithms)) != len(self.algorithms):
            raise bad("algorithms", f"{list(self.algorithms)}; expected each algorithm once.")
        for key in ("n_steps", "n_steps_per_epoch", "batch_size", "target_update_interval"):
            value = getattr(self, key)
            if not _positive_int(value):
                raise bad(key, f"{value!r}; expected an integer >= 1.")
        if not (isinstance(self.learning_rate, int | float) and 0 < self.learning_rate < 1):
            raise bad("learning_rate", f"{self.learning_rate!r}; expected a number in (0, 1).")
        if not (isinstance(self.gamma, int | float) and 0.0 <= self.gamma <= 1.0):
            raise bad("gamma", f"{self.gamma!r}; expected a number in [0, 1].")
        if not self.hidden_units or not all(_positive_int(h) for h in self.hidden_units):
            raise bad(
                "hidden_units",
                f"{list(self.hidden_units)!r}; expected a non-empty list of integers >= 1.",
            )
        if self.seed is not None and not (
            isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0
        ):
            raise bad("seed", f"{self.seed!r}; expected an integer >= 0.")
        if not _finite_seconds(self.max_router_wait_s, strict=False):
            raise bad(
                "max_router_wait_s",
                f"{self.max_router_wait_s!r}; expected a finite number of seconds >= 0.",
            )
        if self.fallback not in known:
            raise bad(
                "fallback",
                f"{self.fallback!r} is not a router name. Run `routeplay routers` for the list.",
            )
        if not _finite_seconds(self.sim_slack_s, strict=True):
            raise bad(
                "sim_slack_s", f"{self.sim_slack_s!r}; expected a finite number of seconds > 0."
            )
        try:  # the reward transform's rules are TrainConfig's
            self.train_config(self.algorithms[0], seed=0)
        except ValueError as exc:
            text = str(exc).replace("TrainConfig.", "LearningConfig.")
            raise ValueError(text) from None

    def train_config(
        self, algorithm: str, *, seed: int, checkpoint_every_steps: int | None = None
    ) -> TrainConfig:
        """The :class:`TrainConfig` of one algorithm.

        Args:
            algorithm: the algorithm key.
            seed: the training seed.
            checkpoint_every_steps: checkpoint cadence (default: once, at the end); it
                does not change the trained weights.

        Example:
            >>> from routeplay.offline_rl import LearningConfig
            >>> LearningConfig(n_steps=40).train_config("bc", seed=1).n_steps_per_epoch
            40
        """
        return TrainConfig(
            algorithm=algorithm,  # type: ignore[arg-type]
            hidden_units=tuple(self.hidden_units),
            learning_rate=float(self.learning_rate),
            gamma=float(self.gamma),
            batch_size=self.batch_size,
            n_steps=self.n_steps,
            n_steps_per_epoch=min(self.n_steps_per_epoch, self.n_steps),
            checkpoint_every_steps=min(checkpoint_every_steps or self.n_steps, self.n_steps),
            target_update_interval=self.target_update_interval,
            reward_normalization=self.reward_normalization,  # type: ignore[arg-type]
            reward_scale=float(self.reward_scale),
            seed=seed,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class LearningResult:
    """What :func:`train_scenario` produced.

    Attributes:
        config: the learning config.
        seed: the training seed used.
        routers: label (algorithm key) -> trained policy
            (:class:`~routeplay.offline_rl.PolicyRouter`), not wrapped.
        layout: the observation layout of the logs and the policies.
        card: the training dataset's card.
        behaviour_logs: one row per behaviour: ``behaviour`` (with ``+eps``),
            ``n_episodes``, ``n_transitions``, ``reward_mean``, ``e2e_s_mean`` (mean
            over its logged episodes) and ``file`` (relative to ``run_dir``'s parent).
        losses: long learning-curve frame ``run, metric, step, value``.
        train_episode_ids: the episodes the logs were replayed on.
        run_dir: the training folder (transitions, one folder per algorithm).
        router_dirs: label -> saved router folder.
        wall_time_s: seconds spent logging, building the dataset and training each
            algorithm (``train_<label>``).
        notes: warnings raised while logging, building or training.
        reward_transforms: label -> the reward transform the algorithm trained with
            (its shift and factor come from the training logs).
    """

    config: LearningConfig
    seed: int
    routers: Mapping[str, Router]
    layout: ObservationLayout | SchedulerLayout
    card: DatasetCard
    behaviour_logs: pl.DataFrame
    losses: pl.DataFrame
    train_episode_ids: tuple[int, ...]
    run_dir: Path
    router_dirs: Mapping[str, Path]
    wall_time_s: Mapping[str, float]
    notes: tuple[str, ...] = ()
    reward_transforms: Mapping[str, RewardTransform] = field(default_factory=dict)

    def to_frame(self) -> pl.DataFrame:
        """The per-behaviour log table (``behaviour_logs``)."""
        return self.behaviour_logs

    def describe(self, label: str) -> str:
        """How the router ``label`` was trained, in one sentence (reports print it).

        Names the d3rlpy algorithm, gradient steps, batch, learning rate, network, seed,
        discount and target-network sync (Q-learning algorithms), the reward and its
        normalisation (with the statistics of the training logs), the behaviours and
        their exploration, the number of logged transitions and the training episodes.

        Raises:
            KeyError: if ``label`` is not one of ``routers``.

        Example:
            >>> import tempfile
            >>> from routeplay.replay import Scenario
            >>> from routeplay.offline_rl import LearningConfig, train_scenario
            >>> prepared = Scenario(trace="task-mix", task_mix={"n_requests": 40},
            ...     episode_requests=10, test_fraction=0.5, cluster="v100x2").prepare()
            >>> res = train_scenario(prepared, LearningConfig(behaviours=("round-robin",),
            ...     algorithms=("cql",), n_steps=5, batch_size=8,
            ...     reward_normalization="standardize"), tempfile.mkdtemp())
            >>> print(res.describe("cql"))  # doctest: +ELLIPSIS +NORMALIZE_WHITESPACE
            cql: d3rlpy DiscreteCQL trained offline for 5 gradient steps (batch 8,
            learning rate 0.0003, MLP 128x128, seed 0); discount gamma 0.9; target
            network synced every 100 steps; reward paper-workload-guided, standardized
            ((r - ...) / ... with the mean and std of the training logs); trained on
            ... transitions logged by round-robin with epsilon 0.1 (a uniformly random
            action, WAIT included, instead of the behaviour's) on training episodes [0, 1].
        """
        if label not in self.routers:
            raise KeyError(
                f"LearningResult.describe({label!r}): no such learned router; expected one "
                f"of {list(self.routers)}."
            )
        cfg = self.config.train_config(label, seed=self.seed)
        units = "x".join(str(h) for h in cfg.hidden_units)
        schedule = self.config.decision == "schedule"
        reward = "queue-time" if schedule else self.config.reward
        kind = (
            f" (a scheduler: it picks which of {self.config.n_candidates} shortlisted queued "
            "requests, the smallest predicted sizes and the oldest, a free instance serves next)"
            if schedule
            else ""
        )
        parts = [
            f"{label}{kind}: d3rlpy {ALGORITHMS[cfg.algorithm]} trained offline for {cfg.n_steps} "
            f"gradient steps "
            f"(batch {cfg.batch_size}, learning rate {cfg.learning_rate:g}, MLP {units}, "
            f"seed {cfg.seed})"
        ]
        if cfg.algorithm == "bc":
            parts.append(
                "imitation of the logged actions: the reward "
                f"({reward}, {self._reward_text(label, cfg)}), discount gamma "
                f"{cfg.gamma:g} and target sync every {cfg.target_update_interval} steps "
                "are set but unused by BC"
            )
        else:
            parts.append(f"discount gamma {cfg.gamma:g}")
            parts.append(f"target network synced every {cfg.target_update_interval} steps")
            parts.append(f"reward {reward}, {self._reward_text(label, cfg)}")
        episodes = list(self.train_episode_ids)
        explore = (
            "a uniformly random shortlist slot"
            if schedule
            else "a uniformly random action, WAIT included,"
        )
        return (
            "; ".join(parts)
            + f"; trained on {self.card.n_transitions} transitions logged by "
            + f"{', '.join(self.config.behaviours)} with epsilon {self.config.epsilon:g} "
            + f"({explore} instead of the behaviour's) on "
            + f"training episodes {episodes}."
        )

    def _reward_text(self, label: str, cfg: TrainConfig) -> str:
        transform = self.reward_transforms.get(label)
        if cfg.reward_normalization == "none":
            return "raw (not normalised)"
        scale = f" x {cfg.reward_scale:g}" if cfg.reward_scale != 1.0 else ""
        if cfg.reward_normalization == "scale":
            return f"scaled (r x {cfg.reward_scale:g})"
        if transform is None:
            return f"standardized{scale} (mean and std of the training logs)"
        return (
            f"standardized ((r - {transform.raw_mean:.4g}) / {transform.raw_std:.4g}{scale} "
            "with the mean and std of the training logs)"
        )

    def summary_numbers(self, base: Path) -> dict[str, Any]:
        """JSON-ready numbers for ``summary.json`` (paths relative to ``base``)."""
        card = dataclasses.asdict(self.card)
        card["behaviour_rows"] = [list(r) for r in self.card.behaviour_rows]
        return {
            "config": self.config.to_dict(),
            "seed": self.seed,
            "train_configs": {
                label: self.config.train_config(label, seed=self.seed).to_dict()
                for label in self.routers
            },
            "train_episode_ids": list(self.train_episode_ids),
            "dataset": card,
            "behaviour_logs": self.behaviour_logs.to_dicts(),
            "final_losses": {
                str(run): {
                    str(m): float(v)
                    for m, v in grp.sort("step")
                    .group_by("metric", maintain_order=True)
                    .agg(pl.col("value").last())
                    .iter_rows()
                }
                for (run,), grp in self.losses.group_by("run", maintain_order=True)
            },
            "descriptions": {label: self.describe(label) for label in self.routers},
            "reward_transforms": {
                label: t.to_dict() for label, t in self.reward_transforms.items()
            },
            "run_dir": str(self.run_dir.relative_to(base)),
            "router_dirs": {k: str(v.relative_to(base)) for k, v in self.router_dirs.items()},
            "wall_time_s": dict(self.wall_time_s),
        }


def _losses_long(label: str, losses: pl.DataFrame) -> pl.DataFrame:
    metrics = [c for c in losses.columns if c not in ("epoch", "step")]
    if not metrics:
        return pl.DataFrame(
            schema={"run": pl.String, "metric": pl.String, "step": pl.Int64, "value": pl.Float64}
        )
    return (
        losses.select("step", *metrics)
        .unpivot(index="step", on=metrics, variable_name="metric", value_name="value")
        .select(
            pl.lit(label).alias("run"),
            pl.col("metric").cast(pl.String),
            pl.col("step").cast(pl.Int64),
            pl.col("value").cast(pl.Float64),
        )
        .drop_nulls("value")
    )


def training_seed(learning: LearningConfig, prepared: PreparedScenario) -> int:
    """The training seed: ``learning.seed`` if set, else the scenario's seed."""
    return learning.seed if learning.seed is not None else prepared.seed


def train_scenario(
    prepared: PreparedScenario,
    learning: LearningConfig,
    run_dir: str | Path,
    *,
    show_progress: bool = False,
) -> LearningResult:
    """Log the behaviours on the training episodes, train each algorithm, save the routers.

    Args:
        prepared: the prepared scenario (:meth:`routeplay.replay.Scenario.prepare`).
        learning: behaviours, reward, algorithms and training settings.
        run_dir: the training folder to create (``transitions/``, ``<algorithm>/``).
        show_progress: tqdm bars for logging and training.

    Returns:
        A :class:`LearningResult` (its ``routers`` are unwrapped policies; pass them to
        :func:`evaluate_scenario`).

    Example:
        >>> import tempfile
        >>> from routeplay.replay import Scenario
        >>> from routeplay.offline_rl import LearningConfig, train_scenario
        >>> prepared = Scenario(trace="task-mix", task_mix={"n_requests": 40},
        ...     episode_requests=10, test_fraction=0.5, cluster="v100x2").prepare()
        >>> res = train_scenario(prepared, LearningConfig(behaviours=("round-robin",),
        ...     algorithms=("bc",), n_steps=5, batch_size=8), tempfile.mkdtemp())
        >>> list(res.routers), res.train_episode_ids
        (['bc'], (0, 1))
    """
    from routeplay.replay import SchedulerLayout, log_behaviours, log_scheduler_behaviours

    from ._dataset import build_dataset
    from ._policy import PolicyRouter, save_router
    from ._policy_scheduler import PolicyScheduler
    from ._train import train_router

    if not prepared.train:
        raise ValueError(
            "training needs at least one training episode; the scenario's split has none. "
            "Fix: set a test_fraction that leaves earlier windows for training."
        )
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    seed = training_seed(learning, prepared)
    layout: ObservationLayout | SchedulerLayout = prepared.layout
    wall: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        logger.info(
            "logging %s (epsilon %g) on %d training episodes",
            ", ".join(learning.behaviours),
            learning.epsilon,
            len(prepared.train),
        )
        if learning.decision == "schedule":
            layout = SchedulerLayout(
                n_instances=prepared.cluster.n_instances, n_candidates=learning.n_candidates
            )
            sched_logs = log_scheduler_behaviours(
                prepared,
                learning.behaviours,
                epsilon=learning.epsilon,
                out_dir=run / "transitions",
                layout=layout,
                seed=seed,
            )
            rows = scheduler_log_rows(sched_logs, run.parent)
            wall["log_transitions"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            dataset = build_dataset([item.path for item in sched_logs])
        else:
            logs = log_behaviours(
                prepared,
                learning.behaviours,
                reward=learning.reward,
                epsilon=learning.epsilon,
                out_dir=run / "transitions",
                seed=seed,
                show_progress=show_progress,
            )
            for item in logs:
                res = item.result
                assert res is not None
                means = [r.summary["e2e_s_mean"] for r in res.results if r is not None]
                rows.append(
                    {
                        "behaviour": res.behaviour,
                        "n_episodes": res.n_episodes,
                        "n_transitions": res.n_transitions,
                        "reward_mean": res.reward_mean,
                        "e2e_s_mean": sum(means) / len(means) if means else None,
                        "file": str(item.path.relative_to(run.parent)),
                    }
                )
            wall["log_transitions"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            dataset = build_dataset([item.path for item in logs])
        wall["build_dataset"] = time.perf_counter() - t0
        logger.info("training dataset:\n%s", dataset.card.summary())
        routers: dict[str, Router] = {}
        router_dirs: dict[str, Path] = {}
        curves: list[pl.DataFrame] = []
        transforms: dict[str, RewardTransform] = {}
        for algo in learning.algorithms:
            t0 = time.perf_counter()
            config = learning.train_config(algo, seed=seed)
            logger.info("training %s for %d steps", algo, config.n_steps)
            result = train_router(config, dataset, run_dir=run / algo, show_progress=show_progress)
            router_dirs[algo] = save_router(result, run / algo / "router", layout=layout)
            wall[f"train_{algo}"] = time.perf_counter() - t0
            logger.info("trained %s in %.1f s", algo, wall[f"train_{algo}"])
            curves.append(_losses_long(algo, result.losses))
            if result.reward_transform is not None:
                transforms[algo] = result.reward_transform
            if isinstance(layout, SchedulerLayout):
                routers[algo] = PolicyScheduler(result.algo, layout=layout, name=algo)
            else:
                routers[algo] = PolicyRouter(result.algo, layout=layout, name=algo)
    notes = tuple(dict.fromkeys(f"training: {w.message}" for w in caught))
    for note in notes:
        logger.warning("%s", note)
    return LearningResult(
        config=learning,
        seed=seed,
        routers=routers,
        layout=layout,
        card=dataset.card,
        behaviour_logs=pl.DataFrame(
            rows,
            schema={
                "behaviour": pl.String,
                "n_episodes": pl.Int64,
                "n_transitions": pl.Int64,
                "reward_mean": pl.Float64,
                "e2e_s_mean": pl.Float64,
                "file": pl.String,
            },
        ),
        losses=pl.concat(curves, how="vertical"),
        train_episode_ids=tuple(int(e.index) for e in prepared.train),
        run_dir=run,
        router_dirs=router_dirs,
        wall_time_s=wall,
        notes=notes,
        reward_transforms=transforms,
    )


def scheduler_log_rows(logs: Sequence[BehaviourLog], base: Path) -> list[dict[str, Any]]:
    """One ``behaviour_logs`` row per scheduler log file (read back from the file)."""
    rows: list[dict[str, Any]] = []
    for item in logs:
        frame = pl.read_parquet(item.path, columns=["episode", "reward", "behaviour"])
        rows.append(
            {
                "behaviour": str(frame["behaviour"][0]),
                "n_episodes": int(frame["episode"].n_unique()),
                "n_transitions": frame.height,
                "reward_mean": float(frame["reward"].mean()),  # type: ignore[arg-type]
                "e2e_s_mean": None,
                "file": str(item.path.relative_to(base)),
            }
        )
    return rows


def learned_routers(folders: Sequence[str | Path]) -> dict[str, Router]:
    """Saved router folders as routers labelled with their algorithm key (``cql``, ...).

    A label used twice gets ``-2``, ``-3``, ... Nothing is unpickled (TorchScript).

    Example:
        >>> from routeplay.offline_rl import learned_routers
        >>> learned_routers([])
        {}
    """
    from ._policy import load_router

    out: dict[str, Router] = {}
    for folder in folders:
        router = load_router(folder)  # default name "policy-<algorithm>"
        base = str(router.name).removeprefix("policy-")
        label, k = base, 2
        while label in out:
            label = f"{base}-{k}"
            k += 1
        router.name = label
        out[label] = router
    return out


def evaluate_scenario(
    prepared: PreparedScenario,
    learned: Mapping[str, Router],
    heuristics: Sequence[str],
    *,
    baseline: str = "round-robin",
    max_router_wait_s: float | None = DEFAULT_MAX_ROUTER_WAIT_S,
    fallback: str = DEFAULT_FALLBACK,
    sim_slack_s: float = DEFAULT_SIM_SLACK_S,
    n_boot: int = 2000,
    show_progress: bool = False,
) -> EvaluationResult:
    """Replay learned and heuristic routers on the scenario's test episodes, paired.

    Learned routers keep their labels (``cql``), wrapped in :class:`BoundedWaitRouter`
    unless ``max_router_wait_s`` is ``None``; their fallback decisions are the
    ``n_fallback_routes`` column. Replays use the scenario's replay settings, predictor
    and seed rule; the simulated-time guard is the latest test arrival plus
    ``sim_slack_s``; the bootstrap is seeded with the scenario's seed.

    Args:
        prepared: the prepared scenario.
        learned: label -> learned router (:func:`learned_routers`,
            ``LearningResult.routers``).
        heuristics: registered router names; must include ``baseline``.
        baseline: the router every other is compared with.
        max_router_wait_s: fallback bound of the learned routers.
        fallback: the fallback heuristic.
        sim_slack_s: simulated-time guard beyond the latest test arrival.
        n_boot: bootstrap resamples.
        show_progress: a progress bar over replays.

    Returns:
        An :class:`EvaluationResult` (``replays.timelines`` kept when the scenario
        samples timelines); ``to_frame()`` is the comparison table every entry point
        prints or stores.

    Example:
        >>> from routeplay.replay import Scenario
        >>> from routeplay.offline_rl import evaluate_scenario
        >>> prepared = Scenario(trace="task-mix", task_mix={"n_requests": 40},
        ...     episode_requests=10, test_fraction=0.5, cluster="v100x2").prepare()
        >>> res = evaluate_scenario(prepared, {}, ["round-robin", "least-loaded"], n_boot=100)
        >>> res.to_frame()["n_episodes"].to_list()
        [2, 2]
    """
    test = prepared.test
    config = dataclasses.replace(
        prepared.config, max_sim_time_s=prepared.max_sim_time_s(sim_slack_s)
    )
    return evaluate_routers(
        learned,
        heuristics,
        [e.trace for e in test],
        prepared.cluster,
        baseline=baseline,
        predictor=prepared.predictor,
        config=config,
        max_router_wait_s=max_router_wait_s,
        fallback=fallback,
        episode_ids=[e.index for e in test],
        n_boot=n_boot,
        seed=prepared.seed,
        label_suffix="",
        keep_timelines=config.timeline_sample_interval_s is not None,
        show_progress=show_progress,
    )
