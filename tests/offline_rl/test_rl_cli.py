"""End-to-end tests of ``routeplay train`` and ``routeplay evaluate`` on tiny data."""

from __future__ import annotations

import json
import re
from pathlib import Path

import polars as pl
import pytest

from routeplay.cli import main

WORKLOAD = ["--task-mix", "--n-episodes", "2", "--window-requests", "10", "--cluster", "v100x2"]


def test_train_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "router"
    code = main(
        ["train", *WORKLOAD, "--behaviours", "round-robin", "--algorithm", "bc",
         "--n-steps", "10", "--batch-size", "8", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert (out / "policy.pt").is_file() and (out / "model.d3").is_file()
    meta = json.loads((out / "router.json").read_text())
    assert meta["n_actions"] == 3 and meta["algorithm"] == "bc"
    assert "router saved to" in capsys.readouterr().out
    table = tmp_path / "eval.parquet"
    code = main(
        ["evaluate", "--router", str(out), *WORKLOAD, "--heuristics", "round-robin,least-loaded",
         "--n-boot", "100", "--output", str(table)]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "paired replay evaluation: 2 episodes, baseline 'round-robin'" in printed
    # the verdict comes first, in words, and speaks of the learned router
    assert re.match(r".* (has|tie for) the lowest mean end-to-end latency", printed), printed
    assert "Learned router bc: mean E2E" in printed
    frame = pl.read_parquet(table)
    assert sorted(frame["router"].to_list()) == ["bc", "least-loaded", "round-robin"]
    assert (frame["n_episodes"] == 2).all()


def test_train_from_transition_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    logs = tmp_path / "first"
    assert main(
        ["train", *WORKLOAD, "--behaviours", "round-robin,least-loaded", "--algorithm", "bc",
         "--n-steps", "5", "--batch-size", "8", "--out", str(logs)]
    ) == 0  # fmt: skip
    files = sorted(str(p) for p in (logs / "logs").glob("*.parquet"))
    assert len(files) == 2
    out = tmp_path / "second"
    code = main(
        ["train", "--transitions", *files, "--algorithm", "cql", "--n-steps", "5",
         "--batch-size", "8", "--out", str(out)]
    )  # fmt: skip
    assert code == 0
    assert (
        json.loads((out / "router.json").read_text())["layout"]
        == json.loads((logs / "router.json").read_text())["layout"]
    )


def test_discount_target_sync_and_learning_rate_are_flags(tmp_path: Path) -> None:
    # defaults: LearningConfig's (chosen on the main job's validation windows)
    default = tmp_path / "default"
    args = ["train", *WORKLOAD, "--behaviours", "round-robin", "--algorithm", "cql",
            "--n-steps", "5", "--batch-size", "8"]  # fmt: skip
    assert main([*args, "--out", str(default)]) == 0
    config = json.loads((default / "train.json").read_text())["settings"]["config"]
    assert (config["gamma"], config["target_update_interval"]) == (0.9, 100)
    assert config["reward_normalization"] == "standardize"
    given = tmp_path / "given"
    flags = ["--gamma", "0.97", "--target-update-interval", "7", "--learning-rate", "0.001"]
    assert main([*args, *flags, "--out", str(given)]) == 0
    config = json.loads((given / "train.json").read_text())["settings"]["config"]
    assert (config["gamma"], config["target_update_interval"]) == (0.97, 7)
    assert config["learning_rate"] == 0.001
    assert main([*args, "--gamma", "1.5", "--out", str(tmp_path / "bad")]) == 2
    assert not (tmp_path / "bad").exists()


def test_workload_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--out", str(tmp_path / "x"), "--cluster", "v100x2"])
    assert code == 2
    assert "give exactly one of --trace NAME and --task-mix" in capsys.readouterr().err


FT_WORKLOAD = ["--task-mix", "--n-episodes", "3", "--window-requests", "20", "--cluster", "v100x2"]
FT_TRAIN = ["--behaviours", "round-robin,least-loaded", "--algorithm", "cql", "--n-steps", "20",
            "--batch-size", "8", "--fine-tune-steps", "40", "--fine-tune-eval-every", "20",
            "--fine-tune-reward", "paper-baseline", "--validation-episodes", "1"]  # fmt: skip


def test_train_fine_tunes_with_validation_selection(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from routeplay.offline_rl import BoundedWaitRouter, load_router
    from routeplay.replay import ReplayConfig, Scenario, make_router, run_replay

    out = tmp_path / "router"
    assert main(["train", *FT_WORKLOAD, *FT_TRAIN, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "fine-tuned online (paper-baseline, 40 steps)" in printed and "router saved to" in printed
    )
    curve = pl.read_parquet(out / "online" / "validation_curve.parquet")
    assert curve["step"].to_list() == [0, 20, 40]
    assert curve["kept"].sum() == 1
    assert pl.read_parquet(out / "online" / "online_curve_long.parquet").columns == [
        "step", "metric", "value", "run"
    ]  # fmt: skip
    selection = json.loads((out / "online" / "online.json").read_text())["selection"]
    kept = curve.filter(pl.col("kept"))
    assert selection["kept_step"] == kept["step"].item()
    assert selection["kept_validation_e2e_s"] <= selection["start_validation_e2e_s"]
    settings = json.loads((out / "train.json").read_text())["settings"]
    assert settings["inputs"]["fine_tune"]["reward"] == "paper-baseline"
    assert settings["inputs"]["fine_tune"]["validation_episodes"] == 1
    # the saved router IS the kept policy: replayed on the validation window (the last
    # training window of the scenario), it gives the kept validation mean E2E
    prepared = Scenario(
        trace="task-mix", task_mix={"n_requests": 120, "rate_per_s": 20.0},
        episode_requests=20, test_fraction=0.5, cluster="v100x2", seed=0,
    ).prepare()  # fmt: skip
    window = prepared.train[-1].trace
    router = BoundedWaitRouter(
        load_router(out), max_router_wait_s=2.0, fallback=make_router("least-loaded")
    )
    config = ReplayConfig(
        seed=prepared.config.seed,
        max_sim_time_s=float(window["arrival_s"].max()) + 1800.0,  # type: ignore[arg-type]
    )
    e2e = float(
        run_replay(window, prepared.cluster, router, config=config).requests["e2e_s"].mean()
    )
    assert e2e == pytest.approx(selection["kept_validation_e2e_s"], rel=1e-9)
    # same settings again: a finished run is left as it is
    assert main(["train", *FT_WORKLOAD, *FT_TRAIN, "--out", str(out), "--resume"]) == 0
    assert "nothing to do" in capsys.readouterr().out
    # another fine-tuning reward is another run
    other = [*FT_TRAIN[:-3], "paper-workload-aware", *FT_TRAIN[-2:]]
    assert main(["train", *FT_WORKLOAD, *other, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
