"""Learned schedulers: serving, saving, the pipeline and the CLI (issue 12, item 4)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from polars.testing import assert_frame_equal
from routeplay.datasets import TaskMixConfig, generate_task_mix
from routeplay.offline_rl import (
    LearningConfig,
    PolicyScheduler,
    evaluate_scenario,
    learned_routers,
    load_router,
    train_scenario,
)
from routeplay.replay import (
    RequestView,
    Scenario,
    SchedulerLayout,
    make_cluster,
    make_cluster_state,
    make_router,
    make_uniform_cluster,
    run_replay,
)
from torch_fakes import ConstantAction


def test_slot_zero_policy_is_late_binding_spf_exactly() -> None:
    trace = generate_task_mix(TaskMixConfig(n_requests=300, rate_per_s=60.0, seed=4))
    cluster = make_cluster("v100x2")
    layout = SchedulerLayout(n_instances=2)
    learned = PolicyScheduler(ConstantAction(0), layout=layout, name="slot0")
    a = run_replay(trace, cluster, learned).requests
    b = run_replay(trace, cluster, make_router("late-binding-spf")).requests
    assert_frame_equal(a, b)
    # another slot is another order: the policy really decides
    other = PolicyScheduler(ConstantAction(7), layout=SchedulerLayout(n_instances=2), name="slot7")
    c = run_replay(trace, cluster, other).requests
    assert not c["finish_s"].equals(a["finish_s"])


def test_policy_scheduler_holds_without_a_free_instance_and_checks_its_input() -> None:
    s = PolicyScheduler(ConstantAction(0), layout=SchedulerLayout(n_instances=2, n_candidates=2))
    queue = (RequestView(0, 0.0, 10),)
    with pytest.raises(RuntimeError, match="reset"):
        s.schedule(queue, make_cluster_state(2))
    s.reset(make_uniform_cluster(2), np.random.default_rng(0))
    busy = make_cluster_state(n_running=[1, 1], max_running_seqs=[1, 1])
    assert s.schedule(queue, busy) == (0, -1)
    with pytest.raises(ValueError, match="empty queue"):
        s.schedule((), busy)
    bad = PolicyScheduler(ConstantAction(5), layout=SchedulerLayout(n_instances=2, n_candidates=2))
    bad.reset(make_uniform_cluster(2), np.random.default_rng(0))
    with pytest.raises(ValueError, match="slot 5"):
        bad.schedule(queue, make_cluster_state(2))
    with pytest.raises(ValueError, match="instances"):
        s.reset(make_uniform_cluster(3), np.random.default_rng(0))


def test_learning_config_checks_the_decision_and_its_behaviours() -> None:
    assert LearningConfig(decision="schedule").behaviours == ("late-binding-spf",)
    assert LearningConfig().behaviours == ("min-total-latency",)
    with pytest.raises(ValueError, match="'min-min', a router"):
        LearningConfig(decision="schedule", behaviours=("min-min",))
    with pytest.raises(ValueError, match="'late-binding-spf', a scheduler"):
        LearningConfig(behaviours=("late-binding-spf",))
    with pytest.raises(ValueError, match="decision = 'order'"):
        LearningConfig(decision="order")
    with pytest.raises(ValueError, match="n_candidates = 1"):
        LearningConfig(decision="schedule", n_candidates=1)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    prepared = Scenario(
        trace="task-mix",
        task_mix={"n_requests": 480, "rate_per_s": 60.0},
        cluster="v100x2",
        episode_requests=120,
        test_fraction=0.5,
        predictor="histogram",
        timeline_sample_interval_s=None,
        seed=5,
    ).prepare()
    learning = LearningConfig(
        decision="schedule", algorithms=("bc", "cql"), n_steps=30, batch_size=32, seed=1
    )
    res = train_scenario(prepared, learning, tmp_path_factory.mktemp("sched"))
    return prepared, res


def test_train_scenario_saves_and_loads_schedulers(trained: tuple[object, object]) -> None:
    prepared, res = trained
    assert sorted(res.routers) == ["bc", "cql"]  # type: ignore[attr-defined]
    assert isinstance(res.layout, SchedulerLayout)  # type: ignore[attr-defined]
    assert "a scheduler" in res.describe("bc")  # type: ignore[attr-defined]
    assert "reward queue-time" in res.describe("cql")  # type: ignore[attr-defined]
    folder = res.router_dirs["bc"]  # type: ignore[attr-defined]
    meta = json.loads((Path(folder) / "router.json").read_text())
    assert meta["kind"] == "scheduler" and meta["n_actions"] == 8
    loaded = load_router(folder)
    assert isinstance(loaded, PolicyScheduler)
    # the TorchScript file and the in-memory learnable schedule alike
    ep = prepared.test[0]  # type: ignore[attr-defined]
    cluster = prepared.cluster  # type: ignore[attr-defined]
    a = run_replay(ep.trace, cluster, loaded, predictor=prepared.predictor).requests  # type: ignore[attr-defined]
    b = run_replay(ep.trace, cluster, res.routers["bc"], predictor=prepared.predictor).requests  # type: ignore[attr-defined]
    assert_frame_equal(a, b)


def test_evaluate_scenario_replays_learned_schedulers_unwrapped(
    trained: tuple[object, object],
) -> None:
    prepared, res = trained
    routers = learned_routers([res.router_dirs["bc"]])  # type: ignore[attr-defined]
    ev = evaluate_scenario(prepared, routers, ["round-robin", "late-binding-spf"], n_boot=100)  # type: ignore[arg-type]
    table = ev.to_frame()
    assert sorted(table["router"].to_list()) == ["bc", "late-binding-spf", "round-robin"]
    bc = table.filter(table["router"] == "bc")
    assert bc["n_fallback_routes"].to_list() == [0]
    assert bc["n_episodes"].to_list() == [len(prepared.test)]  # type: ignore[attr-defined]


def test_scheduler_layout_version_is_checked_on_load(
    trained: tuple[object, object], tmp_path: Path
) -> None:
    _, res = trained
    folder = Path(res.router_dirs["cql"])  # type: ignore[attr-defined]
    meta = json.loads((folder / "router.json").read_text())
    meta["layout_version"] = "s0"
    copy = tmp_path / "r"
    copy.mkdir()
    for f in folder.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    (copy / "router.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="layout version 's0'"):
        load_router(copy)


SCHED_WORKLOAD = ["--task-mix", "--n-episodes", "2", "--window-requests", "40", "--rate", "60",
                  "--cluster", "v100x2"]  # fmt: skip


def test_cli_trains_and_evaluates_a_scheduler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from routeplay.cli import main

    out = tmp_path / "sched"
    code = main(
        ["train", *SCHED_WORKLOAD, "--decision", "schedule", "--n-candidates", "4",
         "--algorithm", "bc", "--n-steps", "10", "--batch-size", "8", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert "router saved to" in capsys.readouterr().out
    import polars as pl

    logs = sorted((out / "logs").glob("*.parquet"))
    assert [p.name for p in logs] == ["late-binding-spf.parquet"]
    assert pl.read_parquet_metadata(logs[0])["routeplay.n_actions"] == "4"
    meta = json.loads((out / "router.json").read_text())
    assert meta["kind"] == "scheduler" and meta["layout"]["n_candidates"] == 4
    # retraining from its logs finds the scheduler layout in their metadata
    again = tmp_path / "again"
    files = [str(p) for p in sorted((out / "logs").glob("*.parquet"))]
    assert main(
        ["train", "--transitions", *files, "--algorithm", "bc", "--n-steps", "5",
         "--batch-size", "8", "--out", str(again)]
    ) == 0  # fmt: skip
    assert json.loads((again / "router.json").read_text())["layout"] == meta["layout"]
    capsys.readouterr()
    table = tmp_path / "eval.parquet"
    code = main(
        ["evaluate", "--router", str(out), *SCHED_WORKLOAD,
         "--heuristics", "round-robin,late-binding-spf", "--n-boot", "100", "--output", str(table)]
    )  # fmt: skip
    assert code == 0
    frame = pl.read_parquet(table)
    assert sorted(frame["router"].to_list()) == ["bc", "late-binding-spf", "round-robin"]


def test_cli_refuses_a_router_behaviour_for_a_scheduler(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from routeplay.cli import main

    code = main(
        ["train", *SCHED_WORKLOAD, "--decision", "schedule", "--behaviours", "min-min",
         "--algorithm", "bc", "--n-steps", "5", "--out", str(tmp_path / "x")]
    )  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "'min-min', a router" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()
