"""BurstGPT CSV traces (v1 and v3 column sets, selected by name).

v1: ``Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type``;
v3 adds ``Session ID`` and ``Elapsed time`` after ``Timestamp``. ``Timestamp`` is in
seconds. Failed requests appear as rows with 0 response tokens: they are kept, so
validation rejects them naming the row, unless ``drop_zero_tokens=True`` drops them
and warns with the counts.

Column choices: ``Session ID`` -> ``session_id`` (string). ``Model`` (ChatGPT / GPT-4)
and ``Log Type`` (Conversation log / API log) are not tasks in the paper's sense, so
they are not mapped by default; ``task_column="Model"`` or ``"Log Type"`` copies one of
them into ``task``, and ``keep_extra_columns=True`` keeps ``model``, ``log_type`` and
(v3) ``elapsed_s`` as extra columns (then validate with ``allow_extra_columns=True``).
``Total tokens`` is redundant and dropped.
"""

from __future__ import annotations

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
    require_columns,
    scan_csv_chunked,
)

__all__ = ["prepare_burstgpt", "scan_burstgpt"]

_REQUIRED = ["Timestamp", "Model", "Request tokens", "Response tokens", "Log Type"]
_TASK_COLUMNS = ("Model", "Log Type")


def _string_parser(raw: pl.Expr, strict: bool) -> pl.Expr:
    return raw


def prepare_burstgpt(
    path: str | Path,
    *,
    source: str | None = None,
    drop_zero_tokens: bool = False,
    task_column: Literal["Model", "Log Type"] | None = None,
    keep_extra_columns: bool = False,
) -> PreparedScan:
    """Build the lazy pieces of :func:`scan_burstgpt`."""
    if task_column is not None and task_column not in _TASK_COLUMNS:
        raise ValueError(
            f"task_column must be one of {list(_TASK_COLUMNS)} or None, got {task_column!r}."
        )
    file = check_file(path)
    header = read_header(file)
    require_columns(file, header, _REQUIRED, "burstgpt")
    specs = [
        ParseSpec("Timestamp", float_parser, "seconds as a number"),
        ParseSpec("Request tokens", int_parser, "an integer token count"),
        ParseSpec("Response tokens", int_parser, "an integer token count"),
        ParseSpec("Model", _string_parser, "a model name"),
        ParseSpec("Log Type", _string_parser, "a log type"),
    ]
    has_session = "Session ID" in header
    if has_session:
        specs.append(ParseSpec("Session ID", _string_parser, "a session id"))
    if "Elapsed time" in header and keep_extra_columns:
        specs.append(ParseSpec("Elapsed time", float_parser, "seconds as a number"))
    raw = scan_csv_chunked(file, [s.column for s in specs])
    parsed = raw.select([s.parse(pl.col(s.column), True).alias(s.column) for s in specs])
    columns: dict[str, pl.Expr] = {
        "arrival_s": pl.col("Timestamp") - pl.col("Timestamp").min(),
        "prompt_tokens": pl.col("Request tokens"),
        "output_tokens": pl.col("Response tokens"),
    }
    if task_column is not None:
        columns["task"] = pl.col(task_column).cast(pl.Categorical)
    if has_session:
        columns["session_id"] = pl.col("Session ID")
    if keep_extra_columns:
        columns["model"] = pl.col("Model")
        columns["log_type"] = pl.col("Log Type")
        if "Elapsed time" in header:
            columns["elapsed_s"] = pl.col("Elapsed time")
    out = parsed.select(**columns)
    trace = finish_trace(out, source=source, drop_zero_tokens=drop_zero_tokens)
    return PreparedScan(path=file, raw=raw, specs=specs, trace=trace)


def scan_burstgpt(
    path: str | Path,
    *,
    source: str | None = None,
    drop_zero_tokens: bool = False,
    task_column: Literal["Model", "Log Type"] | None = None,
    keep_extra_columns: bool = False,
) -> pl.LazyFrame:
    r"""Lazily read a BurstGPT CSV (v1 or v3 columns, matched by name).

    Args:
        path: the CSV file.
        source: value of a constant ``source`` column (``None``: no such column).
        drop_zero_tokens: drop the failed requests (0 request or response tokens) and
            warn with the counts. With ``False`` they stay, and validation names them.
        task_column: copy ``"Model"`` or ``"Log Type"`` into the ``task`` column.
        keep_extra_columns: keep ``model``, ``log_type`` and (v3) ``elapsed_s``.

    Returns:
        A LazyFrame sorted by ``(arrival_s, request_id)``; ``arrival_s`` is
        ``Timestamp`` minus its minimum.

    Raises:
        ValueError: unknown ``task_column``.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "b.csv"
        >>> _ = path.write_text("Timestamp,Model,Request tokens,Response tokens,Total tokens,"
        ...     "Log Type\n5,ChatGPT,472,18,490,Conversation log\n"
        ...     "7,GPT-4,1087,0,1087,API log\n")
        >>> scan_burstgpt(path, task_column="Model").collect().rows()
        [(0, 0.0, 472, 18, 'ChatGPT'), (1, 2.0, 1087, 0, 'GPT-4')]
    """
    return prepare_burstgpt(
        path,
        source=source,
        drop_zero_tokens=drop_zero_tokens,
        task_column=task_column,
        keep_extra_columns=keep_extra_columns,
    ).trace
