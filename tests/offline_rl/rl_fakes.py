"""Small transition frames in the RL_CONTRACT format, built by hand for offline_rl tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
from routeplay.replay.rl._observation import OBSERVATION_LAYOUT_VERSION


def make_frame(
    *,
    n_episodes: int = 2,
    n_steps: int = 5,
    obs_size: int = 4,
    n_actions: int = 3,
    seed: int = 0,
    ends: tuple[str, ...] | None = None,
    behaviour: str = "round-robin",
    episode_offset: int = 0,
) -> pl.DataFrame:
    """``n_episodes`` episodes of ``n_steps`` rows with random obs/actions/rewards.

    ``ends[k]`` is ``"terminal"``, ``"timeout"`` or ``"none"`` (no flag) for episode k
    (default: all terminal). ``next_obs`` is the next row's obs inside an episode,
    zeros after a terminal row and a fresh random observation after a timeout row.
    """
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    ends = ends or ("terminal",) * n_episodes
    n = n_episodes * n_steps
    obs = rng.random((n, obs_size), dtype=np.float32)
    next_obs = np.empty_like(obs)
    terminal = np.zeros(n, dtype=bool)
    timeout = np.zeros(n, dtype=bool)
    for k in range(n_episodes):
        a, b = k * n_steps, (k + 1) * n_steps
        next_obs[a : b - 1] = obs[a + 1 : b]
        if ends[k] == "terminal":
            terminal[b - 1] = True
            next_obs[b - 1] = 0.0
        else:
            timeout[b - 1] = ends[k] == "timeout"
            next_obs[b - 1] = rng.random(obs_size, dtype=np.float32)
    actions = rng.integers(0, n_actions, size=n)
    return pl.DataFrame(
        {
            "episode": np.repeat(np.arange(n_episodes) + episode_offset, n_steps),
            "step": np.tile(np.arange(n_steps), n_episodes),
            "time_s": np.arange(n, dtype=np.float64) * 0.1,
            "request_id": np.arange(n, dtype=np.uint64),
            "obs": obs,
            "action": actions.astype(np.int64),
            "reward": rng.normal(size=n),
            "next_obs": next_obs,
            "terminal": terminal,
            "timeout": timeout,
            "behaviour": [behaviour] * n,
            "propensity": np.ones(n),
        },
        schema_overrides={
            "episode": pl.Int64,
            "step": pl.Int64,
            "obs": pl.Array(pl.Float32, obs_size),
            "next_obs": pl.Array(pl.Float32, obs_size),
        },
    )


def write_frame(
    frame: pl.DataFrame,
    path: Path,
    *,
    n_actions: int,
    layout_version: str = OBSERVATION_LAYOUT_VERSION,
) -> Path:
    """Write ``frame`` with the contract's Parquet key-value metadata."""
    obs_size = frame.schema["obs"].shape[0]  # type: ignore[union-attr]
    frame.write_parquet(
        path,
        metadata={
            "routeplay.layout_version": layout_version,
            "routeplay.obs_names": json.dumps([f"x{i}" for i in range(obs_size)]),
            "routeplay.n_instances": str(n_actions - 1),
            "routeplay.n_actions": str(n_actions),
            "routeplay.reward": "test",
            "routeplay.cluster": "{}",
            "routeplay.version": "0.0.0",
        },
    )
    return path
