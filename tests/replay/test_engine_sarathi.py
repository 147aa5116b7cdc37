"""The ``sarathi`` scheduler variant on hand-computed timelines, one rule per test.

The rules (engine module docstring, "Scheduler variants"): a fixed, unpadded token
budget of ``max_batched_tokens`` per iteration; running decodes first, never paused,
taking their KV blocks in arrival order (the newest later-arriving sequence, decoding or
partially prefilled, is preempted when one finds no free block); partial prefills
continue; new prompts are admitted head first into what is left of the budget, each
reserving the blocks of its whole prompt (with the watermark), under the batch cap on
KV holders. Every test runs in fast and in reference mode.
"""

from __future__ import annotations

import polars as pl
import pytest
from fakes import MODES, STEP_LAT, AlwaysZeroFake, rows_trace
from numpy.testing import assert_allclose
from routeplay.replay._types import ClusterConfig, InstanceConfig
from routeplay.replay.engine._engine import run_replay
from routeplay.replay.engine._result import ReplayConfig


def _run(trace: pl.DataFrame, mode: str, **options: object) -> pl.DataFrame:
    settings: dict[str, object] = {"scheduler": "sarathi", "chunked_prefill": True}
    settings.update(options)
    inst = InstanceConfig(name="a", latency=STEP_LAT, **settings)  # type: ignore[arg-type]
    config = ReplayConfig(mode=mode, timeline_sample_interval_s=None)  # type: ignore[arg-type]
    return run_replay(
        trace, ClusterConfig(instances=(inst,)), AlwaysZeroFake(), config=config
    ).requests


@pytest.mark.parametrize("mode", MODES)
def test_decodes_never_pause_while_a_long_prompt_is_chunked(mode: str) -> None:
    # Chunk 100. A (10 + 5) prefills in 0.01 s and decodes at 10 ms per token; B (250
    # + 1) arrives at 0.015 s, so A's decode run is cut at 0.02 s (A has 2 tokens).
    # Each iteration then holds A's decode and 99 prompt tokens of B: 0.02 -> 0.129
    # (A 3), -> 0.238 (A 4), then B's last 52 tokens: -> 0.300 (A 5, B's token).
    trace = rows_trace([(0.0, 10, 5), (0.015, 250, 1)])
    out = _run(trace, mode, max_batched_tokens=100, max_running_seqs=8)
    assert_allclose(out["first_token_s"].to_list(), [0.01, 0.3], atol=1e-12)
    assert_allclose(out["finish_s"].to_list(), [0.3, 0.3], atol=1e-12)
    assert out["tbt_max_s"][0] == pytest.approx(0.109)  # A's mixed iterations
    # vllm-v0 on the same trace: B's whole prompt runs alone 0.02 -> 0.27, A waits
    v0 = _run(trace, mode, scheduler="vllm-v0", chunked_prefill=False, max_batched_tokens=300)
    assert v0["tbt_max_s"][0] == pytest.approx(0.26)


