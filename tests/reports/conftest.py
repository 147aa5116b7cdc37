from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TINY_JOB = """
name = "tiny"
title = "tiny test job"
seed = 3

[trace]
source = "azure-2023-conv"
first_requests = 600
rate_scale = 2.0

[episodes]
n_requests = 150
test_fraction = 0.5

[cluster]
name = "a100x4"

[routers]
names = ["round-robin", "least-connections", "jsq-tokens"]
baseline = "round-robin"

[statistics]
metrics = ["e2e_s", "ttft_s"]
statistics = ["mean", "p99"]
n_boot = 200

[predictor]
kind = "histogram"

[report]
images = ["svg"]
"""


@pytest.fixture(scope="session")
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path is not None, "Debian chromium is required (apt-get install chromium)"
    return path


@pytest.fixture(scope="session")
def tiny_job_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jobs") / "tiny.toml"
    path.write_text(TINY_JOB)
    return path


@pytest.fixture(scope="session")
def tiny_run(tiny_job_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from routeplay.reports import load_job, run_job

    out = tmp_path_factory.mktemp("runs")
    result = run_job(load_job(tiny_job_file), out, run_id="fixture")
    assert os.path.isdir(result.run_dir)
    return result.run_dir
