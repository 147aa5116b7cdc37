"""Issue 15 (datasets side): each reproduced failure, pinned by a test.

Parquet timestamps and durations, ragged CSV rows at any chunk boundary, ``describe``
validating, hash pinning of unhashed registered traces, and registered names beating
local files of the same name.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path

import polars as pl
import pytest
from routeplay.datasets import (
    TraceSchemaError,
    _registry,
    describe_trace,
    fetch,
    load_trace,
    scan_table,
    scan_trace,
)
from routeplay.datasets._loadutil import scan_csv_chunked
from routeplay.datasets._registry import TraceInfo, sha256_of

from routeplay.cli import main

TOKENS = {"prompt_tokens": [5, 6, 7], "output_tokens": [1, 2, 3]}

# --- 1. Parquet Datetime / Duration arrivals ------------------------------------------


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
@pytest.mark.parametrize("zone", [None, "UTC", "Europe/Paris", "America/New_York"])
def test_parquet_datetime_arrivals_become_seconds_from_first(
    tmp_path: Path, unit: str, zone: str | None, capsys: pytest.CaptureFixture[str]
) -> None:
    t0 = dt.datetime(2024, 5, 1, 12, 0, 0)
    stamps = [t0 + dt.timedelta(seconds=s) for s in (2.25, 0.0, 1.5)]  # unsorted on purpose
    frame = pl.DataFrame({"arrival_s": stamps, **TOKENS}).with_columns(
        pl.col("arrival_s").cast(pl.Datetime(unit))  # type: ignore[arg-type]
    )
    if zone is not None:
        frame = frame.with_columns(pl.col("arrival_s").dt.replace_time_zone(zone))
    path = tmp_path / "t.parquet"
    frame.write_parquet(path)
    trace = load_trace(path)
    assert trace["arrival_s"].to_list() == [0.0, 1.5, 2.25]
    assert trace["prompt_tokens"].to_list() == [6, 7, 5]
    assert describe_trace(scan_trace(path)).span_s == 2.25
    assert main(["datasets", "validate", str(path)]) == 0
    assert capsys.readouterr().out == "ok: 3 requests\n"


def test_parquet_datetime_across_a_dst_change_uses_real_elapsed_time(tmp_path: Path) -> None:
    # 2024-03-31 01:59:59 -> 03:00:00 Paris wall time is one real second (UTC+1 -> UTC+2)
    stamps = pl.Series(["2024-03-31 01:59:59", "2024-03-31 03:00:00"]).str.to_datetime()
    path = tmp_path / "dst.parquet"
    pl.DataFrame(
        {
            "arrival_s": stamps.dt.replace_time_zone("Europe/Paris"),
            "prompt_tokens": [1, 2],
            "output_tokens": [1, 1],
        }
    ).write_parquet(path)
    assert load_trace(path)["arrival_s"].to_list() == [0.0, 1.0]


@pytest.mark.parametrize("unit", ["ms", "us", "ns"])
def test_parquet_duration_arrivals_are_seconds(tmp_path: Path, unit: str) -> None:
    offsets = [dt.timedelta(milliseconds=ms) for ms in (0, 1500, 2250)]
    path = tmp_path / "d.parquet"
    pl.DataFrame({"arrival_s": offsets, **TOKENS}).with_columns(
        pl.col("arrival_s").cast(pl.Duration(unit))  # type: ignore[arg-type]
    ).write_parquet(path)
    assert load_trace(path)["arrival_s"].to_list() == [0.0, 1.5, 2.25]


def test_parquet_date_and_mapped_datetime_column(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pl.DataFrame(
        {"day": [dt.date(2024, 1, 2), dt.date(2024, 1, 1)], "p": [3, 4], "o": [1, 1]}
    ).write_parquet(path)
    columns = {"arrival_s": "day", "prompt_tokens": "p", "output_tokens": "o"}
    assert scan_table(path, columns=columns).collect()["arrival_s"].to_list() == [0.0, 86400.0]


def test_parquet_time_unit_contradicting_the_column_is_refused(tmp_path: Path) -> None:
    t0 = dt.datetime(2024, 5, 1)
    stamps = tmp_path / "stamps.parquet"
    pl.DataFrame(
        {"arrival_s": [t0, t0], "prompt_tokens": [1, 1], "output_tokens": [1, 1]}
    ).write_parquet(stamps)
    with pytest.raises(
        TraceSchemaError,
        match=re.escape(
            f"{stamps}: column 'arrival_s' holds timestamps (Datetime(time_unit='us', "
            "time_zone=None)), but time_unit='ms' was given, which is the unit of numeric "
            "times; expected time_unit=None or 'datetime' for timestamps. Fix: omit time_unit"
        ),
    ):
        load_trace(stamps, time_unit="ms")
    assert load_trace(stamps, time_unit="datetime")["arrival_s"].to_list() == [0.0, 0.0]
    durations = tmp_path / "durations.parquet"
    pl.DataFrame(
        {"arrival_s": [dt.timedelta(0)], "prompt_tokens": [1], "output_tokens": [1]}
    ).with_columns(pl.col("arrival_s").cast(pl.Duration("ms"))).write_parquet(durations)
    with pytest.raises(
        TraceSchemaError,
        match=re.escape(
            "holds durations (Duration(time_unit='ms')), which carry their own unit, but "
            "time_unit='s' was given; expected no time_unit for durations. Fix: omit time_unit"
        ),
    ):
        load_trace(durations, time_unit="s")
    numbers = tmp_path / "numbers.parquet"
    pl.DataFrame({"t": [0.5], "p": [1], "o": [1]}).write_parquet(numbers)
    with pytest.raises(
        TraceSchemaError,
        match=re.escape(
            f"{numbers}: column 't' (mapped to arrival_s) holds numbers (Float64), but "
            "time_unit='datetime' was given"
        ),
    ):
        load_trace(
            numbers,
            columns={"arrival_s": "t", "prompt_tokens": "p", "output_tokens": "o"},
            time_unit="datetime",
        )
    got = load_trace(
        numbers,
        columns={"arrival_s": "t", "prompt_tokens": "p", "output_tokens": "o"},
        time_unit="ms",
    )
    assert got["arrival_s"].to_list() == [0.0005]


# --- 2. ragged rows in the chunked CSV reader, wherever the chunks are cut --------------

AZ = "TIMESTAMP,ContextTokens,GeneratedTokens\n"
ROWS = [f"2023-11-16 18:17:0{k}.9799600,48{k},1{k}\n" for k in range(6)]
HEADER_TEXT = "(TIMESTAMP,ContextTokens,GeneratedTokens)"
RAGGED = {
    "truncated last line": (
        AZ + "".join(ROWS) + "2023-11-16 18:17:09.9799600,48",
        8,
        "has 2 fields '2023-11-16 18:17:09.9799600,48'",
    ),
    "short first row": (
        AZ + "2023-11-16 18:17:00.9799600,48\n" + "".join(ROWS[1:]),
        2,
        "has 2 fields '2023-11-16 18:17:00.9799600,48'",
    ),
    "extra field mid-file": (
        AZ + "".join(ROWS[:3]) + "2023-11-16 18:17:03.9799600,48,10,7\n" + "".join(ROWS[4:]),
        5,
        "has 4 fields '2023-11-16 18:17:03.9799600,48,10,7'",
    ),
    "extra field first row": (
        AZ + "2023-11-16 18:17:00.9799600,48,10,7\n" + "".join(ROWS[1:]),
        2,
        "has 4 fields '2023-11-16 18:17:00.9799600,48,10,7'",
    ),
    "blank line mid-file": (AZ + "".join(ROWS[:2]) + "\r\n" + "".join(ROWS[2:]), 4, "is blank"),
    "CRLF extra field": (
        (AZ + "".join(ROWS[:2]) + "2023-11-16 18:17:02.9,1,2,\n").replace("\n", "\r\n"),
        4,
        "has 4 fields '2023-11-16 18:17:02.9,1,2,'",
    ),
}
CHUNKS = [1, 2, 3, 5, 8, 13, 21, 34, 37, 55, 89, 144, 4 << 20]


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
@pytest.mark.parametrize("case", sorted(RAGGED))
def test_ragged_rows_are_named_at_every_chunk_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case: str, chunk_bytes: int
) -> None:
    text, line, what = RAGGED[case]
    path = tmp_path / "t.csv"
    path.write_bytes(text.encode())
    expected = (
        f"{path}: line {line} {what}; expected 3 comma-separated fields like the header "
        f"{HEADER_TEXT}. Fix: repair or remove that line (a cut-off last line usually means "
        "an interrupted download or copy: fetch the file again)."
    )
    with pytest.raises(TraceSchemaError) as info:
        scan_csv_chunked(path, ["TIMESTAMP"], chunk_bytes=chunk_bytes).collect()
    assert str(info.value) == expected
    assert info.value.row == line - 2
    monkeypatch.setattr(scan_csv_chunked, "__kwdefaults__", {"chunk_bytes": chunk_bytes})
    with pytest.raises(TraceSchemaError) as info:
        load_trace(path)
    assert str(info.value) == expected


@pytest.mark.parametrize("chunk_bytes", CHUNKS)
def test_trailing_blank_lines_are_fine_and_gzip_truncation_is_named(
    tmp_path: Path, chunk_bytes: int
) -> None:
    import gzip

    path = tmp_path / "t.csv"
    path.write_bytes((AZ + "".join(ROWS) + "\n\r\n\n").encode())
    got = scan_csv_chunked(path, ["ContextTokens"], chunk_bytes=chunk_bytes).collect()
    assert got["ContextTokens"].to_list() == [f"48{k}" for k in range(6)]
    gz = tmp_path / "t.csv.gz"
    gz.write_bytes(gzip.compress((AZ + "".join(ROWS) * 50).encode())[:-40])
    with pytest.raises(
        TraceSchemaError, match=re.escape(f"{gz}: cannot read the file near line ")
    ) as info:
        scan_csv_chunked(gz, ["TIMESTAMP"], chunk_bytes=chunk_bytes).collect()
    assert "the gzip stream is truncated or corrupt" in str(info.value)


# --- 3. describe validates ------------------------------------------------------------


def test_describe_refuses_negative_tokens_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "neg.csv"
    path.write_text("arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,5,1\n1.0,-3,2\n")
    assert main(["datasets", "describe", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"routeplay datasets: error: {path}: column 'prompt_tokens': row 1 has value -3; "
        "expected an integer >= 1. Fix: remove such rows explicitly (the loaders' "
        "drop_zero_tokens=True does this and warns with counts). (rows are counted in "
        "arrival order)\n"
    )
    frame = pl.DataFrame(
        {"arrival_s": [0.0, 1.0], "prompt_tokens": [5, -3], "output_tokens": [1, 2]}
    )
    with pytest.raises(
        TraceSchemaError, match=re.escape("column 'prompt_tokens': row 1 has value -3")
    ):
        describe_trace(frame)


def test_describe_unreadable_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text('{"timestamp": 0, "input_length": 6, "output_length": 1, "hash_ids": []}\n{')
    assert main(["datasets", "describe", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"routeplay datasets: error: {path}: row 1 (line 2) is not valid JSON")
    assert err.count("\n") == 1


# --- 4. pinning hashes of traces without a published sha256 ----------------------------


def _unhashed(monkeypatch: pytest.MonkeyPatch, url: str) -> TraceInfo:
    info = TraceInfo(
        name="fake-unhashed",
        url=url,
        sha256=None,
        license="CC0-1.0",
        citation="nobody",
        format="vidur",
        n_rows=None,
        mirror_path="fake/unhashed.csv",
    )
    monkeypatch.setitem(_registry._BY_NAME, info.name, info)
    monkeypatch.delenv("ROUTEPLAY_DATA_DIR", raising=False)
    return info


GOOD = b"arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,5,1\n"


def test_download_without_hash_is_pinned_then_checked(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served = tmp_path / "served.csv"
    served.write_bytes(GOOD)
    info = _unhashed(monkeypatch, served.as_uri())
    cache = tmp_path / "cache"
    pin = _registry.pin_path(info, cache)
    with pytest.warns(_registry.HashPinnedWarning, match=re.escape(f"pinned that hash in {pin}")):
        path = fetch(info.name, cache_dir=cache)
    record = json.loads(pin.read_text())
    assert record["sha256"] == hashlib.sha256(GOOD).hexdigest() == sha256_of(path)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fetch(info.name, cache_dir=cache) == path  # same content: silent
    path.write_bytes(GOOD + b"1.0,7,2\n")  # the cached copy changes
    changed = sha256_of(path)
    message = (
        f"{path} has sha256 {changed}, but 'fake-unhashed' was pinned to sha256 "
        f"{record['sha256']} on first use (pin file {pin}); no published hash is registered, "
        "so the content changed since then. Fix: restore the original file; or, if the new "
        f"content is the one you want, delete {pin} or pass --repin (Python: "
        "fetch('fake-unhashed', repin=True)) to pin it again."
    )
    with pytest.raises(ValueError) as exc:
        fetch(info.name, cache_dir=cache)
    assert str(exc.value) == message
    with pytest.warns(_registry.HashPinnedWarning):
        fetch(info.name, cache_dir=cache, repin=True)
    assert json.loads(pin.read_text())["sha256"] == changed
    # a new download that differs from the pin is discarded, not used
    path.unlink()
    served.write_bytes(GOOD + b"9.0,9,9\n")
    with pytest.raises(ValueError, match=re.escape("the download from")):
        fetch(info.name, cache_dir=cache)
    assert not path.exists()


def test_mirror_file_without_hash_is_pinned_and_cli_says_so(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    info = _unhashed(monkeypatch, "https://example.invalid/unhashed.csv")
    mirror = tmp_path / "mirror"
    (mirror / "fake").mkdir(parents=True)
    (mirror / info.mirror_path).write_bytes(GOOD)
    monkeypatch.setenv("ROUTEPLAY_DATA_DIR", str(mirror))
    monkeypatch.setenv("ROUTEPLAY_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["datasets", "validate", info.name]) == 0
    out, err = capsys.readouterr()
    assert out == "ok: 1 requests\n"
    assert err.startswith(
        f"routeplay datasets: note: 'fake-unhashed': no published sha256 is registered, so "
        f"{mirror / info.mirror_path} (from ROUTEPLAY_DATA_DIR) could not be verified"
    )
    assert err.count("\n") == 1
    assert main(["datasets", "validate", info.name]) == 0
    assert capsys.readouterr().err == ""
    (mirror / info.mirror_path).write_bytes(GOOD + b"1.0,7,2\n")
    assert main(["datasets", "describe", info.name]) == 2
    err = capsys.readouterr().err
    assert "was pinned to sha256" in err and "--repin" in err and err.count("\n") == 1
    assert main(["datasets", "validate", info.name, "--repin"]) == 0
    assert capsys.readouterr().err.startswith("routeplay datasets: note:")


# --- 5. a local file named like a registered trace -----------------------------------


def test_registered_name_wins_over_a_local_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ROUTEPLAY_DATA_DIR", raising=False)
    monkeypatch.setenv("ROUTEPLAY_CACHE_DIR", str(tmp_path / "cache"))
    Path("azure-2023-code").write_text("arrival_s,prompt_tokens,output_tokens\n0.0,5,1\n0.5,6,2\n")
    assert load_trace("azure-2023-code").height == 8819
    assert load_trace("./azure-2023-code").height == 2
    assert load_trace(Path("azure-2023-code")).height == 2
    assert scan_trace("azure-2023-code").select(pl.len()).collect().item() == 8819
