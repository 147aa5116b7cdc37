"""The reproduction study's building blocks: paired comparisons and section 6.1 in markdown.

``docs/reproduction.md`` pastes markdown tables made here (``benchmarks/repro_study.py``
prints them, one command per part). Two pieces are library code because users rerun
them on their own clusters and workloads:

* :func:`compare_on_episodes`: heuristic routers replayed on the same episodes
  (:func:`~routeplay.replay.replay_episodes`, base seed 0) and compared with the first
  one (:func:`~routeplay.estimator.compare_routers`: paired episode bootstrap, Holm);
* :func:`section61_tables`: the Intelligent Router paper's section 6.1 experiment — the
  task mix cut into windows by a :class:`~routeplay.replay.Scenario` (the earlier ones
  fit the length predictor, the later ones are replayed), optionally brought to a share
  of the cluster's capacity (:func:`~routeplay.replay.capacity_req_per_s`), every router
  compared with round robin — as markdown (:meth:`ComparisonResult.to_markdown
  <routeplay.estimator.ComparisonResult.to_markdown>`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, cast

import polars as pl

if TYPE_CHECKING:
    from routeplay.estimator import ComparisonResult, OutputLengthPredictor
    from routeplay.replay import ClusterConfig

__all__ = [
    "PUBLISHED_SECTION61",
    "Section61Config",
    "compare_on_episodes",
    "section61_tables",
]

#: Published improvement over round robin in mean E2E (Jain et al. 2025, section 6.1).
PUBLISHED_SECTION61: Mapping[str, str] = {
    "jsq-tokens": "0.46 %",
    "max-capacity": "2.60 %",
    "min-min": "1.50 %",
    "impact-greedy": "n/a (estimator inside the RL reward)",
}


def compare_on_episodes(
    episodes: Sequence[pl.DataFrame],
    cluster: ClusterConfig,
    routers: Sequence[str],
    *,
    predictor: OutputLengthPredictor | None,
    metrics: Sequence[str] = ("e2e_s",),
    statistics: Sequence[str] = ("mean", "p99"),
    requests_hook: Callable[[pl.DataFrame], pl.DataFrame] | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[ComparisonResult, pl.DataFrame]:
    """Paired replays of registered routers and their comparison with the first one.

    Episode ``k`` (its position) is replayed with seed ``k`` for every router
    (``replay_episodes`` with base seed 0); the bootstrap uses ``seed``.

    Args:
        episodes: canonical traces.
        cluster: the cluster.
        routers: registered router names; the first is the baseline.
        predictor: output-length predictor fitted on other data, or ``None``.
        metrics: per-request columns compared.
        statistics: per-episode statistics compared (``mean``, ``p99``, ...).
        requests_hook: applied to the per-request frame before comparing (e.g. to add
            a derived metric column).
        n_boot: bootstrap resamples.
        confidence: coverage of the bootstrap intervals.
        seed: bootstrap seed.

    Returns:
        ``(comparison, summaries)``: the :class:`~routeplay.estimator.ComparisonResult`
        and the per-(router, episode) replay summaries.

    Example:
        >>> from routeplay.datasets import TaskMixConfig, generate_task_mix_episodes
        >>> from routeplay.replay import make_cluster
        >>> from routeplay.reports import compare_on_episodes
        >>> eps = generate_task_mix_episodes(TaskMixConfig(n_requests=30, seed=1), 3)
        >>> cmp, summaries = compare_on_episodes(eps, make_cluster("v100x2"),
        ...     ["round-robin", "least-loaded"], predictor=None, n_boot=100)
        >>> cmp.baseline, cmp.routers, summaries.height
        ('round-robin', ('least-loaded',), 6)
    """
    from routeplay.estimator import compare_routers
    from routeplay.replay import ReplayConfig, make_router, replay_episodes

    factories = {name: partial(make_router, name) for name in routers}
    out = replay_episodes(
        list(episodes),
        cluster,
        factories,
        config=ReplayConfig(seed=0),
        predictor=predictor,
    )
    requests = out.requests if requests_hook is None else requests_hook(out.requests)
    cmp = compare_routers(
        requests,
        baseline=routers[0],
        metrics=metrics,
        statistics=statistics,
        n_boot=n_boot,
        confidence=confidence,
        seed=seed,
    )
    return cmp, out.summaries


@dataclass(frozen=True, slots=True, kw_only=True)
class Section61Config:
    """Section 6.1 of the Intelligent Router paper: task mix, held-out windows, routers.

    Attributes:
        settings: ``(cluster, utilisation)`` pairs, one table each; utilisation ``None``
            keeps ``rate_per_s``, a number scales the held-out episodes' arrivals to
            that share of the cluster's capacity.
        n_requests: task-mix requests (one trace, seed 0).
        episode_requests: requests per window.
        test_fraction: share of (latest) windows held out; the earlier ones fit the
            length predictor (task + prompt, the cluster's time buckets).
        rate_per_s: the task mix's arrival rate (the paper's 20 req/s).
        routers: registered routers; the first is the baseline.
        title: heading of each table.
        published: router -> published figure (an extra column of the mean-E2E table).
        capacity_sample_requests: task-mix requests whose saturated throughput defines
            capacity (never an evaluation trace).
        capacity_sample_seed: their seed.
        n_boot: bootstrap resamples.

    Example:
        >>> from routeplay.reports import Section61Config
        >>> Section61Config().settings[0], Section61Config.smoke().episode_requests
        (('v100x4', None), 300)
    """

    settings: tuple[tuple[str, float | None], ...] = (
        ("v100x4", None),
        ("paper-4xv100", None),
        ("paper-4xv100", 0.8),
    )
    n_requests: int = 44_000
    episode_requests: int = 2000
    test_fraction: float = 0.9
    rate_per_s: float = 20.0
    routers: tuple[str, ...] = (
        "round-robin",
        "jsq-tokens",
        "max-capacity",
        "min-min",
        "impact-greedy",
    )
    title: str = "Section 6.1"
    published: Mapping[str, str] = field(default_factory=lambda: dict(PUBLISHED_SECTION61))
    capacity_sample_requests: int = 8000
    capacity_sample_seed: int = 7
    n_boot: int = 2000

    def __post_init__(self) -> None:
        if not self.settings or not self.routers:
            raise ValueError(
                "Section61Config needs at least one setting and one router; got "
                f"settings={self.settings!r}, routers={self.routers!r}."
            )
        object.__setattr__(self, "settings", tuple(tuple(s) for s in self.settings))
        object.__setattr__(self, "routers", tuple(self.routers))
        object.__setattr__(self, "published", dict(self.published))

    @classmethod
    def smoke(cls) -> Section61Config:
        """The small, fast version (``docs/reproduction.md``'s acceptance block)."""
        return cls(
            settings=(("v100x4", None),),
            n_requests=1800,
            episode_requests=300,
            test_fraction=0.67,
            routers=("round-robin", "jsq-tokens", "min-min"),
            title="Smoke (section 6.1 pipeline, small)",
        )


def section61_tables(config: Section61Config) -> Iterator[str]:
    """Run section 6.1 and yield one markdown block per ``(cluster, utilisation)``.

    Per setting: a :class:`~routeplay.replay.Scenario` (task mix of
    ``config.n_requests`` at ``rate_per_s``, seed 0, windows of ``episode_requests``,
    ``test_fraction`` held out, histogram predictor on the training windows) gives the
    held-out episodes; they are scaled to the target utilisation, replayed under every
    router (:func:`compare_on_episodes`) and compared with the first router (mean and
    p99 E2E). Every trace, replay and bootstrap is seeded, so the text is deterministic.

    Args:
        config: the study.

    Yields:
        One block per setting: a heading, the capacity line, the mean-E2E table (with
        the published column) and the p99-E2E table, each line ending in a newline.

    Example:
        >>> from routeplay.reports import Section61Config, section61_tables
        >>> config = Section61Config(settings=(("v100x2", None),), n_requests=200,
        ...     episode_requests=50, test_fraction=0.5, routers=("round-robin", "min-min"),
        ...     capacity_sample_requests=800, n_boot=100)
        >>> text = "".join(section61_tables(config))
        >>> text.splitlines()[0][:40]
        '#### Section 6.1: `v100x2` (llama2-7b/v1'
    """
    from routeplay.datasets import TaskMixConfig, generate_task_mix, scale_arrival_rate
    from routeplay.replay import Scenario, capacity_req_per_s

    sample = generate_task_mix(
        TaskMixConfig(n_requests=config.capacity_sample_requests, seed=config.capacity_sample_seed)
    )
    rate = config.rate_per_s
    for name, utilisation in config.settings:
        prepared = Scenario(
            trace="task-mix",
            task_mix={"n_requests": config.n_requests, "rate_per_s": rate},
            episode_requests=config.episode_requests,
            test_fraction=config.test_fraction,
            cluster=name,
            predictor="histogram",
            timeline_sample_interval_s=None,
            seed=0,
        ).prepare()
        cluster = prepared.cluster
        latency = cluster.instances[0].latency
        n_train = sum(e.trace.height for e in prepared.train)
        capacity = capacity_req_per_s(sample, cluster)
        factor = 1.0 if utilisation is None else utilisation * capacity / rate
        eps = [scale_arrival_rate(e.trace, factor) for e in prepared.test]
        cmp, summaries = compare_on_episodes(
            eps, cluster, config.routers, predictor=prepared.predictor, n_boot=config.n_boot
        )
        baseline = config.routers[0]
        label = "round robin" if baseline == "round-robin" else baseline
        base_rows = summaries.filter(pl.col("router") == baseline)
        preemptions = float(cast(float, base_rows["n_preemptions"].cast(pl.Float64).mean()))
        lines = [
            f"#### {config.title}: `{name}` ({latency.name}), task mix (all-random) at "
            f"{rate * factor:.3g} req/s, {len(eps)} held-out episodes of "
            f"{config.episode_requests} requests (predictor: task + prompt, {n_train} "
            "training requests)",
            "",
            f"Capacity {capacity:.2f} req/s ({config.capacity_sample_requests} task-mix "
            f"requests of seed {config.capacity_sample_seed} at t = 0), "
            f"utilisation {rate * factor / capacity:.2f}; mean preemptions per episode under "
            f"{label} {preemptions:.1f}.",
            "",
            "Mean E2E:",
            "",
            cmp.to_markdown(published=config.published),
            "",
            "p99 E2E:",
            "",
            cmp.to_markdown(statistic="p99"),
            "",
        ]
        yield "\n".join(lines) + "\n"
