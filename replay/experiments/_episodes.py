"""Replay several routers over the same episodes: the input of every paired comparison.

The unit of replication for router comparisons is the episode (docs/design.md, "Statistics
done right"), and comparisons must be paired: every router sees exactly the same
episodes. :func:`replay_episodes` does that and returns one long frame that
:func:`routeplay.estimator.compare_routers` reads directly.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import polars as pl
from routeplay.estimator._protocols import OutputLengthPredictor
from tqdm.auto import tqdm

from .._types import ClusterConfig, Router, episode_seed
from ..engine._engine import run_replay
from ..engine._result import ReplayConfig

__all__ = ["EpisodeReplays", "episode_seed", "replay_episodes"]

logger = logging.getLogger(__name__)

RouterFactory = Callable[[], Router]


@dataclass(frozen=True, slots=True)
class EpisodeReplays:
    """Results of every router on every episode.

    Attributes:
        requests: per-request rows of all replays, with ``router`` and ``episode``
            columns first (the input format of ``compare_routers``).
        summaries: one row per (router, episode) with the replay's summary metrics;
            a router with an ``n_fallback_routes`` counter (a learned router wrapped in
            ``BoundedWaitRouter``) gets its count after each replay in the
            ``n_fallback_routes`` column (null for the other routers).
        timelines: per-instance samples with ``router`` and ``episode`` first, when
            asked for (``keep_timelines``), else ``None``.
    """

    requests: pl.DataFrame
    summaries: pl.DataFrame
    timelines: pl.DataFrame | None = None

    def to_frame(self) -> pl.DataFrame:
        """The per-request frame."""
        return self.requests


def replay_episodes(
    episodes: Sequence[pl.DataFrame],
    cluster: ClusterConfig,
    routers: Mapping[str, Router | RouterFactory],
    *,
    config: ReplayConfig | None = None,
    predictor: OutputLengthPredictor | None = None,
    episode_ids: Sequence[int] | None = None,
    keep_timelines: bool = False,
    show_progress: bool = False,
) -> EpisodeReplays:
    """Replay every router on every episode (same episodes, same seeds: paired).

    Episode ``k`` is replayed with ``ReplayConfig.seed = config.seed + k`` for every
    router (``k`` = its id in ``episode_ids``; :func:`routeplay.replay.episode_seed`, the
    one seed rule of the pipeline), so randomised routers draw different numbers per
    episode but the same numbers across reruns. Each replay is logged
    (``routeplay.replay`` logger, debug level) as it starts.

    Args:
        episodes: traces in the canonical schema (e.g. ``[e.trace for e in split_episodes(...)]``).
        cluster: the cluster every replay runs on.
        routers: label -> router (reset by the engine before each replay) or a
            zero-argument factory that builds a fresh one.
        config: replay settings (its seed is the base seed).
        predictor: output-length predictor, fitted on data disjoint from ``episodes``.
        episode_ids: labels of the episodes (default ``0..n-1``).
        keep_timelines: keep the per-instance timelines (``EpisodeReplays.timelines``).
        show_progress: a progress bar over (router, episode) replays.

    Returns:
        :class:`EpisodeReplays`.

    Raises:
        ValueError: no episodes, no routers, or episode ids of the wrong length.

    Example:
        >>> import polars as pl
        >>> from routeplay.replay import make_cluster, make_router
        >>> ep = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.1],
        ...                    "prompt_tokens": [50, 60], "output_tokens": [5, 6]})
        >>> out = replay_episodes([ep, ep], make_cluster("a100x4"),
        ...     {"rr": lambda: make_router("round-robin")})
        >>> out.summaries.select("router", "episode", "n_requests").rows()
        [('rr', 0, 2.0), ('rr', 1, 2.0)]
    """
    if not episodes:
        raise ValueError("replay_episodes got no episodes; expected at least one trace.")
    if not routers:
        raise ValueError("replay_episodes got no routers; expected a mapping label -> router.")
    ids = list(range(len(episodes))) if episode_ids is None else [int(i) for i in episode_ids]
    if len(ids) != len(episodes):
        raise ValueError(
            f"episode_ids has {len(ids)} entries for {len(episodes)} episodes; expected one "
            "id per episode."
        )
    base = config if config is not None else ReplayConfig()
    frames: list[pl.DataFrame] = []
    timelines: list[pl.DataFrame] = []
    rows: list[dict[str, object]] = []
    jobs = [(label, k) for label in routers for k in range(len(episodes))]
    for n, (label, k) in enumerate(tqdm(jobs, desc="replays", disable=not show_progress), 1):
        logger.info(
            "replay %d/%d: router %s, episode %d",
            n,
            len(jobs),
            label,
            ids[k],
            extra={"console": False},  # the progress bar counts these on a terminal
        )
        spec = routers[label]
        router = spec() if callable(spec) and not hasattr(spec, "route") else spec
        cfg = replace(base, seed=episode_seed(base.seed, ids[k]))
        result = run_replay(episodes[k], cluster, router, config=cfg, predictor=predictor)  # type: ignore[arg-type]
        tags = (pl.lit(label).alias("router"), pl.lit(ids[k], dtype=pl.Int64).alias("episode"))
        frames.append(result.requests.with_columns(*tags))
        if keep_timelines:
            timelines.append(result.timelines.with_columns(*tags))
        row: dict[str, object] = {"router": label, "episode": ids[k], **result.summary}
        fallbacks = getattr(router, "n_fallback_routes", None)
        if fallbacks is not None:  # BoundedWaitRouter / PolicyRouter: their own count
            row["n_fallback_routes"] = int(fallbacks)
        rows.append(row)
    first = ["router", "episode"]
    requests = pl.concat(frames, how="diagonal_relaxed")
    requests = requests.select(first + [c for c in requests.columns if c not in first])
    summaries = pl.DataFrame(rows, infer_schema_length=None).with_columns(
        pl.col("episode").cast(pl.Int64)
    )
    kept = None
    if keep_timelines:
        tl = pl.concat(timelines, how="diagonal_relaxed")
        kept = tl.select(first + [c for c in tl.columns if c not in first])
    return EpisodeReplays(requests=requests, summaries=summaries, timelines=kept)
