"""Summary statistics of a trace: counts, span, rates, burstiness, token percentiles.

:func:`describe_trace` runs as a few Polars aggregations on a LazyFrame (streaming
engine), so it works on a 30M-row file without loading its rows: only the arrival and
token columns are read, and the per-second counts it keeps have one row per busy second.

Definitions (the same as in ``../shared/data/README.md``):

- ``span_s`` = last arrival - first arrival; ``mean_rate_per_s`` = n / span.
- Rates in 1 s bins start at the first arrival (bin k holds ``[k, k+1)`` s);
  ``peak_rate_per_s`` is the largest bin count. The trace has ``floor(span_s) + 1`` bins;
  ``empty_seconds_share`` is the share with no arrival.
- ``busiest_minute_rate_per_s``: largest count in 60 s bins (from the first arrival) / 60.
- ``interarrival_cv``: standard deviation / mean of the gaps between consecutive
  arrivals (rows in order; sample standard deviation, ddof = 1), computed from
  streamed sums (no ``diff()`` over the whole column).
- Percentiles interpolate linearly between order statistics (numpy's default).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from ._schema import TraceChecker

__all__ = ["TokenStats", "TraceDescription", "describe_trace"]

_QUANTILES = (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenStats:
    """Distribution of one token column.

    Example:
        >>> TokenStats(mean=2.0, p50=2.0, p90=2.8, p99=2.98, max=3).max
        3
    """

    mean: float
    p50: float
    p90: float
    p99: float
    max: int


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceDescription:
    """What :func:`describe_trace` measured (see the module docstring for definitions).

    Attributes:
        n_requests: number of requests.
        span_s: last arrival minus first arrival.
        mean_rate_per_s: requests per second over the span.
        peak_rate_per_s: most arrivals in one 1 s bin.
        busiest_minute_rate_per_s: most arrivals in one 60 s bin, divided by 60.
        empty_seconds_share: share of 1 s bins without arrivals.
        interarrival_cv: coefficient of variation of inter-arrival gaps (nan if < 3 rows).
        prompt_tokens: prompt length distribution.
        output_tokens: output length distribution.
        tasks: ``(task, count)`` pairs, most frequent first; empty without a task column.

    Example:
        >>> import polars as pl
        >>> d = describe_trace(pl.DataFrame({"request_id": [0, 1, 2],
        ...     "arrival_s": [0.0, 0.5, 2.0], "prompt_tokens": [10, 20, 30],
        ...     "output_tokens": [1, 2, 3]}))
        >>> d.n_requests, d.span_s, d.peak_rate_per_s, d.empty_seconds_share
        (3, 2.0, 2, 0.33333333333333337)
    """

    n_requests: int
    span_s: float
    mean_rate_per_s: float
    peak_rate_per_s: int
    busiest_minute_rate_per_s: float
    empty_seconds_share: float
    interarrival_cv: float
    prompt_tokens: TokenStats
    output_tokens: TokenStats
    tasks: tuple[tuple[str, int], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (JSON-ready; nan becomes ``None``)."""
        out = asdict(self)
        out["tasks"] = [{"task": t, "n_requests": n} for t, n in self.tasks]
        for key, value in out.items():
            if isinstance(value, float) and math.isnan(value):
                out[key] = None
        return out

    def to_json(self) -> str:
        """The description as indented JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def to_frame(self) -> pl.DataFrame:
        """One row per metric: ``metric`` (str), ``value`` (f64).

        Token statistics appear as ``prompt_tokens_mean``, ..., tasks as
        ``task_<name>_n_requests``.
        """
        rows: list[tuple[str, float]] = [
            ("n_requests", float(self.n_requests)),
            ("span_s", self.span_s),
            ("mean_rate_per_s", self.mean_rate_per_s),
            ("peak_rate_per_s", float(self.peak_rate_per_s)),
            ("busiest_minute_rate_per_s", self.busiest_minute_rate_per_s),
            ("empty_seconds_share", self.empty_seconds_share),
            ("interarrival_cv", self.interarrival_cv),
        ]
        for column in ("prompt_tokens", "output_tokens"):
            stats: TokenStats = getattr(self, column)
            rows += [(f"{column}_{k}", float(v)) for k, v in asdict(stats).items()]
        rows += [(f"task_{t}_n_requests", float(n)) for t, n in self.tasks]
        return pl.DataFrame(rows, schema={"metric": pl.String, "value": pl.Float64}, orient="row")

    def __str__(self) -> str:
        lines = [
            f"requests            {self.n_requests:,}",
            f"span                {self.span_s:,.1f} s",
            f"rate mean           {self.mean_rate_per_s:,.2f} req/s",
            f"rate peak (1 s)     {self.peak_rate_per_s:,} req/s",
            f"busiest minute      {self.busiest_minute_rate_per_s:,.2f} req/s",
            f"empty seconds       {self.empty_seconds_share:.1%}",
            f"inter-arrival CV    {self.interarrival_cv:.2f}",
            f"{'tokens':<20}{'mean':>10}{'p50':>10}{'p90':>10}{'p99':>10}{'max':>10}",
        ]
        for column in ("prompt_tokens", "output_tokens"):
            s: TokenStats = getattr(self, column)
            lines.append(
                f"{column:<20}{s.mean:>10,.1f}{s.p50:>10,.0f}{s.p90:>10,.0f}"
                f"{s.p99:>10,.0f}{s.max:>10,}"
            )
        if self.tasks:
            lines.append("tasks               " + ", ".join(f"{t} {n:,}" for t, n in self.tasks))
        return "\n".join(lines)


def _token_aggs(column: str) -> list[pl.Expr]:
    col = pl.col(column).cast(pl.Float64)
    return [
        col.mean().alias(f"{column}_mean"),
        pl.col(column).max().cast(pl.Int64).alias(f"{column}_max"),
    ]


def _token_quantiles(lf: pl.LazyFrame, column: str, n: int) -> dict[str, float]:
    """Exact linear-interpolation percentiles from the column's value counts.

    Token counts are integers with few distinct values (at most the longest context),
    so counting values streams in bounded memory where an exact quantile over the raw
    column would hold every row. Same definition as numpy's default: the value at
    position ``(n - 1) q`` of the sorted column, interpolated between neighbours.
    """
    counts = (
        lf.group_by(pl.col(column).cast(pl.Int64).alias("v"))
        .agg(n=pl.len())
        .collect(engine="streaming")
        .sort("v")
    )
    values = counts["v"].to_numpy().astype(np.float64)
    cum = np.cumsum(counts["n"].to_numpy())
    out: dict[str, float] = {}
    for key, q in _QUANTILES:
        h = (n - 1) * q
        lo = math.floor(h)
        x_lo = values[np.searchsorted(cum, lo, side="right")]
        x_hi = values[np.searchsorted(cum, min(lo + 1, n - 1), side="right")]
        out[f"{column}_{key}"] = float(x_lo + (h - lo) * (x_hi - x_lo))
    return out


def _interarrival_cv(lf: pl.LazyFrame, n: int, head_s: float, tail_s: float) -> float:
    """CV of the gaps between consecutive rows' arrivals, in one streaming batch pass.

    The gaps telescope: their mean is ``(tail - head) / (n - 1)`` (first and last row).
    The sum of squared deviations from that mean is accumulated batch by batch (the
    last arrival of a batch carries over), so memory stays bounded where ``diff()``
    would hold the whole column. Sample standard deviation (ddof = 1); nan below 3 rows.
    """
    n_gaps = n - 1
    if n_gaps < 2:
        return math.nan
    mean = (tail_s - head_s) / n_gaps
    if mean == 0:
        return math.nan
    sq = 0.0
    prev: float | None = None
    for batch in lf.select(pl.col("arrival_s").cast(pl.Float64)).collect_batches(
        engine="streaming"
    ):
        a = batch.to_series().to_numpy()
        if a.size == 0:
            continue
        gaps = np.diff(a) if prev is None else np.diff(a, prepend=prev)
        sq += float(np.square(gaps - mean).sum())
        prev = float(a[-1])
    return math.sqrt(sq / (n_gaps - 1)) / mean


def _token_stats(row: dict[str, Any], column: str) -> TokenStats:
    return TokenStats(
        mean=float(row[f"{column}_mean"]),
        p50=float(row[f"{column}_p50"]),
        p90=float(row[f"{column}_p90"]),
        p99=float(row[f"{column}_p99"]),
        max=int(row[f"{column}_max"]),
    )


def _check(lf: pl.LazyFrame, names: list[str]) -> None:
    """Validate the trace before describing it (one streaming pass, validate_trace's messages)."""
    columns = [
        c for c in ("request_id", "arrival_s", "prompt_tokens", "output_tokens") if c in names
    ]
    schema = lf.collect_schema()
    checker = TraceChecker({c: schema[c] for c in columns}, required=())
    # every column is read once (a scan_trace frame then also checks its other columns,
    # e.g. Mooncake's prefix blocks); the checker looks at the canonical ones
    for batch in lf.collect_batches(engine="streaming"):
        checker.feed(batch.select(columns))
    ids = None
    if checker.needs_id_pass:
        ids = lf.select("request_id").collect(engine="streaming").to_series()
    checker.finish(ids)


def describe_trace(trace: pl.DataFrame | pl.LazyFrame) -> TraceDescription:
    """Summarise a trace (canonical columns) without materialising it.

    The trace is validated first, in one streaming pass, with the checks of
    :func:`~routeplay.datasets.validate_trace` on the columns it reads (``request_id``
    when present, ``arrival_s``, the token columns; other columns are not checked), so
    a bad trace raises instead of being described.

    Args:
        trace: a DataFrame or LazyFrame with ``arrival_s``, ``prompt_tokens``,
            ``output_tokens`` (and optionally ``request_id``, ``task``). Arrivals need
            not start at 0.

    Returns:
        A :class:`TraceDescription`.

    Raises:
        ValueError: the trace lacks a needed column.
        TraceSchemaError: the trace is empty or a row is invalid (null, non-integer or
            non-positive token count, negative or non-finite arrival, unsorted arrivals,
            duplicate ids), with the message of ``validate_trace``.

    Example:
        >>> from routeplay.datasets import scan_trace
        >>> d = describe_trace(scan_trace("azure-2023-conv"))
        >>> d.n_requests, round(d.span_s), round(d.prompt_tokens.mean)
        (19366, 3502, 1155)
    """
    lf = trace.lazy()
    names = lf.collect_schema().names()
    missing = [c for c in ("arrival_s", "prompt_tokens", "output_tokens") if c not in names]
    if missing:
        raise ValueError(
            f"describe_trace needs columns {missing} (got {names}). Fix: load the file with "
            "routeplay.datasets.scan_trace or load_trace first."
        )
    _check(lf, names)
    arrival = pl.col("arrival_s")
    summary = (
        lf.select(
            pl.len().alias("n"),
            arrival.min().alias("first_s"),
            arrival.max().alias("last_s"),
            arrival.first().alias("head_s"),
            arrival.last().alias("tail_s"),
            *_token_aggs("prompt_tokens"),
            *_token_aggs("output_tokens"),
        )
        .collect(engine="streaming")
        .row(0, named=True)
    )
    n = int(summary["n"])
    if n == 0:
        raise ValueError("describe_trace got an empty trace (0 rows); nothing to describe.")
    for column in ("prompt_tokens", "output_tokens"):
        summary.update(_token_quantiles(lf, column, n))
    first_s = float(summary["first_s"])
    span_s = float(summary["last_s"]) - first_s
    seconds = (
        lf.select(second=((arrival - first_s).floor()).cast(pl.Int64))
        .group_by("second")
        .agg(n=pl.len())
        .collect(engine="streaming")
    )
    minutes = seconds.group_by(pl.col("second") // 60).agg(pl.col("n").sum())
    n_bins = math.floor(span_s) + 1
    tasks: tuple[tuple[str, int], ...] = ()
    if "task" in names:
        counts = (
            lf.group_by(pl.col("task").cast(pl.String))
            .agg(n=pl.len())
            .sort(["n", "task"], descending=[True, False])
            .collect(engine="streaming")
        )
        tasks = tuple((str(t), int(c)) for t, c in counts.iter_rows())
    cv = _interarrival_cv(lf, n, float(summary["head_s"]), float(summary["tail_s"]))
    return TraceDescription(
        n_requests=n,
        span_s=span_s,
        mean_rate_per_s=n / span_s if span_s > 0 else math.inf,
        peak_rate_per_s=int(seconds["n"].cast(pl.Int64).max() or 0),  # type: ignore[arg-type]
        busiest_minute_rate_per_s=float(minutes["n"].cast(pl.Int64).max() or 0)  # type: ignore[arg-type]
        / 60.0,
        empty_seconds_share=1.0 - seconds.height / n_bins,
        interarrival_cv=cv,
        prompt_tokens=_token_stats(summary, "prompt_tokens"),
        output_tokens=_token_stats(summary, "output_tokens"),
        tasks=tasks,
    )
