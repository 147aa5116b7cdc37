from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from routeplay.reports import JobFileError, list_builtin_jobs, load_job, parse_job, run_job

VALID = {
    "name": "demo",
    "trace": {"source": "azure-2023-conv"},
    "episodes": {"n_requests": 100},
    "cluster": {"name": "a100x4"},
    "routers": {"names": ["round-robin", "least-connections"], "baseline": "round-robin"},
}


def _with(section: str, **changes: object) -> dict[str, object]:
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in VALID.items()}
    if section:
        data.setdefault(section, {})
        data[section].update(changes)  # type: ignore[union-attr]
    else:
        data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            _with("", rauters={}),
            "job: unknown section [rauters]. Did you mean 'routers'?",
        ),
        (
            _with("episodes", n_request=5),
            "job: unknown key 'n_request' in [episodes]. Did you mean 'n_requests'? Valid keys: "
            "['drop_partial', 'duration_s', 'max_episodes', 'n_requests', 'test_fraction'].",
        ),
        (
            _with("", sed=1),
            "job: unknown key 'sed' at the top level. Did you mean 'seed'?",
        ),
        (
            _with("routers", names=["round-robin", "least-conections"]),
            "job: [routers] names = contains unknown router 'least-conections'. Did you mean "
            "'least-connections'? Run `routeplay routers` for the list.",
        ),
        (
            _with("routers", baseline="jsq"),
            "job: [routers] baseline = 'jsq' is not in [routers] names "
            "['round-robin', 'least-connections'].",
        ),
        (
            _with("cluster", name="a100x8"),
            "job: [cluster] name = 'a100x8' is neither a built-in cluster nor an existing file. "
            "Did you mean 'a100x4'?",
        ),
        (
            _with("trace", source="azure-2023-cnv"),
            "job: [trace] source = 'azure-2023-cnv' is neither a registered trace nor an existing "
            "file. Did you mean 'azure-2023-conv'?",
        ),
        (
            _with("episodes", n_requests="100"),
            "job: [episodes] n_requests = '100'; expected an integer >= 1.",
        ),
        (
            _with("episodes", duration_s=60),
            "job: [episodes] needs exactly one of n_requests and duration_s "
            "(got n_requests=100, duration_s=60.0).",
        ),
        (
            _with("statistics", metrics=["e2e"]),
            "job: [statistics] metrics = contains 'e2e'. Did you mean 'e2e_s'?",
        ),
        (
            _with("statistics", statistics=["median"]),
            "job: [statistics] statistics = contains 'median'; expected 'mean' or 'pXX' "
            "(e.g. 'p99').",
        ),
        (
            _with("predictor", kind="histogram"),
            "job: [predictor] needs [episodes] test_fraction",
        ),
        (
            _with("", seed=True),
            "job: seed = True; expected an integer >= 0.",
        ),
        (
            {k: v for k, v in VALID.items() if k != "cluster"},
            "job: missing required key [cluster] name (a built-in cluster name or a TOML path).",
        ),
    ],
)
def test_job_file_errors_are_pinned(data: dict[str, object], message: str) -> None:
    with pytest.raises(JobFileError, match=re.escape(message)):
        parse_job(data)


def test_builtin_jobs_are_valid() -> None:
    names = list_builtin_jobs()
    assert {"default", "paper", "azure-conv", "hetero-3k5k7k"} <= set(names)
    for name in names:
        job = load_job(name)
        assert job.baseline in job.routers


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("name = ")
    with pytest.raises(JobFileError, match=re.escape(f"{bad}: not valid TOML")):
        load_job(bad)
    with pytest.raises(FileNotFoundError, match="expected a TOML file or a built-in job"):
        load_job(tmp_path / "nope.toml")


def test_refuses_to_overwrite_then_overwrites(tiny_run: Path, tiny_job_file: Path) -> None:
    job = load_job(tiny_job_file)
    with pytest.raises(FileExistsError, match="already exists; pass --overwrite"):
        run_job(job, tiny_run.parent, run_id="fixture")


def _cli(*args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "routeplay.cli", "report", *args],
        capture_output=True,
        text=True,
        timeout=300,
        **kwargs,  # type: ignore[arg-type]
    )


