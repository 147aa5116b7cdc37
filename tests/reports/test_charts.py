from __future__ import annotations

import math
from typing import Any

import numpy as np
import polars as pl
import pytest
from routeplay.estimator import PredictorEvaluation, fit_latency_model
from routeplay.reports import (
    chart_data,
    confusion_matrix_chart,
    improvement_forest_chart,
    instance_timeline_chart,
    latency_cdf_chart,
    latency_fit_chart,
    latency_residual_chart,
    learning_curve_chart,
    load_imbalance_chart,
    routing_heatmap_chart,
)
from syrupy.assertion import SnapshotAssertion

REQUESTS = pl.DataFrame(
    {
        "router": ["rr"] * 4 + ["jsq"] * 4,
        "episode": [0, 0, 1, 1] * 2,
        "prompt_tokens": [10, 500, 10, 500] * 2,
        "output_tokens": [5, 5, 400, 400] * 2,
        "instance_id": [0, 1, 0, 1, 1, 1, 0, 0],
        "e2e_s": [1.0, 2.0, 4.0, 8.0, 1.0, 1.5, 3.0, 6.0],
        "tbt_mean_s": [0.02, None, 0.03, 0.05, 0.02, 0.03, None, 0.04],
    }
)
TIMELINES = pl.DataFrame(
    {
        "router": ["rr"] * 4,
        "time_s": [0.0, 0.0, 1.0, 1.0],
        "instance_id": [0, 1, 0, 1],
        "n_queued": [0, 2, 1, 1],
        "n_running": [1, 1, 2, 0],
        "kv_used_tokens": [100, 300, 200, 0],
    }
)
COMPARISON = pl.DataFrame(
    {
        "router": ["jsq", "jsq", "jsq"],
        "metric": ["e2e_s", "e2e_s", "ttft_s"],
        "statistic": ["p99", "mean", "mean"],
        "relative_improvement": [0.2, 0.1, -0.3],
        "ci_low": [-0.05, 0.02, -0.5],
        "ci_high": [0.4, 0.2, -0.1],
        "p_ttest_holm": [0.3, 0.04, 0.01],
        "n_episodes": [2, 2, 2],
        "extra_column": [1.0, 2.0, 3.0],
    }
)


def _iterations() -> pl.DataFrame:
    # a clearly positive per-context-token cost: without it the least-squares slope of
    # decode_context_tokens comes out negative, which fit_latency_model rejects
    n = np.arange(1, 21)
    context = n * 100 + (n % 4) * 37
    return pl.DataFrame(
        {
            "prefill_tokens": np.where(n % 2 == 0, n * 50, 0),
            "prefill_sq_tokens": np.zeros(20, dtype=np.int64),
            "n_decode_seqs": n,
            "decode_context_tokens": context,
            "iteration_s": 0.01
            + 1e-4 * n
            + 2e-5 * np.where(n % 2 == 0, n * 50, 0)
            + 5e-6 * context
            + 1e-3 * (n % 3),
        }
    )


def _evaluation() -> PredictorEvaluation:
    return PredictorEvaluation(
        scheme_name="demo",
        edges_tokens=(1.0, 64.0, 512.0, 4096.0),
        n_requests=10,
        top1_accuracy=0.6,
        within_one_accuracy=0.9,
        cohen_kappa=0.4,
        mean_abs_error_tokens=50.0,
        confusion=np.array([[3, 1, 0], [1, 2, 1], [0, 1, 1]]),
    )


def _charts() -> dict[str, object]:
    fit = fit_latency_model(
        _iterations(),
        test_fraction=0.25,
        seed=0,
        terms=["prefill_tokens", "n_decode_seqs", "decode_context_tokens"],
    )
    curves = pl.DataFrame(
        {
            "run": ["cql"] * 3 + ["bcq"] * 3,
            "metric": ["loss"] * 6,
            "step": [300, 100, 200] * 2,
            "value": [0.5, 1.0, 0.7, 0.9, 1.2, 1.0],
        }
    )
    return {
        "cdf_e2e": latency_cdf_chart(REQUESTS),
        "cdf_tbt": latency_cdf_chart(REQUESTS, metric="tbt_mean_s"),
        "forest": improvement_forest_chart(COMPARISON),
        "forest_e2e": improvement_forest_chart(COMPARISON, metrics=["e2e_s"]),
        "timeline": instance_timeline_chart(TIMELINES, value="kv_used_tokens"),
        "imbalance": load_imbalance_chart(TIMELINES),
        "heatmap": routing_heatmap_chart(REQUESTS),
        "fit": latency_fit_chart(_iterations(), fit),
        "residuals": latency_residual_chart(_iterations(), fit),
        "confusion": confusion_matrix_chart(_evaluation()),
        "learning": learning_curve_chart(curves),
    }


