from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from routeplay.reports import JobFileError, load_job, parse_job, replay_routers, run_job
from routeplay.reports._training import DEFAULT_BEHAVIOURS, JobTrainingConfig

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--virtual-time-budget=10000",
]
TRAINING = """
[training]
algorithms = ["cql", "bc"]
n_steps = 30
n_steps_per_epoch = 10
batch_size = 64
gamma = 0.9
target_update_interval = 10
reward_normalization = "standardize"
settings_note = "chosen on validation windows of the training side (test note)."
"""

BASE: dict[str, Any] = {
    "name": "demo",
    "trace": {"source": "azure-2023-conv"},
    "episodes": {"n_requests": 100, "test_fraction": 0.5},
    "cluster": {"name": "a100x4"},
    "routers": {"names": ["round-robin", "least-connections"], "baseline": "round-robin"},
}


def _job(training: dict[str, Any], **episodes: Any) -> dict[str, Any]:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in BASE.items()}
    data["episodes"].update(episodes)
    data["episodes"] = {k: v for k, v in data["episodes"].items() if v is not None}
    data["training"] = training
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            _job({"nsteps": 10}),
            "job: unknown key 'nsteps' in [training]. Did you mean 'n_steps'? Valid keys: "
            "['algorithms', 'batch_size', 'behaviours', 'decision', 'epsilon', 'fallback', "
            "'gamma', 'hidden_units', 'learning_rate', 'max_router_wait_s', 'n_candidates', "
            "'n_steps', 'n_steps_per_epoch', 'reward', 'reward_normalization', 'reward_scale', "
            "'seed', 'settings_note', 'sim_slack_s', 'target_update_interval'].",
        ),
        (
            _job({"decision": "order"}),
            "job: [training] decision = 'order'; expected one of ['route', 'schedule'].",
        ),
        (
            _job({"decision": "schedule", "behaviours": ["min-min"]}),
            "job: [training] behaviours = contains 'min-min', a router; decision = 'schedule' "
            "logs schedulers.",
        ),
        (_job({"n_steps": 0}), "job: [training] n_steps = 0; expected an integer >= 1."),
        (_job({"n_steps": "5"}), "job: [training] n_steps = '5'; expected an integer >= 1."),
        (
            _job({"algorithms": ["cql", "sac"]}),
            "job: [training] algorithms = contains 'sac'; expected names from "
            "['cql', 'bcq', 'bc', 'double-dqn'].",
        ),
        (
            _job({"algorithms": ["cql", "cql"]}),
            "job: [training] algorithms = ['cql', 'cql']; expected each algorithm once.",
        ),
        (
            _job({"behaviours": ["round-robn"]}),
            "job: [training] behaviours = contains unknown router 'round-robn'. Run "
            "`routeplay routers` for the list.",
        ),
        (
            _job({"reward": "paper"}),
            "job: [training] reward = 'paper'; expected one of ['paper-baseline', "
            "'paper-workload-aware', 'paper-workload-guided', 'queue-balance', 'latency-area'].",
        ),
        (
            _job({"epsilon": 1.5}),
            "job: [training] epsilon = 1.5; expected a probability in [0, 1].",
        ),
        (
            _job({"hidden_units": [128, "x"]}),
            "job: [training] hidden_units = [128, 'x']; expected a list of integers >= 1.",
        ),
        (
            _job({"hidden_units": [128, 0]}),
            "job: [training] hidden_units = [128, 0]; expected a non-empty list of integers >= 1.",
        ),
        (
            _job({"fallback": "least-load"}),
            "job: [training] fallback = 'least-load' is not a router name.",
        ),
        (
            _job({}, test_fraction=None),
            "job: [training] needs [episodes] test_fraction: routers are trained on logs of the "
            "earlier (training) episodes and replayed on the later (test) ones only.",
        ),
    ],
)
def test_training_section_errors_are_pinned(data: dict[str, Any], message: str) -> None:
    with pytest.raises(JobFileError, match=re.escape(message)):
        parse_job(data)


def test_training_section_defaults_and_values() -> None:
    job = parse_job(_job({}))
    assert job.training == JobTrainingConfig()
    assert job.training.behaviours == DEFAULT_BEHAVIOURS
    assert job.training.reward == "paper-workload-guided"
    assert job.training.epsilon == 0.1
    job = parse_job(_job({"algorithms": ["bcq", "double-dqn"], "max_router_wait_s": 3, "seed": 7}))
    assert job.training is not None
    assert job.training.algorithms == ("bcq", "double-dqn")
    assert isinstance(job.training.max_router_wait_s, float)
    assert job.training.max_router_wait_s == 3.0
    cfg = job.training.train_config("bcq", seed=7)
    assert (cfg.algorithm, cfg.seed, cfg.n_steps) == ("bcq", 7, job.training.n_steps)
    assert job.to_dict()["training"]["algorithms"] == ["bcq", "double-dqn"]
    assert parse_job(BASE).training is None


