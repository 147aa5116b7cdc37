"""A report job's ``[training]`` section: log heuristics, train routers offline, replay them.

When a job file has a ``[training]`` table, :func:`train_job_routers` runs before the
paired replays:

1. every behaviour heuristic is replayed on the job's *training* episodes (the earlier
   windows of :func:`routeplay.datasets.split_train_test`) with epsilon-random
   exploration, and every decision is logged (:func:`routeplay.replay.log_transitions`,
   one Parquet file per behaviour, the named reward);
2. the logs become one dataset (:func:`routeplay.offline_rl.build_dataset`) and each
   algorithm is trained on it (:func:`routeplay.offline_rl.train_router`; d3rlpy logs
   and the checkpoint go to ``training/<algorithm>/``) and exported with
   :func:`routeplay.offline_rl.save_router` (``training/<algorithm>/router/``);
3. each trained policy becomes a router labelled with the algorithm key (``cql``),
   wrapped in :class:`routeplay.offline_rl.BoundedWaitRouter`: a learned policy may
   WAIT on a request forever, so a request that has waited ``max_router_wait_s`` at
   the router is routed by the ``fallback`` heuristic instead. Those decisions are
   counted per replay (``n_fallback_routes``) and reported; they are the heuristic's,
   not the policy's.

The job then replays the learned routers beside the heuristics on the *test* episodes
only, through the same paired pipeline, with ``ReplayConfig.max_sim_time_s`` bounded
by the latest test arrival plus ``sim_slack_s``.

Everything is written under the job's (temporary) run folder, so the job's atomic
rename covers it. ``torch``/``d3rlpy`` are imported only when training runs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

if TYPE_CHECKING:
    from routeplay.datasets import Episode
    from routeplay.estimator import OutputLengthPredictor
    from routeplay.offline_rl import DatasetCard
    from routeplay.replay import ClusterConfig, ObservationLayout, ReplayConfig, Router

__all__ = [
    "DEFAULT_BEHAVIOURS",
    "JobTrainingConfig",
    "JobTrainingResult",
    "train_job_routers",
]

logger = logging.getLogger(__name__)

#: Behaviour heuristics logged by default (each with the section's epsilon).
DEFAULT_BEHAVIOURS: tuple[str, ...] = ("round-robin", "least-connections", "jsq-tokens", "min-min")


def _finite_seconds(value: Any, *, strict: bool) -> bool:
    """A finite int/float (not bool) > 0 (``strict``) or >= 0: inf would never end a replay."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    return value > 0 if strict else value >= 0


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True, slots=True, kw_only=True)
class JobTrainingConfig:
    """The ``[training]`` section of a report job (see ``docs/reports.md``).

    Attributes:
        behaviours: heuristic routers whose epsilon-random replays of the training
            episodes are logged (names from ``routeplay routers``).
        epsilon: probability of a uniformly random action (WAIT included) instead of
            the behaviour's own, in [0, 1]; the same for every behaviour.
        reward: reward function of the logs (``routeplay.replay.REWARD_VARIANTS``).
        algorithms: offline RL algorithms, each trained once on the same dataset and
            replayed under its own label (``cql``, ``bcq``, ``bc``, ``double-dqn``).
        n_steps: gradient steps per algorithm.
        n_steps_per_epoch: losses are averaged (one learning-curve point) every this
            many steps.
        batch_size: transitions per gradient step.
        learning_rate: Adam learning rate.
        gamma: discount factor.
        hidden_units: MLP widths.
        target_update_interval: steps between target-network copies (Q-learning).
        seed: training seed (logging exploration and d3rlpy); ``None`` = the job's seed.
        max_router_wait_s: a request a learned router has kept WAITing this long
            (seconds) is routed by ``fallback``; the count is reported.
        fallback: the heuristic used for such requests.
        sim_slack_s: replays of the job stop with an error when simulated time passes
            the latest arrival of a test episode by this much.

    Example:
        >>> JobTrainingConfig().behaviours
        ('round-robin', 'least-connections', 'jsq-tokens', 'min-min')
        >>> JobTrainingConfig(algorithms=("cql", "sac"))
        Traceback (most recent call last):
        ...
        ValueError: [training] algorithms = contains 'sac'; expected names from ['cql', ...].
    """

    behaviours: tuple[str, ...] = DEFAULT_BEHAVIOURS
    epsilon: float = 0.1
    reward: str = "paper-workload-guided"
    algorithms: tuple[str, ...] = ("cql",)
    n_steps: int = 3000
    n_steps_per_epoch: int = 250
    batch_size: int = 256
    learning_rate: float = 3e-4
    gamma: float = 0.99
    hidden_units: tuple[int, ...] = (128, 128)
    target_update_interval: int = 1000
    seed: int | None = None
    max_router_wait_s: float = 2.0
    fallback: str = "least-loaded"
    sim_slack_s: float = 600.0

    def __post_init__(self) -> None:
        from routeplay.offline_rl._train import ALGORITHMS
        from routeplay.replay import REWARD_VARIANTS, list_routers

        def bad(key: str, message: str) -> ValueError:
            return ValueError(f"[training] {key} = {message}")

        known = list_routers()
        if not self.behaviours:
            raise bad("behaviours", "[]; expected at least one heuristic router name.")
        for name in self.behaviours:
            if name not in known:
                raise bad(
                    "behaviours",
                    f"contains unknown router {name!r}. Run `routeplay routers` for the list.",
                )
        if len(set(self.behaviours)) != len(self.behaviours):
            raise bad("behaviours", f"{list(self.behaviours)}; expected each router once.")
        if not (
            isinstance(self.epsilon, int | float)
            and not isinstance(self.epsilon, bool)
            and 0.0 <= self.epsilon <= 1.0
        ):
            raise bad("epsilon", f"{self.epsilon!r}; expected a probability in [0, 1].")
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

    def train_config(self, algorithm: str, *, seed: int) -> Any:
        """The :class:`routeplay.offline_rl.TrainConfig` of one algorithm.

        The checkpoint is written once, at the end (a killed job restarts from scratch
        in a new temporary folder anyway).

        Example:
            >>> JobTrainingConfig(n_steps=40).train_config("bc", seed=1).n_steps
            40
        """
        from routeplay.offline_rl import TrainConfig

        return TrainConfig(
            algorithm=algorithm,
            hidden_units=tuple(self.hidden_units),
            learning_rate=float(self.learning_rate),
            gamma=float(self.gamma),
            batch_size=self.batch_size,
            n_steps=self.n_steps,
            n_steps_per_epoch=min(self.n_steps_per_epoch, self.n_steps),
            checkpoint_every_steps=self.n_steps,
            target_update_interval=self.target_update_interval,
            seed=seed,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class JobTrainingResult:
    """What :func:`train_job_routers` produced.

    Attributes:
        config: the section.
        seed: the training seed used.
        routers: label (algorithm key) -> learned router, wrapped in
            ``BoundedWaitRouter`` (``n_fallback_routes`` counts per replay).
        layout: the observation layout of the logs and the policies.
        card: the training dataset's card.
        behaviour_logs: one row per behaviour: ``behaviour`` (with ``+eps``),
            ``n_episodes``, ``n_transitions``, ``reward_mean``, ``e2e_s_mean`` (mean
            over its logged episodes) and ``file`` (relative to ``run_dir``'s parent).
        losses: long learning-curve frame ``run, metric, step, value``.
        train_episode_ids: the episodes the logs were replayed on.
        run_dir: the ``training`` folder (transitions, one folder per algorithm).
        router_dirs: label -> saved router folder.
        wall_time_s: seconds spent logging, building the dataset and training each
            algorithm (``train_<label>``).
        notes: warnings raised while logging, building or training.
    """

    config: JobTrainingConfig
    seed: int
    routers: Mapping[str, Router]
    layout: ObservationLayout
    card: DatasetCard
    behaviour_logs: pl.DataFrame
    losses: pl.DataFrame
    train_episode_ids: tuple[int, ...]
    run_dir: Path
    router_dirs: Mapping[str, Path]
    wall_time_s: Mapping[str, float]
    notes: tuple[str, ...] = ()

    def to_frame(self) -> pl.DataFrame:
        """The per-behaviour log table (``behaviour_logs``)."""
        return self.behaviour_logs

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


def train_job_routers(
    config: JobTrainingConfig,
    train_episodes: Sequence[Episode],
    cluster: ClusterConfig,
    *,
    replay_config: ReplayConfig,
    predictor: OutputLengthPredictor | None,
    run_dir: Path,
    seed: int,
    show_progress: bool = False,
) -> JobTrainingResult:
    """Log the behaviours on the training episodes, train each algorithm, wrap the policies.

    Args:
        config: the ``[training]`` section.
        train_episodes: the job's training split (never the replayed test episodes).
        cluster: the job's cluster.
        replay_config: the job's replay settings (mode, prompt buckets; timelines are
            not sampled while logging).
        predictor: the job's output-length predictor (fitted on the training split) or
            ``None``; the learned routers must be replayed with the same one.
        run_dir: the ``training`` folder to create inside the job's run folder.
        seed: training seed (``config.seed`` if set, else the job's seed).
        show_progress: tqdm bars for logging and training.

    Returns:
        A :class:`JobTrainingResult`.
    """
    from routeplay.offline_rl import BoundedWaitRouter, build_dataset, save_router, train_router
    from routeplay.offline_rl._policy import PolicyRouter
    from routeplay.replay import log_transitions, make_router
    from routeplay.replay._transitions import default_layout

    if not train_episodes:
        raise ValueError("[training] needs at least one training episode; the split has none.")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "transitions").mkdir(exist_ok=True)
    log_config = dataclasses.replace(replay_config, timeline_sample_interval_s=None)
    layout = default_layout(cluster, log_config, predictor)
    traces = [e.trace for e in train_episodes]
    wall: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    paths: list[Path] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t0 = time.perf_counter()
        for name in config.behaviours:
            path = run_dir / "transitions" / f"{name}.parquet"
            logger.info(
                "logging %s (epsilon %g) on %d training episodes", name, config.epsilon, len(traces)
            )
            res = log_transitions(
                traces,
                cluster,
                make_router(name),
                reward=config.reward,
                path=path,
                epsilon=config.epsilon,
                seed=seed,
                predictor=predictor,
                layout=layout,
                config=log_config,
                show_progress=show_progress,
            )
            means = [r.summary["e2e_s_mean"] for r in res.results if r is not None]
            rows.append(
                {
                    "behaviour": res.behaviour,
                    "n_episodes": res.n_episodes,
                    "n_transitions": res.n_transitions,
                    "reward_mean": res.reward_mean,
                    "e2e_s_mean": sum(means) / len(means) if means else None,
                    "file": str(path.relative_to(run_dir.parent)),
                }
            )
            paths.append(path)
        wall["log_transitions"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        dataset = build_dataset(paths)
        wall["build_dataset"] = time.perf_counter() - t0
        logger.info("training dataset:\n%s", dataset.card.summary())
        routers: dict[str, Router] = {}
        router_dirs: dict[str, Path] = {}
        curves: list[pl.DataFrame] = []
        for algo in config.algorithms:
            t0 = time.perf_counter()
            train_config = config.train_config(algo, seed=seed)
            logger.info("training %s for %d steps", algo, train_config.n_steps)
            result = train_router(
                train_config, dataset, run_dir=run_dir / algo, show_progress=show_progress
            )
            router_dirs[algo] = save_router(result, run_dir / algo / "router", layout=layout)
            wall[f"train_{algo}"] = time.perf_counter() - t0
            logger.info("trained %s in %.1f s", algo, wall[f"train_{algo}"])
            curves.append(_losses_long(algo, result.losses))
            policy = PolicyRouter(result.algo, layout=layout, name=algo)
            routers[algo] = BoundedWaitRouter(
                policy,
                max_router_wait_s=float(config.max_router_wait_s),
                fallback=make_router(config.fallback),
                name=algo,
            )
    notes = tuple(dict.fromkeys(f"training: {w.message}" for w in caught))
    for note in notes:
        logger.warning("%s", note)
    return JobTrainingResult(
        config=config,
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
        train_episode_ids=tuple(int(e.index) for e in train_episodes),
        run_dir=run_dir,
        router_dirs=router_dirs,
        wall_time_s=wall,
        notes=notes,
    )
