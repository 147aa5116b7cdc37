"""Statistics of improvement: compare_routers, Holm, bootstraps, power."""

from __future__ import annotations

import math
import re
import warnings
from typing import Any

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from polars.testing import assert_frame_equal
from routeplay.estimator import (
    BlockBootstrapResult,
    ComparisonResult,
    compare_routers,
    episodes_needed,
    estimate_sd_of_relative_differences,
    holm_adjust,
    moving_block_bootstrap,
    optimal_block_length,
    power_of,
)
from routeplay.estimator._bootstrap import paired_episode_bootstrap, parse_statistic
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import TTestPower

ROUTERS = ("rr", "jsq", "lor", "same")
N_EPISODES = 8
N_REQUESTS = 40


def _results_frame(seed: int = 7) -> pl.DataFrame:
    """Per-request results of 4 routers on 8 paired episodes (lognormal latencies).

    Episodes differ in load (episode factor); 'jsq' is ~8 % faster, 'lor' ~1 % faster,
    'same' replays the baseline exactly (zero differences). tbt_mean_s is null for
    requests 0 and 1 of every episode (1-token requests).
    """
    rng = np.random.default_rng(seed)
    parts = []
    for episode in range(N_EPISODES):
        load = rng.uniform(0.8, 1.5)
        base_e2e = load * rng.lognormal(0.0, 0.6, size=N_REQUESTS)
        base_ttft = 0.1 * base_e2e * rng.uniform(0.5, 1.5, size=N_REQUESTS)
        for router, factor in (("rr", 1.0), ("jsq", 0.92), ("lor", 0.99), ("same", 1.0)):
            noise = 1.0 if router in ("rr", "same") else rng.lognormal(0.0, 0.05, N_REQUESTS)
            e2e = base_e2e * factor * noise
            tbt: list[float | None] = list(e2e / 50.0)
            tbt[0] = tbt[1] = None
            parts.append(
                pl.DataFrame(
                    {
                        "router": router,
                        "episode": episode,
                        "request_id": np.arange(N_REQUESTS),
                        "e2e_s": e2e,
                        "ttft_s": base_ttft * factor,
                        "tbt_mean_s": pl.Series(tbt, dtype=pl.Float64),
                    }
                )
            )
    return pl.concat(parts)


def _episode_stat(frame: pl.DataFrame, router: str, metric: str, statistic: str) -> np.ndarray:
    """Independent per-episode statistic with numpy (nulls dropped)."""
    out = []
    for episode in range(N_EPISODES):
        values = (
            frame.filter((pl.col("router") == router) & (pl.col("episode") == episode))[metric]
            .drop_nulls()
            .to_numpy()
        )
        out.append(values.mean() if statistic == "mean" else np.percentile(values, 99))
    return np.array(out)


@pytest.fixture(scope="module")
def results() -> pl.DataFrame:
    return _results_frame()


@pytest.fixture(scope="module")
def comparison(results: pl.DataFrame) -> ComparisonResult:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tbt null warning is tested separately
        return compare_routers(
            results,
            baseline="rr",
            metrics=("e2e_s", "tbt_mean_s"),
            statistics=("mean", "p99"),
            n_boot=500,
            seed=3,
        )


