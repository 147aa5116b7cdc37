"""Lookahead labelling on worker processes gives the labels of labelling in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    save_router,
)
from routeplay.replay import RoundRobinRouter, make_cluster, make_router
from routeplay.replay.rl._transitions import default_layout
from routeplay.replay.routers._reference import LookaheadOracleRouter

CLUSTER = make_cluster("v100x2")
#: episodes of different lengths, so that the label count cuts them in different places
EPISODES = [
    generate_task_mix(TaskMixConfig(n_requests=n, rate_per_s=20.0, seed=s))
    for s, n in [(1, 18), (2, 7), (3, 14), (4, 22)]
]
FIELDS = (
    "observations",
    "actions",
    "behaviour_actions",
    "costs_s",
    "episode",
    "round",
    "request_id",
    "time_s",
)


def _assert_same(a: LookaheadLabels, b: LookaheadLabels) -> None:
    assert a.n_labels == b.n_labels and a.n_actions == b.n_actions
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert x.tobytes() == y.tobytes(), name  # bit for bit (NaN costs included)


@pytest.mark.parametrize(
    ("n_labels", "start", "every"),
    [
        (30, 0, 1),  # cut in the third episode
        (7, 3, 1),  # within the first episode
        (75, 1, 1),  # past the end of the list: cycles back to episode 0
        (25, 2, 3),  # every third decision
    ],
)
def test_workers_give_the_labels_of_one_process(n_labels: int, start: int, every: int) -> None:
    """A random behaviour (per-episode generators) and the lookahead, 1 vs 2 workers."""
    kw: dict[str, Any] = {"n_labels": n_labels, "start_episode": start, "label_every": every,
                          "seed": 5, "round_index": 2}  # fmt: skip
    one, next_one = label_states(EPISODES, CLUSTER, make_router("random"), **kw)
    two, next_two = label_states(EPISODES, CLUSTER, make_router("random"), n_workers=2, **kw)
    assert one.n_labels == n_labels
    _assert_same(one, two)
    assert next_one == next_two
    assert (one.round == 2).all() and one.teacher_wall_time_s > 0 < two.teacher_wall_time_s


def test_workers_with_a_trained_student_driving(tmp_path: Path) -> None:
    """A DAgger round's driver: a PolicyRouter of a d3rlpy learnable, pickled to workers."""
    config = ImitationConfig(label_decisions=20, dagger_rounds=0, n_steps=20, batch_size=8)
    trained = imitate_lookahead(
        config, EPISODES[:2], CLUSTER, run_dir=tmp_path, logger_adapter=NoopAdapterFactory()
    )
    folder = save_router(trained.train, tmp_path / "router", layout=trained.layout)
    kw: dict[str, Any] = {"n_labels": 40, "start_episode": 1, "seed": 1, "round_index": 1}
    # in memory (a d3rlpy learnable) and loaded back (TorchScript, sent as its bytes)
    for student in (trained.router(name="student", wait_limit=2), load_router(folder)):
        one, _ = label_states(EPISODES, CLUSTER, student, **kw)
        two, _ = label_states(EPISODES, CLUSTER, student, n_workers=2, **kw)
        _assert_same(one, two)
        assert not (one.behaviour_actions == one.actions).all()  # not the teacher's


def test_imitate_lookahead_label_workers_change_nothing(tmp_path: Path) -> None:
    config = ImitationConfig(label_decisions=15, dagger_rounds=1, n_steps=10, batch_size=8)
    runs = [
        imitate_lookahead(
            config,
            EPISODES,
            CLUSTER,
            run_dir=tmp_path / f"w{workers}",
            logger_adapter=NoopAdapterFactory(),
            label_workers=workers,
        )
        for workers in (1, 2)
    ]
    _assert_same(runs[0].labels, runs[1].labels)
    assert runs[0].labels.n_labels == 30
    assert (runs[0].labels.round == 1).sum() == 15  # the student drove round 1


def test_a_teacher_whose_rollouts_draw_random_numbers() -> None:
    """The lookahead's rollouts route with ``random``: each label's seed must be the one
    it gets in one process, so the workers skip the other shares' draws."""
    kw: dict[str, Any] = {"n_labels": 45, "start_episode": 2, "seed": 9}
    teacher = LookaheadOracleRouter(base="random", horizon_s=0.2)
    one, _ = label_states(EPISODES, CLUSTER, make_router("min-min"), teacher=teacher, **kw)
    for workers in (2, 3):
        many, _ = label_states(
            EPISODES, CLUSTER, make_router("min-min"), teacher=teacher, n_workers=workers, **kw
        )
        _assert_same(one, many)
    # the seeds matter here: a teacher with other seeds labels differently
    other, _ = label_states(
        EPISODES, CLUSTER, make_router("min-min"), teacher=teacher, **{**kw, "seed": 10}
    )
    assert other.costs_s.tobytes() != one.costs_s.tobytes()


class _WaitFirst(torch.nn.Module):
    """A policy that always WAITs (action index 2 on two instances)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0],), 2, dtype=torch.int64)


def test_a_driver_that_waits() -> None:
    """Every request WAITs once, then the fallback routes it: two decisions per request.

    The shares of an episode count the labelled decisions, not the requests; 2 workers
    give the labels (and the next episode) of one process.
    """
    waiter = PolicyRouter(_WaitFirst(), layout=default_layout(CLUSTER), name="w", wait_limit=1)
    kw: dict[str, Any] = {"n_labels": 31, "seed": 2}
    one, next_one = label_states(EPISODES, CLUSTER, waiter, **kw)
    two, next_two = label_states(EPISODES, CLUSTER, waiter, n_workers=2, **kw)
    _assert_same(one, two)
    assert next_one == next_two == 1
    assert set(one.episode.tolist()) == {0} and (one.behaviour_actions == 2).sum() == 16


class _LocalRouter(RoundRobinRouter):
    """A router whose instances carry a lambda: they cannot be pickled."""

    def __init__(self) -> None:
        super().__init__()
        self.hook = lambda: None


class _FailsLater(RoundRobinRouter):
    """Routes the first 20 decisions after each reset, then raises."""

    name = "fails-later"

    def reset(self, cluster: Any, rng: Any) -> None:
        super().reset(cluster, rng)
        self.n_routed = 0

    def route(self, request: Any, state: Any) -> int:
        self.n_routed += 1
        if self.n_routed > 20:
            raise ValueError("fails-later: no route for this request")
        return super().route(request, state)


def test_a_worker_error_reaches_the_caller_as_itself() -> None:
    with pytest.raises(ValueError, match="fails-later: no route for this request"):
        label_states(EPISODES, CLUSTER, _FailsLater(), n_labels=60, n_workers=2)


def test_unpicklable_behaviour_and_bad_worker_counts_are_refused() -> None:
    with pytest.raises(ValueError, match=r"cannot be pickled .*Fix: pass n_workers=1"):
        label_states(EPISODES, CLUSTER, _LocalRouter(), n_labels=3, n_workers=2)
    for bad in (0, -1, True, 1.5, "2"):
        with pytest.raises(ValueError, match="n_workers = .*expected an int >= 1"):
            label_states(EPISODES, CLUSTER, make_router("min-min"), n_labels=3, n_workers=bad)


def test_a_frame_of_labels_keeps_its_columns() -> None:
    """The labels of workers go through the same frame as any others."""
    two, _ = label_states(EPISODES, CLUSTER, make_router("min-min"), n_labels=9, n_workers=2)
    frame = two.to_frame()
    assert isinstance(frame, pl.DataFrame) and frame.height == 9
    assert LookaheadLabels.from_frame(frame, n_actions=3).n_labels == 9
