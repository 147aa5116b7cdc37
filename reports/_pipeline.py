"""From episodes to a :class:`~routeplay.reports.Report`: replay, compare, chart.

:func:`build_replay_report` is the Python-API entry (notebooks): it takes the frames
of a paired replay and a :class:`~routeplay.estimator.ComparisonResult` and lays out
the standard report. A whole job file's pipeline (``build_job_report``) is in
``_job_run.py``: it uses this module and the job's config; this module uses neither.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl
from routeplay.estimator._verdict import (
    VERDICT_ALPHA,
    Verdict,
    compute_verdict,
    format_change,
    format_percent,
    metric_name,
    statistic_label,
)

from ._charts import (
    confusion_matrix_chart,
    improvement_forest_chart,
    instance_timeline_chart,
    latency_cdf_chart,
    load_imbalance_chart,
    routing_heatmap_chart,
)
from ._report import PageTable, Report, ReportSection

if TYPE_CHECKING:
    from routeplay.estimator import ComparisonResult, OutputLengthPredictor, PredictorEvaluation
    from routeplay.replay import ClusterConfig, EpisodeReplays, ReplayConfig, Router

__all__ = [
    "SIGNIFICANCE_METHOD",
    "PairedReplays",
    "build_replay_report",
    "replay_routers",
    "router_summary_table",
]

logger = logging.getLogger(__name__)

#: How :func:`build_replay_report` describes the statistics of ``compare_routers``.
SIGNIFICANCE_METHOD = (
    "paired over episodes (the unit of replication; requests within a replay are "
    "autocorrelated): per-episode statistic, relative improvement 1 - router/baseline "
    "with a paired percentile bootstrap CI over episodes ({n_boot} resamples, "
    "{confidence:g} coverage, seed {seed}); two-sided paired t-test and Wilcoxon "
    "signed-rank over {n_episodes} episodes, Holm-adjusted across routers"
)


@dataclass(frozen=True, slots=True)
class PairedReplays:
    """Every router replayed on every episode (like ``replay_episodes``, plus timelines).

    Attributes:
        requests: per-request rows with ``router`` and ``episode`` first.
        summaries: one row per (router, episode) with the replay's summary metrics.
        timelines: per-instance samples with ``router`` and ``episode`` first.
    """

    requests: pl.DataFrame
    summaries: pl.DataFrame
    timelines: pl.DataFrame


def replay_routers(
    episodes: Sequence[pl.DataFrame],
    cluster: ClusterConfig,
    routers: Mapping[str, Router],
    *,
    config: ReplayConfig | None = None,
    predictor: OutputLengthPredictor | None = None,
    episode_ids: Sequence[int] | None = None,
    show_progress: bool = False,
) -> PairedReplays:
    """Replay each router on each episode, keeping timelines (paired, seeded).

    :func:`routeplay.replay.replay_episodes` with timelines kept: episode ``k`` is
    replayed with ``config.seed + episode_ids[k]`` for every router. Each replay is
    logged (``routeplay.replay`` logger) as it starts. A router with an
    ``n_fallback_routes`` counter (a learned router wrapped in
    ``BoundedWaitRouter``) gets its count after each replay in the summaries'
    ``n_fallback_routes`` column (null for the other routers).

    Args:
        episodes: canonical traces.
        cluster: the cluster.
        routers: label -> router (the engine resets it before each replay).
        config: replay settings (its seed is the base seed).
        predictor: output-length predictor fitted on other data.
        episode_ids: labels of the episodes (default ``0..n-1``).
        show_progress: a tqdm bar over the replays.

    Returns:
        :class:`PairedReplays`.

    Example:
        >>> from routeplay.replay import make_cluster, make_router
        >>> ep = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.1],
        ...                    "prompt_tokens": [50, 60], "output_tokens": [5, 6]})
        >>> out = replay_routers([ep, ep], make_cluster("a100x4"),
        ...                      {"rr": make_router("round-robin")})
        >>> out.summaries.select("router", "episode").rows()
        [('rr', 0), ('rr', 1)]
    """
    from routeplay.replay import replay_episodes

    if not episodes or not routers:
        raise ValueError("replay_routers needs at least one episode and one router.")
    out = replay_episodes(
        episodes,
        cluster,
        routers,
        config=config,
        predictor=predictor,
        episode_ids=episode_ids,
        keep_timelines=True,
        show_progress=show_progress,
    )
    return _paired(out)


def _paired(out: EpisodeReplays) -> PairedReplays:
    assert out.timelines is not None
    return PairedReplays(requests=out.requests, summaries=out.summaries, timelines=out.timelines)


#: Metrics whose per-request CDF the standard report draws.
_CDF_METRICS = ("e2e_s", "ttft_s", "tbt_mean_s")

_METRIC_TITLES = {
    "e2e_s": "End-to-end latency (s)",
    "ttft_s": "Time to first token (s)",
    "tbt_mean_s": "Mean time between tokens (s)",
}

_SUMMARY_COLUMNS = (
    "e2e_s_mean",
    "e2e_s_p50",
    "e2e_s_p99",
    "ttft_s_mean",
    "ttft_s_p99",
    "tbt_mean_s_mean",
    "throughput_req_per_s",
    "utilisation_cv",
    "n_preemptions",
)


def router_summary_table(summaries: pl.DataFrame) -> pl.DataFrame:
    """Mean over episodes of each router's per-episode summary metrics.

    Args:
        summaries: one row per (router, episode) (``PairedReplays.summaries``).

    Returns:
        One row per router (input order) with ``n_episodes``, the mean of each
        summary column that exists and, when the summaries have it, the total
        ``n_fallback_routes`` (null for routers without a fallback).
    """
    columns = [c for c in _SUMMARY_COLUMNS if c in summaries.columns]
    extra = []
    if "n_fallback_routes" in summaries.columns:  # total over episodes; null = no fallback
        fb = pl.col("n_fallback_routes")
        extra.append(
            pl.when(fb.is_null().all()).then(None).otherwise(fb.sum()).alias("n_fallback_routes")
        )
    return summaries.group_by("router", maintain_order=True).agg(
        pl.len().cast(pl.Int64).alias("n_episodes"), *[pl.col(c).mean() for c in columns], *extra
    )


#: Columns of the "routers at a glance" page table: summary column, header, scale.
_GLANCE_COLUMNS: tuple[tuple[str, str, float], ...] = (
    ("e2e_s_mean", "Mean E2E (s)", 1.0),
    ("e2e_s_p99", "p99 E2E (s)", 1.0),
    ("ttft_s_mean", "Mean TTFT (s)", 1.0),
    ("ttft_s_p99", "p99 TTFT (s)", 1.0),
    ("tbt_mean_s_mean", "Mean TBT (ms)", 1000.0),
    ("throughput_req_per_s", "Throughput (req/s)", 1.0),
    ("n_preemptions", "Preemptions per episode", 1.0),
)


def _number(value: Any, scale: float = 1.0) -> str:
    if value is None or not isinstance(value, int | float) or value != value:  # null / NaN
        return "–"
    return f"{value * scale:.4g}"


def _router_label(router: str, baseline: str, learned: Sequence[str]) -> str:
    if router == baseline:
        return f"{router} (baseline)"
    return f"{router} (learned)" if router in learned else router


def _change_cell(comparison: ComparisonResult, router: str, metric: str, statistic: str) -> str:
    row = comparison.get(router, metric, statistic)
    mark = "*" if row.p_ttest_holm < VERDICT_ALPHA else ""
    return f"{format_percent(-row.relative_improvement)}{mark}"


def _glance_table(
    summary: pl.DataFrame, comparison: ComparisonResult, verdict: Verdict, learned: Sequence[str]
) -> PageTable:
    """Per-router means, with the change in mean and p99 E2E next to them."""
    metric = verdict.metric
    baseline = comparison.baseline
    columns: dict[str, list[str]] = {"Router": []}
    for router in summary.get_column("router").to_list():
        columns["Router"].append(_router_label(router, baseline, learned))
    rows = summary.to_dicts()
    for column, header, scale in _GLANCE_COLUMNS:
        if column not in summary.columns:
            continue
        columns[header] = [_number(row[column], scale) for row in rows]
        statistic = column.removeprefix(f"{metric}_")
        if column.startswith(f"{metric}_") and statistic in comparison.statistics:
            columns[f"{statistic_label(statistic, metric, capital=True)} vs baseline"] = [
                _change_cell(comparison, row["router"], metric, statistic)
                if row["router"] in comparison.routers
                else "–"
                for row in rows
            ]
    if "n_fallback_routes" in summary.columns and summary["n_fallback_routes"].is_not_null().any():
        columns["Fallback routes (total)"] = [_number(row["n_fallback_routes"]) for row in rows]
    leaders = verdict.mean.routers if verdict.mean is not None else ()
    emphasis = tuple(i for i, row in enumerate(rows) if row["router"] in leaders)
    n = comparison.n_episodes
    return PageTable(
        key="routers-at-a-glance",
        title=f"Routers at a glance (mean over {n} episodes)",
        frame=pl.DataFrame(columns),
        caption=(
            f"Each value is the mean over the {n} replayed episodes of the per-episode "
            f"statistic; changes are router / {baseline} − 1 (negative = faster), "
            f"* = Holm-adjusted paired t-test p < {VERDICT_ALPHA:g}. Bold: lowest "
            f"{statistic_label('mean', metric)}."
        ),
        emphasis=emphasis,
    )


def _change_table(comparison: ComparisonResult, learned: Sequence[str]) -> PageTable:
    """Every compared router x metric x statistic: change, CI and significance mark."""
    columns: dict[str, list[str]] = {
        "Router": [_router_label(r, comparison.baseline, learned) for r in comparison.routers]
    }
    for metric in comparison.metrics:
        for statistic in comparison.statistics:
            header = statistic_label(statistic, metric, capital=True)
            cells = []
            for router in comparison.routers:
                row = comparison.get(router, metric, statistic)
                change = format_change(-row.relative_improvement, -row.ci_high, -row.ci_low)
                point, _, interval = change.partition(" [")
                mark = "*" if row.p_ttest_holm < VERDICT_ALPHA else ""
                cells.append(f"{point}{mark}" + (f"\n[{interval}" if interval else ""))
            columns[header] = cells
    level = f"{100 * comparison.confidence:g} %"
    return PageTable(
        key="change-vs-baseline",
        title=f"Change vs the baseline {comparison.baseline}, every metric",
        frame=pl.DataFrame(columns),
        caption=(
            f"router / {comparison.baseline} − 1 of the per-episode statistic, mean over "
            f"{comparison.n_episodes} paired episodes (negative = faster); [{level} paired "
            f"bootstrap CI, percent]; * = Holm-adjusted paired t-test p < {VERDICT_ALPHA:g}. "
            "Every p-value is in the full comparison table below."
        ),
    )


def build_replay_report(
    replays: PairedReplays,
    comparison: ComparisonResult,
    *,
    title: str,
    metadata: Mapping[str, Any],
    predictor_evaluation: PredictorEvaluation | None = None,
    extra_sections: Sequence[ReportSection] = (),
    extra_tables: Mapping[str, pl.DataFrame] | None = None,
    extra_numbers: Mapping[str, Any] | None = None,
    notes: Sequence[str] = (),
    learned_routers: Sequence[str] = (),
) -> Report:
    """Lay out the standard router-comparison report.

    First the verdict (:func:`~routeplay.estimator.compute_verdict` on E2E latency, or
    the comparison's first metric without ``e2e_s``). Sections, in a two-column grid:
    per compared metric its change-vs-baseline forest plot next to its CDF per router
    (E2E, TTFT, TBT), per-instance queue and KV timelines and the load imbalance of the
    first episode, the predictor's confusion matrix (when given), ``extra_sections``,
    and the routing heatmap by request class. Page tables: routers at a glance and
    every change vs the baseline. Stored tables: per-router means, the
    comparison (``comparison.to_frame()``) and, as Parquet only, per-request rows,
    timelines, per-episode summaries and per-episode differences.

    Args:
        replays: the paired replays.
        comparison: ``compare_routers`` on ``replays.requests``.
        title: the page title.
        metadata: at least data, cluster and seed (the significance method is filled
            in from ``comparison`` unless given).
        predictor_evaluation: held-out quality of the predictor, if one was used.
        extra_sections: appended sections (e.g. learning curves).
        extra_tables: further tables shown on the page (name -> frame).
        extra_numbers: further numbers for ``summary.json`` (JSON-serialisable).
        notes: paragraphs shown under the verdict.
        learned_routers: labels of learned routers among the compared routers: the
            verdict compares each with the best heuristic.

    Returns:
        A :class:`Report` for :func:`write_report`.
    """
    meta = dict(metadata)
    meta.setdefault(
        "significance_method",
        SIGNIFICANCE_METHOD.format(
            n_boot=comparison.n_boot,
            confidence=comparison.confidence,
            seed=comparison.seed,
            n_episodes=comparison.n_episodes,
        ),
    )
    meta.setdefault("baseline", comparison.baseline)
    meta.setdefault("episodes", list(comparison.episodes))
    requests = replays.requests
    first_episode = int(replays.timelines["episode"].min())  # type: ignore[arg-type]
    timelines = replays.timelines.filter(pl.col("episode") == first_episode)
    n = comparison.n_episodes
    changes = comparison.to_frame()
    sections: list[ReportSection] = []
    shown = [*comparison.metrics, *(m for m in _CDF_METRICS if m not in comparison.metrics)]
    for metric in shown:  # per metric: its change vs the baseline, then its CDF
        slug = metric.replace("_", "-")
        if metric in comparison.metrics:
            sections.append(
                ReportSection(
                    key=f"improvement-{slug}",
                    title=f"Change in {metric_name(metric)} vs the baseline, per router",
                    chart=improvement_forest_chart(changes, metrics=[metric]),
                    caption=f"Baseline {comparison.baseline}; {n} paired episodes.",
                )
            )
        if metric in requests.columns and metric in _CDF_METRICS:
            sections.append(
                ReportSection(
                    key=f"cdf-{slug}",
                    title=f"{_METRIC_TITLES.get(metric, metric)}, CDF per router",
                    chart=latency_cdf_chart(requests, metric=metric),
                    caption=f"All requests of all {n} episodes; log x axis.",
                )
            )
    for value, label in (
        ("n_queued", "Queued requests"),
        ("kv_used_tokens", "KV cache in use (tokens)"),
    ):
        sections.append(
            ReportSection(
                key=f"timeline-{value.replace('_', '-')}",
                title=f"{label} per instance over time",
                chart=instance_timeline_chart(timelines, value=value),
                caption=f"Episode {first_episode}; one panel per router.",
            )
        )
    sections.append(
        ReportSection(
            key="imbalance",
            title="Load imbalance across instances over time",
            chart=load_imbalance_chart(timelines),
            caption=f"Episode {first_episode}; 0 = every instance equally loaded.",
        )
    )
    numbers: dict[str, Any] = dict(extra_numbers or {})
    if predictor_evaluation is not None:
        sections.append(
            ReportSection(
                key="predictor",
                title="Output-length predictor (held-out)",
                chart=confusion_matrix_chart(predictor_evaluation),
                caption="Held-out requests; rows: true output-length bucket.",
            )
        )
        numbers["predictor"] = predictor_evaluation.summary()
    sections.extend(extra_sections)
    sections.append(  # wide (one panel per router side by side): last
        ReportSection(
            key="routing",
            title="Routing by request class, per router",
            chart=routing_heatmap_chart(requests),
            caption="Classes LL/LH/HL/HH: light or heavy prompt, then light or heavy output.",
            layout="wide",
        )
    )
    summary = router_summary_table(replays.summaries)
    learned = tuple(learned_routers)
    verdict = compute_verdict(
        comparison,
        summary,
        learned=learned,
        metric="e2e_s" if "e2e_s" in comparison.metrics else comparison.metrics[0],
    )
    return Report(
        title=title,
        metadata=meta,
        sections=tuple(sections),
        tables={
            "router_summary": summary,
            "comparison": comparison.to_frame(),
            **(extra_tables or {}),
        },
        data_tables={
            "requests": requests,
            "episode_summaries": replays.summaries,
            "timelines": replays.timelines,
            "per_episode": comparison.per_episode,
        },
        numbers=numbers,
        notes=tuple(notes),
        verdict=verdict,
        page_tables=(
            _glance_table(summary, comparison, verdict, learned),
            _change_table(comparison, learned),
        ),
    )
