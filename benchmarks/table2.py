"""Reproduce the shape of Table 2 of "Intelligent Router for LLM Workloads" (Jain et al., 2025).

Setup (docs/notes/table2.md explains every choice):

* cluster ``paper-2xv100``: 2 x Llama-2-7B on V100 (preset ``llama2-7b/v100-paper``,
  30k KV tokens each); the local batching policy of both instances is set with
  ``dataclasses.replace`` to ``fcfs``, ``least-work-left`` or ``bin-packing``;
* routers ``dedicated-small-large``, ``round-robin``, ``decode-balancer-oracle`` (the
  paper's decode balancer, which knows output lengths) and, as an extra row, the
  predicted ``decode-balancer``;
* the task-mix workload (``generate_task_mix``) in the four orderings of Table 2;
* one output-length predictor per ordering, fitted with the paper's time buckets on a
  separate training trace (seed ``TRAIN_SEED``), never on an evaluation trace;
* load: a fixed Poisson rate per ordering (``RATES_PER_S``): 0.5 req/s for
  ``all-random`` and 0.25 req/s for the LH/HL orderings, whose requests carry about
  twice the work (:func:`marginal_work_s`); both keep the 2 instances busy most of the
  time without preemptions (the printed tables show busy fractions and preemptions);
* several episodes per cell (evaluation trace seed ``EVAL_SEED0 + episode``; the same
  traces for every batching policy and router, so cells are paired).

Run: ``.venv/bin/python benchmarks/table2.py`` (full grid) or ``... --quick``.
It prints markdown tables (mean and p99 E2E, utilisation and preemptions per cell).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Sequence

import numpy as np
import polars as pl
from routeplay.datasets import TaskMixConfig, generate_task_mix
from routeplay.estimator import (
    HistogramLengthPredictor,
    LinearLatencyModel,
    fit_length_predictor,
    time_buckets,
)
from routeplay.replay import ClusterConfig, make_router
from routeplay.replay._clusters import make_cluster
from routeplay.replay._engine import run_replay
from routeplay.replay._result import ReplayConfig

CLUSTER = "paper-2xv100"
BATCHINGS: tuple[str, ...] = ("fcfs", "least-work-left", "bin-packing")
#: Table 2's three routers, then the predicted decode balancer as an extra row.
ROUTERS: tuple[str, ...] = (
    "dedicated-small-large",
    "round-robin",
    "decode-balancer-oracle",
    "decode-balancer",
)
ORDERINGS: tuple[str, ...] = ("lh-hl-random", "all-random", "lh-then-hl", "hl-then-lh")
#: Poisson arrival rate per ordering (req/s); see the module docstring and the notes.
RATES_PER_S: dict[str, float] = {
    "all-random": 0.5,
    "lh-hl-random": 0.25,
    "lh-then-hl": 0.25,
    "hl-then-lh": 0.25,
}
TRAIN_SEED = 7
N_TRAIN_REQUESTS = 20_000
EVAL_SEED0 = 1000


def marginal_work_s(trace: pl.DataFrame, latency: LinearLatencyModel) -> np.ndarray:
    """Per-request work an instance must do beyond the per-iteration intercept.

    ``prefill_s_per_token * p + decode_s_per_context_token * sum_{k=1}^{d-1} (p + k)``:
    the prefill and the context-dependent part of every decode iteration the request
    joins. The intercept is shared by the whole batch, so it is left out; with the
    V100 preset (iteration time linear in the batch's context) the instance behaves
    almost like a processor-sharing server whose work per request is this number.

    Args:
        trace: a trace with ``prompt_tokens`` and ``output_tokens``.
        latency: the instance's latency model.

    Returns:
        Seconds of work per request (float64).
    """
    p = trace["prompt_tokens"].to_numpy().astype(np.float64)
    d = trace["output_tokens"].to_numpy().astype(np.float64)
    decode_ctx = p * (d - 1.0) + (d - 1.0) * d / 2.0
    work: np.ndarray = (
        latency.prefill_s_per_token * p + latency.decode_s_per_context_token * decode_ctx
    )
    return work


def paper_cluster(batching: str) -> ClusterConfig:
    """The ``paper-2xv100`` cluster with every instance's batching policy set."""
    base = make_cluster(CLUSTER)
    return dataclasses.replace(
        base, instances=tuple(dataclasses.replace(i, batching=batching) for i in base.instances)
    )


def training_trace(ordering: str, n_requests: int = N_TRAIN_REQUESTS) -> pl.DataFrame:
    """The predictor's training trace of ``ordering`` (seed ``TRAIN_SEED``)."""
    return generate_task_mix(
        TaskMixConfig(n_requests=n_requests, ordering=ordering, seed=TRAIN_SEED)
    )


def fit_predictor(train: pl.DataFrame, latency: LinearLatencyModel) -> HistogramLengthPredictor:
    """Length predictor on ``train`` with the paper's time buckets (task + prompt features)."""
    return fit_length_predictor(train, time_buckets(latency))


def run_grid(
    *,
    n_requests: int,
    episodes: Sequence[int],
    orderings: Sequence[str] = ORDERINGS,
    batchings: Sequence[str] = BATCHINGS,
    routers: Sequence[str] = ROUTERS,
    rates_per_s: dict[str, float] | None = None,
    n_train_requests: int = N_TRAIN_REQUESTS,
) -> pl.DataFrame:
    """Replay every (ordering, batching, router, episode) cell.

    Returns:
        One row per replay: ``ordering``, ``batching``, ``router``, ``episode``,
        ``rate_per_s``, ``offered_load`` (marginal work of this trace / capacity),
        ``e2e_mean_s``, ``e2e_p99_s``, ``ttft_mean_s``, ``busy_0``/``busy_1``
        (busy fraction of each instance until the last arrival, from 1 s samples),
        ``n_preemptions``, ``share_0`` (fraction of requests routed to instance 0).
    """
    rows: list[dict[str, object]] = []
    base = make_cluster(CLUSTER)
    latency = base.instances[0].latency
    m = base.n_instances
    for ordering in orderings:
        train = training_trace(ordering, n_train_requests)
        predictor = fit_predictor(train, latency)
        rate = (rates_per_s or RATES_PER_S)[ordering]
        for episode in episodes:
            trace = generate_task_mix(
                TaskMixConfig(
                    n_requests=n_requests,
                    rate_per_s=rate,
                    ordering=ordering,
                    seed=EVAL_SEED0 + episode,
                )
            )
            last_arrival_s = float(trace["arrival_s"].max())
            offered = float(marginal_work_s(trace, latency).sum()) / (m * last_arrival_s)
            for batching in batchings:
                cluster = paper_cluster(batching)
                for name in routers:
                    res = run_replay(
                        trace,
                        cluster,
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
                            "e2e_mean_s": float(req["e2e_s"].mean()),
                            "e2e_p99_s": float(req["e2e_s"].quantile(0.99)),
                            "ttft_mean_s": float(req["ttft_s"].mean()),
                            "busy_0": float(busy[0]),
                            "busy_1": float(busy[1]),
                            "n_preemptions": int(req["n_preemptions"].sum()),
                            "share_0": float((req["instance_id"] == 0).mean()),
                        }
                    )
    return pl.DataFrame(rows)


