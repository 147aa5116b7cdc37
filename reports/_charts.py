"""Altair chart builders: one function per chart, polars frames in, ``alt.Chart`` out.

Every builder computes the (small) table it draws with polars, embeds it under a
fixed dataset name (``alt.InlineData(name=...)``, so ``chart.to_dict()`` is stable and
snapshot-testable) and returns the chart. :func:`chart_data` gives that table back as
a polars frame: the report writes it to Parquet next to the chart.

Charts that show several routers or metrics use the ``row``/``column`` encodings
(not ``.facet``), so every builder returns a single-view :class:`altair.Chart` or a
:class:`altair.LayerChart`; both have ``to_dict()``, ``save()`` and work with
:func:`routeplay.reports.write_report`.
"""

# Why this module is long: one short builder per chart of the report, sharing encodings
# and the inline-data convention.

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, TypeAlias

import altair as alt
import numpy as np
import polars as pl
from routeplay.datasets import request_class
from routeplay.estimator import LatencyFit, PredictorEvaluation
from routeplay.estimator._verdict import VERDICT_ALPHA, metric_name

__all__ = [
    "ChartLike",
    "chart_data",
    "confusion_matrix_chart",
    "improvement_forest_chart",
    "instance_timeline_chart",
    "latency_cdf_chart",
    "latency_fit_chart",
    "latency_residual_chart",
    "learning_curve_chart",
    "load_imbalance_chart",
    "routing_heatmap_chart",
]

#: What the builders return.
ChartLike: TypeAlias = alt.Chart | alt.LayerChart

#: Human labels of the latency columns.
METRIC_LABELS: dict[str, str] = {
    "e2e_s": "end-to-end latency (s)",
    "ttft_s": "time to first token (s)",
    "tbt_mean_s": "mean time between tokens (s)",
    "tbt_max_s": "max time between tokens (s)",
    "router_wait_s": "router wait (s)",
    "queue_wait_s": "instance queue wait (s)",
}

#: Human labels of timeline quantities (y axes, titles).
VALUE_LABELS: dict[str, str] = {
    "n_queued": "queued requests",
    "n_running": "running requests",
    "n_outstanding": "outstanding requests (queued + running)",
    "kv_used_tokens": "KV cache in use (tokens)",
}


def _capitalised(label: str) -> str:
    return label[:1].upper() + label[1:]


#: Probabilities at which :func:`latency_cdf_chart` evaluates each empirical CDF.
CDF_PROBABILITIES: tuple[float, ...] = tuple(float(p) for p in np.linspace(0.0, 1.0, 201))

_WIDTH = 360
_HEIGHT = 220
_FOREST_WIDTH = 280


