"""Sanity under load, for the scheduler variants (``vllm-v1``, ``vllm-v0``, ``sarathi``).

- Little's law on the timelines of a replay with hundreds of preemptions: the
  time-average number of requests at the instances equals the arrival rate times the
  mean time a request spends there (L = lambda W);
- work conservation under preemption: an instance with queued or running requests is
  never idle (sampled), KV use stays within capacity, and the sampled busy fraction is
  the reported utilisation;
- a saturated instance completes requests at exactly the steady-state capacity the
  latency model gives: B requests per (prefill of B prompts + decode run of B
  sequences), priced with ``LinearLatencyModel`` itself.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from fakes import RoundRobinFake
from routeplay.estimator._latency import LinearLatencyModel
from routeplay.replay._types import ClusterConfig, InstanceConfig
from routeplay.replay.engine._engine import run_replay
from routeplay.replay.engine._result import ReplayConfig

LAT = LinearLatencyModel(
    intercept_s=0.0099,
    prefill_batch_s=-0.0028,
    prefill_s_per_token=6.06e-5,
    prefill_s_per_token2=5.4e-9,
    decode_s_per_seq=3.9e-5,
    decode_s_per_context_token=2.7e-7,
)
SCHEDULERS = ["vllm-v1", "vllm-v0"]


def _preempting_replay(scheduler: str) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, float]]:
    # 1,200 requests at ~40 req/s on 2 instances of 9,600 KV tokens: overloaded in bursts,
    # hundreds of preemptions with both rule sets
    rng = np.random.default_rng(np.random.SeedSequence(14))
    n = 1200
    trace = pl.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": np.cumsum(rng.exponential(0.025, n)),
            "prompt_tokens": rng.integers(10, 1200, n),
            "output_tokens": rng.integers(1, 400, n),
        }
    )
    cluster = ClusterConfig(
        instances=tuple(
            InstanceConfig(
                name=f"i{k}",
                latency=LAT,
                kv_capacity_tokens=9600,
                max_running_seqs=64,
                max_batched_tokens=2048,
                scheduler=scheduler,  # type: ignore[arg-type]
                chunked_prefill=scheduler == "sarathi",  # sarathi always chunks
            )
            for k in range(2)
        )
    )
    res = run_replay(
        trace, cluster, RoundRobinFake(), config=ReplayConfig(timeline_sample_interval_s=0.002)
    )
    return res.requests, res.timelines, res.summary


@pytest.mark.parametrize("scheduler", [*SCHEDULERS, "sarathi"])
def test_littles_law_and_work_conservation_under_preemption(scheduler: str) -> None:
    q, tl, summary = _preempting_replay(scheduler)
    assert summary["n_preemptions"] > 100
    dt = 0.002
    # Little's law over the sampled span (every request is routed on arrival)
    per_time = tl.group_by("time_s").agg(in_system=(pl.col("n_queued") + pl.col("n_running")).sum())
    span_s = float(per_time["time_s"].max()) + dt - float(per_time["time_s"].min())  # type: ignore[operator]
    mean_in_system = float(per_time["in_system"].sum()) * dt / span_s
    total_time_s = float((q["finish_s"] - q["routed_s"]).sum())
    assert mean_in_system == pytest.approx(total_time_s / span_s, rel=0.01)
    # work conservation: never idle with work, never over the KV capacity
    has_work = (tl["n_queued"] + tl["n_running"]) > 0
    assert (tl["busy"] == has_work).all()
    assert (tl["kv_used_tokens"] <= 9600).all()
    for k in range(2):
        busy = tl.filter(pl.col("instance_id") == k)["busy"].mean()
        utilisation = summary[f"utilisation_{k}"] * summary["makespan_s"] / span_s
        assert busy == pytest.approx(utilisation, abs=0.01)


@pytest.mark.parametrize("mode", ["fast", "reference"])
@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_a_saturated_instance_runs_at_the_latency_models_capacity(
    scheduler: str, mode: str
) -> None:
    # 12 waves of B = 16 identical requests (300 + 50 tokens) all queued at t = 0: each
    # wave is one prefill of 16 x 300 tokens, then 49 decode iterations of 16 sequences
    b, p, o, waves = 16, 300, 50, 12
    trace = pl.DataFrame(
        {
            "request_id": np.arange(b * waves),
            "arrival_s": np.zeros(b * waves),
            "prompt_tokens": np.full(b * waves, p),
            "output_tokens": np.full(b * waves, o),
        }
    )
    inst = InstanceConfig(
        name="a",
        latency=LAT,
        max_running_seqs=b,
        max_batched_tokens=b * p,
        kv_capacity_tokens=2 * b * (p + o),
        scheduler=scheduler,  # type: ignore[arg-type]
    )
    res = run_replay(
        trace,
        ClusterConfig(instances=(inst,)),
        RoundRobinFake(),
        config=ReplayConfig(mode=mode, timeline_sample_interval_s=None),  # type: ignore[arg-type]
    )
    prefill_s = LAT.iteration_time_s(
        prefill_tokens=b * p, prefill_sq_tokens=b * p * p, n_decode_seqs=0, decode_context_tokens=0
    )
    decode_s = LAT.decode_run_time_s(b, b * (p + 1), o - 1)
    cycle_s = float(prefill_s) + float(decode_s)
    capacity_per_s = b / cycle_s
    finish = np.sort(res.requests["finish_s"].to_numpy())
    waves_done = finish.reshape(waves, b)
    assert np.ptp(waves_done, axis=1).max() < 1e-9  # each wave finishes together
    # steady state: one wave per cycle, so completions per second = the capacity
    throughput_per_s = b * (waves - 1) / (waves_done[-1, 0] - waves_done[0, 0])
    assert throughput_per_s == pytest.approx(capacity_per_s, rel=1e-9)
    assert res.summary["makespan_s"] == pytest.approx(waves * cycle_s, rel=1e-9)
    assert res.summary["n_preemptions"] == 0
