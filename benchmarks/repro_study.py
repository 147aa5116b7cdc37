"""Reproduction study: the seed systems' experiments rerun with routeplay.

One command per part; each prints markdown tables on stdout (deterministic: every
trace, replay and bootstrap is seeded) and its wall time on stderr::

    .venv/bin/python benchmarks/repro_study.py smoke      # < 60 s, tests/test_reproduction.py
    .venv/bin/python benchmarks/repro_study.py section61  # Jain et al. section 6.1
    .venv/bin/python benchmarks/repro_study.py table3     # chunked prefill on/off, A100
    .venv/bin/python benchmarks/repro_study.py table3-code  # the same with long prompts
    .venv/bin/python benchmarks/repro_study.py hetero-3k5k7k  # System B's heterogeneous cluster
    .venv/bin/python benchmarks/repro_study.py real       # Azure 2023 at 60/80/90 % utilisation
    .venv/bin/python benchmarks/repro_study.py real-conv  # one trace of `real` (or real-code)

Table 2 of the paper is ``benchmarks/table2.py``. ``docs/reproduction.md`` pastes the
output of every part and explains the setup; the definitions used here:

* **Improvement over round robin** (``routeplay.reports.compare_on_episodes``):
  ``1 - mean_e(router) / mean_e(RR)`` of the per-episode statistic, with a paired
  episode-bootstrap 95 % CI (2,000 resamples, seed 0) and Holm-corrected two-sided
  paired t-test and Wilcoxon p-values across the routers of a table. Episodes are the
  unit of replication.
* **Capacity** of a cluster for a workload (``routeplay.replay.capacity_req_per_s``):
  every request of a sample arrives at time 0 and round robin spreads them; capacity =
  requests finished while every instance still had queued work, divided by that time
  (the saturated throughput of the latency model with the instances' batching limits;
  the drain at the end, dominated by the longest requests, is left out).

Section 6.1 and its smoke version are library code (``routeplay.reports.Section61Config``,
``section61_tables``); the other parts are built here from the same pieces.
* **Utilisation** = offered arrival rate / capacity. A trace is brought to a target
  utilisation ``u`` with ``scale_arrival_rate(trace, u * capacity / rate)`` where
  ``rate = n / last arrival``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial

import polars as pl
from routeplay.datasets import (
    Episode,
    TaskMixConfig,
    generate_task_mix,
    load_trace,
    scale_arrival_rate,
    split_episodes,
    split_train_test,
)
from routeplay.estimator import (
    compare_routers,
    fit_length_predictor,
    holm_adjust,
    time_buckets,
)
from routeplay.replay import capacity_req_per_s, list_routers, make_cluster
from routeplay.reports import Section61Config, compare_on_episodes, section61_tables

#: Section 6.1's heuristic baselines and the impact estimator used greedily.
SECTION61_ROUTERS: tuple[str, ...] = Section61Config().routers
#: System B's baselines (docs/design.md: online RL on a heterogeneous cluster).
HETERO_3K5K7K_ROUTERS: tuple[str, ...] = (
    "round-robin",
    "least-connections",
    "least-loaded",
    "random",
)
#: System B's response-time SLO.
SLO_E2E_S = 2.0
#: Every non-oracle router of the registry (the oracle gets its own labelled row).
HEURISTIC_ROUTERS: tuple[str, ...] = tuple(
    r for r in list_routers() if r != "decode-balancer-oracle"
)
UTILISATIONS: tuple[float, ...] = (0.6, 0.8, 0.9)
N_BOOT = 2000
#: Task-mix sample whose saturated throughput defines capacity (never an evaluation trace).
CAPACITY_SAMPLE_REQUESTS = Section61Config().capacity_sample_requests
CAPACITY_SAMPLE_SEED = Section61Config().capacity_sample_seed


# --------------------------------------------------------------------------- helpers


def capacity_sample() -> pl.DataFrame:
    """The task-mix requests whose saturated throughput defines the task mix's capacity."""
    sample: pl.DataFrame = generate_task_mix(
        TaskMixConfig(n_requests=CAPACITY_SAMPLE_REQUESTS, seed=CAPACITY_SAMPLE_SEED)
    )
    return sample


def offered_rate_req_per_s(trace: pl.DataFrame) -> float:
    """Arrival rate of a trace: ``n / last arrival``."""
    return trace.height / _last_arrival_s(trace)