def test_compare_routers_matches_independent_scipy(
    results: pl.DataFrame, comparison: ComparisonResult
) -> None:
    for metric in ("e2e_s", "tbt_mean_s"):
        for statistic in ("mean", "p99"):
            base = _episode_stat(results, "rr", metric, statistic)
            p_t, p_w = [], []
            for router in ("jsq", "lor"):
                values = _episode_stat(results, router, metric, statistic)
                row = comparison.get(router, metric, statistic)
                diff = base - values
                # scipy.stats.ttest_rel(baseline, router) on per-episode numpy statistics
                ref_t = stats.ttest_rel(base, values)
                # scipy.stats.wilcoxon(baseline - router), default zero_method="wilcox"
                ref_w = stats.wilcoxon(diff)
                assert_allclose(row.t_statistic, ref_t.statistic, rtol=1e-10)
                assert_allclose(row.p_ttest, ref_t.pvalue, rtol=1e-10)
                assert_allclose(row.wilcoxon_statistic, ref_w.statistic, rtol=1e-12)
                assert_allclose(row.p_wilcoxon, ref_w.pvalue, rtol=1e-10)
                # Cohen's d_z: mean / sample SD of the paired differences
                assert_allclose(row.cohens_dz, diff.mean() / diff.std(ddof=1), rtol=1e-10)
                # ratio of episode means
                assert_allclose(
                    row.relative_improvement, 1 - values.mean() / base.mean(), rtol=1e-10
                )
                assert_allclose(row.mean_difference_s, diff.mean(), rtol=1e-10)
                rel = 1 - values / base
                assert_allclose(row.mean_episode_relative_improvement, rel.mean(), rtol=1e-10)
                assert_allclose(row.sd_episode_relative_improvement, rel.std(ddof=1), rtol=1e-10)
                assert row.n_episodes_improved == int(np.sum(diff > 0))
                assert row.ci_low <= row.relative_improvement <= row.ci_high
                p_t.append(row.p_ttest)
                p_w.append(row.p_wilcoxon)
            # Holm across routers 'jsq', 'lor', 'same' (same: p = 1 by the all-zero rule)
            p_t.append(1.0)
            p_w.append(1.0)
            # statsmodels.stats.multitest.multipletests(p, method="holm")[1]
            ref_t_holm = multipletests(p_t, method="holm")[1]
            ref_w_holm = multipletests(p_w, method="holm")[1]
            got_t = [comparison.get(r, metric, statistic).p_ttest_holm for r in ROUTERS[1:]]
            got_w = [comparison.get(r, metric, statistic).p_wilcoxon_holm for r in ROUTERS[1:]]
            assert_allclose(got_t, ref_t_holm, rtol=1e-12)
            assert_allclose(got_w, ref_w_holm, rtol=1e-12)


def test_jsq_improvement_is_detected(comparison: ComparisonResult) -> None:
    row = comparison.get("jsq", "e2e_s", "mean")
    assert row.relative_improvement > 0.05
    assert row.ci_low > 0.0
    assert row.p_ttest_holm < 0.01
    assert row.cohens_dz > 0


def test_pinned_small_example() -> None:
    # One request per episode, so the per-episode mean is the value itself.
    base = [2.0, 2.5, 3.0, 2.2, 2.8, 3.1]
    router = [1.8, 2.4, 2.7, 2.3, 2.5, 2.9]
    frame = pl.DataFrame(
        {"router": ["rr"] * 6 + ["x"] * 6, "episode": list(range(6)) * 2, "e2e_s": base + router}
    )
    row = compare_routers(frame, baseline="rr", statistics=("mean",), n_boot=200).get("x")
    # scipy 1.17.1: stats.ttest_rel(base, router) -> statistic 2.711630722733206,
    # pvalue 0.04219399670552424
    assert_allclose(row.t_statistic, 2.711630722733206, rtol=1e-12)
    assert_allclose(row.p_ttest, 0.04219399670552424, rtol=1e-12)
    # scipy 1.17.1: stats.wilcoxon(np.array(base) - np.array(router)) -> (1.0, 0.0625)
    assert_allclose(row.wilcoxon_statistic, 1.0, rtol=1e-12)
    assert_allclose(row.p_wilcoxon, 0.0625, rtol=1e-12)
    # numpy: d = base - router; d.mean() / d.std(ddof=1) -> 1.1070186069251207
    assert_allclose(row.cohens_dz, 1.1070186069251207, rtol=1e-12)
    # by hand: 1 - mean(router) / mean(base) = 1 - 14.6 / 15.6 = 0.0641025641...
    assert_allclose(row.relative_improvement, 1 - 14.6 / 15.6, rtol=1e-12)
    # a single router: Holm leaves the p-values unchanged
    assert row.p_ttest_holm == row.p_ttest


