"""Mooncake FAST'25 JSONL traces (``timestamp`` ms, lengths, prefix-block hashes).

Each line is ``{"timestamp": int ms, "input_length": int, "output_length": int,
"hash_ids": [int, ...]}``; ``hash_ids`` become ``prefix_blocks`` (list[u64], one id per
512-token block). Some upstream traces round arrivals to a coarse tick (3 s); the
``spread_ticks_s`` option spreads the requests of each tick uniformly over it with a
seeded generator, deterministically.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl

from ._loadutil import PreparedScan, check_file, finish_trace
from ._schema import TraceSchemaError

__all__ = ["diagnose_mooncake", "prepare_mooncake", "scan_mooncake"]

_SCHEMA = pl.Schema(
    {
        "timestamp": pl.Int64(),
        "input_length": pl.Int64(),
        "output_length": pl.Int64(),
        "hash_ids": pl.List(pl.UInt64()),
    }
)


def diagnose_mooncake(path: Path) -> None:
    """Find the first malformed line of a Mooncake JSONL file and raise a precise error.

    Only called after a collect failed, so reading line by line is acceptable here.
    """
    with path.open("rb") as handle:
        for row, line in enumerate(handle):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceSchemaError(
                    f"{path}: row {row} (line {row + 1}) is not valid JSON ({exc.msg}); "
                    "expected one JSON object per line. Fix: repair or remove that line.",
                    row=row,
                ) from exc
            for key, kind in (
                ("timestamp", "an integer of milliseconds"),
                ("input_length", "an integer token count"),
                ("output_length", "an integer token count"),
            ):
                value = record.get(key) if isinstance(record, dict) else None
                if not isinstance(value, int) or isinstance(value, bool):
                    raise TraceSchemaError(
                        f"{path}: column {key!r}: row {row} (line {row + 1}) has value "
                        f"{value!r}; expected {kind}. Fix: correct or remove that line.",
                        column=key,
                        row=row,
                        value=value,
                    )
            hashes = record.get("hash_ids", [])
            if not isinstance(hashes, list) or not all(
                isinstance(h, int) and h >= 0 for h in hashes
            ):
                raise TraceSchemaError(
                    f"{path}: column 'hash_ids': row {row} (line {row + 1}) has value "
                    f"{hashes!r}; expected a list of non-negative integers. Fix: correct or "
                    "remove that line.",
                    column="hash_ids",
                    row=row,
                    value=hashes,
                )


def _spread(frame: pl.DataFrame, tick_s: float, seed: int) -> pl.DataFrame:
    """Move each request to a uniform random time inside its tick ``[k*tick, (k+1)*tick)``."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    arrival = frame.get_column("arrival_s").to_numpy()
    offsets = rng.random(arrival.shape[0]) * tick_s
    spread = np.floor(arrival / tick_s) * tick_s + offsets
    return frame.with_columns(arrival_s=pl.Series(spread, dtype=pl.Float64))


def prepare_mooncake(
    path: str | Path,
    *,
    source: str | None = None,
    drop_zero_tokens: bool = False,
    spread_ticks_s: float | None = None,
    seed: int = 0,
) -> PreparedScan:
    """Build the lazy pieces of :func:`scan_mooncake`."""
    file = check_file(path)
    if spread_ticks_s is not None and not (spread_ticks_s > 0 and np.isfinite(spread_ticks_s)):
        raise ValueError(
            f"spread_ticks_s must be a positive number of seconds (e.g. 3.0), got "
            f"{spread_ticks_s!r}. Fix: pass the trace's timestamp granularity, or None."
        )
    raw = pl.scan_ndjson(file, schema=_SCHEMA)
    parsed = raw.select(
        arrival_s=(pl.col("timestamp") - pl.col("timestamp").min()).cast(pl.Float64) / 1e3,
        prompt_tokens=pl.col("input_length"),
        output_tokens=pl.col("output_length"),
        prefix_blocks=pl.col("hash_ids"),
    )
    if spread_ticks_s is not None:
        # Needs the whole column at once; Mooncake traces are small (tens of thousands).
        parsed = _spread(parsed.collect(), spread_ticks_s, seed).lazy()
    trace = finish_trace(parsed, source=source, drop_zero_tokens=drop_zero_tokens)
    return PreparedScan(path=file, raw=raw, specs=[], trace=trace)


def scan_mooncake(
    path: str | Path,
    *,
    source: str | None = None,
    drop_zero_tokens: bool = False,
    spread_ticks_s: float | None = None,
    seed: int = 0,
) -> pl.LazyFrame:
    r"""Lazily read a Mooncake JSONL trace into the canonical schema.

    ``arrival_s`` = (``timestamp`` - first timestamp) / 1000; ``hash_ids`` become
    ``prefix_blocks``; ``request_id`` numbers rows in arrival order (ties keep file order).

    Args:
        path: the ``.jsonl`` file.
        source: value of a constant ``source`` column (``None``: no such column).
        drop_zero_tokens: drop rows with 0 prompt or output tokens, warning with counts.
        spread_ticks_s: if set, each request moves to ``floor(t / tick) * tick + U * tick``
            with ``U ~ Uniform[0, 1)`` drawn from ``np.random.default_rng(SeedSequence(seed))``
            in file order, undoing a coarse timestamp granularity (3 s in some upstream
            traces) while keeping each request inside its tick. Collects the file.
        seed: seed of that spreading (ignored without ``spread_ticks_s``).

    Returns:
        A LazyFrame sorted by ``(arrival_s, request_id)``.

    Raises:
        ValueError: ``spread_ticks_s`` is not a positive finite number.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.jsonl"
        >>> _ = path.write_text('{"timestamp": 0, "input_length": 600, "output_length": 5, '
        ...     '"hash_ids": [0, 1]}\n{"timestamp": 1500, "input_length": 10, '
        ...     '"output_length": 2, "hash_ids": [0]}\n')
        >>> scan_mooncake(path).collect().select("arrival_s", "prefix_blocks").rows()
        [(0.0, [0, 1]), (1.5, [0])]
    """
    return prepare_mooncake(
        path,
        source=source,
        drop_zero_tokens=drop_zero_tokens,
        spread_ticks_s=spread_ticks_s,
        seed=seed,
    ).trace