def cell_means(grid: pl.DataFrame) -> pl.DataFrame:
    """Mean and standard deviation over episodes of every metric, one row per cell."""
    metrics = ["e2e_mean_s", "e2e_p99_s", "busy_0", "busy_1", "n_preemptions", "share_0"]
    return grid.group_by("ordering", "batching", "router", maintain_order=True).agg(
        pl.len().alias("n_episodes"),
        *[pl.col(c).mean() for c in metrics],
        *[pl.col(c).std().alias(f"{c}_sd") for c in ("e2e_mean_s", "e2e_p99_s")],
    )


def markdown_tables(grid: pl.DataFrame) -> str:
    """The report: mean E2E, p99 E2E, and utilisation/preemptions, as markdown tables."""
    cells = cell_means(grid)
    orderings = list(dict.fromkeys(grid["ordering"].to_list()))
    keys = list(
        dict.fromkeys(zip(grid["batching"].to_list(), grid["router"].to_list(), strict=True))
    )

    def lookup(o: str, b: str, r: str) -> dict[str, float]:
        return cells.filter(
            (pl.col("ordering") == o) & (pl.col("batching") == b) & (pl.col("router") == r)
        ).row(0, named=True)

    out: list[str] = []
    header = "| batching | router | " + " | ".join(orderings) + " |"
    rule = "|---|---|" + "---|" * len(orderings)
    for metric, title in (("e2e_mean_s", "Mean E2E (s)"), ("e2e_p99_s", "p99 E2E (s)")):
        out += [f"### {title}: mean ± sd over episodes", "", header, rule]
        for b, r in keys:
            vals = [lookup(o, b, r) for o in orderings]
            out.append(
                f"| {b} | {r} | "
                + " | ".join(f"{v[metric]:.1f} ± {v[metric + '_sd']:.1f}" for v in vals)
                + " |"
            )
        out.append("")
    out += [
        "### Busy fraction of instance 0 / 1 until the last arrival, share of requests on "
        "instance 0, mean preemptions per episode",
        "",
        header,
        rule,
    ]
    for b, r in keys:
        vals = [lookup(o, b, r) for o in orderings]
        out.append(
            f"| {b} | {r} | "
            + " | ".join(
                f"{v['busy_0']:.2f}/{v['busy_1']:.2f}, {v['share_0']:.2f}, {v['n_preemptions']:.1f}"
                for v in vals
            )
            + " |"
        )
    out.append("")
    load = grid.group_by("ordering", maintain_order=True).agg(
        pl.col("rate_per_s").first(), pl.col("offered_load").mean()
    )
    out += ["### Load per ordering", "", "| ordering | rate (req/s) | offered marginal load |"]
    out.append("|---|---|---|")
    for row in load.iter_rows(named=True):
        out.append(f"| {row['ordering']} | {row['rate_per_s']:.3f} | {row['offered_load']:.2f} |")
    return "\n".join(out) + "\n"


