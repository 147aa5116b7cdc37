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


def test_workload_flags_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--out", str(tmp_path / "x"), "--cluster", "v100x2"])
    assert code == 2
    assert "give exactly one of --trace NAME and --task-mix" in capsys.readouterr().err
