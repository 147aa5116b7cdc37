"""Workload builders: episodes, train/test splits by time, and arrival reshaping.

Every function here takes and returns traces in the canonical schema
(:data:`~routeplay.datasets.TRACE_SCHEMA`) and validates its output with
:func:`~routeplay.datasets.validate_trace`.

Arrival processes generated here (:func:`resample_arrivals`,
:func:`attach_arrivals`) start the clock at the first request: it arrives at
``arrival_s == 0.0`` and request ``i`` arrives after ``i`` inter-arrival gaps. This
matches the loaders, which subtract the first timestamp.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from ._schema import OPTIONAL_SCHEMA, TRACE_SCHEMA, validate_trace

__all__ = [
    "Episode",
    "attach_arrivals",
    "renewal_arrivals",
    "resample_arrivals",
    "scale_arrival_rate",
    "split_episodes",
    "split_train_test",
]


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class Episode:
    """One time window of a trace, re-based to its own clock.

    Attributes:
        index: position of the window in time. Request-count windows are numbered
            0, 1, 2, ...; duration windows carry their window number ``k`` (window
            ``[k * duration_s, (k + 1) * duration_s)`` of the original clock), so
            indices skip windows that held no request.
        offset_s: original-clock time of this episode's zero. The original arrival
            of a request is ``trace["arrival_s"] + offset_s``.
        is_partial: the last window, holding fewer requests (count windows) or
            covering less than ``duration_s`` of observed trace (duration windows).
        trace: the window's requests, a valid canonical trace with re-based
            ``arrival_s`` (``request_id`` and every other column unchanged).

    Example:
        >>> import polars as pl
        >>> t = pl.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 1.0, 2.5],
        ...                   "prompt_tokens": [5, 6, 7], "output_tokens": [1, 2, 3]})
        >>> last = split_episodes(t, n_requests=2)[-1]
        >>> last.index, last.offset_s, last.n_requests, last.is_partial
        (1, 2.5, 1, True)
    """

    index: int
    offset_s: float
    is_partial: bool
    trace: pl.DataFrame

    @property
    def n_requests(self) -> int:
        """Number of requests in the episode."""
        return self.trace.height

    @property
    def first_arrival_s(self) -> float:
        """Original-clock arrival time of the episode's first request."""
        return float(self.trace.item(0, "arrival_s")) + self.offset_s

    @property
    def last_arrival_s(self) -> float:
        """Original-clock arrival time of the episode's last request."""
        return float(self.trace.item(-1, "arrival_s")) + self.offset_s

    def original_trace(self) -> pl.DataFrame:
        """The episode's requests with their original-clock ``arrival_s``.

        Returns:
            The trace rows as they were in the trace that was split.
        """
        return self.trace.with_columns(pl.col("arrival_s") + self.offset_s)


def _check_positive(name: str, value: float, *, fix: str) -> None:
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name}={value!r} is invalid; expected a finite number > 0. Fix: {fix}")


