"""Vidur's processed traces: ``arrived_at`` traces and length-only tables.

``splitwise_{code,conv}.csv`` carry ``arrived_at,num_prefill_tokens,num_decode_tokens``
(seconds from the first request); ``arxiv_summarization_*.csv`` carries lengths only
(``num_prefill_tokens,num_decode_tokens,...``) and needs an arrival process: read it
with :func:`scan_lengths` / :func:`load_lengths` and pair it with
``routeplay.datasets.attach_arrivals``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import polars as pl

from routeplay._checks import check_int

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
    path: str | Path,
    *,
    source: str | None = None,
    drop_zero_tokens: bool = False,
    max_tokens: int | None = None,
) -> PreparedScan:
    """Build the lazy pieces of :func:`scan_vidur`."""
    if max_tokens is not None:
        check_int("scan_vidur", "max_tokens", max_tokens, minimum=2)
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
    if max_tokens is not None:
        parsed = _cut_prompts(parsed, max_tokens, file)
    trace = finish_trace(parsed, source=source, drop_zero_tokens=drop_zero_tokens)
    return PreparedScan(path=file, raw=raw, specs=specs, trace=trace)


def _cut_prompts(parsed: pl.LazyFrame, max_tokens: int, file: Path) -> pl.LazyFrame:
    """Vidur's cut: shorten prompts so that prompt + output <= max_tokens; warn with counts.

    Vidur's ``TraceReplayRequestGenerator`` (commit 7d47513) subtracts
    ``max(prompt + output - max_tokens, 0)`` from each prompt and asserts the rest is
    positive; a request whose output alone reaches ``max_tokens`` raises here.
    """
    over = (pl.col("prompt_tokens") + pl.col("output_tokens") - max_tokens).clip(lower_bound=0)
    counts = parsed.select(
        n_rows=pl.len(),
        n_cut=(over > 0).sum(),
        n_tokens=over.sum(),
        n_bad=((over > 0) & (pl.col("output_tokens") >= max_tokens)).sum(),
    ).collect(engine="streaming")
    n_bad = int(counts.item(0, "n_bad"))
    if n_bad:
        raise ValueError(
            f"max_tokens={max_tokens} would leave no prompt token in {n_bad} requests of {file} "
            f"(output_tokens >= {max_tokens}); expected outputs shorter than max_tokens, as "
            "Vidur asserts. Fix: raise max_tokens or leave it None (no cut)."
        )
    n_cut = int(counts.item(0, "n_cut"))
    if n_cut:
        warnings.warn(
            f"max_tokens={max_tokens} cut the prompts of {n_cut} of {counts.item(0, 'n_rows')} "
            f"requests of {file.name} by {counts.item(0, 'n_tokens')} tokens in all, so that "
            f"prompt + output <= {max_tokens} (what Vidur does when it replays a trace).",
            stacklevel=4,
        )
    return parsed.with_columns(prompt_tokens=pl.col("prompt_tokens") - over)


def scan_vidur(
    path: str | Path,
    *,
    source: str | None = None,
    drop_zero_tokens: bool = False,
    max_tokens: int | None = None,
) -> pl.LazyFrame:
    r"""Lazily read a Vidur trace (``arrived_at,num_prefill_tokens,num_decode_tokens``).

    ``arrival_s`` = ``arrived_at`` minus its minimum; ``request_id`` numbers rows in
    arrival order. Vidur cuts prompts so that prompt + output <= 4096 when it replays a
    trace; this loader does so only when asked (``max_tokens``).

    Args:
        path: the CSV file.
        source: value of a constant ``source`` column (``None``: no such column).
        drop_zero_tokens: drop rows with 0 prompt or output tokens, warning with counts.
        max_tokens: cut each prompt by ``max(prompt + output - max_tokens, 0)`` tokens,
            as Vidur's trace replay does (its ``max_tokens``, 4096 by default), and warn
            with the number of prompts cut; ``None`` (default): no cut.

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
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     scan_vidur(path, max_tokens=4096).collect()["prompt_tokens"].to_list()
        [4086, 3180]
        >>> print(caught[0].message)  # doctest: +ELLIPSIS
        max_tokens=4096 cut the prompts of 1 of 2 requests of t.csv by 722 tokens in all, ...
    """
    return prepare_vidur(
        path, source=source, drop_zero_tokens=drop_zero_tokens, max_tokens=max_tokens
    ).trace


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
