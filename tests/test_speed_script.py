"""benchmarks/speed.py (issue 16's speed figures) runs end to end and imports what it says.

The smoke run replays tiny setups (a few seconds) without the data mirror; the shim test
checks the mechanism behind ``--baseline``: a folder of symlinks mapping a checkout's
package layout, first on ``PYTHONPATH``, wins over the editable install. It is built here
from this checkout, so no git command runs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "speed.py"


def _load_speed() -> ModuleType:
    spec = importlib.util.spec_from_file_location("routeplay_bench_speed", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_smoke_run_prints_every_target_and_writes_json(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "ROUTEPLAY_DATA_DIR"}
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for row in (
        "| 1 conv fast, round-robin ",
        "| 1 conv fast, jsq-tokens ",
        "| 1 conv fast, min-min ",
        "| 1 conv reference, round-robin ",
        "| 2 conv vs baseline ",
        "| 3 synthetic 1,000 ",
        "| 3 synthetic 1M ",
        "| 4 Engine.fork ",
        "| 5 RoutingEnv ",
        "| 5 its engine alone ",
        "| 6 lookahead-oracle ",
        "| 7 fit_online, update every step ",
        "| 7 fit_online, update every 10 steps ",
        "| 8 label_states, 1 worker(s) ",
        "| 8 label_states, 2 worker(s) ",
    ):
        assert row in out.stdout, (row, out.stdout)
    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    record = json.loads(files[0].read_text())
    assert record["sizes"]["label"] == "smoke"
    figs = record["figures"]
    assert set(figs) == {"conv", "scale", "fork", "env", "lookahead", "online", "label"}
    assert figs["conv"]["trace"].startswith("azure-2023-conv (embedded)")
    assert figs["conv"]["fast"]["round-robin"]["requests"] == 300
    # fast and reference mode replay the same simulation
    assert max(figs["conv"]["reference_vs_fast_e2e_mean_rel_diff"].values()) < 1e-9
    assert figs["fork"]["in_flight"] >= 100
    assert figs["env"]["steps"] == 200
    assert figs["env"]["best_engine_alone_steps_per_s"] > 0
    assert figs["lookahead"]["n_decisions"] >= 15
    assert [p["requests"] for p in figs["scale"]["points"]] == [1000, 3000]
    for run in figs["online"]["runs"].values():
        assert 0.0 < run["env_share"] < 1.0  # the env ran, and it is not all of the run
    assert figs["label"]["same_labels"] is True
    assert [run["labels"] for run in figs["label"]["runs"].values()] == [40, 40]

    assert record["table"] in out.stdout


def test_only_and_baseline_flags_are_checked() -> None:
    speed = _load_speed()
    args = speed.parse_args(["--only", "fork,env", "--smoke"])
    assert args.figures == ["fork", "env"]
    assert speed.parse_args(["--baseline", "HEAD"]).figures == list(speed.FIGURES)
    assert "baseline" not in speed.parse_args([]).figures
    assert speed.parse_args([]).baseline_figures == ["conv"]
    args = speed.parse_args(["--baseline", "HEAD", "--baseline-figures", "env, lookahead,online"])
    assert args.baseline_figures == ["env", "lookahead", "online"]
    for bad in (
        ["--only", "forks"],
        ["--only", "baseline"],
        ["--rounds", "0"],
        ["--baseline-figures", "scale"],
        ["--baseline-figures", "env,env"],
        ["--baseline-figures", ","],
    ):
        with pytest.raises(SystemExit):
            speed.parse_args(bad)


def test_shim_on_pythonpath_imports_the_mapped_checkout(tmp_path: Path) -> None:
    speed = _load_speed()
    shim = speed.build_shim(ROOT, tmp_path / "shim")
    pkg = shim / "routeplay"
    assert (pkg / "replay").resolve() == ROOT / "replay"
    assert (pkg / "__init__.py").resolve() == ROOT / "routeplay" / "__init__.py"
    assert not (pkg / "__pycache__").exists()
    code = (
        "import json, routeplay.replay, routeplay.datasets; "
        "print(json.dumps({'routeplay_file': routeplay.__file__, "
        "'replay_file': routeplay.replay.__file__, "
        "'n': routeplay.datasets.load_trace('azure-2023-conv').height}))"
    )
    env = dict(os.environ, PYTHONPATH=str(shim))
    # not from the repository root: with ``-c`` the working folder comes first on sys.path
    # and its routeplay/ would win (the worker runs as a script: benchmarks/ comes first)
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    got = json.loads(out.stdout)
    speed._check_import(got, inside=shim, resolves_to=ROOT)  # raises if not
    assert Path(got["routeplay_file"]).parent == pkg
    assert Path(got["replay_file"]).parent == pkg / "replay"
    assert got["n"] == 19_366  # package data is reachable through the links
    with pytest.raises(RuntimeError, match="expected it under"):
        speed._check_import(got, inside=ROOT, resolves_to=ROOT)
