"""Ground-truth evaluation by replay: learned routers vs heuristics on held-out episodes.

:func:`evaluate_routers` replays every router (learned and heuristic) on exactly the
same held-out episodes (paired, :func:`routeplay.replay.replay_episodes`) and tests
the differences with :func:`routeplay.estimator.compare_routers` (paired t, Wilcoxon,
bootstrap CI, Holm) twice: against ``baseline`` (round robin by default) and against
the best heuristic of the run (by the mean over episodes of the per-episode mean E2E).

A learned policy can WAIT on a request forever; the engine would then tick every
action interval up to its guard. Two bounds apply to every replay here:

* each learned router is wrapped in :class:`BoundedWaitRouter`: a request that has
  waited at the router for ``max_router_wait_s`` or longer is routed by a fallback
  heuristic (default ``least-loaded``). The wrapped router's label gets ``+fallback``
  and every fallback decision is counted per episode (``fallbacks`` frame, and the
  ``n_fallback_routes`` column of :meth:`EvaluationResult.to_frame`): they are the
  heuristic's decisions, not the policy's, and are never hidden;
* ``ReplayConfig.max_sim_time_s`` is set to the latest arrival of any episode plus
  ``sim_slack_s`` (unless the caller's config sets it), so even an unwrapped router
  fails fast instead of simulating 24 hours of ticks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
from routeplay.estimator._protocols import OutputLengthPredictor
from routeplay.estimator._stats import ComparisonResult, compare_routers
from routeplay.replay._types import WAIT, ClusterConfig, ClusterState, RequestView, Router
from routeplay.replay.engine._engine import is_scheduler
from routeplay.replay.engine._result import ReplayConfig
from routeplay.replay.experiments._episodes import EpisodeReplays, replay_episodes
from routeplay.replay.routers._registry import make_router

__all__ = [
    "DEFAULT_FALLBACK",
    "DEFAULT_MAX_ROUTER_WAIT_S",
    "DEFAULT_SIM_SLACK_S",
    "BoundedWaitRouter",
    "EvaluationResult",
    "evaluate_routers",
]

FALLBACK_SUFFIX = "+fallback"
#: Default fallback bound of a learned router (seconds at the router).
DEFAULT_MAX_ROUTER_WAIT_S = 2.0
#: Default heuristic that routes a request a learned router kept waiting too long.
DEFAULT_FALLBACK = "least-loaded"
#: Default simulated-time guard beyond the latest arrival (seconds): replays of learned
#: routers stop with an error past it instead of ticking for hours.
DEFAULT_SIM_SLACK_S = 1800.0


class BoundedWaitRouter:
    """Route with ``router``; a request WAITing too long is routed by ``fallback``.

    When ``router`` answers WAIT for a request that arrived ``max_router_wait_s`` or
    more before now, ``fallback`` decides instead. :attr:`n_fallback_routes` counts
    those decisions since the last :meth:`reset` (report it beside any result).

    Args:
        router: the router to wrap (typically a :class:`~routeplay.offline_rl.PolicyRouter`).
        max_router_wait_s: longest router wait before the fallback decides (> 0).
        fallback: the fallback router (default ``make_router("least-loaded")``); it
            should not WAIT itself.
        name: label (default ``<router name>+fallback``).

    Example:
        >>> import dataclasses
        >>> from routeplay.replay import make_cluster_state
        >>> class AlwaysWait:
        ...     name = "wait"
        ...     def reset(self, cluster, rng): pass
        ...     def route(self, request, state): return WAIT
        >>> import numpy as np
        >>> from routeplay.replay import make_cluster
        >>> r = BoundedWaitRouter(AlwaysWait(), max_router_wait_s=1.0)
        >>> r.reset(make_cluster("v100x2"), np.random.default_rng(0))
        >>> r.name
        'wait+fallback'
        >>> state = dataclasses.replace(make_cluster_state(2), now_s=1.0)
        >>> r.route(RequestView(0, 0.0, 10), state), r.n_fallback_routes
        (0, 1)
        >>> r.route(RequestView(1, 0.5, 10), state), r.n_fallback_routes
        (-1, 1)
    """

    oracle = False

    def __init__(
        self,
        router: Router,
        *,
        max_router_wait_s: float = DEFAULT_MAX_ROUTER_WAIT_S,
        fallback: Router | None = None,
        name: str | None = None,
    ) -> None:
        if not (isinstance(max_router_wait_s, int | float) and max_router_wait_s >= 0.0):
            raise ValueError(
                f"max_router_wait_s = {max_router_wait_s!r}; expected a number of seconds >= 0."
            )
        self.router = router
        self.max_router_wait_s = float(max_router_wait_s)
        self.fallback: Router = fallback if fallback is not None else make_router(DEFAULT_FALLBACK)
        inner = str(getattr(router, "name", type(router).__name__))
        self.name = name if name is not None else inner + FALLBACK_SUFFIX
        self.n_fallback_routes = 0
        self.n_decisions = 0

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Reset the wrapped router, the fallback and the counters."""
        self.router.reset(cluster, rng)
        self.fallback.reset(cluster, rng)
        self.n_fallback_routes = 0
        self.n_decisions = 0

    def route(self, request: RequestView, state: ClusterState) -> int:
        """The wrapped router's action, or the fallback's when it WAITs too long."""
        self.n_decisions += 1
        action = int(self.router.route(request, state))
        if action != WAIT:
            return action
        if state.now_s - request.arrival_s >= self.max_router_wait_s:
            self.n_fallback_routes += 1
            fallback_action: int = self.fallback.route(request, state)
            return int(fallback_action)
        return int(WAIT)


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluationResult:
    """Paired replay evaluation of learned and heuristic routers.

    Attributes:
        replays: per-request rows and per-(router, episode) summaries.
        comparison: every router vs ``baseline`` (``compare_routers``).
        versus_best_heuristic: every router vs ``best_heuristic`` (``None`` when
            ``best_heuristic`` is the baseline or there is no other router).
        baseline: the baseline label.
        best_heuristic: the heuristic with the lowest mean (over episodes) of the
            per-episode mean E2E.
        learned: labels of the learned routers (with ``+fallback`` when wrapped).
        heuristics: labels of the heuristic routers.
        fallbacks: one row per (router, episode) of the learned routers:
            ``n_fallback_routes``, ``n_decisions``, ``n_requests``.
        max_router_wait_s: the fallback bound (``None``: learned routers not wrapped).
        max_sim_time_s: the simulated-time guard used for every replay.
    """

    replays: EpisodeReplays
    comparison: ComparisonResult
    versus_best_heuristic: ComparisonResult | None
    baseline: str
    best_heuristic: str
    learned: tuple[str, ...]
    heuristics: tuple[str, ...]
    fallbacks: pl.DataFrame
    max_router_wait_s: float | None
    max_sim_time_s: float

    def to_frame(self) -> pl.DataFrame:
        """One row per router: episode-mean latencies, improvement vs baseline and best.

        Columns: ``router``, ``kind`` (learned/heuristic), ``n_episodes``,
        ``e2e_s_mean`` / ``e2e_s_p99`` (means over episodes of the per-episode
        statistic), ``slo_violation_2s`` (share of requests with E2E > 2 s),
        ``improvement_vs_baseline`` with its bootstrap CI and Holm p-values (t and
        Wilcoxon), ``improvement_vs_best`` and its Holm t p-value, and
        ``n_fallback_routes`` (learned routers; 0 for heuristics).
        """
        req = self.replays.requests
        per = (
            req.group_by("router", "episode")
            .agg(
                pl.col("e2e_s").mean().alias("m"),
                pl.col("e2e_s").quantile(0.99, interpolation="linear").alias("p99"),
                (pl.col("e2e_s") > 2.0).mean().alias("slo"),
            )
            .group_by("router")
            .agg(
                pl.len().alias("n_episodes"),
                pl.col("m").mean().alias("e2e_s_mean"),
                pl.col("p99").mean().alias("e2e_s_p99"),
                pl.col("slo").mean().alias("slo_violation_2s"),
            )
        )
        rows: list[dict[str, Any]] = []
        base_cmp = {
            c.router: c
            for c in self.comparison.comparisons
            if c.metric == "e2e_s" and c.statistic == "mean"
        }
        best_cmp = {}
        if self.versus_best_heuristic is not None:
            best_cmp = {
                c.router: c
                for c in self.versus_best_heuristic.comparisons
                if c.metric == "e2e_s" and c.statistic == "mean"
            }
        fb = {
            str(r): int(n)
            for r, n in self.fallbacks.group_by("router")
            .agg(pl.col("n_fallback_routes").sum())
            .iter_rows()
        }
        for label in (*self.heuristics, *self.learned):
            c = base_cmp.get(label)
            b = best_cmp.get(label)
            rows.append(
                {
                    "router": label,
                    "kind": "learned" if label in self.learned else "heuristic",
                    "improvement_vs_baseline": 0.0 if c is None else c.relative_improvement,
                    "ci_low": None if c is None else c.ci_low,
                    "ci_high": None if c is None else c.ci_high,
                    "p_ttest_holm": None if c is None else c.p_ttest_holm,
                    "p_wilcoxon_holm": None if c is None else c.p_wilcoxon_holm,
                    "improvement_vs_best": (
                        0.0
                        if label == self.best_heuristic
                        else (None if b is None else b.relative_improvement)
                    ),
                    "p_vs_best_ttest_holm": None if b is None else b.p_ttest_holm,
                    "n_fallback_routes": fb.get(label, 0),
                }
            )
        table = pl.DataFrame(
            rows,
            schema={
                "router": pl.String,
                "kind": pl.String,
                "improvement_vs_baseline": pl.Float64,
                "ci_low": pl.Float64,
                "ci_high": pl.Float64,
                "p_ttest_holm": pl.Float64,
                "p_wilcoxon_holm": pl.Float64,
                "improvement_vs_best": pl.Float64,
                "p_vs_best_ttest_holm": pl.Float64,
                "n_fallback_routes": pl.Int64,
            },
        )
        out = per.join(table, on="router", how="inner").sort("e2e_s_mean")
        selected: pl.DataFrame = out.select(
            "router",
            "kind",
            "n_episodes",
            "e2e_s_mean",
            "e2e_s_p99",
            "slo_violation_2s",
            "improvement_vs_baseline",
            "ci_low",
            "ci_high",
            "p_ttest_holm",
            "p_wilcoxon_holm",
            "improvement_vs_best",
            "p_vs_best_ttest_holm",
            "n_fallback_routes",
        )
        return selected

    def summary(self) -> str:
        """A printable table (see :meth:`to_frame`) with the fallback caveat."""
        frame = self.to_frame()
        n_ep = int(frame["n_episodes"].max() or 0)  # type: ignore[arg-type]
        lines = [
            f"paired replay evaluation: {n_ep} episodes, baseline {self.baseline!r}, "
            f"best heuristic {self.best_heuristic!r}",
            f"{'router':<28} {'kind':<9} {'E2E mean':>9} {'E2E p99':>9} {'SLO>2s':>7} "
            f"{'vs base':>8} {'95% CI':>19} {'p_holm':>8} {'vs best':>8} {'p_holm':>8} "
            f"{'fallbk':>7}",
        ]
        lines.append("-" * len(lines[-1]))

        def pct(x: float | None) -> str:
            return "" if x is None else f"{x:+.2%}"

        def p(x: float | None) -> str:
            return "" if x is None else f"{x:.2g}"

        for r in frame.iter_rows(named=True):
            ci = "" if r["ci_low"] is None else f"[{r['ci_low']:+.2%}, {r['ci_high']:+.2%}]"
            lines.append(
                f"{r['router']:<28.28} {r['kind']:<9} {r['e2e_s_mean']:>9.4g} "
                f"{r['e2e_s_p99']:>9.4g} {r['slo_violation_2s']:>7.2%} "
                f"{pct(r['improvement_vs_baseline']):>8} {ci:>19} {p(r['p_ttest_holm']):>8} "
                f"{pct(r['improvement_vs_best']):>8} {p(r['p_vs_best_ttest_holm']):>8} "
                f"{r['n_fallback_routes']:>7}"
            )
        if self.max_router_wait_s is not None and self.learned:
            total = int(self.fallbacks["n_fallback_routes"].sum())
            lines.append(
                f"learned routers are wrapped: a request waiting >= {self.max_router_wait_s:g} s "
                f"at the router is routed by the fallback heuristic ({total} such decisions "
                "in total; column 'fallbk')."
            )
        return "\n".join(lines)


