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


def _check_columns(frame: pl.DataFrame, allow_extra_columns: bool) -> None:
    present = list(frame.columns)
    missing = [c for c in TRACE_SCHEMA if c not in present]
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


def _check_nulls(frame: pl.DataFrame, column: str) -> None:
    series = frame.get_column(column)
    if series.null_count():
        row = _first_row(series.is_null())
        raise TraceSchemaError(
            f"column {column!r}: row {row} is null; expected no missing values. "
            "Fix: drop or fill the incomplete rows before validating.",
            column=column,
            row=row,
            value=None,
        )


def _check_integer_column(frame: pl.DataFrame, column: str, *, minimum: int) -> pl.Series:
    series = frame.get_column(column)
    dtype = series.dtype
    if dtype.is_float():
        bad = ~series.is_finite() | (series != series.floor())
        if bad.any():
            row = _first_row(bad)
            value = series[row]
            raise TraceSchemaError(
                f"column {column!r}: row {row} has non-integer value {value!r}; expected "
                f"whole numbers >= {minimum}. Fix: round or drop such rows explicitly before "
                "validating.",
                column=column,
                row=row,
                value=value,
            )
    elif not dtype.is_integer():
        raise TraceSchemaError(
            f"column {column!r} has dtype {dtype}; expected an integer type. "
            f"Fix: cast it, e.g. frame.with_columns(pl.col({column!r}).cast(pl.Int64)).",
            column=column,
        )
    too_small = series < minimum
    if too_small.any():
        row = _first_row(too_small)
        value = series[row]
        fix = (
            "Fix: remove such rows explicitly (the loaders' drop_zero_tokens=True does this "
            "and warns with counts)."
            if column in _TOKEN_COLUMNS
            else "Fix: renumber the ids."
        )
        raise TraceSchemaError(
            f"column {column!r}: row {row} has value {value!r}; expected an integer "
            f">= {minimum}. {fix}",
            column=column,
            row=row,
            value=value,
        )
    if column in _TOKEN_COLUMNS:
        too_big = series > _UINT32_MAX
        if too_big.any():
            row = _first_row(too_big)
            raise TraceSchemaError(
                f"column {column!r}: row {row} has value {series[row]!r}; expected at most "
                f"{_UINT32_MAX} tokens. Fix: check the column mapping.",
                column=column,
                row=row,
                value=series[row],
            )
    return series


def _check_arrivals(frame: pl.DataFrame) -> None:
    series = frame.get_column("arrival_s")
    if not series.dtype.is_numeric():
        raise TraceSchemaError(
            f"column 'arrival_s' has dtype {series.dtype}; expected float seconds from the "
            "trace start. Fix: convert timestamps with the matching loader "
            "(e.g. scan_azure) or cast to Float64.",
            column="arrival_s",
        )
    values = series.cast(pl.Float64)
    bad = ~values.is_finite() | (values < 0)
    if bad.any():
        row = _first_row(bad)
        raise TraceSchemaError(
            f"column 'arrival_s': row {row} has value {values[row]!r}; expected finite "
            "seconds >= 0 from the trace start. Fix: subtract the first timestamp.",
            column="arrival_s",
            row=row,
            value=values[row],
        )
    if len(values) > 1:
        decreasing = values.diff().fill_null(0.0) < 0
        if decreasing.any():
            row = _first_row(decreasing)
            raise TraceSchemaError(
                f"column 'arrival_s': row {row} arrives at {values[row]!r} s, before row "
                f"{row - 1} at {values[row - 1]!r} s; expected arrivals sorted ascending. "
                "Fix: frame.sort(['arrival_s', 'request_id']).",
                column="arrival_s",
                row=row,
                value=values[row],
            )


def _check_unique_ids(frame: pl.DataFrame) -> None:
    ids = frame.get_column("request_id")
    duplicated = ids.is_duplicated()
    if duplicated.any():
        first = _first_row(duplicated)
        value = ids[first]
        rows = duplicated.arg_true()
        second = int(rows.filter(ids.gather(rows) == value)[1])
        raise TraceSchemaError(
            f"column 'request_id': row {second} repeats id {value!r} first seen at row "
            f"{first}; expected unique ids. Fix: renumber, e.g. "
            "frame.with_row_index('request_id').",
            column="request_id",
            row=second,
            value=value,
        )


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
    _check_columns(frame, allow_extra_columns)
    if frame.height == 0:
        raise TraceSchemaError(
            "trace is empty (0 rows); expected at least one request. Fix: check the file "
            "path and any filters applied before validation."
        )
    for column in TRACE_SCHEMA:
        _check_nulls(frame, column)
    _check_integer_column(frame, "request_id", minimum=0)
    for column in _TOKEN_COLUMNS:
        _check_integer_column(frame, column, minimum=1)
    _check_arrivals(frame)
    _check_unique_ids(frame)
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
