"""The canonical trace schema and its validator.

Every loader turns its format into one Polars frame with these columns, and
:func:`validate_trace` is the single gate every trace passes before replay.
"""

from __future__ import annotations

import difflib
from typing import Any

import polars as pl

__all__ = [
    "OPTIONAL_SCHEMA",
    "TRACE_SCHEMA",
    "TraceChecker",
    "TraceSchemaError",
    "canonical_columns",
    "validate_trace",
]

#: Required columns and their canonical dtypes.
TRACE_SCHEMA = pl.Schema(
    {
        "request_id": pl.UInt64(),
        "arrival_s": pl.Float64(),
        "prompt_tokens": pl.UInt32(),
        "output_tokens": pl.UInt32(),
    }
)

#: Optional columns a trace may carry, with their canonical dtypes.
OPTIONAL_SCHEMA = pl.Schema(
    {
        "task": pl.Categorical(),
        "session_id": pl.String(),
        "prefix_blocks": pl.List(pl.UInt64()),
        "source": pl.String(),
        "num_images": pl.UInt32(),
    }
)

_TOKEN_COLUMNS = ("prompt_tokens", "output_tokens")
_UINT32_MAX = 2**32 - 1


class TraceSchemaError(ValueError):
    """A trace does not follow the canonical schema.

    Attributes:
        column: the offending column (``None`` for whole-frame problems).
        row: the first offending row (0-based), or ``None``.
        value: the offending value, or ``None``.
    """

    def __init__(
        self,
        message: str,
        *,
        column: str | None = None,
        row: int | None = None,
        value: Any = None,
    ) -> None:
        super().__init__(message)
        self.column = column
        self.row = row
        self.value = value


def canonical_columns(columns: list[str] | tuple[str, ...]) -> list[str]:
    """Order ``columns`` as the canonical schema does: required, optional, then extras.

    Example:
        >>> canonical_columns(["task", "output_tokens", "request_id", "arrival_s", "prompt_tokens"])
        ['request_id', 'arrival_s', 'prompt_tokens', 'output_tokens', 'task']
    """
    known = [c for c in (*TRACE_SCHEMA, *OPTIONAL_SCHEMA) if c in columns]
    return known + [c for c in columns if c not in known]


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (found {close[0]!r}: rename it to {name!r})" if close else ""


def _first_row(mask: pl.Series) -> int:
    return int(mask.arg_true()[0])


def _check_columns(
    present: list[str], allow_extra_columns: bool, *, required: tuple[str, ...] | None = None
) -> None:
    needed = list(TRACE_SCHEMA) if required is None else list(required)
    missing = [c for c in needed if c not in present]
    known = set(TRACE_SCHEMA) | set(OPTIONAL_SCHEMA)
    extra = [c for c in present if c not in known]
    if missing:
        hints = "".join(_suggest(c, extra) for c in missing)
        raise TraceSchemaError(
            f"trace is missing required column(s) {missing}{hints}; "
            f"expected columns {list(TRACE_SCHEMA)} (optional: {list(OPTIONAL_SCHEMA)}), "
            f"got {present}. Fix: rename the columns or load the file with "
            "routeplay.datasets.load_table(path, columns={...}).",
            column=missing[0],
        )
    if extra and not allow_extra_columns:
        hints = "".join(_suggest(c, list(OPTIONAL_SCHEMA)) for c in extra)
        raise TraceSchemaError(
            f"trace has unknown column(s) {extra}{hints}; expected only {list(TRACE_SCHEMA)} "
            f"and optional {list(OPTIONAL_SCHEMA)}. Fix: drop or rename them, or pass "
            "allow_extra_columns=True to keep them.",
            column=extra[0],
        )


def _null_error(column: str, row: int) -> TraceSchemaError:
    return TraceSchemaError(
        f"column {column!r}: row {row} is null; expected no missing values. "
        "Fix: drop or fill the incomplete rows before validating.",
        column=column,
        row=row,
        value=None,
    )


def _dtype_error(column: str, dtype: pl.DataType) -> TraceSchemaError:
    return TraceSchemaError(
        f"column {column!r} has dtype {dtype}; expected an integer type. "
        f"Fix: cast it, e.g. frame.with_columns(pl.col({column!r}).cast(pl.Int64)).",
        column=column,
    )


