from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from routeplay.cli import main


def test_replay_command_prints_a_row_per_router_and_writes_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(
        [
            "replay",
            "--trace",
            "azure-2023-conv",
            "--cluster",
            "a100x4",
            "--router",
            "round-robin,least-connections",
            "--first-requests",
            "300",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "300 requests of azure-2023-conv on a100x4" in text
    assert text.count("\nround-robin ") == 1 and text.count("\nleast-connections ") == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_requests"] == 300
    assert set(summary["routers"]) == {"round-robin", "least-connections"}
    frame = pl.read_parquet(out / "round-robin.parquet")
    assert frame.height == 300 and frame["finish_s"].null_count() == 0
    mean = summary["routers"]["round-robin"]["summary"]["e2e_s_mean"]
    assert mean == pytest.approx(frame["e2e_s"].mean())


def test_replay_with_predictor_never_replays_its_training_requests(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = main(
        [
            "replay",
            "--trace",
            "azure-2023-code",
            "--cluster",
            "a100x4",
            "--router",
            "least-work-left",
            "--first-requests",
            "500",
            "--predictor",
            "histogram",
            "--predictor-train-fraction",
            "0.4",
            "--json",
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    # the first 40 % (by arrival) trains the predictor; only the rest is replayed
    assert report["n_requests"] == 300
    assert "fitted on the first 200 requests" in captured.err


def test_replay_command_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(
        ["replay", "--trace", "azure-2023-conv", "--cluster", "a100x4", "--router", "round-robbin"]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown router 'round-robbin'. Did you mean 'round-robin'?" in err


def test_listing_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["routers"]) == 0
    text = capsys.readouterr().out
    assert "decode-balancer-oracle" in text and "[oracle]" in text
    assert main(["clusters"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "hetero-3k5k7k         3 instances" in lines[2]
    # names and counts in aligned columns; a clocked cluster names its clock
    assert len({line.index(" instances") for line in lines}) == 1
    assert lines[-1].endswith("(clock: vidur-forest/llama2-7b-a100)")


def _replay(out: Path, routers: str, *extra: str) -> int:
    args = ["replay", "--trace", "azure-2023-conv", "--cluster", "a100x4", "--router", routers]
    return main([*args, "--first-requests", "50", "--out", str(out), "--quiet", *extra])


def test_replay_out_is_replaced_whole_never_mixed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    assert _replay(out, "round-robin,least-connections") == 0
    first = json.loads((out / "summary.json").read_text())
    # a rerun with other routers killed half-way (here: the second router raises) leaves
    # the first output exactly as it was, with no new file beside it
    import routeplay.replay.engine._engine as engine

    real = engine.run_replay
    calls = []

    def dies_on_second(*args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine, "run_replay", dies_on_second)
    assert _replay(out, "jsq-tokens,min-min") == 130
    assert sorted(p.name for p in out.iterdir()) == [
        "least-connections.parquet",
        "round-robin.parquet",
        "summary.json",
        "timelines-least-connections.parquet",
        "timelines-round-robin.parquet",
    ]
    assert json.loads((out / "summary.json").read_text()) == first
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    monkeypatch.setattr(engine, "run_replay", real)
    # a complete rerun replaces the folder whole: no file of the first run is left
    assert _replay(out, "min-min") == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "min-min.parquet",
        "summary.json",
        "timelines-min-min.parquet",
    ]
    capsys.readouterr()


def test_replay_out_refuses_a_folder_it_did_not_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert _replay(out, "round-robin") == 2
    err = capsys.readouterr().err
    assert err == (
        f"routeplay replay: error: output folder {out} is not empty and holds no summary.json, "
        "so it is not an earlier output of this command; refusing to replace it. Fix: pass a "
        "new or empty folder to --out.\n"
    )
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
