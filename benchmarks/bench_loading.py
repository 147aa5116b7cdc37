"""Loading benchmark: a generated 10M-row Azure-2023-format CSV.

Two ways to run it:

- ``python benchmarks/bench_loading.py [--rows N]``: generates the file in a temp
  dir, then runs each step (``scan_azure -> describe_trace``, ``scan_azure -> collect``,
  ``load_trace``) in a fresh subprocess and prints wall time and peak RSS
  (``resource.getrusage(RUSAGE_SELF).ru_maxrss`` of that subprocess).
- ``pytest benchmarks/bench_loading.py -m benchmark --benchmark-enable``: the same
  steps under pytest-benchmark, on a smaller file (``ROUTEPLAY_BENCH_ROWS``, default 1M).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

STEPS = {
    "describe": (
        "from routeplay.datasets import scan_azure, describe_trace\n"
        "d = describe_trace(scan_azure(PATH))\n"
        "result = d.n_requests"
    ),
    "collect": (
        "from routeplay.datasets import scan_azure\n"
        "f = scan_azure(PATH).collect()\n"
        "result = f.height"
    ),
    "load_trace": (
        "from routeplay.datasets import load_trace\n"
        "f = load_trace(PATH, format='azure')\n"
        "result = f.height"
    ),
}


def write_azure_csv(path: Path, n_rows: int, seed: int = 0) -> None:
    """Write ``n_rows`` requests in the exact Azure 2023 format (CRLF, no final newline)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    gaps_100ns = rng.exponential(2_000_000.0, n_rows).astype(np.int64)  # ~0.2 s mean gap
    offsets_ns = np.cumsum(gaps_100ns) * 100
    frame = pl.DataFrame(
        {
            "TIMESTAMP": pl.Series(offsets_ns).cast(pl.Duration("ns")),
            "ContextTokens": rng.integers(1, 8000, n_rows, dtype=np.int64),
            "GeneratedTokens": rng.integers(1, 1000, n_rows, dtype=np.int64),
        }
    ).with_columns(
        (pl.col("TIMESTAMP") + pl.datetime(2023, 11, 16, 18, 17, 3, time_unit="ns"))
        .dt.strftime("%Y-%m-%d %H:%M:%S%.f")
        .str.slice(0, 27)
    )
    frame.write_csv(path, line_terminator="\r\n")
    with path.open("rb+") as handle:  # upstream files have no final newline
        handle.seek(-2, os.SEEK_END)
        handle.truncate()


def run_step(step: str, path: Path) -> dict[str, float]:
    """Run one step in a fresh interpreter; return wall seconds and peak RSS in MiB."""
    code = (
        "import json, resource, time\n"
        f"PATH = {str(path)!r}\n"
        "t0 = time.perf_counter()\n"
        f"{STEPS[step]}\n"
        "wall = time.perf_counter() - t0\n"
        "rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024\n"
        "print(json.dumps({'wall_s': wall, 'peak_rss_mib': rss, 'n_rows': result}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def bench_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    n_rows = int(os.environ.get("ROUTEPLAY_BENCH_ROWS", "1000000"))
    path = tmp_path_factory.mktemp("bench") / "azure.csv"
    write_azure_csv(path, n_rows)
    return path


@pytest.mark.benchmark
@pytest.mark.parametrize("step", ["describe", "collect"])
def test_loading(benchmark, bench_file: Path, step: str) -> None:  # type: ignore[no-untyped-def]
    from routeplay.datasets import describe_trace, scan_azure

    def work() -> int:
        if step == "describe":
            return describe_trace(scan_azure(bench_file)).n_requests
        return scan_azure(bench_file).collect().height

    n = benchmark.pedantic(work, rounds=1, iterations=1)
    assert n == int(os.environ.get("ROUTEPLAY_BENCH_ROWS", "1000000"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "azure_10m.csv"
        t0 = time.perf_counter()
        write_azure_csv(path, args.rows)
        size_mib = path.stat().st_size / 2**20
        gen_s = time.perf_counter() - t0
        print(f"generated {args.rows:,} rows ({size_mib:,.0f} MiB) in {gen_s:.1f} s")
        for step in STEPS:
            result = run_step(step, path)
            print(
                f"{step:<12} wall {result['wall_s']:6.2f} s   peak RSS "
                f"{result['peak_rss_mib']:7.0f} MiB   rows {int(result['n_rows']):,}"
            )


if __name__ == "__main__":
    main()
