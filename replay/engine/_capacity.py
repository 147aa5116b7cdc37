"""Saturated throughput of a cluster on a workload, the yardstick of "utilisation".

Utilisation experiments bring a trace to a share ``u`` of a cluster's capacity with
``scale_arrival_rate(trace, u * capacity / rate)`` (``rate = n / last arrival``);
:func:`capacity_req_per_s` defines that capacity by replay, so it accounts for the
latency model, the batching limits and the workload's lengths together.
"""

from __future__ import annotations

from typing import cast

import polars as pl

from .._types import ClusterConfig
from ._result import ReplayConfig

__all__ = ["capacity_req_per_s"]


def capacity_req_per_s(sample: pl.DataFrame, cluster: ClusterConfig) -> float:
    """Saturated throughput (req/s) of ``cluster`` on the requests of ``sample``.

    Every request of ``sample`` arrives at time 0 and round robin spreads them. While
    every instance still has requests waiting in its queue the cluster runs flat out;
    ``t_sat`` is the first time an instance admits its last queued request. Capacity is
    the number of requests finished by ``t_sat`` divided by ``t_sat`` (the drain after
    ``t_sat``, dominated by the longest requests, is left out). ``sample`` must be large
    enough for queues to form (many more requests than sequence slots). The replay is
    deterministic (seed 0).

    Args:
        sample: requests in the canonical schema (their arrival times are ignored).
        cluster: the cluster.

    Returns:
        Requests per second.

    Raises:
        ValueError: if no request finished while every instance was saturated.

    Example:
        >>> from routeplay.datasets import TaskMixConfig, generate_task_mix
        >>> from routeplay.replay import capacity_req_per_s, make_cluster
        >>> sample = generate_task_mix(TaskMixConfig(n_requests=800, seed=7))
        >>> round(capacity_req_per_s(sample, make_cluster("v100x2")), 2)
        27.62
    """
    from ..routers._registry import make_router
    from ._engine import run_replay

    burst = sample.with_columns(pl.lit(0.0).alias("arrival_s"))
    res = run_replay(burst, cluster, make_router("round-robin"), config=ReplayConfig(seed=0))
    req = res.requests
    last_admitted = req.group_by("instance_id").agg(pl.col("admitted_s").max())["admitted_s"]
    t_sat = float(cast(float, last_admitted.min()))
    n_done = int((req["finish_s"] <= t_sat).sum())
    if n_done == 0 or t_sat <= 0.0:
        raise ValueError(
            f"capacity undefined: {n_done} of {sample.height} requests finished before every "
            f"instance emptied its queue (t_sat = {t_sat} s); expected a sample much larger "
            "than the cluster's sequence slots. Fix: pass a bigger sample."
        )
    return n_done / t_sat
