"""Imitation of lookahead-oracle (labels, DiscreteBC, DAgger) on tiny data, CPU."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
import pytest
import torch
from d3rlpy.logging import NoopAdapterFactory
from routeplay.datasets import TaskMixConfig, generate_task_mix
from routeplay.offline_rl import (
    ImitationConfig,
    LookaheadLabels,
    PolicyRouter,
    imitate_lookahead,
    label_states,
    load_router,
)
from routeplay.replay import RoutingEnv, make_cluster, make_router, run_replay
from routeplay.replay._types import OracleRequestView, RequestView
from routeplay.replay.rl._transitions import default_layout

from routeplay.cli import main

CLUSTER = make_cluster("v100x2")


def _trace(seed: int, n: int = 24) -> pl.DataFrame:
    return generate_task_mix(TaskMixConfig(n_requests=n, rate_per_s=20.0, seed=seed))


def _config(**kw: Any) -> ImitationConfig:
    base: dict[str, Any] = {"label_decisions": 12, "dagger_rounds": 1, "n_steps": 10,
                            "batch_size": 8, "seed": 3}  # fmt: skip
    return ImitationConfig(**{**base, **kw})


def test_labels_are_what_lookahead_oracle_chooses() -> None:
    """Every label equals the registered lookahead's answer in the same state (RoutingEnv)."""
    trace = _trace(1)
    labels, _ = label_states([trace], CLUSTER, make_router("min-min"), n_labels=trace.height)
    assert labels.n_labels == trace.height  # min-min never WAITs: one decision per request
    env = RoutingEnv(trace, CLUSTER, expert=make_router("lookahead-oracle"))
    obs, info = env.reset(seed=0)
    for i in range(labels.n_labels):
        assert info["expert_action"] == labels.actions[i]
        np.testing.assert_array_equal(obs, labels.observations[i])
        obs, _, terminated, _, info = env.step(int(labels.behaviour_actions[i]))
    assert terminated
    # the label is the cheapest rollout, and the behaviour's actions are min-min's
    assert (np.nanargmin(labels.costs_s, axis=1) == labels.actions).all()
    replayed = run_replay(trace, CLUSTER, make_router("min-min")).requests
    assert replayed.sort("request_id")["instance_id"].to_list() == [
        int(a) for a in labels.behaviour_actions[np.argsort(labels.request_id)]
    ]
    assert len(set(labels.actions.tolist())) > 1 and labels.teacher_wall_time_s > 0


def test_label_every_and_driver_checks() -> None:
    trace = _trace(2)
    labels, nxt = label_states(
        [trace, _trace(3)], CLUSTER, make_router("round-robin"), n_labels=5, label_every=3
    )
    assert labels.n_labels == 5 and nxt == 1
    assert np.all(np.diff(labels.time_s) >= 0)
    with pytest.raises(ValueError, match="oracle or needs the simulator"):
        label_states([trace], CLUSTER, make_router("min-min-oracle"), n_labels=2)
    with pytest.raises(ValueError, match="behaviour = 'lookahead-oracle' is an oracle"):
        ImitationConfig(behaviour="lookahead-oracle")
    with pytest.raises(ValueError, match="ImitationConfig.label_every = 0"):
        ImitationConfig(label_every=0)


@pytest.fixture(scope="module")
def round_robin_labels() -> tuple[LookaheadLabels, Any, npt.NDArray[np.float64]]:
    """20 labels of round robin's states on trace 7, the layout, costs (NaN -> inf)."""
    labels, _ = label_states([_trace(7)], CLUSTER, make_router("round-robin"), n_labels=20)
    costs = np.where(np.isnan(labels.costs_s), np.inf, labels.costs_s)
    return labels, default_layout(CLUSTER), costs


def test_targets_break_ties_toward_min_min(
    round_robin_labels: tuple[LookaheadLabels, Any, npt.NDArray[np.float64]],
) -> None:
    """Targets always have the teacher's least cost; ties go to min-min's pick among them."""
    labels, layout, costs = round_robin_labels
    eta = labels.observations[:, layout.block_slice("minmin_eta")]
    # the observation's minmin_eta block is min-min's own score
    state_free = np.argmin(eta, axis=1)
    for tie_break in ("teacher", "min-min"):
        t = labels.targets(layout, tie_break=tie_break)  # type: ignore[arg-type]
        assert np.allclose(costs[np.arange(t.size), t], costs.min(axis=1), atol=1e-6)
    t = labels.targets(layout)
    tied = costs <= costs.min(axis=1, keepdims=True) + 1e-6
    mm_tied = tied[np.arange(t.size), state_free]
    assert (t[mm_tied] == state_free[mm_tied]).all()
    np.testing.assert_array_equal(labels.targets(layout, tie_break="teacher"), labels.actions)


