"""Engine.fork speed: milliseconds per fork with ~100 requests in flight on 4 instances.

Full run (pytest-benchmark):

    .venv/bin/python -m pytest benchmarks/bench_fork.py -m benchmark --benchmark-enable

Quick mode (prints ms per fork and per ``copy.deepcopy``; the numbers in
``docs/notes/headroom.md`` come from it):

    .venv/bin/python benchmarks/bench_fork.py

Setup: ``paper-4xv100`` (4 x Llama-2-7B on V100, the paper's latency model, 30,000 KV
tokens each), a synthetic trace of 2,000 requests (Poisson arrivals at 8 req/s,
prompts uniform in [20, 600), outputs uniform in [10, 400), seed 0) routed round robin
until 100 requests are in flight (queued or running: ~25 per instance). The same state
is forked repeatedly; the fork of a 20,000-row trace shows the O(rows) part (the
per-request result columns). No data files are needed. ``benchmarks/speed.py`` reuses
this setup (``engine_in_flight``, ``ms_per_call``).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import numpy as np
import polars as pl
import pytest
from routeplay.replay import Engine, make_cluster, make_router

IN_FLIGHT = 100


def trace(n: int = 2000, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    return pl.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": np.cumsum(rng.exponential(1 / 8, n)),
            "prompt_tokens": rng.integers(20, 600, n),
            "output_tokens": rng.integers(10, 400, n),
        }
    )


def engine_in_flight(n_rows: int = 2000, in_flight: int = IN_FLIGHT) -> Engine:
    """An engine paused at the first decision with ``in_flight`` requests in flight."""
    cluster = make_cluster("paper-4xv100")
    eng = Engine(trace(n_rows), cluster)
    router = make_router("round-robin")
    router.reset(cluster, eng.router_rng())
    while (d := eng.next_decision()) is not None:
        if eng.n_in_flight >= in_flight:
            return eng
        eng.apply(router.route(*d))
    raise RuntimeError("the trace never reached the requested number of requests in flight")


def ms_per_call(fn: Any, n: int) -> float:
    """Milliseconds per call of ``fn`` over ``n`` calls (after one warm-up call)."""
    fn()  # warm up
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e3


@pytest.mark.benchmark
def test_bench_fork(benchmark: Any) -> None:
    eng = engine_in_flight()
    fork = benchmark(eng.fork)
    assert fork.now_s == eng.now_s


@pytest.mark.benchmark
def test_bench_deepcopy(benchmark: Any) -> None:
    eng = engine_in_flight()
    benchmark.pedantic(copy.deepcopy, args=(eng,), rounds=5, iterations=1)


def main() -> None:
    eng = engine_in_flight()
    s = eng.state()  # public state only (the engine's internals change)
    print(
        f"t = {eng.now_s:.2f} s, in flight = {eng.n_in_flight} "
        f"(running {s.n_running.tolist()}, queued {s.n_queued.tolist()}, "
        f"at the router {s.router_queue_len})"
    )
    fork_ms = min(ms_per_call(eng.fork, 2000) for _ in range(5))
    deep_ms = min(ms_per_call(lambda: copy.deepcopy(eng), 5) for _ in range(3))
    print(f"Engine.fork:   {fork_ms:.4f} ms per fork (best of 5 x 2,000)")
    print(f"copy.deepcopy: {deep_ms:.1f} ms per copy (best of 3 x 5)")
    print(f"speed-up:      {deep_ms / fork_ms:.0f}x")
    big = engine_in_flight(n_rows=20_000)
    big_ms = min(ms_per_call(big.fork, 1000) for _ in range(5))
    print(f"Engine.fork, 20,000-row trace: {big_ms:.4f} ms per fork")


if __name__ == "__main__":
    main()
