"""The bad-trace corpus: every file fails with its exact one-line message, everywhere.

Each file of ``tests/data/bad_traces/`` (>= 40, every supported format) goes through the
Python API (``load_trace``, ``validate_trace(scan_trace(...))``,
``describe_trace(scan_trace(...))``) and the CLI (``routeplay datasets validate|describe``);
all must fail with the message pinned in ``expected.toml`` (CLI: that one line on stderr,
exit status 2, no traceback, nothing on stdout, nothing written).
"""

from __future__ import annotations

import importlib.util
import tomllib
import warnings
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal
from routeplay.datasets import (
    TraceSchemaError,
    describe_trace,
    load_trace,
    scan_trace,
    validate_trace,
)
from routeplay.datasets._loadutil import scan_csv_chunked

from routeplay.cli import main

CORPUS = Path(__file__).resolve().parents[1] / "data" / "bad_traces"
EXPECTED: dict[str, str] = tomllib.loads((CORPUS / "expected.toml").read_text("utf-8"))
FILES = sorted(p.name for p in CORPUS.iterdir() if p.suffix not in (".py", ".toml"))


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
    }


@pytest.fixture()
def sandbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty working directory and cache: nothing may appear in them."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ROUTEPLAY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ROUTEPLAY_DATA_DIR", raising=False)
    return tmp_path


def test_manifest_covers_every_file_and_format() -> None:
    assert sorted(EXPECTED) == FILES
    assert len(FILES) >= 40
    prefixes = {name.split("_")[0] for name in FILES}
    assert prefixes == {"azure", "mooncake", "burstgpt", "vidur", "table"}
    suffixes = {"".join(Path(name).suffixes) for name in FILES}
    assert suffixes == {".csv", ".csv.gz", ".jsonl", ".parquet"}
    assert all("\n" not in message for message in EXPECTED.values())
    assert all(p.stat().st_size <= 2048 for p in CORPUS.iterdir() if p.name in EXPECTED)


@pytest.mark.parametrize("name", FILES)
def test_python_api_gives_the_exact_message(name: str, sandbox: Path) -> None:
    path = CORPUS / name
    expected = EXPECTED[name].replace("{path}", str(path))
    before = _snapshot(CORPUS)
    calls = {
        "load_trace": lambda: load_trace(path),
        "validate_trace": lambda: validate_trace(scan_trace(path)),
        "describe_trace": lambda: describe_trace(scan_trace(path)),
    }
    for label, call in calls.items():
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing is dropped with a warning either
            with pytest.raises(ValueError) as info:
                call()
        assert str(info.value) == expected, label
    assert _snapshot(CORPUS) == before
    assert list(sandbox.iterdir()) == []


@pytest.mark.parametrize("command", ["validate", "describe"])
@pytest.mark.parametrize("name", FILES)
def test_cli_prints_one_line_and_exits_2(
    name: str, command: str, sandbox: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = CORPUS / name
    expected = EXPECTED[name].replace("{path}", str(path))
    before = _snapshot(CORPUS)
    assert main(["datasets", command, str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"routeplay datasets: error: {expected}\n"
    assert "Traceback" not in err
    assert _snapshot(CORPUS) == before
    assert list(sandbox.iterdir()) == []


def test_make_corpus_rebuilds_the_files(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("make_corpus", CORPUS / "make_corpus.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for name, data in module.text_files().items():
        assert (CORPUS / name).read_bytes() == data, name
    for name, frame in module.parquet_frames().items():
        assert_frame_equal(pl.read_parquet(CORPUS / name), frame)
    names = {*module.text_files(), *module.parquet_frames(), "table_corrupt.parquet"}
    assert names == set(FILES)


# --- random ragged CSV text: a clear error or a valid trace, never anything else -------

HEADER = "arrived_at,num_prefill_tokens,num_decode_tokens"
_cell = st.sampled_from(["0", "1", "2.5", "7", "-1", "", "x", "nan", "1e3", " 3 "])
_line = st.lists(_cell, min_size=0, max_size=5).map(",".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(_line, min_size=0, max_size=8),
    eol=st.sampled_from(["\n", "\r\n"]),
    final_eol=st.booleans(),
    chunk_bytes=st.integers(min_value=1, max_value=64),
)
def test_random_ragged_csv_is_an_error_or_a_valid_trace(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[str],
    eol: str,
    final_eol: bool,
    chunk_bytes: int,
) -> None:
    path = tmp_path_factory.mktemp("rag") / "t.csv"
    path.write_bytes((eol.join([HEADER, *lines]) + (eol if final_eol else "")).encode())
    results = []
    for size in (chunk_bytes, 1 << 20):
        defaults = scan_csv_chunked.__kwdefaults__
        scan_csv_chunked.__kwdefaults__ = {"chunk_bytes": size}
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                trace = load_trace(path)
            results.append(("ok", trace.rows()))
            assert trace.height >= 1
            assert_frame_equal(validate_trace(trace), trace)
        except TraceSchemaError as exc:
            message = str(exc)
            assert "\n" not in message and message.startswith(f"{path}: ")
            assert "Fix:" in message
            results.append(("error", message))
        finally:
            scan_csv_chunked.__kwdefaults__ = defaults
    assert results[0] == results[1]  # the chunk size never changes the outcome


def test_corpus_summary_counts(capsys: pytest.CaptureFixture[str]) -> None:
    """Count cases / clear errors / silent / crashes (the figures of docs/notes/bad-input.md).

    A case is one file through one CLI command. Clear: exit 2 and exactly one line
    ``routeplay datasets: error: ...`` on stderr (``exact``: the pinned message). Silent:
    exit 0. Crash: an exception escaped, or a traceback / several lines were printed.
    """
    counts = {"cases": 0, "clear": 0, "exact": 0, "silent": 0, "crash": 0}
    for name in FILES:
        path = CORPUS / name
        for command in ("validate", "describe"):
            counts["cases"] += 1
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    status = main(["datasets", command, str(path)])
            except Exception:  # a crash is what is being counted
                capsys.readouterr()
                counts["crash"] += 1
                continue
            err = capsys.readouterr().err
            if status == 0:
                counts["silent"] += 1
            elif err.count("\n") == 1 and err.startswith("routeplay datasets: error: "):
                counts["clear"] += 1
                expected = EXPECTED[name].replace("{path}", str(path))
                counts["exact"] += err == f"routeplay datasets: error: {expected}\n"
            else:
                counts["crash"] += 1
    with capsys.disabled():
        print(f"\nbad-trace corpus: {counts}")
    n = 2 * len(FILES)
    assert counts == {"cases": n, "clear": n, "exact": n, "silent": 0, "crash": 0}
