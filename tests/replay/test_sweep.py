from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import signal
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from routeplay.replay import make_cluster, make_router, replay_episodes
from routeplay.replay.experiments._cli_sweep import register_sweep
from routeplay.replay.experiments._sweep import (
    SweepCallConfig,
    SweepCellConfig,
    SweepGrid,
    load_sweep,
    run_sweep,
)

# call-cell functions, imported by dotted path in the worker processes (this file's folder
# is on sys.path there: spawn copies the parent's sys.path)
MODULE = Path(__file__).stem


def _square(*, seed: int, x: float) -> dict[str, float]:
    return {"value": x * x + seed}


def _die_once(*, seed: int, marker: str) -> dict[str, float]:
    path = Path(marker)
    if not path.exists():
        path.write_text("died once")
        os.kill(os.getpid(), signal.SIGKILL)  # the worker vanishes mid-cell
    return {"value": float(seed)}


def _always_die(*, seed: int) -> dict[str, float]:
    os._exit(3)


def _raise(*, seed: int) -> dict[str, float]:
    raise RuntimeError(f"bad cell {seed}")


def _grid(**overrides: object) -> SweepGrid:
    options: dict[str, object] = {
        "trace": "azure-2023-code",
        "first_requests": 120,
        "episode_n_requests": 40,
        "routers": {"rr": "round-robin", "p2": "power-of-two"},
        "clusters": ("paper-2xv100",),
        "seeds": (0, 7),
    }
    options.update(overrides)
    return SweepGrid(**options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def serial_result() -> object:
    return run_sweep(_grid(), backend="serial")


def test_serial_sweep_matches_replay_episodes(serial_result) -> None:
    from routeplay.datasets import load_trace, split_episodes

    cells = serial_result.cells
    assert cells.height == 2 * 1 * 3 * 2  # routers x clusters x episodes x seeds
    assert cells["status"].to_list() == ["ok"] * cells.height
    assert cells["n_attempts"].to_list() == [1] * cells.height
    episodes = [
        e.trace for e in split_episodes(load_trace("azure-2023-code").head(120), n_requests=40)
    ]
    from routeplay.replay import ReplayConfig

    direct = replay_episodes(
        episodes,
        make_cluster("paper-2xv100"),
        {"p2": lambda: make_router("power-of-two")},
        config=ReplayConfig(seed=7, timeline_sample_interval_s=None),
    )
    mine = cells.filter(pl.col("label") == "p2", pl.col("seed") == 7).sort("episode")
    assert_frame_equal(
        mine.select("episode", "e2e_s_mean", "ttft_s_mean"),
        direct.summaries.select("episode", "e2e_s_mean", "ttft_s_mean"),
    )
    req = serial_result.requests.filter(pl.col("router") == "p2", pl.col("seed") == 7)
    assert_frame_equal(
        req.drop("key", "cluster", "seed"), direct.requests, check_column_order=False
    )


def test_process_pool_identical_to_serial(serial_result, tmp_path: Path) -> None:
    result = run_sweep(_grid(), backend="process", n_workers=2, results_dir=tmp_path)
    assert_frame_equal(result.cells, serial_result.cells)
    assert_frame_equal(result.requests, serial_result.requests)
    # resume: everything is loaded, nothing rerun, same frames
    again = run_sweep(_grid(), backend="process", n_workers=2, results_dir=tmp_path)
    assert again.n_loaded == again.cells.height == 12
    assert_frame_equal(again.cells, serial_result.cells)
    assert_frame_equal(again.requests, serial_result.requests)
    # a missing record is recomputed, the rest are loaded
    key = serial_result.cells["key"][3]
    (tmp_path / "cells" / f"{key}.json").unlink()
    third = run_sweep(_grid(), backend="serial", results_dir=tmp_path)
    assert third.n_loaded == 11
    assert_frame_equal(third.cells, serial_result.cells)
    assert json.loads((tmp_path / "sweep.json").read_text())["grid"]["seeds"] == [0, 7]


def test_ray_local_identical_to_serial(serial_result) -> None:
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        result = run_sweep(_grid(), backend="ray")
    finally:
        ray.shutdown()
    assert_frame_equal(result.cells, serial_result.cells)
    assert_frame_equal(result.requests, serial_result.requests)


def test_killed_worker_is_retried_and_every_cell_accounted(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    grid = SweepGrid(
        calls=(
            SweepCallConfig(
                label="sq", function=f"{MODULE}:_square", params={"x": 3.0}, seeds=(0, 1)
            ),
            SweepCallConfig(
                label="die-once",
                function=f"{MODULE}:_die_once",
                params={"marker": str(marker)},
                seeds=(5,),
            ),
            SweepCallConfig(label="always-die", function=f"{MODULE}:_always_die"),
            SweepCallConfig(label="raises", function=f"{MODULE}._raise", seeds=(4,)),
        )
    )
    result = run_sweep(grid, backend="process", n_workers=2)
    rows = {r["label"]: r for r in result.cells.iter_rows(named=True)}
    assert result.cells["label"].to_list() == ["sq", "sq", "die-once", "always-die", "raises"]
    assert result.cells["value"].to_list()[:3] == [9.0, 10.0, 5.0]
    assert marker.read_text() == "died once"
    assert (rows["die-once"]["status"], rows["die-once"]["n_attempts"]) == ("ok", 2)
    assert (rows["always-die"]["status"], rows["always-die"]["n_attempts"]) == ("failed", 2)
    assert rows["always-die"]["error"] == (
        "worker process died while running the cell (exit code 3)"
    )
    assert (rows["raises"]["status"], rows["raises"]["error"]) == (
        "failed",
        "RuntimeError: bad cell 4",
    )
    assert result.n_failed == 2
    assert result.failed()["label"].to_list() == ["always-die", "raises"]


def test_cell_key_is_sha256_of_canonical_json() -> None:
    cell = SweepCellConfig(
        kind="call", label="sq", seed=2, spec={"params": {"x": 1.5}, "function": "m:f"}
    )
    text = (
        '{"format":1,"kind":"call","label":"sq","seed":2,'
        '"spec":{"function":"m:f","params":{"x":1.5}}}'
    )
    assert cell.key == hashlib.sha256(text.encode()).hexdigest()
    cells = _grid(first_requests=None, episodes=(0,), seeds=(0, 1)).cells()
    assert len({c.key for c in cells}) == len(cells) == 4
    chunked = _grid(episodes=(0,), clusters=("a100x4", "a100x4-chunked")).cells()
    assert chunked[0].spec["cluster_sha256"] != chunked[2].spec["cluster_sha256"]


def test_grid_validation_messages() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("SweepGrid.seeds = (0, 0) repeats a seed; expected distinct seeds."),
    ):
        _grid(seeds=(0, 0))
    with pytest.raises(
        ValueError, match=re.escape("SweepGrid got both episode_n_requests and episode_duration_s")
    ):
        _grid(episode_duration_s=10.0)
    with pytest.raises(
        ValueError, match=re.escape("router 'x' = {'mode': 'best-fit'} has no 'name'")
    ):
        _grid(routers={"x": {"mode": "best-fit"}})
    with pytest.raises(
        ValueError,
        match=re.escape(
            "run_sweep backend = 'dask'; expected one of ['serial', 'process', 'ray']."
        ),
    ):
        run_sweep(_grid(), backend="dask")  # type: ignore[arg-type]
    result = run_sweep(
        _grid(episodes=(9,), routers={"rr": "round-robin"}, seeds=(0,)), backend="serial"
    )
    assert result.cells["error"].to_list() == [
        "ValueError: episode 9 does not exist: trace 'azure-2023-code' splits into 3 "
        "episodes (0..2)."
    ]


def test_cli_sweep_runs_a_toml_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "two.toml").write_text(
        '[[instances]]\nname = "s"\ncount = 2\ntokens_per_s = 3000.0\nmax_running_seqs = 3\n'
    )
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(
        'trace = "azure-2023-code"\nfirst_requests = 60\nepisode_n_requests = 30\n'
        'clusters = ["two.toml"]\nseeds = [1]\n'
        '[routers]\nrr = "round-robin"\nmc = { name = "max-capacity", mode = "best-fit" }\n'
    )
    grid = load_sweep(sweep)
    assert grid.clusters == (str(tmp_path / "two.toml"),)
    parser = argparse.ArgumentParser()
    register_sweep(parser.add_subparsers())
    out = tmp_path / "out"
    args = parser.parse_args(["sweep", str(sweep), "--backend", "serial", "--out", str(out)])
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("4 cells: 4 ok, 0 failed, 0 loaded from earlier runs")
    cells = pl.read_parquet(out / "cells.parquet")
    assert cells.select("label", "episode").rows() == [("rr", 0), ("rr", 1), ("mc", 0), ("mc", 1)]
    assert pl.read_parquet(out / "requests.parquet").height == 4 * 30


