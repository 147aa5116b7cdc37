"""describe_trace's streamed inter-arrival CV (batch boundaries, exactness)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
from routeplay.datasets import describe_trace


def test_interarrival_cv_streams_across_batches_and_matches_numpy() -> None:
    rng = np.random.default_rng(np.random.SeedSequence(2))
    arrival = np.cumsum(rng.exponential(0.3, 5_000)) + 100.0
    parts = [
        pl.LazyFrame(
            {
                "arrival_s": arrival[lo:hi],
                "prompt_tokens": np.full(hi - lo, 5, np.int64),
                "output_tokens": np.full(hi - lo, 2, np.int64),
            }
        )
        for lo, hi in ((0, 1), (1, 1_700), (1_700, 1_701), (1_701, 5_000))
    ]
    d = describe_trace(pl.concat(parts))  # several batches, one of a single row
    gaps = np.diff(arrival)
    assert math.isclose(d.interarrival_cv, gaps.std(ddof=1) / gaps.mean(), rel_tol=1e-9)
    assert d.n_requests == 5_000


def test_interarrival_cv_is_nan_below_three_rows() -> None:
    frame = pl.DataFrame(
        {"arrival_s": [0.0, 1.0], "prompt_tokens": [1, 1], "output_tokens": [1, 1]}
    )
    assert math.isnan(describe_trace(frame).interarrival_cv)