def _non_integer_error(column: str, row: int, value: Any, minimum: int) -> TraceSchemaError:
    return TraceSchemaError(
        f"column {column!r}: row {row} has non-integer value {value!r}; expected "
        f"whole numbers >= {minimum}. Fix: round or drop such rows explicitly before "
        "validating.",
        column=column,
        row=row,
        value=value,
    )


def _too_small_error(column: str, row: int, value: Any, minimum: int) -> TraceSchemaError:
    fix = (
        "Fix: remove such rows explicitly (the loaders' drop_zero_tokens=True does this "
        "and warns with counts)."
        if column in _TOKEN_COLUMNS
        else "Fix: renumber the ids."
    )
    return TraceSchemaError(
        f"column {column!r}: row {row} has value {value!r}; expected an integer "
        f">= {minimum}. {fix}",
        column=column,
        row=row,
        value=value,
    )


def _too_big_error(column: str, row: int, value: Any) -> TraceSchemaError:
    return TraceSchemaError(
        f"column {column!r}: row {row} has value {value!r}; expected at most "
        f"{_UINT32_MAX} tokens. Fix: check the column mapping.",
        column=column,
        row=row,
        value=value,
    )


def _arrival_dtype_error(dtype: pl.DataType) -> TraceSchemaError:
    return TraceSchemaError(
        f"column 'arrival_s' has dtype {dtype}; expected float seconds from the "
        "trace start. Fix: convert timestamps with the matching loader "
        "(e.g. scan_azure) or cast to Float64.",
        column="arrival_s",
    )


def _arrival_error(row: int, value: float) -> TraceSchemaError:
    return TraceSchemaError(
        f"column 'arrival_s': row {row} has value {value!r}; expected finite "
        "seconds >= 0 from the trace start. Fix: subtract the first timestamp.",
        column="arrival_s",
        row=row,
        value=value,
    )


def _unsorted_error(row: int, value: float, previous: float) -> TraceSchemaError:
    return TraceSchemaError(
        f"column 'arrival_s': row {row} arrives at {value!r} s, before row "
        f"{row - 1} at {previous!r} s; expected arrivals sorted ascending. "
        "Fix: frame.sort(['arrival_s', 'request_id']).",
        column="arrival_s",
        row=row,
        value=value,
    )


def _duplicate_error(ids: pl.Series) -> TraceSchemaError | None:
    duplicated = ids.is_duplicated()
    if not duplicated.any():
        return None
    first = _first_row(duplicated)
    value = ids[first]
    rows = duplicated.arg_true()
    second = int(rows.filter(ids.gather(rows) == value)[1])
    return TraceSchemaError(
        f"column 'request_id': row {second} repeats id {value!r} first seen at row "
        f"{first}; expected unique ids. Fix: renumber, e.g. "
        "frame.with_row_index('request_id').",
        column="request_id",
        row=second,
        value=value,
    )


