"""One entry point for every trace: :func:`scan_trace` (lazy) and :func:`load_trace`.

Both accept a registered name (see :func:`~routeplay.datasets.list_traces`; the file is
found with :func:`~routeplay.datasets.fetch`) or a path; the format is taken from the
registry, from ``format=``, or detected from the file's suffix and header.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from ._azure import prepare_azure
from ._burstgpt import prepare_burstgpt
from ._loadutil import PreparedScan, check_file, diagnose_parse_error, read_header
from ._mooncake import diagnose_mooncake, prepare_mooncake
from ._registry import _BY_NAME, fetch
from ._schema import TraceSchemaError, validate_trace
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
    """Return (file, format, source name) for a registry name or a path."""
    key = str(name_or_path)
    if key in _BY_NAME and not Path(key).exists():
        info = _BY_NAME[key]
        return fetch(key), fmt or info.format, info.name
    file = check_file(name_or_path)
    return file, fmt or detect_format(file), file.name


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
    return _PREPARERS[resolved](file, **options)


def scan_trace(
    name_or_path: str | Path, *, format: str | None = None, **options: Any
) -> pl.LazyFrame:
    """Lazily read a trace (registered name or path) into the canonical schema.

    Nothing is read until the frame is collected, and only the columns a query
    uses are parsed, so aggregations over a 30M-row file run in bounded memory
    (collect them with ``engine="streaming"``). The frame is not validated: use
    :func:`load_trace` to collect and validate.

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

    Example:
        >>> scan_trace("azure-2023-code").select("request_id").collect().height
        8819
    """
    return _prepare(name_or_path, format, dict(options)).trace


def load_trace(
    name_or_path: str | Path,
    *,
    format: str | None = None,
    allow_extra_columns: bool = False,
    **options: Any,
) -> pl.DataFrame:
    """Read a trace (registered name or path), validate it and return it.

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
    try:
        frame = prepared.trace.collect()
    except pl.exceptions.PolarsError:
        if prepared.specs:
            diagnose_parse_error(prepared.raw, prepared.specs, prepared.path)
        elif prepared.path.suffix.lower() in (".jsonl", ".ndjson"):
            diagnose_mooncake(prepared.path)
        raise
    try:
        return validate_trace(frame, allow_extra_columns=allow_extra_columns)
    except TraceSchemaError as exc:
        raise TraceSchemaError(
            f"{prepared.path}: {exc} (rows are counted in arrival order)",
            column=exc.column,
            row=exc.row,
            value=exc.value,
        ) from None