def split_episodes(
    trace: pl.DataFrame,
    *,
    n_requests: int | None = None,
    duration_s: float | None = None,
    drop_partial: bool = False,
) -> list[Episode]:
    """Cut a trace into consecutive windows (episodes) in time order.

    Exactly one of ``n_requests`` and ``duration_s`` is given:

    * ``n_requests``: windows of ``n_requests`` consecutive requests. Requests that
      arrive at the same instant are never split across two windows: a window
      that would end inside a group of tied ``arrival_s`` values is extended to the
      end of the group (so it may hold more than ``n_requests`` requests), which
      keeps every window strictly later than the one before it. Each episode's
      clock starts at its first request (``offset_s`` = that request's arrival).
      The last window is partial when it holds fewer than ``n_requests``.
    * ``duration_s``: windows ``[k * duration_s, (k + 1) * duration_s)`` of the
      trace clock (which starts at 0). Each episode's clock starts at its window
      start, so its first request may arrive after 0. Windows without a request
      are skipped with a warning (they cannot form a valid trace). The last window
      is always partial: the trace's end is only known up to its last arrival.

    Args:
        trace: a canonical trace (validated here).
        n_requests: requests per window.
        duration_s: window length in seconds.
        drop_partial: drop the partial last window (warns with its size).

    Returns:
        The episodes in time order, each with a valid re-based trace.

    Raises:
        ValueError: if not exactly one of ``n_requests``/``duration_s`` is given,
            or it is not positive, or ``drop_partial`` leaves no episode.

    Example:
        >>> import polars as pl
        >>> t = pl.DataFrame({"request_id": [0, 1, 2, 3], "arrival_s": [0.0, 0.4, 1.2, 2.7],
        ...                   "prompt_tokens": [5, 6, 7, 8], "output_tokens": [1, 2, 3, 4]})
        >>> [(e.index, e.offset_s, e.trace["arrival_s"].to_list())
        ...  for e in split_episodes(t, duration_s=1.0)]
        [(0, 0.0, [0.0, 0.4]), (1, 1.0, [0.19999999999999996]), (2, 2.0, [0.7000000000000002])]
    """
    if (n_requests is None) == (duration_s is None):
        raise ValueError(
            f"split_episodes needs exactly one of n_requests and duration_s, got "
            f"n_requests={n_requests!r}, duration_s={duration_s!r}. Fix: pass one of them."
        )
    trace = validate_trace(trace, allow_extra_columns=True)
    arrivals = trace.get_column("arrival_s").to_numpy()
    if n_requests is not None:
        if isinstance(n_requests, bool) or not isinstance(n_requests, int) or n_requests < 1:
            raise ValueError(
                f"n_requests={n_requests!r} is invalid; expected an integer >= 1. "
                "Fix: pass the number of requests per episode."
            )
        bounds = _count_bounds(arrivals, n_requests)
        episodes = []
        for index, (start, stop) in enumerate(bounds):
            offset_s = float(arrivals[start])
            episodes.append(
                Episode(
                    index=index,
                    offset_s=offset_s,
                    is_partial=stop - start < n_requests,
                    trace=_rebase(trace.slice(start, stop - start), offset_s),
                )
            )
        unit = f"{n_requests} requests"
    else:
        assert duration_s is not None  # for mypy; checked above
        _check_positive("duration_s", duration_s, fix="pass the window length in seconds.")
        window = np.floor(arrivals / duration_s).astype(np.int64)
        n_windows = int(window[-1]) + 1
        starts = np.searchsorted(window, np.arange(n_windows), side="left")
        stops = np.searchsorted(window, np.arange(n_windows), side="right")
        empty = [k for k in range(n_windows) if starts[k] == stops[k]]
        if empty:
            shown = empty[:10]
            more = f" and {len(empty) - 10} more" if len(empty) > 10 else ""
            warnings.warn(
                f"split_episodes: skipped {len(empty)} of {n_windows} windows of "
                f"{duration_s} s that hold no request (window indices {shown}{more}).",
                stacklevel=2,
            )
        episodes = []
        for k in range(n_windows):
            if starts[k] == stops[k]:
                continue
            offset_s = k * duration_s
            episodes.append(
                Episode(
                    index=k,
                    offset_s=offset_s,
                    is_partial=k == n_windows - 1,
                    trace=_rebase(trace.slice(int(starts[k]), int(stops[k] - starts[k])), offset_s),
                )
            )
        unit = f"{duration_s} s"
    if drop_partial and episodes and episodes[-1].is_partial:
        last = episodes.pop()
        warnings.warn(
            f"split_episodes: dropped the partial last episode (index {last.index}, "
            f"{last.n_requests} of {trace.height} requests) of a window of {unit}; "
            f"{len(episodes)} episode(s) remain.",
            stacklevel=2,
        )
        if not episodes:
            raise ValueError(
                f"split_episodes: the trace ({trace.height} requests, last arrival "
                f"{float(arrivals[-1])} s) is shorter than one window of {unit}, so "
                "drop_partial=True leaves no episode. Fix: use a smaller window or "
                "drop_partial=False."
            )
    return episodes


def _count_bounds(arrivals: np.ndarray, n_requests: int) -> list[tuple[int, int]]:
    """Row ranges of count windows, extended so tied arrivals stay together."""
    bounds = []
    start = 0
    n_rows = len(arrivals)
    while start < n_rows:
        stop = min(start + n_requests, n_rows)
        if stop < n_rows and arrivals[stop] == arrivals[stop - 1]:
            stop = int(np.searchsorted(arrivals, arrivals[stop - 1], side="right"))
        bounds.append((start, stop))
        start = stop
    return bounds


def _rebase(frame: pl.DataFrame, offset_s: float) -> pl.DataFrame:
    return frame.with_columns(pl.col("arrival_s") - offset_s)


