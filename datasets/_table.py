"""Generic CSV / Parquet traces with a column mapping (your own request logs)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import polars as pl

from ._loadutil import (
    ParseSpec,
    PreparedScan,
    check_file,
    finish_trace,
    float_parser,
    int_parser,
    read_header,
    scan_csv_chunked,
)
from ._schema import OPTIONAL_SCHEMA, TRACE_SCHEMA, TraceSchemaError

__all__ = ["TIME_UNITS", "prepare_table", "scan_table"]

TimeUnit = Literal["s", "ms", "us", "ns", "datetime"]

#: Seconds per unit of a numeric time column.
TIME_UNITS: dict[str, float] = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}
_CANONICAL = [*TRACE_SCHEMA, *OPTIONAL_SCHEMA]
_REQUIRED = ["arrival_s", "prompt_tokens", "output_tokens"]


def _string_parser(raw: pl.Expr, strict: bool) -> pl.Expr:
    return raw


def _datetime_parser(fmt: str | None) -> ParseSpec:
    def parse(raw: pl.Expr, strict: bool) -> pl.Expr:
        parsed = raw.str.strip_chars().str.to_datetime(fmt, time_unit="ns", strict=strict)
        return parsed

    return ParseSpec("", parse, f"a datetime{f' in format {fmt!r}' if fmt else ''}")


def _seconds(expr: pl.Expr, dtype: pl.DataType, time_unit: str, rebase: bool) -> pl.Expr:
    """Seconds from a parsed time column: datetimes, durations (any unit) or numbers."""
    if isinstance(dtype, pl.Date):
        expr, dtype = expr.cast(pl.Datetime("ms")), pl.Datetime("ms")
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone is not None:
            expr = expr.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        nanos = (expr - expr.min()).dt.total_nanoseconds() if rebase else expr.dt.epoch("ns")
        return nanos.cast(pl.Float64) / 1e9
    if isinstance(dtype, pl.Duration):
        seconds = expr.dt.total_nanoseconds().cast(pl.Float64) / 1e9
        return seconds - seconds.min() if rebase else seconds
    seconds = expr.cast(pl.Float64) * TIME_UNITS[time_unit]
    return seconds - seconds.min() if rebase else seconds


def _arrival_kind(
    file: Path, column: str, dtype: pl.DataType, time_unit: str | None
) -> tuple[str, pl.DataType]:
    """Check a Parquet arrival column's dtype against ``time_unit``; return (unit, dtype).

    Datetimes (any unit, any zone) and dates are timestamps; durations carry their own
    unit; numbers take ``time_unit`` (default seconds). A ``time_unit`` that contradicts
    the column's type is refused rather than guessed.
    """
    mapped = "" if column == "arrival_s" else " (mapped to arrival_s)"
    where = f"{file}: column {column!r}{mapped}"
    if isinstance(dtype, (pl.Datetime, pl.Date)):
        if time_unit not in (None, "datetime"):
            raise TraceSchemaError(
                f"{where} holds timestamps ({dtype}), but time_unit={time_unit!r} was given, "
                "which is the unit of numeric times; expected time_unit=None or 'datetime' "
                "for timestamps. Fix: omit time_unit (timestamps become seconds from the "
                "first arrival).",
                column=column,
            )
        return "datetime", dtype
    if isinstance(dtype, pl.Duration):
        if time_unit is not None:
            raise TraceSchemaError(
                f"{where} holds durations ({dtype}), which carry their own unit, but "
                f"time_unit={time_unit!r} was given; expected no time_unit for durations. "
                "Fix: omit time_unit (durations become seconds).",
                column=column,
            )
        return "duration", dtype
    if dtype.is_numeric():
        if time_unit == "datetime":
            raise TraceSchemaError(
                f"{where} holds numbers ({dtype}), but time_unit='datetime' was given; "
                f"expected the numbers' unit. Fix: pass time_unit= one of {list(TIME_UNITS)}.",
                column=column,
            )
        return time_unit or "s", dtype
    if dtype == pl.String:
        return time_unit or "s", dtype
    raise TraceSchemaError(
        f"{where} has dtype {dtype}; expected numbers with a time_unit, timestamps "
        "(Datetime) or durations (Duration). Fix: convert the column before loading.",
        column=column,
    )


def _resolve_mapping(
    file: Path, present: list[str], columns: Mapping[str, str] | None
) -> dict[str, str]:
    if columns is None:
        mapping = {c: c for c in _CANONICAL if c in present}
    else:
        unknown = [k for k in columns if k not in _CANONICAL]
        if unknown:
            raise ValueError(
                f"columns= maps unknown canonical name(s) {unknown}; valid keys are "
                f"{_CANONICAL}. Fix: use canonical names as keys and the file's column names "
                "as values, e.g. columns={'arrival_s': 'ts', 'prompt_tokens': 'in'}."
            )
        mapping = dict(columns)
    missing_keys = [k for k in _REQUIRED if k not in mapping]
    if missing_keys:
        raise TraceSchemaError(
            f"{file}: no column given for {missing_keys} (file columns {present}). Fix: pass "
            "columns={canonical name: file column, ...} covering "
            f"{_REQUIRED} (request_id optional).",
            column=missing_keys[0],
        )
    absent = [v for v in mapping.values() if v not in present]
    if absent:
        close = difflib.get_close_matches(absent[0], present, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise TraceSchemaError(
            f"{file}: column {absent[0]!r}{hint} named in columns= is not in the file; "
            f"file columns are {present}. Fix: correct the mapping.",
            column=absent[0],
        )
    return mapping


def _column_spec(
    name: str, col: str, time_unit: str, datetime_format: str | None
) -> tuple[ParseSpec, pl.DataType]:
    """How a text column (CSV, or a Parquet string column) is parsed, and its parsed dtype."""
    if name == "arrival_s":
        if time_unit == "datetime":
            spec = _datetime_parser(datetime_format)
            return ParseSpec(col, spec.parse, spec.expected), pl.Datetime("ns")
        unit = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
        return ParseSpec(col, float_parser, f"a number of {unit[time_unit]}"), pl.Float64()
    if name in ("request_id", "prompt_tokens", "output_tokens", "num_images"):
        return ParseSpec(col, int_parser, "an integer"), pl.Int64()
    return ParseSpec(col, _string_parser, "text"), pl.String()


def prepare_table(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    time_unit: TimeUnit | None = None,
    datetime_format: str | None = None,
    rebase_time: bool | None = None,
    file_format: Literal["csv", "parquet"] | None = None,
    source: str | None = None,
    drop_zero_tokens: bool = False,
) -> PreparedScan:
    """Build the lazy pieces of :func:`scan_table`."""
    if time_unit is not None and time_unit not in (*TIME_UNITS, "datetime"):
        raise ValueError(
            f"time_unit must be one of {[*TIME_UNITS, 'datetime']}, got {time_unit!r}."
        )
    file = check_file(path)
    kind = file_format or ("parquet" if file.suffix.lower() in (".parquet", ".pq") else "csv")
    if kind not in ("csv", "parquet"):
        raise ValueError(f"file_format must be 'csv' or 'parquet', got {kind!r}.")
    specs: list[ParseSpec] = []
    exprs: dict[str, pl.Expr] = {}
    unit: str = time_unit or "s"
    if kind == "parquet":
        raw = pl.scan_parquet(file)
        try:
            schema = raw.collect_schema()
        except (pl.exceptions.PolarsError, OSError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TraceSchemaError(
                f"{file}: cannot read the file as Parquet ({detail}); expected a complete "
                "Parquet file. Fix: write the file again, or pass file_format='csv' if it "
                "is a CSV file."
            ) from None
        mapping = _resolve_mapping(file, list(schema.names()), columns)
        for name, col in mapping.items():
            dtype = schema[col]
            if name == "arrival_s":
                unit, dtype = _arrival_kind(file, col, dtype, time_unit)
            if dtype == pl.String and name != "session_id" and name != "task":
                spec, dtype = _column_spec(name, col, unit, datetime_format)
                specs.append(spec)
                expr = spec.parse(pl.col(col), True)
            else:
                expr = pl.col(col)
            if name == "arrival_s":
                rebase = unit in ("datetime",) if rebase_time is None else rebase_time
                expr = _seconds(expr, dtype, unit, rebase)
            exprs[name] = expr
        parsed = raw.select(**exprs)
    else:
        present = read_header(file)
        mapping = _resolve_mapping(file, present, columns)
        if "prefix_blocks" in mapping:
            raise ValueError(
                f"{file}: prefix_blocks cannot be read from CSV (it is a list column). "
                "Fix: store the trace as Parquet, or drop prefix_blocks from columns=."
            )
        raw = scan_csv_chunked(file, list(dict.fromkeys(mapping.values())))
        rebase = (unit == "datetime") if rebase_time is None else rebase_time
        for name, col in mapping.items():
            spec, dtype = _column_spec(name, col, unit, datetime_format)
            expr = spec.parse(pl.col(col), True)
            if name == "arrival_s":
                expr = _seconds(expr, dtype, unit, rebase)
            specs.append(spec)
            exprs[name] = expr
        parsed = raw.select(**exprs)
    if "task" in mapping:
        parsed = parsed.with_columns(pl.col("task").cast(pl.String).cast(pl.Categorical))
    src = None if "source" in mapping else source
    trace = finish_trace(
        parsed,
        source=src,
        drop_zero_tokens=drop_zero_tokens,
        has_request_id="request_id" in mapping,
    )
    return PreparedScan(path=file, raw=raw, specs=specs, trace=trace)


def scan_table(
    path: str | Path,
    *,
    columns: Mapping[str, str] | None = None,
    time_unit: TimeUnit | None = None,
    datetime_format: str | None = None,
    rebase_time: bool | None = None,
    file_format: Literal["csv", "parquet"] | None = None,
    source: str | None = None,
    drop_zero_tokens: bool = False,
) -> pl.LazyFrame:
    r"""Lazily read a CSV or Parquet trace whose columns are mapped to the canonical schema.

    Args:
        path: the file (``.parquet``/``.pq`` is read as Parquet, anything else as CSV).
        columns: ``{canonical name: file column}``; needs ``arrival_s``, ``prompt_tokens``
            and ``output_tokens``, may add ``request_id`` (else rows are numbered in
            arrival order) and optional columns (``task``, ``session_id``, ...).
            ``None``: the file already uses canonical names.
        time_unit: unit of a numeric or text arrival column: ``"s"`` (the default),
            ``"ms"``, ``"us"``, ``"ns"``, or ``"datetime"`` (timestamps; strings are parsed
            with ``datetime_format``). Parquet columns that carry their type need none:
            ``Datetime`` (any unit, with or without a time zone) and ``Date`` columns are
            timestamps, ``Duration`` columns (any unit) are converted to seconds. A
            ``time_unit`` that contradicts the column's type is refused.
        datetime_format: strftime format of string timestamps (``None``: inferred).
        rebase_time: subtract the first arrival. ``None``: only for timestamps
            (numbers and durations are taken as times from the trace start, as given).
        file_format: force ``"csv"`` or ``"parquet"``.
        source: value of a constant ``source`` column (unless ``source`` is mapped).
        drop_zero_tokens: drop rows with 0 prompt or output tokens, warning with counts.

    Returns:
        A LazyFrame sorted by ``(arrival_s, request_id)``.

    Raises:
        ValueError: unknown canonical names, unknown ``time_unit``.
        TraceSchemaError: a mapped column is missing from the file; the arrival column's
            type contradicts ``time_unit``; an unreadable Parquet file.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
        >>> _ = path.write_text("t_ms,in,out\n1500,30,4\n500,10,2\n")
        >>> scan_table(path, columns={"arrival_s": "t_ms", "prompt_tokens": "in",
        ...            "output_tokens": "out"}, time_unit="ms").collect().rows()
        [(0, 0.5, 10, 2), (1, 1.5, 30, 4)]
        >>> import datetime as dt
        >>> pq = path.with_suffix(".parquet")
        >>> start = dt.datetime(2024, 5, 1, 12, tzinfo=dt.timezone.utc)
        >>> pl.DataFrame({"arrival_s": [start, start + dt.timedelta(seconds=1.5)],
        ...     "prompt_tokens": [5, 6], "output_tokens": [1, 2]}).write_parquet(pq)
        >>> scan_table(pq).collect()["arrival_s"].to_list()
        [0.0, 1.5]
    """
    return prepare_table(
        path,
        columns=columns,
        time_unit=time_unit,
        datetime_format=datetime_format,
        rebase_time=rebase_time,
        file_format=file_format,
        source=source,
        drop_zero_tokens=drop_zero_tokens,
    ).trace