def test_default_job_trains_a_router() -> None:
    job = load_job("default")
    assert job.training is not None and job.episodes_test_fraction is not None
    assert set(job.training.algorithms).isdisjoint(job.routers)
    # the report states how the settings were chosen (validation windows, not test ones)
    assert "validation windows" in job.training_settings_note
    assert "benchmarks/rl_main_job.py" in job.training_settings_note


def test_replay_routers_counts_fallbacks_of_a_router_that_always_waits() -> None:
    from routeplay.offline_rl import BoundedWaitRouter
    from routeplay.replay import WAIT, ReplayConfig, make_cluster, make_router

    class AlwaysWait:
        name = "wait"
        oracle = False

        def reset(self, cluster: object, rng: object) -> None:
            pass

        def route(self, request: object, state: object) -> int:
            return int(WAIT)

    ep = pl.DataFrame(
        {
            "request_id": [0, 1, 2],
            "arrival_s": [0.0, 0.1, 0.2],
            "prompt_tokens": [50, 60, 70],
            "output_tokens": [5, 6, 7],
        }
    )
    routers = {
        "rr": make_router("round-robin"),
        "wait": BoundedWaitRouter(AlwaysWait(), max_router_wait_s=0.5, name="wait"),
    }
    out = replay_routers(
        [ep, ep], make_cluster("a100x4"), routers, config=ReplayConfig(max_sim_time_s=60.0)
    )
    fb = dict(out.summaries.group_by("router").agg(pl.col("n_fallback_routes").sum()).iter_rows())
    assert fb == {"rr": 0, "wait": 6}  # null sums to 0 for rr; every request fell back
    assert out.summaries.filter(pl.col("router") == "rr")["n_fallback_routes"].null_count() == 2
    waits = out.requests.filter(pl.col("router") == "wait")["router_wait_s"]
    assert float(waits.min()) >= 0.5


def _chromium(chromium: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    profile = tmp / "chromium-profile"
    profile.mkdir(exist_ok=True)
    return subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )


