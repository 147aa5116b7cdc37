"""Peak memory and time of describe / windowing on big Azure-2024-format traces.

The Azure 2024 week-long traces hold 16.8M (code) and 27.3M (conv) requests. This
script writes a synthetic file in that format (``TIMESTAMP,ContextTokens,GeneratedTokens``
with ``2024-05-12 00:00:00.001163+00:00`` timestamps, one week, sorted) and measures, in
a fresh child process per measurement, wall time, peak RSS (``VmHWM``) and peak
anonymous / file-backed RSS (sampled every 20 ms from ``/proc/self/status``; Polars
memory-maps the CSV, so its resident file pages count in RSS but are page cache) of:

- ``describe``: ``describe_trace(scan_trace(path))``;
- ``window``: one 1-hour window collected with the streaming engine
  (``scan_trace(path).filter(...).collect(engine="streaming")``).

Run (not part of CI; sizes in millions of rows)::

    ROUTEPLAY_DATA_DIR=../shared/data .venv/bin/python benchmarks/bench_bigtrace.py \
        --rows-m 1 5 16.8 --dir runs/bigtrace

The pytest entry point (``-m benchmark``) runs the 1M-row size only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest

WEEK_S = 7 * 24 * 3600.0
_CHUNK_ROWS = 1_000_000


def write_azure2024(path: Path, n_rows: int, seed: int = 0) -> None:
    """Write ``n_rows`` sorted requests over one week in the Azure 2024 CSV format."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    start = np.datetime64("2024-05-12T00:00:00", "us")
    # sorted uniform arrivals, generated chunk by chunk: chunk k covers its share of the week
    n_chunks = max(1, -(-n_rows // _CHUNK_ROWS))
    with path.open("wb") as fh:
        fh.write(b"TIMESTAMP,ContextTokens,GeneratedTokens\n")
        for k in range(n_chunks):
            n = min(_CHUNK_ROWS, n_rows - k * _CHUNK_ROWS)
            lo, hi = WEEK_S * k / n_chunks, WEEK_S * (k + 1) / n_chunks
            offsets_us = np.sort(rng.uniform(lo, hi, n) * 1e6).astype(np.int64)
            frame = pl.DataFrame(
                {
                    "TIMESTAMP": pl.Series(
                        start + offsets_us.astype("timedelta64[us]")
                    ).dt.strftime("%Y-%m-%d %H:%M:%S%.6f+00:00"),
                    "ContextTokens": rng.lognormal(7.0, 1.0, n).astype(np.int64) + 1,
                    "GeneratedTokens": rng.lognormal(5.0, 1.0, n).astype(np.int64) + 1,
                }
            )
            frame.write_csv(fh, include_header=False)


_CHILD = r"""
import json, sys, threading, time
import polars as pl
peak = {"RssAnon": 0, "RssFile": 0}
def sample():
    while True:
        for line in open("/proc/self/status"):
            key = line.split(":")[0]
            if key in peak:
                peak[key] = max(peak[key], int(line.split()[1]))
        time.sleep(0.02)
threading.Thread(target=sample, daemon=True).start()
from routeplay.datasets import describe_trace, scan_trace
path, what = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if what == "describe":
    d = describe_trace(scan_trace(path))
    out = {"n_requests": d.n_requests, "span_s": d.span_s}
elif what == "window":
    lf = scan_trace(path)
    w = lf.filter(pl.col("arrival_s") >= 3600.0, pl.col("arrival_s") < 7200.0).collect(
        engine="streaming")
    out = {"n_requests": w.height}
else:
    raise SystemExit(f"unknown measurement {what!r}")
out["wall_s"] = time.perf_counter() - t0
# VmHWM, not ru_maxrss: the latter keeps the parent's RSS at fork (e.g. under pytest)
out["peak_rss_mib"] = next(
    int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")
) / 1024
out["peak_anon_mib"] = peak["RssAnon"] / 1024  # heap: excludes the mmap-ed file pages
out["peak_file_mib"] = peak["RssFile"] / 1024
print(json.dumps(out))
"""


def measure(path: Path, what: str) -> dict[str, Any]:
    """Run one measurement in a fresh interpreter; returns its JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, str(path), what], capture_output=True, text=True, check=True
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.benchmark
def test_bench_bigtrace_1m(tmp_path: Path) -> None:
    path = tmp_path / "azure2024-1m.csv"
    write_azure2024(path, 1_000_000)
    for what in ("describe", "window"):
        out = measure(path, what)
        print(what, out)
        assert out["n_requests"] > 0


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows-m", type=float, nargs="+", default=[1.0])
    parser.add_argument("--dir", default="runs/bigtrace")
    parser.add_argument("--what", nargs="+", default=["describe", "window"])
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    for rows_m in args.rows_m:
        n = int(round(rows_m * 1e6))
        path = folder / f"azure2024-{rows_m:g}m.csv"
        if not path.exists():
            t0 = time.perf_counter()
            write_azure2024(path, n)
            print(
                f"wrote {path} ({path.stat().st_size / 2**20:.0f} MiB) in "
                f"{time.perf_counter() - t0:.1f} s",
                flush=True,
            )
        for what in args.what:
            out = measure(path, what)
            print(json.dumps({"rows": n, "what": what, **out}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
