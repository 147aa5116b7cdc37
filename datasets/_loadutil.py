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

import csv
import gzip
import io
import warnings
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from polars.io.plugins import register_io_source

from ._schema import TraceSchemaError, canonical_columns

__all__ = [
    "ParseSpec",
    "PreparedScan",
    "scan_csv_chunked",
    "check_csv_fields",
    "check_file",
    "float_parser",
    "open_text_head",
    "rename_existing",
    "diagnose_parse_error",
    "finish_trace",
    "int_parser",
    "read_error",
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
        f"expected {needed}, got {present}. Fix: check that the file is in the {fmt!r} "
        "format, pass the right format=..., or map columns with "
        "routeplay.datasets.scan_table(path, columns={...}).",
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
            line = (
                "" if str(path).endswith((".parquet", ".pq")) else f" (line {row + 2} of the file)"
            )
            raise TraceSchemaError(
                f"{path}: column {spec.column!r}: row {row}{line} "
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
    format: str = "trace"


def read_error(path: Path, exc: BaseException, line: int | None = None) -> TraceSchemaError:
    """Turn an error of reading ``path`` (gzip, UTF-8, I/O) into a one-line TraceSchemaError.

    Example:
        >>> print(read_error(Path("t.csv.gz"), EOFError("stream ended early"), line=7))
        ... # doctest: +NORMALIZE_WHITESPACE
        t.csv.gz: cannot read the file near line 7: the gzip stream is truncated or corrupt
        (stream ended early); expected a complete gzip file. Fix: download or copy the file
        again.
    """
    where = "" if line is None else f" near line {line}"
    detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, UnicodeDecodeError):
        byte = exc.object[exc.start : exc.start + 1]
        return TraceSchemaError(
            f"{path}: line {line if line is not None else '?'} is not valid UTF-8 (byte "
            f"{byte!r}); expected UTF-8 text. Fix: re-encode the file as UTF-8, e.g. "
            f"`iconv -f latin1 -t utf-8 {path.name}`.",
            row=None if line is None else line - 2,
        )
    if isinstance(exc, (EOFError, zlib.error, gzip.BadGzipFile)):
        return TraceSchemaError(
            f"{path}: cannot read the file{where}: the gzip stream is truncated or corrupt "
            f"({detail}); expected a complete gzip file. Fix: download or copy the file again."
        )
    if isinstance(exc, PermissionError):
        return TraceSchemaError(
            f"{path}: cannot read the file: permission denied; expected a readable file. "
            f"Fix: check its permissions (e.g. `chmod u+r {path.name}`)."
        )
    return TraceSchemaError(
        f"{path}: cannot read the file{where} ({type(exc).__name__}: {detail}). Fix: check "
        "that the file is complete and in the expected format."
    )


def open_text_head(path: Path, n_lines: int = 2) -> list[str]:
    """Return the first ``n_lines`` lines of a (possibly gzipped) text file, EOL stripped.

    Raises:
        TraceSchemaError: the file cannot be read (permissions, bad gzip, bad UTF-8),
            naming the file and line.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    lines: list[str] = []
    try:
        with opener(path, "rb") as handle:
            for _ in range(n_lines):
                line = handle.readline(1 << 16)
                if not line:
                    break
                try:
                    lines.append(line.decode("utf-8-sig").rstrip("\r\n"))
                except UnicodeDecodeError as exc:
                    raise read_error(path, exc, len(lines) + 1) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise read_error(path, exc, len(lines) + 1) from None
    return lines


#: bytes of CSV text parsed at once by :func:`scan_csv_chunked`
CSV_CHUNK_BYTES = 4 << 20
#: longest CSV line accepted by :func:`scan_csv_chunked` (a longer one is an error)
MAX_LINE_BYTES = 1 << 20


def _show(line: bytes) -> str:
    text = line.rstrip(b"\r").decode("utf-8", errors="replace")
    return repr(text if len(text) <= 80 else text[:77] + "...")


def _ragged_error(path: Path, header: list[str], line_no: int, line: bytes, found: int) -> None:
    fields = len(header)
    if not line.strip(b"\r"):
        what = "is blank"
    else:
        what = f"has {found} field{'s' if found != 1 else ''} {_show(line)}"
    raise TraceSchemaError(
        f"{path}: line {line_no} {what}; expected {fields} comma-separated fields like the "
        f"header ({','.join(header)}). Fix: repair or remove that line (a cut-off last line "
        "usually means an interrupted download or copy: fetch the file again).",
        row=line_no - 2,
        value=line.rstrip(b"\r").decode("utf-8", errors="replace"),
    )


def check_csv_fields(path: Path, header: list[str], text: bytes, first_line: int) -> None:
    r"""Check that every line of ``text`` is UTF-8 and has as many fields as the header.

    Args:
        path: the file (for the message).
        header: its column names.
        text: complete lines of the file (the last one may lack its line end).
        first_line: the 1-based line number of the first line of ``text``.

    Raises:
        TraceSchemaError: naming the file, the first bad line, what it holds and what was
            expected.

    Example:
        >>> check_csv_fields(Path("t.csv"), ["a", "b"], b"1,2\n3\n", 2)
        Traceback (most recent call last):
        ...
        routeplay.datasets._schema.TraceSchemaError: t.csv: line 3 has 1 field '3'; expected 2 ...
    """
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise read_error(path, exc, first_line + text.count(b"\n", 0, exc.start)) from None
    fields = len(header)
    if b'"' in text:  # quoted fields may hold commas: count with the csv module
        reader = csv.reader(io.StringIO(decoded))
        for record in reader:
            if len(record) != fields and not (fields == 1 and not record):
                line = text.split(b"\n")[reader.line_num - 1]
                _ragged_error(path, header, first_line + reader.line_num - 1, line, len(record))
        return
    data = np.frombuffer(text, dtype=np.uint8)
    ends = np.flatnonzero(data == 10)
    if not text.endswith(b"\n"):
        ends = np.append(ends, data.size)
    commas = np.flatnonzero(data == 44)
    counts = np.bincount(np.searchsorted(ends, commas), minlength=ends.size)
    bad = np.flatnonzero(counts != fields - 1)
    if bad.size:
        k = int(bad[0])
        begin = 0 if k == 0 else int(ends[k - 1]) + 1
        line = text[begin : int(ends[k])]
        found = int(counts[k]) + 1 if line.strip(b"\r") else 0
        _ragged_error(path, header, first_line + k, line, found)


def _checked_chunks(path: Path, header: list[str], chunk_bytes: int) -> Iterator[tuple[bytes, int]]:
    """Yield ``(text, first line number)`` of complete, checked lines after the header.

    Blank lines at the very end of the file are ignored; anywhere else they are errors.
    """
    opener = gzip.open if path.suffix == ".gz" else open
    line_no = 2
    try:
        with opener(path, "rb") as handle:
            handle.readline()  # the header
            buffer = b""
            while True:
                data = handle.read(chunk_bytes)
                final = not data
                buffer += data
                if final:
                    text, buffer = buffer.rstrip(b"\r\n"), b""
                else:
                    body_end = len(buffer.rstrip(b"\r\n"))
                    cut = buffer.find(b"\n", body_end) if body_end else -1
                    if cut < 0:  # the last non-blank line is not complete yet
                        cut = buffer.rfind(b"\n", 0, body_end) if body_end else -1
                    if cut < 0:
                        if len(buffer) > MAX_LINE_BYTES:
                            raise TraceSchemaError(
                                f"{path}: line {line_no} is longer than {MAX_LINE_BYTES:,} "
                                "bytes; expected a CSV line of a request. Fix: check that the "
                                "file is a CSV trace."
                            )
                        continue
                    text, buffer = buffer[: cut + 1], buffer[cut + 1 :]
                if text:
                    check_csv_fields(path, header, text, line_no)
                    yield text, line_no
                    line_no += text.count(b"\n")
                if final:
                    break
    except (OSError, EOFError, zlib.error) as exc:
        raise read_error(path, exc, line_no) from None


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

    Every line is checked before it is parsed (:func:`check_csv_fields`): a line that is
    not UTF-8, a blank line or a line with more or fewer fields than the header raises a
    :class:`TraceSchemaError` naming the file and the line, wherever the chunk boundaries
    fall. Blank lines at the very end of the file are ignored. A truncated or corrupt
    gzip stream and unreadable files raise a :class:`TraceSchemaError` too.

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
        >>> _ = path.write_bytes(b"a,b\n1,x\n2,y,extra\n")
        >>> scan_csv_chunked(path, ["a"]).collect()
        Traceback (most recent call last):
        ...
        routeplay.datasets._schema.TraceSchemaError: ...t.csv: line 3 has 3 fields '2,y,extra'; ...
    """
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
        left = n_rows
        for text, _line in _checked_chunks(path, header, chunk_bytes):
            if left is not None and left <= 0:
                break
            frame = parse(text, wanted)
            if predicate is not None:
                frame = frame.filter(predicate)
            if left is not None:
                frame = frame.head(left)
                left -= frame.height
            yield frame

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
