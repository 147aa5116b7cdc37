"""Is a router's latency improvement real? Paired comparisons over episodes.

Why episodes, not requests, are the unit of replication
-------------------------------------------------------
Inside one replay, requests share queues: a burst of long prompts delays every request
queued behind it, on the same instance and (through the router queue) on the others. So
per-request latencies of one replay are strongly positively autocorrelated, and two
routers replayed on the same trace differ mostly through a handful of congestion
episodes. A t-test over thousands of requests treats them as independent and reports
p-values that are orders of magnitude too small. The independent replicates are
*episodes*: disjoint trace windows, or replays of a trace under different seeds.

:func:`compare_routers` therefore computes each statistic (mean, p50, p99, ...) *within*
each episode, pairs router and baseline on the same episode (same requests, same
arrivals: the between-episode variation cancels), and tests the per-episode differences
across episodes. When only one long replay exists, use
:func:`~routeplay.estimator.moving_block_bootstrap` instead.

Sign conventions
----------------
* ``difference_s = baseline - router`` (per episode, seconds);
* ``relative_improvement = 1 - router / baseline``;

both positive when the router is better (lower latency). ``0.08`` reads "8 % lower
latency than the baseline".
"""

# Why this module is long: the paired comparison, its statistics and its result table
# are one method (docs/design.md, statistics).

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from ._bootstrap import (
    _check_bootstrap_args,
    _generator,
    paired_episode_bootstrap,
    parse_statistic,
)

__all__ = ["ComparisonResult", "RouterComparison", "compare_routers", "holm_adjust"]

FloatArray = npt.NDArray[np.float64]


