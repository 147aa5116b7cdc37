"""The ``routeplay`` entry point: every failure is one line on stderr, never a traceback."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from routeplay import cli


@pytest.fixture()
def failing_command(monkeypatch: pytest.MonkeyPatch) -> list[BaseException]:
    """``routeplay routers`` raising whatever the test puts in the list."""
    box: list[BaseException] = []
    real = cli.build_parser

    def fail(args: argparse.Namespace) -> int:
        raise box[0]

    def build() -> argparse.ArgumentParser:
        parser = real()
        for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
            action.choices["routers"].set_defaults(func=fail)
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    return box


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (ValueError("bad\n  value"), 2, "routeplay routers: error: bad value\n"),
        (
            PermissionError(13, "Permission denied", "t.csv"),
            2,
            "routeplay routers: error: [Errno 13] Permission denied: 't.csv'\n",
        ),
        (KeyError("no such thing"), 2, "routeplay routers: error: no such thing\n"),
        (
            RuntimeError("engine state broke"),
            1,
            "routeplay routers: error: RuntimeError: engine state broke (rerun with routeplay "
            "--debug for the traceback)\n",
        ),
        (KeyboardInterrupt(), 130, "routeplay routers: interrupted\n"),
    ],
)
def test_errors_are_one_line_with_the_right_exit_code(
    failing_command: list[BaseException],
    capsys: pytest.CaptureFixture[str],
    exc: BaseException,
    code: int,
    line: str,
) -> None:
    failing_command.append(exc)
    assert cli.main(["routers"]) == code
    captured = capsys.readouterr()
    assert captured.err == line
    assert captured.out == ""


def test_debug_shows_the_traceback(failing_command: list[BaseException]) -> None:
    failing_command.append(RuntimeError("engine state broke"))
    with pytest.raises(RuntimeError, match="engine state broke"):
        cli.main(["--debug", "routers"])


def test_corrupt_parquet_trace_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # printed a polars traceback before
    bad = tmp_path / "t.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    code = cli.main(
        ["replay", "--trace", str(bad), "--cluster", "a100x4", "--router", "round-robin"]
    )
    err = capsys.readouterr().err
    assert code in (1, 2)
    assert err.startswith("routeplay replay: error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_a_closed_output_pipe_stops_quietly() -> None:
    # `routeplay clusters | head -0`: the reader is gone before the first line
    import os
    import subprocess
    import sys

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "routeplay.cli", "clusters"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141
    assert proc.stderr == ""
