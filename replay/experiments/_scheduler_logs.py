"""Scheduler logs of a scenario's training episodes (tracker issue 12, item 4).

:func:`log_scheduler_behaviours` is the scheduler counterpart of
:func:`~routeplay.replay.log_behaviours`: the logs a learned scheduler is trained from.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..rl._scheduling import SchedulerLayout, log_scheduler_transitions, write_scheduler_transitions
from ._scenario import BehaviourLog, PreparedScenario, training_logs_plan

__all__ = ["log_scheduler_behaviours"]


def log_scheduler_behaviours(
    prepared: PreparedScenario,
    behaviours: Sequence[str],
    *,
    epsilon: float,
    out_dir: str | Path,
    layout: SchedulerLayout | None = None,
    seed: int | None = None,
    reuse_existing: bool = False,
) -> list[BehaviourLog]:
    """Log each behaviour *scheduler* on the training episodes (``<out_dir>/<name>.parquet``).

    The scheduler counterpart of :func:`log_behaviours`: every behaviour replays the
    same training episodes through :func:`~routeplay.replay.log_scheduler_transitions`
    (episode ``k`` at its global index when the training windows are contiguous, so
    its replay seed is the one an evaluation of that window would use), and each file
    carries :func:`~routeplay.replay.rl._scheduling.scheduler_parquet_metadata`.

    Args:
        prepared: the prepared scenario.
        behaviours: registered scheduler names (e.g. ``late-binding-spf``).
        epsilon: probability of a uniformly random shortlist slot, in [0, 1].
        out_dir: folder of the Parquet files (created).
        layout: the scheduler layout (default: 8 slots for the scenario's cluster).
        seed: exploration seed (default: the scenario's seed).
        reuse_existing: keep a behaviour's file when it exists (resumed runs).

    Returns:
        One :class:`BehaviourLog` per behaviour (``result`` is ``None``: read the file).

    Example:
        >>> import tempfile
        >>> from routeplay.replay import Scenario
        >>> prepared = Scenario(trace="task-mix", task_mix={"n_requests": 40},
        ...     episode_requests=10, test_fraction=0.5, cluster="v100x2").prepare()
        >>> logs = log_scheduler_behaviours(prepared, ["late-binding-spf"], epsilon=0.1,
        ...                                 out_dir=tempfile.mkdtemp())
        >>> [log.path.name for log in logs]
        ['late-binding-spf.parquet']
    """
    names, traces, offset = training_logs_plan(
        prepared, behaviours, "log_scheduler_behaviours", "scheduler"
    )
    n_instances = prepared.cluster.n_instances
    lay = layout if layout is not None else SchedulerLayout(n_instances=n_instances)
    out = Path(out_dir)
    logs: list[BehaviourLog] = []
    for name in names:
        path = out / f"{name}.parquet"
        if not (reuse_existing and path.is_file()):
            frame = log_scheduler_transitions(
                traces,
                prepared.cluster,
                name,
                layout=lay,
                epsilon=epsilon,
                seed=prepared.seed if seed is None else int(seed),
                predictor=prepared.predictor,
                config=prepared.log_config,
                episode_offset=offset,
            )
            write_scheduler_transitions(frame, path, lay)
        logs.append(BehaviourLog(name, path, None))
    return logs