def _json_value(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _inline(frame: pl.DataFrame, name: str) -> alt.InlineData:
    """Embed a frame under a fixed dataset name (non-finite floats become null)."""
    rows = [{k: _json_value(v) for k, v in row.items()} for row in frame.to_dicts()]
    return alt.InlineData(values=rows, name=name)


def chart_data(chart: ChartLike) -> pl.DataFrame:
    """The table a chart from this module draws, as a polars frame.

    Args:
        chart: a chart returned by one of this module's builders.

    Returns:
        The embedded rows (the first layer's data for a layered chart).

    Raises:
        ValueError: if the chart has no inline data.

    Example:
        >>> t = pl.DataFrame({"router": ["rr", "rr"], "e2e_s": [1.0, 2.0]})
        >>> chart_data(latency_cdf_chart(t)).columns
        ['router', 'probability', 'e2e_s', 'n_requests', 'n_null']
    """
    data = chart.data
    if isinstance(chart, alt.LayerChart) and (data is alt.Undefined or data is None):
        data = chart.layer[0].data
    if not isinstance(data, alt.InlineData) or data.values is alt.Undefined:
        raise ValueError(
            f"chart_data: the chart holds {type(data).__name__} data, not inline rows; "
            "expected a chart built by routeplay.reports."
        )
    return pl.DataFrame(list(data.values))


def _check_columns(frame: pl.DataFrame, columns: Sequence[str], *, where: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{where}: missing column(s) {missing}; got {frame.columns}. Expected "
            f"columns {list(columns)}."
        )


def latency_cdf_chart(
    requests: pl.DataFrame, *, metric: str = "e2e_s", router_col: str = "router"
) -> alt.Chart:
    """Empirical CDF of a latency metric per router, on a log x axis.

    A router with at most 201 values gets its exact empirical CDF (a step at every
    value); with more, the CDF is evaluated at the 201 probabilities of
    :data:`CDF_PROBABILITIES` (quantiles, linear interpolation), which keeps the chart
    small for any number of requests. Null values (``tbt_mean_s`` of 1-token
    requests) have no latency to plot: they are counted in the ``n_null`` column and
    in the subtitle, not drawn.

    Args:
        requests: per-request rows with ``router_col`` and ``metric`` (seconds > 0).
        metric: the latency column.
        router_col: the column naming the router.

    Returns:
        A line chart (one line per router).

    Raises:
        ValueError: on a missing column or a latency <= 0 (a log axis cannot show it).

    Example:
        >>> t = pl.DataFrame({"router": ["rr"] * 3 + ["jsq"] * 3,
        ...                   "e2e_s": [1.0, 2.0, 4.0, 1.0, 1.5, 2.0]})
        >>> chart = latency_cdf_chart(t)
        >>> chart.to_dict()["encoding"]["x"]["scale"]
        {'type': 'log'}
        >>> chart_data(chart).filter(pl.col("router") == "rr")["e2e_s"].to_list()
        [1.0, 2.0, 4.0]
    """
    _check_columns(requests, [router_col, metric], where="latency_cdf_chart")
    values = requests.get_column(metric).drop_nulls()
    if values.len() and float(values.min()) <= 0:  # type: ignore[arg-type]
        raise ValueError(
            f"latency_cdf_chart: {metric} has a value {values.min()!r} <= 0; expected "
            "latencies > 0 s (the x axis is logarithmic)."
        )
    parts = []
    for router in sorted(requests.get_column(router_col).unique().to_list()):
        column = requests.filter(pl.col(router_col) == router).get_column(metric)
        kept = np.sort(column.drop_nulls().cast(pl.Float64).to_numpy())
        if kept.size == 0:
            continue
        if kept.size <= len(CDF_PROBABILITIES):  # small: the exact empirical CDF
            probabilities = np.arange(1, kept.size + 1) / kept.size
            quantiles = kept
        else:
            probabilities = np.asarray(CDF_PROBABILITIES)
            quantiles = np.quantile(kept, probabilities)
        n_points = probabilities.size
        parts.append(
            pl.DataFrame(
                {
                    "router": [str(router)] * n_points,
                    "probability": np.round(probabilities, 9),
                    metric: quantiles,
                    "n_requests": [int(column.len())] * n_points,
                    "n_null": [int(column.null_count())] * n_points,
                }
            )
        )
    data = pl.concat(parts) if parts else pl.DataFrame()
    n_null = int(requests.get_column(metric).null_count())
    label = METRIC_LABELS.get(metric, metric)
    subtitle = f"{n_null} requests without a value not drawn" if n_null else ""
    return (  # type: ignore[no-any-return]  # altair's typing
        alt.Chart(_inline(data, f"cdf_{metric}"))
        .mark_line(interpolate="step-after")
        .encode(
            x=alt.X(f"{metric}:Q", title=label, scale=alt.Scale(type="log")),
            y=alt.Y("probability:Q", title="share of requests", axis=alt.Axis(format="%")),
            color=alt.Color("router:N", title="router"),
            tooltip=[
                "router:N",
                alt.Tooltip("probability:Q", title="share of requests", format=".1%"),
                alt.Tooltip(f"{metric}:Q", title=label, format=".4g"),
            ],
        )
        .properties(
            title=alt.Title(f"{_capitalised(label)}, CDF per router", subtitle=subtitle),
            width=_WIDTH,
            height=_HEIGHT,
        )
    )


def improvement_forest_chart(
    comparison: pl.DataFrame, *, metrics: Sequence[str] | None = None
) -> alt.LayerChart:
    """Forest plot: change in latency against the baseline with its bootstrap CI.

    The chart shows the change ``router / baseline - 1 = -relative_improvement``
    (negative = faster, as the report's verdict and tables state it), its interval
    ``[-ci_high, -ci_low]``, and marks a label with ``*`` when the Holm-adjusted
    t-test p-value is below :data:`~routeplay.reports.VERDICT_ALPHA`. Metrics differ
    in scale (a TTFT change can be ten times an E2E change): one chart per metric
    (``metrics=["e2e_s"]``) keeps each readable.

    Args:
        comparison: ``ComparisonResult.to_frame()`` (columns ``router``, ``metric``,
            ``statistic``, ``relative_improvement``, ``ci_low``, ``ci_high``,
            ``p_ttest_holm``, ``n_episodes``).
        metrics: the metrics to show (default: every metric of ``comparison``).

    Returns:
        A layered chart: a point and CI bar per router x metric x statistic (input
        order), and a vertical rule at 0 (left of it = faster than the baseline).
        Colour: the metric, or the statistic when one metric is shown.

    Raises:
        ValueError: on a missing column or when no row has one of ``metrics``.

    Example:
        >>> frame = pl.DataFrame({"router": ["jsq"], "metric": ["e2e_s"],
        ...     "statistic": ["mean"], "relative_improvement": [0.1], "ci_low": [0.05],
        ...     "ci_high": [0.15], "p_ttest_holm": [0.01], "n_episodes": [5]})
        >>> data = chart_data(improvement_forest_chart(frame))
        >>> data["label"].to_list(), data["latency_change"].to_list()
        (['jsq · mean *'], [-0.1])
    """
    needed = [
        "router",
        "metric",
        "statistic",
        "relative_improvement",
        "ci_low",
        "ci_high",
        "p_ttest_holm",
        "n_episodes",
    ]
    _check_columns(comparison, needed, where="improvement_forest_chart")
    if metrics is not None:
        chosen = comparison.filter(pl.col("metric").is_in(list(metrics)))
        if chosen.height == 0:
            raise ValueError(
                f"improvement_forest_chart: no row has a metric in {list(metrics)}; the "
                f"comparison has {comparison.get_column('metric').unique().to_list()}. "
                "Fix: pass metrics= among those."
            )
        comparison = chosen
    shown = comparison.get_column("metric").unique(maintain_order=True).to_list()
    single = len(shown) == 1
    short = [metric_name(m, short=True) for m in comparison.get_column("metric").to_list()]
    significant = (pl.col("p_ttest_holm") < VERDICT_ALPHA).fill_null(False)
    label = (
        pl.format("{} · {}", "router", "statistic")
        if single
        else pl.format("{} · {} {}", "router", "metric_label", "statistic")
    )
    data = (
        comparison.select(needed)
        .with_columns(
            pl.Series("metric_label", short, dtype=pl.String),
            (-pl.col("relative_improvement")).alias("latency_change"),
            (-pl.col("ci_high")).alias("change_ci_low"),
            (-pl.col("ci_low")).alias("change_ci_high"),
            significant.alias("significant"),
        )
        .with_columns(
            label.add(
                pl.when(pl.col("significant")).then(pl.lit(" *")).otherwise(pl.lit(""))
            ).alias("label"),
        )
    )
    colour_field, colour_title = (
        ("statistic", "statistic") if single else ("metric_label", "metric")
    )
    base = alt.Chart(_inline(data, "improvement")).encode(
        y=alt.Y("label:N", title=None, sort=None),
    )
    tooltip = [
        "router:N",
        alt.Tooltip("metric_label:N", title="metric"),
        "statistic:N",
        alt.Tooltip("latency_change:Q", title="change vs baseline", format="+.2%"),
        alt.Tooltip("change_ci_low:Q", title="CI low", format="+.2%"),
        alt.Tooltip("change_ci_high:Q", title="CI high", format="+.2%"),
        alt.Tooltip("p_ttest_holm:Q", title="Holm p (t-test)", format=".3g"),
        alt.Tooltip("n_episodes:Q", title="episodes"),
    ]
    bars = base.mark_rule(strokeWidth=2).encode(
        x=alt.X(
            "change_ci_low:Q",
            title="change in latency vs the baseline (negative = faster)",
            axis=alt.Axis(format="+.1~%"),
        ),
        x2="change_ci_high:Q",
        color=alt.Color(f"{colour_field}:N", title=colour_title, sort=None),
        tooltip=tooltip,
    )
    points = base.mark_point(filled=True, size=70).encode(
        x="latency_change:Q", color=alt.Color(f"{colour_field}:N", sort=None), tooltip=tooltip
    )
    zero = (
        alt.Chart(_inline(pl.DataFrame({"zero": [0.0]}), "improvement_zero"))
        .mark_rule(strokeDash=[4, 4], color="gray")
        .encode(x="zero:Q")
    )
    return alt.layer(bars, points, zero).properties(  # type: ignore[return-value]  # altair's typing
        title=alt.Title(
            f"Change in {metric_name(shown[0])} vs the baseline, per router"
            if single
            else "Change in latency vs the baseline, per router",
            subtitle=[
                "router / baseline − 1, paired over episodes; bars: bootstrap CI",
                f"* Holm-adjusted paired t-test p < {VERDICT_ALPHA:g}",
            ],
        ),
        width=_FOREST_WIDTH,
    )


def instance_timeline_chart(
    timelines: pl.DataFrame, *, value: str = "n_queued", router_col: str = "router"
) -> alt.Chart:
    """Per-instance timeline of a sampled quantity (queue length, KV use, ...).

    Args:
        timelines: ``ReplayResult.timelines`` rows (``time_s``, ``instance_id`` and
            ``value``), optionally with a ``router_col`` column: one panel per router.
        value: the column to draw, e.g. ``"n_queued"``, ``"n_running"``,
            ``"kv_used_tokens"``.
        router_col: the router column (panels), when present.

    Returns:
        A line chart, one line per instance.

    Raises:
        ValueError: on a missing column.

    Example:
        >>> t = pl.DataFrame({"time_s": [0.0, 1.0, 0.0, 1.0], "instance_id": [0, 0, 1, 1],
        ...                   "n_queued": [0, 2, 1, 0]})
        >>> instance_timeline_chart(t).to_dict()["mark"]["type"]
        'line'
    """
    _check_columns(timelines, ["time_s", "instance_id", value], where="instance_timeline_chart")
    has_router = router_col in timelines.columns
    keep = ([router_col] if has_router else []) + ["time_s", "instance_id", value]
    sort_by = ([router_col] if has_router else []) + ["instance_id", "time_s"]
    data = timelines.select(keep).sort(sort_by)
    if has_router:
        data = data.rename({router_col: "router"}) if router_col != "router" else data
    label = VALUE_LABELS.get(value, value)
    encoding: dict[str, Any] = {
        "x": alt.X("time_s:Q", title="time (s)"),
        "y": alt.Y(f"{value}:Q", title=label),
        "color": alt.Color("instance_id:N", title="instance"),
        "tooltip": ["instance_id:N", "time_s:Q", f"{value}:Q"],
    }
    if has_router:
        encoding["row"] = alt.Row("router:N", title=None)
    return (  # type: ignore[no-any-return]  # altair's typing
        alt.Chart(_inline(data, f"timeline_{value}"))
        .mark_line(interpolate="step-after")
        .encode(**encoding)
        .properties(title=f"{_capitalised(label)} per instance over time", width=_WIDTH, height=120)
    )


def load_imbalance_chart(
    timelines: pl.DataFrame, *, router_col: str = "router", value: str = "n_outstanding"
) -> alt.Chart:
    """Load imbalance across instances over time: coefficient of variation per sample.

    The load of an instance is ``n_queued + n_running`` (``value="n_outstanding"``,
    the default) or any timeline column. At each sample time the CV is the population
    SD over instances divided by the mean; 0 when every instance is idle.

    Args:
        timelines: timeline rows, optionally with ``router_col`` (one line per router).
        router_col: the router column.
        value: ``"n_outstanding"`` or a numeric timeline column such as
            ``"kv_used_tokens"``.

    Returns:
        A line chart of the CV over time.

    Raises:
        ValueError: on a missing column.

    Example:
        >>> t = pl.DataFrame({"time_s": [0.0, 0.0, 1.0, 1.0], "instance_id": [0, 1, 0, 1],
        ...                   "n_queued": [1, 1, 3, 1], "n_running": [1, 1, 1, 1]})
        >>> chart_data(load_imbalance_chart(t))["load_cv"].to_list()
        [0.0, 0.3333333333333333]
    """
    needed = ["time_s", "instance_id"] + (
        ["n_queued", "n_running"] if value == "n_outstanding" else [value]
    )
    _check_columns(timelines, needed, where="load_imbalance_chart")
    frame = timelines
    if router_col not in frame.columns:
        frame = frame.with_columns(pl.lit("replay").alias(router_col))
    if value == "n_outstanding":
        frame = frame.with_columns(
            (pl.col("n_queued").cast(pl.Float64) + pl.col("n_running").cast(pl.Float64)).alias(
                "n_outstanding"
            )
        )
    load = pl.col(value).cast(pl.Float64)
    data = (
        frame.group_by(router_col, "time_s")
        .agg(
            pl.when(load.mean() > 0)
            .then(load.std(ddof=0) / load.mean())
            .otherwise(0.0)
            .alias("load_cv"),
            load.mean().alias("mean_load"),
        )
        .rename({router_col: "router"} if router_col != "router" else {})
        .sort("router", "time_s")
    )
    return (  # type: ignore[no-any-return]  # altair's typing
        alt.Chart(_inline(data, f"imbalance_{value}"))
        .mark_line()
        .encode(
            x=alt.X("time_s:Q", title="time (s)"),
            y=alt.Y("load_cv:Q", title="load imbalance (CV across instances)"),
            color=alt.Color("router:N", title="router"),
            tooltip=[
                "router:N",
                "time_s:Q",
                alt.Tooltip("load_cv:Q", title="CV", format=".3f"),
                alt.Tooltip("mean_load:Q", title="mean load", format=".3g"),
            ],
        )
        .properties(
            title=alt.Title(
                "Load imbalance across instances over time",
                subtitle=f"coefficient of variation of {VALUE_LABELS.get(value, value)}",
            ),
            width=_WIDTH,
            height=_HEIGHT,
        )
    )


def routing_heatmap_chart(
    requests: pl.DataFrame,
    *,
    router_col: str = "router",
    heavy_prompt_tokens: int | None = None,
    heavy_decode_tokens: int | None = None,
) -> alt.Chart:
    """Where each request class (LL/LH/HL/HH) was sent: class x instance heatmap.

    Cells show the share of a class's requests that went to an instance (rows sum to
    1 per router); the tooltip has the count.

    Args:
        requests: per-request rows with ``prompt_tokens``, ``output_tokens`` and
            ``instance_id`` (and ``router_col``: one panel per router).
        router_col: the router column.
        heavy_prompt_tokens: class threshold (``None`` = the paper's default).
        heavy_decode_tokens: class threshold (``None`` = the paper's default).

    Returns:
        A heatmap chart.

    Raises:
        ValueError: on a missing column.

    Example:
        >>> t = pl.DataFrame({"prompt_tokens": [10, 500, 10], "output_tokens": [5, 5, 400],
        ...                   "instance_id": [0, 1, 1]})
        >>> chart_data(routing_heatmap_chart(t)).select("request_class", "instance_id",
        ...     "n_requests").rows()
        [('LL', 0, 1), ('LH', 1, 1), ('HL', 1, 1)]
    """
    _check_columns(
        requests, ["prompt_tokens", "output_tokens", "instance_id"], where="routing_heatmap_chart"
    )
    kwargs: dict[str, Any] = {}
    if heavy_prompt_tokens is not None:
        kwargs["heavy_prompt_tokens"] = heavy_prompt_tokens
    if heavy_decode_tokens is not None:
        kwargs["heavy_decode_tokens"] = heavy_decode_tokens
    frame = requests
    if router_col not in frame.columns:
        frame = frame.with_columns(pl.lit("replay").alias(router_col))
    frame = frame.with_columns(request_class(frame, **kwargs).alias("request_class"))
    data = (
        frame.group_by(router_col, "request_class", "instance_id")
        .agg(pl.len().cast(pl.Int64).alias("n_requests"))
        .with_columns(
            (
                pl.col("n_requests") / pl.col("n_requests").sum().over(router_col, "request_class")
            ).alias("share_of_class"),
            pl.col("instance_id").cast(pl.Int64),
        )
        .rename({router_col: "router"} if router_col != "router" else {})
        .sort("router", "request_class", "instance_id")
        .with_columns(pl.col("request_class").cast(pl.String))
    )
    return (  # type: ignore[no-any-return]  # altair's typing
        alt.Chart(_inline(data, "routing_heatmap"))
        .mark_rect()
        .encode(
            x=alt.X("instance_id:O", title="instance"),
            y=alt.Y("request_class:O", title="request class", sort=["LL", "LH", "HL", "HH"]),
            color=alt.Color(
                "share_of_class:Q",
                title="share of class",
                scale=alt.Scale(domain=[0, 1]),
                legend=alt.Legend(format="%"),
            ),
            column=alt.Column("router:N", title=None),
            tooltip=[
                "router:N",
                "request_class:N",
                "instance_id:O",
                "n_requests:Q",
                alt.Tooltip("share_of_class:Q", format=".1%"),
            ],
        )
        .properties(
            title=alt.Title(
                "Routing by request class, per router",
                subtitle="share of each class's requests sent to each instance",
            ),
            width=140,
            height=120,
        )
    )


def _fit_frame(iterations: pl.DataFrame, fit: LatencyFit) -> pl.DataFrame:
    columns = ["prefill_tokens", "prefill_sq_tokens", "n_decode_seqs", "decode_context_tokens"]
    _check_columns(iterations, [*columns, "iteration_s"], where="latency fit chart")
    predicted = fit.model.iteration_time_s(
        **{c: iterations.get_column(c).cast(pl.Float64).to_numpy() for c in columns}
    )
    measured = iterations.get_column("iteration_s").cast(pl.Float64)
    phase = (
        pl.when(pl.col("prefill_tokens") > 0).then(pl.lit("prefill")).otherwise(pl.lit("decode"))
    )
    return (
        iterations.select(columns)
        .with_columns(
            measured.alias("measured_s"),
            pl.Series("predicted_s", np.atleast_1d(predicted), dtype=pl.Float64),
        )
        .with_columns(
            (pl.col("measured_s") - pl.col("predicted_s")).alias("residual_s"),
            phase.alias("phase"),
        )
    )


def latency_fit_chart(iterations: pl.DataFrame, fit: LatencyFit) -> alt.LayerChart:
    """Measured vs predicted iteration time of a calibrated latency model.

    Args:
        iterations: an iteration table (the columns of ``fit_latency_model``).
        fit: the fit whose model predicts the iterations.

    Returns:
        A scatter of measured vs predicted seconds with the identity line.

    Example:
        >>> from routeplay.estimator import fit_latency_model
        >>> n = np.arange(1, 41)
        >>> it = pl.DataFrame({"prefill_tokens": n * 0, "prefill_sq_tokens": n * 0,
        ...     "n_decode_seqs": n, "decode_context_tokens": n * 300,
        ...     "iteration_s": 0.01 + 2e-4 * n + 1e-6 * n * 300})
        >>> fit = fit_latency_model(it, terms=["n_decode_seqs"])
        >>> round(chart_data(latency_fit_chart(it, fit))["residual_s"].abs().max(), 9)
        0.0
    """
    data = _fit_frame(iterations, fit)
    r2 = f"R² = {fit.r_squared:.4f}, held-out MAPE = {fit.heldout_mape:.2%}"
    points = (
        alt.Chart(_inline(data, "latency_fit"))
        .mark_circle(size=18, opacity=0.6)
        .encode(
            x=alt.X("predicted_s:Q", title="predicted iteration time (s)"),
            y=alt.Y("measured_s:Q", title="measured iteration time (s)"),
            color=alt.Color("phase:N", title="phase"),
            tooltip=["phase:N", "predicted_s:Q", "measured_s:Q", "residual_s:Q"],
        )
    )
    lo = float(min(data["predicted_s"].to_numpy().min(), data["measured_s"].to_numpy().min()))
    hi = float(max(data["predicted_s"].to_numpy().max(), data["measured_s"].to_numpy().max()))
    identity = (
        alt.Chart(_inline(pl.DataFrame({"x_s": [lo, hi], "y_s": [lo, hi]}), "latency_identity"))
        .mark_line(strokeDash=[4, 4], color="gray")
        .encode(x="x_s:Q", y="y_s:Q")
    )
    return alt.layer(points, identity).properties(  # type: ignore[return-value]  # altair's typing
        title=alt.Title("Latency model: measured vs predicted", subtitle=r2),
        width=_WIDTH,
        height=_HEIGHT,
    )


def latency_residual_chart(iterations: pl.DataFrame, fit: LatencyFit) -> alt.Chart:
    """Residuals (measured - predicted) of a latency model against the prediction.

    Args:
        iterations: an iteration table (the columns of ``fit_latency_model``).
        fit: the fit whose model predicts the iterations.

    Returns:
        A residual scatter chart.

    Example:
        >>> from routeplay.estimator import fit_latency_model
        >>> n = np.arange(1, 41)
        >>> it = pl.DataFrame({"prefill_tokens": n * 0, "prefill_sq_tokens": n * 0,
        ...     "n_decode_seqs": n, "decode_context_tokens": n * 300,
        ...     "iteration_s": 0.01 + 2e-4 * n + 1e-6 * n * 300})
        >>> latency_residual_chart(it, fit_latency_model(it, terms=["n_decode_seqs"])).mark
        MarkDef({
          opacity: 0.6,
          size: 18,
          type: 'circle'
        })
    """
    data = _fit_frame(iterations, fit)
    return (  # type: ignore[no-any-return]  # altair's typing
        alt.Chart(_inline(data, "latency_residuals"))
        .mark_circle(size=18, opacity=0.6)
        .encode(
            x=alt.X("predicted_s:Q", title="predicted iteration time (s)"),
            y=alt.Y("residual_s:Q", title="measured - predicted (s)"),
            color=alt.Color("phase:N", title="phase"),
            tooltip=["phase:N", "predicted_s:Q", "residual_s:Q"],
        )
        .properties(title="Latency model residuals", width=_WIDTH, height=_HEIGHT)
    )


def confusion_matrix_chart(evaluation: PredictorEvaluation) -> alt.Chart:
    """Confusion matrix of an output-length predictor (rows: true bucket).

    Args:
        evaluation: from :func:`routeplay.estimator.evaluate_predictor`.

    Returns:
        A heatmap: colour = share of the true bucket's requests, tooltip = count.

    Example:
        >>> ev = PredictorEvaluation(scheme_name="s", edges_tokens=(1.0, 10.0, 100.0),
        ...     n_requests=4, top1_accuracy=0.5, within_one_accuracy=1.0, cohen_kappa=0.0,
        ...     mean_abs_error_tokens=3.0, confusion=np.array([[1, 1], [1, 1]]))
        >>> chart_data(confusion_matrix_chart(ev))["share_of_true"].to_list()
        [0.5, 0.5, 0.5, 0.5]
    """
    edges = evaluation.edges_tokens
    labels = [f"[{edges[i]:g}, {edges[i + 1]:g})" for i in range(len(edges) - 1)]
    data = (
        evaluation.to_frame()
        .with_columns(
            pl.when(pl.col("n_requests").sum().over("true_bucket") > 0)
            .then(pl.col("n_requests") / pl.col("n_requests").sum().over("true_bucket"))
            .otherwise(0.0)
            .alias("share_of_true"),
            pl.col("true_bucket")
            .map_elements(lambda i: labels[i], return_dtype=pl.String)
            .alias("true_tokens"),
            pl.col("predicted_bucket")
            .map_elements(lambda i: labels[i], return_dtype=pl.String)
            .alias("predicted_tokens"),
        )
        .sort("true_bucket", "predicted_bucket")
    )
    subtitle = (
        f"top-1 accuracy {evaluation.top1_accuracy:.1%}, within one bucket "
        f"{evaluation.within_one_accuracy:.1%}, kappa {evaluation.cohen_kappa:.3f}, "
        f"n = {evaluation.n_requests}"
    )
    return (  # type: ignore[no-any-return]  # altair's typing
        alt.Chart(_inline(data, "confusion_matrix"))
        .mark_rect()
        .encode(
            x=alt.X("predicted_tokens:O", title="predicted bucket (tokens)", sort=labels),
            y=alt.Y("true_tokens:O", title="true bucket (tokens)", sort=labels),
            color=alt.Color(
                "share_of_true:Q",
                title="share of true bucket",
                scale=alt.Scale(domain=[0, 1]),
                legend=alt.Legend(format="%"),
            ),
            tooltip=[
                "true_tokens:O",
                "predicted_tokens:O",
                "n_requests:Q",
                alt.Tooltip("share_of_true:Q", format=".1%"),
            ],
        )
        .properties(
            title=alt.Title(
                f"Output-length predictor ({evaluation.scheme_name})", subtitle=subtitle
            ),
            width=260,
            height=260,
        )
    )


def learning_curve_chart(
    curves: pl.DataFrame, *, title: str = "Training losses (learning curves)"
) -> alt.Chart:
    """RL learning curves: one panel per metric, one line per run.

    Args:
        curves: long frame with ``step`` (int), ``metric`` (str), ``value`` (float)
            and ``run`` (str).
        title: the chart's title (e.g. for validation curves of online fine-tuning).

    Returns:
        A line chart with independent y scales per metric.

    Raises:
        ValueError: on a missing column.

    Example:
        >>> c = pl.DataFrame({"step": [1, 2, 1, 2], "metric": ["loss"] * 4,
        ...                   "value": [1.0, 0.5, 0.9, 0.4], "run": ["a", "a", "b", "b"]})
        >>> learning_curve_chart(c).to_dict()["resolve"]
        {'scale': {'y': 'independent'}}
    """
    _check_columns(curves, ["step", "metric", "value", "run"], where="learning_curve_chart")
    data = curves.select(
        pl.col("run").cast(pl.String),
        pl.col("metric").cast(pl.String),
        pl.col("step").cast(pl.Int64),
        pl.col("value").cast(pl.Float64),
    ).sort("run", "metric", "step")
    return (  # type: ignore[no-any-return]  # altair's typing
        alt.Chart(_inline(data, "learning_curves"))
        .mark_line(point=True)
        .encode(
            x=alt.X("step:Q", title="training step"),
            y=alt.Y("value:Q", title=None),
            color=alt.Color("run:N", title="run"),
            row=alt.Row("metric:N", title=None),
            tooltip=["run:N", "metric:N", "step:Q", alt.Tooltip("value:Q", format=".4g")],
        )
        .properties(title=title, width=_WIDTH, height=140)
        .resolve_scale(y="independent")
    )