def _last_arrival_s(trace: pl.DataFrame) -> float:
    last = trace["arrival_s"].max()
    assert isinstance(last, float)
    return last


def add_slo_column(requests: pl.DataFrame) -> pl.DataFrame:
    """Add ``slo_violation`` (1.0 if E2E > ``SLO_E2E_S``) and ``service_s`` (E2E minus waits)."""
    return requests.with_columns(
        (pl.col("e2e_s") > SLO_E2E_S).cast(pl.Float64).alias("slo_violation"),
        (pl.col("e2e_s") - pl.col("queue_wait_s") - pl.col("router_wait_s")).alias("service_s"),
    )


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f} %"


def _p(x: float) -> str:
    return f"{x:.2g}"


def task_mix_episodes(
    *, n_requests: int, episode_requests: int, rate_per_s: float, test_fraction: float, seed: int
) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    """One task-mix trace cut into episodes: (training trace, held-out episode traces)."""
    trace = generate_task_mix(
        TaskMixConfig(n_requests=n_requests, rate_per_s=rate_per_s, seed=seed)
    )
    train, test = split_train_test(
        trace, n_requests=episode_requests, test_fraction=test_fraction, drop_partial=True
    )
    return original_clock(train), [e.trace for e in test]


def original_clock(episodes: Sequence[Episode]) -> pl.DataFrame:
    """The requests of consecutive episodes on the original trace clock (a valid trace)."""
    return pl.concat([e.original_trace() for e in episodes])


def _emit(text: str = "") -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------- parts


def section61(config: Section61Config | None = None) -> None:
    """Section 6.1 (``routeplay.reports.section61_tables``), one table per setting."""
    for block in section61_tables(config or Section61Config()):
        print(block, end="", flush=True)


def smoke() -> None:
    """The small, fast version of section 6.1 that the acceptance test reruns."""
    section61(Section61Config.smoke())


def table3() -> None:
    """Chunked prefill off (a100x4) vs on (a100x4-chunked), section 6.1's workload."""
    train, episodes = task_mix_episodes(
        n_requests=44_000, episode_requests=2000, rate_per_s=20.0, test_fraction=0.9, seed=0
    )
    off, on = make_cluster("a100x4"), make_cluster("a100x4-chunked")
    predictor = fit_length_predictor(train, time_buckets(off.instances[0].latency))
    capacity = capacity_req_per_s(capacity_sample(), off)
    rate0 = sum(e.height for e in episodes) / sum(_last_arrival_s(e) for e in episodes)
    for u_label, factor in (("20 req/s (paper)", 1.0), ("utilisation 0.9", 0.9 * capacity / rate0)):
        eps = [scale_arrival_rate(e, factor) for e in episodes]
        _emit(
            f"#### Table 3 shape at {u_label}: task mix, {len(eps)} held-out episodes of 2000 "
            f"requests, rate {rate0 * factor:.2f} req/s, capacity of a100x4 {capacity:.2f} req/s"
        )
        _emit()
        results: dict[str, pl.DataFrame] = {}
        for cluster, tag in ((off, "off"), (on, "on")):
            cmp, _ = compare_on_episodes(eps, cluster, SECTION61_ROUTERS, predictor=predictor)
            _emit(
                f"Chunked prefill {tag} (`{cluster.instances[0].name[:4]}` x4, "
                f"max batched tokens {cluster.instances[0].max_batched_tokens}), mean E2E:"
            )
            _emit()
            _emit(cmp.to_markdown())
            _emit()
            results[tag] = cmp.per_episode
        _emit("Chunked on vs off, per router (improvement = 1 - on/off; Holm across routers):")
        _emit()
        _emit(chunked_vs_unchunked(results["off"], results["on"]))
        _emit()


