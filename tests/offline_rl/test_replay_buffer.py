"""The fast FIFO replay buffer gives d3rlpy's own mini-batches, bit for bit."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from d3rlpy.dataset import (
    Episode,
    FrameStackTransitionPicker,
    ReplayBuffer,
    create_fifo_replay_buffer,
)
from d3rlpy.logging import NoopAdapterFactory
from routeplay.datasets import TaskMixConfig, generate_task_mix
from routeplay.offline_rl import OnlineConfig, TrainConfig, _online, fine_tune_online
from routeplay.offline_rl._dataset import quiet_d3rlpy
from routeplay.offline_rl._replay_buffer import ListFIFOBuffer, fifo_replay_buffer
from routeplay.replay import make_cluster

FIELDS = ("observations", "actions", "rewards", "next_observations", "next_actions")
FIELDS += ("terminals", "intervals")


def _episode(rng: np.random.Generator, n: int, terminated: bool) -> Episode:
    return Episode(
        observations=rng.random((n, 5)).astype(np.float32),
        actions=rng.integers(0, 3, (n, 1)).astype(np.int32),
        rewards=rng.normal(size=(n, 1)).astype(np.float32),
        terminated=terminated,
    )


def _shape(episodes: Any) -> list[tuple[int, bool, bytes]]:
    return [(e.size(), e.terminated, e.observations.tobytes()) for e in episodes]


def _pairs(buffer: ReplayBuffer) -> list[tuple[int, int]]:
    """(episode's position among the buffer's episodes, transition index), oldest first."""
    at = {id(e): k for k, e in enumerate(buffer.episodes)}
    return [(at[id(e)], i) for e, i in (buffer.buffer[j] for j in range(buffer.transition_count))]


def _assert_same_batch(a: Any, b: Any) -> None:
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x.dtype, x.shape) == (y.dtype, y.shape), name
        assert x.tobytes() == y.tobytes(), name


@pytest.mark.parametrize("high", [1, 7, 1000, 123_457, 2**31 + 5, 2**40 + 3])
def test_one_vector_draw_is_the_scalar_draws_in_order(high: int) -> None:
    np.random.seed(11)
    scalar = [np.random.randint(high) for _ in range(300)]
    after_scalar = np.random.randint(2**30)
    np.random.seed(11)
    vector = np.random.randint(high, size=300).tolist()
    assert vector == scalar
    assert np.random.randint(2**30) == after_scalar  # the same draws consumed


@pytest.mark.parametrize(
    ("limit", "offline_length"), [(2, 7), (5, 7), (40, 7), (10_000, 7), (2000, 650)]
)
def test_batches_equal_d3rlpy_fifo_buffer_bit_for_bit(limit: int, offline_length: int) -> None:
    # offline episodes (terminated and timed out), then online writes as fit_online
    # makes them, with clips both ways and FIFO evictions: after every write the two
    # buffers hold the same transitions and episodes and sample the same batches (the
    # last case grows the rows past their first 1,024 slots, then evicts)
    rng = np.random.default_rng(limit)
    n = offline_length
    offline = [_episode(rng, n, True), _episode(rng, n - 2, False), _episode(rng, n + 2, True)]
    with quiet_d3rlpy():
        plain = create_fifo_replay_buffer(limit, episodes=offline)
        fast = fifo_replay_buffer(limit, episodes=offline)
    terminals = 0
    for step in range(240):
        obs = rng.random(5).astype(np.float32)
        action, reward = int(rng.integers(0, 3)), float(rng.normal())
        plain.append(obs, action, reward)
        fast.append(obs, action, reward)
        if rng.random() < 0.05:
            terminated = bool(rng.integers(0, 2))
            plain.clip_episode(terminated)
            fast.clip_episode(terminated)
        n = plain.transition_count
        assert fast.transition_count == n
        # the same episodes (each writer has its own active-episode objects) and pairs
        assert _shape(fast.episodes) == _shape(plain.episodes)
        assert _pairs(fast) == _pairs(plain)
        np.random.seed(step)
        a = plain.sample_transition_batch(32)
        after = np.random.randint(2**30)
        np.random.seed(step)
        b = fast.sample_transition_batch(32)
        assert np.random.randint(2**30) == after
        _assert_same_batch(a, b)
        assert b.transitions == []  # unread by algorithms without returns-to-go
        terminals += int(a.terminals.sum())
    assert terminals > 0  # terminal rows (zeros next) were compared too
    if n + (n - 3) + (n + 2) + 240 > limit:
        assert plain.transition_count == limit  # evictions happened


def test_other_pickers_sample_as_d3rlpy_does() -> None:
    rng = np.random.default_rng(0)
    episodes = [_episode(rng, 9, True), _episode(rng, 6, True)]
    picker = FrameStackTransitionPicker(n_frames=2)
    with quiet_d3rlpy():
        plain = create_fifo_replay_buffer(50, episodes=episodes, transition_picker=picker)
        fast = fifo_replay_buffer(50, episodes=episodes)
        fast = type(fast)(ListFIFOBuffer(50), episodes=episodes, transition_picker=picker)
    np.random.seed(3)
    a = plain.sample_transition_batch(16)
    np.random.seed(3)
    b = fast.sample_transition_batch(16)
    _assert_same_batch(a, b)
    assert len(b.transitions) == 16  # d3rlpy's own path


def test_limits_below_two_are_refused() -> None:
    with pytest.raises(ValueError, match=re.escape("ListFIFOBuffer.limit = 1; expected")):
        ListFIFOBuffer(1)
    with pytest.raises(ValueError, match=re.escape("OnlineConfig buffer_limit = 1; expected")):
        OnlineConfig(buffer_limit=1)


def test_fine_tuning_learns_the_same_weights_with_either_buffer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    episodes = [generate_task_mix(TaskMixConfig(n_requests=8, seed=s)) for s in range(2)]
    config = OnlineConfig(
        n_steps=60, n_steps_per_epoch=30, update_start_step=8, epsilon_start=1.0,
        epsilon_end=0.0, buffer_limit=40,  # evictions happen
    )  # fmt: skip

    def run(name: str) -> Any:
        return fine_tune_online(
            TrainConfig(algorithm="double-dqn", batch_size=8), episodes, make_cluster("v100x2"),
            reward="paper-workload-guided", run_dir=tmp_path / name, config=config,
            logger_adapter=NoopAdapterFactory(),
        )  # fmt: skip

    fast = run("fast")
    made: list[ReplayBuffer] = []

    def d3rlpy_buffer(limit: int, **kwargs: Any) -> ReplayBuffer:
        made.append(create_fifo_replay_buffer(limit=limit, **kwargs))
        return made[-1]

    monkeypatch.setattr(_online, "fifo_replay_buffer", d3rlpy_buffer)
    plain = run("plain")
    assert len(made) == 1 and plain.algo.grad_step == fast.algo.grad_step > 0
    for name in ("q_funcs", "targ_q_funcs"):
        mine = getattr(fast.algo.impl.modules, name).parameters()
        theirs = getattr(plain.algo.impl.modules, name).parameters()
        assert all(torch.equal(p, q) for p, q in zip(mine, theirs, strict=True)), name
    assert plain.curve.equals(fast.curve)