def split_train_test(
    episodes_or_trace: Sequence[Episode] | pl.DataFrame,
    *,
    test_fraction: float = 0.2,
    n_requests: int | None = None,
    duration_s: float | None = None,
    drop_partial: bool = False,
) -> tuple[list[Episode], list[Episode]]:
    """Split episodes by time: the last ones are the test set.

    The test episodes are the ``max(1, round(test_fraction * n))`` latest of the
    ``n`` episodes, so every test request arrives strictly later than every
    training request and evaluation never sees a training window.

    Args:
        episodes_or_trace: episodes from :func:`split_episodes`, or a trace that is
            split here with ``n_requests``/``duration_s``/``drop_partial``.
        test_fraction: share of episodes for testing, in (0, 1).
        n_requests: window size when a trace is given (see :func:`split_episodes`).
        duration_s: window length when a trace is given (see :func:`split_episodes`).
        drop_partial: drop the partial last window when a trace is given.

    Returns:
        ``(train, test)``: lists of episodes, each in time order; both non-empty.

    Raises:
        ValueError: on a ``test_fraction`` outside (0, 1), fewer than two episodes,
            window arguments given together with episodes, or episodes that overlap
            in time.

    Example:
        >>> import polars as pl
        >>> t = pl.DataFrame({"request_id": range(10), "arrival_s": [float(i) for i in range(10)],
        ...                   "prompt_tokens": [5] * 10, "output_tokens": [3] * 10})
        >>> train, test = split_train_test(t, n_requests=2, test_fraction=0.4)
        >>> [e.index for e in train], [e.index for e in test]
        ([0, 1, 2], [3, 4])
    """
    if not (isinstance(test_fraction, int | float) and 0.0 < test_fraction < 1.0):
        raise ValueError(
            f"test_fraction={test_fraction!r} is invalid; expected a number in (0, 1). "
            "Fix: pass e.g. test_fraction=0.2."
        )
    if isinstance(episodes_or_trace, pl.DataFrame | pl.LazyFrame):
        frame = episodes_or_trace
        if isinstance(frame, pl.LazyFrame):
            frame = frame.collect()
        episodes = split_episodes(
            frame, n_requests=n_requests, duration_s=duration_s, drop_partial=drop_partial
        )
    else:
        if n_requests is not None or duration_s is not None or drop_partial:
            raise ValueError(
                "split_train_test: n_requests, duration_s and drop_partial apply only when a "
                "trace is given, but episodes were passed. Fix: drop those arguments or pass "
                "the trace itself."
            )
        episodes = sorted(episodes_or_trace, key=lambda e: e.first_arrival_s)
    n_episodes = len(episodes)
    if n_episodes < 2:
        raise ValueError(
            f"split_train_test needs at least 2 episodes, got {n_episodes}. "
            "Fix: use smaller windows (n_requests or duration_s)."
        )
    n_test = min(max(1, round(test_fraction * n_episodes)), n_episodes - 1)
    train, test = episodes[: n_episodes - n_test], episodes[n_episodes - n_test :]
    for before, after in zip(episodes, episodes[1:], strict=False):
        if not after.first_arrival_s > before.last_arrival_s:
            raise ValueError(
                f"split_train_test: episode {after.index} starts at {after.first_arrival_s} s, "
                f"not after episode {before.index} ends at {before.last_arrival_s} s; "
                "expected episodes that do not overlap in time. Fix: pass the episodes of "
                "one split_episodes call."
            )
    return train, test


def scale_arrival_rate(trace: pl.DataFrame, factor: float) -> pl.DataFrame:
    """Speed up (``factor > 1``) or slow down (``factor < 1``) a trace's arrivals.

    Every arrival time (and so every inter-arrival gap) is divided by ``factor``;
    lengths, ids, order and all other columns are kept.

    Args:
        trace: a canonical trace.
        factor: rate multiplier, finite and > 0.

    Returns:
        The trace with ``arrival_s / factor``.

    Raises:
        ValueError: if ``factor`` is not finite and positive.

    Example:
        >>> import polars as pl
        >>> t = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 3.0],
        ...                   "prompt_tokens": [5, 6], "output_tokens": [1, 2]})
        >>> scale_arrival_rate(t, 2.0)["arrival_s"].to_list()
        [0.0, 1.5]
    """
    _check_positive("factor", factor, fix="pass factor=2.0 to double the arrival rate.")
    trace = validate_trace(trace, allow_extra_columns=True)
    return validate_trace(
        trace.with_columns(pl.col("arrival_s") / float(factor)), allow_extra_columns=True
    )


