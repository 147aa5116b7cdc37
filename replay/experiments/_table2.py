"""The grid of Table 2 of "Intelligent Router for LLM Workloads" (Jain et al., 2025).

Table 2 crosses the local batching policy of the instances (``fcfs``,
``least-work-left``, ``bin-packing``) with routers and the four orderings of the
task mix. :func:`run_table2` replays that grid (every cell on the same episodes, so
cells are paired) and :func:`table2_cell_means` averages it per cell;
``benchmarks/table2.py`` prints the tables and ``docs/notes/table2.md`` explains every
choice of :class:`Table2Config`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from routeplay._checks import check_int

from ..engine._result import ReplayConfig

if TYPE_CHECKING:
    from routeplay.estimator import LinearLatencyModel

__all__ = ["TABLE2_RATES_PER_S", "Table2Config", "run_table2", "table2_cell_means"]

#: Poisson arrival rate per ordering (req/s): the LH/HL orderings carry about twice the
#: work per request, so they run at half the rate; both keep ``paper-2xv100`` busy most
#: of the time without preemptions.
TABLE2_RATES_PER_S: Mapping[str, float] = {
    "all-random": 0.5,
    "lh-hl-random": 0.25,
    "lh-then-hl": 0.25,
    "hl-then-lh": 0.25,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Table2Config:
    """The Table 2 grid: cluster, batching policies, routers, orderings, episodes, load.

    Attributes:
        cluster: built-in cluster; every instance's batching policy is replaced per cell.
        batchings: local batching policies (columns of the paper's table).
        routers: registered router names.
        orderings: task-mix orderings (``TASK_ORDERINGS``).
        rates_per_s: Poisson arrival rate per ordering (req/s).
        n_requests: requests per evaluation episode.
        episodes: episode numbers; episode ``k`` is the task-mix trace of seed
            ``eval_seed0 + k``, replayed with ``ReplayConfig(seed=k)``.
        eval_seed0: seed of episode 0's trace.
        n_train_requests: size of each ordering's predictor training trace.
        train_seed: its seed (never an evaluation seed).

    Raises:
        ValueError: an empty list, an ordering without a rate, a bad count.

    Example:
        >>> from routeplay.replay import Table2Config
        >>> Table2Config().episodes[-1], Table2Config().rates_per_s["all-random"]
        (19, 0.5)
        >>> Table2Config(orderings=("sorted",))
        Traceback (most recent call last):
        ...
        ValueError: Table2Config.orderings = ('sorted',); expected orderings with a rate ...
    """

    cluster: str = "paper-2xv100"
    batchings: tuple[str, ...] = ("fcfs", "least-work-left", "bin-packing")
    routers: tuple[str, ...] = (
        "dedicated-small-large",
        "round-robin",
        "decode-balancer-oracle",
        "decode-balancer",
    )
    orderings: tuple[str, ...] = ("lh-hl-random", "all-random", "lh-then-hl", "hl-then-lh")
    rates_per_s: Mapping[str, float] = field(default_factory=lambda: dict(TABLE2_RATES_PER_S))
    n_requests: int = 1000
    episodes: tuple[int, ...] = tuple(range(20))
    eval_seed0: int = 1000
    n_train_requests: int = 20_000
    train_seed: int = 7

    def __post_init__(self) -> None:
        owner = "Table2Config"
        for name in ("batchings", "routers", "orderings", "episodes"):
            value = tuple(getattr(self, name))
            if not value:
                raise ValueError(f"{owner}.{name} = (); expected at least one entry.")
            object.__setattr__(self, name, value)
        object.__setattr__(self, "rates_per_s", dict(self.rates_per_s))
        missing = [o for o in self.orderings if o not in self.rates_per_s]
        if missing:
            raise ValueError(
                f"{owner}.orderings = {tuple(missing)}; expected orderings with a rate in "
                f"rates_per_s ({sorted(self.rates_per_s)})."
            )
        for name in ("n_requests", "n_train_requests"):
            check_int(owner, name, getattr(self, name), minimum=1)
        for name in ("eval_seed0", "train_seed"):
            check_int(owner, name, getattr(self, name), minimum=0)
        for k in self.episodes:
            check_int(owner, "episodes", k, minimum=0)


def _marginal_work_s(trace: pl.DataFrame, latency: LinearLatencyModel) -> np.ndarray:
    """Per-request work an instance must do beyond the per-iteration intercept.

    ``prefill_s_per_token * p + decode_s_per_context_token * sum_{k=1}^{d-1} (p + k)``:
    the prefill and the context-dependent part of every decode iteration the request
    joins. The intercept is shared by the whole batch, so it is left out; with the V100
    preset (iteration time linear in the batch's context) the instance behaves almost
    like a processor-sharing server whose work per request is this number.
    """
    p = trace["prompt_tokens"].to_numpy().astype(np.float64)
    d = trace["output_tokens"].to_numpy().astype(np.float64)
    decode_ctx = p * (d - 1.0) + (d - 1.0) * d / 2.0
    work: np.ndarray = (
        latency.prefill_s_per_token * p + latency.decode_s_per_context_token * decode_ctx
    )
    return work


def run_table2(config: Table2Config) -> pl.DataFrame:
    """Replay every (ordering, batching, router, episode) cell of the grid.

    Per ordering, one output-length predictor is fitted with the paper's time buckets
    of the cluster's first instance on a separate training trace (seed
    ``train_seed``); the evaluation traces are the same for every batching policy and
    router, so cells are paired.

    Args:
        config: the grid.

    Returns:
        One row per replay: ``ordering``, ``batching``, ``router``, ``episode``,
        ``rate_per_s``, ``offered_load`` (marginal work of the trace / capacity),
        ``e2e_mean_s``, ``e2e_p99_s``, ``ttft_mean_s``, ``busy_0``/``busy_1`` (busy
        fraction of each instance until the last arrival, from 1 s samples),
        ``n_preemptions``, ``share_0`` (fraction of requests routed to instance 0).

    Example:
        >>> from routeplay.replay import Table2Config, run_table2, table2_cell_means
        >>> grid = run_table2(Table2Config(n_requests=40, episodes=(0,),
        ...     orderings=("all-random",), batchings=("fcfs",),
        ...     routers=("round-robin",), n_train_requests=500))
        >>> grid.select("ordering", "batching", "router", "episode").rows()
        [('all-random', 'fcfs', 'round-robin', 0)]
        >>> table2_cell_means(grid)["n_episodes"].to_list()
        [1]
    """
    from routeplay.datasets import TaskMixConfig, generate_task_mix
    from routeplay.estimator import fit_task_mix_predictor

    from ..engine._clusters import make_cluster, with_instance_settings
    from ..engine._engine import run_replay
    from ..routers._registry import make_router

    rows: list[dict[str, object]] = []
    base = make_cluster(config.cluster)
    latency = base.instances[0].latency
    m = base.n_instances
    clusters = {b: with_instance_settings(base, batching=b) for b in config.batchings}
    for ordering in config.orderings:
        predictor = fit_task_mix_predictor(
            latency,
            TaskMixConfig(
                n_requests=config.n_train_requests,
                ordering=ordering,
                seed=config.train_seed,
            ),
        )
        rate = float(config.rates_per_s[ordering])
        for episode in config.episodes:
            trace = generate_task_mix(
                TaskMixConfig(
                    n_requests=config.n_requests,
                    rate_per_s=rate,
                    ordering=ordering,
                    seed=config.eval_seed0 + episode,
                )
            )
            last_arrival_s = float(trace["arrival_s"].max())
            offered = float(_marginal_work_s(trace, latency).sum()) / (m * last_arrival_s)
            for batching in config.batchings:
                for name in config.routers:
                    res = run_replay(
                        trace,
                        clusters[batching],
                        make_router(name),
                        config=ReplayConfig(seed=episode, timeline_sample_interval_s=1.0),
                        predictor=predictor,
                    )
                    req = res.requests
                    busy = (
                        res.timelines.filter(pl.col("time_s") <= last_arrival_s)
                        .group_by("instance_id")
                        .agg(pl.col("busy").mean())
                        .sort("instance_id")["busy"]
                        .to_list()
                    )
                    rows.append(
                        {
                            "ordering": ordering,
                            "batching": batching,
                            "router": name,
                            "episode": episode,
                            "rate_per_s": rate,
                            "offered_load": offered,
                            "e2e_mean_s": float(req["e2e_s"].mean()),  # type: ignore[arg-type]
                            "e2e_p99_s": float(req["e2e_s"].quantile(0.99)),  # type: ignore[arg-type]
                            "ttft_mean_s": float(req["ttft_s"].mean()),  # type: ignore[arg-type]
                            "busy_0": float(busy[0]),
                            "busy_1": float(busy[1]),
                            "n_preemptions": int(req["n_preemptions"].sum()),
                            "share_0": float((req["instance_id"] == 0).mean()),  # type: ignore[arg-type]
                        }
                    )
    return pl.DataFrame(rows)


def table2_cell_means(grid: pl.DataFrame, metrics: Sequence[str] | None = None) -> pl.DataFrame:
    """Mean over episodes of every metric, and the SD of the E2E ones, one row per cell.

    Args:
        grid: :func:`run_table2`'s frame.
        metrics: columns to average (default: mean and p99 E2E, busy fractions,
            preemptions, share of instance 0).

    Returns:
        ``ordering``, ``batching``, ``router``, ``n_episodes``, the means, and
        ``e2e_mean_s_sd`` / ``e2e_p99_s_sd`` (sample SD over episodes).

    Example:
        >>> import polars as pl
        >>> from routeplay.replay import table2_cell_means
        >>> g = pl.DataFrame({"ordering": ["a", "a"], "batching": ["fcfs"] * 2,
        ...     "router": ["rr"] * 2, "e2e_mean_s": [1.0, 3.0], "e2e_p99_s": [2.0, 4.0]})
        >>> table2_cell_means(g, ["e2e_mean_s"]).row(0)
        ('a', 'fcfs', 'rr', 2, 2.0, 1.4142135623730951, 1.4142135623730951)
    """
    cols = (
        list(metrics)
        if metrics is not None
        else ["e2e_mean_s", "e2e_p99_s", "busy_0", "busy_1", "n_preemptions", "share_0"]
    )
    return grid.group_by("ordering", "batching", "router", maintain_order=True).agg(
        pl.len().alias("n_episodes"),
        *[pl.col(c).mean() for c in cols],
        *[pl.col(c).std().alias(f"{c}_sd") for c in ("e2e_mean_s", "e2e_p99_s")],
    )
