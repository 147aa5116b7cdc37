"""Shared fixtures: the data mirror, a tiny trace."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The local mirror of public traces (ROUTEPLAY_DATA_DIR, default ../shared/data)."""
    path = Path(os.environ.get("ROUTEPLAY_DATA_DIR", REPO.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.fail(
            f"data mirror {path} not found; set ROUTEPLAY_DATA_DIR to the folder holding "
            "azure-public-dataset/, mooncake-fast25/, vidur_traces/, vidur_profiling/"
        )
    return path


@pytest.fixture()
def tiny_trace() -> pl.DataFrame:
    """Five requests in the canonical schema."""
    return pl.DataFrame(
        {
            "request_id": [0, 1, 2, 3, 4],
            "arrival_s": [0.0, 0.1, 0.25, 0.25, 1.0],
            "prompt_tokens": [100, 20, 300, 50, 10],
            "output_tokens": [10, 200, 5, 50, 1],
        },
        schema={"request_id": pl.UInt64, "arrival_s": pl.Float64,
                "prompt_tokens": pl.UInt32, "output_tokens": pl.UInt32},
    )
