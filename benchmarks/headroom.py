"""Headroom benchmark (tracker issue 11, part 5): how far above the heuristics can routing go?

For each regime it replays the same episodes under round robin, the balancing
heuristics, ``min-total-latency``, the router-queue schedulers, the clairvoyant
references, the pooled cluster (one instance with the summed capacity) and, where
affordable, ``lookahead-oracle``; then compares every policy with round robin and with
min-min, paired over episodes (``routeplay.replay.replay_episodes`` +
``routeplay.estimator.compare_routers``: relative improvement of the mean E2E with a
95 % paired-bootstrap CI over episodes).

Regimes (episode sizes are the full run's; ``--quick`` shrinks them):

* ``hetero-taskmix-{20,40,80}``: 2 x ``llama2-7b/a100`` (117k KV) + 2 x
  ``llama2-7b/v100-scaled`` (30k KV), both with a 16,384-token budget (the
  built-in cluster ``hetero-a100x2-v100x2``), the paper's task mix
  (``generate_task_mix``) at 20, 40 and 80 req/s; 10 episodes of 500 requests;
* ``paper-4xv100``: 4 x ``llama2-7b/v100-paper``, 2,000 task-mix requests at 20 req/s
  (the paper's overload); 10 episodes;
* ``azure-conv-{1,2,4}x-{a100x4,hetero}``: the embedded ``azure-2023-conv`` trace at 1x,
  2x and 4x its rate; the first 20 % (by arrival) fits the predictor, the rest is cut
  into 10 episodes of 1,000 requests.

Output-length predictor: ``fit_length_predictor`` with the paper's time buckets
(``time_buckets(get_preset("llama2-7b/v100-paper"))``), features task + prompt length
(prompt length only for Azure), fitted on data disjoint from every episode (a separate
20,000-request task-mix trace, seed 7, for the task-mix regimes).

``lookahead-oracle`` (~50 ms per decision, more in overload: each rollout drains every
request in flight) runs only in the regimes named by ``--lookahead`` (default: the three
hetero task-mix regimes); elsewhere it is left out and the table says so.

Run (the full run takes about an hour on 2 shared cores; the lookahead dominates)::

    .venv/bin/python benchmarks/headroom.py                # every regime, full size
    .venv/bin/python benchmarks/headroom.py --quick        # smoke run (~1-2 minutes)
    .venv/bin/python benchmarks/headroom.py --regimes paper-4xv100 --episodes 5

It prints one markdown table per regime (mean E2E, improvement vs round robin and vs
min-min with CIs, wall time) and, with ``--out DIR``, writes every per-episode summary
(``summaries.parquet``) and the tables (``headroom.md``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from routeplay.datasets import (
    TaskMixConfig,
    generate_task_mix_episodes,
    load_trace,
    scale_arrival_rate,
    split_episodes,
)
from routeplay.estimator import (
    compare_routers,
    fit_length_predictor,
    fit_task_mix_predictor,
    get_preset,
    time_buckets,
)
from routeplay.replay import (
    ClusterConfig,
    make_cluster,
    make_router,
    pooled_cluster,
    replay_episodes,
)

#: deployable policies, in table order (round robin and min-min are the baselines)
HEURISTICS: tuple[str, ...] = (
    "round-robin",
    "least-connections",
    "jsq-tokens",
    "least-loaded",
    "least-work-left",
    "power-of-two",
    "decode-balancer",
    "max-capacity",
    "llm-d",
    "aibrix-least-latency",
    "impact-greedy",
    "min-min",
    "min-total-latency",
    "late-binding-spf",
)
#: clairvoyant references (true output lengths)
ORACLES: tuple[str, ...] = ("decode-balancer-oracle", "min-min-oracle", "late-binding-spf-oracle")
POOLED = "pooled (round-robin)"
LOOKAHEAD = "lookahead-oracle"


@dataclass(frozen=True)
class Regime:
    """One row group of the table: a cluster and its paired episodes."""

    name: str
    cluster: ClusterConfig
    episodes: list[pl.DataFrame]
    predictor: Any
    description: str


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def hetero_cluster() -> ClusterConfig:
    """2 x A100 + 2 x V100 (scaled), the cluster of the issue's hetero regimes (built in)."""
    return make_cluster("hetero-a100x2-v100x2")


def taskmix_predictor() -> Any:
    """The length predictor of the task-mix regimes (its own 20,000-request trace, seed 7)."""
    return fit_task_mix_predictor("llama2-7b/v100-paper", TaskMixConfig(n_requests=20_000, seed=7))