def _heuristic_factory(name: str) -> Any:
    def build() -> Router:
        return make_router(name)

    return build


def evaluate_routers(
    learned: Mapping[str, Router],
    heuristics: Sequence[str],
    episodes: Sequence[pl.DataFrame],
    cluster: ClusterConfig,
    *,
    baseline: str = "round-robin",
    predictor: OutputLengthPredictor | None = None,
    config: ReplayConfig | None = None,
    max_router_wait_s: float | None = DEFAULT_MAX_ROUTER_WAIT_S,
    fallback: str = DEFAULT_FALLBACK,
    sim_slack_s: float = DEFAULT_SIM_SLACK_S,
    episode_ids: Sequence[int] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    label_suffix: str = FALLBACK_SUFFIX,
    keep_timelines: bool = False,
    show_progress: bool = False,
) -> EvaluationResult:
    """Replay learned and heuristic routers on the same episodes and compare them, paired.

    Args:
        learned: label -> router (e.g. :class:`~routeplay.offline_rl.PolicyRouter`);
            each is wrapped in :class:`BoundedWaitRouter` (label ``<label>`` +
            ``label_suffix``) unless ``max_router_wait_s`` is ``None``. A scheduler
            (e.g. :class:`~routeplay.offline_rl.PolicyScheduler`) is replayed as it is,
            under ``<label>``: it holds requests only while no instance is free.
        heuristics: registered router names (``list_routers()``); must include
            ``baseline``.
        episodes: held-out traces, later in time than (or otherwise disjoint from) the
            training data.
        cluster: the cluster.
        baseline: the router every other is compared with.
        predictor: output-length predictor (fitted on data disjoint from ``episodes``);
            it must be the one the learned routers were trained with.
        config: replay settings (seed; its ``max_sim_time_s`` when set).
        max_router_wait_s: fallback bound for learned routers (``None``: no wrapper).
        fallback: registered name of the fallback heuristic.
        sim_slack_s: simulated-time guard beyond the latest arrival when ``config``
            sets no ``max_sim_time_s``.
        episode_ids: episode labels (default ``0..n-1``).
        n_boot: bootstrap resamples of ``compare_routers``.
        seed: bootstrap seed.
        label_suffix: appended to the label of a wrapped learned router (default
            ``"+fallback"``; the pipeline's :func:`evaluate_scenario` keeps labels and
            shows fallbacks in ``n_fallback_routes``).
        keep_timelines: keep per-instance timelines (``replays.timelines``).
        show_progress: progress bar over replays.

    Returns:
        An :class:`EvaluationResult`.

    Raises:
        ValueError: ``baseline`` not among the heuristics, a label used twice, fewer
            than 2 episodes (``compare_routers``).

    Example:
        >>> from routeplay.replay import make_cluster, make_router
        >>> ep = pl.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 0.1, 0.2],
        ...                    "prompt_tokens": [50, 60, 70], "output_tokens": [5, 6, 7]})
        >>> res = evaluate_routers({"ll": make_router("least-loaded")},
        ...     ["round-robin", "random"], [ep, ep], make_cluster("a100x4"), n_boot=100)
        >>> res.learned, res.to_frame()["n_episodes"].to_list()
        (('ll+fallback',), [2, 2, 2])
    """
    heuristics = list(dict.fromkeys(heuristics))
    if baseline not in heuristics:
        raise ValueError(
            f"baseline {baseline!r} is not among the heuristics {heuristics}; expected it "
            "there. Fix: add it to heuristics."
        )
    if not episodes:
        raise ValueError("evaluate_routers got no episodes; expected at least 2 held-out traces.")
    base = config if config is not None else ReplayConfig()
    if base.max_sim_time_s is None:
        last = max(float(e["arrival_s"].max()) for e in episodes)  # type: ignore[arg-type]
        base = dataclasses.replace(base, max_sim_time_s=last + float(sim_slack_s))
    assert base.max_sim_time_s is not None
    n_ep = len(episodes)
    routers: dict[str, Any] = {h: _heuristic_factory(h) for h in heuristics}
    wrapped: dict[str, list[Any]] = {}
    learned_labels: list[str] = []
    for label, router in learned.items():
        if is_scheduler(router):  # holds only while no instance is free: nothing to bound
            spec: Any = router
            out_label = label
        elif max_router_wait_s is not None:
            spec = BoundedWaitRouter(
                router,
                max_router_wait_s=max_router_wait_s,
                fallback=make_router(fallback),
                name=label + label_suffix,
            )
            out_label = label + label_suffix
        else:
            spec = router
            out_label = label
        if out_label in routers:
            raise ValueError(
                f"router label {out_label!r} is used twice; expected unique labels across "
                "learned and heuristic routers."
            )
        learned_labels.append(out_label)
        seen: list[Any] = []
        wrapped[out_label] = seen

        def make(spec: Any = spec, seen: list[Any] = seen) -> Any:
            seen.append(_CountedScheduler(spec) if is_scheduler(spec) else _Counted(spec))
            return seen[-1]

        routers[out_label] = make
    ids = list(range(n_ep)) if episode_ids is None else [int(i) for i in episode_ids]
    replays = replay_episodes(
        episodes,
        cluster,
        routers,
        config=base,
        predictor=predictor,
        episode_ids=ids,
        keep_timelines=keep_timelines,
        show_progress=show_progress,
    )
    fb_rows: list[dict[str, Any]] = []
    counts = replays.summaries.select("router", "episode", "n_requests")
    n_req = {(str(r), int(e)): int(n) for r, e, n in counts.iter_rows()}
    for label, seen in wrapped.items():
        for k, counted in enumerate(seen):
            fb_rows.append(
                {
                    "router": label,
                    "episode": ids[k],
                    "n_fallback_routes": counted.n_fallback_routes,
                    "n_decisions": counted.n_decisions,
                    "n_requests": n_req[(label, ids[k])],
                }
            )
    fallbacks = pl.DataFrame(
        fb_rows,
        schema={
            "router": pl.String,
            "episode": pl.Int64,
            "n_fallback_routes": pl.Int64,
            "n_decisions": pl.Int64,
            "n_requests": pl.Int64,
        },
    )
    frame = replays.requests
    comparison = compare_routers(
        frame, baseline=baseline, statistics=("mean", "p99"), n_boot=n_boot, seed=seed
    )
    means = (
        frame.filter(pl.col("router").is_in(heuristics))
        .group_by("router", "episode")
        .agg(pl.col("e2e_s").mean())
        .group_by("router")
        .agg(pl.col("e2e_s").mean())
        .sort("e2e_s", "router")
    )
    best = str(means["router"][0])
    versus = None
    if best != baseline and frame["router"].n_unique() > 1:
        versus = compare_routers(
            frame, baseline=best, statistics=("mean", "p99"), n_boot=n_boot, seed=seed
        )
    return EvaluationResult(
        replays=replays,
        comparison=comparison,
        versus_best_heuristic=versus,
        baseline=baseline,
        best_heuristic=best,
        learned=tuple(learned_labels),
        heuristics=tuple(heuristics),
        fallbacks=fallbacks,
        max_router_wait_s=max_router_wait_s,
        max_sim_time_s=float(base.max_sim_time_s),
    )


class _Counted:
    """Snapshot of a router's counters after each replay (one per (router, episode))."""

    def __init__(self, router: Any) -> None:
        self._router = router
        self.name = getattr(router, "name", type(router).__name__)
        self.oracle = False
        self.n_fallback_routes = 0
        self.n_decisions = 0

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        self._router.reset(cluster, rng)
        self.n_fallback_routes = 0
        self.n_decisions = 0

    def route(self, request: RequestView, state: ClusterState) -> int:
        action = int(self._router.route(request, state))
        self.n_fallback_routes = int(getattr(self._router, "n_fallback_routes", 0))
        self.n_decisions = int(getattr(self._router, "n_decisions", self.n_decisions + 1))
        return action


class _CountedScheduler(_Counted):
    """:class:`_Counted` for a scheduler: counts its releases (it never falls back)."""

    def schedule(self, queue: tuple[RequestView, ...], state: ClusterState) -> tuple[int, int]:
        index, instance = self._router.schedule(queue, state)
        if instance != WAIT:
            self.n_decisions += 1
        return int(index), int(instance)
