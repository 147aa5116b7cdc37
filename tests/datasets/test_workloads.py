"""Episodes, train/test splits by time, and arrival reshaping."""

from __future__ import annotations

import re
import warnings

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from routeplay.datasets import (
    Episode,
    attach_arrivals,
    resample_arrivals,
    scale_arrival_rate,
    split_episodes,
    split_train_test,
    validate_trace,
)


def _trace(arrivals: list[float]) -> pl.DataFrame:
    n = len(arrivals)
    return validate_trace(
        pl.DataFrame(
            {
                "request_id": list(range(n)),
                "arrival_s": arrivals,
                "prompt_tokens": [10 + i for i in range(n)],
                "output_tokens": [1 + 2 * i for i in range(n)],
            }
        )
    )


def _reassemble(episodes: list[Episode]) -> pl.DataFrame:
    return pl.concat([e.original_trace() for e in episodes])


# ---------------------------------------------------------------- split_episodes


def test_count_windows_rebase_and_reassemble() -> None:
    trace = _trace([0.5, 1.0, 1.5, 4.0, 4.5, 7.0, 9.0])
    episodes = split_episodes(trace, n_requests=3)
    assert [e.index for e in episodes] == [0, 1, 2]
    assert [e.n_requests for e in episodes] == [3, 3, 1]
    assert [e.is_partial for e in episodes] == [False, False, True]
    assert [e.offset_s for e in episodes] == [0.5, 4.0, 9.0]
    for episode in episodes:
        assert episode.trace.item(0, "arrival_s") == 0.0
        validate_trace(episode.trace)
    assert episodes[1].trace["arrival_s"].to_list() == [0.0, 0.5, 3.0]
    assert_frame_equal(_reassemble(episodes), trace)


def test_count_windows_keep_tied_arrivals_together(tiny_trace: pl.DataFrame) -> None:
    # tiny_trace arrivals: 0.0, 0.1, 0.25, 0.25, 1.0; a 3-request window would end
    # between the two requests at 0.25, so it is extended to hold both.
    episodes = split_episodes(tiny_trace, n_requests=3)
    assert [e.trace["request_id"].to_list() for e in episodes] == [[0, 1, 2, 3], [4]]
    assert [e.is_partial for e in episodes] == [False, True]


def test_drop_partial_warns_with_counts() -> None:
    trace = _trace([0.0, 1.0, 2.0, 3.0, 4.0])
    msg = (
        "split_episodes: dropped the partial last episode (index 2, 1 of 5 requests) of a "
        "window of 2 requests; 2 episode(s) remain."
    )
    with pytest.warns(UserWarning, match=re.escape(msg)):
        episodes = split_episodes(trace, n_requests=2, drop_partial=True)
    assert [e.n_requests for e in episodes] == [2, 2]


def test_exact_multiple_has_no_partial_window() -> None:
    episodes = split_episodes(_trace([0.0, 1.0, 2.0, 3.0]), n_requests=2, drop_partial=True)
    assert [e.is_partial for e in episodes] == [False, False]


def test_drop_partial_leaving_nothing_raises() -> None:
    trace = _trace([0.0, 1.0])
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=re.escape(
        "split_episodes: the trace (2 requests, last arrival 1.0 s) is shorter than one "
        "window of 5 requests, so drop_partial=True leaves no episode."
    )):  # fmt: skip
        split_episodes(trace, n_requests=5, drop_partial=True)


def test_duration_windows_skip_empty_windows_with_warning() -> None:
    trace = _trace([0.0, 0.4, 2.1, 2.2, 5.5])
    msg = (
        "split_episodes: skipped 3 of 6 windows of 1.0 s that hold no request "
        "(window indices [1, 3, 4])."
    )
    with pytest.warns(UserWarning, match=re.escape(msg)):
        episodes = split_episodes(trace, duration_s=1.0)
    assert [e.index for e in episodes] == [0, 2, 5]
    assert [e.offset_s for e in episodes] == [0.0, 2.0, 5.0]
    assert [e.is_partial for e in episodes] == [False, False, True]
    np.testing.assert_allclose(episodes[1].trace["arrival_s"].to_numpy(), [0.1, 0.2])
    for episode in episodes:
        arrivals = episode.trace["arrival_s"]
        assert arrivals.min() >= 0.0 and arrivals.max() < 1.0
    assert_frame_equal(_reassemble(episodes), trace)


