"""A learned *scheduler* through the three entry points gives one table (issue 12, item 4).

The one-pipeline property (``test_one_pipeline.py``) for ``decision = "schedule"``: the
same small overloaded scenario (a task mix at 60 req/s on 2 x V100, 4 windows of 30
requests, 2 held out), BC trained for a few steps on ``late-binding-spf`` logs, through
``routeplay train --decision schedule`` + ``routeplay evaluate``, a report job whose
``[training]`` says ``decision = "schedule"``, and the Python pipeline: identical
comparison tables, bit for bit.
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

SEED = 6
CLI_WORKLOAD = ["--task-mix", "--n-episodes", "2", "--window-requests", "30", "--rate", "60",
                "--cluster", "v100x2", "--predictor", "histogram", "--seed", str(SEED)]  # fmt: skip
HEURISTICS = ("round-robin", "late-binding-spf")
JOB = f"""
name = "one-pipeline-scheduler"
seed = {SEED}

[trace]
source = "task-mix"

[trace.task_mix]
n_requests = 120
rate_per_s = 60.0

[episodes]
n_requests = 30
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
decision = "schedule"
algorithms = ["bc"]
n_steps = 12
batch_size = 8
"""


@pytest.fixture(scope="module")
def python_table(tmp_path_factory: pytest.TempPathFactory) -> pl.DataFrame:
    prepared = Scenario(
        trace="task-mix",
        task_mix={"n_requests": 120, "rate_per_s": 60.0},
        episode_requests=30,
        test_fraction=0.5,
        cluster="v100x2",
        predictor="histogram",
        seed=SEED,
    ).prepare()
    learning = LearningConfig(decision="schedule", algorithms=("bc",), n_steps=12, batch_size=8)
    trained = train_scenario(prepared, learning, tmp_path_factory.mktemp("python"))
    return evaluate_scenario(prepared, trained.routers, HEURISTICS, n_boot=100).to_frame()


def test_cli_gives_the_python_table(python_table: pl.DataFrame, tmp_path: Path) -> None:
    router = tmp_path / "router"
    train = ["train", *CLI_WORKLOAD, "--decision", "schedule", "--algorithm", "bc",
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
    assert python_table["router"].sort().to_list() == ["bc", "late-binding-spf", "round-robin"]
    summary = (result.run_dir / "summary.json").read_text(encoding="utf-8")
    assert "a scheduler: it picks which of 8 shortlisted" in summary
