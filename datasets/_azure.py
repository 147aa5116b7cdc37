"""Azure LLM/LMM inference traces (2023, 2024 week-long, 2025 multimodal).

All three are CSV files with ``TIMESTAMP,ContextTokens,GeneratedTokens`` (the 2025
multimodal file adds ``NumImages`` after ``TIMESTAMP``). Only the timestamp text differs:

- 2023: ``2023-11-16 18:17:03.9799600`` (7 fractional digits, no zone, CRLF);
- 2024: ``2024-05-12 00:00:00.001163+00:00`` (fraction sometimes absent, UTC offset);
- 2025: ``2024-10-15T12:00:00.269Z`` (ISO 8601, ``Z``).

The variant is read from the first data row; every row is then parsed with Polars'
native string-to-datetime conversion at nanosecond precision (no Python per row), so
``arrival_s`` is exact to the 100 ns of the 2023 files. The file is read in 4 MiB
chunks (:func:`~routeplay.datasets._loadutil.scan_csv_chunked`), so a scan of the
week-long 2024 files streams in bounded memory.
"""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

from ._loadutil import (
    ParseSpec,
    PreparedScan,
    check_file,
    finish_trace,
    int_parser,
    open_text_head,
    read_header,
    require_columns,
    scan_csv_chunked,
)

__all__ = ["prepare_azure", "scan_azure"]

_ZONE = re.compile(r"(Z|[+-]\d\d:?\d\d)$")


def _timestamp_format(sample: str) -> tuple[str, bool]:
    """Return the strptime format for a sample timestamp and whether it carries a zone."""
    text = sample.strip()
    sep = "T" if len(text) > 10 and text[10] == "T" else " "
    zone = _ZONE.search(text)
    base = f"%Y-%m-%d{sep}%H:%M:%S%.f"
    if zone is None:
        return base, False
    if zone.group(1) == "Z":
        return base + "Z", False  # a literal Z: UTC, parsed as naive UTC wall time
    return base + ("%:z" if ":" in zone.group(1) else "%z"), True


def _timestamp_parser(fmt: str, zoned: bool) -> ParseSpec:
    def parse(raw: pl.Expr, strict: bool) -> pl.Expr:
        parsed = raw.str.strip_chars().str.to_datetime(fmt, time_unit="ns", strict=strict)
        if zoned:  # convert to UTC, then drop the zone so all arithmetic is naive
            parsed = parsed.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
        return parsed

    return ParseSpec(
        "TIMESTAMP", parse, f"a timestamp in the file's format {fmt!r} (from its first row)"
    )


def _timestamp_range(raw: pl.LazyFrame, spec: ParseSpec) -> tuple[int | None, bool]:
    """One streaming pass over the timestamp column: (earliest time in ns, in order?).

    Reads record batches, so memory stays bounded whatever the file size. Cells that do
    not parse are skipped here (the strict parse reports them later, with their row).
    """
    earliest = None
    last = None
    ordered = True
    for batch in (
        raw.select(spec.parse(pl.col("TIMESTAMP"), False).cast(pl.Int64).alias("t"))
        .drop_nulls()
        .collect_batches(engine="streaming")
    ):
        if batch.height == 0:
            continue
        t = batch.to_series()
        low = int(t.min())  # type: ignore[arg-type]
        earliest = low if earliest is None or low < earliest else earliest
        if ordered:
            ordered = bool(t.is_sorted()) and (last is None or t[0] >= last)
        last = t[-1]
    return earliest, ordered


def prepare_azure(
    path: str | Path, *, source: str | None = None, drop_zero_tokens: bool = False
) -> PreparedScan:
    """Build the lazy pieces of :func:`scan_azure` (used by ``load_trace`` for diagnostics)."""
    file = check_file(path)
    header = read_header(file)
    require_columns(file, header, ["TIMESTAMP", "ContextTokens", "GeneratedTokens"], "azure")
    head = open_text_head(file, 2)
    if len(head) < 2 or not head[1].strip():
        sample = "2023-11-16 18:17:03.9799600"  # empty file: validation reports it later
    else:
        sample = head[1].split(",")[header.index("TIMESTAMP")]
    fmt, zoned = _timestamp_format(sample)
    specs = [
        _timestamp_parser(fmt, zoned),
        ParseSpec("ContextTokens", int_parser, "an integer token count"),
        ParseSpec("GeneratedTokens", int_parser, "an integer token count"),
    ]
    if "NumImages" in header:
        specs.append(ParseSpec("NumImages", int_parser, "an integer image count"))
    raw = scan_csv_chunked(file, [s.column for s in specs])  # bounded memory, any size
    earliest, ordered = _timestamp_range(raw, specs[0])
    ns = pl.col("TIMESTAMP").cast(pl.Int64)  # time_unit="ns": nanoseconds since the epoch
    start = ns.min() if earliest is None else pl.lit(earliest, dtype=pl.Int64)
    parsed = raw.select(
        [s.parse(pl.col(s.column), True).alias(s.column) for s in specs]
    ).with_columns(arrival_s=(ns - start) / 1e9)
    renames = {
        "ContextTokens": "prompt_tokens",
        "GeneratedTokens": "output_tokens",
        "NumImages": "num_images",
    }
    parsed = parsed.drop("TIMESTAMP").rename({k: v for k, v in renames.items() if k in header})
    trace = finish_trace(
        parsed, source=source, drop_zero_tokens=drop_zero_tokens, presorted=ordered
    )
    return PreparedScan(path=file, raw=raw, specs=specs, trace=trace)


def scan_azure(
    path: str | Path, *, source: str | None = None, drop_zero_tokens: bool = False
) -> pl.LazyFrame:
    r"""Lazily read an Azure LLM/LMM inference trace CSV into the canonical schema.

    ``arrival_s`` counts seconds from the earliest ``TIMESTAMP`` (exact to 1 ns);
    ``request_id`` numbers the rows in arrival order (ties keep file order);
    ``NumImages`` (2025 multimodal file) is kept as ``num_images``. The result is not
    validated; :func:`~routeplay.datasets.load_trace` collects and validates it, and turns
    a malformed cell into an error naming its row.

    Args:
        path: the CSV file (``.csv`` or ``.csv.gz``).
        source: value of a constant ``source`` column (``None``: no such column).
        drop_zero_tokens: drop rows with 0 prompt or output tokens, warning with counts.

    Returns:
        A LazyFrame sorted by ``(arrival_s, request_id)``.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "trace.csv"
        >>> _ = path.write_bytes(b"TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
        ...     b"2023-11-16 18:17:03.9799600,4808,10\r\n2023-11-16 18:17:04.0319600,3180,8")
        >>> scan_azure(path).collect()["arrival_s"].to_list()
        [0.0, 0.052]
    """
    return prepare_azure(path, source=source, drop_zero_tokens=drop_zero_tokens).trace
