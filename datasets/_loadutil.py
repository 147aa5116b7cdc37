"""Shared plumbing of the format loaders: raw string scans, strict parsing, finishing.

Every loader follows the same three steps, all lazy:

1. scan the file with every column as a string (so a malformed cell never aborts
   the scan with a message that lacks the row);
2. parse the columns it needs with *strict* casts (a bad cell fails at collect time;
   :func:`diagnose_parse_error` then finds the first bad row with a second, lenient
   pass and names file, column, row and value);
3. :func:`finish_trace`: sort by arrival (stable, so file order breaks ties), number
   the rows as ``request_id``, optionally drop zero-token rows (warning with counts),
   and order the columns canonically.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from polars.io.plugins import register_io_source

from ._schema import TraceSchemaError, canonical_columns

__all__ = [
    "ParseSpec",
    "PreparedScan",
    "scan_csv_chunked",
    "check_file",
    "float_parser",
    "open_text_head",
    "rename_existing",
    "diagnose_parse_error",
    "finish_trace",
    "int_parser",
    "read_header",
    "require_columns",
]

#: A function from the raw (string) column expression to its parsed value.
Parser = Callable[[pl.Expr, bool], pl.Expr]


@dataclass(frozen=True, slots=True)
class ParseSpec:
    """How one raw column is parsed: the parser and what a valid cell looks like."""

    column: str
    parse: Parser
    expected: str


def int_parser(raw: pl.Expr, strict: bool) -> pl.Expr:
    """Parse a string column of integer counts (surrounding blanks allowed) to Int64."""
    return raw.str.strip_chars().cast(pl.Int64, strict=strict)


def float_parser(raw: pl.Expr, strict: bool) -> pl.Expr:
    """Parse a string column of real numbers to Float64."""
    return raw.str.strip_chars().cast(pl.Float64, strict=strict)


def read_header(path: Path) -> list[str]:
    """Return the column names of a CSV file's first line (CR/LF and BOM stripped)."""
    head = open_text_head(path, 1)
    text = head[0] if head else ""
    return [name.strip().strip('"') for name in text.split(",")] if text else []


def require_columns(path: Path, present: list[str], needed: list[str], fmt: str) -> None:
    """Raise a :class:`TraceSchemaError` naming the file if any needed column is absent."""
    import difflib

    missing = [c for c in needed if c not in present]
    if not missing:
        return
    hints = []
    for name in missing:
        close = difflib.get_close_matches(name, present, n=1, cutoff=0.6)
        if close:
            hints.append(f" (found {close[0]!r}: is the header misspelt?)")
    raise TraceSchemaError(
        f"{path}: missing column(s) {missing}{''.join(hints)} for format {fmt!r}; "
        f"expected {needed}, got {present}. Fix: check the file is a {fmt} trace, pass the "
        "right format=..., or map columns with routeplay.datasets.scan_table(path, "
        "columns={...}).",
        column=missing[0],
    )


def diagnose_parse_error(raw: pl.LazyFrame, specs: list[ParseSpec], path: Path | str) -> None:
    """Find the first cell that a strict parse rejects and raise a precise error.

    Called after a strict collect failed. Runs the parsers leniently and reports the
    first row (0-based data row, in file order) whose parsed value is null while the
    raw cell was not. Returns without raising when nothing is found, so the caller
    can re-raise the original error.

    Raises:
        TraceSchemaError: naming the file, column, row, line, value and expected form.
    """
    indexed = raw.with_row_index("__row")
    for spec in specs:
        cell = pl.col(spec.column)
        bad = indexed.filter(cell.is_null() | spec.parse(cell, False).is_null())
        found = bad.select("__row", spec.column).head(1).collect()
        if found.height:
            row = int(found.item(0, "__row"))
            value = found.item(0, spec.column)
            what = "is empty" if value is None else f"has value {value!r}"
            raise TraceSchemaError(
                f"{path}: column {spec.column!r}: row {row} (line {row + 2} of the file) "
                f"{what}; expected {spec.expected}. Fix: correct or remove that row, or "
                "check that the right format=... is used.",
                column=spec.column,
                row=row,
                value=value,
            )


