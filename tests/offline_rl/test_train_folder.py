"""``routeplay train`` into an existing folder: fingerprint, --resume, --overwrite, kills.

Before the fix, rerunning with another ``--reward`` rewrote the logs and then
"resumed" the finished checkpoint (shipping the old model), and another ``--epsilon``
overwrote the logs and only then failed. Now an existing folder is refused before
anything is touched, unless ``--resume`` (same settings) or ``--overwrite`` says what
to do, and the work happens in ``.<name>.partial`` until the router is complete.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import torch
from d3rlpy.logging import NoopAdapterFactory
from rl_fakes import make_frame
from routeplay.offline_rl import TrainConfig, build_dataset, load_router, train_router

from routeplay.cli import main

WORKLOAD = ["--task-mix", "--n-episodes", "2", "--window-requests", "6", "--cluster", "v100x2"]
TRAIN = ["--behaviours", "round-robin", "--algorithm", "bc", "--n-steps", "6",
         "--batch-size", "4", "--quiet"]  # fmt: skip


def _argv(out: Path, *extra: str) -> list[str]:
    return ["train", *WORKLOAD, *TRAIN, "--out", str(out), *extra]


def _snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder`` (and its siblings) with its sha256 and mtime."""
    return {
        str(p.relative_to(folder.parent)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mtime_ns,
        )
        for p in sorted(folder.parent.rglob("*"))
        if p.is_file()
    }


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("routeplay train: error: "), err
    return lines[0]


def _settings(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "train.json").read_text())["settings"])


@pytest.fixture()
def trained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "r"
    assert main(_argv(out)) == 0
    capsys.readouterr()
    return out


