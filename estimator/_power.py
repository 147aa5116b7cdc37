"""How many episodes does a given latency improvement need? (paired t-test power).

The test behind the numbers is a paired t-test over episodes on the per-episode relative
improvement ``1 - router / baseline``: the standardised effect is
``d = effect / sd_of_relative_differences`` and the power is that of a one-sample t-test
of ``d`` with ``n_episodes - 1`` degrees of freedom (statsmodels ``TTestPower``).
:func:`~routeplay.estimator.compare_routers` tests the absolute differences
``baseline - router``; when the baseline's statistic varies little across episodes the two
tests coincide (relative difference = absolute difference / a near-constant), which is
the usual case for windows of one trace at one load. Estimate the SD from a pilot with
:func:`estimate_sd_of_relative_differences`.
"""

from __future__ import annotations

import math

from ._stats import ComparisonResult

__all__ = ["episodes_needed", "estimate_sd_of_relative_differences", "power_of"]


def _check(effect: float, sd: float, alpha: float) -> float:
    if not math.isfinite(effect) or effect == 0.0:
        raise ValueError(
            f"effect must be a finite, non-zero relative improvement (e.g. 0.05 for 5 %), "
            f"got {effect!r}"
        )
    if not math.isfinite(sd) or sd <= 0.0:
        raise ValueError(
            f"sd_of_relative_differences must be finite and > 0, got {sd!r}; estimate it from "
            "a pilot with estimate_sd_of_relative_differences"
        )
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}; e.g. 0.05")
    return abs(effect) / sd


def _alternative(two_sided: bool) -> str:
    return "two-sided" if two_sided else "larger"


def power_of(
    effect: float,
    sd_of_relative_differences: float,
    n_episodes: int,
    *,
    alpha: float = 0.05,
    two_sided: bool = True,
) -> float:
    """Power of the paired t-test over ``n_episodes`` to detect a relative improvement.

    Args:
        effect: true relative improvement (``0.05`` = 5 % lower latency). Its sign does
            not matter for a two-sided test; a one-sided test is taken in its direction.
        sd_of_relative_differences: SD across episodes of the per-episode relative
            improvement ``1 - router / baseline``.
        n_episodes: number of paired episodes (>= 2).
        alpha: significance level.
        two_sided: two-sided (default) or one-sided test.

    Returns:
        The probability of rejecting "no improvement" at level ``alpha``.

    Raises:
        ValueError: for a zero/non-finite effect, a non-positive SD, ``alpha`` outside
            (0, 1) or fewer than 2 episodes.

    Example:
        >>> round(power_of(0.05, 0.05, 10), 3)
        0.803
    """
    d = _check(effect, sd_of_relative_differences, alpha)
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 2:
        raise ValueError(f"n_episodes must be an int >= 2, got {n_episodes!r}")
    from statsmodels.stats.power import TTestPower  # lazy: keeps the package import light

    value = TTestPower().power(
        effect_size=d, nobs=n_episodes, alpha=alpha, alternative=_alternative(two_sided)
    )
    return float(value)


def episodes_needed(
    effect: float,
    sd_of_relative_differences: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    two_sided: bool = True,
) -> int:
    """Smallest number of paired episodes whose t-test reaches the requested power.

    Solves ``TTestPower().solve_power`` for ``d = |effect| / sd_of_relative_differences``
    and rounds up (never below 2, the fewest episodes a paired test can use).

    Args:
        effect: relative improvement to detect (``0.05`` = 5 % lower latency).
        sd_of_relative_differences: SD across episodes of the per-episode relative
            improvement (from a pilot: :func:`estimate_sd_of_relative_differences`).
        alpha: significance level.
        power: requested power, in (alpha, 1).
        two_sided: two-sided (default) or one-sided test in the effect's direction.

    Returns:
        The number of episodes, an int >= 2.

    Raises:
        ValueError: for invalid arguments (message says which and why).

    Example:
        >>> episodes_needed(0.05, 0.05), episodes_needed(0.02, 0.05)
        (10, 52)
    """
    d = _check(effect, sd_of_relative_differences, alpha)
    if not alpha < power < 1.0:
        raise ValueError(f"power must lie in (alpha={alpha}, 1), got {power!r}; e.g. 0.8")
    from statsmodels.stats.power import TTestPower

    nobs = TTestPower().solve_power(
        effect_size=d, nobs=None, alpha=alpha, power=power, alternative=_alternative(two_sided)
    )
    n = float(nobs)
    if not math.isfinite(n):
        raise ValueError(
            f"statsmodels could not solve for the number of episodes (d = {d:.3g}); the "
            "effect is too small relative to the SD to be detectable with any sensible n"
        )
    return max(2, math.ceil(n - 1e-9))


def estimate_sd_of_relative_differences(
    result: ComparisonResult, *, router: str, metric: str = "e2e_s", statistic: str = "mean"
) -> float:
    """SD (ddof=1) across a pilot's episodes of ``1 - router / baseline``.

    Args:
        result: a pilot :func:`~routeplay.estimator.compare_routers` result.
        router: the router whose improvement will be tested.
        metric: the metric column.
        statistic: the per-episode statistic.

    Returns:
        The SD, to pass to :func:`episodes_needed` as ``sd_of_relative_differences``.

    Raises:
        KeyError: if the pilot has no such comparison.

    Example:
        >>> import polars as pl
        >>> from routeplay.estimator import compare_routers
        >>> pilot = pl.DataFrame({"router": ["rr"] * 3 + ["jsq"] * 3, "episode": [0, 1, 2] * 2,
        ...                       "e2e_s": [2.0, 2.0, 2.0, 1.8, 1.9, 1.7]})
        >>> res = compare_routers(pilot, baseline="rr", statistics=("mean",), n_boot=100)
        >>> round(estimate_sd_of_relative_differences(res, router="jsq"), 4)
        0.05
    """
    return result.get(router, metric, statistic).sd_episode_relative_improvement
