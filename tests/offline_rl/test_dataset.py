"""build_dataset: transition logs -> d3rlpy MDPDataset + flat arrays + dataset card."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from rl_fakes import make_frame, write_frame
from routeplay.offline_rl import DatasetCard, build_dataset
from routeplay.replay.rl._observation import OBSERVATION_LAYOUT_VERSION


def test_card_numbers_match_hand_counts(tmp_path: Path) -> None:
    a = make_frame(n_episodes=2, n_steps=5, seed=1, behaviour="round-robin")
    b = make_frame(
        n_episodes=3,
        n_steps=4,
        seed=2,
        behaviour="round-robin+eps0.1",
        ends=("terminal", "timeout", "timeout"),
    )
    pa = write_frame(a, tmp_path / "a.parquet", n_actions=3)
    pb = write_frame(b, tmp_path / "b.parquet", n_actions=3)
    ds = build_dataset([pa, pb])
    card = ds.card
    assert card.behaviour_rows == (("round-robin", 10), ("round-robin+eps0.1", 12))
    assert card.n_episodes == 5  # episode ids 0,1 repeat across files: keyed per file
    assert (card.n_terminal_episodes, card.n_timeout_episodes) == (3, 2)
    assert card.n_transitions == 22
    assert card.n_transitions_d3rlpy == 20  # one lost per timeout episode in d3rlpy
    assert ds.mdp.transition_count == 20
    assert len(ds.mdp.episodes) == 5
    both = pl.concat([a, b])
    counts = np.bincount(both["action"].to_numpy(), minlength=3)
    assert card.action_counts == tuple(int(c) for c in counts)
    rewards = both["reward"].to_numpy().astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(card.reward_mean, rewards.mean(), rtol=1e-12)
    np.testing.assert_allclose(card.reward_std, rewards.std(), rtol=1e-12)
    assert card.reward_min == pytest.approx(float(rewards.min()))
    assert card.reward_max == pytest.approx(float(rewards.max()))
    assert (card.layout_version, card.n_actions, card.obs_size) == (
        OBSERVATION_LAYOUT_VERSION,
        3,
        4,
    )
    assert ds.obs_names == ("x0", "x1", "x2", "x3")
    assert ds.metadata["reward"] == "test"
    assert ds.mdp.dataset_info.action_size == 3


def test_action_size_comes_from_metadata_not_the_logged_actions(tmp_path: Path) -> None:
    frame = make_frame(n_actions=2, seed=3)  # only actions 0/1 logged, WAIT (=4) never
    ds = build_dataset(write_frame(frame, tmp_path / "x.parquet", n_actions=5))
    assert ds.mdp.dataset_info.action_size == 5
    assert ds.card.action_counts[2:] == (0, 0, 0)


def test_flat_arrays_keep_timeout_last_transition_with_logged_next_obs() -> None:
    frame = make_frame(n_episodes=1, n_steps=4, ends=("timeout",), seed=4)
    ds = build_dataset(frame, n_actions=3)
    assert ds.observations.shape == (4, 4)
    np.testing.assert_array_equal(ds.next_observations[-1], frame["next_obs"].to_numpy()[-1])
    assert ds.terminals.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert ds.card.n_transitions_d3rlpy == 3


def test_terminal_rows_are_marked_and_sorted_by_episode_and_step() -> None:
    frame = make_frame(n_episodes=2, n_steps=3, seed=5)
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=0)
    ds = build_dataset(shuffled, n_actions=3)
    np.testing.assert_array_equal(ds.observations, frame["obs"].to_numpy())
    assert ds.terminals.tolist() == [0, 0, 1, 0, 0, 1]
    assert ds.episode_starts.tolist() == [0, 3]


def test_unflagged_episode_end_warns_and_becomes_timeout() -> None:
    frame = make_frame(n_episodes=2, n_steps=3, ends=("terminal", "none"), seed=6)
    with pytest.warns(UserWarning, match=re.escape("1 episode(s) end without a terminal")):
        ds = build_dataset(frame, n_actions=3)
    assert ds.card.n_timeout_episodes == 1
    assert ds.card.n_transitions == 6 and ds.card.n_transitions_d3rlpy == 5


def test_layout_version_mismatch_across_files_is_an_error(tmp_path: Path) -> None:
    pa = write_frame(make_frame(seed=1), tmp_path / "a.parquet", n_actions=3)
    pb = write_frame(make_frame(seed=2), tmp_path / "b.parquet", n_actions=3, layout_version="0")
    with pytest.raises(ValueError, match=re.escape("different observation layout versions")):
        build_dataset([pa, pb])
    with pytest.raises(ValueError, match=re.escape(f"= {OBSERVATION_LAYOUT_VERSION!r})")):
        build_dataset([pa, pb])


def test_old_layout_version_is_refused_with_its_number(tmp_path: Path) -> None:
    old = write_frame(make_frame(seed=1), tmp_path / "old.parquet", n_actions=3, layout_version="1")
    with pytest.raises(ValueError, match=re.escape("observation layout version '1'; this")):
        build_dataset([old])


def test_dt_s_and_markov_columns_reach_the_flat_arrays() -> None:
    frame = make_frame(n_episodes=1, n_steps=3, seed=4).with_columns(
        pl.Series("dt_s", [0.5, 1.0, 2.0]), pl.Series("behaviour_markov", [True] * 3)
    )
    ds = build_dataset(frame, n_actions=3)
    assert ds.dt_s is not None and ds.dt_s.tolist() == [0.5, 1.0, 2.0]
    assert ds.behaviour_markov is not None and ds.behaviour_markov.all()
    np.testing.assert_allclose(ds.discounts(0.5), [0.5**0.5, 0.5, 0.25])
    bare = build_dataset(make_frame(n_episodes=1, n_steps=3, seed=4), n_actions=3)
    assert bare.behaviour_markov is not None and not bare.behaviour_markov.any()
    with pytest.raises(ValueError, match=re.escape("3 transition(s) have no dt_s")):
        bare.discounts(0.9)


def test_action_count_and_width_mismatches_are_errors(tmp_path: Path) -> None:
    pa = write_frame(make_frame(seed=1), tmp_path / "a.parquet", n_actions=3)
    pb = write_frame(make_frame(seed=2), tmp_path / "b.parquet", n_actions=4)
    with pytest.raises(ValueError, match=re.escape("different action counts")):
        build_dataset([pa, pb])
    wide = make_frame(obs_size=5, seed=3)
    with pytest.raises(ValueError, match=re.escape("different observation widths")):
        build_dataset([make_frame(seed=1), wide], n_actions=3)


def test_bad_rows_are_errors() -> None:
    frame = make_frame(n_episodes=1, n_steps=3, seed=7)
    bad_action = frame.with_columns(pl.lit(3, dtype=pl.Int64).alias("action"))
    with pytest.raises(ValueError, match=re.escape("action 3 in episode 0 step 0 is outside 0..2")):
        build_dataset(bad_action, n_actions=3)
    both = frame.with_columns(pl.lit(True).alias("timeout"))
    with pytest.raises(ValueError, match=re.escape("is both terminal and timeout")):
        build_dataset(both, n_actions=3)
    early = frame.with_columns(pl.Series("timeout", [True, False, False]))
    with pytest.raises(ValueError, match=re.escape("which is not its last step")):
        build_dataset(early, n_actions=3)
    with pytest.raises(ValueError, match=re.escape("lacks transition column(s) ['behaviour']")):
        build_dataset(frame.drop("behaviour"), n_actions=3)
    with pytest.raises(ValueError, match=re.escape("n_actions is required")):
        build_dataset(frame)


def test_next_obs_that_skips_decisions_warns() -> None:
    frame = make_frame(n_episodes=1, n_steps=3, seed=8)
    odd = frame.with_columns(
        pl.Series("next_obs", np.full((3, 4), 0.5, dtype=np.float32), dtype=pl.Array(pl.Float32, 4))
    )
    with pytest.warns(UserWarning, match=re.escape("2 of 2 within-episode rows")):
        build_dataset(odd, n_actions=3)


def test_card_frame_and_summary() -> None:
    ds = build_dataset(make_frame(seed=9), n_actions=3)
    card = ds.card
    assert isinstance(card, DatasetCard)
    frame = card.to_frame()
    actions = frame.filter(pl.col("section") == "action")
    assert actions["key"].to_list() == ["0", "1", "2 (WAIT)"]
    assert actions["value"].sum() == card.n_transitions
    text = card.summary()
    assert "2 episodes (2 terminal, 0 timeout), 10 transitions" in text
    assert "round-robin=10" in text
