"""Bad input to ``routeplay train`` / ``routeplay evaluate``: one line, exit 2, nothing written.

Before the fix, a corrupt Parquet file or an ``--out`` below a file printed a Python
traceback, a bad router folder gave messages that did not name the file, and the
evaluation table was written in place (a killed run could leave half a file).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from routeplay.cli import main

WORKLOAD = ["--task-mix", "--n-episodes", "2", "--window-requests", "6", "--cluster", "v100x2"]
TRAIN = ["--behaviours", "round-robin", "--algorithm", "bc", "--n-steps", "4",
         "--batch-size", "4", "--quiet"]  # fmt: skip
FT = [*TRAIN, "--algorithm", "cql", "--fine-tune-steps", "10", "--validation-episodes", "1"]


def _bad_parquet(d: Path) -> list[str]:
    (d / "bad.parquet").write_bytes(b"PAR1 this is not a parquet file")
    return ["--transitions", str(d / "bad.parquet")]


def _folder_as_file(d: Path) -> list[str]:
    (d / "logs").mkdir()
    return ["--transitions", str(d / "logs")]


def _out_below_a_file(d: Path) -> list[str]:
    (d / "afile").write_text("x")
    return [*WORKLOAD, *TRAIN[:-1]]


TRAIN_CASES: dict[str, tuple[Callable[[Path], list[str]], str, str]] = {
    # name: (arguments, --out relative to tmp, expected start of the message)
    "corrupt parquet": (_bad_parquet, "out", "--transitions '{d}/bad.parquet' is not a readable "
                        "Parquet file"),
    "folder given as file": (_folder_as_file, "out", "--transitions '{d}/logs' is a folder"),
    "missing file": (lambda d: ["--transitions", str(d / "nope.parquet")], "out",
                     "--transitions '{d}/nope.parquet' does not exist"),
    "zero steps": (lambda d: [*WORKLOAD, *TRAIN, "--n-steps", "0"], "out",
                   "TrainConfig.n_steps = 0; expected a positive int."),
    "unknown reward": (lambda d: [*WORKLOAD, *TRAIN, "--reward", "bogus"], "out",
                       "unknown reward 'bogus'"),
    "epsilon above 1": (lambda d: [*WORKLOAD, *TRAIN, "--epsilon", "1.5"], "out",
                        "--epsilon 1.5; expected a probability in [0, 1]."),
    "unknown behaviour": (lambda d: [*WORKLOAD, *TRAIN, "--behaviours", "nosuch"], "out",
                          "unknown router 'nosuch'"),
    "no behaviour": (lambda d: [*WORKLOAD, *TRAIN, "--behaviours", " , "], "out",
                     "--behaviours ' , ' names no heuristic"),
    "out below a file": (_out_below_a_file, "afile/out",
                         "cannot use '{d}/afile/.out.partial': Not a directory"),
    "fine-tune without validation": (
        lambda d: [*WORKLOAD, *FT, "--validation-episodes", "0"], "out",
        "--fine-tune-steps 10 needs --validation-episodes N >= 1 (got 0)"),
    "fine-tune flag without steps": (
        lambda d: [*WORKLOAD, *TRAIN, "--fine-tune-reward", "paper-baseline"], "out",
        "--fine-tune-reward has no effect without --fine-tune-steps N"),
    "validation without a use": (lambda d: [*WORKLOAD, *TRAIN, "--validation-episodes", "1"],
                                 "out", "--validation-episodes 1 has no effect without"),
    "negative fine-tune steps": (lambda d: [*WORKLOAD, *FT, "--fine-tune-steps", "-1"], "out",
                                 "--fine-tune-steps -1; expected an integer >= 0"),
    "fine-tune bc": (lambda d: [*WORKLOAD, *FT, "--algorithm", "bc"], "out",
                     "--fine-tune-steps with --algorithm bc"),
    "fine-tune lookahead imitator": (
        lambda d: [*WORKLOAD, *FT, "--algorithm", "bc", "--from-lookahead"], "out",
        "--fine-tune-steps with --from-lookahead"),
    "fine-tune transition files": (lambda d: ["--transitions", str(d / "x.parquet"), *FT], "out",
                                   "--fine-tune-steps with --transitions"),
    "evaluations past the end": (lambda d: [*WORKLOAD, *FT, "--fine-tune-eval-every", "20"], "out",
                                 "--fine-tune-eval-every 20 > --fine-tune-steps 10"),
    "zero patience is allowed, negative is not": (
        lambda d: [*WORKLOAD, *FT, "--fine-tune-patience", "-2"], "out",
        "--fine-tune-patience -2; expected an integer >= 0"),
    "zero fine-tune learning rate": (
        lambda d: [*WORKLOAD, *FT, "--fine-tune-learning-rate", "0"], "out",
        "--fine-tune-learning-rate 0.0; expected None (keep the start's) or a finite number"),
    "unknown fine-tune reward": (lambda d: [*WORKLOAD, *FT, "--fine-tune-reward", "bogus"], "out",
                                 "unknown reward 'bogus'"),
    "no window left to fine-tune on": (
        lambda d: [*WORKLOAD, *FT, "--validation-episodes", "2"], "out",
        "--validation-episodes 2 leaves no training window to log and fine-tune on"),
    "out is a file": (lambda d: [*WORKLOAD, *TRAIN] if (d / "f").write_text("x") else [], "f",
                      "--out '{d}/f' exists and is not a router folder"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(TRAIN_CASES))
def test_train_errors_are_one_line_and_write_nothing(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_args, out_name, expected = TRAIN_CASES[case]
    args = make_args(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = main(["train", *args, "--out", str(tmp_path / out_name)])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("routeplay train: error: " + expected.format(d=tmp_path)), err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_a_failure_after_the_start_removes_the_staging_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import routeplay.offline_rl as rl

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "x"))

    monkeypatch.setattr(rl, "build_dataset", full_disk)
    assert main(["train", *WORKLOAD, *TRAIN, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"cannot use '{tmp_path}/x': No space left on device (OSError)" in err
    assert list(tmp_path.iterdir()) == []


def _router_json(d: Path, text: str) -> list[str]:
    (d / "r").mkdir()
    (d / "r" / "router.json").write_text(text)
    return ["--router", str(d / "r")]


EVALUATE_CASES: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "missing folder": (lambda d: ["--router", str(d / "nope")],
                       "'{d}/nope/router.json' does not exist"),
    "corrupt router.json": (lambda d: _router_json(d, "{"),
                            "'{d}/r/router.json' is unreadable"),
    "router.json without layout": (lambda d: _router_json(d, json.dumps({"layout_version": "1"})),
                                   "'{d}/r/router.json' lacks ['layout', 'obs_size', 'n_actions']"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_errors_are_one_line(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    make_args, expected = EVALUATE_CASES[case]
    code = main(["evaluate", *make_args(tmp_path), *WORKLOAD, "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("routeplay evaluate: error: " + expected.format(d=tmp_path)), err


def test_evaluate_checks_output_folder_first_and_writes_the_table_atomically(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "router"
    assert main(["train", *WORKLOAD, *TRAIN, "--out", str(out)]) == 0
    base = ["evaluate", "--router", str(out), *WORKLOAD, "--heuristics", "round-robin",
            "--n-boot", "100", "--quiet"]  # fmt: skip
    capsys.readouterr()
    assert main([*base, "--output", str(tmp_path / "nodir" / "t.parquet")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        f"routeplay evaluate: error: --output '{tmp_path}/nodir/t.parquet': folder "
        f"'{tmp_path}/nodir' does not exist; expected an existing folder. Fix: create it or "
        "choose another --output."
    )
    assert main([*base, "--output", str(tmp_path / "t.parquet")]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["router", "t.parquet"]


def test_debug_shows_the_original_error_and_still_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import routeplay.offline_rl as rl

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rl, "build_dataset", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        main(["--debug", "train", *WORKLOAD, *TRAIN, "--out", str(tmp_path / "r")])
    assert list(tmp_path.iterdir()) == []
