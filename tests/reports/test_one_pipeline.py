"""One scenario, three entry points, one table (the one-pipeline acceptance test).

The same small scenario — a task mix of 4 windows of 12 requests (2 train, 2 held out),
2 x V100, a histogram predictor, seed 5, BC trained for a few steps on round-robin
logs — runs through

1. ``routeplay train`` then ``routeplay evaluate --output`` (the command line),
2. ``routeplay report`` on a job file (the report job's ``[training]``), and
3. the Python pipeline (``Scenario.prepare``, ``train_scenario``, ``evaluate_scenario``),

and the comparison tables (``EvaluationResult.to_frame()``: routers, latencies,
improvements, CIs, p-values, fallbacks) must be identical, bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from routeplay.offline_rl import LearningConfig, evaluate_scenario, train_scenario
from routeplay.replay import Scenario
from routeplay.reports import load_job, run_job

from routeplay.cli import main

SEED = 5
CLI_WORKLOAD = ["--task-mix", "--n-episodes", "2", "--window-requests", "12", "--rate", "20",
                "--cluster", "v100x2", "--predictor", "histogram", "--seed", str(SEED)]  # fmt: skip
HEURISTICS = ("round-robin", "least-loaded")
JOB = f"""
name = "one-pipeline"
seed = {SEED}

[trace]
source = "task-mix"

[trace.task_mix]
n_requests = 48
rate_per_s = 20.0

[episodes]
n_requests = 12
test_fraction = 0.5

[cluster]
name = "v100x2"

[routers]
names = {list(HEURISTICS)!r}
baseline = "round-robin"

[statistics]
metrics = ["e2e_s"]
statistics = ["mean", "p99"]
n_boot = 100

[predictor]
kind = "histogram"

[report]
images = []

[training]
behaviours = ["round-robin"]
algorithms = ["bc"]
n_steps = 12
batch_size = 8
"""


@pytest.fixture(scope="module")
def python_table(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    scenario = Scenario(
        trace="task-mix",
        task_mix={"n_requests": 48, "rate_per_s": 20.0},
        episode_requests=12,
        test_fraction=0.5,
        cluster="v100x2",
        predictor="histogram",
        seed=SEED,
    )
    prepared = scenario.prepare()
    learning = LearningConfig(
        behaviours=("round-robin",), algorithms=("bc",), n_steps=12, batch_size=8
    )
    trained = train_scenario(prepared, learning, tmp_path_factory.mktemp("python"))
    result = evaluate_scenario(prepared, trained.routers, HEURISTICS, n_boot=100)
    return result.to_frame()


def test_cli_train_and_evaluate_give_the_python_table(
    python_table: pl.DataFrame, tmp_path: Path
) -> None:
    router = tmp_path / "router"
    train = ["train", *CLI_WORKLOAD, "--behaviours", "round-robin", "--algorithm", "bc",
             "--n-steps", "12", "--batch-size", "8", "--quiet", "--out", str(router)]  # fmt: skip
    assert main(train) == 0
    table = tmp_path / "table.parquet"
    evaluate = ["evaluate", "--router", str(router), *CLI_WORKLOAD,
                "--heuristics", ",".join(HEURISTICS), "--n-boot", "100", "--quiet",
                "--output", str(table)]  # fmt: skip
    assert main(evaluate) == 0
    assert_frame_equal(pl.read_parquet(table), python_table, check_exact=True)


def test_report_job_gives_the_python_table(python_table: pl.DataFrame, tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(JOB, encoding="utf-8")
    result = run_job(load_job(path), tmp_path / "runs", run_id="t")
    table = pl.read_parquet(result.run_dir / "tables" / "evaluation.parquet")
    assert_frame_equal(table, python_table, check_exact=True)
    assert python_table["router"].sort().to_list() == ["bc", "least-loaded", "round-robin"]
