"""Summary metrics, SLO attainment and imbalance."""

from __future__ import annotations

import math
import re

import numpy as np
import polars as pl
import pytest
from fakes import AlwaysZeroFake, RoundRobinFake
from routeplay.estimator._latency import LinearLatencyModel
from routeplay.replay._types import ClusterConfig, InstanceConfig
from routeplay.replay.engine import _metrics as M
from routeplay.replay.engine._engine import run_replay
from routeplay.replay.engine._result import ReplayConfig

LAT = LinearLatencyModel.from_throughput(1000.0)


def _trace() -> pl.DataFrame:
    # four requests of 100 prompt tokens and 1 output token, 1 s apart
    return pl.DataFrame(
        {
            "request_id": [0, 1, 2, 3],
            "arrival_s": [0.0, 1.0, 2.0, 3.0],
            "prompt_tokens": [100] * 4,
            "output_tokens": [1, 1, 1, 1],
        }
    )


def _cluster(m: int) -> ClusterConfig:
    return ClusterConfig(
        instances=tuple(InstanceConfig(name=f"i{k}", latency=LAT) for k in range(m))
    )


def test_summary_by_hand() -> None:
    res = run_replay(
        _trace(),
        _cluster(2),
        RoundRobinFake(),
        config=ReplayConfig(timeline_sample_interval_s=None),
    )
    s = res.summary
    assert s["e2e_s_mean"] == pytest.approx(0.1)
    assert s["ttft_s_p99"] == pytest.approx(0.1)
    assert math.isnan(s["tbt_mean_s_mean"])  # every output is one token: no TBT
    assert s[M.MAKESPAN_S] == pytest.approx(3.1)
    assert s[M.THROUGHPUT_REQ_PER_S] == pytest.approx(4 / 3.1)
    assert s[M.THROUGHPUT_TOKENS_PER_S] == pytest.approx(4 / 3.1)
    # each instance busy 0.2 s of 3.1 s: perfectly balanced
    assert res.utilisation == pytest.approx((0.2 / 3.1, 0.2 / 3.1))
    assert s[M.UTILISATION_CV] == pytest.approx(0.0)
    assert s[M.IMBALANCE_MAX_MIN] == pytest.approx(1.0)


def test_imbalance_when_one_instance_idles() -> None:
    res = run_replay(
        _trace(),
        _cluster(2),
        AlwaysZeroFake(),
        config=ReplayConfig(timeline_sample_interval_s=None),
    )
    assert res.summary[M.IMBALANCE_MAX_MIN] == math.inf
    assert res.summary[M.UTILISATION_CV] == pytest.approx(1.0)  # u = (x, 0): std/mean = 1


def test_slo_attainment() -> None:
    trace = _trace().with_columns(arrival_s=pl.Series([0.0, 0.0, 0.0, 0.0]))
    res = run_replay(
        trace,
        ClusterConfig(instances=(InstanceConfig(name="a", latency=LAT, max_running_seqs=1),)),
        AlwaysZeroFake(),
        config=ReplayConfig(timeline_sample_interval_s=None),
    )
    # one at a time: e2e 0.1, 0.2, 0.3, 0.4
    assert np.allclose(res.requests["e2e_s"].to_numpy(), [0.1, 0.2, 0.3, 0.4])
    assert res.slo_attainment(e2e_s=0.25) == 0.5
    assert res.slo_attainment(ttft_s=0.35, tbt_s=0.001) == 0.75
    with pytest.raises(ValueError, match=re.escape("slo_attainment needs at least one target")):
        res.slo_attainment()


def test_metric_names_are_summary_keys() -> None:
    res = run_replay(
        _trace(),
        _cluster(1),
        AlwaysZeroFake(),
        config=ReplayConfig(timeline_sample_interval_s=None),
    )
    for metric in M.SUMMARY_LATENCY_METRICS:
        for stat in M.SUMMARY_STATISTICS:
            assert f"{metric}_{stat}" in res.summary
    for key in (
        M.N_REQUESTS,
        M.N_PREEMPTIONS,
        M.UTILISATION_CV,
        M.IMBALANCE_MAX_MIN,
        "utilisation_0",
    ):
        assert key in res.summary
    assert res.to_dict()["router"] == "fake-always-0"