def test_all_zero_differences_give_p_one_without_warnings(
    comparison: ComparisonResult,
) -> None:
    row = comparison.get("same", "e2e_s", "mean")
    assert (row.p_ttest, row.p_wilcoxon, row.cohens_dz, row.t_statistic) == (1.0, 1.0, 0.0, 0.0)
    assert row.relative_improvement == 0.0
    frame = pl.DataFrame(
        {"router": ["a"] * 3 + ["b"] * 3, "episode": [0, 1, 2] * 2, "e2e_s": [1.0, 2.0, 3.0] * 2}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        res = compare_routers(frame, baseline="a", statistics=("mean",), n_boot=100)
    assert res.get("b").p_wilcoxon == 1.0


def test_constant_nonzero_differences_give_infinite_t() -> None:
    frame = pl.DataFrame(
        {
            "router": ["a"] * 3 + ["b"] * 3,
            "episode": [0, 1, 2] * 2,
            "e2e_s": [1.0, 2.0, 3.0, 0.5, 1.5, 2.5],
        }
    )
    row = compare_routers(frame, baseline="a", statistics=("mean",), n_boot=100).get("b")
    assert row.t_statistic == math.inf and row.cohens_dz == math.inf
    assert row.p_ttest == 0.0
    # scipy.stats.wilcoxon([0.5, 0.5, 0.5]) -> exact distribution: p = 2 * (1/2)**3 = 0.25
    assert_allclose(row.p_wilcoxon, 0.25, rtol=1e-12)


def test_nulls_are_ignored_with_a_warning(results: pl.DataFrame) -> None:
    n_null = results["tbt_mean_s"].null_count()
    msg = f"ignoring null metric values (tbt_mean_s: {n_null} of {results.height} rows)"
    with pytest.warns(UserWarning, match=re.escape(msg)):
        res = compare_routers(
            results, baseline="rr", metrics=("tbt_mean_s",), statistics=("mean",), n_boot=100
        )
    per_episode = res.per_episode.filter(pl.col("router") == "jsq")
    assert per_episode["n_null"].to_list() == [2] * N_EPISODES
    assert per_episode["n_values"].to_list() == [N_REQUESTS - 2] * N_EPISODES


def test_frames_and_summary(comparison: ComparisonResult) -> None:
    frame = comparison.to_frame()
    assert frame.height == 3 * 2 * 2
    assert frame.select("router", "metric", "statistic").n_unique() == frame.height
    assert frame["router"].unique(maintain_order=True).to_list() == ["jsq", "lor", "same"]
    per = comparison.per_episode
    assert per.height == 3 * 2 * 2 * N_EPISODES
    jsq = per.filter(
        (pl.col("router") == "jsq")
        & (pl.col("metric") == "e2e_s")
        & (pl.col("statistic") == "mean")
    )
    assert_allclose(
        jsq["difference_s"].to_numpy(), (jsq["baseline_value_s"] - jsq["value_s"]).to_numpy()
    )
    assert_allclose(jsq["difference_s"].mean(), comparison.get("jsq").mean_difference_s, rtol=1e-12)
    text = comparison.summary()
    assert "baseline: rr" in text and "episodes: 8" in text
    assert len(text.splitlines()) == 5 + frame.height
    with pytest.raises(KeyError, match=re.escape("no comparison for router='rr'")):
        comparison.get("rr")


def test_dict_input_equals_frame_input(results: pl.DataFrame) -> None:
    as_dict = {
        r: results.filter(pl.col("router") == r).drop("router") for r in ("rr", "jsq", "lor")
    }
    from_dict = compare_routers(as_dict, baseline="rr", statistics=("mean", "p50"), n_boot=200)
    from_frame = compare_routers(
        results.filter(pl.col("router") != "same"),
        baseline="rr",
        statistics=("mean", "p50"),
        n_boot=200,
    )
    assert_frame_equal(from_dict.to_frame(), from_frame.to_frame())


def test_custom_column_names(results: pl.DataFrame) -> None:
    renamed = results.rename({"router": "policy", "episode": "window"})
    res = compare_routers(
        renamed,
        baseline="rr",
        statistics=("p50",),
        n_boot=200,
        router_col="policy",
        episode_col="window",
    )
    ref = compare_routers(results, baseline="rr", statistics=("p50",), n_boot=200)
    assert_frame_equal(res.to_frame(), ref.to_frame())


def test_bootstrap_is_reproducible_and_seed_dependent(results: pl.DataFrame) -> None:
    def run(seed: int | np.random.Generator) -> pl.DataFrame:
        frame: pl.DataFrame = compare_routers(
            results, baseline="rr", statistics=("mean",), n_boot=300, seed=seed
        ).to_frame()
        return frame

    first, again, other = run(11), run(11), run(12)
    assert_frame_equal(first, again)
    assert first["ci_low"].to_list() != other["ci_low"].to_list()
    # everything but the interval is seed-free
    assert_frame_equal(first.drop("ci_low", "ci_high"), other.drop("ci_low", "ci_high"))
    assert_frame_equal(
        run(np.random.default_rng(np.random.SeedSequence(11))).select("ci_low", "ci_high"),
        first.select("ci_low", "ci_high"),
    )


def test_adding_a_router_does_not_change_another_routers_interval(
    results: pl.DataFrame,
) -> None:
    kwargs: dict[str, Any] = {"baseline": "rr", "statistics": ("mean",), "n_boot": 300, "seed": 5}
    two = compare_routers(results.filter(pl.col("router").is_in(["rr", "jsq"])), **kwargs)
    four = compare_routers(results, **kwargs)
    assert (two.get("jsq").ci_low, two.get("jsq").ci_high) == (
        four.get("jsq").ci_low,
        four.get("jsq").ci_high,
    )


def test_paired_episode_bootstrap_coverage() -> None:
    # Known truth: E[router] = 0.9 E[baseline], so 1 - E[router]/E[baseline] = 0.10.
    # 400 seeded data sets of 20 episodes, 1000 resamples each. Percentile intervals undercover
    # slightly at n = 20; the binomial SD of the rate at 400 reps is ~0.011, so we accept
    # [0.89, 0.99] (nominal 0.95 - 5 SD for the small-sample bias, + 3.5 SD).
    rng = np.random.default_rng(np.random.SeedSequence(2024))
    n_reps, n_episodes, n_boot = 400, 20, 1000
    covered = 0
    for _ in range(n_reps):
        base = rng.gamma(shape=8.0, scale=0.25, size=n_episodes)  # mean 2 s
        router = 0.9 * base * rng.lognormal(-0.5 * 0.05**2, 0.05, size=n_episodes)
        idx = rng.integers(0, n_episodes, size=(n_boot, n_episodes))
        low, high = paired_episode_bootstrap(base, router, idx, 0.95)
        covered += low <= 0.10 <= high
    rate = covered / n_reps
    assert 0.89 <= rate <= 0.99, rate


def test_pairing_mismatch_names_router_and_episodes(results: pl.DataFrame) -> None:
    broken = results.filter(~((pl.col("router") == "lor") & pl.col("episode").is_in([2, 5])))
    broken = pl.concat(
        [
            broken,
            results.filter((pl.col("router") == "lor") & (pl.col("episode") == 0)).with_columns(
                pl.lit(9).alias("episode")
            ),
        ]
    )
    msg = (
        "router 'lor' is not paired with baseline 'rr': episodes missing from 'lor': [2, 5]; "
        "episodes 'lor' has that 'rr' lacks: [9]."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        compare_routers(broken, baseline="rr", n_boot=100)


def test_one_episode_is_refused_with_the_reason(results: pl.DataFrame) -> None:
    one = results.filter(pl.col("episode") == 3)
    msg = (
        "compare_routers needs at least 2 paired episodes, got 1 (episodes [3]). Requests "
        "inside one replay are not the unit of replication"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        compare_routers(one, baseline="rr", n_boot=100)


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"baseline": "nope"}, "baseline 'nope' is not among the routers ['rr', 'jsq'"),
        ({"baseline": "rr", "statistics": ("p100",)}, "unknown statistic 'p100'"),
        ({"baseline": "rr", "statistics": ("median",)}, "unknown statistic 'median'"),
        ({"baseline": "rr", "metrics": ("latency",)}, "results has no metric column 'latency'"),
        ({"baseline": "rr", "n_boot": 10}, "n_boot must be an int >= 100, got 10"),
        ({"baseline": "rr", "confidence": 95}, "confidence must lie in (0, 1), got 95"),
        ({"baseline": "rr", "episode_col": "ep"}, "results has no column 'ep' (episode_col)"),
        ({"baseline": "rr", "seed": -1}, "seed must be a non-negative int"),
    ],
)
def test_argument_errors(results: pl.DataFrame, kwargs: dict[str, Any], msg: str) -> None:
    with pytest.raises(ValueError, match=re.escape(msg)):
        compare_routers(results, **kwargs)