def test_other_reward_or_epsilon_is_refused_before_anything_is_touched(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(trained)
    assert main(_argv(trained, "--reward", "paper-baseline")) == 2
    line = _error(capsys)
    assert "holds a router trained with other settings" in line
    assert "inputs.reward ('paper-workload-guided' -> 'paper-baseline')" in line
    assert line.endswith("Fix: pass --overwrite to replace it, or choose another --out.")
    assert _snapshot(trained) == before

    assert main(_argv(trained, "--epsilon", "0.2")) == 2
    assert "inputs.epsilon (0.1 -> 0.2)" in _error(capsys)
    assert _snapshot(trained) == before
    # --resume does not get around it either
    assert main(_argv(trained, "--seed", "3", "--resume")) == 2
    line = _error(capsys)
    assert "config.seed (0 -> 3)" in line and "Fix: pass --overwrite" in line
    assert _snapshot(trained) == before


def test_same_settings_need_resume_which_keeps_the_finished_router(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _snapshot(trained)
    assert main(_argv(trained)) == 2
    line = _error(capsys)
    assert "already holds a router trained with these settings" in line
    assert "pass --resume" in line and "--overwrite" in line
    assert main(_argv(trained, "--resume")) == 0
    assert "nothing to do" in capsys.readouterr().out
    assert _snapshot(trained) == before


def test_overwrite_retrains_with_the_new_settings_and_replaces_the_folder(
    trained: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_data = json.loads((trained / "run" / "config.json").read_text())["data_sha256"]
    old_rewards = pl.read_parquet(trained / "logs" / "round-robin.parquet")["reward"]
    assert main(_argv(trained, "--reward", "paper-baseline", "--overwrite")) == 0
    out = capsys.readouterr().out
    assert "router saved to" in out and "resumed" not in out
    assert _settings(trained)["inputs"]["reward"] == "paper-baseline"
    new_data = json.loads((trained / "run" / "config.json").read_text())["data_sha256"]
    assert new_data != old_data
    assert not pl.read_parquet(trained / "logs" / "round-robin.parquet")["reward"].equals(
        old_rewards
    )
    state = json.loads((trained / "run" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 6 and state["data_sha256"] == new_data
    # no staging or old folder left beside it
    assert sorted(p.name for p in trained.parent.iterdir()) == ["r"]


def test_a_killed_run_leaves_no_complete_folder_and_resume_finishes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import routeplay.offline_rl as rl

    out = tmp_path / "r"

    def killed(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(rl, "save_router", killed)  # killed after training, before the router
        assert main(_argv(out)) == 130
    err = capsys.readouterr().err.strip()
    assert err == (
        f"routeplay train: interrupted; the unfinished run is in {str(tmp_path / '.r.partial')!r}"
        "; rerun the same command with --resume to continue it, or with --overwrite to "
        "start over."
    )
    assert not out.exists()
    staging = tmp_path / ".r.partial"
    assert (staging / "run" / "checkpoint" / "state.json").is_file()
    assert not (staging / "router.json").exists()

    before = _snapshot(staging)
    assert main(_argv(out)) == 2
    assert "an unfinished run with these settings is in" in _error(capsys)
    assert main(_argv(out, "--reward", "paper-baseline", "--resume")) == 2
    line = _error(capsys)
    assert "other settings" in line and "inputs.reward" in line and "--overwrite" in line
    assert _snapshot(staging) == before

    assert main(_argv(out, "--resume")) == 0
    assert "trained bc for 6 steps (resumed from step 6)" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]
    # the resumed router is the one a straight run ships (TorchScript files carry a
    # per-save serialization id, so compare the weights and the greedy actions)
    assert main(_argv(tmp_path / "straight")) == 0
    resumed, straight = (
        torch.load(folder / "run" / "checkpoint" / "model.pt", weights_only=True)
        for folder in (out, tmp_path / "straight")
    )
    for name, module in straight.items():
        for key, value in module.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, resumed[name][key]), (name, key)
    a, b = load_router(out), load_router(tmp_path / "straight")
    obs = np.random.default_rng(0).random((50, a.layout.size), dtype=np.float32)
    assert [a.action_index(o) for o in obs] == [b.action_index(o) for o in obs]


def test_changed_transition_file_contents_are_a_different_run(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    logs = tmp_path / "logs.parquet"
    (trained / "logs" / "round-robin.parquet").replace(logs)
    argv = ["train", "--transitions", str(logs), "--algorithm", "bc", "--n-steps", "4",
            "--batch-size", "4", "--quiet", "--out", str(tmp_path / "t")]  # fmt: skip
    assert main(argv) == 0
    capsys.readouterr()
    frame = pl.read_parquet(logs)
    meta = pl.read_parquet_metadata(logs)
    frame.with_columns(pl.col("reward") + 1.0).write_parquet(logs, metadata=meta)
    assert main([*argv, "--resume"]) == 2
    line = _error(capsys)
    assert "inputs.transitions_sha256" in line and "--overwrite" in line


def test_a_folder_not_written_by_train_is_never_replaced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for flag in ([], ["--overwrite"], ["--resume"]):
        assert main(_argv(out, *flag)) == 2
        line = _error(capsys)
        assert "exists and is not a router folder written by routeplay train" in line
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(_argv(empty)) == 0
    assert (empty / "router.json").is_file()


def test_an_explicit_run_dir_with_a_checkpoint_needs_a_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    assert main(_argv(tmp_path / "a", "--run-dir", str(run))) == 0
    capsys.readouterr()
    before = _snapshot(run)
    assert main(_argv(tmp_path / "b", "--run-dir", str(run))) == 2
    assert "already holds a training checkpoint" in _error(capsys)
    assert _snapshot(run) == before
    assert not (tmp_path / "b").exists() and not (tmp_path / ".b.partial").exists()
    assert main(_argv(tmp_path / "b", "--run-dir", str(run), "--resume")) == 0
    assert "resumed from step 6" in capsys.readouterr().out


def test_python_api_refuses_to_resume_on_other_data_of_the_same_shape(tmp_path: Path) -> None:
    frame = make_frame(n_episodes=2, n_steps=6, obs_size=4, n_actions=3, seed=2)
    first = build_dataset(frame, n_actions=3)
    other = build_dataset(frame.with_columns(pl.col("reward") * -1.0), n_actions=3)
    cfg = TrainConfig(algorithm="cql", hidden_units=(8,), batch_size=4, n_steps=4,
                      n_steps_per_epoch=2, checkpoint_every_steps=2)  # fmt: skip
    train_router(cfg, first, run_dir=tmp_path, logger_adapter=NoopAdapterFactory())
    before = _snapshot(tmp_path / "checkpoint")
    with pytest.raises(ValueError) as info:
        train_router(cfg, other, run_dir=tmp_path, logger_adapter=NoopAdapterFactory())
    message = str(info.value)
    assert "\n" not in message
    assert "holds a checkpoint of a different run" in message
    assert "'training data sha256': (" in message and "refusing to resume it" in message
    assert _snapshot(tmp_path / "checkpoint") == before
    # resume=False starts over on the new data
    again = train_router(
        cfg, other, run_dir=tmp_path, resume=False, logger_adapter=NoopAdapterFactory()
    )
    assert again.n_steps_resumed_from == 0
