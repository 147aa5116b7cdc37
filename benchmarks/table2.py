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
  twice the work (the ``offered marginal load`` column); both keep the 2 instances busy
  most of the time without preemptions (the printed tables show busy fractions and
  preemptions);
* several episodes per cell (evaluation trace seed ``EVAL_SEED0 + episode``; the same
  traces for every batching policy and router, so cells are paired).

The grid is the library's (``routeplay.replay.Table2Config`` / ``run_table2`` /
``table2_cell_means``); this script only prints it.

Run: ``.venv/bin/python benchmarks/table2.py`` (full grid) or ``... --quick``.
It prints markdown tables (mean and p99 E2E, utilisation and preemptions per cell).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import polars as pl
from routeplay.replay import Table2Config, run_table2, table2_cell_means

#: The grid of the full run (the library's defaults; see ``Table2Config``).
DEFAULTS = Table2Config()
CLUSTER = DEFAULTS.cluster
RATES_PER_S = dict(DEFAULTS.rates_per_s)
TRAIN_SEED = DEFAULTS.train_seed
N_TRAIN_REQUESTS = DEFAULTS.n_train_requests
EVAL_SEED0 = DEFAULTS.eval_seed0


def markdown_tables(grid: pl.DataFrame) -> str:
    """The report: mean E2E, p99 E2E, and utilisation/preemptions, as markdown tables."""
    cells = table2_cell_means(grid)
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
    cells = table2_cell_means(grid)
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
    grid = run_table2(Table2Config(n_requests=n_requests, episodes=tuple(range(n_episodes))))
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