class TraceChecker:
    """Validate a trace batch by batch, with the messages of :func:`validate_trace`.

    Feed the batches in row order with :meth:`feed`, then call :meth:`finish`: it raises
    the error :func:`validate_trace` would raise on the concatenated batches (the same
    checks in the same order, the same first offending row), so a trace of any size can
    be checked in one streaming pass. Only the canonical columns present in the schema
    are checked (``required`` names those that must be present).

    Args:
        schema: the schema of the batches.
        allow_extra_columns: accept columns outside the canonical schema.
        required: the columns that must be present (default: every required column).

    Example:
        >>> import polars as pl
        >>> frame = pl.DataFrame({"arrival_s": [0.0, 2.0, 1.0], "prompt_tokens": [1, 2, 3],
        ...                       "output_tokens": [1, 1, 1]})
        >>> checker = TraceChecker(frame.schema, required=("arrival_s",))
        >>> for batch in frame.iter_slices(2):
        ...     checker.feed(batch)
        >>> checker.finish()
        Traceback (most recent call last):
        ...
        routeplay.datasets._schema.TraceSchemaError: column 'arrival_s': row 2 arrives at 1.0 s, before row 1 at 2.0 s; expected arrivals sorted ascending. Fix: frame.sort(['arrival_s', 'request_id']).
    """

    def __init__(
        self,
        schema: pl.Schema | dict[str, pl.DataType],
        *,
        allow_extra_columns: bool = True,
        required: tuple[str, ...] | None = None,
    ) -> None:
        self.schema = pl.Schema(schema)
        _check_columns(list(self.schema.names()), allow_extra_columns, required=required)
        self.columns = [c for c in TRACE_SCHEMA if c in self.schema]
        self.n_rows = 0
        self._errors: dict[tuple[str, str], TraceSchemaError] = {}
        self._last_arrival: float | None = None
        self._last_id: Any = None
        self._ids_increasing = True
        for column in ("request_id", *_TOKEN_COLUMNS):
            dtype = self.schema.get(column)
            if dtype is not None and not (dtype.is_integer() or dtype.is_float()):
                self._errors[("dtype", column)] = _dtype_error(column, dtype)
        arrival = self.schema.get("arrival_s")
        if arrival is not None and not arrival.is_numeric():
            self._errors[("dtype", "arrival_s")] = _arrival_dtype_error(arrival)

    def _note(self, key: tuple[str, str], make: Any) -> None:
        if key not in self._errors:
            self._errors[key] = make()

    def feed(self, batch: pl.DataFrame) -> None:
        """Check the next rows (in order); errors are kept until :meth:`finish`."""
        offset = self.n_rows
        self.n_rows += batch.height
        if batch.height == 0:
            return
        for column in self.columns:
            series = batch.get_column(column)
            if series.null_count():
                row = offset + _first_row(series.is_null())
                self._note(("null", column), lambda c=column, r=row: _null_error(c, r))
        for column, minimum in (("request_id", 0), ("prompt_tokens", 1), ("output_tokens", 1)):
            if column in self.columns and ("dtype", column) not in self._errors:
                self._feed_integers(batch.get_column(column), column, minimum, offset)
        if "arrival_s" in self.columns and ("dtype", "arrival_s") not in self._errors:
            self._feed_arrivals(batch.get_column("arrival_s").cast(pl.Float64), offset)
        if "request_id" in self.columns and self._ids_increasing:
            ids = batch.get_column("request_id")
            if ids.null_count() or ids.dtype.is_float() and not ids.is_finite().all():
                self._ids_increasing = False
            else:
                increasing = bool((ids.slice(1) > ids.slice(0, ids.len() - 1)).all())
                first = ids[0]
                if not increasing or (self._last_id is not None and not first > self._last_id):
                    self._ids_increasing = False
                self._last_id = ids[-1]

    def _feed_integers(self, series: pl.Series, column: str, minimum: int, offset: int) -> None:
        if series.dtype.is_float():
            bad = ~series.is_finite() | (series != series.floor())
            if bad.any():
                row = _first_row(bad)
                self._note(
                    ("non-integer", column),
                    lambda: _non_integer_error(column, offset + row, series[row], minimum),
                )
        too_small = series < minimum
        if too_small.any():
            row = _first_row(too_small)
            self._note(
                ("too-small", column),
                lambda: _too_small_error(column, offset + row, series[row], minimum),
            )
        if column in _TOKEN_COLUMNS:
            too_big = series > _UINT32_MAX
            if too_big.any():
                row = _first_row(too_big)
                self._note(
                    ("too-big", column), lambda: _too_big_error(column, offset + row, series[row])
                )

    def _feed_arrivals(self, values: pl.Series, offset: int) -> None:
        bad = ~values.is_finite() | (values < 0)
        if bad.any():
            row = _first_row(bad)
            self._note(("bad", "arrival_s"), lambda: _arrival_error(offset + row, values[row]))
        if self._last_arrival is not None:
            values = pl.concat([pl.Series([self._last_arrival]), values])
            offset -= 1
        if values.len() > 1:
            decreasing = values.slice(1) < values.slice(0, values.len() - 1)
            if decreasing.any():
                k = _first_row(decreasing) + 1
                self._note(
                    ("unsorted", "arrival_s"),
                    lambda: _unsorted_error(offset + k, values[k], values[k - 1]),
                )
        last = values[-1]
        self._last_arrival = None if last is None else float(last)

    @property
    def needs_id_pass(self) -> bool:
        """Whether :meth:`finish` needs the whole ``request_id`` column (ids not increasing)."""
        return "request_id" in self.columns and not self._ids_increasing

    def finish(self, ids: pl.Series | None = None) -> None:
        """Raise the first problem found, in :func:`validate_trace`'s order.

        Args:
            ids: the whole ``request_id`` column, needed (for the duplicate check) only
                when :attr:`needs_id_pass` is true; ``None`` skips that check.

        Raises:
            TraceSchemaError: an empty trace or the first offending row.
        """
        if self.n_rows == 0:
            raise TraceSchemaError(
                "trace is empty (0 rows); expected at least one request. Fix: check the file "
                "path and any filters applied before validation."
            )
        order = [("null", c) for c in TRACE_SCHEMA]
        for column in ("request_id", *_TOKEN_COLUMNS):
            order += [(k, column) for k in ("dtype", "non-integer", "too-small", "too-big")]
        order += [("dtype", "arrival_s"), ("bad", "arrival_s"), ("unsorted", "arrival_s")]
        for key in order:
            if key in self._errors:
                raise self._errors[key]
        if self.needs_id_pass and ids is not None:
            error = _duplicate_error(ids)
            if error is not None:
                raise error


