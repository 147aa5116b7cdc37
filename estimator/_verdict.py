"""The verdict of a router comparison, in words: who won, by how much, is it real.

:func:`compute_verdict` reads a :class:`~routeplay.estimator.ComparisonResult` (and,
optionally, the per-router summary table and the labels of learned routers) and states:

* which router has the lowest mean and the lowest p99 of the metric (E2E latency by
  default), and that router's change against the baseline with its bootstrap CI and
  Holm-adjusted p-value; when the baseline itself is lowest, the closest router's;
* whether the leader is distinguishable from the runner-up (paired over episodes);
* how each learned router did against the best heuristic (paired over episodes);
* whether the run has enough episodes (:func:`routeplay.estimator.episodes_needed`).

Conventions
-----------
Text shows the *change in latency* ``router / reference - 1``: negative = faster,
``"−1.5 % [−2.0, −1.1]"`` reads "1.5 % lower, 95 % CI 1.1 to 2.0 % lower".
:meth:`Verdict.to_dict` stores ``relative_improvement = 1 - router / reference`` and
its CI, the sign convention of :class:`~routeplay.estimator.RouterComparison`
(positive = faster). A difference is *significant* when its (Holm-adjusted, where
several routers form the family) paired t-test p-value is strictly below
:data:`VERDICT_ALPHA` (0.05). Every paired test runs over episodes, never requests.
"""

# Why this module is long: each statement of the verdict (leader, runner-up, learned
# routers, enough episodes) needs its own small computation and wording, and they share
# the formatting helpers.

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import polars as pl

from ._power import episodes_needed, power_of
from ._stats import compare_routers

if TYPE_CHECKING:
    from ._stats import ComparisonResult

__all__ = [
    "VERDICT_ALPHA",
    "VERDICT_POWER",
    "EpisodeCheck",
    "Leader",
    "PairedChange",
    "Verdict",
    "compute_verdict",
    "format_change",
    "format_p",
    "format_percent",
    "metric_name",
    "statistic_label",
]

#: Significance level of every statement of the verdict (Holm-adjusted p < alpha).
VERDICT_ALPHA = 0.05

#: Power at which :func:`compute_verdict` asks how many episodes an effect needs.
VERDICT_POWER = 0.8

#: Relative tolerance under which two routers' values count as a tie.
TIE_RTOL = 1e-9

_MINUS = "\u2212"

#: metric column -> (words, short name).
_METRIC_NAMES: dict[str, tuple[str, str]] = {
    "e2e_s": ("end-to-end latency", "E2E"),
    "ttft_s": ("time to first token", "TTFT"),
    "tbt_mean_s": ("mean time between tokens", "TBT"),
    "tbt_max_s": ("maximum time between tokens", "max TBT"),
    "queue_wait_s": ("instance queue wait", "queue wait"),
    "router_wait_s": ("router wait", "router wait"),
}


def metric_name(metric: str, *, short: bool = False) -> str:
    """Human name of a latency column.

    Args:
        metric: the column, e.g. ``"e2e_s"``.
        short: the abbreviation (``"E2E"``) instead of the words.

    Returns:
        The name; the column itself when it is not a known latency column.

    Example:
        >>> metric_name("e2e_s"), metric_name("ttft_s", short=True), metric_name("x")
        ('end-to-end latency', 'TTFT', 'x')
    """
    words, abbreviation = _METRIC_NAMES.get(metric, (metric, metric))
    return abbreviation if short else words


def statistic_label(statistic: str, metric: str, *, capital: bool = False) -> str:
    """Short name of a statistic of a metric: ``"mean E2E"``, ``"p99 TTFT"``.

    Args:
        statistic: ``"mean"`` or ``"pXX"``.
        metric: the latency column.
        capital: start with a capital (``"Mean E2E"``; ``"p99"`` stays lower case).

    Returns:
        The label.

    Example:
        >>> statistic_label("mean", "e2e_s", capital=True), statistic_label("p99", "ttft_s")
        ('Mean E2E', 'p99 TTFT')
    """
    word = "Mean" if capital and statistic == "mean" else statistic
    return f"{word} {metric_name(metric, short=True)}"


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _signed(number: float, decimals: int) -> str:
    text = f"{abs(number):.{decimals}f}"
    if float(text) == 0.0:
        return text
    return (_MINUS if number < 0 else "+") + text


