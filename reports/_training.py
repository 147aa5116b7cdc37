"""A report job's ``[training]`` section: log heuristics, train routers offline, replay them.

The section builds a :class:`routeplay.offline_rl.LearningConfig` (``JobTrainingConfig``
is its name here); the job runs the pipeline's functions on its scenario:

1. :func:`routeplay.offline_rl.train_scenario`: every behaviour heuristic is replayed on
   the job's *training* episodes (the earlier windows of
   :func:`routeplay.datasets.split_train_test`) with epsilon-random exploration and
   every decision is logged (``training/transitions/<behaviour>.parquet``, the named
   reward); the logs become one dataset and each algorithm is trained on it (d3rlpy logs
   and the checkpoint in ``training/<algorithm>/``) and exported
   (``training/<algorithm>/router/``);
2. :func:`routeplay.offline_rl.evaluate_scenario`: each trained policy is a router
   labelled with the algorithm key (``cql``), wrapped in
   :class:`routeplay.offline_rl.BoundedWaitRouter`: a learned policy may WAIT on a
   request forever, so a request that has waited ``max_router_wait_s`` at the router is
   routed by the ``fallback`` heuristic instead. Those decisions are counted per replay
   (``n_fallback_routes``) and reported; they are the heuristic's, not the policy's.
   The learned routers are replayed beside the heuristics on the *test* episodes only,
   with ``ReplayConfig.max_sim_time_s`` bounded by the latest test arrival plus
   ``sim_slack_s``.

``routeplay train`` + ``routeplay evaluate`` on the same scenario give the same table
(``tables/evaluation``). Everything is written under the job's (temporary) run folder,
so the job's atomic rename covers it. ``torch``/``d3rlpy`` are imported only when
training runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from routeplay.offline_rl import DEFAULT_BEHAVIOURS, LearningConfig, LearningResult

if TYPE_CHECKING:
    from routeplay.datasets import Episode
    from routeplay.estimator import OutputLengthPredictor
    from routeplay.replay import ClusterConfig, ReplayConfig

__all__ = [
    "DEFAULT_BEHAVIOURS",
    "JobTrainingConfig",
    "JobTrainingResult",
    "train_job_routers",
]

#: The ``[training]`` section's class (:class:`routeplay.offline_rl.LearningConfig`).
JobTrainingConfig = LearningConfig
#: What the ``[training]`` section produced (:class:`routeplay.offline_rl.LearningResult`).
JobTrainingResult = LearningResult


def train_job_routers(
    config: LearningConfig,
    train_episodes: Sequence[Episode],
    cluster: ClusterConfig,
    *,
    replay_config: ReplayConfig,
    predictor: OutputLengthPredictor | None,
    run_dir: Path,
    seed: int,
    show_progress: bool = False,
) -> LearningResult:
    """Log the behaviours on ``train_episodes`` and train each algorithm.

    Kept for callers with their own episodes; jobs call
    :func:`routeplay.offline_rl.train_scenario`.

    Returns:
        A :class:`~routeplay.offline_rl.LearningResult` whose routers are unwrapped
        policies labelled with their algorithm key.
    """
    from dataclasses import replace

    from routeplay.offline_rl import train_scenario
    from routeplay.replay import PreparedScenario

    prepared = PreparedScenario(
        scenario=None,
        trace=None,
        episodes=tuple(train_episodes),
        train=tuple(train_episodes),
        test=tuple(train_episodes),
        cluster=cluster,
        predictor=predictor,
        predictor_evaluation=None,
        config=replace(replay_config, seed=seed),
    )
    return train_scenario(
        prepared, replace(config, seed=seed), run_dir, show_progress=show_progress
    )