def table3_code() -> None:
    """Chunked prefill off vs on with long prompts: Azure 2023 code at utilisation 0.8."""
    off, on = make_cluster("a100x4"), make_cluster("a100x4-chunked")
    trace = load_trace("azure-2023-code")
    capacity = capacity_req_per_s(trace, off)
    rate = offered_rate_req_per_s(trace)
    factor = 0.8 * capacity / rate
    train, test = split_train_test(
        scale_arrival_rate(trace, factor), n_requests=400, test_fraction=0.9, drop_partial=True
    )
    while len(test) > 20:  # the latest 20 windows are replayed, as in `real`
        train.append(test.pop(0))
    train_trace = original_clock(train)
    predictor = fit_length_predictor(
        train_trace, time_buckets(off.instances[0].latency), features=("prompt_tokens",)
    )
    eps = [e.trace for e in test]
    _emit(
        f"#### Table 3 shape with long prompts: azure-2023-code at utilisation 0.8 of a100x4 "
        f"({rate * factor:.2f} req/s, capacity {capacity:.2f} req/s), {len(eps)} held-out "
        f"episodes of 400 requests, predictor (prompt tokens) on {train_trace.height} "
        "earlier requests"
    )
    _emit()
    results: dict[str, pl.DataFrame] = {}
    for cluster, tag in ((off, "off"), (on, "on")):
        cmp, _ = compare_on_episodes(
            eps, cluster, SECTION61_ROUTERS, predictor=predictor, metrics=CHUNK_METRICS
        )
        _emit(
            f"Chunked prefill {tag} (max batched tokens "
            f"{cluster.instances[0].max_batched_tokens}), mean E2E:"
        )
        _emit()
        _emit(cmp.to_markdown())
        _emit()
        results[tag] = cmp.per_episode
    for metric in CHUNK_METRICS:
        _emit(
            f"Chunked on vs off, per router, mean {metric} (improvement = 1 - on/off; "
            "Holm across routers):"
        )
        _emit()
        _emit(chunked_vs_unchunked(results["off"], results["on"], metric=metric))
        _emit()


#: Metrics of the chunked-prefill comparison with long prompts.
CHUNK_METRICS: tuple[str, ...] = ("e2e_s", "ttft_s", "tbt_mean_s")


def chunked_vs_unchunked(off: pl.DataFrame, on: pl.DataFrame, *, metric: str = "e2e_s") -> str:
    """Per router: chunked (``on``) vs unchunked (``off``) mean ``metric``, paired by episode."""
    rows: list[pl.DataFrame] = []
    for tag, frame in (("off", off), ("on", on)):
        # per_episode carries the router's value; the baseline RR value is repeated
        part = frame.filter((pl.col("metric") == metric) & (pl.col("statistic") == "mean"))
        rr = part.select("episode", pl.col("baseline_value_s").alias("value_s")).unique(
            "episode", keep="first", maintain_order=True
        )
        rows.append(
            pl.concat(
                [
                    part.select("router", "episode", "value_s"),
                    rr.with_columns(pl.lit("round-robin").alias("router")).select(
                        "router", "episode", "value_s"
                    ),
                ]
            ).with_columns(pl.lit(tag).alias("chunked"))
        )
    both = pl.concat(rows)
    label = "E2E" if metric == "e2e_s" else metric
    lines = [
        f"| router | mean {label} off (s) | mean {label} on (s) | improvement (on vs off) "
        "| 95 % CI | p t-test (Holm) | p Wilcoxon (Holm) | episodes better |",
        "|---|---|---|---|---|---|---|---|",
    ]
    # one compare_routers call per router: the per-episode means are the "requests"
    comps = []
    for router in SECTION61_ROUTERS:
        sub = both.filter(pl.col("router") == router).select(
            pl.col("chunked").alias("router"), "episode", pl.col("value_s").alias("e2e_s")
        )
        comps.append(
            compare_routers(sub, baseline="off", statistics=("mean",), n_boot=N_BOOT, seed=0).get(
                "on"
            )
        )
    holm_t = holm_adjust([c.p_ttest for c in comps])
    holm_w = holm_adjust([c.p_wilcoxon for c in comps])
    for router, c, pt, pw in zip(SECTION61_ROUTERS, comps, holm_t, holm_w, strict=True):
        lines.append(
            f"| {router} | {c.baseline_value_s:.3f} | {c.router_value_s:.3f} "
            f"| {_pct(c.relative_improvement)} | [{_pct(c.ci_low)}, {_pct(c.ci_high)}] "
            f"| {_p(float(pt))} | {_p(float(pw))} | {c.n_episodes_improved}/{c.n_episodes} |"
        )
    return "\n".join(lines)