def test_duration_drop_partial_drops_last_window() -> None:
    trace = _trace([0.0, 1.5, 2.5, 3.2])
    with pytest.warns(UserWarning, match=re.escape("(index 3, 1 of 4 requests)")):
        episodes = split_episodes(trace, duration_s=1.0, drop_partial=True)
    assert [e.index for e in episodes] == [0, 1, 2]


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({}, "split_episodes needs exactly one of n_requests and duration_s, got "
             "n_requests=None, duration_s=None. Fix: pass one of them."),
        ({"n_requests": 2, "duration_s": 1.0}, "split_episodes needs exactly one of "
             "n_requests and duration_s, got n_requests=2, duration_s=1.0."),
        ({"n_requests": 0}, "n_requests=0 is invalid; expected an integer >= 1."),
        ({"duration_s": -1.0}, "duration_s=-1.0 is invalid; expected a finite number > 0."),
    ],
)  # fmt: skip
def test_split_episodes_argument_errors(kwargs: dict[str, float], msg: str) -> None:
    with pytest.raises(ValueError, match=re.escape(msg)):
        split_episodes(_trace([0.0, 1.0]), **kwargs)


# ---------------------------------------------------------------- split_train_test


def test_split_train_test_is_by_time() -> None:
    trace = _trace([float(i) for i in range(10)])
    train, test = split_train_test(trace, n_requests=2, test_fraction=0.4)
    assert [e.index for e in train] == [0, 1, 2]
    assert [e.index for e in test] == [3, 4]
    assert max(e.last_arrival_s for e in train) < min(e.first_arrival_s for e in test)


def test_split_train_test_accepts_episodes_in_any_order() -> None:
    episodes = split_episodes(_trace([float(i) for i in range(6)]), n_requests=2)
    train, test = split_train_test(list(reversed(episodes)), test_fraction=0.3)
    assert [e.index for e in train] == [0, 1] and [e.index for e in test] == [2]


@settings(max_examples=40, deadline=None)
@given(
    gaps=st.lists(st.sampled_from([0.0, 0.0, 0.1, 0.7, 2.3]), min_size=3, max_size=60),
    n_requests=st.integers(1, 7),
    duration_s=st.sampled_from([None, 0.5, 1.0, 3.0]),
    test_fraction=st.floats(0.05, 0.95),
)
def test_test_windows_lie_strictly_after_training_windows(
    gaps: list[float], n_requests: int, duration_s: float | None, test_fraction: float
) -> None:
    trace = _trace(np.cumsum([0.0, *gaps]).tolist())
    kwargs = {"n_requests": n_requests} if duration_s is None else {"duration_s": duration_s}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # empty/partial windows are tested elsewhere
            train, test = split_train_test(trace, test_fraction=test_fraction, **kwargs)
    except ValueError as exc:
        assert "needs at least 2 episodes" in str(exc)
        return
    assert train and test
    assert max(e.last_arrival_s for e in train) < min(e.first_arrival_s for e in test)
    assert_frame_equal(_reassemble(train + test), trace)


