"""One scenario, three entry points, one table (the one-pipeline acceptance test).

Two small scenarios run through

1. ``routeplay train`` then ``routeplay evaluate --output`` (the command line),
2. ``routeplay report`` on a job file (the report job's ``[training]``), and
3. the Python pipeline (``Scenario.prepare``, ``train_scenario``, ``evaluate_scenario``),

and the comparison tables (``EvaluationResult.to_frame()``: routers, latencies,
improvements, CIs, p-values, fallbacks) must be identical, bit for bit:

* ``router``: a task mix of 4 windows of 12 requests at 20 req/s (2 train, 2 held out),
  2 x V100, a histogram predictor, seed 5, BC trained for a few steps on round-robin logs;
* ``scheduler`` (issue 12, item 4): an overloaded task mix (60 req/s, 4 windows of 30
  requests), seed 6, a learned *scheduler* (``decision = "schedule"``) trained with BC on
  ``late-binding-spf`` logs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from routeplay.offline_rl import LearningConfig, evaluate_scenario, train_scenario
from routeplay.replay import Scenario
from routeplay.reports import load_job, run_job

from routeplay.cli import main


@dataclass(frozen=True)
class Case:
    """One scenario and how each entry point spells its training."""

    seed: int
    rate_per_s: float
    window_requests: int
    heuristics: tuple[str, ...]
    training_toml: str  # the [training] lines besides algorithms, n_steps, batch_size
    learning: dict[str, object]  # the same as LearningConfig keywords
    cli: tuple[str, ...]  # the same as `routeplay train` flags

    @property
    def n_requests(self) -> int:
        return 4 * self.window_requests

    def workload(self) -> list[str]:
        return ["--task-mix", "--n-episodes", "2", "--window-requests",
                str(self.window_requests), "--rate", str(self.rate_per_s), "--cluster",
                "v100x2", "--predictor", "histogram", "--seed", str(self.seed)]  # fmt: skip

    def job(self) -> str:
        return f"""
name = "one-pipeline"
seed = {self.seed}

[trace]
source = "task-mix"

[trace.task_mix]
n_requests = {self.n_requests}
rate_per_s = {self.rate_per_s}

[episodes]
n_requests = {self.window_requests}
test_fraction = 0.5

[cluster]
name = "v100x2"

[routers]
names = {list(self.heuristics)!r}
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
{self.training_toml}
algorithms = ["bc"]
n_steps = 12
batch_size = 8
"""


CASES = {
    "router": Case(
        seed=5,
        rate_per_s=20.0,
        window_requests=12,
        heuristics=("round-robin", "least-loaded"),
        training_toml='behaviours = ["round-robin"]',
        learning={"behaviours": ("round-robin",)},
        cli=("--behaviours", "round-robin"),
    ),
    "scheduler": Case(
        seed=6,
        rate_per_s=60.0,
        window_requests=30,
        heuristics=("round-robin", "late-binding-spf"),
        training_toml='decision = "schedule"',
        learning={"decision": "schedule"},
        cli=("--decision", "schedule"),
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case_and_table(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Case, pl.DataFrame]:
    case = CASES[request.param]
    prepared = Scenario(
        trace="task-mix",
        task_mix={"n_requests": case.n_requests, "rate_per_s": case.rate_per_s},
        episode_requests=case.window_requests,
        test_fraction=0.5,
        cluster="v100x2",
        predictor="histogram",
        seed=case.seed,
    ).prepare()
    learning = LearningConfig(algorithms=("bc",), n_steps=12, batch_size=8, **case.learning)  # type: ignore[arg-type]
    trained = train_scenario(prepared, learning, tmp_path_factory.mktemp("python"))
    return case, evaluate_scenario(
        prepared, trained.routers, case.heuristics, n_boot=100
    ).to_frame()


def test_cli_train_and_evaluate_give_the_python_table(
    case_and_table: tuple[Case, pl.DataFrame], tmp_path: Path
) -> None:
    case, python_table = case_and_table
    router = tmp_path / "router"
    train = ["train", *case.workload(), *case.cli, "--algorithm", "bc", "--n-steps", "12",
             "--batch-size", "8", "--quiet", "--out", str(router)]  # fmt: skip
    assert main(train) == 0
    table = tmp_path / "table.parquet"
    evaluate = ["evaluate", "--router", str(router), *case.workload(),
                "--heuristics", ",".join(case.heuristics), "--n-boot", "100", "--quiet",
                "--output", str(table)]  # fmt: skip
    assert main(evaluate) == 0
    assert_frame_equal(pl.read_parquet(table), python_table, check_exact=True)


def test_report_job_gives_the_python_table(
    case_and_table: tuple[Case, pl.DataFrame], tmp_path: Path
) -> None:
    case, python_table = case_and_table
    path = tmp_path / "job.toml"
    path.write_text(case.job(), encoding="utf-8")
    result = run_job(load_job(path), tmp_path / "runs", run_id="t")
    table = pl.read_parquet(result.run_dir / "tables" / "evaluation.parquet")
    assert_frame_equal(table, python_table, check_exact=True)
    assert python_table["router"].sort().to_list() == sorted(["bc", *case.heuristics])
    if case.learning.get("decision") == "schedule":
        summary = (result.run_dir / "summary.json").read_text(encoding="utf-8")
        assert "a scheduler: it picks which of 8 shortlisted" in summary