def finish_trace(
    frame: pl.LazyFrame,
    *,
    source: str | None,
    drop_zero_tokens: bool,
    has_request_id: bool = False,
    presorted: bool = False,
) -> pl.LazyFrame:
    """Sort, number and tidy a parsed trace (columns already renamed to canonical names).

    Args:
        frame: lazy frame with at least ``arrival_s``, ``prompt_tokens``, ``output_tokens``.
        source: value of the ``source`` column (``None``: no source column).
        drop_zero_tokens: drop rows whose prompt or output token count is 0 and warn
            with the counts (the ids of the remaining rows keep their values).
        has_request_id: the frame already carries ``request_id`` (kept, used as tie-break).
        presorted: the caller checked that ``arrival_s`` is already non-decreasing in
            file order; the sort (which holds every row in memory) is skipped, so the
            frame streams in bounded memory. Numbering is the same as after the stable sort.

    Returns:
        The lazy trace, sorted by ``(arrival_s, request_id)``, canonical column order.
        Token columns stay Int64 (validation casts them to UInt32 after checking them).
    """
    zero = (pl.col("prompt_tokens") == 0) | (pl.col("output_tokens") == 0)
    counts = None
    if drop_zero_tokens:  # counted before sorting: cheap, one streaming pass
        counts = frame.select(
            n_rows=pl.len(),
            n_zero_prompt=(pl.col("prompt_tokens") == 0).sum(),
            n_zero_output=(pl.col("output_tokens") == 0).sum(),
            n_zero=zero.sum(),
        ).collect(engine="streaming")
    if presorted and not has_request_id:
        frame = frame.with_row_index("request_id").with_columns(
            pl.col("request_id").cast(pl.UInt64)
        )
    elif has_request_id:
        frame = frame.sort(["arrival_s", "request_id"], maintain_order=True)
    else:
        frame = (
            frame.sort("arrival_s", maintain_order=True)
            .with_row_index("request_id")
            .with_columns(pl.col("request_id").cast(pl.UInt64))
        )
    if source is not None:
        frame = frame.with_columns(source=pl.lit(source, dtype=pl.String))
    if counts is not None:
        n_zero = int(counts.item(0, "n_zero"))
        if n_zero:
            warnings.warn(
                f"drop_zero_tokens=True dropped {n_zero} of {counts.item(0, 'n_rows')} rows "
                f"({counts.item(0, 'n_zero_prompt')} with prompt_tokens == 0, "
                f"{counts.item(0, 'n_zero_output')} with output_tokens == 0) from "
                f"{source or 'the trace'}; request_id keeps the numbering of the full trace.",
                stacklevel=3,
            )
        frame = frame.filter(~zero)
    return frame.select(canonical_columns(list(frame.collect_schema().names())))


def rename_existing(frame: pl.LazyFrame, mapping: Mapping[str, str]) -> pl.LazyFrame:
    """Rename columns that are present (helper for optional columns)."""
    names = set(frame.collect_schema().names())
    return frame.rename({k: v for k, v in mapping.items() if k in names})


@dataclass(frozen=True, slots=True)
class PreparedScan:
    """A format loader's lazy pieces: the raw string scan, its parse specs, the trace."""

    path: Path
    raw: pl.LazyFrame
    specs: list[ParseSpec]
    trace: pl.LazyFrame


def open_text_head(path: Path, n_lines: int = 2) -> list[str]:
    """Return the first ``n_lines`` lines of a (possibly gzipped) text file, EOL stripped."""
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    lines: list[str] = []
    with opener(path, "rb") as handle:
        for _ in range(n_lines):
            line = handle.readline(1 << 16)
            if not line:
                break
            lines.append(line.decode("utf-8-sig").rstrip("\r\n"))
    return lines


#: bytes of CSV text parsed at once by :func:`scan_csv_chunked`
CSV_CHUNK_BYTES = 4 << 20


def scan_csv_chunked(
    path: Path, columns: list[str], *, chunk_bytes: int = CSV_CHUNK_BYTES
) -> pl.LazyFrame:
    r"""Lazily scan a simple CSV file (no quoted newlines) as all-string columns, in chunks.

    Polars' own CSV scan reads the whole file into memory before streaming it (measured:
    peak heap about the file size, see docs/notes/scale.md). This source reads
    ``chunk_bytes`` of text at a time (cut at the last line end), parses each piece with
    ``pl.read_csv`` and hands it to the streaming engine, so a pass over the file holds
    one chunk at a time. ``.gz`` files are decompressed on the fly. Empty cells are null,
    as with ``pl.scan_csv(path, infer_schema=False)``; CRLF line ends are accepted.

    Args:
        path: the CSV file, whose first line is the header.
        columns: the columns to read (must be in the header).
        chunk_bytes: text read per chunk.

    Returns:
        A LazyFrame with ``columns`` as ``pl.String``, in file order.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = path.write_bytes(b"a,b\r\n1,x\r\n2,\r\n3,z\r\n")
        >>> scan_csv_chunked(path, ["b", "a"], chunk_bytes=5).collect().rows()
        [('x', '1'), (None, '2'), ('z', '3')]
    """
    import gzip

    header = read_header(path)
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: columns {missing} are not in the header {header}.")
    schema = {c: pl.String() for c in columns}

    def parse(text: bytes, wanted: list[str]) -> pl.DataFrame:
        index = sorted(header.index(c) for c in wanted)
        frame = pl.read_csv(text, has_header=False, infer_schema=False, columns=index)
        frame.columns = [header[k] for k in index]
        return frame.select(wanted)

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        wanted = list(columns) if with_columns is None else list(with_columns)
        opener = gzip.open if path.suffix == ".gz" else open
        left = n_rows
        with opener(path, "rb") as handle:
            handle.readline()  # the header
            rest = b""
            while left is None or left > 0:
                data = handle.read(chunk_bytes)
                if not data:
                    text, rest = rest, b""
                else:
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        rest += data
                        continue
                    text, rest = rest + data[: cut + 1], data[cut + 1 :]
                if text.strip():
                    frame = parse(text, wanted)
                    if predicate is not None:
                        frame = frame.filter(predicate)
                    if left is not None:
                        frame = frame.head(left)
                        left -= frame.height
                    yield frame
                if not data:
                    break

    return register_io_source(source, schema=schema, explain_name="csv_chunked")


def check_file(path: str | Path) -> Path:
    """Return ``path`` as a Path, raising FileNotFoundError with a hint if it is absent."""
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(
            f"trace file {str(resolved)!r} does not exist. Fix: check the path, or pass a "
            "registered trace name (see `routeplay datasets list`)."
        )
    return resolved