def taskmix_episodes(n_episodes: int, n_requests: int, rate_per_s: float) -> list[pl.DataFrame]:
    """Task-mix episodes, seeds 1000, 1001, ... (the same for every router)."""
    workload = TaskMixConfig(n_requests=n_requests, rate_per_s=rate_per_s, seed=1000)
    return generate_task_mix_episodes(workload, n_episodes)


def azure_split(n_episodes: int, n_requests: int) -> tuple[Any, pl.DataFrame]:
    """Predictor fitted on the first 20 % of azure-2023-conv, and the rest (re-based)."""
    trace = load_trace("azure-2023-conv")
    cut = float(trace["arrival_s"].quantile(0.2, "lower"))
    train = trace.filter(pl.col("arrival_s") <= cut)
    rest = trace.filter(pl.col("arrival_s") > cut)
    rest = rest.with_columns(pl.col("arrival_s") - rest["arrival_s"][0])
    scheme = time_buckets(get_preset("llama2-7b/v100-paper"))
    predictor = fit_length_predictor(train, scheme, features=("prompt_tokens",))
    return predictor, rest.head(n_episodes * n_requests)


def build_regimes(args: argparse.Namespace) -> list[Regime]:
    quick = args.quick
    n_ep = args.episodes or (3 if quick else 10)
    regimes: list[Regime] = []
    wanted = set(args.regimes) if args.regimes else None

    def want(name: str) -> bool:
        return wanted is None or name in wanted

    tm_pred: Any = None
    for rate in (20.0, 40.0, 80.0):
        name = f"hetero-taskmix-{int(rate)}"
        if not want(name):
            continue
        tm_pred = tm_pred or taskmix_predictor()
        n_req = args.requests or (150 if quick else 500)
        regimes.append(
            Regime(
                name,
                hetero_cluster(),
                taskmix_episodes(n_ep, n_req, rate),
                tm_pred,
                f"2 x A100 + 2 x V100, task mix at {rate:g} req/s, {n_ep} episodes x {n_req} "
                "requests",
            )
        )
    if want("paper-4xv100"):
        tm_pred = tm_pred or taskmix_predictor()
        n_req = args.requests or (300 if quick else 2000)
        regimes.append(
            Regime(
                "paper-4xv100",
                make_cluster("paper-4xv100"),
                taskmix_episodes(n_ep, n_req, 20.0),
                tm_pred,
                f"4 x llama2-7b/v100-paper, task mix at 20 req/s, {n_ep} episodes x {n_req} "
                "requests",
            )
        )
    az_names = [f"azure-conv-{f}x-{c}" for f in (1, 2, 4) for c in ("a100x4", "hetero")]
    if any(want(n) for n in az_names):
        n_req = args.requests or (200 if quick else 1000)
        az_pred, rest = azure_split(n_ep, n_req)
        for factor in (1, 2, 4):
            scaled = scale_arrival_rate(rest, float(factor))
            eps = [e.trace for e in split_episodes(scaled, n_requests=n_req)][:n_ep]
            for cname in ("a100x4", "hetero"):
                name = f"azure-conv-{factor}x-{cname}"
                if not want(name):
                    continue
                cluster = hetero_cluster() if cname == "hetero" else make_cluster(cname)
                regimes.append(
                    Regime(
                        name,
                        cluster,
                        eps,
                        az_pred,
                        f"azure-2023-conv at {factor}x its rate on {cname}, {len(eps)} "
                        f"episodes x {n_req} requests",
                    )
                )
    return regimes