def _call_sweep(tmp_path: Path, function: str, params: str) -> Path:
    sweep = tmp_path / "calls.toml"
    sweep.write_text(
        'trace = "azure-2023-code"\n'
        f'[[calls]]\nlabel = "c"\nfunction = "{function}"\nparams = {{ {params} }}\nseeds = [0]\n'
    )
    return sweep


def test_sweep_files_name_only_registered_functions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before, this truncated victim.txt: a sweep file could call any importable function.
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    sweep = _call_sweep(tmp_path, "logging:basicConfig", f'filename = "{victim}", filemode = "w"')
    message = (
        "calls[0].function = 'logging:basicConfig' is not a registered sweep function; a sweep "
        "file that names any importable function is code (it runs in every worker)."
    )
    with pytest.raises(ValueError, match=re.escape(message)):
        load_sweep(sweep)
    from routeplay.cli import main

    assert main(["sweep", str(sweep), "--backend", "serial", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"routeplay sweep: error: sweep file {str(sweep)!r}: {message}")
    assert err.count("\n") == 1
    assert victim.read_text() == "precious"


def test_allow_code_and_registered_functions_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from routeplay.replay import register_sweep_function
    from routeplay.replay.experiments import _sweep

    # the registry is process-wide: give this test its own, so other tests see none
    monkeypatch.setattr(_sweep, "_SWEEP_FUNCTIONS", set())

    function = f"{MODULE}:_square"
    sweep = _call_sweep(tmp_path, function, "x = 3.0")
    grid = load_sweep(sweep, allow_code=True)
    cells = run_sweep(grid, backend="serial").cells
    assert cells.select("label", "status", "value").rows() == [("c", "ok", 9.0)]
    assert register_sweep_function(function) == function
    assert load_sweep(sweep) == grid
    with pytest.raises(ValueError, match=re.escape("cannot import sweep function 'nope:f'")):
        register_sweep_function("nope:f")
