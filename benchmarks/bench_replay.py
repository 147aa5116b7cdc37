"""Replay speed: simulated requests per wall second.

Full run (pytest-benchmark, one round each):

    ROUTEPLAY_DATA_DIR=../shared/data .venv/bin/python -m pytest benchmarks/bench_replay.py \
        -m benchmark --benchmark-enable

Quick mode (prints requests per wall second, `--full` adds the 1M-request trace):

    ROUTEPLAY_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_replay.py [--full]

Setup: the Azure LLM inference 2023 conversation trace (19,366 requests, one hour) on 4
instances of the ``llama2-7b/a100`` preset with ``kv_capacity_tokens = 117,000`` and
``max_batched_tokens = 16,384`` (the trace has prompts up to 14,050 tokens; without
chunking they must fit one iteration), fast mode, no timelines; the registry's
``round-robin``, ``jsq-tokens`` (a scoring router: fewest outstanding tokens, i.e.
pending prefill + decode left, read from ``ClusterState``) and ``min-min`` (earliest
estimated completion from each instance's latency model). The synthetic trace has
1,000,000 requests with Poisson arrivals at 5 req/s (the conv trace averages 5.5 req/s)
and the conv trace's token lengths (rows resampled with seed 0).

``benchmarks/speed.py`` (every figure of issue 16 in one table) reuses these setups.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

import numpy as np
import polars as pl
import pytest
from routeplay.datasets import load_trace
from routeplay.replay import ClusterConfig, ReplayConfig, make_cluster, make_router, run_replay

CONFIG = ReplayConfig(timeline_sample_interval_s=None)
#: round robin, a scoring router over ClusterState tokens, and min-min (registry names)
ROUTERS: tuple[str, ...] = ("round-robin", "jsq-tokens", "min-min")


def conv_trace() -> pl.DataFrame:
    trace: pl.DataFrame = load_trace("azure-2023-conv")
    return trace


def cluster() -> ClusterConfig:
    base = make_cluster("a100x4")
    return dataclasses.replace(
        base,
        instances=tuple(dataclasses.replace(i, max_batched_tokens=16_384) for i in base.instances),
    )


def synthetic_trace(
    n: int, rate_per_s: float = 5.0, seed: int = 0, lengths: pl.DataFrame | None = None
) -> pl.DataFrame:
    """``n`` Poisson arrivals with token lengths resampled from ``lengths`` (default: conv)."""
    conv = conv_trace() if lengths is None else lengths
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    rows = rng.integers(0, conv.height, n)
    return pl.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.uint64),
            "arrival_s": np.cumsum(rng.exponential(1.0 / rate_per_s, n)),
            "prompt_tokens": conv["prompt_tokens"].to_numpy()[rows],
            "output_tokens": conv["output_tokens"].to_numpy()[rows],
        }
    )


def timed_replay(
    trace: pl.DataFrame, router: str, *, mode: str = "fast"
) -> tuple[float, dict[str, float]]:
    """Wall seconds and summary of one replay of ``trace`` on :func:`cluster` (no timelines)."""
    config = dataclasses.replace(CONFIG, mode=mode)
    cl = cluster()
    t = time.perf_counter()
    res = run_replay(trace, cl, make_router(router), config=config)
    wall = time.perf_counter() - t
    return wall, res.summary


@pytest.mark.benchmark
@pytest.mark.parametrize("router", ROUTERS)
def test_bench_conv(benchmark: Any, router: str) -> None:
    trace = conv_trace()
    res = benchmark.pedantic(
        lambda: run_replay(trace, cluster(), make_router(router), config=CONFIG),
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info["requests_per_wall_s"] = trace.height / benchmark.stats["mean"]
    assert res.requests.height == trace.height


@pytest.mark.benchmark
def test_bench_synthetic_1m(benchmark: Any) -> None:
    trace = synthetic_trace(1_000_000)
    res = benchmark.pedantic(
        lambda: run_replay(trace, cluster(), make_router("round-robin"), config=CONFIG),
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info["requests_per_wall_s"] = trace.height / benchmark.stats["mean"]
    assert res.requests.height == trace.height


def main(argv: list[str]) -> None:
    trace = conv_trace()
    for router in ROUTERS:
        wall, s = timed_replay(trace, router)
        print(
            f"conv {trace.height} req, {router}: {wall:.2f} s wall, "
            f"{trace.height / wall:,.0f} req/s; e2e mean {s['e2e_s_mean']:.3f} s, "
            f"p99 {s['e2e_s_p99']:.3f} s"
        )
    if "--full" in argv:
        big = synthetic_trace(1_000_000, lengths=trace)
        wall, s = timed_replay(big, "round-robin")
        print(
            f"synthetic {big.height} req, round-robin: {wall:.1f} s wall, "
            f"{big.height / wall:,.0f} req/s; e2e mean {s['e2e_s_mean']:.3f} s"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
