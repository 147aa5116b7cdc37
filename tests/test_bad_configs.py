"""A corpus of bad configuration files: one clear line each, through the API and the CLI.

The cases live in ``tests/data/bad_configs/cases.toml`` (cluster files, report job files,
sweep files). For each one the Python loader raises ``ValueError`` with exactly the
pinned message, and the CLI command that reads such a file prints exactly that message
as one line on stderr, exits 2, prints nothing on stdout and writes no output folder.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from routeplay.replay import load_cluster, load_sweep
from routeplay.reports import load_job

from routeplay.cli import main

CASES: list[dict[str, Any]] = tomllib.loads(
    (Path(__file__).parent / "data" / "bad_configs" / "cases.toml").read_text()
)["case"]
LOADERS = {"cluster": load_cluster, "job": load_job, "sweep": load_sweep}


def _pattern(message: str, path: Path) -> str:
    """The pinned message as a full-match regex: {path} is the file, '...' any text."""
    parts = message.replace("{path}", str(path)).split("...")
    return ".*".join(re.escape(p) for p in parts)


def _cli(kind: str, path: Path, out: Path) -> list[str]:
    if kind == "cluster":
        return [
            "replay",
            "--trace",
            "azure-2023-conv",
            "--first-requests",
            "5",
            "--cluster",
            str(path),
            "--router",
            "round-robin",
            "--out",
            str(out),
        ]
    if kind == "job":
        return ["report", str(path), "--out", str(out)]
    return ["sweep", str(path), "--backend", "serial", "--out", str(out)]


def test_the_corpus_is_large_and_names_are_unique() -> None:
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    kinds = {k: sum(c["kind"] == k for c in CASES) for k in LOADERS}
    assert sum(kinds.values()) == len(CASES) >= 40 and min(kinds.values()) >= 7, kinds


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_bad_config_gives_one_clear_line(
    case: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / f"{case['name']}.toml"
    path.write_text(case["text"] + "\n")
    pattern = _pattern(case["message"], path)
    with pytest.raises(ValueError) as info:
        LOADERS[case["kind"]](path)
    assert re.fullmatch(pattern, " ".join(str(info.value).split())), str(info.value)
    out = tmp_path / "out"
    code = main(_cli(case["kind"], path, out))
    captured = capsys.readouterr()
    command = _cli(case["kind"], path, out)[0]
    assert code == 2, captured.err
    assert captured.out == ""
    assert captured.err.endswith("\n") and captured.err.count("\n") == 1, captured.err
    assert re.fullmatch(re.escape(f"routeplay {command}: error: ") + pattern, captured.err[:-1]), (
        captured.err
    )
    assert not out.exists()