def _rounded(value: Any, digits: int = 10) -> Any:
    """Floats rounded to ``digits`` significant digits, recursively.

    Fitted numbers (the latency fit's predictions, residuals, ...) differ across
    machines (BLAS, CPU) in the last bits; the snapshot compares what a chart shows.
    """
    if isinstance(value, float):
        return float(f"{value:.{digits}g}") if math.isfinite(value) else value
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_rounded(v, digits) for v in value)
    return value


def test_rounding_helper() -> None:
    assert _rounded({"a": [0.011364701731644725, 3], "b": "x"}) == {
        "a": [0.01136470173, 3],
        "b": "x",
    }
    assert _rounded(0.011364701731644725) == _rounded(0.011364701731644727)
    assert _rounded(0.0113647017) != _rounded(0.0113647018)  # 10 digits still compared


@pytest.mark.parametrize("name", sorted(_charts()))
def test_chart_spec_snapshot(name: str, snapshot: SnapshotAssertion) -> None:
    spec = _charts()[name].to_dict()  # type: ignore[attr-defined]
    assert _rounded(spec) == snapshot


def test_forest_shows_the_change_in_latency_with_significance_marks() -> None:
    data = chart_data(improvement_forest_chart(COMPARISON))
    assert data["label"].to_list() == ["jsq · E2E p99", "jsq · E2E mean *", "jsq · TTFT mean *"]
    assert data["latency_change"].to_list() == pytest.approx([-0.2, -0.1, 0.3])
    assert data["change_ci_low"].to_list() == pytest.approx([-0.4, -0.2, 0.1])
    assert data["change_ci_high"].to_list() == pytest.approx([0.05, -0.02, 0.5])
    one = improvement_forest_chart(COMPARISON, metrics=["ttft_s"])
    assert chart_data(one)["label"].to_list() == ["jsq · mean *"]
    title = one.to_dict()["title"]["text"]
    assert title == "Change in time to first token vs the baseline, per router"
    with pytest.raises(ValueError, match=r"no row has a metric in \['tbt_max_s'\]"):
        improvement_forest_chart(COMPARISON, metrics=["tbt_max_s"])


def test_specs_are_deterministic_and_have_fixed_dataset_names() -> None:
    first = {k: c.to_dict() for k, c in _charts().items()}  # type: ignore[attr-defined]
    second = {k: c.to_dict() for k, c in _charts().items()}  # type: ignore[attr-defined]
    assert first == second
    for spec in first.values():
        assert "datasets" not in spec  # data is inline under a fixed name, never a hash
        assert "params" not in spec


def test_cdf_counts_nulls_and_is_exact_for_small_samples() -> None:
    data = chart_data(latency_cdf_chart(REQUESTS, metric="tbt_mean_s"))
    rr = data.filter(pl.col("router") == "rr")
    assert rr["tbt_mean_s"].to_list() == [0.02, 0.03, 0.05]
    assert rr["probability"].to_list() == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert rr["n_null"].unique().to_list() == [1]


def test_cdf_of_many_values_uses_201_quantiles() -> None:
    values = np.arange(1, 1001, dtype=np.float64)
    data = chart_data(latency_cdf_chart(pl.DataFrame({"router": ["a"] * 1000, "e2e_s": values})))
    assert data.height == 201
    assert data["e2e_s"][0] == 1.0 and data["e2e_s"][-1] == 1000.0
    assert data.filter(pl.col("probability") == 0.5)["e2e_s"].item() == np.quantile(values, 0.5)


def test_heatmap_shares_sum_to_one_per_class() -> None:
    data = chart_data(routing_heatmap_chart(REQUESTS))
    sums = data.group_by("router", "request_class").agg(pl.col("share_of_class").sum())
    assert sums["share_of_class"].to_list() == pytest.approx([1.0] * sums.height)
    assert data["n_requests"].sum() == REQUESTS.height


def test_imbalance_is_cv_of_outstanding() -> None:
    data = chart_data(load_imbalance_chart(TIMELINES))
    # t=0: loads 1, 3 -> mean 2, sd 1 -> 0.5; t=1: loads 3, 1 -> 0.5
    assert data["load_cv"].to_list() == pytest.approx([0.5, 0.5])


def test_cdf_rejects_non_positive_latency() -> None:
    with pytest.raises(ValueError, match="expected latencies > 0 s"):
        latency_cdf_chart(pl.DataFrame({"router": ["a"], "e2e_s": [0.0]}))


def test_missing_column_message() -> None:
    with pytest.raises(
        ValueError, match=r"improvement_forest_chart: missing column\(s\) \['ci_low'"
    ):
        improvement_forest_chart(COMPARISON.drop("ci_low"))
