"""Metric names and the summary statistics of a replay.

Every metric name used in summaries, reports and notes is a constant here, so that a
report, a CLI table and a test all spell it the same way (like vidur's
``metrics/constants.py``).

Definitions (per request, see the rules in replay/engine/_engine.py's module docstring):

- ``ttft_s`` = first token - arrival; ``e2e_s`` = last token - arrival;
- ``tbt_mean_s`` = (last token - first token) / (output_tokens - 1), null for one-token
  outputs; ``tbt_max_s`` = the longest gap between consecutive tokens (a preemption
  gap included), null for one-token outputs;
- ``router_wait_s`` = routed - arrival; ``queue_wait_s`` = admitted - routed.

Summary statistics treat null TBTs as absent (polars semantics). Utilisation of an
instance is its busy time (time with an iteration in progress) divided by the
makespan (first arrival to last finish). Imbalance (seed 003): the coefficient of
variation (population std / mean) of utilisations and the max/min ratio (``inf`` when
some instance never ran).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import polars as pl

__all__ = [
    "E2E_S",
    "IMBALANCE_MAX_MIN",
    "N_PREEMPTIONS",
    "N_REQUESTS",
    "QUEUE_WAIT_S",
    "ROUTER_WAIT_S",
    "SUMMARY_LATENCY_METRICS",
    "SUMMARY_STATISTICS",
    "TBT_MAX_S",
    "TBT_MEAN_S",
    "THROUGHPUT_REQ_PER_S",
    "THROUGHPUT_TOKENS_PER_S",
    "TTFT_S",
    "UTILISATION_CV",
    "MAKESPAN_S",
    "slo_attainment",
    "summarize_requests",
    "utilisation_imbalance",
]

TTFT_S = "ttft_s"
TBT_MEAN_S = "tbt_mean_s"
TBT_MAX_S = "tbt_max_s"
E2E_S = "e2e_s"
ROUTER_WAIT_S = "router_wait_s"
QUEUE_WAIT_S = "queue_wait_s"
N_REQUESTS = "n_requests"
N_PREEMPTIONS = "n_preemptions"
MAKESPAN_S = "makespan_s"
THROUGHPUT_REQ_PER_S = "throughput_req_per_s"
THROUGHPUT_TOKENS_PER_S = "throughput_tokens_per_s"
UTILISATION_CV = "utilisation_cv"
IMBALANCE_MAX_MIN = "utilisation_max_min_ratio"

#: latency columns summarised by mean and percentiles (summary keys ``<metric>_<stat>``).
SUMMARY_LATENCY_METRICS: tuple[str, ...] = (
    E2E_S,
    TTFT_S,
    TBT_MEAN_S,
    TBT_MAX_S,
    QUEUE_WAIT_S,
    ROUTER_WAIT_S,
)
#: statistics of each latency metric: name -> quantile (None = mean).
SUMMARY_STATISTICS: dict[str, float | None] = {"mean": None, "p50": 0.5, "p90": 0.9, "p99": 0.99}


def utilisation_imbalance(utilisation: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Coefficient of variation and max/min ratio of per-instance utilisations (seed 003).

    Args:
        utilisation: busy fraction of each instance.

    Returns:
        ``(cv, max_min_ratio)``; the CV is 0 for a single instance, the ratio is ``inf``
        when an instance has utilisation 0 and another does not (``1.0`` when all are 0).

    Example:
        >>> cv, ratio = utilisation_imbalance([0.5, 0.5, 1.0])
        >>> round(cv, 4), ratio
        (0.3536, 2.0)
    """
    u = np.asarray(utilisation, dtype=np.float64)
    mean = float(u.mean())
    cv = float(u.std() / mean) if mean > 0 else 0.0
    lo, hi = float(u.min()), float(u.max())
    ratio = (hi / lo) if lo > 0 else (1.0 if hi == 0 else math.inf)
    return cv, ratio


def summarize_requests(requests: pl.DataFrame) -> dict[str, float]:
    """Mean/p50/p90/p99 of every latency metric, throughput and preemptions.

    Args:
        requests: a replay's per-request frame (:attr:`ReplayResult.requests`).

    Returns:
        A dict keyed by ``f"{metric}_{stat}"`` (e.g. ``"e2e_s_p99"``) plus
        :data:`N_REQUESTS`, :data:`N_PREEMPTIONS`, :data:`MAKESPAN_S` and the throughputs.

    Example:
        >>> f = pl.DataFrame({"arrival_s": [0.0, 1.0], "finish_s": [1.0, 3.0],
        ...     "output_tokens": [10, 30], "n_preemptions": [0, 1],
        ...     **{m: [1.0, 2.0] for m in SUMMARY_LATENCY_METRICS}})
        >>> s = summarize_requests(f)
        >>> s["e2e_s_mean"], s[THROUGHPUT_TOKENS_PER_S], s[N_PREEMPTIONS]
        (1.5, 13.333333333333334, 1.0)
    """
    out: dict[str, float] = {}
    for metric in SUMMARY_LATENCY_METRICS:
        col = requests.get_column(metric).drop_nulls()
        for stat, q in SUMMARY_STATISTICS.items():
            if col.len() == 0:
                value = math.nan
            elif q is None:
                value = float(col.mean())  # type: ignore[arg-type]
            else:
                value = float(col.quantile(q, interpolation="linear"))  # type: ignore[arg-type]
            out[f"{metric}_{stat}"] = value
    n = requests.height
    makespan = (
        float(requests["finish_s"].max()) - float(requests["arrival_s"].min())  # type: ignore[arg-type]
        if n
        else 0.0
    )
    out[N_REQUESTS] = float(n)
    out[N_PREEMPTIONS] = float(requests["n_preemptions"].sum()) if n else 0.0
    out[MAKESPAN_S] = makespan
    out[THROUGHPUT_REQ_PER_S] = n / makespan if makespan > 0 else math.nan
    out[THROUGHPUT_TOKENS_PER_S] = (
        float(requests["output_tokens"].sum()) / makespan if makespan > 0 else math.nan
    )
    return out


def slo_attainment(
    requests: pl.DataFrame,
    *,
    ttft_s: float | None = None,
    tbt_s: float | None = None,
    e2e_s: float | None = None,
) -> float:
    """Fraction of requests that meet every given target (targets left None are ignored).

    The TBT target applies to each request's mean time between tokens (TPOT);
    one-token requests (null TBT) meet it.

    Example:
        >>> f = pl.DataFrame({"ttft_s": [0.1, 0.5], "tbt_mean_s": [0.02, None],
        ...                   "e2e_s": [1.0, 0.5]})
        >>> slo_attainment(f, ttft_s=0.2), slo_attainment(f, tbt_s=0.03, e2e_s=2.0)
        (0.5, 1.0)
    """
    if ttft_s is None and tbt_s is None and e2e_s is None:
        raise ValueError(
            "slo_attainment needs at least one target; got ttft_s=None, tbt_s=None, "
            "e2e_s=None. Fix: pass e.g. ttft_s=0.5."
        )
    if requests.height == 0:
        return math.nan
    ok = pl.lit(True)
    if ttft_s is not None:
        ok = ok & (pl.col(TTFT_S) <= ttft_s)
    if tbt_s is not None:
        ok = ok & (pl.col(TBT_MEAN_S).is_null() | (pl.col(TBT_MEAN_S) <= tbt_s))
    if e2e_s is not None:
        ok = ok & (pl.col(E2E_S) <= e2e_s)
    return float(requests.select(ok.mean()).item())
