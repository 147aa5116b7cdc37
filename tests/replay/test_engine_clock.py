"""Instances with an iteration clock: the clock prices every iteration, in both modes.

The toy clock below prices a single prompt and any decode batch exactly like
``STEP_LAT`` (1 ms per prompt token, 10 ms per decoding sequence); it differs only where
Vidur's composition differs from a linear model: several prompts in one prefill are
priced as one prompt of ``sqrt(sum p^2)`` tokens.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fakes import MODES, STEP_LAT, AlwaysZeroFake, rows_trace
from numpy.testing import assert_allclose
from polars.testing import assert_frame_equal
from routeplay.estimator import IterationClock, save_clock
from routeplay.replay import cluster_from_dict, make_cluster, pooled_cluster
from routeplay.replay._types import ClusterConfig, InstanceConfig
from routeplay.replay.engine._engine import run_replay
from routeplay.replay.engine._result import ReplayConfig


@pytest.fixture(scope="module")
def step_clock(tmp_path_factory: pytest.TempPathFactory) -> str:
    b = np.arange(1, 257, dtype=np.float64)
    decode = np.repeat((10.0 * b)[:, None], 4, axis=1)  # 10 ms per sequence, any context
    prefill = np.tile(np.arange(1, 1025, dtype=np.float64), (3, 1))  # 1 ms per token
    clock = IterationClock(
        name="step", n_layers=1, mlp_ms=np.zeros(1024), decode_ms=decode, prefill_ms=prefill
    )
    return str(save_clock(clock, tmp_path_factory.mktemp("clock") / "step.npz"))


def _run(trace: pl.DataFrame, mode: str, **options: object) -> pl.DataFrame:
    cluster = ClusterConfig(instances=(InstanceConfig(name="a", latency=STEP_LAT, **options),))  # type: ignore[arg-type]
    config = ReplayConfig(mode=mode, timeline_sample_interval_s=None)  # type: ignore[arg-type]
    return run_replay(trace, cluster, AlwaysZeroFake(), config=config).requests


SCHEDULERS = [
    {"scheduler": "vllm-v0"},
    {"scheduler": "vllm-v1"},
    {"scheduler": "sarathi", "chunked_prefill": True, "max_batched_tokens": 512},
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("options", SCHEDULERS, ids=lambda o: str(o["scheduler"]))
def test_a_clock_that_prices_like_the_linear_model_replays_identically(
    step_clock: str, mode: str, options: dict[str, object]
) -> None:
    # one prompt per prefill iteration (arrivals spaced), decodes overlapping
    trace = rows_trace([(0.0, 100, 10), (0.155, 50, 2), (0.5, 30, 40), (0.52, 20, 5)])
    linear = _run(trace, mode, **options)
    clocked = _run(trace, mode, clock=step_clock, **options)
    assert_frame_equal(clocked, linear)


@pytest.mark.parametrize("mode", MODES)
def test_two_prompts_in_one_prefill_cost_one_prompt_of_sqrt_sum_sq(
    step_clock: str, mode: str
) -> None:
    # vllm-v0: 30 and 40 tokens prefill together: sqrt(30^2 + 40^2) = 50 ms, not 70 ms;
    # then both decode their 2nd token together (20 ms)
    trace = rows_trace([(0.0, 30, 2), (0.0, 40, 2)])
    clocked = _run(trace, mode, scheduler="vllm-v0", clock=step_clock)
    assert_allclose(clocked["first_token_s"].to_list(), [0.05, 0.05], atol=1e-12)
    assert_allclose(clocked["finish_s"].to_list(), [0.07, 0.07], atol=1e-12)
    linear = _run(trace, mode, scheduler="vllm-v0")
    assert_allclose(linear["first_token_s"].to_list(), [0.07, 0.07], atol=1e-12)


@pytest.mark.parametrize("options", SCHEDULERS, ids=lambda o: str(o["scheduler"]))
def test_fast_and_reference_agree_with_a_clock_under_preemption(
    options: dict[str, object],
) -> None:
    rng = np.random.default_rng(7)
    n = 400
    trace = pl.DataFrame(
        {
            "request_id": np.arange(n),
            "arrival_s": np.sort(rng.uniform(0.0, 20.0, n)),
            "prompt_tokens": rng.integers(20, 900, n),
            "output_tokens": rng.integers(1, 300, n),
        }
    )
    cluster = cluster_from_dict(
        {
            "instances": [
                {
                    "name": "a",
                    "count": 2,
                    "preset": "llama2-7b/a100-vidur",
                    "kv_capacity_tokens": 6000,
                    "max_running_seqs": 64,
                    "max_batched_tokens": 2048,
                    "clock": "vidur-forest/llama2-7b-a100",
                    **options,
                }
            ]
        }
    )
    from routeplay.replay import make_router

    frames = [
        run_replay(
            trace,
            cluster,
            make_router("round-robin"),
            config=ReplayConfig(mode=mode, timeline_sample_interval_s=None),  # type: ignore[arg-type]
        ).requests
        for mode in MODES
    ]
    assert frames[0]["n_preemptions"].sum() > 0
    assert_frame_equal(frames[0], frames[1], check_exact=True)


def test_clock_settings_are_checked() -> None:
    with pytest.raises(ValueError, match=r"InstanceConfig\('a'\).clock: unknown clock 'nope'"):
        InstanceConfig(name="a", latency=STEP_LAT, clock="nope")
    with pytest.raises(ValueError, match=r"covers batches up to 4096 tokens, but max_batched_tok"):
        InstanceConfig(
            name="a", latency=STEP_LAT, clock="vidur-forest/llama2-7b-a100", max_batched_tokens=8192
        )
    with pytest.raises(ValueError, match=r"clock = 3; expected a clock name or .npz path"):
        InstanceConfig(name="a", latency=STEP_LAT, clock=3)  # type: ignore[arg-type]
    forest = make_cluster("vidur-a100x4-forest")
    assert {i.clock for i in forest.instances} == {"vidur-forest/llama2-7b-a100"}
    assert (
        dataclasses.replace(forest.instances[0], clock=None)
        == make_cluster("vidur-a100x4").instances[0]
    )
    with pytest.raises(ValueError, match="pooled_cluster: instance.* have an iteration clock"):
        pooled_cluster(forest)


def test_a_clock_file_named_in_a_cluster_file(step_clock: str, tmp_path: Path) -> None:
    from routeplay.replay import load_cluster

    path = tmp_path / "c.toml"
    path.write_text(
        f'[[instances]]\nname = "a"\ntokens_per_s = 1000.0\nclock = "{step_clock}"\n',
        encoding="utf-8",
    )
    assert load_cluster(str(path)).instances[0].clock == step_clock