def hetero_3k5k7k() -> None:
    """System B: 3000/5000/7000 tok/s servers, Azure code trace, its four baselines."""
    trace = load_trace("azure-2023-code")
    cluster = make_cluster("hetero-3k5k7k")
    episodes = [e.trace for e in split_episodes(trace, n_requests=400, drop_partial=True)]
    capacity = capacity_req_per_s(trace, cluster)
    rate = offered_rate_req_per_s(trace)
    for label, factor in (("logged rate", 1.0), ("utilisation 0.6", 0.6 * capacity / rate)):
        eps = [scale_arrival_rate(e, factor) for e in episodes]
        cmp, summaries = compare_on_episodes(
            eps,
            cluster,
            HETERO_3K5K7K_ROUTERS,
            predictor=None,
            metrics=("e2e_s", "service_s", "slo_violation"),
            statistics=("mean",),
            requests_hook=add_slo_column,
        )
        _emit(
            f"#### System B at the {label}: `hetero-3k5k7k` (3000/5000/7000 tok/s, "
            f"concurrency 3/5/7), Azure 2023 code, {len(eps)} episodes of 400 requests, "
            f"rate {rate * factor:.2f} req/s, capacity {capacity:.2f} req/s "
            f"(utilisation {rate * factor / capacity:.2f})"
        )
        _emit()
        _emit("Mean response time (E2E, queueing included):")
        _emit()
        _emit(cmp.to_markdown())
        _emit()
        _emit(f"SLO violation rate (share of requests with E2E > {SLO_E2E_S:g} s):")
        _emit()
        _emit(cmp.to_markdown("slo_violation", unit="share"))
        _emit()
        _emit("Mean response time without queueing (E2E - router wait - instance queue wait):")
        _emit()
        _emit(cmp.to_markdown("service_s"))
        _emit()


REAL_TRACES: dict[str, int] = {"azure-2023-conv": 800, "azure-2023-code": 400}


def real(sources: Sequence[str] = tuple(REAL_TRACES)) -> None:
    """Azure 2023 conv and code on a100x4 at 60/80/90 % utilisation, every heuristic router.

    Each trace is cut into windows of ``REAL_TRACES[source]`` requests (24 conv, 22 code
    windows); the latest 20 are replayed, the earlier ones fit the predictor.
    """
    cluster = make_cluster("a100x4")
    scheme = time_buckets(cluster.instances[0].latency)
    routers = HEURISTIC_ROUTERS
    for source in sources:
        episode_requests = REAL_TRACES[source]
        trace = load_trace(source)
        capacity = capacity_req_per_s(trace, cluster)
        rate = offered_rate_req_per_s(trace)
        for u in UTILISATIONS:
            factor = u * capacity / rate
            scaled = scale_arrival_rate(trace, factor)
            train, test = split_train_test(
                scaled, n_requests=episode_requests, test_fraction=0.9, drop_partial=True
            )
            while len(test) > 20:  # keep 20 held-out episodes (the latest ones)
                train.append(test.pop(0))
            train_trace = original_clock(train)
            predictor = fit_length_predictor(train_trace, scheme, features=("prompt_tokens",))
            cmp, _ = compare_on_episodes(
                [e.trace for e in test],
                cluster,
                routers,
                predictor=predictor,
            )
            _emit(
                f"#### {source} on a100x4 at utilisation {u:.1f}: logged rate {rate:.2f} req/s "
                f"x {factor:.2f} = {rate * factor:.2f} req/s, capacity {capacity:.2f} req/s; "
                f"{len(test)} held-out episodes of {episode_requests} requests, predictor "
                f"(prompt tokens) on {train_trace.height} earlier requests"
            )
            _emit()
            _emit(cmp.to_markdown())
            _emit()
            _emit("p99 E2E:")
            _emit()
            _emit(cmp.to_markdown(statistic="p99"))
            _emit()


PARTS: dict[str, Callable[[], None]] = {
    "smoke": smoke,
    "section61": section61,
    "table3": table3,
    "table3-code": table3_code,
    "hetero-3k5k7k": hetero_3k5k7k,
    "real": real,
    "real-conv": partial(real, ("azure-2023-conv",)),
    "real-code": partial(real, ("azure-2023-code",)),
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run one part; tables go to stdout, the wall time to stderr."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=sorted(PARTS))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    PARTS[args.part]()
    print(f"{args.part}: wall time {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