def run_regime(
    regime: Regime, *, lookahead: bool
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    """Replay every policy on the regime's episodes; per-request frame, summaries, wall times."""
    frames: list[pl.DataFrame] = []
    summaries: list[pl.DataFrame] = []
    wall: dict[str, float] = {}
    names = list(HEURISTICS) + list(ORACLES)
    for name in names:
        start = time.perf_counter()
        out = replay_episodes(
            regime.episodes,
            regime.cluster,
            {name: (lambda n=name: make_router(n))},
            predictor=regime.predictor,
        )
        wall[name] = time.perf_counter() - start
        frames.append(out.requests)
        summaries.append(out.summaries)
        log(f"{regime.name}: {name} {wall[name]:.1f} s")
    start = time.perf_counter()
    out = replay_episodes(
        regime.episodes,
        pooled_cluster(regime.cluster),
        {POOLED: lambda: make_router("round-robin")},
        predictor=regime.predictor,
    )
    wall[POOLED] = time.perf_counter() - start
    frames.append(out.requests)
    summaries.append(out.summaries)
    if lookahead:
        made: list[Any] = []

        def factory() -> Any:
            router = make_router(LOOKAHEAD)
            made.append(router)
            return router

        start = time.perf_counter()
        out = replay_episodes(
            regime.episodes, regime.cluster, {LOOKAHEAD: factory}, predictor=regime.predictor
        )
        wall[LOOKAHEAD] = time.perf_counter() - start
        decisions = sum(r.n_decisions for r in made)
        wall["lookahead_decisions"] = float(decisions)
        wall["lookahead_ms_per_decision"] = 1000.0 * wall[LOOKAHEAD] / max(decisions, 1)
        frames.append(out.requests)
        summaries.append(out.summaries)
        log(
            f"{regime.name}: {LOOKAHEAD} {wall[LOOKAHEAD]:.1f} s, {decisions} decisions, "
            f"{wall['lookahead_ms_per_decision']:.1f} ms per decision"
        )
    requests = pl.concat(frames, how="diagonal_relaxed")
    summary = pl.concat(summaries, how="diagonal_relaxed").with_columns(
        pl.lit(regime.name).alias("regime")
    )
    return requests, summary, wall


def _pct(x: float) -> str:
    return f"{100.0 * x:+.1f} %"


def table(regime: Regime, requests: pl.DataFrame, wall: dict[str, float]) -> str:
    """The regime's markdown table (vs round robin and vs min-min, paired CIs)."""
    keep = ["router", "episode", "e2e_s"]
    frame = requests.select(keep)
    vs_rr = compare_routers(frame, baseline="round-robin", statistics=("mean",), seed=0)
    vs_mm = compare_routers(frame, baseline="min-min", statistics=("mean",), seed=0)
    means = (
        frame.group_by("router", "episode")
        .agg(pl.col("e2e_s").mean())
        .group_by("router")
        .agg(pl.col("e2e_s").mean())
    )
    mean_of = dict(zip(means["router"].to_list(), means["e2e_s"].to_list(), strict=True))
    order = [r for r in (*HEURISTICS, *ORACLES, POOLED, LOOKAHEAD) if r in mean_of]
    lines = [
        f"#### {regime.name}: {regime.description}",
        "",
        "| policy | mean E2E (s) | vs round robin [95 % CI] | vs min-min [95 % CI] | wall (s) |",
        "|---|---|---|---|---|",
    ]
    for r in order:
        cells = [r, f"{mean_of[r]:.2f}"]
        for cmp, base in ((vs_rr, "round-robin"), (vs_mm, "min-min")):
            if r == base:
                cells.append("0")
            else:
                c = cmp.get(r)
                cells.append(
                    f"{_pct(c.relative_improvement)} [{_pct(c.ci_low)}, {_pct(c.ci_high)}]"
                )
        cells.append(f"{wall.get(r, float('nan')):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    if LOOKAHEAD in mean_of:
        lines.append("")
        lines.append(
            f"lookahead-oracle: {int(wall['lookahead_decisions'])} decisions, "
            f"{wall['lookahead_ms_per_decision']:.1f} ms per decision."
        )
    else:
        lines.append("")
        lines.append("lookahead-oracle: not run in this regime (cost; see --lookahead).")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 small episodes per regime")
    parser.add_argument("--episodes", type=int, default=None, help="episodes per regime")
    parser.add_argument("--requests", type=int, default=None, help="requests per episode")
    parser.add_argument("--regimes", nargs="*", default=None, help="regime names (default all)")
    parser.add_argument(
        "--lookahead",
        nargs="*",
        default=["hetero-taskmix-20", "hetero-taskmix-40", "hetero-taskmix-80"],
        help="regimes where lookahead-oracle runs (default: the hetero task-mix ones)",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for tables + summaries")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    regimes = build_regimes(args)
    if not regimes:
        parser.error(f"no regime matches {args.regimes}")
    tables: list[str] = []
    all_summaries: list[pl.DataFrame] = []
    for regime in regimes:
        log(f"{regime.name}: {regime.description}")
        requests, summaries, wall = run_regime(regime, lookahead=regime.name in args.lookahead)
        text = table(regime, requests, wall)
        print(text + "\n", flush=True)
        tables.append(text)
        all_summaries.append(summaries)
        if args.out is not None:
            args.out.mkdir(parents=True, exist_ok=True)
            (args.out / "headroom.md").write_text("\n\n".join(tables) + "\n")
            pl.concat(all_summaries, how="diagonal_relaxed").write_parquet(
                args.out / "summaries.parquet"
            )
    log(f"done in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