def test_split_train_test_errors() -> None:
    trace = _trace([0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=re.escape(
        "test_fraction=1.5 is invalid; expected a number in (0, 1)."
    )):  # fmt: skip
        split_train_test(trace, n_requests=1, test_fraction=1.5)
    with pytest.raises(ValueError, match=re.escape(
        "split_train_test needs at least 2 episodes, got 1. Fix: use smaller windows"
    )):  # fmt: skip
        split_train_test(trace, n_requests=5)
    episodes = split_episodes(trace, n_requests=1)
    with pytest.raises(ValueError, match=re.escape(
        "n_requests, duration_s and drop_partial apply only when a trace is given"
    )):  # fmt: skip
        split_train_test(episodes, n_requests=2)
    overlapping = [episodes[0], episodes[1], episodes[1]]
    with pytest.raises(ValueError, match=re.escape(
        "split_train_test: episode 1 starts at 1.0 s, not after episode 1 ends at 1.0 s"
    )):  # fmt: skip
        split_train_test(overlapping)


# ---------------------------------------------------------------- arrival reshaping


def test_scale_arrival_rate_divides_gaps_and_keeps_lengths(tiny_trace: pl.DataFrame) -> None:
    out = scale_arrival_rate(tiny_trace, 4.0)
    np.testing.assert_allclose(
        np.diff(out["arrival_s"].to_numpy()), np.diff(tiny_trace["arrival_s"].to_numpy()) / 4.0
    )
    assert_frame_equal(out.drop("arrival_s"), tiny_trace.drop("arrival_s"))
    with pytest.raises(ValueError, match=re.escape(
        "factor=0 is invalid; expected a finite number > 0. Fix: pass factor=2.0"
    )):  # fmt: skip
        scale_arrival_rate(tiny_trace, 0)


@pytest.mark.parametrize("cv", [1.0, 0.5, 2.0])
def test_resample_arrivals_matches_rate_and_cv(cv: float) -> None:
    n = 50_000
    trace = _trace(np.linspace(0.0, 10.0, n).tolist())
    out = resample_arrivals(trace, rate_per_s=8.0, cv=cv, seed=3)
    gaps = np.diff(out["arrival_s"].to_numpy())
    assert out.item(0, "arrival_s") == 0.0
    np.testing.assert_allclose(gaps.mean(), 1 / 8.0, rtol=0.03)
    np.testing.assert_allclose(gaps.std() / gaps.mean(), cv, rtol=0.05)
    assert_frame_equal(out.drop("arrival_s"), trace.drop("arrival_s"))


def test_resample_arrivals_poisson_counts_are_poisson() -> None:
    trace = _trace([0.0] * 20_000)
    out = resample_arrivals(trace, rate_per_s=5.0, cv=1.0, seed=11)
    counts = np.bincount(np.floor(out["arrival_s"].to_numpy()).astype(int))[:-1]
    # Poisson counts per 1 s: mean = variance = 5.
    np.testing.assert_allclose([counts.mean(), counts.var()], [5.0, 5.0], rtol=0.06)


def test_resample_arrivals_is_deterministic(tiny_trace: pl.DataFrame) -> None:
    a = resample_arrivals(tiny_trace, rate_per_s=3.0, cv=1.5, seed=7)
    assert_frame_equal(a, resample_arrivals(tiny_trace, rate_per_s=3.0, cv=1.5, seed=7))
    b = resample_arrivals(tiny_trace, rate_per_s=3.0, cv=1.5, seed=8)
    assert not a["arrival_s"].equals(b["arrival_s"])


@pytest.mark.parametrize(
    ("kwargs", "msg"),
    [
        ({"rate_per_s": 0.0}, "rate_per_s=0.0 is invalid; expected a finite number > 0."),
        ({"rate_per_s": 1.0, "cv": -1.0}, "cv=-1.0 is invalid; expected a finite number >= 0"),
        ({"rate_per_s": 1.0, "seed": -2}, "seed=-2 is invalid; expected an integer >= 0."),
    ],
)
def test_resample_arrivals_errors(
    tiny_trace: pl.DataFrame, kwargs: dict[str, float], msg: str
) -> None:
    kwargs = {"seed": 0, **kwargs}
    with pytest.raises(ValueError, match=re.escape(msg)):
        resample_arrivals(tiny_trace, **kwargs)


def test_attach_arrivals_uses_every_row_in_order() -> None:
    lengths = pl.DataFrame({"prompt_tokens": [5, 6, 7], "output_tokens": [9, 8, 7]})
    out = attach_arrivals(lengths, rate_per_s=2.0, seed=0)
    assert out["request_id"].to_list() == [0, 1, 2]
    assert out["prompt_tokens"].to_list() == [5, 6, 7]
    assert out.item(0, "arrival_s") == 0.0
    assert out.schema["output_tokens"] == pl.UInt32
    assert_frame_equal(out, attach_arrivals(lengths, rate_per_s=2.0, seed=0))


def test_attach_arrivals_samples_rows() -> None:
    lengths = pl.DataFrame(
        {"request_id": [10, 11, 12, 13], "prompt_tokens": [1, 2, 3, 4],
         "output_tokens": [4, 3, 2, 1], "task": ["a", "b", "c", "d"]}
    )  # fmt: skip
    out = attach_arrivals(lengths, rate_per_s=1.0, seed=2, n_requests=3)
    assert out.height == 3 and out["request_id"].n_unique() == 3
    assert set(out["request_id"].to_list()) <= {10, 11, 12, 13}
    # the sampled rows are intact
    joined = out.join(lengths.with_columns(pl.col("request_id").cast(pl.UInt64)), on="request_id")
    assert (joined["prompt_tokens"] == joined["prompt_tokens_right"]).all()
    many = attach_arrivals(lengths, rate_per_s=1.0, seed=2, n_requests=50, replace=True)
    assert many["request_id"].to_list() == list(range(50))
    assert set(many["task"].cast(pl.String).to_list()) <= {"a", "b", "c", "d"}


def test_attach_arrivals_errors() -> None:
    lengths = pl.DataFrame({"prompt_tokens": [5, 6], "output_tokens": [9, 8]})
    with pytest.raises(ValueError, match=re.escape(
        "attach_arrivals: n_requests=3 exceeds the table's 2 rows. Fix: pass replace=True"
    )):  # fmt: skip
        attach_arrivals(lengths, rate_per_s=1.0, seed=0, n_requests=3)
    with pytest.raises(ValueError, match=re.escape(
        "attach_arrivals: the length table lacks column(s) ['output_tokens']"
    )):  # fmt: skip
        attach_arrivals(lengths.drop("output_tokens"), rate_per_s=1.0, seed=0)
    with pytest.raises(ValueError, match=re.escape(
        "attach_arrivals: the table already has 'arrival_s'; expected a length-only table."
    )):  # fmt: skip
        attach_arrivals(lengths.with_columns(arrival_s=0.0), rate_per_s=1.0, seed=0)