def shape_checks(grid: pl.DataFrame) -> str:
    """Which parts of the published shape hold, per (batching, ordering) column."""
    cells = cell_means(grid)
    lines = ["| batching | ordering | DSL worst | (DB-oracle - RR)/RR | (DB-pred - RR)/RR |"]
    lines.append("|---|---|---|---|---|")
    for (b, o), col in cells.group_by("batching", "ordering", maintain_order=True):
        e2e = dict(zip(col["router"].to_list(), col["e2e_mean_s"].to_list(), strict=True))
        worst = max(e2e, key=lambda k: e2e[k]) == "dedicated-small-large"
        rr = e2e["round-robin"]
        rel = [
            f"{(e2e[k] - rr) / rr:+.1%}" if k in e2e else "-"
            for k in ("decode-balancer-oracle", "decode-balancer")
        ]
        lines.append(f"| {b} | {o} | {'yes' if worst else 'NO'} | {rel[0]} | {rel[1]} |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Run the grid and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 episodes of 300 requests")
    parser.add_argument("--episodes", type=int, default=None)
    parser.add_argument("--n-requests", type=int, default=None)
    args = parser.parse_args(argv)
    n_episodes = args.episodes or (3 if args.quick else 20)
    n_requests = args.n_requests or (300 if args.quick else 1000)
    t0 = time.perf_counter()
    grid = run_grid(n_requests=n_requests, episodes=range(n_episodes))
    wall_s = time.perf_counter() - t0
    print(
        f"## Table 2 shape: {CLUSTER}, {n_requests} requests per episode, "
        f"episodes 0..{n_episodes - 1} (trace seeds {EVAL_SEED0}..{EVAL_SEED0 + n_episodes - 1}), "
        f"rates {RATES_PER_S} req/s, predictor trained on seed {TRAIN_SEED} "
        f"({N_TRAIN_REQUESTS} requests per ordering)\n"
    )
    print(markdown_tables(grid))
    print("### Shape checks (means over episodes)\n")
    print(shape_checks(grid))
    print(f"{grid.height} replays, wall time {wall_s:.1f} s")


if __name__ == "__main__":
    main()
