"""Bootstrap confidence intervals of a router's relative latency improvement.

Two resampling schemes live here:

* the *paired episode bootstrap* used by :func:`~routeplay.estimator.compare_routers`:
  episodes (trace windows or seeds) are the unit of replication, so whole episodes are
  resampled with replacement, the same episodes for the router and for the baseline;
* the *block bootstrap* of :func:`moving_block_bootstrap`, for the case where only one
  long replay exists: the same requests were replayed under two routers, and blocks of
  consecutive requests (in arrival order) are resampled, the same blocks for both routers.

Sign convention everywhere: the relative improvement of a router over the baseline is
``1 - stat(router) / stat(baseline)``. Latencies are "lower is better", so a positive
value means the router is better; ``0.10`` reads "10 % lower than the baseline".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = [
    "BlockBootstrapResult",
    "moving_block_bootstrap",
    "optimal_block_length",
    "parse_statistic",
]

FloatArray = npt.NDArray[np.float64]

_STATISTIC_RE = re.compile(r"^p(\d+(?:\.\d+)?)$")
# Cap on n_boot x n elements materialised at once by the block bootstrap (memory bound).
_MAX_CHUNK_ELEMENTS = 4_000_000


def parse_statistic(statistic: str) -> float | None:
    """Parse a statistic name: ``"mean"`` -> ``None``, ``"pXX"`` -> quantile ``XX/100``.

    Percentiles use linear interpolation between order statistics (numpy's default,
    Hyndman & Fan type 7), the same rule polars' ``quantile(..., "linear")`` uses.

    Args:
        statistic: ``"mean"`` or ``"p"`` followed by a percentile in (0, 100), e.g.
            ``"p50"``, ``"p99"``, ``"p99.9"``.

    Returns:
        ``None`` for the mean, otherwise the quantile level in (0, 1).

    Raises:
        ValueError: for any other name.

    Example:
        >>> parse_statistic("p99"), parse_statistic("mean"), parse_statistic("p99.9")
        (0.99, None, 0.999)
    """
    if statistic == "mean":
        return None
    match = _STATISTIC_RE.match(statistic)
    if match is not None:
        level = Decimal(match.group(1))
        if 0 < level < 100:
            return float(level / 100)
    raise ValueError(
        f"unknown statistic {statistic!r}; expected 'mean' or 'p' followed by a percentile "
        "in (0, 100) such as 'p50', 'p99' or 'p99.9'"
    )


def _statistic_rows(values: FloatArray, level: float | None) -> FloatArray:
    """The statistic of every row of a 2-D array."""
    if level is None:
        return np.asarray(values.mean(axis=1), dtype=np.float64)
    return np.asarray(np.quantile(values, level, axis=1, method="linear"), dtype=np.float64)


def _generator(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(
            f"seed must be a non-negative int or a numpy Generator, got {seed!r}; pass e.g. seed=0"
        )
    return np.random.default_rng(np.random.SeedSequence(int(seed)))


def _check_bootstrap_args(n_boot: int, confidence: float) -> None:
    if isinstance(n_boot, bool) or not isinstance(n_boot, int | np.integer) or n_boot < 100:
        raise ValueError(
            f"n_boot must be an int >= 100, got {n_boot!r}; percentile intervals need "
            "at least a few hundred resamples (2000 is a good default)"
        )
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}; e.g. 0.95")


def _percentile_interval(replicates: FloatArray, confidence: float) -> tuple[float, float]:
    alpha = 1.0 - confidence
    low, high = np.quantile(replicates, [alpha / 2.0, 1.0 - alpha / 2.0])
    return float(low), float(high)


def paired_episode_bootstrap(
    baseline: FloatArray,
    router: FloatArray,
    indices: npt.NDArray[np.intp],
    confidence: float,
) -> tuple[float, float]:
    """Percentile CI of ``1 - mean(router) / mean(baseline)`` over resampled episodes.

    Args:
        baseline: per-episode statistic of the baseline, shape ``(n_episodes,)``, > 0.
        router: per-episode statistic of the router, same episodes in the same order.
        indices: resampled episode positions, shape ``(n_boot, n_episodes)``; the same
            rows are applied to both arrays (the pairing is kept).
        confidence: two-sided coverage, e.g. 0.95.

    Returns:
        ``(low, high)`` of the equal-tailed percentile interval.
    """
    replicates = 1.0 - router[indices].mean(axis=1) / baseline[indices].mean(axis=1)
    return _percentile_interval(replicates, confidence)


def _autocovariance(x: FloatArray, max_lag: int) -> FloatArray:
    centred = x - x.mean()
    n = centred.size
    return np.array(
        [float(centred[: n - k] @ centred[k:]) / n for k in range(max_lag + 1)], dtype=np.float64
    )


def optimal_block_length(
    values: npt.ArrayLike, *, method: Literal["circular", "moving"] = "circular"
) -> int:
    """Data-driven block length of Politis & White (2004), corrected by Patton et al. (2009).

    The rule estimates how far the autocorrelation of ``values`` reaches and picks the
    block length that minimises the asymptotic mean squared error of the block-bootstrap
    variance of the mean:

    1. ``m_hat`` = smallest lag ``m`` such that the next ``K_n = max(5, ceil(sqrt(log10 n)))``
       sample autocorrelations all lie inside ``+-2 sqrt(log10(n) / n)``
       (searching up to ``ceil(sqrt(n)) + K_n``);
    2. with ``M = 2 m_hat`` and the flat-top (trapezoid) kernel ``lam``,
       ``G = sum_{|k|<=M} lam(k/M) |k| R(k)`` and ``g = sum_{|k|<=M} lam(k/M) R(k)``;
    3. ``b = (2 G^2 / D)^(1/3) n^(1/3)`` with ``D = (4/3) g^2`` (circular and moving
       blocks), rounded up and kept in ``[1, min(3 sqrt(n), n / 3)]``.

    A series without autocorrelation gets a short block (often 1); a queue-driven latency
    series, whose neighbours share a backlog, gets a long one.

    Args:
        values: the series in time order (at least 8 values).
        method: ``"circular"`` or ``"moving"`` blocks (same constant ``D``).

    Returns:
        The block length, an int >= 1.

    Raises:
        ValueError: for fewer than 8 values, non-finite values or an unknown method.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> noise = rng.normal(size=4000)
        >>> ar = np.zeros(4000)
        >>> for i in range(1, 4000):
        ...     ar[i] = 0.9 * ar[i - 1] + noise[i]
        >>> optimal_block_length(noise) < optimal_block_length(ar)
        True
    """
    if method not in ("circular", "moving"):
        raise ValueError(f"unknown method {method!r}; expected 'circular' or 'moving'")
    x = np.asarray(values, dtype=np.float64)
    n = x.size
    if x.ndim != 1 or n < 8:
        raise ValueError(
            f"optimal_block_length needs a 1-D series of at least 8 values, got shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("optimal_block_length got NaN or infinite values; drop them first")
    k_n = max(5, math.ceil(math.sqrt(math.log10(n))))
    m_max = min(math.ceil(math.sqrt(n)) + k_n, n - 1)
    acov = _autocovariance(x, m_max)
    if acov[0] <= 0.0:
        return 1
    rho = acov / acov[0]
    threshold = 2.0 * math.sqrt(math.log10(n) / n)
    inside = np.abs(rho) < threshold
    m_hat = m_max
    for m in range(0, m_max - k_n + 1):
        if bool(np.all(inside[m + 1 : m + k_n + 1])):
            m_hat = m
            break
    big_m = min(2 * max(m_hat, 1), m_max)
    lags = np.arange(-big_m, big_m + 1)
    t = np.abs(lags) / big_m
    kernel = np.where(t <= 0.5, 1.0, np.where(t <= 1.0, 2.0 * (1.0 - t), 0.0))
    acov_lags = acov[np.abs(lags)]
    g_sum = float(np.sum(kernel * np.abs(lags) * acov_lags))
    g0 = float(np.sum(kernel * acov_lags))
    b_max = math.ceil(min(3.0 * math.sqrt(n), n / 3.0))
    if g0 <= 0.0:
        return 1
    d_const = (4.0 / 3.0) * g0**2
    b = (2.0 * g_sum**2 / d_const) ** (1.0 / 3.0) * n ** (1.0 / 3.0)
    return int(min(max(math.ceil(b), 1), b_max))


@dataclass(frozen=True, slots=True, kw_only=True)
class BlockBootstrapResult:
    """Block-bootstrap CI of the relative improvement on one long paired replay.

    Attributes:
        statistic: ``"mean"`` or ``"pXX"``.
        n_requests: number of paired requests.
        block_length: block length used (requests).
        block_length_rule: ``"politis-white"`` (data-driven default) or ``"given"``.
        method: ``"circular"`` or ``"moving"``.
        baseline_value: the statistic over the baseline's requests.
        router_value: the statistic over the router's requests.
        relative_improvement: ``1 - router_value / baseline_value`` (positive = router
            better, i.e. lower latency).
        ci_low: lower end of the percentile interval of the relative improvement.
        ci_high: upper end.
        p_value: approximate two-sided p-value of "no improvement" (see
            :func:`moving_block_bootstrap`).
        confidence: coverage of the interval.
        n_boot: number of bootstrap resamples.
        seed: the seed, or ``None`` when a Generator was passed.
    """

    statistic: str
    n_requests: int
    block_length: int
    block_length_rule: str
    method: str
    baseline_value: float
    router_value: float
    relative_improvement: float
    ci_low: float
    ci_high: float
    p_value: float
    confidence: float
    n_boot: int
    seed: int | None

    def to_frame(self) -> pl.DataFrame:
        """One-row frame of every field.

        Returns:
            A polars DataFrame with one column per field.

        Example:
            >>> base = np.linspace(1.0, 2.0, 50)
            >>> res = moving_block_bootstrap(base, 0.9 * base, n_boot=200, seed=0)
            >>> res.to_frame().columns[:3]
            ['statistic', 'n_requests', 'block_length']
        """
        return pl.DataFrame(
            [
                {
                    "statistic": self.statistic,
                    "n_requests": self.n_requests,
                    "block_length": self.block_length,
                    "block_length_rule": self.block_length_rule,
                    "method": self.method,
                    "baseline_value": self.baseline_value,
                    "router_value": self.router_value,
                    "relative_improvement": self.relative_improvement,
                    "ci_low": self.ci_low,
                    "ci_high": self.ci_high,
                    "p_value": self.p_value,
                    "confidence": self.confidence,
                    "n_boot": self.n_boot,
                    "seed": self.seed,
                }
            ],
            schema_overrides={"seed": pl.Int64},
        )


def _as_series(values: npt.ArrayLike, name: str) -> FloatArray:
    x = np.asarray(values, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one latency per request), got shape {x.shape}")
    n_bad = int(np.count_nonzero(~np.isfinite(x)))
    if n_bad:
        raise ValueError(
            f"{name} holds {n_bad} NaN/infinite value(s); a paired replay needs one finite "
            "latency per request for both routers (drop the request from both series)"
        )
    return x


def moving_block_bootstrap(
    baseline_values: npt.ArrayLike,
    router_values: npt.ArrayLike,
    *,
    block_length: int | None = None,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int | np.random.Generator = 0,
    statistic: str = "mean",
    method: Literal["circular", "moving"] = "circular",
) -> BlockBootstrapResult:
    """CI of a router's relative improvement from ONE long paired replay (block bootstrap).

    Use this only when a single long replay exists; with several episodes use
    :func:`~routeplay.estimator.compare_routers`. Requests of one replay are not
    independent: a burst fills the queues and every request behind it waits, so
    neighbouring latencies are positively autocorrelated. An iid bootstrap over requests
    ignores that and gives intervals that are far too narrow. Resampling *blocks* of
    consecutive requests keeps the short-range dependence inside each block.

    ``baseline_values[i]`` and ``router_values[i]`` must be the same request ``i`` replayed
    under the two routers, in arrival order. Each resample draws ``ceil(n / L)`` block
    starts, takes ``L`` consecutive requests from each start (``"circular"``: wrapping
    around the end, Politis & Romano 1992, so every request has the same chance to be
    drawn; ``"moving"``: starts in ``[0, n - L]``, Kuensch 1989), truncates to ``n``
    requests and applies the SAME indices to both series (paired). The statistic
    (mean or percentile, linear interpolation) of each resampled series gives a replicate
    ``1 - stat(router*) / stat(baseline*)``; the interval is the equal-tailed percentile
    interval of the replicates.

    Default block length (``block_length=None``): the largest
    :func:`optimal_block_length` (Politis & White 2004 with the Patton-Politis-White 2009
    correction) of three series: the baseline, the router, and the linearised difference
    ``z_i = r_i - (mean(r) / mean(b)) b_i`` (the influence of request ``i`` on the ratio of
    means). Taking the largest is deliberately conservative: the dependence comes from the
    queues both series live through. The rule caps the length at ``3 sqrt(n)``; a replay
    whose queues remember further than that (heavy load) gets intervals that are still
    somewhat too narrow, another reason to prefer several episodes.
    ``block_length=1`` is the iid bootstrap.

    p-value (approximate, two-sided, of "relative improvement = 0"): the bootstrap
    distribution of ``theta* - theta_hat`` stands in for the sampling distribution of
    ``theta_hat - theta``; under the null ``theta = 0``, so
    ``p = (1 + #{|theta* - theta_hat| >= |theta_hat|}) / (n_boot + 1)``. It is the
    inversion of the basic (centred) bootstrap interval, first-order accurate like the
    interval itself, and can be no smaller than ``1 / (n_boot + 1)``.

    Args:
        baseline_values: per-request latency (seconds) under the baseline, arrival order.
        router_values: per-request latency under the router, same requests, same order.
        block_length: block length in requests; ``None`` picks it from the data.
        n_boot: number of resamples (>= 100).
        confidence: two-sided coverage of the interval.
        seed: int seed (``SeedSequence``) or a numpy Generator.
        statistic: ``"mean"`` or ``"pXX"`` (e.g. ``"p99"``).
        method: ``"circular"`` (default) or ``"moving"`` blocks.

    Returns:
        A :class:`BlockBootstrapResult`.

    Raises:
        ValueError: for series of different lengths, fewer than 8 requests, non-finite
            values, a non-positive baseline statistic or invalid arguments.

    Example:
        >>> rng = np.random.default_rng(1)
        >>> base = 1.0 + rng.exponential(size=400)
        >>> res = moving_block_bootstrap(base, 0.8 * base, n_boot=500, seed=0)
        >>> round(res.relative_improvement, 3), res.ci_low <= 0.2 <= res.ci_high
        (0.2, True)
    """
    b = _as_series(baseline_values, "baseline_values")
    r = _as_series(router_values, "router_values")
    if b.size != r.size:
        raise ValueError(
            f"baseline_values has {b.size} requests but router_values has {r.size}; the "
            "block bootstrap needs the SAME requests replayed under both routers, in "
            "arrival order"
        )
    n = b.size
    if n < 8:
        raise ValueError(f"moving_block_bootstrap needs at least 8 paired requests, got {n}")
    if method not in ("circular", "moving"):
        raise ValueError(f"unknown method {method!r}; expected 'circular' or 'moving'")
    _check_bootstrap_args(n_boot, confidence)
    level = parse_statistic(statistic)
    if block_length is None:
        linearised = r - (r.mean() / b.mean()) * b if b.mean() != 0.0 else r - b
        length = max(optimal_block_length(series, method=method) for series in (b, r, linearised))
        rule = "politis-white"
    else:
        if (
            isinstance(block_length, bool)
            or not isinstance(block_length, int | np.integer)
            or not 1 <= block_length <= n
        ):
            raise ValueError(
                f"block_length must be an int in [1, {n}] (the number of requests), "
                f"got {block_length!r}; pass None to choose it from the data"
            )
        length = int(block_length)
        rule = "given"
    base_value = float(_statistic_rows(b[None, :], level)[0])
    router_value = float(_statistic_rows(r[None, :], level)[0])
    if not base_value > 0.0:
        raise ValueError(
            f"the baseline's {statistic} latency is {base_value!r}; a relative improvement "
            "needs a positive baseline latency"
        )
    theta = 1.0 - router_value / base_value

    rng = _generator(seed)
    n_blocks = math.ceil(n / length)
    n_starts = n if method == "circular" else n - length + 1
    offsets = np.arange(length)
    chunk = max(1, _MAX_CHUNK_ELEMENTS // (n_blocks * length))
    replicates = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        size = min(chunk, n_boot - start)
        starts = rng.integers(0, n_starts, size=(size, n_blocks))
        idx = ((starts[:, :, None] + offsets) % n).reshape(size, n_blocks * length)[:, :n]
        base_star = _statistic_rows(b[idx], level)
        router_star = _statistic_rows(r[idx], level)
        with np.errstate(divide="ignore", invalid="ignore"):
            replicates[start : start + size] = 1.0 - router_star / base_star
    low, high = _percentile_interval(replicates, confidence)
    n_extreme = int(np.count_nonzero(np.abs(replicates - theta) >= abs(theta)))
    p_value = (1 + n_extreme) / (n_boot + 1)
    return BlockBootstrapResult(
        statistic=statistic,
        n_requests=n,
        block_length=length,
        block_length_rule=rule,
        method=method,
        baseline_value=base_value,
        router_value=router_value,
        relative_improvement=theta,
        ci_low=low,
        ci_high=high,
        p_value=float(p_value),
        confidence=confidence,
        n_boot=int(n_boot),
        seed=None if isinstance(seed, np.random.Generator) else int(seed),
    )
