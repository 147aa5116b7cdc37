"""One entry point for every trace: :func:`scan_trace` (lazy) and :func:`load_trace`.

Both accept a registered name (see :func:`~routeplay.datasets.list_traces`; the file is
found with :func:`~routeplay.datasets.fetch`) or a path; the format is taken from the
registry, from ``format=``, or detected from the file's suffix and header.
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
from polars.io.plugins import register_io_source

from ._azure import prepare_azure
from ._burstgpt import prepare_burstgpt
from ._loadutil import PreparedScan, check_file, diagnose_parse_error, read_error, read_header
from ._mooncake import diagnose_mooncake, prepare_mooncake
from ._registry import _BY_NAME, fetch
from ._schema import TraceChecker, TraceSchemaError, validate_trace
from ._table import prepare_table
from ._vidur import prepare_vidur

__all__ = ["FORMATS", "detect_format", "load_trace", "scan_trace"]

_PREPARERS: dict[str, Callable[..., PreparedScan]] = {
    "azure": prepare_azure,
    "mooncake": prepare_mooncake,
    "vidur": prepare_vidur,
    "burstgpt": prepare_burstgpt,
    "table": prepare_table,
}

#: Formats accepted by ``format=`` (``"lengths"`` files go through ``load_lengths``).
FORMATS: tuple[str, ...] = (*_PREPARERS, "lengths")


def detect_format(path: str | Path) -> str:
    r"""Guess a trace file's format from its suffix and header.

    Returns one of :data:`FORMATS`; ``"table"`` for Parquet files and CSVs already in
    the canonical schema.

    Raises:
        ValueError: the header matches no known format.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,5,2\n")
        >>> detect_format(path)
        'vidur'
    """
    file = check_file(path)
    suffixes = [s.lower() for s in file.suffixes]
    if suffixes and suffixes[-1] in (".jsonl", ".ndjson"):
        return "mooncake"
    if suffixes and suffixes[-1] in (".parquet", ".pq"):
        return "table"
    header = read_header(file)
    if "TIMESTAMP" in header and "ContextTokens" in header:
        return "azure"
    if "arrived_at" in header and "num_prefill_tokens" in header:
        return "vidur"
    if "num_prefill_tokens" in header and "num_decode_tokens" in header:
        return "lengths"
    if "Request tokens" in header and "Response tokens" in header:
        return "burstgpt"
    if all(c in header for c in ("arrival_s", "prompt_tokens", "output_tokens")):
        return "table"
    raise ValueError(
        f"cannot tell the format of {file} from its header {header}; known formats: "
        f"{list(FORMATS)}. Fix: pass format=... (for your own logs: format='table' with "
        "columns={'arrival_s': ..., 'prompt_tokens': ..., 'output_tokens': ...})."
    )


def _resolve(name_or_path: str | Path, fmt: str | None) -> tuple[Path, str, str | None]:
    """Return (file, format, source name) for a registry name or a path.

    A ``str`` that is a registered name is the registered trace, even if a file of that
    name exists (registered names have no folder separator and no suffix, so
    ``"./azure-2023-conv"`` or a :class:`~pathlib.Path` reads the local file instead).
    """
    if isinstance(name_or_path, str) and name_or_path in _BY_NAME:
        info = _BY_NAME[name_or_path]
        return fetch(name_or_path), fmt or info.format, info.name
    file = check_file(name_or_path)
    return file, fmt or detect_format(file), file.name


def _read_failure(prepared_path: Path, exc: BaseException, fmt: str) -> TraceSchemaError:
    """A one-line error for a failure of the format's reader that no diagnosis explained."""
    if isinstance(exc, (OSError, EOFError, zlib.error, UnicodeDecodeError)):
        return read_error(prepared_path, exc)
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return TraceSchemaError(
        f"{prepared_path}: cannot read the file as a {fmt!r} trace ({detail}). Fix: check "
        "that the file is complete and in that format, or pass the right format=...."
    )


def _prepare(name_or_path: str | Path, fmt: str | None, options: dict[str, Any]) -> PreparedScan:
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {list(FORMATS)}.")
    file, resolved, source = _resolve(name_or_path, fmt)
    if resolved == "lengths":
        raise ValueError(
            f"{file} holds token lengths only (no arrival times), so it is not a trace. Fix: "
            "lengths = routeplay.datasets.load_lengths(path), then pair it with an arrival "
            "process: routeplay.datasets.attach_arrivals(lengths, rate_per_s=..., cv=..., "
            "seed=...)."
        )
    options.setdefault("source", source)
    try:
        prepared = _PREPARERS[resolved](file, **options)
        prepared.trace.collect_schema()
    except pl.exceptions.PolarsError as exc:
        raise _read_failure(file, exc, resolved) from None
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise read_error(file, exc) from None
    return dataclasses.replace(prepared, format=resolved)


def _diagnose(prepared: PreparedScan, exc: BaseException) -> TraceSchemaError:
    """Name the bad cell behind a failed collect (raises it), else a one-line error."""
    if isinstance(exc, TraceSchemaError):
        return exc
    if isinstance(exc, pl.exceptions.PolarsError):
        if prepared.specs:
            diagnose_parse_error(prepared.raw, prepared.specs, prepared.path)
        elif prepared.path.suffix.lower() in (".jsonl", ".ndjson"):
            diagnose_mooncake(prepared.path)
    return _read_failure(prepared.path, exc, prepared.format)


_READ_ERRORS = (pl.exceptions.PolarsError, OSError, EOFError, zlib.error, UnicodeDecodeError)


