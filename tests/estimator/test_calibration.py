"""fit_latency_model, LatencyFit, read_iteration_log, score_latency_model."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from routeplay.estimator import (
    LatencyFit,
    LinearLatencyModel,
    fit_latency_model,
    read_iteration_log,
    score_latency_model,
)

# True coefficients (seconds) in the order LatencyFit.terms reports them.
TRUTH = {
    "intercept": 0.010,
    "prefill_batch": -0.003,
    "prefill_tokens": 6.5e-5,
    "prefill_sq_tokens": 4.0e-9,
    "n_decode_seqs": 4.0e-5,
    "decode_context_tokens": 3.0e-7,
}


def _design(rng: np.random.Generator, n_prefill: int, n_decode: int) -> pl.DataFrame:
    p = rng.integers(64, 4096, n_prefill).astype(np.float64)
    cached = rng.integers(0, 1024, n_prefill).astype(np.float64)
    b = rng.integers(1, 128, n_decode).astype(np.float64)
    k = rng.integers(32, 4032, n_decode).astype(np.float64)
    zp, zd = np.zeros(n_prefill), np.zeros(n_decode)
    return pl.DataFrame(
        {
            "prefill_tokens": np.concatenate([p, zd]),
            "prefill_sq_tokens": np.concatenate([p * (p + cached), zd]),
            "n_decode_seqs": np.concatenate([zp, b]),
            "decode_context_tokens": np.concatenate([zp, b * k]),
        }
    )


def _true_time(frame: pl.DataFrame) -> np.ndarray:
    x = {c: frame[c].to_numpy() for c in frame.columns}
    return (
        TRUTH["intercept"]
        + TRUTH["prefill_batch"] * (x["prefill_tokens"] > 0)
        + TRUTH["prefill_tokens"] * x["prefill_tokens"]
        + TRUTH["prefill_sq_tokens"] * x["prefill_sq_tokens"]
        + TRUTH["n_decode_seqs"] * x["n_decode_seqs"]
        + TRUTH["decode_context_tokens"] * x["decode_context_tokens"]
    )


def _table(seed: int, n_prefill: int = 40, n_decode: int = 40, rel_noise: float = 0.03):
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    frame = _design(rng, n_prefill, n_decode)
    mean = _true_time(frame)
    # heteroscedastic: noise proportional to the iteration time (what HC3 is for)
    return frame.with_columns(iteration_s=mean * (1.0 + rel_noise * rng.standard_normal(mean.size)))


def test_exact_data_recovers_coefficients() -> None:
    frame = _table(1, rel_noise=0.0)
    fit = fit_latency_model(frame, test_fraction=0.25, seed=3)
    assert fit.terms == tuple(TRUTH)
    np.testing.assert_allclose(fit.coefficients, list(TRUTH.values()), rtol=1e-7)
    m = fit.model
    assert (m.intercept_s, m.prefill_batch_s, m.decode_s_per_seq) == pytest.approx(
        (0.010, -0.003, 4.0e-5), rel=1e-7
    )
    assert fit.heldout_mape < 1e-9
    assert fit.n_train == 60 and fit.n_test == 20
    assert fit.r_squared == pytest.approx(1.0)


def test_confidence_intervals_cover_truth_at_nominal_rate() -> None:
    # 200 independent seeded data sets (100 prefill + 100 decode rows, 3% multiplicative
    # noise), OLS + HC3 with t-based 95% CIs. Each coefficient's coverage is a
    # Binomial(200, 0.95) share, whose SD is sqrt(0.95 * 0.05 / 200) = 0.0154; we accept
    # 3 SDs either side: [0.904, 0.996]. (Measured: 0.925-0.975 per term, 0.948 pooled;
    # with 40 + 40 rows HC3 under-covers the quadratic term, 0.905.)
    n_fits = 200
    covered = np.zeros((n_fits, len(TRUTH)), dtype=bool)
    truth = np.array(list(TRUTH.values()))
    for i in range(n_fits):
        fit = fit_latency_model(_table(1000 + i, n_prefill=100, n_decode=100), test_fraction=0.0)
        covered[i] = (np.array(fit.ci_low) <= truth) & (truth <= np.array(fit.ci_high))
    rates = covered.mean(axis=0)
    sd = np.sqrt(0.95 * 0.05 / n_fits)
    assert np.all(np.abs(rates - 0.95) <= 3 * sd), dict(zip(TRUTH, rates.tolist(), strict=True))
    # pooled over the 6 coefficients the rate is within 2 points of nominal
    assert abs(covered.mean() - 0.95) <= 0.02, covered.mean()


def test_split_is_seeded_and_deterministic() -> None:
    frame = _table(7)
    a = fit_latency_model(frame, seed=11)
    b = fit_latency_model(frame, seed=11)
    c = fit_latency_model(frame, seed=12)
    assert a == b
    assert a.coefficients != c.coefficients
    assert a.test is not None and a.test.n_rows == 16 and a.n_train == 64


def test_wls_defaults_to_relative_weights() -> None:
    frame = _table(5)
    y = frame["iteration_s"].to_numpy()
    default = fit_latency_model(frame, method="wls")
    explicit = fit_latency_model(frame, method="wls", weights=1.0 / y**2)
    by_column = fit_latency_model(
        frame.with_columns(w=1.0 / pl.col("iteration_s") ** 2), method="wls", weights="w"
    )
    assert default.coefficients == pytest.approx(explicit.coefficients, rel=1e-12)
    assert by_column.coefficients == pytest.approx(explicit.coefficients, rel=1e-12)
    ols = fit_latency_model(frame)
    assert default.coefficients != pytest.approx(ols.coefficients, rel=1e-9)


def test_prefill_only_table_drops_decode_terms_with_a_note() -> None:
    frame = _table(2, n_decode=0)
    with pytest.warns(UserWarning, match=re.escape("dropped 3 term(s)")):
        fit = fit_latency_model(frame)
    assert fit.dropped_terms == ("prefill_batch", "n_decode_seqs", "decode_context_tokens")
    assert fit.terms == ("intercept", "prefill_tokens", "prefill_sq_tokens")
    assert fit.model.decode_s_per_seq == 0.0 and fit.model.decode_s_per_context_token == 0.0
    assert fit.model.prefill_batch_s == 0.0
    assert any("every iteration has prefill work" in n for n in fit.notes)
    # intercept = decode intercept + prefill fixed cost of the generating model
    lo, hi = fit.confidence_interval("intercept")
    assert lo < TRUTH["intercept"] + TRUTH["prefill_batch"] < hi
    assert "dropped terms" in fit.summary()


def test_subset_of_terms_fits_without_warning() -> None:
    frame = _table(3, n_prefill=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_latency_model(frame, terms=["n_decode_seqs", "decode_context_tokens"])
    assert fit.terms == ("intercept", "n_decode_seqs", "decode_context_tokens")
    assert fit.model.prefill_s_per_token == 0.0
    lo, hi = fit.confidence_interval("decode_context_tokens")
    assert lo < TRUTH["decode_context_tokens"] < hi


def test_to_frame_and_summary() -> None:
    fit = fit_latency_model(_table(4))
    frame = fit.to_frame()
    assert frame.height == 6
    assert frame.columns == [
        "term",
        "model_field",
        "unit",
        "estimate",
        "std_error",
        "ci_low",
        "ci_high",
        "p_value",
    ]
    assert frame["model_field"].to_list() == [
        "intercept_s",
        "prefill_batch_s",
        "prefill_s_per_token",
        "prefill_s_per_token2",
        "decode_s_per_seq",
        "decode_s_per_context_token",
    ]
    assert (frame["ci_low"] < frame["estimate"]).all() and (
        frame["estimate"] < frame["ci_high"]
    ).all()
    text = fit.summary()
    assert "HC3" in text and "held-out MAPE" in text and "decode_context_tokens" in text
    assert isinstance(fit, LatencyFit)
    with pytest.raises(ValueError, match=re.escape("term 'foo' was not fitted")):
        fit.coefficient("foo")


def test_score_latency_model_matches_fit_residuals() -> None:
    frame = _table(6)
    fit = fit_latency_model(frame, test_fraction=0.0)
    score = score_latency_model(fit.model, frame)
    assert score.mape == pytest.approx(fit.train.mape, rel=1e-9)
    assert score.r_squared == pytest.approx(fit.r_squared, rel=1e-9)
    assert abs(score.mean_s) < 1e-12  # OLS residuals with an intercept sum to zero


# ----------------------------------------------------------------------------- errors


def test_missing_columns_error() -> None:
    frame = _table(1).drop("n_decode_seqs")
    with pytest.raises(
        ValueError, match=re.escape("iteration table is missing column(s) ['n_decode_seqs']")
    ):
        fit_latency_model(frame)


def test_non_positive_time_error() -> None:
    frame = _table(1).with_columns(
        iteration_s=pl.when(pl.int_range(pl.len()) == 3).then(0.0).otherwise(pl.col("iteration_s"))
    )
    with pytest.raises(
        ValueError,
        match=re.escape(
            "iteration table column 'iteration_s' row 3 = 0.0 (1 bad row(s)); expected finite "
            "seconds > 0"
        ),
    ):
        fit_latency_model(frame)


def test_negative_feature_error() -> None:
    frame = _table(1).with_columns(n_decode_seqs=-pl.col("n_decode_seqs"))
    with pytest.raises(ValueError, match=re.escape("column 'n_decode_seqs' row 40 = -")):
        fit_latency_model(frame)


def test_too_few_rows_error() -> None:
    frame = _table(1, n_prefill=4, n_decode=4)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "too few rows: 6 training row(s) of 8 (test_fraction=0.2) for 6 coefficient(s)"
        ),
    ):
        fit_latency_model(frame)


def test_collinear_terms_error() -> None:
    frame = _table(1, n_prefill=0).with_columns(
        decode_context_tokens=pl.col("n_decode_seqs") * 300.0
    )
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the terms ['intercept', 'n_decode_seqs', 'decode_context_tokens'] are collinear"
        ),
    ):
        fit_latency_model(frame, terms=["n_decode_seqs", "decode_context_tokens"])


def test_option_errors() -> None:
    frame = _table(1)
    with pytest.raises(ValueError, match=re.escape("unknown or repeated term(s) ['kv']")):
        fit_latency_model(frame, terms=["kv"])
    with pytest.raises(ValueError, match=re.escape("weights were given with method='ols'")):
        fit_latency_model(frame, weights=np.ones(frame.height))
    with pytest.raises(ValueError, match=re.escape("test_fraction = 1.0; expected a share")):
        fit_latency_model(frame, test_fraction=1.0)
    with pytest.raises(ValueError, match=re.escape("method = 'gls'; expected 'ols' or 'wls'")):
        fit_latency_model(frame, method="gls")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("weights[0] = -1.0; expected finite")):
        fit_latency_model(frame, method="wls", weights=-np.ones(frame.height))


def test_negative_fitted_base_cost_is_reported() -> None:
    # iterations get *faster* with more decode sequences: decode_s_per_seq < 0 is invalid
    frame = _table(1, n_prefill=0, rel_noise=0.0).with_columns(
        iteration_s=0.05 - 1e-4 * pl.col("n_decode_seqs") + 3e-7 * pl.col("decode_context_tokens")
    )
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the fitted coefficients do not form a valid latency model: LinearLatencyModel has a "
            "negative base cost"
        ),
    ):
        fit_latency_model(
            frame, test_fraction=0.0, terms=["n_decode_seqs", "decode_context_tokens"]
        )


# ------------------------------------------------------------------- iteration logs


def test_read_iteration_log_csv_and_parquet(tmp_path: Path) -> None:
    frame = _table(8).with_columns(instance=pl.lit("gpu0"))
    frame.write_csv(tmp_path / "it.csv")
    frame.write_parquet(tmp_path / "it.parquet")
    for name in ("it.csv", "it.parquet"):
        got = read_iteration_log(tmp_path / name)
        assert got.columns == frame.columns
        np.testing.assert_allclose(got["iteration_s"].to_numpy(), frame["iteration_s"].to_numpy())
    fit = fit_latency_model(read_iteration_log(tmp_path / "it.csv"))
    assert isinstance(fit.model, LinearLatencyModel)


def test_read_iteration_log_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape("iteration log")):
        read_iteration_log(tmp_path / "nope.csv")
    (tmp_path / "it.txt").write_text("x")
    with pytest.raises(ValueError, match=re.escape("has suffix '.txt'; expected .csv or .parquet")):
        read_iteration_log(tmp_path / "it.txt")
    (tmp_path / "bad.csv").write_text(
        "prefill_tokens,prefill_sq_tokens,n_decode_seqs,decode_context_tokens,iteration_s\n"
        "0,0,4,400,-0.01\n"
    )
    with pytest.raises(
        ValueError, match=re.escape("iteration log bad.csv column 'iteration_s' row 0 = -0.01")
    ):
        read_iteration_log(tmp_path / "bad.csv")