def test_cli_bad_job_is_one_line_and_non_zero(tmp_path: Path) -> None:
    job = tmp_path / "job.toml"
    job.write_text(
        'name = "x"\n[routers]\nnames = ["round-robin"]\nbaseline = "round-robin"\nfoo = 1\n'
    )
    result = _cli(str(job), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr == (
        f"routeplay report: error: {job}: unknown key 'foo' in [routers]. Valid keys: "
        "['baseline', 'names'].\n"
    )
    assert not (tmp_path / "out").exists()


def test_killed_job_leaves_no_complete_report_and_rerun_completes(
    tiny_job_file: Path, tmp_path: Path
) -> None:
    text = tiny_job_file.read_text().replace("first_requests = 600", "first_requests = 1200")
    job = tmp_path / "kill.toml"
    job.write_text(text)
    assert tomllib.loads(text)["trace"]["first_requests"] == 1200
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "routeplay.cli",
            "report",
            str(job),
            "--out",
            str(out),
            "--run-id",
            "r1",
            "--quiet",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ},
    )
    deadline = time.monotonic() + 120
    started = False
    while time.monotonic() < deadline and proc.poll() is None:
        logs = list(out.glob(".tmp-tiny-r1-*/job.log")) if out.exists() else []
        if logs and "replay 1/" in logs[0].read_text():
            started = True
            break
        time.sleep(0.02)
    assert started, "the job never started replaying"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    visible = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    assert visible == []  # no run folder: nothing looks complete
    assert not (out / "tiny-r1").exists()
    rerun = _cli(str(job), "--out", str(out), "--run-id", "r1")
    assert rerun.returncode == 0, rerun.stderr
    printed = rerun.stdout.splitlines()
    assert printed[-1] == str(out / "tiny-r1")  # the folder last: `| tail -n 1` names it
    assert printed[-2] == f"report: {out / 'tiny-r1' / 'report.html'}"
    summary = json.loads((out / "tiny-r1" / "summary.json").read_text())
    assert printed[0] == summary["verdict"]["headline"]  # the verdict first
    assert [line.split()[0] for line in printed if line.startswith(("round-robin ", "jsq"))] == [
        "round-robin",
        "jsq-tokens",
    ]
    final = out / "tiny-r1"
    assert (final / "report.html").is_file() and (final / "summary.json").is_file()
    log = (final / "job.log").read_text()
    assert "left-over temporary folders of killed or failed runs" in log
    # not only in the log: stderr says it too (not a terminal here: warnings only)
    assert re.fullmatch(
        r"routeplay report \[ *\d+\.\d s\] warning: left-over temporary folders of killed or "
        r"failed runs: \['\.tmp-tiny-r1-\d+'\]\n",
        rerun.stderr,
    ), rerun.stderr


def test_cli_unusable_out_is_one_line_without_a_log_that_does_not_exist(
    tiny_job_file: Path, tmp_path: Path
) -> None:
    # before: "(details in OUT/.tmp-*/job.log)", a log that was never written
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    result = _cli(str(tiny_job_file), "--out", str(blocker / "runs"))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "job.log" not in result.stderr
    assert result.stderr.startswith("routeplay report: error: [Errno 20] Not a directory:")


def test_cli_talks_on_a_terminal_and_keeps_quiet_when_asked(
    tiny_job_file: Path, tmp_path: Path
) -> None:
    import fcntl
    import pty
    import struct
    import termios

    def run(*extra: str) -> tuple[int, str, str]:
        leader, follower = pty.openpty()  # stderr is a terminal, stdout a pipe
        # a terminal of 120 x 40 characters (a new pty has 0 columns: tqdm draws nothing)
        fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "routeplay.cli",
                "report",
                str(tiny_job_file),
                "--out",
                str(tmp_path / "out"),
                "--overwrite",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=follower,
            text=True,
        )
        os.close(follower)
        chunks = []
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        out, _ = proc.communicate(timeout=300)
        os.close(leader)
        return proc.returncode, out, b"".join(chunks).decode(errors="replace")

    code, out, err = run("--run-id", "tty")
    assert code == 0, err
    # stage lines from the job's own log records, with elapsed time
    assert re.search(r"routeplay report \[ *\d+\.\d s\] trace azure-2023-conv: 600 requests", err)
    assert re.search(r"routeplay report \[ *\d+\.\d s\] writing the report", err)
    assert "replay 1/6" not in err  # per-replay log lines stay in job.log: the bar counts
    # a tqdm bar over the replays, with its count and ETA
    assert re.search(r"replays: +\d+%.*\| *\d+/6 \[\d\d:\d\d<\d\d:\d\d", err), err[-2000:]
    assert out.splitlines()[-1] == str(tmp_path / "out" / "tiny-tty")
    code, out, err = run("--run-id", "quiet", "--quiet")
    assert (code, out, err) == (0, "", "")