@pytest.fixture(scope="module")
def train_run(tiny_job_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = (
        tiny_job_file.read_text()
        .replace('name = "tiny"', 'name = "tinytrain"')
        .replace('images = ["svg"]', "images = []")
    )
    path = tmp_path_factory.mktemp("jobs") / "tinytrain.toml"
    path.write_text(text + TRAINING)
    result = run_job(load_job(path), tmp_path_factory.mktemp("runs"), run_id="t")
    run_dir: Path = result.run_dir
    return run_dir


def test_learned_routers_are_compared_beside_the_heuristics(train_run: Path) -> None:
    summary = json.loads((train_run / "summary.json").read_text())
    heuristics = ["round-robin", "least-connections", "jsq-tokens"]
    assert summary["metadata"]["routers"] == [*heuristics, "cql", "bc"]
    rows = {r["router"]: r for r in summary["tables"]["router_summary"]["rows"]}
    assert list(rows) == [*heuristics, "cql", "bc"]
    assert all(rows[h]["n_fallback_routes"] is None for h in heuristics)
    compared = {r["router"] for r in summary["tables"]["comparison"]["rows"]}
    assert compared == {"least-connections", "jsq-tokens", "cql", "bc"}
    training = summary["numbers"]["training"]
    per_episode = pl.read_parquet(train_run / "tables" / "episode_summaries.parquet")
    for label in ("cql", "bc"):
        fb = training["fallbacks"][label]
        mine = per_episode.filter(pl.col("router") == label)
        assert fb["n_fallback_routes"] == rows[label]["n_fallback_routes"]
        assert fb["n_fallback_routes"] == int(mine["n_fallback_routes"].sum())
        assert fb["n_requests"] == int(mine["n_requests"].sum())
    assert "trained offline" in summary["metadata"]["training"]
    assert any(n.startswith("Learned router cql: ") for n in summary["notes"])
    assert set(training["wall_time_s"]) >= {"log_transitions", "build_dataset", "train_cql"}
    assert training["config"]["n_steps"] == 30
    assert training["train_configs"]["cql"]["batch_size"] == 64


def test_learned_routers_are_evaluated_on_test_episodes_only(train_run: Path) -> None:
    from routeplay.datasets import load_trace, scale_arrival_rate, split_episodes, split_train_test

    trace = scale_arrival_rate(load_trace("azure-2023-conv").head(600), 2.0)
    train, test = split_train_test(split_episodes(trace, n_requests=150), test_fraction=0.5)
    summary = json.loads((train_run / "summary.json").read_text())
    training = summary["numbers"]["training"]
    assert training["train_episode_ids"] == [e.index for e in train]
    assert training["test_episode_ids"] == [e.index for e in test]
    assert max(training["train_episode_ids"]) < min(training["test_episode_ids"])
    requests = pl.read_parquet(train_run / "tables" / "requests.parquet")
    for label in ("cql", "bc"):
        mine = requests.filter(pl.col("router") == label)
        assert sorted(mine["episode"].unique().to_list()) == [e.index for e in test]
    replayed = set(requests.filter(pl.col("router") == "cql")["request_id"].to_list())
    assert replayed == {int(r) for e in test for r in e.trace["request_id"]}
    logged: set[int] = set()
    n_rows = 0
    for log in sorted((train_run / "training" / "transitions").glob("*.parquet")):
        frame = pl.read_parquet(log)
        logged |= set(frame["request_id"].to_list())
        n_rows += frame.height
    assert logged == {int(r) for e in train for r in e.trace["request_id"]}
    assert logged.isdisjoint(replayed)  # the training windows are never evaluated
    assert training["dataset"]["n_transitions"] == n_rows
    assert sum(r["n_transitions"] for r in training["behaviour_logs"]) == n_rows
    assert [r[0] for r in training["dataset"]["behaviour_rows"]] == sorted(
        f"{b}+eps0.1" for b in DEFAULT_BEHAVIOURS
    )


def test_the_report_says_how_the_learned_routers_were_trained(train_run: Path) -> None:
    import html

    summary = json.loads((train_run / "summary.json").read_text())
    training = summary["numbers"]["training"]
    cql, bc = training["descriptions"]["cql"], training["descriptions"]["bc"]
    transform = training["reward_transforms"]["cql"]
    assert transform["normalization"] == "standardize"
    assert cql.startswith(
        "cql: d3rlpy DiscreteCQL trained offline for 30 gradient steps (batch 64, learning "
        "rate 0.0003, "
        "MLP 128x128, seed 3); discount gamma 0.9; target network synced every 10 steps; "
        "reward paper-workload-guided, standardized ((r - "
        f"{transform['raw_mean']:.4g}) / {transform['raw_std']:.4g} with the mean and std "
        "of the training logs); trained on "
        f"{training['dataset']['n_transitions']} transitions logged by "
        f"{', '.join(DEFAULT_BEHAVIOURS)} with epsilon 0.1 "
    )
    assert cql.endswith(f"on training episodes {training['train_episode_ids']}.")
    assert bc.startswith("bc: d3rlpy DiscreteBC trained offline for 30 gradient steps (batch 64, ")
    assert (
        "; imitation of the logged actions: the reward (paper-workload-guided, standardized "
        f"((r - {transform['raw_mean']:.4g}) / {transform['raw_std']:.4g} with the mean and std "
        "of the training logs)), discount gamma 0.9 and target sync every 10 steps are set but "
        "unused by BC; trained on "
    ) in bc
    assert training["reward_transforms"]["bc"] == transform  # same logs, same statistics
    assert training["settings_note"] == (
        "chosen on validation windows of the training side (test note)."
    )
    text = summary["metadata"]["training"]
    assert text == (
        f"{cql} {bc} Evaluated on test episodes {training['test_episode_ids']} only (never "
        "logged or trained on). Settings: chosen on validation windows of the training side "
        "(test note)."
    )
    assert summary["notes"][0] == f"How the learned routers were trained: {text}"
    page = (train_run / "report.html").read_text()
    assert f"<li>{html.escape(summary['notes'][0])}</li>" in page  # visible, not folded
    job = json.loads((train_run / "job.json").read_text())
    assert job["training_settings_note"] == training["settings_note"]
    assert job["training"]["reward_normalization"] == "standardize"


def test_training_artifacts_live_inside_the_run_folder(train_run: Path) -> None:
    summary = json.loads((train_run / "summary.json").read_text())
    training = summary["numbers"]["training"]
    assert training["run_dir"] == "training"
    for label in ("cql", "bc"):
        router = train_run / training["router_dirs"][label]
        assert router == train_run / "training" / label / "router"
        meta = json.loads((router / "router.json").read_text())
        assert meta["n_actions"] == 5 and meta["config"]["n_steps"] == 30
        assert (router / "policy.pt").is_file()
        assert (train_run / "training" / label / "d3rlpy" / "loss.csv").is_file()
    assert not list(train_run.parent.glob(".tmp-*"))


def test_learning_curve_chart_is_in_the_report(
    train_run: Path, chromium: str, tmp_path: Path
) -> None:
    summary = json.loads((train_run / "summary.json").read_text())
    assert "learning-curve" in summary["charts"]
    curve = pl.read_parquet(train_run / summary["charts"]["learning-curve"]["data"])
    assert set(curve["run"].unique().to_list()) == {"cql", "bc"}
    cql = curve.filter((pl.col("run") == "cql") & (pl.col("metric") == "loss"))
    assert cql["step"].to_list() == [10, 20, 30]
    final = summary["numbers"]["training"]["final_losses"]["cql"]["loss"]
    assert final == pytest.approx(float(cql["value"][-1]), rel=0, abs=0)
    html_path = train_run / "report.html"
    dom = _chromium(chromium, tmp_path, "--dump-dom", html_path.as_uri()).stdout
    charts = dict(re.findall(r'<div class="chart[^"]*" id="chart-([^"]+)"(.*?)</div>', dom, re.S))
    assert sorted(charts) == sorted(summary["charts"])
    assert "<svg" in charts["learning-curve"] or "<canvas" in charts["learning-curve"]
    errors = re.search(r'<pre id="routeplay-errors">(.*?)</pre>', dom, re.S)
    assert errors is not None and errors.group(1) == ""
    assert 'data-table="training_dataset"' in dom and "n_fallback_routes" in dom
