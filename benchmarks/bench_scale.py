"""Scale benchmarks: replay throughput by cluster size and router cost, transition
logging throughput, sweep throughput, and the replay scaling curve (10k/100k/1M).

All use a synthetic trace (Poisson arrivals at 1.25 req/s per instance, prompts uniform
in [16, 2048) tokens, outputs uniform in [8, 512) tokens, seeded). Policy decision
latency and d3rlpy training steps/s are measured in ``benchmarks/bench_policy.py``
(offline_rl); the per-engine replay benchmark is ``benchmarks/bench_replay.py``.

Run every benchmark (one command)::

    ROUTEPLAY_DATA_DIR=../shared/data .venv/bin/python -m pytest benchmarks -m benchmark \
        --benchmark-enable

This file alone, plus the scaling curve with peak memory per size (each size replayed
in a fresh child process after a 200-request warm-up replay, line fit and R^2 printed)::

    .venv/bin/python -m pytest benchmarks/bench_scale.py -m benchmark --benchmark-enable
    .venv/bin/python benchmarks/bench_scale.py --curve 10000 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from routeplay.replay import (
    ClusterConfig,
    ReplayConfig,
    cluster_from_dict,
    log_transitions,
    make_router,
    run_replay,
)

CONFIG = ReplayConfig(timeline_sample_interval_s=None)
RATE_PER_INSTANCE_S = 1.25


def synthetic_trace(n: int, rate_per_s: float, seed: int = 0) -> pl.DataFrame:
    """A seeded synthetic trace in the canonical schema."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    return pl.DataFrame(
        {
            "request_id": np.arange(n, dtype=np.uint64),
            "arrival_s": np.cumsum(rng.exponential(1.0 / rate_per_s, n)),
            "prompt_tokens": rng.integers(16, 2048, n).astype(np.uint32),
            "output_tokens": rng.integers(8, 512, n).astype(np.uint32),
        }
    )


def a100_cluster(n_instances: int) -> ClusterConfig:
    """``n_instances`` Llama-2-7B A100 replicas (the a100x4 preset, any size)."""
    return cluster_from_dict(
        {
            "instances": [
                {
                    "name": "a100",
                    "count": n_instances,
                    "preset": "llama2-7b/a100",
                    "kv_capacity_tokens": 117_000,
                    "max_batched_tokens": 16_384,
                }
            ]
        }
    )


@pytest.mark.benchmark
@pytest.mark.parametrize("n_instances", [4, 32], ids=["4-instances", "32-instances"])
@pytest.mark.parametrize("router", ["round-robin", "llm-d", "impact-greedy"])
def test_bench_replay_throughput(benchmark: Any, n_instances: int, router: str) -> None:
    n = 2_500 if n_instances == 4 else 10_000
    trace = synthetic_trace(n, RATE_PER_INSTANCE_S * n_instances)
    cluster = a100_cluster(n_instances)
    res = benchmark.pedantic(
        lambda: run_replay(trace, cluster, make_router(router), config=CONFIG),
        rounds=1,
        iterations=1,
    )
    benchmark.extra_info["n_requests"] = n
    benchmark.extra_info["requests_per_wall_s"] = n / benchmark.stats["mean"]
    assert res.requests.height == n


@pytest.mark.benchmark
def test_bench_log_transitions(benchmark: Any, tmp_path: Path) -> None:
    trace = synthetic_trace(2_500, RATE_PER_INSTANCE_S * 4)
    cluster = a100_cluster(4)
    out = benchmark.pedantic(
        lambda: log_transitions(
            [trace],
            cluster,
            make_router("round-robin"),
            reward="paper-workload-aware",
            path=tmp_path / "t.parquet",
            epsilon=0.1,
            seed=0,
        ),
        rounds=1,
        iterations=1,
    )
    n_rows = pl.scan_parquet(tmp_path / "t.parquet").select(pl.len()).collect().item()
    benchmark.extra_info["n_transitions"] = n_rows
    benchmark.extra_info["transitions_per_wall_s"] = n_rows / benchmark.stats["mean"]
    assert n_rows > 0 and out is not None


@pytest.mark.benchmark
@pytest.mark.parametrize("backend", ["serial", "process"])
def test_bench_sweep(benchmark: Any, backend: str) -> None:
    from routeplay.replay import SweepGrid, run_sweep

    grid = SweepGrid(
        trace="azure-2023-code",
        episode_n_requests=1_000,
        episodes=tuple(range(8)),
        routers={"rr": "round-robin"},
        clusters=("paper-4xv100",),
    )
    res = benchmark.pedantic(
        lambda: run_sweep(grid, backend=backend, n_workers=2),
        rounds=1,
        iterations=1,  # type: ignore[arg-type]
    )
    benchmark.extra_info["cells_per_wall_s"] = res.cells.height / benchmark.stats["mean"]
    assert res.n_failed == 0


_CHILD = r"""
import json, sys, time
def vm(key):  # from /proc: ru_maxrss would include the parent's RSS at fork (kept by exec)
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
sys.path.insert(0, sys.argv[2])
from bench_scale import CONFIG, RATE_PER_INSTANCE_S, a100_cluster, synthetic_trace
from routeplay.replay import make_router, run_replay
n = int(sys.argv[1])
trace = synthetic_trace(n, RATE_PER_INSTANCE_S * 4)
cluster = a100_cluster(4)
run_replay(synthetic_trace(200, 5.0, seed=1), cluster, make_router("round-robin"), config=CONFIG)
before = vm("VmHWM")
t0 = time.perf_counter()
res = run_replay(trace, cluster, make_router("round-robin"), config=CONFIG)
wall = time.perf_counter() - t0
print(json.dumps({
    "n_requests": n, "wall_s": wall,
    "peak_rss_mib": vm("VmHWM"),
    "rss_before_replay_mib": before,
    "trace_mib": trace.estimated_size() / 2**20,
    "result_mib": res.requests.estimated_size() / 2**20,
}))
"""


def replay_point(n: int) -> dict[str, Any]:
    """Replay ``n`` synthetic requests (4 x A100, round robin) in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(n), str(Path(__file__).parent)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def fit_line(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares ``y = a + b x``; returns (a, b, R^2)."""
    b, a = np.polyfit(x, y, 1)
    pred = a + b * x
    r2 = 1.0 - float(np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))
    return float(a), float(b), r2


@pytest.mark.benchmark
def test_bench_scaling_curve() -> None:
    points = [replay_point(n) for n in (10_000, 100_000, 1_000_000)]
    x = np.array([p["n_requests"] for p in points], dtype=float)
    a, b, r2 = fit_line(x, np.array([p["wall_s"] for p in points]))
    print(json.dumps({"points": points, "intercept_s": a, "s_per_request": b, "r2": r2}))
    assert r2 > 0.0


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--curve", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    args = parser.parse_args(argv)
    points = []
    for n in args.curve:
        p = replay_point(n)
        points.append(p)
        print(json.dumps(p), flush=True)
    x = np.array([p["n_requests"] for p in points], dtype=float)
    for key in ("wall_s", "peak_rss_mib"):
        a, b, r2 = fit_line(x, np.array([p[key] for p in points]))
        print(json.dumps({"fit": key, "intercept": a, "slope_per_request": b, "r2": r2}))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main(sys.argv[1:])