def test_nan_and_empty_episode_errors() -> None:
    frame = pl.DataFrame(
        {
            "router": ["a"] * 4 + ["b"] * 4,
            "episode": [0, 0, 1, 1] * 2,
            "e2e_s": [1.0, float("nan"), 2.0, 2.0, 1.0, 1.0, 2.0, 2.0],
        }
    )
    with pytest.raises(ValueError, match=re.escape("metric column 'e2e_s' holds 1 NaN value")):
        compare_routers(frame, baseline="a", n_boot=100)
    frame = frame.with_columns(
        pl.when((pl.col("router") == "b") & (pl.col("episode") == 1))
        .then(None)
        .otherwise(pl.col("e2e_s").fill_nan(1.0))
        .alias("e2e_s")
    )
    with (
        pytest.warns(UserWarning),
        pytest.raises(
            ValueError, match=re.escape("router 'b' has no non-null 'e2e_s' value in episode 1")
        ),
    ):
        compare_routers(frame, baseline="a", n_boot=100)


def test_dict_with_conflicting_router_column_is_refused(results: pl.DataFrame) -> None:
    msg = "results['jsq'] has a 'router' column with"
    with pytest.raises(ValueError, match=re.escape(msg)):
        compare_routers(
            {
                "rr": results.filter(pl.col("router") == "rr"),
                "jsq": results.filter(pl.col("router") == "lor"),
            },
            baseline="rr",
        )


