"""Shared fixtures: the data mirror, the shipped test data, a tiny trace.

Two groups of tests:

* the default run (``pytest``) needs nothing beside the checkout: it uses the Azure 2023
  traces embedded in the package and the small excerpts in ``tests/data/``;
* the ``mirror`` group (``ROUTEPLAY_DATA_DIR=../shared/data pytest -m mirror``) checks
  reference figures of the full public files. Every test that asks for the
  :func:`data_dir` fixture is put in this group automatically, so a test cannot need the
  mirror and still run by default.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

REPO = Path(__file__).resolve().parents[1]
#: Small excerpts of public traces that ship with the tests (see tests/data/README.md).
TEST_DATA = REPO / "tests" / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the data mirror as ``mirror`` (deselected by default)."""
    for item in items:
        if "data_dir" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.mirror)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The local mirror of public traces, named by ``ROUTEPLAY_DATA_DIR``.

    Only tests of the ``mirror`` group use it (``pytest -m mirror``); it fails, never
    skips, when the mirror is not there.
    """
    value = os.environ.get("ROUTEPLAY_DATA_DIR")
    if not value:
        pytest.fail(
            "this test belongs to the mirror group and needs the full public traces: set "
            "ROUTEPLAY_DATA_DIR to the folder holding azure-public-dataset/, mooncake-fast25/, "
            "vidur_traces/, vidur_profiling/ (e.g. ROUTEPLAY_DATA_DIR=../shared/data "
            "pytest -m mirror)"
        )
    path = Path(value)
    if not path.is_dir():
        pytest.fail(f"ROUTEPLAY_DATA_DIR={value!r} is not a folder; expected the data mirror")
    return path


@pytest.fixture(scope="session")
def excerpts_dir() -> Path:
    """The small trace excerpts shipped in ``tests/data/`` (no mirror needed)."""
    return TEST_DATA


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
        schema={
            "request_id": pl.UInt64,
            "arrival_s": pl.Float64,
            "prompt_tokens": pl.UInt32,
            "output_tokens": pl.UInt32,
        },
    )