def holm_adjust(p_values: npt.ArrayLike) -> FloatArray:
    """Holm (1979) step-down adjusted p-values (family-wise error rate control).

    Sort the ``m`` p-values ascending, multiply the ``i``-th smallest (0-based) by
    ``m - i``, take the running maximum so the adjusted values keep the order, and cap
    at 1. Rejecting every hypothesis with adjusted p <= alpha controls the probability
    of any false rejection at alpha, under any dependence between the tests.

    Args:
        p_values: 1-D p-values in [0, 1] (no NaN).

    Returns:
        The adjusted p-values, in the input's order.

    Raises:
        ValueError: for NaN, values outside [0, 1] or a non-1-D input.

    Example:
        >>> holm_adjust([0.01, 0.04, 0.03]).round(4).tolist()
        [0.03, 0.06, 0.06]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"holm_adjust expects a 1-D array of p-values, got shape {p.shape}")
    if np.any(np.isnan(p)) or np.any((p < 0.0) | (p > 1.0)):
        raise ValueError(f"holm_adjust expects p-values in [0, 1] without NaN, got {p.tolist()}")
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = (m - np.arange(m)) * p[order]
    adjusted_sorted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    adjusted = np.empty(m, dtype=np.float64)
    adjusted[order] = adjusted_sorted
    return adjusted


@dataclass(frozen=True, slots=True, kw_only=True)
class RouterComparison:
    """One router vs the baseline for one metric and one statistic.

    All latency values are seconds. ``*_value_s`` are means over episodes of the
    per-episode statistic.

    Attributes:
        router: the compared router.
        metric: the latency column, e.g. ``"e2e_s"``.
        statistic: ``"mean"`` or ``"pXX"``, computed within each episode.
        n_episodes: number of paired episodes.
        baseline_value_s: mean over episodes of the baseline's statistic.
        router_value_s: mean over episodes of the router's statistic.
        mean_difference_s: mean of ``baseline - router`` (positive = router better).
        relative_improvement: ``1 - router_value_s / baseline_value_s`` (the estimand of
            the bootstrap interval; positive = router better).
        ci_low: lower end of the paired episode-bootstrap percentile interval.
        ci_high: upper end.
        mean_episode_relative_improvement: mean over episodes of ``1 - router / baseline``.
        sd_episode_relative_improvement: sample SD (ddof=1) of those per-episode values
            (what :func:`~routeplay.estimator.episodes_needed` takes).
        n_episodes_improved: episodes where the router's statistic is lower.
        t_statistic: paired t statistic of ``baseline - router``.
        p_ttest: two-sided paired t-test p-value.
        p_ttest_holm: Holm-adjusted across the routers of this (metric, statistic).
        wilcoxon_statistic: Wilcoxon signed-rank statistic (scipy's).
        p_wilcoxon: two-sided Wilcoxon signed-rank p-value.
        p_wilcoxon_holm: Holm-adjusted across the routers of this (metric, statistic).
        cohens_dz: mean / SD (ddof=1) of the paired differences.
    """

    router: str
    metric: str
    statistic: str
    n_episodes: int
    baseline_value_s: float
    router_value_s: float
    mean_difference_s: float
    relative_improvement: float
    ci_low: float
    ci_high: float
    mean_episode_relative_improvement: float
    sd_episode_relative_improvement: float
    n_episodes_improved: int
    t_statistic: float
    p_ttest: float
    p_ttest_holm: float
    wilcoxon_statistic: float
    p_wilcoxon: float
    p_wilcoxon_holm: float
    cohens_dz: float


_COMPARISON_SCHEMA: dict[str, type[pl.DataType]] = {
    "router": pl.String,
    "metric": pl.String,
    "statistic": pl.String,
    "n_episodes": pl.Int64,
    "baseline_value_s": pl.Float64,
    "router_value_s": pl.Float64,
    "mean_difference_s": pl.Float64,
    "relative_improvement": pl.Float64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "mean_episode_relative_improvement": pl.Float64,
    "sd_episode_relative_improvement": pl.Float64,
    "n_episodes_improved": pl.Int64,
    "t_statistic": pl.Float64,
    "p_ttest": pl.Float64,
    "p_ttest_holm": pl.Float64,
    "wilcoxon_statistic": pl.Float64,
    "p_wilcoxon": pl.Float64,
    "p_wilcoxon_holm": pl.Float64,
    "cohens_dz": pl.Float64,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ComparisonResult:
    """Routers compared with a baseline over paired episodes (see :func:`compare_routers`).

    Attributes:
        baseline: the baseline router.
        routers: the compared routers (baseline excluded), in input order.
        metrics: the latency columns compared.
        statistics: the per-episode statistics.
        episodes: the paired episode ids, sorted.
        confidence: coverage of the bootstrap intervals.
        n_boot: number of bootstrap resamples.
        seed: the seed, or ``None`` when a Generator was passed.
        comparisons: one :class:`RouterComparison` per router x metric x statistic.
        per_episode: tidy frame, one row per router x metric x statistic x episode:
            ``value_s``, ``baseline_value_s``, ``difference_s`` (baseline - router),
            ``relative_improvement`` (1 - router / baseline), ``n_values`` and
            ``n_null`` (the router's requests in the episode with/without a value).
    """

    baseline: str
    routers: tuple[str, ...]
    metrics: tuple[str, ...]
    statistics: tuple[str, ...]
    episodes: tuple[int, ...]
    confidence: float
    n_boot: int
    seed: int | None
    comparisons: tuple[RouterComparison, ...]
    per_episode: pl.DataFrame

    @property
    def n_episodes(self) -> int:
        """Number of paired episodes."""
        return len(self.episodes)

    def get(self, router: str, metric: str = "e2e_s", statistic: str = "mean") -> RouterComparison:
        """The comparison of one router for one metric and statistic.

        Args:
            router: a compared router (not the baseline).
            metric: a compared metric column.
            statistic: a compared statistic.

        Returns:
            The matching :class:`RouterComparison`.

        Raises:
            KeyError: if no comparison matches; the message lists what exists.
        """
        for row in self.comparisons:
            if (row.router, row.metric, row.statistic) == (router, metric, statistic):
                return row
        raise KeyError(
            f"no comparison for router={router!r}, metric={metric!r}, statistic={statistic!r}; "
            f"routers={list(self.routers)}, metrics={list(self.metrics)}, "
            f"statistics={list(self.statistics)} (the baseline {self.baseline!r} is not "
            "compared with itself)"
        )

    def to_frame(self) -> pl.DataFrame:
        """Tidy frame: one row per router x metric x statistic, columns as the fields.

        Returns:
            A polars DataFrame with the fields of :class:`RouterComparison`.
        """
        rows = [{name: getattr(c, name) for name in _COMPARISON_SCHEMA} for c in self.comparisons]
        return pl.DataFrame(rows, schema=_COMPARISON_SCHEMA)

    def summary(self) -> str:
        """A plain-text table for logs and notebooks.

        Returns:
            The table as a string (one line per router x metric x statistic).
        """
        level = f"{100 * self.confidence:g}%"
        lines = [
            f"baseline: {self.baseline}   episodes: {self.n_episodes}   bootstrap: "
            f"{self.n_boot} paired resamples of episodes, seed={self.seed}",
            "relative improvement = 1 - router/baseline (positive = router faster); "
            "p-values two-sided over episodes, Holm-adjusted across routers",
            "",
        ]
        header = (
            f"{'router':<16} {'metric':<11} {'stat':<6} {'baseline_s':>10} {'router_s':>10} "
            f"{'rel.impr':>8} {level + ' CI':>19} {'p_t':>8} {'p_t_holm':>8} "
            f"{'p_wil':>8} {'p_w_holm':>8} {'d_z':>6}"
        )
        lines += [header, "-" * len(header)]
        for c in self.comparisons:
            ci = f"[{c.ci_low:+.2%}, {c.ci_high:+.2%}]"
            lines.append(
                f"{c.router:<16.16} {c.metric:<11.11} {c.statistic:<6.6} "
                f"{c.baseline_value_s:>10.4g} {c.router_value_s:>10.4g} "
                f"{c.relative_improvement:>+8.2%} {ci:>19} {c.p_ttest:>8.2g} "
                f"{c.p_ttest_holm:>8.2g} {c.p_wilcoxon:>8.2g} {c.p_wilcoxon_holm:>8.2g} "
                f"{c.cohens_dz:>6.2f}"
            )
        return "\n".join(lines)

    def to_markdown(
        self,
        metric: str = "e2e_s",
        statistic: str = "mean",
        *,
        published: Mapping[str, str] | None = None,
        unit: str = "s",
    ) -> str:
        """A markdown table of one metric and statistic: value and improvement per router.

        Columns: the router's statistic, the relative improvement over the baseline
        with its bootstrap CI, the Holm-adjusted paired t-test and Wilcoxon p-values,
        and how many episodes improved; ``published`` adds a column of figures quoted
        per router (a paper's). The baseline is the first row.

        Args:
            metric: a compared metric column.
            statistic: a compared statistic.
            published: router -> text of the extra ``published`` column.
            unit: unit shown in the value column's header.

        Returns:
            The table (no trailing newline).

        Example:
            >>> import polars as pl
            >>> from routeplay.estimator import compare_routers
            >>> f = pl.DataFrame({"router": ["rr"] * 3 + ["mm"] * 3, "episode": [0, 1, 2] * 2,
            ...                   "e2e_s": [2.0, 3.0, 4.0, 1.0, 2.5, 3.0]})
            >>> print(compare_routers(f, baseline="rr", n_boot=100, seed=0).to_markdown())
            | router | mean e2e_s (s) | improvement over rr | 95 % CI | ... | episodes better |
            |---|---|---|---|---|---|---|
            | rr | 3.000 | (baseline) | | | | |
            | mm | 2.167 | 27.78 % | [16.67 %, 50.00 %] | 0.038 | 0.25 | 3/3 |
        """

        def pct(x: float) -> str:
            return f"{100.0 * x:.2f} %"

        def p(x: float) -> str:
            return f"{x:.2g}"

        head = (
            f"| router | {statistic} {metric} ({unit}) | improvement over {self.baseline} "
            f"| {int(100 * self.confidence)} % CI | p t-test (Holm) | p Wilcoxon (Holm) "
            "| episodes better |"
        )
        sep = "|---|---|---|---|---|---|---|"
        if published is not None:
            head += " published |"
            sep += "---|"
        first = self.get(self.routers[0], metric, statistic)
        base_row = f"| {self.baseline} | {first.baseline_value_s:.3f} | (baseline) | | | | |"
        if published is not None:
            base_row += " |"
        lines = [head, sep, base_row]
        for router in self.routers:
            c = self.get(router, metric, statistic)
            row = (
                f"| {router} | {c.router_value_s:.3f} | {pct(c.relative_improvement)} "
                f"| [{pct(c.ci_low)}, {pct(c.ci_high)}] | {p(c.p_ttest_holm)} "
                f"| {p(c.p_wilcoxon_holm)} | {c.n_episodes_improved}/{c.n_episodes} |"
            )
            if published is not None:
                row += f" {published.get(router, '')} |"
            lines.append(row)
        return "\n".join(lines)


def _as_frame(results: pl.DataFrame | Mapping[str, pl.DataFrame], router_col: str) -> pl.DataFrame:
    if isinstance(results, pl.DataFrame):
        return results
    if not isinstance(results, Mapping):
        raise TypeError(
            "results must be a polars DataFrame with a router column or a dict "
            f"{{router: frame}}, got {type(results).__name__}"
        )
    frames = []
    for name, frame in results.items():
        if not isinstance(frame, pl.DataFrame):
            raise TypeError(
                f"results[{name!r}] must be a polars DataFrame, got {type(frame).__name__}"
            )
        if router_col in frame.columns:
            other = frame.filter(pl.col(router_col) != name).height
            if other:
                raise ValueError(
                    f"results[{name!r}] has a {router_col!r} column with {other} row(s) naming "
                    f"another router; drop that column or make it equal to {name!r}"
                )
            frame = frame.drop(router_col)
        frames.append(frame.with_columns(pl.lit(name, dtype=pl.String).alias(router_col)))
    if not frames:
        raise ValueError("results is an empty dict; pass {router: per-request frame, ...}")
    return pl.concat(frames, how="diagonal_relaxed")


def _check_columns(
    frame: pl.DataFrame, router_col: str, episode_col: str, metrics: Sequence[str]
) -> None:
    for col, what in ((router_col, "router_col"), (episode_col, "episode_col")):
        if col not in frame.columns:
            raise ValueError(
                f"results has no column {col!r} ({what}); columns are {frame.columns}. "
                f"Pass {what}=... naming the column"
            )
        n_null = frame[col].null_count()
        if n_null:
            raise ValueError(f"column {col!r} has {n_null} null value(s); every row needs one")
    if not frame.schema[episode_col].is_integer():
        raise ValueError(
            f"episode column {episode_col!r} must hold integers, got {frame.schema[episode_col]}"
        )
    for metric in metrics:
        if metric not in frame.columns:
            raise ValueError(
                f"results has no metric column {metric!r}; columns are {frame.columns}"
            )
        if not frame.schema[metric].is_numeric():
            raise ValueError(
                f"metric column {metric!r} must be numeric (seconds), got {frame.schema[metric]}"
            )
        n_nan = frame.select(pl.col(metric).cast(pl.Float64).is_nan().sum()).item()
        if n_nan:
            raise ValueError(
                f"metric column {metric!r} holds {n_nan} NaN value(s); a latency is either a "
                "number or null (e.g. tbt_mean_s of a 1-token request), never NaN"
            )


def _check_pairing(
    frame: pl.DataFrame, baseline: str, routers: Sequence[str], router_col: str, episode_col: str
) -> list[int]:
    episode_sets = {
        str(key[0]): set(group[episode_col].to_list())
        for key, group in frame.group_by(router_col, maintain_order=True)
    }
    base_set = episode_sets[baseline]
    for router in routers:
        got = episode_sets[router]
        missing = sorted(base_set - got)
        extra = sorted(got - base_set)
        if missing or extra:
            raise ValueError(
                f"router {router!r} is not paired with baseline {baseline!r}: episodes missing "
                f"from {router!r}: {missing}; episodes {router!r} has that {baseline!r} lacks: "
                f"{extra}. Replay every router on exactly the baseline's episodes (same trace "
                "windows / seeds), or drop the unmatched episodes from all routers"
            )
    episodes = sorted(int(e) for e in base_set)
    if len(episodes) < 2:
        raise ValueError(
            f"compare_routers needs at least 2 paired episodes, got {len(episodes)} "
            f"(episodes {episodes}). Requests inside one replay are not the unit of "
            "replication: they share queues, so their latencies are autocorrelated and a test "
            "over requests overstates significance. Replay more trace windows or seeds, or use "
            "moving_block_bootstrap for a single long replay"
        )
    return episodes


def _stat_expr(metric: str, statistic: str) -> pl.Expr:
    level = parse_statistic(statistic)
    col = pl.col(metric).cast(pl.Float64)
    expr = col.mean() if level is None else col.quantile(level, interpolation="linear")
    return expr.alias(f"{metric}|{statistic}")


def _paired_tests(base: FloatArray, values: FloatArray) -> tuple[float, float, float, float, float]:
    """(t, p_t, wilcoxon W, p_wilcoxon, d_z) of ``base - values``, degenerate cases handled."""
    from scipy import stats  # lazy: scipy.stats is most of this package's import time

    diff = base - values
    mean = float(diff.mean())
    sd = float(diff.std(ddof=1))
    if np.all(diff == 0.0):
        # No episode differs: no evidence of a difference at all.
        return 0.0, 1.0, 0.0, 1.0, 0.0
    if sd == 0.0:
        # Every episode differs by the same non-zero amount: t is infinite.
        t_stat, p_t, d_z = math.copysign(math.inf, mean), 0.0, math.copysign(math.inf, mean)
    else:
        res_t = stats.ttest_rel(base, values)
        t_stat, p_t, d_z = float(res_t.statistic), float(res_t.pvalue), mean / sd
    res_w = stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided", method="auto")
    return t_stat, p_t, float(res_w.statistic), float(res_w.pvalue), d_z


def compare_routers(
    results: pl.DataFrame | Mapping[str, pl.DataFrame],
    *,
    baseline: str,
    metrics: Sequence[str] = ("e2e_s",),
    statistics: Sequence[str] = ("mean", "p50", "p99"),
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    router_col: str = "router",
    episode_col: str = "episode",
) -> ComparisonResult:
    """Compare routers with a baseline, paired over episodes.

    Requests are NOT the unit of replication: within one replay they share queues, so
    their latencies are autocorrelated and a test over requests overstates significance.
    Each statistic is therefore computed within each episode (a trace window or a seed),
    router and baseline are paired on the same episode, and every test runs over
    episodes. Per router, metric and statistic:

    * per-episode ``difference_s = baseline - router`` and ``relative_improvement =
      1 - router / baseline`` (positive = router better), in ``per_episode``;
    * ``relative_improvement = 1 - mean_e(router) / mean_e(baseline)`` (ratio of the
      episode means: the "x % lower mean/p99 E2E" headline; it weights episodes equally
      and is less biased than a mean of ratios) with a paired percentile bootstrap CI:
      episodes are resampled with replacement, the same episodes for router and
      baseline. One set of ``n_boot`` resamples (from ``seed``) is shared by all routers,
      metrics and statistics, so a router's interval does not change when another router
      is added. With few episodes (< ~10) percentile intervals undercover; trust the
      t-test more there. ``mean_episode_relative_improvement`` (mean of per-episode
      ratios) and its SD are reported too (the SD feeds ``episodes_needed``);
    * paired t-test (``scipy.stats.ttest_rel(baseline, router)``) and Wilcoxon
      signed-rank (``scipy.stats.wilcoxon`` of the differences, ``zero_method="wilcox"``:
      episodes with a zero difference are dropped; exact distribution for small samples
      without ties/zeros), both two-sided. If every difference is exactly 0 both p-values
      are 1 and ``t = d_z = 0``; if all differences are equal and non-zero, ``t`` and
      ``d_z`` are infinite and ``p_t = 0``;
    * Holm-adjusted p-values across the compared routers, one family per
      (metric, statistic) and per test;
    * Cohen's ``d_z`` = mean / SD (ddof=1) of the paired differences.

    Null metric values (e.g. ``tbt_mean_s`` of a 1-token request) are ignored when a
    statistic is computed, with a warning giving their count; ``per_episode`` records
    ``n_null``. NaN is rejected.

    Args:
        results: per-request results concatenated over routers and episodes, with columns
            ``router_col``, ``episode_col`` (int) and the metric columns (seconds); or a
            dict ``{router: frame with an episode column}``.
        baseline: the router every other router is compared with.
        metrics: latency columns, e.g. ``("e2e_s", "ttft_s", "tbt_mean_s")``.
        statistics: per-episode statistics: ``"mean"`` or ``"pXX"`` (linear interpolation).
        n_boot: bootstrap resamples (>= 100).
        confidence: coverage of the bootstrap intervals.
        seed: int seed (``SeedSequence``) or a numpy Generator.
        router_col: name of the router column.
        episode_col: name of the episode column.

    Returns:
        A :class:`ComparisonResult`.

    Raises:
        ValueError: for a missing column, an unknown baseline or statistic, routers whose
            episode set differs from the baseline's (the message names the router and the
            episodes), fewer than 2 episodes, NaN latencies, an episode without any value
            of a metric, or a non-positive baseline statistic.

    Example:
        >>> import polars as pl
        >>> frame = pl.DataFrame({
        ...     "router": ["rr"] * 6 + ["jsq"] * 6,
        ...     "episode": [0, 0, 1, 1, 2, 2] * 2,
        ...     "e2e_s": [1.0, 3.0, 2.0, 2.0, 4.0, 2.0, 0.9, 2.7, 1.8, 1.8, 3.7, 1.7],
        ... })
        >>> res = compare_routers(frame, baseline="rr", statistics=("mean",), n_boot=200)
        >>> row = res.get("jsq")
        >>> round(row.relative_improvement, 4), round(row.mean_difference_s, 4)
        (0.1, 0.2333)
        >>> res.to_frame().select("router", "metric", "statistic").row(0)
        ('jsq', 'e2e_s', 'mean')
    """
    metrics = tuple(metrics)
    statistics = tuple(statistics)
    if not metrics or len(set(metrics)) != len(metrics):
        raise ValueError(f"metrics must be non-empty and unique, got {list(metrics)}")
    if not statistics or len(set(statistics)) != len(statistics):
        raise ValueError(f"statistics must be non-empty and unique, got {list(statistics)}")
    for statistic in statistics:
        parse_statistic(statistic)
    _check_bootstrap_args(n_boot, confidence)
    rng = _generator(seed)

    frame = _as_frame(results, router_col)
    _check_columns(frame, router_col, episode_col, metrics)
    all_routers = [str(r) for r in frame[router_col].unique(maintain_order=True).to_list()]
    if baseline not in all_routers:
        raise ValueError(f"baseline {baseline!r} is not among the routers {all_routers}")
    routers = [r for r in all_routers if r != baseline]
    if not routers:
        raise ValueError(
            f"results hold only the baseline {baseline!r}; add at least one other router"
        )
    episodes = _check_pairing(frame, baseline, routers, router_col, episode_col)

    null_counts = {m: frame[m].null_count() for m in metrics}
    if any(null_counts.values()):
        described = ", ".join(f"{m}: {n}" for m, n in null_counts.items() if n)
        warnings.warn(
            f"ignoring null metric values ({described} of {frame.height} rows) when computing "
            "per-episode statistics; tbt_mean_s is null for 1-token requests by design",
            stacklevel=2,
        )

    aggs: list[pl.Expr] = []
    for metric in metrics:
        aggs += [
            pl.col(metric).count().alias(f"{metric}|n_values"),
            pl.col(metric).null_count().alias(f"{metric}|n_null"),
        ]
        aggs += [_stat_expr(metric, s) for s in statistics]
    table = frame.group_by(router_col, episode_col).agg(aggs).sort(router_col, episode_col)

    for metric in metrics:
        empty = table.filter(pl.col(f"{metric}|n_values") == 0)
        if empty.height:
            r, e = empty.row(0, named=True)[router_col], empty.row(0, named=True)[episode_col]
            raise ValueError(
                f"router {r!r} has no non-null {metric!r} value in episode {e} "
                f"({empty.height} such router/episode pair(s)); a statistic of an empty "
                "episode is undefined: drop the episode for all routers or choose another metric"
            )

    def column(router: str, name: str) -> FloatArray:
        sub = table.filter(pl.col(router_col) == router).sort(episode_col)
        return sub[name].cast(pl.Float64).to_numpy()

    indices = rng.integers(0, len(episodes), size=(n_boot, len(episodes)))
    comparisons: list[RouterComparison] = []
    per_episode_parts: list[pl.DataFrame] = []
    for metric in metrics:
        for statistic in statistics:
            key = f"{metric}|{statistic}"
            base = column(baseline, key)
            if np.any(base <= 0.0):
                bad = [episodes[i] for i in np.flatnonzero(base <= 0.0)]
                raise ValueError(
                    f"baseline {baseline!r} has a non-positive {statistic} {metric} in episodes "
                    f"{bad}; relative improvements need positive baseline latencies"
                )
            rows: list[dict[str, float | int | str]] = []
            for router in routers:
                values = column(router, key)
                diff = base - values
                rel = 1.0 - values / base
                t_stat, p_t, w_stat, p_w, d_z = _paired_tests(base, values)
                ci_low, ci_high = paired_episode_bootstrap(base, values, indices, confidence)
                rows.append(
                    {
                        "router": router,
                        "metric": metric,
                        "statistic": statistic,
                        "n_episodes": len(episodes),
                        "baseline_value_s": float(base.mean()),
                        "router_value_s": float(values.mean()),
                        "mean_difference_s": float(diff.mean()),
                        "relative_improvement": float(1.0 - values.mean() / base.mean()),
                        "ci_low": ci_low,
                        "ci_high": ci_high,
                        "mean_episode_relative_improvement": float(rel.mean()),
                        "sd_episode_relative_improvement": float(rel.std(ddof=1)),
                        "n_episodes_improved": int(np.count_nonzero(diff > 0.0)),
                        "t_statistic": t_stat,
                        "p_ttest": p_t,
                        "wilcoxon_statistic": w_stat,
                        "p_wilcoxon": p_w,
                        "cohens_dz": d_z,
                    }
                )
                per_episode_parts.append(
                    pl.DataFrame(
                        {
                            "router": router,
                            "metric": metric,
                            "statistic": statistic,
                            "episode": episodes,
                            "value_s": values,
                            "baseline_value_s": base,
                            "difference_s": diff,
                            "relative_improvement": rel,
                            "n_values": column(router, f"{metric}|n_values").astype(np.int64),
                            "n_null": column(router, f"{metric}|n_null").astype(np.int64),
                        },
                        schema_overrides={"episode": pl.Int64},
                    )
                )
            p_t_holm = holm_adjust([float(r["p_ttest"]) for r in rows])
            p_w_holm = holm_adjust([float(r["p_wilcoxon"]) for r in rows])
            for row, pth, pwh in zip(rows, p_t_holm, p_w_holm, strict=True):
                comparisons.append(
                    RouterComparison(
                        p_ttest_holm=float(pth),
                        p_wilcoxon_holm=float(pwh),
                        **row,  # type: ignore[arg-type]
                    )
                )
    return ComparisonResult(
        baseline=baseline,
        routers=tuple(routers),
        metrics=metrics,
        statistics=statistics,
        episodes=tuple(episodes),
        confidence=confidence,
        n_boot=int(n_boot),
        seed=None if isinstance(seed, np.random.Generator) else int(seed),
        comparisons=tuple(comparisons),
        per_episode=pl.concat(per_episode_parts),
    )
