"""The chunked CSV source (bounded-memory scans of big Azure files)."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from routeplay.datasets import scan_trace
from routeplay.datasets._loadutil import scan_csv_chunked

COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]


def _write(path: Path, n: int, *, eol: str = "\n", final_eol: bool = True) -> None:
    rng = np.random.default_rng(np.random.SeedSequence(11))
    us = np.sort(rng.integers(0, 10**9, n))
    rows = [
        f"2024-05-12 00:{u // 60_000_000 % 60:02d}:{u // 1_000_000 % 60:02d}.{u % 10**6:06d}"
        f"+00:00,{c},{'' if k == 5 else g}"
        for k, (u, c, g) in enumerate(
            zip(us, rng.integers(1, 5000, n), rng.integers(1, 900, n), strict=True)
        )
    ]
    text = eol.join([",".join(COLUMNS), *rows]) + (eol if final_eol else "")
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text, newline="")


@pytest.mark.parametrize(
    ("name", "eol", "final_eol"),
    [("t.csv", "\n", True), ("t.csv", "\r\n", False), ("t.csv.gz", "\n", False)],
)
@pytest.mark.parametrize("chunk_bytes", [7, 300, 1 << 20])
def test_chunked_scan_equals_polars_scan(
    tmp_path: Path, name: str, eol: str, final_eol: bool, chunk_bytes: int
) -> None:
    path = tmp_path / name
    _write(path, 500, eol=eol, final_eol=final_eol)
    expected = pl.read_csv(path, infer_schema=False)
    got = scan_csv_chunked(path, COLUMNS, chunk_bytes=chunk_bytes).collect()
    assert_frame_equal(got, expected)
    assert got["GeneratedTokens"][5] is None  # empty cell -> null, as pl.scan_csv
    # projection, predicate and head are honoured (by the source or by Polars)
    lazy = scan_csv_chunked(path, COLUMNS, chunk_bytes=chunk_bytes)
    small = lazy.filter(pl.col("ContextTokens").cast(pl.Int64) < 100).select("ContextTokens")
    assert_frame_equal(
        small.collect(engine="streaming"),
        expected.filter(pl.col("ContextTokens").cast(pl.Int64) < 100).select("ContextTokens"),
    )
    assert lazy.head(17).collect().height == 17


def test_chunked_scan_rejects_unknown_column(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    _write(path, 3)
    with pytest.raises(ValueError, match=re.escape("columns ['Nope'] are not in the header")):
        scan_csv_chunked(path, ["Nope"])


def test_azure_scan_through_chunks_matches_in_memory_parse(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "t.csv"
    _write(path, 400)
    path.write_text(path.read_text().replace(",\n", ",3\n", 1))  # no empty cell here
    whole = scan_trace(path).collect()
    # every loader call now parses 97-byte chunks: rows cross chunk boundaries
    monkeypatch.setattr(scan_csv_chunked, "__kwdefaults__", {"chunk_bytes": 97})
    chunked = scan_trace(path).collect()
    assert_frame_equal(chunked, whole)
    ts = pl.read_csv(path)["TIMESTAMP"].str.to_datetime("%Y-%m-%d %H:%M:%S%.f%:z")
    us = (ts.dt.epoch("us") - ts.dt.epoch("us").min()).to_numpy()
    np.testing.assert_array_equal(np.round(whole["arrival_s"].to_numpy() * 1e6), us)
