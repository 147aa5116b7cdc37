"""Fidelity under load: routeplay's engine against Microsoft Vidur on the same work (issue 14).

Setup (docs/notes/fidelity.md explains every choice and every remaining difference):

* trace: Vidur's ``splitwise_conv.csv`` (19,366 Azure 2023 conversation requests), read
  with ``max_tokens=4096`` (Vidur cuts prompts so that prompt + output <= 4,096);
* rates: the trace's own arrivals (1x) and arrivals x 0.25 (4x, Vidur's
  ``time_scale_factor = 0.25``);
* cluster ``vidur-a100x4-forest`` (the default): 4 x Llama-2-7B on A100, 7,424 KV blocks
  of 16 tokens, batch cap 128, 4,096 tokens per batch, ``scheduler="vllm-v0"``, 1 %
  watermark, every iteration priced by the clock ``vidur-forest/llama2-7b-a100`` (Vidur's
  composition and random forests, fitted on the same profiling tables); and
  ``vidur-a100x4``, the same with the linear preset ``llama2-7b/a100-vidur`` as the clock;
  router ``round-robin``; fast mode;
* Vidur's side: the per-request file ``vidur_reference/conv-x4/request_metrics.csv``
  (4x). There is no per-request file for 1x: its row quotes the figures measured with
  Vidur that issue 14 and the reference README give (``VIDUR_1X``).

Run (one command, about 30 s)::

    .venv/bin/python benchmarks/fidelity_vidur.py --data-dir ../shared/data

``--sensitivity`` also replays 4x with every latency coefficient scaled by 0.98-1.02
(how much the overloaded 4x run moves per 1 % of iteration time); ``--scheduler
vllm-v1`` replays the same cluster with the default (mixed-iteration) rules instead,
``--scheduler sarathi`` with stall-free batching in chunks of the cluster's 4,096-token
budget (an ablation: the Vidur reference ran its vLLM scheduler).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
import warnings
from pathlib import Path

import numpy as np
import polars as pl
from routeplay.datasets import load_trace
from routeplay.replay import (
    ClusterConfig,
    ReplayConfig,
    make_cluster,
    make_router,
    run_replay,
    with_instance_settings,
)

#: Vidur at 1x on the same trace and cluster (issue 14's table; no per-request file):
#: mean / p50 / p99 E2E and mean TTFT, seconds. p50 TTFT was not reported.
VIDUR_1X: dict[str, float] = {
    "e2e_mean_s": 2.858,
    "e2e_p50_s": 1.792,
    "e2e_p99_s": 8.434,
    "ttft_mean_s": 0.0982,
}
METRICS = ("e2e_mean_s", "e2e_p50_s", "e2e_p99_s", "ttft_mean_s", "ttft_p50_s")
_COEFFICIENTS = (
    "intercept_s",
    "prefill_batch_s",
    "prefill_s_per_token",
    "prefill_s_per_token2",
    "decode_s_per_seq",
    "decode_s_per_context_token",
)


def summarize(e2e_s: np.ndarray, ttft_s: np.ndarray) -> dict[str, float]:
    """Mean/p50/p99 of E2E and mean/p50 of TTFT (linear-interpolation quantiles)."""
    return {
        "e2e_mean_s": float(np.mean(e2e_s)),
        "e2e_p50_s": float(np.quantile(e2e_s, 0.5)),
        "e2e_p99_s": float(np.quantile(e2e_s, 0.99)),
        "ttft_mean_s": float(np.mean(ttft_s)),
        "ttft_p50_s": float(np.quantile(ttft_s, 0.5)),
    }


def vidur_4x(data_dir: Path) -> tuple[dict[str, float], int]:
    """Vidur's 4x figures from its per-request file, and its preemption (restart) count."""
    ref = pl.read_csv(data_dir / "vidur_reference/conv-x4/request_metrics.csv")
    stats = summarize(ref["request_e2e_time"].to_numpy(), ref["prefill_e2e_time"].to_numpy())
    return stats, int(ref["request_num_restarts"].sum())