def renewal_arrivals(
    n_requests: int, *, rate_per_s: float, cv: float = 1.0, rng: np.random.Generator
) -> np.ndarray:
    """Arrival times of a renewal process whose first event is at 0.

    Inter-arrival gaps have mean ``1 / rate_per_s`` and coefficient of variation
    ``cv``: exponential when ``cv == 1`` (a Poisson process), gamma with shape
    ``1 / cv**2`` otherwise (``cv > 1`` is burstier than Poisson), and constant
    when ``cv == 0``. ``n_requests - 1`` gaps are drawn.

    Args:
        n_requests: number of arrivals (>= 1).
        rate_per_s: mean arrival rate, > 0.
        cv: coefficient of variation of the gaps, >= 0.
        rng: the generator to draw from.

    Returns:
        A float64 array of ``n_requests`` non-decreasing arrival times, starting at 0.

    Raises:
        ValueError: on a non-positive rate, a negative CV or ``n_requests < 1``.

    Example:
        >>> renewal_arrivals(3, rate_per_s=2.0, cv=0.0, rng=np.random.default_rng(0)).tolist()
        [0.0, 0.5, 1.0]
    """
    _check_positive("rate_per_s", rate_per_s, fix="pass the mean arrival rate in requests/s.")
    if not (isinstance(cv, int | float) and math.isfinite(cv) and cv >= 0):
        raise ValueError(
            f"cv={cv!r} is invalid; expected a finite number >= 0 (1 = Poisson). "
            "Fix: pass cv=1.0 for Poisson arrivals."
        )
    if isinstance(n_requests, bool) or not isinstance(n_requests, int) or n_requests < 1:
        raise ValueError(f"n_requests={n_requests!r} is invalid; expected an integer >= 1.")
    n_gaps = n_requests - 1
    mean_gap_s = 1.0 / rate_per_s
    if cv == 0:
        gaps = np.full(n_gaps, mean_gap_s)
    elif cv == 1:
        gaps = rng.exponential(mean_gap_s, n_gaps)
    else:
        shape = 1.0 / cv**2
        gaps = rng.gamma(shape, mean_gap_s / shape, n_gaps)
    return np.concatenate([[0.0], np.cumsum(gaps)])


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(
            f"seed={seed!r} is invalid; expected an integer >= 0. Fix: pass e.g. seed=0."
        )
    return seed


def resample_arrivals(
    trace: pl.DataFrame, *, rate_per_s: float, cv: float = 1.0, seed: int
) -> pl.DataFrame:
    """Replace a trace's arrival process, keeping its requests and their order.

    The requests keep their ids, lengths, order and all other columns; their
    arrival times are redrawn from a renewal process (see
    :func:`renewal_arrivals`): Poisson at ``rate_per_s`` when ``cv == 1``, gamma
    gaps with the given CV otherwise. Deterministic for a given seed.

    Args:
        trace: a canonical trace.
        rate_per_s: new mean arrival rate, > 0.
        cv: coefficient of variation of inter-arrival gaps, >= 0.
        seed: seeds ``np.random.default_rng(np.random.SeedSequence(seed))``.

    Returns:
        The trace with new ``arrival_s`` (first request at 0).

    Raises:
        ValueError: on invalid rate, CV or seed.

    Example:
        >>> import polars as pl
        >>> t = pl.DataFrame({"request_id": [7, 8, 9], "arrival_s": [0.0, 0.1, 9.0],
        ...                   "prompt_tokens": [5, 6, 7], "output_tokens": [1, 2, 3]})
        >>> resample_arrivals(t, rate_per_s=4.0, cv=0.0, seed=0)["arrival_s"].to_list()
        [0.0, 0.25, 0.5]
    """
    rng = np.random.default_rng(np.random.SeedSequence(_check_seed(seed)))
    trace = validate_trace(trace, allow_extra_columns=True)
    arrivals = renewal_arrivals(trace.height, rate_per_s=rate_per_s, cv=cv, rng=rng)
    return validate_trace(
        trace.with_columns(pl.Series("arrival_s", arrivals, dtype=pl.Float64)),
        allow_extra_columns=True,
    )