@pytest.mark.parametrize("mode", MODES)
def test_the_budget_goes_to_partial_prefills_then_new_prompts_unpadded(mode: str) -> None:
    # Chunk 100, all at t = 0. Iteration 1: A's first 100 tokens (budget used up).
    # Iteration 2: A's last 50, then B's 30 and C's first 20 (admitted at 0.1 s):
    # 0.1 -> 0.2. Iteration 3: C's last 10: -> 0.21.
    trace = rows_trace([(0.0, 150, 1), (0.0, 30, 1), (0.0, 30, 1)])
    out = _run(trace, mode, max_batched_tokens=100, max_running_seqs=8)
    assert_allclose(out["finish_s"].to_list(), [0.2, 0.2, 0.21], atol=1e-12)
    assert_allclose(out["admitted_s"].to_list(), [0.0, 0.1, 0.1], atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_running_decodes_count_against_the_batch_cap(mode: str) -> None:
    # Cap 2: A and B prefill together (0.02 s) and decode 4 tokens each at 20 ms per
    # iteration (-> 0.10); C waits for a free place although the budget has room.
    trace = rows_trace([(0.0, 10, 5), (0.0, 10, 5), (0.0, 10, 1)])
    out = _run(trace, mode, max_batched_tokens=100, max_running_seqs=2)
    assert_allclose(out["finish_s"].to_list(), [0.1, 0.1, 0.11], atol=1e-12)
    assert_allclose(out["admitted_s"].to_list(), [0.0, 0.0, 0.1], atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_admission_reserves_the_whole_prompt_with_the_watermark(mode: str) -> None:
    # 100 blocks of 1 token, watermark 10 %: after A's 85 blocks only 15 are free, and
    # B's 10 would leave 5 < 10, so B waits for A (0.085 s prefill + one 10 ms decode).
    trace = rows_trace([(0.0, 85, 2), (0.0, 10, 1)])
    options = {"kv_capacity_tokens": 100, "kv_block_tokens": 1, "max_batched_tokens": 200,
               "max_running_seqs": 8}  # fmt: skip
    held = _run(trace, mode, kv_watermark_fraction=0.1, **options)
    assert_allclose(held["finish_s"].to_list(), [0.095, 0.105], atol=1e-12)
    free = _run(trace, mode, kv_watermark_fraction=0.0, **options)  # both prefill at once
    assert_allclose(free["finish_s"].to_list(), [0.105, 0.095], atol=1e-12)
    # Chunk 50, no watermark: A (80 + 2) reserves its 80 blocks with its first chunk;
    # B's 30 do not fit in the 20 left (after A's decode takes one, 19) until A is done:
    # A 0 -> 0.05 -> 0.08 (token 1) -> 0.09 (done); B 0.09 -> 0.12.
    trace = rows_trace([(0.0, 80, 2), (0.0, 30, 1)])
    options["max_batched_tokens"] = 50
    out = _run(trace, mode, kv_watermark_fraction=0.0, **options)
    assert_allclose(out["finish_s"].to_list(), [0.09, 0.12], atol=1e-12)


@pytest.mark.parametrize("mode", MODES)
def test_decodes_preempt_the_newest_and_it_recomputes(mode: str) -> None:
    # 20 blocks of 1 token, no watermark; A and B (5 + 10 each) prefill together
    # (0.01 s), then decode in pairs (0.02 s per iteration). A decode iteration with
    # contexts c needs c + (c - 1) <= 19 blocks (B, the newest, takes its block last),
    # so 5 iterations fit (c = 6..10); at 0.11 s (c = 11) B is preempted with 6 tokens.
    # A decodes alone to its 10th token (4 x 10 ms, 0.15 s); B's 11 recomputed tokens
    # do not fit earlier (11 > 20 - 11 free blocks after A's decode took its own).
    # B: prefill of 5 + 6 tokens 0.15 -> 0.161 (token 7), 3 decodes -> 0.191.
    trace = rows_trace([(0.0, 5, 10), (0.0, 5, 10)])
    out = _run(trace, mode, kv_capacity_tokens=20, kv_block_tokens=1, max_batched_tokens=100,
               max_running_seqs=8, kv_watermark_fraction=0.0)  # fmt: skip
    assert out["n_preemptions"].to_list() == [0, 1]
    assert_allclose(out["finish_s"].to_list(), [0.15, 0.191], atol=1e-12)
    assert_allclose(out["first_token_s"].to_list(), [0.01, 0.01], atol=1e-12)
    assert out["tbt_max_s"][1] == pytest.approx(0.051)


@pytest.mark.parametrize("mode", MODES)
def test_a_decode_preempts_a_newer_partial_prefill(mode: str) -> None:
    # 20 blocks of 1 token, chunk 10, no watermark. A (5 + 8) prefills 0 -> 0.005 and
    # decodes; B (13 + 1) arrives at 0.0105, A's run is cut at 0.015 (A has 2 tokens).
    # 0.015: A takes its 7th block, B reserves its 13 (free 0) and prefills 9 tokens
    # with A's decode: -> 0.034. 0.034: A finds no free block; B, newer, is preempted
    # (its 9 tokens are lost) and does not fit again (13 > 12 free) while A runs:
    # A decodes 5 tokens -> 0.084. B recomputes 13 tokens in chunks 10 + 3 -> 0.097.
    trace = rows_trace([(0.0, 5, 8), (0.0105, 13, 1)])
    out = _run(trace, mode, kv_capacity_tokens=20, kv_block_tokens=1, max_batched_tokens=10,
               max_running_seqs=2, kv_watermark_fraction=0.0)  # fmt: skip
    assert out["n_preemptions"].to_list() == [0, 1]
    assert_allclose(out["finish_s"].to_list(), [0.084, 0.097], atol=1e-12)
    assert_allclose(out["admitted_s"].to_list(), [0.0, 0.015], atol=1e-12)
    assert out["tbt_max_s"][0] == pytest.approx(0.019)  # A's gap: the mixed iteration


def test_sarathi_config_errors_name_the_fix() -> None:
    with pytest.raises(ValueError, match=r"chunked_prefill=False; expected .*Fix: set chunked"):
        InstanceConfig(name="a", latency=STEP_LAT, scheduler="sarathi")
    with pytest.raises(ValueError, match="batching='fcfs'"):
        InstanceConfig(name="a", latency=STEP_LAT, scheduler="sarathi", chunked_prefill=True,
                       batching="bin-packing")  # fmt: skip
    with pytest.raises(ValueError, match=r"max_running_seqs = 256 > max_batched_tokens = 128"):
        InstanceConfig(name="a", latency=STEP_LAT, scheduler="sarathi", chunked_prefill=True,
                       max_batched_tokens=128)  # fmt: skip
    inst = InstanceConfig(name="a", latency=STEP_LAT, scheduler="sarathi", chunked_prefill=True,
                          max_batched_tokens=512, batching="least-work-left")  # fmt: skip
    assert (inst.scheduler, inst.max_batched_tokens) == ("sarathi", 512)
    # a request that fits the KV but not with the watermark + 1 block is refused
    trace = rows_trace([(0.0, 90, 10)])
    with pytest.raises(ValueError, match=r"sarathi instance 0 .*Fix: raise kv_capacity_tokens"):
        _run(trace, "fast", kv_capacity_tokens=100, kv_block_tokens=1, kv_watermark_fraction=0.1)