# --- Holm -------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.01, 0.05, 0.5, 1.0])),
        min_size=1,
        max_size=12,
    )
)
def test_holm_equals_multipletests(p: list[float]) -> None:
    # statsmodels.stats.multitest.multipletests(p, method="holm")[1], computed here
    expected = multipletests(p, method="holm")[1]
    assert_allclose(holm_adjust(p), expected, rtol=1e-12, atol=0)


def test_holm_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match=re.escape("holm_adjust expects p-values in [0, 1]")):
        holm_adjust([0.1, float("nan")])
    with pytest.raises(ValueError, match=re.escape("holm_adjust expects p-values in [0, 1]")):
        holm_adjust([0.1, 1.5])


# --- block bootstrap --------------------------------------------------------------------


def _ar1(n: int, phi: float, rng: np.random.Generator) -> np.ndarray:
    noise = rng.normal(size=n)
    x = np.empty(n)
    x[0] = noise[0] / math.sqrt(1 - phi**2)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + noise[i]
    return x


def _paired_ar1(seed: int, n: int = 1500) -> tuple[np.ndarray, np.ndarray]:
    """Queue-like latencies: a shared AR(1) backlog, the router 10 % faster on average."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    backlog = _ar1(n, 0.9, rng)
    base = np.exp(0.3 * backlog) * 2.0
    router = 0.9 * base * np.exp(0.2 * _ar1(n, 0.9, rng) - 0.5 * 0.04 / (1 - 0.81))
    return base, router


def test_block_bootstrap_is_wider_than_iid_on_ar1() -> None:
    base, router = _paired_ar1(1)
    blocks = moving_block_bootstrap(base, router, n_boot=1000, seed=0)
    iid = moving_block_bootstrap(base, router, n_boot=1000, seed=0, block_length=1)
    assert blocks.block_length_rule == "politis-white" and blocks.block_length > 5
    assert iid.block_length == 1 and iid.block_length_rule == "given"
    assert blocks.relative_improvement == iid.relative_improvement
    # AR(1) with phi = 0.9: the long-run SD is ~sqrt((1 + phi) / (1 - phi)) ~ 4x the iid SD
    assert (blocks.ci_high - blocks.ci_low) > 2.0 * (iid.ci_high - iid.ci_low)


def test_block_bootstrap_values_and_reproducibility() -> None:
    base, router = _paired_ar1(2)
    res = moving_block_bootstrap(base, router, n_boot=500, seed=4, statistic="p99")
    assert isinstance(res, BlockBootstrapResult)
    # numpy's default (linear) percentile, computed independently
    assert_allclose(res.baseline_value, np.percentile(base, 99), rtol=1e-12)
    assert_allclose(
        res.relative_improvement, 1 - np.percentile(router, 99) / np.percentile(base, 99)
    )
    assert res == moving_block_bootstrap(base, router, n_boot=500, seed=4, statistic="p99")
    other = moving_block_bootstrap(base, router, n_boot=500, seed=5, statistic="p99")
    assert (other.ci_low, other.ci_high) != (res.ci_low, res.ci_high)
    assert res.to_frame().height == 1
    moving = moving_block_bootstrap(base, router, n_boot=500, seed=4, method="moving")
    assert moving.method == "moving" and moving.ci_low < moving.relative_improvement


def test_block_bootstrap_p_value() -> None:
    base, router = _paired_ar1(3)
    strong = moving_block_bootstrap(base, 0.7 * base, n_boot=999, seed=0)
    # every replicate equals theta_hat = 0.3, so none is as extreme as 0: p = 1 / (n_boot + 1)
    assert strong.p_value == 1 / 1000
    null = moving_block_bootstrap(base, base, n_boot=999, seed=0)
    assert null.p_value == 1.0 and null.relative_improvement == 0.0


def test_block_bootstrap_null_calibration_beats_iid() -> None:
    # No true improvement: both series AR(1), phi = 0.5, independent, equal expectations.
    # 150 seeded replays of 2000 requests. The binomial SD of a 5 % rejection rate at 150
    # reps is ~0.018, so the block bootstrap must reject at most 0.12 (~4 SD); the iid
    # bootstrap ignores the dependence and rejects far more often (measured ~0.25).
    rng = np.random.default_rng(np.random.SeedSequence(1))
    n_reps, n, phi = 150, 2000, 0.5
    rejections = {"blocks": 0, "iid": 0}
    for _ in range(n_reps):
        base = 2.0 * np.exp(0.3 * _ar1(n, phi, rng))
        router = base * np.exp(0.2 * _ar1(n, phi, rng) - 0.5 * 0.04 / (1 - phi**2))
        for name, length in (("blocks", None), ("iid", 1)):
            res = moving_block_bootstrap(base, router, n_boot=400, seed=rng, block_length=length)
            rejections[name] += res.p_value < 0.05
    assert rejections["blocks"] / n_reps <= 0.12, rejections
    assert rejections["iid"] / n_reps > 0.15, rejections


def test_block_bootstrap_errors() -> None:
    with pytest.raises(
        ValueError, match=re.escape("baseline_values has 10 requests but router_values has 9")
    ):
        moving_block_bootstrap(np.ones(10), np.ones(9))
    with pytest.raises(ValueError, match=re.escape("block_length must be an int in [1, 10]")):
        moving_block_bootstrap(np.ones(10), np.ones(10), block_length=11)
    with pytest.raises(ValueError, match=re.escape("router_values holds 1 NaN/infinite value")):
        moving_block_bootstrap(np.ones(10), np.r_[np.ones(9), np.nan])


def test_optimal_block_length_grows_with_dependence() -> None:
    rng = np.random.default_rng(np.random.SeedSequence(0))
    lengths = [optimal_block_length(_ar1(3000, phi, rng)) for phi in (0.0, 0.5, 0.9)]
    assert lengths[0] < lengths[1] < lengths[2]
    assert optimal_block_length(np.ones(50)) == 1


def test_parse_statistic() -> None:
    assert parse_statistic("p50") == 0.5
    assert parse_statistic("p99.9") == 0.999
    assert parse_statistic("mean") is None


# --- power ------------------------------------------------------------------------------


@pytest.mark.parametrize("two_sided", [True, False])
def test_episodes_needed_matches_ttestpower(two_sided: bool) -> None:
    alternative = "two-sided" if two_sided else "larger"
    previous = math.inf
    for effect in (0.01, 0.02, 0.05, 0.1, 0.2):
        n = episodes_needed(effect, 0.05, two_sided=two_sided)
        # statsmodels TTestPower().solve_power with d = effect / sd, rounded up
        ref = TTestPower().solve_power(
            effect_size=effect / 0.05, alpha=0.05, power=0.8, alternative=alternative
        )
        assert n == max(2, math.ceil(ref))
        assert n <= previous
        previous = n
        assert power_of(effect, 0.05, n, two_sided=two_sided) >= 0.8
        if n > 2:
            assert power_of(effect, 0.05, n - 1, two_sided=two_sided) < 0.8
    assert episodes_needed(0.01, 0.05) > episodes_needed(0.02, 0.05) > episodes_needed(0.05, 0.05)
    assert episodes_needed(0.02, 0.05, two_sided=False) < episodes_needed(0.02, 0.05)
    assert episodes_needed(-0.05, 0.05) == episodes_needed(0.05, 0.05)


def test_power_of_matches_ttestpower() -> None:
    # statsmodels TTestPower().power(effect_size=0.03/0.04, nobs=12, alpha=0.05)
    ref = TTestPower().power(effect_size=0.03 / 0.04, nobs=12, alpha=0.05)
    assert_allclose(power_of(0.03, 0.04, 12), ref, rtol=1e-12)


def test_power_errors() -> None:
    with pytest.raises(ValueError, match=re.escape("effect must be a finite, non-zero")):
        episodes_needed(0.0, 0.1)
    with pytest.raises(
        ValueError, match=re.escape("sd_of_relative_differences must be finite and > 0, got -1")
    ):
        episodes_needed(0.1, -1)
    with pytest.raises(ValueError, match=re.escape("power must lie in (alpha=0.05, 1), got 1.0")):
        episodes_needed(0.1, 0.1, power=1.0)
    with pytest.raises(ValueError, match=re.escape("n_episodes must be an int >= 2, got 1")):
        power_of(0.1, 0.1, 1)


def test_sd_from_pilot(results: pl.DataFrame, comparison: ComparisonResult) -> None:
    base = _episode_stat(results, "rr", "e2e_s", "mean")
    jsq = _episode_stat(results, "jsq", "e2e_s", "mean")
    # numpy: sample SD of the per-episode relative improvements
    assert_allclose(
        estimate_sd_of_relative_differences(comparison, router="jsq"),
        np.std(1 - jsq / base, ddof=1),
        rtol=1e-10,
    )