def attach_arrivals(
    lengths_frame: pl.DataFrame,
    *,
    rate_per_s: float,
    cv: float = 1.0,
    seed: int,
    n_requests: int | None = None,
    replace: bool = False,
) -> pl.DataFrame:
    """Pair a length-only table with an arrival process, giving a canonical trace.

    ``lengths_frame`` has ``prompt_tokens`` and ``output_tokens`` (any integer
    dtype), optionally ``request_id`` and other columns, and no ``arrival_s``.

    * ``n_requests=None``: every row is used once, in table order.
    * ``n_requests`` given: that many rows are drawn uniformly at random (without
      replacement, or with it when ``replace=True``), in random order.

    Arrivals come from :func:`renewal_arrivals` (Poisson when ``cv == 1``).
    ``request_id`` is kept when the table has one and no row is used twice;
    otherwise requests are numbered 0, 1, ... in arrival order. All other columns
    are carried along. The generator is split (``SeedSequence.spawn``) into one
    stream for row sampling and one for arrivals, so the arrival times do not
    depend on ``n_requests`` sampling. Deterministic for a given seed.

    Args:
        lengths_frame: the length table.
        rate_per_s: mean arrival rate, > 0.
        cv: coefficient of variation of inter-arrival gaps, >= 0.
        seed: random seed.
        n_requests: number of requests to draw; ``None`` uses every row once.
        replace: draw rows with replacement (allows ``n_requests`` > rows).

    Returns:
        A validated canonical trace.

    Raises:
        ValueError: if the table lacks a length column, already has ``arrival_s``,
            or ``n_requests`` exceeds its rows without ``replace=True``.
        TraceSchemaError: if the lengths are not positive integers.

    Example:
        >>> import polars as pl
        >>> lengths = pl.DataFrame({"prompt_tokens": [100, 20, 300], "output_tokens": [10, 2, 3]})
        >>> t = attach_arrivals(lengths, rate_per_s=10.0, cv=0.0, seed=1)
        >>> t.select("request_id", "arrival_s", "prompt_tokens").rows()
        [(0, 0.0, 100), (1, 0.1, 20), (2, 0.2, 300)]
    """
    missing = [c for c in ("prompt_tokens", "output_tokens") if c not in lengths_frame.columns]
    if missing:
        raise ValueError(
            f"attach_arrivals: the length table lacks column(s) {missing}; expected "
            f"'prompt_tokens' and 'output_tokens', got {lengths_frame.columns}. Fix: rename "
            "the columns, e.g. frame.rename({'num_prefill_tokens': 'prompt_tokens', ...})."
        )
    if "arrival_s" in lengths_frame.columns:
        raise ValueError(
            "attach_arrivals: the table already has 'arrival_s'; expected a length-only "
            "table. Fix: use resample_arrivals(trace, ...) to replace a trace's arrivals, or "
            "drop the column first."
        )
    if lengths_frame.height == 0:
        raise ValueError("attach_arrivals: the length table is empty; expected at least one row.")
    sampling, arrival_seed = np.random.SeedSequence(_check_seed(seed)).spawn(2)
    frame = lengths_frame
    reused = False
    if n_requests is not None:
        if isinstance(n_requests, bool) or not isinstance(n_requests, int) or n_requests < 1:
            raise ValueError(f"n_requests={n_requests!r} is invalid; expected an integer >= 1.")
        if n_requests > frame.height and not replace:
            raise ValueError(
                f"attach_arrivals: n_requests={n_requests} exceeds the table's "
                f"{frame.height} rows. Fix: pass replace=True to draw rows with replacement, "
                f"or n_requests <= {frame.height}."
            )
        rows = np.random.default_rng(sampling).choice(frame.height, n_requests, replace=replace)
        reused = bool(replace and len(np.unique(rows)) < len(rows))
        frame = frame[rows.tolist()]
    arrivals = renewal_arrivals(
        frame.height, rate_per_s=rate_per_s, cv=cv, rng=np.random.default_rng(arrival_seed)
    )
    if "request_id" not in frame.columns or reused:
        frame = frame.drop("request_id", strict=False).with_columns(
            pl.Series("request_id", np.arange(frame.height, dtype=np.uint64))
        )
    frame = frame.with_columns(pl.Series("arrival_s", arrivals, dtype=pl.Float64))
    known = set(TRACE_SCHEMA) | set(OPTIONAL_SCHEMA)
    extra = any(c not in known for c in frame.columns)
    return validate_trace(frame, allow_extra_columns=extra)