def test_residual_targets_keep_min_total_latency_unless_the_lookahead_is_clearly_better(
    round_robin_labels: tuple[LookaheadLabels, Any, npt.NDArray[np.float64]],
) -> None:
    """tie_break="min-total-latency": within the tolerance, its pick; beyond it, the teacher's."""
    labels, layout, costs = round_robin_labels
    gap = labels.observations[:, layout.block_slice("total_latency_gap")]
    mtl = np.argmin(gap, axis=1)
    assert (gap[np.arange(mtl.size), mtl] == 0.0).all()  # layout 3: 0 on its pick
    best = costs.min(axis=1)
    for tolerance in (1e-6, 0.5, 1e9):
        t = labels.targets(layout, tie_break="min-total-latency", tolerance_s=tolerance)
        # every target is within the tolerance of the teacher's least cost ...
        assert (costs[np.arange(t.size), t] <= best + tolerance).all()
        # ... and is min-total-latency's pick whenever that pick is
        keep = costs[np.arange(t.size), mtl] <= best + tolerance
        assert (t[keep] == mtl[keep]).all()
    # an unbounded tolerance is min-total-latency itself
    huge = labels.targets(layout, tie_break="min-total-latency", tolerance_s=1e9)
    np.testing.assert_array_equal(huge, mtl)
    with pytest.raises(ValueError, match="tie_break = 'nope'; expected one of"):
        labels.targets(layout, tie_break="nope")  # type: ignore[arg-type]


def _weights(result: Any) -> list[torch.Tensor]:
    return [p.detach().clone() for p in result.train.algo.impl.modules.imitator.parameters()]


def test_seeded_runs_are_identical_and_student_sees_no_true_lengths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[type] = []
    original = PolicyRouter.route

    def spy(self: PolicyRouter, request: RequestView, state: Any) -> int:
        seen.append(type(request))
        return original(self, request, state)

    monkeypatch.setattr(PolicyRouter, "route", spy)
    episodes = [_trace(4), _trace(5)]
    runs = [
        imitate_lookahead(
            _config(), episodes, CLUSTER, run_dir=tmp_path / name,
            logger_adapter=NoopAdapterFactory(), validation_episodes=[_trace(6, 12)],
        )
        for name in ("a", "b")
    ]  # fmt: skip
    a, b = runs
    assert a.labels.to_frame().equals(b.labels.to_frame())
    for x, y in zip(_weights(a), _weights(b), strict=True):
        assert torch.equal(x, y)
    assert a.rounds["round"].to_list() == [0, 1]
    # the kept round is the one with the least validation mean E2E
    vals = a.rounds["validation_e2e_s"].to_list()
    assert a.selected_round == int(np.argmin(vals))
    assert a.rounds["selected"].to_list() == [r == a.selected_round for r in (0, 1)]
    assert a.rounds["behaviour_validation_e2e_s"].is_not_nan().all()
    assert a.rounds["driver"].to_list() == ["min-min", "student-round-0"]
    assert a.labels.n_labels == 24 and set(a.labels.round.tolist()) == {0, 1}
    # the student drove DAgger round 1 with plain views only
    assert seen and all(t is RequestView for t in seen)
    assert not any(issubclass(t, OracleRequestView) for t in seen)
    # served: plain views too, and not an oracle router
    seen.clear()
    router = a.router()
    assert router.oracle is False
    run_replay(episodes[0], CLUSTER, router)
    assert seen and all(t is RequestView for t in seen)
    info = json.loads((tmp_path / "a" / "imitation.json").read_text())
    assert info["teacher"]["oracle"] is True and len(info["rounds"]) == 2
    # another seed: other weights
    c = imitate_lookahead(
        _config(seed=4, dagger_rounds=0), episodes, CLUSTER, run_dir=tmp_path / "c",
        logger_adapter=NoopAdapterFactory(),
    )  # fmt: skip
    assert not all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(c), strict=True))


WORKLOAD = ["--task-mix", "--n-episodes", "2", "--window-requests", "10", "--cluster", "v100x2"]
LOOKAHEAD = ["--from-lookahead", "--label-decisions", "8", "--dagger-rounds", "1",
             "--n-steps", "10", "--batch-size", "8"]  # fmt: skip


