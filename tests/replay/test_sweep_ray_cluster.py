"""``routeplay sweep --ray-address`` against a real Ray head node (docs/ray.md).

The fixture starts a head node with the venv's ``ray start --head`` in a new session
(its own process group), on free ports, with a short private ``--temp-dir`` (Ray's
unix sockets live under it and their paths are limited to ~107 bytes) and with a
fresh token for Ray's token authentication. The test runs the ``routeplay`` entry
point in a subprocess that joins that head, and compares its result files with the
serial backend, bit for bit.

Teardown does what ``ray stop --force`` does (SIGKILL), but only to this head's
processes: its process group, plus any process whose environment carries this test's
token (the workers Ray spawns inherit it). ``ray stop`` itself is never called: it
stops every Ray process of the machine, including other test runs' clusters.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal
from routeplay.replay.experiments._sweep import load_sweep, run_sweep

TIMEOUT_S = 180.0  # per subprocess; a cold `ray start` takes ~8 s on a 2-core machine
BIN = Path(sys.executable).parent  # the venv's bin/: python, ray, routeplay

SWEEP_TOML = """\
trace = "azure-2023-conv"
first_requests = 40
episode_n_requests = 20
clusters = ["paper-2xv100", "two.toml"]
seeds = [0, 3]

[routers]
rr = "round-robin"
p2 = "power-of-two"
mc = { name = "max-capacity", mode = "best-fit" }
"""
CLUSTER_TOML = """\
[[instances]]
name = "s"
count = 2
tokens_per_s = 3000.0
max_running_seqs = 3
"""
N_CELLS = 3 * 2 * 2 * 2  # routers x clusters x episodes x seeds


@dataclass(frozen=True)
class RayHead:
    """A running head node: where to reach it and what identifies its processes."""

    address: str
    temp_dir: Path
    env: dict[str, str]  # the environment of the head; a driver needs the same token
    pgid: int
    token: str


def _require_ray() -> Path:
    ray_cli = BIN / "ray"
    if importlib.util.find_spec("ray") is None or not ray_cli.is_file():
        pytest.fail(
            f"Ray is not installed in {sys.prefix} (no `ray` module or no {ray_cli}); this "
            "test needs it: pip install -e '.[test]' (or 'routeplay[ray]')."
        )
    return ray_cli


def _free_ports(n: int) -> list[int]:
    """``n`` distinct ports that are free right now (bound together, then released)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("", 0))
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _head_processes(pgid: int, token: str) -> list[int]:
    """Live (non-zombie) processes of the head: in its process group or holding its token."""
    proc = Path("/proc")
    if not proc.is_dir():  # not Linux: the process group is all we can find
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        return [pgid]
    marker = f"RAY_AUTH_TOKEN={token}".encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            state, _ppid, pgrp = stat[stat.rindex(")") + 2 :].split()[:3]
            if state == "Z":
                continue
            if int(pgrp) == pgid or marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except (OSError, ValueError):  # gone meanwhile, or another user's process
            continue
    return found


def _stop_head(pgid: int, token: str) -> list[int]:
    """SIGKILL the head's processes (like ``ray stop --force``); returns any survivors."""
    deadline = time.monotonic() + 30.0
    while True:
        pids = _head_processes(pgid, token)
        if not pids or time.monotonic() > deadline:
            return pids
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)


@pytest.fixture()
def ray_head() -> Iterator[RayHead]:
    ray_cli = _require_ray()
    # short: <temp-dir>/session_<date>_<time>_<us>_<pid>/sockets/plasma_store must stay
    # under the unix socket path limit; pytest's tmp_path can be too long
    short_root = "/tmp" if Path("/tmp").is_dir() else None
    temp_dir = Path(tempfile.mkdtemp(prefix="rp-ray-", dir=short_root))
    gcs_port, client_port, agent_port = _free_ports(3)
    token = secrets.token_hex(32)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token",  # explicit: the default depends on ~/.ray/auth_token existing
        RAY_AUTH_TOKEN=token,
        RAY_USAGE_STATS_ENABLED="0",
    )
    command = [
        str(ray_cli), "start", "--head",
        "--port", str(gcs_port),
        "--ray-client-server-port", str(client_port),  # default 10001: clashes
        "--dashboard-agent-listen-port", str(agent_port),  # default 52365: clashes
        "--num-cpus", "1",
        "--object-store-memory", str(100 * 1024**2),
        "--include-dashboard=false",
        "--disable-usage-stats",
        "--temp-dir", str(temp_dir),
    ]  # fmt: skip
    start = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # the head's processes inherit this process group
    )
    try:
        try:
            output, _ = start.communicate(timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired:
            start.kill()
            output, _ = start.communicate()
            pytest.fail(f"`ray start --head` did not finish in {TIMEOUT_S:.0f} s:\n{output}")
        if start.returncode != 0:
            pytest.fail(f"`ray start --head` failed (exit code {start.returncode}):\n{output}")
        yield RayHead(
            address=f"127.0.0.1:{gcs_port}",
            temp_dir=temp_dir,
            env=env,
            pgid=start.pid,
            token=token,
        )
    finally:
        survivors = _stop_head(start.pid, token)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not survivors, f"Ray head processes survived SIGKILL: {survivors}"


def test_cli_sweep_on_a_ray_head_node_is_identical_to_serial(
    ray_head: RayHead, tmp_path: Path
) -> None:
    (tmp_path / "two.toml").write_text(CLUSTER_TOML)
    sweep = tmp_path / "sweep.toml"
    sweep.write_text(SWEEP_TOML)
    out = tmp_path / "out"
    command = [
        str(BIN / "routeplay"), "sweep", str(sweep),
        "--ray-address", ray_head.address,
        "--out", str(out),
        "--quiet",
    ]  # fmt: skip
    driver = subprocess.Popen(
        command,
        env=ray_head.env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        stdout, stderr = driver.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        driver.kill()
        stdout, stderr = driver.communicate()
        pytest.fail(f"routeplay sweep did not finish in {TIMEOUT_S:.0f} s:\n{stdout}\n{stderr}")
    assert driver.returncode == 0, f"routeplay sweep failed:\n{stdout}\n{stderr}"
    assert stdout.startswith(f"{N_CELLS} cells: {N_CELLS} ok, 0 failed, 0 loaded"), stdout
    # it joined this head (no local cluster of its own): the head's session holds the
    # core log of a driver with the CLI's pid
    assert "Connecting to existing Ray cluster" in stderr, stderr
    logs = ray_head.temp_dir / "session_latest" / "logs"
    assert list(logs.glob(f"python-core-driver-*_{driver.pid}.log")), sorted(
        p.name for p in logs.iterdir()
    )

    serial = run_sweep(load_sweep(sweep), backend="serial")
    cells = pl.read_parquet(out / "cells.parquet")
    requests = pl.read_parquet(out / "requests.parquet")
    assert cells.height == N_CELLS
    assert requests.height == N_CELLS * 20
    assert_frame_equal(cells, serial.cells, check_exact=True)
    assert_frame_equal(requests, serial.requests, check_exact=True)
    # the resumable per-cell store was written by the driver, one record per cell
    assert len(list((out / "cells").glob("*.json"))) == N_CELLS