def scaled(cluster: ClusterConfig, factor: float) -> ClusterConfig:
    """``cluster`` with every latency coefficient multiplied by ``factor``."""
    instances = []
    for inst in cluster.instances:
        lat = inst.latency
        lat2 = dataclasses.replace(lat, **{k: getattr(lat, k) * factor for k in _COEFFICIENTS})
        instances.append(dataclasses.replace(inst, latency=lat2))
    return dataclasses.replace(cluster, instances=tuple(instances))


def replay(trace: pl.DataFrame, cluster: ClusterConfig) -> tuple[dict[str, float], int, float]:
    """Replay under round robin; returns the figures, preemptions and wall seconds."""
    t0 = time.perf_counter()
    res = run_replay(
        trace,
        cluster,
        make_router("round-robin"),
        config=ReplayConfig(timeline_sample_interval_s=None),
    )
    q = res.requests
    stats = summarize(q["e2e_s"].to_numpy(), q["ttft_s"].to_numpy())
    return stats, int(q["n_preemptions"].sum()), time.perf_counter() - t0


def _diff(ours: float, theirs: float | None) -> str:
    return "n/a" if theirs is None else f"{100.0 * (ours / theirs - 1.0):+.1f} %"


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else (f"{x:.4f}" if x < 1 else f"{x:.3f}")


def table(
    name: str,
    cluster: ClusterConfig,
    trace: pl.DataFrame,
    v4: dict[str, float],
    v4_restarts: int,
) -> None:
    """Replay ``cluster`` at 1x and 4x and print the comparison with Vidur."""
    schedulers = sorted({i.scheduler for i in cluster.instances})
    clocks = sorted({i.clock or "linear preset" for i in cluster.instances})
    print(
        f"\ncluster {name} (scheduler {', '.join(schedulers)}; clock {', '.join(clocks)}), "
        "round-robin, fast mode\n"
    )
    rows = []
    for label, scale, theirs in (("1x", 1.0, VIDUR_1X), ("4x", 0.25, v4)):
        work = trace.with_columns(pl.col("arrival_s") * scale)
        ours, n_pre, wall = replay(work, cluster)
        print(f"{label}: replayed {work.height:,} requests in {wall:.1f} s, {n_pre} preemptions")
        for metric in METRICS:
            ref = theirs.get(metric)
            rows.append((label, metric, ref, ours[metric]))
    print(f"4x Vidur: {v4_restarts} restarts (preemptions)\n")
    print("| rate | metric | Vidur | routeplay | diff |")
    print("|---|---|---|---|---|")
    for label, metric, ref, value in rows:
        print(f"| {label} | {metric} | {_fmt(ref)} | {_fmt(value)} | {_diff(value, ref)} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument(
        "--cluster",
        nargs="+",
        default=["vidur-a100x4-forest", "vidur-a100x4"],
        help="one or more clusters, each replayed at 1x and 4x (default: both Vidur clusters)",
    )
    parser.add_argument("--scheduler", choices=("vllm-v0", "vllm-v1", "sarathi"), default=None)
    parser.add_argument("--sensitivity", action="store_true")
    args = parser.parse_args(argv)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trace = load_trace(args.data_dir / "vidur_traces/splitwise_conv.csv", max_tokens=4096)
    for w in caught:
        print(f"loader: {w.message}")
    v4, v4_restarts = vidur_4x(args.data_dir)
    for name in args.cluster:
        cluster = make_cluster(name)
        if args.scheduler is not None:
            # sarathi always chunks (the chunk is the cluster's max_batched_tokens)
            chunked = args.scheduler == "sarathi"
            cluster = with_instance_settings(
                cluster, scheduler=args.scheduler, chunked_prefill=chunked
            )
        table(name, cluster, trace, v4, v4_restarts)
    if args.sensitivity:
        print("\n4x with every latency coefficient scaled (iteration times x factor):\n")
        print("| factor | " + " | ".join(METRICS) + " |")
        print("|---" * (len(METRICS) + 1) + "|")
        work = trace.with_columns(pl.col("arrival_s") * 0.25)
        linear = make_cluster("vidur-a100x4")  # scaling applies to the linear preset
        for factor in (0.98, 0.99, 1.0, 1.01, 1.02):
            ours, _, _ = replay(work, scaled(linear, factor))
            cells = " | ".join(f"{ours[m]:.2f} ({_diff(ours[m], v4[m])})" for m in METRICS)
            print(f"| {factor:.2f} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