def _with_path(path: Path, exc: TraceSchemaError) -> TraceSchemaError:
    order = "" if exc.row is None else " (rows are counted in arrival order)"
    return TraceSchemaError(
        f"{path}: {exc}{order}",
        column=exc.column,
        row=exc.row,
        value=exc.value,
    )


def _guarded(prepared: PreparedScan, *, validate: bool) -> pl.LazyFrame:
    """Wrap a prepared scan so that reading it never fails with a bare Polars error.

    The returned LazyFrame streams ``prepared.trace`` batch by batch (projections,
    filters and limits are passed down). A failed read is diagnosed (the first bad cell,
    naming file, column, row and value) and raised as :class:`TraceSchemaError`. With
    ``validate``, the canonical columns a query reads are checked as they stream (the
    checks and messages of :func:`validate_trace`, prefixed with the file); a column
    checked in a full pass is not checked again.
    """
    inner = prepared.trace
    schema = inner.collect_schema()
    checked: set[str] = set()

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        names = list(schema.names()) if with_columns is None else list(with_columns)
        lf = inner.select(names)
        checker = None
        if validate and not set(names) <= checked:
            checker = TraceChecker(
                {c: schema[c] for c in names}, allow_extra_columns=True, required=()
            )
        if predicate is None and n_rows is not None:
            lf = lf.head(n_rows)
        left = n_rows
        try:
            for batch in lf.collect_batches(engine="streaming"):
                if checker is not None:
                    checker.feed(batch)
                if predicate is not None:
                    batch = batch.filter(predicate)
                if left is not None:
                    batch = batch.head(left)
                    left -= batch.height
                yield batch
            if checker is not None and n_rows != 0:
                ids = None
                if checker.needs_id_pass:
                    ids = inner.select("request_id").collect(engine="streaming").to_series()
                try:
                    checker.finish(ids)
                except TraceSchemaError as exc:
                    raise _with_path(prepared.path, exc) from None
                if n_rows is None:
                    checked.update(names)
        except _READ_ERRORS as exc:
            raise _diagnose(prepared, exc) from None

    return register_io_source(source, schema=schema, explain_name="routeplay_trace")


def scan_trace(
    name_or_path: str | Path, *, format: str | None = None, **options: Any
) -> pl.LazyFrame:
    """Lazily read a trace (registered name or path) into the canonical schema.

    Nothing is read until the frame is collected, and only the columns a query
    uses are parsed, so aggregations over a 30M-row file run in bounded memory
    (collect them with ``engine="streaming"``). The columns a query reads are
    validated as they stream: a malformed cell, a ragged line or a row that
    :func:`validate_trace` would reject raises :class:`TraceSchemaError` naming the file
    (after the pass, with the message :func:`load_trace` gives). Use :func:`load_trace`
    to collect, validate every column and cast to the canonical dtypes.

    Name or path: a ``str`` that is a registered name (see ``routeplay datasets list``)
    always means the registered trace, even when a file of that name exists in the
    working directory; registered names contain no folder separator and no suffix, so
    write ``"./azure-2023-conv"`` (or pass a :class:`~pathlib.Path`) to read such a file.
    Any other ``str`` or ``Path`` is a file path.

    Args:
        name_or_path: a registry name (e.g. ``"azure-2023-conv"``) or a file path.
        format: one of :data:`FORMATS` (default: registry entry or detection).
        **options: passed to the format's loader (``drop_zero_tokens``, ``source``,
            ``spread_ticks_s``/``seed`` for Mooncake, ``columns``/``time_unit`` for
            tables, ``task_column`` for BurstGPT, ...).

    Returns:
        A LazyFrame with ``source`` set to the registry name or the file name.

    Raises:
        ValueError: unknown format or a length-only file.
        TraceSchemaError: the file cannot be read or holds bad rows (when the frame is
            collected; header problems already here).

    Example:
        >>> scan_trace("azure-2023-code").select("request_id").collect().height
        8819
    """
    return _guarded(_prepare(name_or_path, format, dict(options)), validate=True)


def load_trace(
    name_or_path: str | Path,
    *,
    format: str | None = None,
    allow_extra_columns: bool = False,
    **options: Any,
) -> pl.DataFrame:
    """Read a trace (registered name or path), validate it and return it.

    Names and paths are told apart as in :func:`scan_trace`: a registered name always
    means the registered trace; write ``"./NAME"`` or pass a ``Path`` for a local file
    of the same name.

    Args:
        name_or_path: a registry name (e.g. ``"azure-2023-conv"``) or a file path.
        format: one of :data:`FORMATS` (default: registry entry or detection).
        allow_extra_columns: keep columns outside the schema (e.g. BurstGPT's
            ``keep_extra_columns=True``).
        **options: passed to the format's loader, see :func:`scan_trace`.

    Returns:
        The trace in canonical dtypes, sorted by ``(arrival_s, request_id)``.

    Raises:
        TraceSchemaError: a malformed cell (naming file, column, row, value) or a
            validation failure (zero tokens, nulls, ...; the message names the file).
        ValueError: unknown format or name, a length-only file.
        FileNotFoundError: the file does not exist or cannot be fetched.

    Example:
        >>> trace = load_trace("azure-2023-conv")
        >>> trace.height, round(trace["prompt_tokens"].mean())
        (19366, 1155)
    """
    prepared = _prepare(name_or_path, format, dict(options))
    frame = _guarded(prepared, validate=False).collect()
    try:
        return validate_trace(frame, allow_extra_columns=allow_extra_columns)
    except TraceSchemaError as exc:
        raise _with_path(prepared.path, exc) from None