def _percent_number(fraction: float | None) -> str:
    if fraction is None or not _finite(fraction):
        return "n/a"
    pct = 100.0 * fraction
    return _signed(pct, 1 if abs(pct) >= 0.1 or pct == 0.0 else 2)


def format_percent(fraction: float | None) -> str:
    """A signed fraction as a percentage: ``-0.0321`` -> ``"−3.2 %"``.

    One decimal (two below 0.1 %), a true minus sign, ``"+"`` for positive values
    and ``"n/a"`` for ``None``/NaN.

    Args:
        fraction: the value (``0.01`` = 1 %).

    Returns:
        The text.

    Example:
        >>> format_percent(-0.0321), format_percent(0.0004), format_percent(None)
        ('−3.2 %', '+0.04 %', 'n/a')
    """
    number = _percent_number(fraction)
    return number if number == "n/a" else f"{number} %"


def format_change(change: float | None, low: float | None, high: float | None) -> str:
    """A change with its interval: ``"−3.2 % [−4.1, −2.3]"`` (percent of the reference).

    Args:
        change: the point estimate (fraction).
        low: the interval's lower end (fraction), or ``None`` for no interval.
        high: the upper end.

    Returns:
        The text; the interval is left out when either end is missing.

    Example:
        >>> format_change(-0.0321, -0.041, -0.023)
        '−3.2 % [−4.1, −2.3]'
        >>> format_change(0.01, None, None)
        '+1.0 %'
    """
    text = format_percent(change)
    if low is None or high is None or not (_finite(low) and _finite(high)):
        return text
    return f"{text} [{_percent_number(low)}, {_percent_number(high)}]"


def format_p(p: float | None, *, label: str = "p") -> str:
    """A p-value for text: ``"p = 0.006"``, ``"p < 0.001"``, ``"p n/a"``.

    Args:
        p: the p-value.
        label: the name shown, e.g. ``"Holm p"``.

    Returns:
        The text (two significant digits).

    Example:
        >>> format_p(0.006054), format_p(0.0001, label="Holm p"), format_p(0.66217)
        ('p = 0.0061', 'Holm p < 0.001', 'p = 0.66')
    """
    if p is None or not _finite(p):
        return f"{label} n/a"
    if p < 0.001:
        return f"{label} < 0.001"
    return f"{label} = {p:.2g}"


def _seconds(value: float) -> str:
    return f"{value:.4g} s"


def _join(names: Sequence[str]) -> str:
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " and " + names[-1]


