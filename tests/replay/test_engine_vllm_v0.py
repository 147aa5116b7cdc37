"""The ``vllm-v0`` scheduler variant on hand-computed timelines, one rule per test.

The rules (engine module docstring, "Scheduler variants"): prefill-only iterations
whenever the queue head fits (decodes pause), a padded token budget, the batch cap on
KV holders, a free-block watermark, decodes taking one free block each in arrival
order, and recompute preemption of the newest sequence.
"""

from __future__ import annotations

import dataclasses

import polars as pl
import pytest
from fakes import MODES, STEP_LAT, AlwaysZeroFake, rows_trace
from numpy.testing import assert_allclose
from routeplay.replay._types import ClusterConfig, InstanceConfig
from routeplay.replay.engine._engine import run_replay
from routeplay.replay.engine._result import ReplayConfig


def _one(**options: object) -> ClusterConfig:
    return ClusterConfig(instances=(InstanceConfig(name="a", latency=STEP_LAT, **options),))  # type: ignore[arg-type]


def _run(trace: pl.DataFrame, mode: str, **options: object) -> pl.DataFrame:
    config = ReplayConfig(mode=mode, timeline_sample_interval_s=None)  # type: ignore[arg-type]
    return run_replay(trace, _one(**options), AlwaysZeroFake(), config=config).requests


@pytest.mark.parametrize("mode", MODES)
def test_a_prefill_that_fits_runs_alone_and_the_decodes_pause(mode: str) -> None:
    # A (100 + 10 tokens) prefills in 0.1 s and decodes at 10 ms/token; B (50 + 2)
    # arrives at 0.155 s, so A's decode run is cut at 0.16 s (A has 7 tokens).
    trace = rows_trace([(0.0, 100, 10), (0.155, 50, 2)])
    v0 = _run(trace, mode, scheduler="vllm-v0")
    # v0: B prefills alone 0.16 -> 0.21 (A waits); both decode 0.21 -> 0.23 (B done);
    # A decodes alone 0.23 -> 0.25. A's longest token gap: 0.16 -> 0.23.
    assert_allclose(v0["first_token_s"].to_list(), [0.1, 0.21], atol=1e-12)
    assert_allclose(v0["finish_s"].to_list(), [0.25, 0.23], atol=1e-12)
    assert_allclose(v0["tbt_max_s"].to_list(), [0.07, 0.02], atol=1e-12)
    # v1 (default): one mixed iteration 0.16 -> 0.22 (B's prefill + A's decode)
    v1 = _run(trace, mode)
    assert_allclose(v1["first_token_s"].to_list(), [0.1, 0.22], atol=1e-12)
    assert_allclose(v1["finish_s"].to_list(), [0.25, 0.24], atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_the_prefill_budget_is_padded_to_the_longest_prompt(mode: str) -> None:
    # budget 200: 100 + 20 pads to 2 x 100 = 200 (fits); a third (3 x 100) does not
    trace = rows_trace([(0.0, 100, 1), (0.0, 20, 1), (0.0, 20, 1)])
    v0 = _run(trace, mode, scheduler="vllm-v0", max_batched_tokens=200, max_running_seqs=8)
    assert_allclose(v0["finish_s"].to_list(), [0.12, 0.12, 0.14], atol=1e-12)
    v1 = _run(
        trace, mode, max_batched_tokens=200, max_running_seqs=8
    )  # unpadded: 140 tokens at once
    assert_allclose(v1["finish_s"].to_list(), [0.14, 0.14, 0.14], atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_the_watermark_keeps_blocks_free_at_admission(mode: str) -> None:
    # 100 blocks of 1 token, watermark 10 %: after A's 85 blocks only 15 are free, and
    # B's 10 would leave 5 < 10, so B waits for A (0.085 s prefill + one 10 ms decode)
    trace = rows_trace([(0.0, 85, 2), (0.0, 10, 1)])
    options = {"scheduler": "vllm-v0", "kv_capacity_tokens": 100, "kv_block_tokens": 1}
    held = _run(trace, mode, kv_watermark_fraction=0.1, **options)
    assert_allclose(held["finish_s"].to_list(), [0.095, 0.105], atol=1e-12)
    assert held["queue_wait_s"][1] == pytest.approx(0.095)
    free = _run(trace, mode, kv_watermark_fraction=0.0, **options)  # both prefill at once
    assert_allclose(free["finish_s"].to_list(), [0.105, 0.095], atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_decodes_preempt_the_newest_and_it_recomputes(mode: str) -> None:
    # 20 blocks of 1 token, no watermark; A and B (5 + 10 each) prefill together
    # (0.01 s), then decode in pairs (0.02 s per iteration). A decode iteration with
    # contexts c (tokens so far) needs c + (c - 1) <= 19 blocks (B, the newest, takes
    # its block last), so 5 iterations fit (c = 6..10); at 0.11 s (c = 11) B is
    # preempted with 6 tokens. A decodes alone to its 10th token (4 x 10 ms, 0.15 s);
    # B's 11 recomputed tokens cannot be admitted earlier (11 > 20 - 10 free blocks).
    # B: prefill of 5 + 6 tokens 0.15 -> 0.161 (token 7), 3 decodes -> 0.191.
    trace = rows_trace([(0.0, 5, 10), (0.0, 5, 10)])
    out = _run(trace, mode, scheduler="vllm-v0", kv_capacity_tokens=20, kv_block_tokens=1,
               kv_watermark_fraction=0.0)  # fmt: skip
    assert out["n_preemptions"].to_list() == [0, 1]
    assert_allclose(out["finish_s"].to_list(), [0.15, 0.191], atol=1e-12)
    assert_allclose(out["first_token_s"].to_list(), [0.01, 0.01], atol=1e-12)
    # B's longest gap spans the preemption: its 6th token at 0.11, the 7th at 0.161
    assert out["tbt_max_s"][1] == pytest.approx(0.051)


def test_vllm_v0_config_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match="chunked_prefill=False"):
        InstanceConfig(name="a", latency=STEP_LAT, scheduler="vllm-v0", chunked_prefill=True)
    with pytest.raises(ValueError, match="batching='fcfs'"):
        InstanceConfig(name="a", latency=STEP_LAT, scheduler="vllm-v0", batching="bin-packing")
    with pytest.raises(ValueError, match=r"kv_watermark_fraction = 1.0; expected a fraction"):
        InstanceConfig(name="a", latency=STEP_LAT, kv_watermark_fraction=1.0)
    # a request that fits the KV but not with the watermark + 1 block is refused
    trace = rows_trace([(0.0, 90, 10)])
    with pytest.raises(ValueError, match=r"vllm-v0 instance 0 .*Fix: raise kv_capacity_tokens"):
        _run(trace, "fast", scheduler="vllm-v0", kv_capacity_tokens=100, kv_block_tokens=1,
             kv_watermark_fraction=0.1)  # fmt: skip


def test_the_default_scheduler_is_vllm_v1_and_unchanged() -> None:
    inst = InstanceConfig(name="a", latency=STEP_LAT)
    assert inst.scheduler == "vllm-v1"
    trace = rows_trace([(0.0, 100, 10), (0.155, 50, 2)])
    explicit = _run(trace, "fast", scheduler="vllm-v1")
    default = _run(trace, "fast")
    assert explicit.equals(default)
    assert dataclasses.replace(inst, scheduler="vllm-v0").scheduler == "vllm-v0"