def validate_trace(
    frame: pl.DataFrame | pl.LazyFrame, *, allow_extra_columns: bool = False
) -> pl.DataFrame:
    """Check a trace against the canonical schema and return it in canonical dtypes.

    Nothing is dropped, clipped or reordered: any problem raises
    :class:`TraceSchemaError` naming the column, the first offending row and its
    value. Integer columns of any width are cast to the canonical dtypes; float
    token columns are accepted only when every value is a whole number.

    Args:
        frame: the trace (a LazyFrame is collected).
        allow_extra_columns: keep columns outside the schema instead of rejecting them.

    Returns:
        The trace with canonical dtypes and column order (required, optional, extras).

    Raises:
        TraceSchemaError: on an empty trace, missing/misnamed columns, nulls,
            non-integer, zero or negative token counts, unsorted arrivals or duplicate ids.

    Example:
        >>> import polars as pl
        >>> t = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.5],
        ...                   "prompt_tokens": [10, 20], "output_tokens": [5, 7]})
        >>> validate_trace(t).schema["prompt_tokens"]
        UInt32
        >>> validate_trace(t.with_columns(output_tokens=pl.Series([5, 0])))
        Traceback (most recent call last):
        ...
        routeplay.datasets._schema.TraceSchemaError: column 'output_tokens': row 1 has value 0; expected an integer >= 1. Fix: remove such rows explicitly (the loaders' drop_zero_tokens=True does this and warns with counts).
    """
    if isinstance(frame, pl.LazyFrame):
        frame = frame.collect()
    if not isinstance(frame, pl.DataFrame):
        raise TypeError(
            f"validate_trace expects a polars DataFrame or LazyFrame, got {type(frame).__name__}"
        )
    checker = TraceChecker(frame.schema, allow_extra_columns=allow_extra_columns)
    checker.feed(frame)
    checker.finish(frame.get_column("request_id"))
    casts = [pl.col(c).cast(dtype) for c, dtype in TRACE_SCHEMA.items()]
    for column, dtype in OPTIONAL_SCHEMA.items():
        if column in frame.columns and frame.schema[column] != dtype:
            try:
                frame.get_column(column).cast(dtype, strict=True)
            except Exception as exc:  # polars raises several error types here
                raise TraceSchemaError(
                    f"column {column!r} has dtype {frame.schema[column]} which cannot be cast "
                    f"to {dtype}: {exc}. Fix: convert the column before validating.",
                    column=column,
                ) from exc
            casts.append(pl.col(column).cast(dtype))
    out = frame.with_columns(casts)
    return out.select(canonical_columns(out.columns))