@dataclass(frozen=True, slots=True, kw_only=True)
class PairedChange:
    """One router against a reference router, on one metric and statistic.

    Attributes:
        router: the router.
        reference: the router it is compared with (the baseline, the runner-up or
            the best heuristic).
        statistic: the per-episode statistic (``"mean"``, ``"p99"``).
        router_value_s: mean over episodes of the router's statistic (seconds).
        reference_value_s: the same for the reference.
        relative_improvement: ``1 - router / reference`` of those means (positive =
            router faster).
        ci_low: lower end of the paired bootstrap interval of ``relative_improvement``
            (``None`` when not tested).
        ci_high: upper end (``None`` when not tested).
        p_value: two-sided paired t-test p-value over episodes, Holm-adjusted when
            ``holm`` (``None`` when not tested).
        holm: whether ``p_value`` is Holm-adjusted (several routers in the family).
        significant: ``p_value < alpha`` (``None`` when not tested).
        n_episodes: paired episodes behind the test (0 when not tested).
    """

    router: str
    reference: str
    statistic: str
    router_value_s: float
    reference_value_s: float
    relative_improvement: float
    ci_low: float | None = None
    ci_high: float | None = None
    p_value: float | None = None
    holm: bool = False
    significant: bool | None = None
    n_episodes: int = 0

    @property
    def change(self) -> float:
        """Change in latency ``router / reference - 1`` (negative = faster)."""
        return -self.relative_improvement

    def change_text(self) -> str:
        """``"−1.5 % [−2.0, −1.1]"``: the change with its CI (when tested)."""
        low = None if self.ci_high is None else -self.ci_high
        high = None if self.ci_low is None else -self.ci_low
        return format_change(self.change, low, high)

    def p_text(self) -> str:
        """``"Holm p = 0.006"`` or ``"p = 0.72"`` (empty when not tested)."""
        if self.significant is None:
            return ""
        return format_p(self.p_value, label="Holm p" if self.holm else "p")

    def outcome(self) -> str:
        """``"significantly faster"``, ``"significantly slower"``, ``"not significant"``."""
        if self.significant is None:
            return "not tested"
        if not self.significant:
            return "not significant"
        return "significantly faster" if self.change < 0 else "significantly slower"

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields (non-finite floats become ``None``)."""
        return _clean_dict(
            {
                "router": self.router,
                "reference": self.reference,
                "statistic": self.statistic,
                "router_value_s": self.router_value_s,
                "reference_value_s": self.reference_value_s,
                "relative_improvement": self.relative_improvement,
                "ci_low": self.ci_low,
                "ci_high": self.ci_high,
                "p_value": self.p_value,
                "p_value_holm_adjusted": self.holm,
                "significant": self.significant,
                "n_episodes": self.n_episodes,
            }
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Leader:
    """The router(s) with the lowest value of one statistic.

    Attributes:
        statistic: ``"mean"`` or ``"p99"``.
        routers: the lowest router, or several on a tie (input order).
        value_s: their value (seconds).
        source: ``"comparison"`` (mean over episodes of the per-episode statistic,
            tested) or ``"summary"`` (the router summary table; not tested).
        versus_baseline: the leader against the baseline; when the baseline leads
            alone, the closest router against it; ``None`` without another router.
        runner_up: the leader against the next-lowest router when neither is the
            baseline (paired over episodes), else ``None``.
    """

    statistic: str
    routers: tuple[str, ...]
    value_s: float
    source: str
    versus_baseline: PairedChange | None
    runner_up: PairedChange | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return _clean_dict(
            {
                "statistic": self.statistic,
                "routers": list(self.routers),
                "value_s": self.value_s,
                "source": self.source,
                "versus_baseline": (
                    None if self.versus_baseline is None else self.versus_baseline.to_dict()
                ),
                "runner_up": None if self.runner_up is None else self.runner_up.to_dict(),
            }
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class EpisodeCheck:
    """Are the episodes enough to detect the observed effect?

    Attributes:
        router: the router whose change against the baseline is checked.
        statistic: the statistic.
        effect: the observed ``relative_improvement`` (``1 - router / baseline`` of the
            episode means, the number the verdict states).
        sd: SD across episodes (ddof=1) of the per-episode ``1 - router / baseline``.
        n_needed: episodes for a paired t-test with :data:`VERDICT_POWER` power at
            ``alpha`` (unadjusted), or ``None`` when it cannot be computed.
        n_episodes: episodes in this run.
        enough: ``n_episodes >= n_needed`` (``None`` when ``n_needed`` is).
        reason: why ``n_needed`` is ``None`` (empty otherwise).
    """

    router: str
    statistic: str
    effect: float
    sd: float
    n_needed: int | None
    n_episodes: int
    enough: bool | None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe fields."""
        return _clean_dict(
            {
                "router": self.router,
                "statistic": self.statistic,
                "effect": self.effect,
                "sd": self.sd,
                "n_needed": self.n_needed,
                "n_episodes": self.n_episodes,
                "enough": self.enough,
                "reason": self.reason,
            }
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Verdict:
    """What a router comparison says, in a sentence and a few lines.

    Build it with :func:`compute_verdict`.

    Attributes:
        metric: the latency column judged (``"e2e_s"``).
        baseline: the baseline router.
        n_episodes: paired episodes of the comparison.
        alpha: significance level (Holm-adjusted p < alpha).
        power: power asked of :func:`~routeplay.estimator.episodes_needed`.
        confidence: coverage of the bootstrap intervals.
        mean: the router(s) with the lowest mean, or ``None``.
        p99: the router(s) with the lowest p99, or ``None``.
        best_heuristic: the non-learned router with the lowest mean (``None``
            without learned routers).
        learned: each learned router against ``best_heuristic``.
        episodes: the power check of the headline's comparison, or ``None``.
        headline: one sentence.
        lines: a few plain-text lines with the numbers.
        method: one line saying how the numbers are computed.
    """

    metric: str
    baseline: str
    n_episodes: int
    alpha: float
    power: float
    confidence: float
    mean: Leader | None
    p99: Leader | None
    best_heuristic: str | None
    learned: tuple[PairedChange, ...]
    episodes: EpisodeCheck | None
    headline: str
    lines: tuple[str, ...]
    method: str

    def to_text(self) -> str:
        """The verdict as plain text for a terminal: the headline, then indented lines.

        Returns:
            A few lines joined by newlines (no HTML, no trailing newline).
        """
        return "\n".join([self.headline, *(f"  {line}" for line in self.lines)])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict for ``summary.json`` (non-finite floats become ``None``).

        Returns:
            Every field; comparisons use ``relative_improvement = 1 - router /
            reference`` (positive = faster), as the comparison table does.
        """
        return _clean_dict(
            {
                "metric": self.metric,
                "baseline": self.baseline,
                "n_episodes": self.n_episodes,
                "alpha": self.alpha,
                "power": self.power,
                "confidence": self.confidence,
                "headline": self.headline,
                "lines": list(self.lines),
                "method": self.method,
                "lowest_mean": None if self.mean is None else self.mean.to_dict(),
                "lowest_p99": None if self.p99 is None else self.p99.to_dict(),
                "best_heuristic": self.best_heuristic,
                "learned": [c.to_dict() for c in self.learned],
                "episodes": None if self.episodes is None else self.episodes.to_dict(),
            }
        )


def _clean_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return {str(k): _clean(v) for k, v in value.items()}


def _clean(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


# --------------------------------------------------------------------------- values


def _values_from_comparison(
    comparison: ComparisonResult, metric: str, statistic: str
) -> dict[str, float]:
    rows = [comparison.get(r, metric, statistic) for r in comparison.routers]
    values = {comparison.baseline: rows[0].baseline_value_s}
    values.update({row.router: row.router_value_s for row in rows})
    return {k: float(v) for k, v in values.items() if _finite(v)}


def _values_from_summary(
    summary: pl.DataFrame | None, metric: str, statistic: str
) -> dict[str, float]:
    column = f"{metric}_{statistic}"
    if summary is None or column not in summary.columns or "router" not in summary.columns:
        return {}
    out: dict[str, float] = {}
    for router, value in summary.select("router", column).iter_rows():
        if router is not None and _finite(value):
            out[str(router)] = float(value)
    return out


def _ordered(values: Mapping[str, float]) -> list[str]:
    """Routers by value, ties kept in input order."""
    return sorted(values, key=lambda r: values[r])


def _tied(a: float, b: float) -> bool:
    return abs(a - b) <= TIE_RTOL * max(abs(a), abs(b))


def _episode_values(
    comparison: ComparisonResult, metric: str, statistic: str, router: str
) -> pl.DataFrame:
    frame = comparison.per_episode.filter(
        (pl.col("metric") == metric) & (pl.col("statistic") == statistic)
    )
    if router == comparison.baseline:
        column = "baseline_value_s"
        frame = frame.filter(pl.col("router") == comparison.routers[0])
    else:
        column = "value_s"
        frame = frame.filter(pl.col("router") == router)
    values: pl.DataFrame = frame.select(
        pl.lit(router).alias("router"), pl.col("episode"), pl.col(column).alias(metric)
    )
    return values


def _paired(
    comparison: ComparisonResult,
    metric: str,
    statistic: str,
    routers: Sequence[str],
    reference: str,
    alpha: float,
) -> dict[str, PairedChange]:
    """Routers against a reference, paired over the comparison's per-episode values.

    Reuses :func:`~routeplay.estimator.compare_routers` on one row per (router,
    episode) holding that episode's statistic: the "mean" of one value is the value,
    so its relative improvement is ``1 - mean_e(router) / mean_e(reference)``, with the
    same paired bootstrap (``n_boot``, ``confidence``, ``seed`` of the comparison), the
    paired t-test and Holm's adjustment across ``routers``.
    """
    frame = pl.concat(
        [_episode_values(comparison, metric, statistic, r) for r in [reference, *routers]]
    )
    result = compare_routers(
        frame,
        baseline=reference,
        metrics=(metric,),
        statistics=("mean",),
        n_boot=comparison.n_boot,
        confidence=comparison.confidence,
        seed=comparison.seed if comparison.seed is not None else 0,
    )
    out = {}
    for router in routers:
        row = result.get(router, metric, "mean")
        p = row.p_ttest_holm
        out[router] = PairedChange(
            router=router,
            reference=reference,
            statistic=statistic,
            router_value_s=row.router_value_s,
            reference_value_s=row.baseline_value_s,
            relative_improvement=row.relative_improvement,
            ci_low=row.ci_low,
            ci_high=row.ci_high,
            p_value=p,
            holm=len(routers) > 1,
            significant=bool(_finite(p) and p < alpha),
            n_episodes=row.n_episodes,
        )
    return out


def _versus_baseline(
    comparison: ComparisonResult, metric: str, statistic: str, router: str, alpha: float
) -> PairedChange:
    row = comparison.get(router, metric, statistic)
    p = row.p_ttest_holm
    return PairedChange(
        router=router,
        reference=comparison.baseline,
        statistic=statistic,
        router_value_s=row.router_value_s,
        reference_value_s=row.baseline_value_s,
        relative_improvement=row.relative_improvement,
        ci_low=row.ci_low,
        ci_high=row.ci_high,
        p_value=p,
        holm=len(comparison.routers) > 1,
        significant=bool(_finite(p) and p < alpha),
        n_episodes=row.n_episodes,
    )


def _leader(
    comparison: ComparisonResult,
    summary: pl.DataFrame | None,
    metric: str,
    statistic: str,
    alpha: float,
    *,
    with_runner_up: bool,
) -> Leader | None:
    baseline = comparison.baseline
    tested = statistic in comparison.statistics
    values = (
        _values_from_comparison(comparison, metric, statistic)
        if tested
        else _values_from_summary(summary, metric, statistic)
    )
    if not values:
        return None
    order = _ordered(values)
    best = values[order[0]]
    leaders = tuple(r for r in values if _tied(values[r], best))  # input order
    others = [r for r in order if r not in leaders]
    # who is set against the baseline: a non-baseline leader, else the closest router
    non_baseline_leaders = [r for r in leaders if r != baseline]
    if non_baseline_leaders:
        challenger: str | None = non_baseline_leaders[0]
    else:
        challenger = next((r for r in others if r != baseline), None)
    versus: PairedChange | None = None
    if challenger is not None and baseline in values:
        if tested:
            versus = _versus_baseline(comparison, metric, statistic, challenger, alpha)
        else:
            versus = PairedChange(
                router=challenger,
                reference=baseline,
                statistic=statistic,
                router_value_s=values[challenger],
                reference_value_s=values[baseline],
                relative_improvement=1.0 - values[challenger] / values[baseline],
            )
    runner_up: PairedChange | None = None
    if with_runner_up and tested and len(leaders) == 1 and leaders[0] != baseline and others:
        second = others[0]
        if second != baseline:
            runner_up = _paired(comparison, metric, statistic, [leaders[0]], second, alpha)[
                leaders[0]
            ]
    return Leader(
        statistic=statistic,
        routers=leaders,
        value_s=best,
        source="comparison" if tested else "summary",
        versus_baseline=versus,
        runner_up=runner_up,
    )


def _episode_check(
    comparison: ComparisonResult,
    metric: str,
    statistic: str,
    router: str,
    alpha: float,
    power: float,
) -> EpisodeCheck:
    # Imported before the filter below: importing it installs an "always" filter for
    # statsmodels' ConvergenceWarning, which would override the "ignore".
    import statsmodels.tools.sm_exceptions  # noqa: F401

    row = comparison.get(router, metric, statistic)
    effect = row.relative_improvement  # the number the verdict states
    sd = row.sd_episode_relative_improvement
    n = comparison.n_episodes
    needed: int | None = None
    reason = ""
    if not (_finite(effect) and _finite(sd)):
        reason = "the per-episode changes are not finite numbers"
    elif effect == 0.0:
        reason = "the observed change is exactly 0: there is no effect to detect"
    elif sd == 0.0:
        needed, reason = 2, ""  # every episode shows the same change: any 2 episodes show it
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels' convergence chatter
            try:
                needed = episodes_needed(effect, sd, alpha=alpha, power=power)
            except ValueError:
                at_two = power_of(effect, sd, 2, alpha=alpha)
                if _finite(at_two) and at_two >= power:
                    needed = 2
                else:
                    reason = (
                        f"statsmodels could not solve for it (effect {effect:.3g}, "
                        f"SD {sd:.3g} across episodes)"
                    )
    return EpisodeCheck(
        router=router,
        statistic=statistic,
        effect=effect,
        sd=sd,
        n_needed=needed,
        n_episodes=n,
        enough=None if needed is None else n >= needed,
        reason=reason,
    )


# --------------------------------------------------------------------------- words


def _label(router: str, baseline: str) -> str:
    return f"{router} (baseline)" if router == baseline else router


def _headline(leader: Leader | None, p99: Leader | None, baseline: str, metric: str) -> str:
    top = leader if leader is not None else p99
    if top is None:
        return (
            f"No router has a finite mean or p99 {metric_name(metric)}: there is nothing to rank."
        )
    what = f"{'mean' if top.statistic == 'mean' else top.statistic} {metric_name(metric)}"
    versus = top.versus_baseline
    if len(top.routers) > 1:
        names = _join([_label(r, baseline) for r in top.routers])
        if baseline in top.routers or versus is None:
            return f"{names} tie for the lowest {what} ({_seconds(top.value_s)})."
        lead = f"{names} tie for the lowest {what}"
    elif top.routers[0] == baseline:
        if versus is None:
            return f"The baseline {baseline} is the only router with a {what}."
        return (
            f"The baseline {baseline} has the lowest {what}; no router beats it "
            f"(closest: {versus.router}, {format_percent(versus.change).lstrip('+')} slower)."
        )
    else:
        lead = f"{top.routers[0]} has the lowest {what}"
    if versus is None:
        return f"{lead} ({_seconds(top.value_s)}); the baseline {baseline} has no value."
    amount = format_percent(-versus.change).lstrip("+")
    lower = f"{lead}, {amount} lower than {baseline}"
    if versus.significant is None:
        return f"{lower} (not tested statistically)."
    if versus.significant:
        return f"{lower} (significant, {versus.p_text()})."
    return f"{lower}, but the difference is not significant ({versus.p_text()})."


def _leader_line(leader: Leader, baseline: str, metric: str) -> str:
    what = statistic_label(leader.statistic, metric, capital=True)
    names = _join([_label(r, baseline) for r in leader.routers])
    verb = "tie at" if len(leader.routers) > 1 else "at"
    head = f"{what}: lowest {names} {verb} {_seconds(leader.value_s)}"
    v = leader.versus_baseline
    if v is None:
        return f"{head}; no other router to compare."
    if v.router in leader.routers:
        compared = f"vs {baseline} {_seconds(v.reference_value_s)}"
    else:
        compared = f"closest {v.router} {_seconds(v.router_value_s)} vs {baseline}"
    if v.significant is None:
        return (
            f"{head}; {compared}: {format_percent(v.change)} (from the router table; "
            f"{leader.statistic} not compared statistically in this run)."
        )
    return f"{head}; {compared}: {v.change_text()}, {v.p_text()}: {v.outcome()}."


def _runner_up_line(leader: Leader) -> str | None:
    r = leader.runner_up
    if r is None:
        return None
    verdict = "a real lead" if r.significant else "too close to call"
    return (
        f"{r.router} vs the runner-up {r.reference} ({_seconds(r.reference_value_s)}): "
        f"{r.change_text()}, {r.p_text()}: {verdict}."
    )


def _learned_line(change: PairedChange, metric: str) -> str:
    what = statistic_label(change.statistic, metric)
    return (
        f"Learned router {change.router}: {what} {_seconds(change.router_value_s)}, "
        f"{change.change_text()} vs the best heuristic {change.reference} "
        f"({_seconds(change.reference_value_s)}), {change.p_text()}: {change.outcome()}."
    )


def _episodes_line(
    check: EpisodeCheck, metric: str, power: float, alpha: float, significant: bool | None = None
) -> str:
    what = statistic_label(check.statistic, metric)
    effect = f"{check.router}'s {format_percent(-check.effect)} in {what}"
    if check.n_needed is None:
        return (
            f"Episodes: this run has {check.n_episodes}; the number needed to detect "
            f"{effect} is unknown: {check.reason}."
        )
    judgement = "enough" if check.enough else "too few, treat the result as preliminary"
    if check.enough and significant is False:
        # the power estimate rests on the few episodes' spread, and the test (on seconds,
        # Holm-adjusted) disagrees: do not call that enough
        judgement = (
            "enough by this estimate, yet the difference is not significant, so the "
            "estimate (from so few episodes) is not to be trusted: run more episodes"
        )
    return (
        f"Episodes: {check.n_needed} would be needed to detect {effect} with "
        f"{100 * power:g} % power (alpha {alpha:g}); this run has {check.n_episodes}: "
        f"{judgement}."
    )


# --------------------------------------------------------------------------- entry


def compute_verdict(
    comparison: ComparisonResult,
    summary: pl.DataFrame | None = None,
    *,
    learned: Iterable[str] = (),
    metric: str = "e2e_s",
    alpha: float = VERDICT_ALPHA,
    power: float = VERDICT_POWER,
) -> Verdict:
    """Say in words which router won, by how much, and whether it is real.

    * Lowest mean and lowest p99 of ``metric``: from the comparison (mean over
      episodes of the per-episode statistic) when it has that statistic, else from
      ``summary`` (``<metric>_mean``/``<metric>_p99`` columns, not tested); values
      within a relative ``1e-9`` tie. The leader's change against the baseline comes
      with the comparison's bootstrap CI and Holm-adjusted t-test p (when the baseline
      leads, the closest router's change is given instead).
    * The mean leader against the runner-up (when neither is the baseline) and each
      learned router against the best heuristic (the non-learned router, baseline
      included, with the lowest mean): ``compare_routers`` on the per-episode values of
      ``comparison.per_episode``, i.e. paired over episodes with the comparison's
      bootstrap settings; Holm-adjusted across the learned routers.
    * :func:`~routeplay.estimator.episodes_needed` for the headline comparison, with the
      observed relative improvement and the SD of its per-episode values (the unadjusted
      ``alpha``: with Holm across several routers the real need is somewhat higher).

    Args:
        comparison: :func:`~routeplay.estimator.compare_routers` result.
        summary: the router summary table (``router_summary_table``), used for a
            statistic the comparison lacks; optional.
        learned: labels of learned routers (each must be a compared router).
        metric: the latency column to judge (must be one of ``comparison.metrics``).
        alpha: significance level (a p-value strictly below it is significant).
        power: power for the episodes check.

    Returns:
        A :class:`Verdict`.

    Raises:
        ValueError: if ``metric`` was not compared, a learned label is not a router of
            the comparison, or ``alpha``/``power`` are outside (0, 1).

    Example:
        >>> import polars as pl
        >>> from routeplay.estimator import compare_routers
        >>> frame = pl.DataFrame({"router": ["rr"] * 4 + ["jsq"] * 4,
        ...     "episode": [0, 1, 2, 3] * 2,
        ...     "e2e_s": [2.0, 2.2, 1.9, 2.1, 1.8, 2.05, 1.75, 1.9]})
        >>> v = compute_verdict(compare_routers(frame, baseline="rr", n_boot=200,
        ...                                     statistics=("mean",)))
        >>> print(v.headline)  # doctest: +NORMALIZE_WHITESPACE
        jsq has the lowest mean end-to-end latency, 8.5 % lower than rr
        (significant, p = 0.0012).
        >>> print(v.to_text())  # doctest: +NORMALIZE_WHITESPACE
        jsq has the lowest mean end-to-end latency, 8.5 % lower than rr
        (significant, p = 0.0012).
          Mean E2E: lowest jsq at 1.875 s; vs rr 2.05 s: −8.5 % [−9.8, −7.3],
          p = 0.0012: significantly faster.
          Episodes: 2 would be needed to detect jsq's −8.5 % in mean E2E with 80 % power
          (alpha 0.05); this run has 4: enough.
    """
    if metric not in comparison.metrics:
        raise ValueError(
            f"compute_verdict: metric {metric!r} was not compared; the comparison has "
            f"metrics {list(comparison.metrics)}. Fix: pass metric= one of them, or add "
            f"{metric!r} to compare_routers(metrics=...)."
        )
    for name, value in (("alpha", alpha), ("power", power)):
        if not 0.0 < value < 1.0:
            raise ValueError(
                f"compute_verdict: {name} = {value!r}; expected a number in (0, 1), "
                f"e.g. {VERDICT_ALPHA if name == 'alpha' else VERDICT_POWER}."
            )
    learned_routers = tuple(dict.fromkeys(str(r) for r in learned))
    unknown = [r for r in learned_routers if r not in comparison.routers]
    if unknown:
        raise ValueError(
            f"compute_verdict: learned router(s) {unknown} are not compared routers "
            f"{list(comparison.routers)} (baseline {comparison.baseline!r}). Fix: pass the "
            "labels the learned routers were replayed under."
        )
    baseline = comparison.baseline
    mean = _leader(comparison, summary, metric, "mean", alpha, with_runner_up=True)
    p99 = _leader(comparison, summary, metric, "p99", alpha, with_runner_up=False)

    learned_changes: tuple[PairedChange, ...] = ()
    best_heuristic: str | None = None
    learned_stat = "mean" if "mean" in comparison.statistics else comparison.statistics[0]
    if learned_routers:
        values = _values_from_comparison(comparison, metric, learned_stat)
        heuristics = [r for r in _ordered(values) if r not in learned_routers]
        testable = [r for r in learned_routers if r in values]
        if heuristics and testable:
            best_heuristic = heuristics[0]
            paired = _paired(comparison, metric, learned_stat, testable, best_heuristic, alpha)
            learned_changes = tuple(paired[r] for r in testable)

    top = mean if mean is not None else p99
    episodes: EpisodeCheck | None = None
    if (
        top is not None
        and top.source == "comparison"
        and top.versus_baseline is not None
        and top.statistic in comparison.statistics
    ):
        episodes = _episode_check(
            comparison, metric, top.statistic, top.versus_baseline.router, alpha, power
        )

    lines: list[str] = []
    for leader in (mean, p99):
        if leader is None:
            continue
        lines.append(_leader_line(leader, baseline, metric))
        runner = _runner_up_line(leader)
        if runner:
            lines.append(runner)
    lines += [_learned_line(c, metric) for c in learned_changes]
    if learned_routers and not learned_changes:
        lines.append(
            f"Learned router(s) {_join(list(learned_routers))}: no heuristic with a value "
            "to compare with."
        )
    if episodes is not None:
        change = top.versus_baseline if top is not None else None
        significant = change.significant if change is not None else None
        lines.append(_episodes_line(episodes, metric, power, alpha, significant))
    level = f"{100 * comparison.confidence:g} %"
    method = (
        f"Change = router / reference − 1 of the per-episode statistic, averaged over "
        f"{comparison.n_episodes} paired episodes (negative = faster); [{level} CI]: paired "
        f"bootstrap over episodes; significant: paired t-test over episodes, p < {alpha:g} "
        "(Holm-adjusted across the routers compared with the same reference)."
    )
    return Verdict(
        metric=metric,
        baseline=baseline,
        n_episodes=comparison.n_episodes,
        alpha=alpha,
        power=power,
        confidence=comparison.confidence,
        mean=mean,
        p99=p99,
        best_heuristic=best_heuristic,
        learned=learned_changes,
        episodes=episodes,
        headline=_headline(mean, p99, baseline, metric),
        lines=tuple(lines),
        method=method,
    )