def test_cli_from_lookahead_writes_a_loadable_router(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "router"
    val = ["--validation-episodes", "1"]
    assert main(["train", *WORKLOAD, *LOOKAHEAD, *val, "--quiet", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "trained a lookahead imitator (16 labels, 1 DAgger rounds, kept round " in printed
    kept = json.loads((out / "run" / "imitation.json").read_text())["selected_round"]
    assert f"kept round {kept}," in printed
    meta = json.loads((out / "router.json").read_text())
    assert meta["algorithm"] == "bc" and meta["n_actions"] == 3
    router = load_router(out)
    assert isinstance(router, PolicyRouter) and router.oracle is False
    assert sorted(p.name for p in (out / "run").glob("labels-round-*.parquet")) == [
        "labels-round-0.parquet",
        "labels-round-1.parquet",
    ]
    # same settings again: nothing to do; --resume of a finished run keeps it
    assert main(["train", *WORKLOAD, *LOOKAHEAD, *val, "--quiet", "--out", str(out)]) == 2
    again = ["train", *WORKLOAD, *LOOKAHEAD, *val, "--quiet", "--resume", "--out", str(out)]
    assert main(again) == 0
    assert "nothing to do" in capsys.readouterr().out
    code = main(
        ["evaluate", "--router", str(out), *WORKLOAD, "--heuristics", "round-robin,min-min",
         "--n-boot", "100", "--quiet"]
    )  # fmt: skip
    assert code == 0
    assert "Learned router bc" in capsys.readouterr().out


def test_cli_residual_teacher_settings_reach_the_run(tmp_path: Path) -> None:
    out = tmp_path / "router"
    mtl = "min-total-latency"
    residual = ["--tie-break", mtl, "--tie-tolerance-s", "0.5",
                "--teacher-base", mtl, "--behaviours", mtl]  # fmt: skip
    assert main(["train", *WORKLOAD, *LOOKAHEAD, *residual, "--quiet", "--out", str(out)]) == 0
    config = json.loads((out / "run" / "imitation.json").read_text())["config"]
    assert (config["tie_break"], config["tie_tolerance_s"]) == ("min-total-latency", 0.5)
    assert (config["teacher_base"], config["behaviour"]) == ("min-total-latency",) * 2


def test_cli_label_workers_change_no_label_and_no_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--label-workers 2`` labels on worker processes: the same labels, the same run."""
    frames = []
    for workers in ("1", "2"):
        out = tmp_path / f"router-{workers}"
        args = ["train", *WORKLOAD, *LOOKAHEAD, "--label-workers", workers, "--quiet"]
        assert main([*args, "--out", str(out)]) == 0
        frames.append([pl.read_parquet(out / "run" / f"labels-round-{r}.parquet") for r in (0, 1)])
    for one, two in zip(*frames, strict=True):
        assert one.height > 0 and one.equals(two)
    # the worker count is not a setting of the result: the finished run has nothing to do
    again = ["train", *WORKLOAD, *LOOKAHEAD, "--label-workers", "1", "--quiet", "--resume"]
    assert main([*again, "--out", str(tmp_path / "router-2")]) == 0
    assert "nothing to do" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--algorithm", "cql"], "--algorithm 'cql' with --from-lookahead"),
        (["--behaviours", "min-min,round-robin"], "expected one heuristic"),
        (["--dagger-rounds", "-1"], "--dagger-rounds: -1; expected an integer >= 0."),
        (["--behaviours", "min-min-oracle"], "is an oracle or needs the simulator"),
        (["--validation-episodes", "-1"], "--validation-episodes -1; expected an integer >= 0."),
        (["--tie-break", "nope"], "--tie-break: 'nope'; expected one of ['teacher', 'min-min'"),
        (["--tie-tolerance-s", "-1"], "--tie-tolerance-s:"),
        (["--teacher-base", "nope"], "unknown router 'nope'"),
        (["--label-workers", "0"], "--label-workers 0; expected an int >= 1"),
    ],
)
def test_cli_from_lookahead_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    out = tmp_path / "x"
    assert main(["train", *WORKLOAD, *LOOKAHEAD, *extra, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_resume_reuses_matching_labels_only(tmp_path: Path) -> None:
    """Labels in run_dir are reused for the same settings and refused for others."""
    episodes = [_trace(8, 12), _trace(9, 12)]
    noop = NoopAdapterFactory()
    cfg = _config(label_decisions=6, dagger_rounds=0)
    first = imitate_lookahead(cfg, episodes, CLUSTER, run_dir=tmp_path, logger_adapter=noop)
    lines: list[str] = []
    again = imitate_lookahead(
        _config(label_decisions=6, dagger_rounds=1), episodes, CLUSTER, run_dir=tmp_path,
        logger_adapter=noop, say=lines.append,
    )  # fmt: skip
    assert any("round 0: reusing 6 labels" in line for line in lines)
    assert again.labels.subset(again.labels.round == 0).to_frame().equals(first.labels.to_frame())
    with pytest.raises(ValueError, match="holds labels of another run"):
        imitate_lookahead(
            _config(label_decisions=7, dagger_rounds=0), episodes, CLUSTER, run_dir=tmp_path,
            logger_adapter=noop,
        )  # fmt: skip
    # shared round-0 labels (another seed) are used as given
    shared = imitate_lookahead(
        _config(label_decisions=6, dagger_rounds=0, seed=9), episodes, CLUSTER,
        run_dir=tmp_path / "other", logger_adapter=noop, initial_labels=first.labels,
    )  # fmt: skip
    assert shared.labels.to_frame().equals(first.labels.to_frame())
