"""Vidur's processed traces: ``arrived_at`` traces and length-only tables.

``splitwise_{code,conv}.csv`` carry ``arrived_at,num_prefill_tokens,num_decode_tokens``
(seconds from the first request); ``arxiv_summarization_*.csv`` carries lengths only
(``num_prefill_tokens,num_decode_tokens,...``) and needs an arrival process: read it
with :func:`scan_lengths` / :func:`load_lengths` and pair it with
``routeplay.datasets.attach_arrivals``.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from ._loadutil import (
    ParseSpec,
    PreparedScan,
    check_file,
    diagnose_parse_error,
    finish_trace,
    float_parser,
    int_parser,
    read_header,
    require_columns,
    scan_csv_chunked,
)
from ._schema import validate_trace

__all__ = ["load_lengths", "prepare_lengths", "prepare_vidur", "scan_lengths", "scan_vidur"]

_TOKEN_SPECS = [
    ParseSpec("num_prefill_tokens", int_parser, "an integer token count"),
    ParseSpec("num_decode_tokens", int_parser, "an integer token count"),
]
_RENAMES = {"num_prefill_tokens": "prompt_tokens", "num_decode_tokens": "output_tokens"}


def prepare_vidur(
    path: str | Path, *, source: str | None = None, drop_zero_tokens: bool = False
) -> PreparedScan:
    """Build the lazy pieces of :func:`scan_vidur`."""
    file = check_file(path)
    header = read_header(file)
    if "arrived_at" not in header and all(c in header for c in _RENAMES):
        raise ValueError(
            f"{file} has token lengths but no 'arrived_at' column (columns {header}), so it "
            "has no arrival times. Fix: read it with routeplay.datasets.load_lengths(path) "
            "and pair it with an arrival process: routeplay.datasets.attach_arrivals("
            "lengths, rate_per_s=..., cv=..., seed=...)."
        )
    require_columns(file, header, ["arrived_at", *_RENAMES], "vidur")
    specs = [ParseSpec("arrived_at", float_parser, "seconds as a number"), *_TOKEN_SPECS]
    raw = scan_csv_chunked(file, [s.column for s in specs])
    parsed = raw.select([s.parse(pl.col(s.column), True).alias(s.column) for s in specs]).select(
        arrival_s=pl.col("arrived_at") - pl.col("arrived_at").min(),
        prompt_tokens=pl.col("num_prefill_tokens"),
        output_tokens=pl.col("num_decode_tokens"),
    )
    trace = finish_trace(parsed, source=source, drop_zero_tokens=drop_zero_tokens)
    return PreparedScan(path=file, raw=raw, specs=specs, trace=trace)


def scan_vidur(
    path: str | Path, *, source: str | None = None, drop_zero_tokens: bool = False
) -> pl.LazyFrame:
    r"""Lazily read a Vidur trace (``arrived_at,num_prefill_tokens,num_decode_tokens``).

    ``arrival_s`` = ``arrived_at`` minus its minimum; ``request_id`` numbers rows in
    arrival order. Vidur clips prompts so that prompt + output <= 4096 when it replays a
    trace; this loader does not.

    Args:
        path: the CSV file.
        source: value of a constant ``source`` column (``None``: no such column).
        drop_zero_tokens: drop rows with 0 prompt or output tokens, warning with counts.

    Returns:
        A LazyFrame sorted by ``(arrival_s, request_id)``.

    Raises:
        ValueError: the file has lengths but no ``arrived_at`` (use :func:`load_lengths`).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n"
        ...                     "0.0,4808,10\n0.052,3180,8\n")
        >>> scan_vidur(path).collect().row(1)
        (1, 0.052, 3180, 8)
    """
    return prepare_vidur(path, source=source, drop_zero_tokens=drop_zero_tokens).trace


def prepare_lengths(path: str | Path, *, drop_zero_tokens: bool = False) -> PreparedScan:
    """Build the lazy pieces of :func:`scan_lengths`."""
    file = check_file(path)
    header = read_header(file)
    require_columns(file, header, list(_RENAMES), "lengths")
    raw = scan_csv_chunked(file, list(_RENAMES))
    parsed = raw.select(
        [s.parse(pl.col(s.column), True).alias(_RENAMES[s.column]) for s in _TOKEN_SPECS]
    ).with_row_index("request_id")
    parsed = parsed.with_columns(pl.col("request_id").cast(pl.UInt64))
    if drop_zero_tokens:
        # Reuse the trace finisher's counting and warning; a constant arrival keeps order.
        parsed = finish_trace(
            parsed.with_columns(arrival_s=pl.lit(0.0)),
            source=str(file.name),
            drop_zero_tokens=True,
            has_request_id=True,
        ).drop("arrival_s", "source")
    return PreparedScan(path=file, raw=raw, specs=list(_TOKEN_SPECS), trace=parsed)


def scan_lengths(path: str | Path, *, drop_zero_tokens: bool = False) -> pl.LazyFrame:
    r"""Lazily read a length-only table (``num_prefill_tokens,num_decode_tokens``, ...).

    Returns ``request_id`` (file row), ``prompt_tokens``, ``output_tokens``; other
    columns (``num_total_tokens``, ``pd_ratio``) are derived and not kept.

    Args:
        path: the CSV file (e.g. Vidur's arXiv-summarization lengths).
        drop_zero_tokens: drop rows with 0 prompt or output tokens, warning with counts.

    Returns:
        A LazyFrame in file order.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "l.csv"
        >>> _ = path.write_text("num_prefill_tokens,num_decode_tokens,num_total_tokens,"
        ...                     "pd_ratio\n3772,54,3826,69.85\n100,10,110,10.0\n")
        >>> scan_lengths(path).collect().rows()
        [(0, 3772, 54), (1, 100, 10)]
    """
    return prepare_lengths(path, drop_zero_tokens=drop_zero_tokens).trace


def load_lengths(path: str | Path, *, drop_zero_tokens: bool = False) -> pl.DataFrame:
    r"""Read and validate a length-only table (see :func:`scan_lengths`).

    Args:
        path: the CSV file.
        drop_zero_tokens: drop rows with 0 prompt or output tokens, warning with counts.

    Returns:
        ``request_id`` (u64), ``prompt_tokens`` and ``output_tokens`` (u32 > 0).

    Raises:
        TraceSchemaError: a malformed cell, a null, or a zero/negative token count
            (naming file, column, row and value).

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "l.csv"
        >>> _ = path.write_text("num_prefill_tokens,num_decode_tokens\n3772,54\n")
        >>> load_lengths(path).schema["prompt_tokens"]
        UInt32
    """
    prepared = prepare_lengths(path, drop_zero_tokens=drop_zero_tokens)
    try:
        frame = prepared.trace.collect()
    except pl.exceptions.PolarsError:
        diagnose_parse_error(prepared.raw, prepared.specs, prepared.path)
        raise
    # Validate lengths with the trace validator: a constant arrival passes its checks.
    checked = validate_trace(frame.with_columns(arrival_s=pl.lit(0.0)))
    return checked.drop("arrival_s")
