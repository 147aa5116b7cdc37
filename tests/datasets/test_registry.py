"""Registry entries and fetch(): mirror first, cache, embedded copy, verified download."""

from __future__ import annotations

import dataclasses
import hashlib
import re
from importlib import resources
from pathlib import Path

import pytest
from routeplay.datasets import _registry, fetch, get_trace_info, list_traces
from routeplay.datasets._registry import TraceInfo, sha256_of

REQUIRED = [
    "azure-2023-code",
    "azure-2023-conv",
    "azure-2024-code",
    "azure-2024-conv",
    "mooncake-synthetic",
    "vidur-arxiv-summarization",
]


def test_required_traces_registered_with_provenance() -> None:
    names = [t.name for t in list_traces()]
    assert set(REQUIRED) <= set(names)
    assert names == sorted(names)
    for info in list_traces():
        assert info.url.startswith("https://")
        assert info.license and info.citation and info.mirror_path
    assert get_trace_info("azure-2024-code").n_rows == 16_803_695
    assert get_trace_info("azure-2024-conv").n_rows == 27_303_999
    assert get_trace_info("azure-2024-conv").sha256 is None


def test_known_hashes_match_mirror_and_embedded_copies(data_dir: Path) -> None:
    checked = 0
    for info in list_traces():
        path = data_dir / info.mirror_path
        if info.sha256 is not None:
            assert sha256_of(path) == info.sha256, info.name
            checked += 1
        if info.embedded_path is not None:
            embedded = resources.files("routeplay.datasets").joinpath("_data", info.embedded_path)
            assert hashlib.sha256(embedded.read_bytes()).hexdigest() == info.sha256
    assert checked == 6
    assert resources.files("routeplay.datasets").joinpath("_data/azure-2023/LICENSE").is_file()


def test_unknown_name_suggests_close_match() -> None:
    with pytest.raises(
        ValueError,
        match=re.escape("unknown trace 'azure-2023-cnv' (did you mean 'azure-2023-conv'?)"),
    ):
        get_trace_info("azure-2023-cnv")


def test_mirror_is_used_first(
    monkeypatch: pytest.MonkeyPatch, data_dir: Path, tmp_path: Path
) -> None:
    monkeypatch.setenv("ROUTEPLAY_DATA_DIR", str(data_dir))
    assert fetch("azure-2023-conv", cache_dir=tmp_path) == (
        data_dir / "azure-public-dataset/AzureLLMInferenceTrace_conv.csv"
    )
    assert fetch("mooncake-synthetic", cache_dir=tmp_path).parent == data_dir / "mooncake-fast25"


def test_mirror_with_wrong_hash_is_rejected(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mirror = tmp_path / "mirror"
    bad = mirror / "azure-public-dataset/AzureLLMInferenceTrace_code.csv"
    bad.parent.mkdir(parents=True)
    bad.write_text("not the trace")
    monkeypatch.setenv("ROUTEPLAY_DATA_DIR", str(mirror))
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"{bad} (from ROUTEPLAY_DATA_DIR) has sha256 {sha256_of(bad)}, expected "
            "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6"
        ),
    ):
        fetch("azure-2023-code", cache_dir=tmp_path / "cache")


def test_embedded_copy_without_mirror(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ROUTEPLAY_DATA_DIR", raising=False)
    path = fetch("azure-2023-code", cache_dir=tmp_path)
    assert path.parent.name == "azure-2023" and path.parent.parent.name == "_data"
    assert list(tmp_path.iterdir()) == []  # nothing downloaded


def _fake_trace(monkeypatch: pytest.MonkeyPatch, url: str, sha: str | None) -> TraceInfo:
    info = TraceInfo(
        name="fake-trace",
        url=url,
        sha256=sha,
        license="CC0-1.0",
        citation="nobody",
        format="vidur",
        n_rows=1,
        mirror_path="fake/fake.csv",
    )
    monkeypatch.setitem(_registry._BY_NAME, info.name, info)
    monkeypatch.delenv("ROUTEPLAY_DATA_DIR", raising=False)
    return info


def test_download_verifies_and_renames_atomically(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    source = tmp_path / "published.csv"
    source.write_bytes(b"arrived_at,num_prefill_tokens,num_decode_tokens\n0.0,5,1\n")
    _fake_trace(monkeypatch, source.as_uri(), sha256_of(source))
    cache = tmp_path / "cache"
    path = fetch("fake-trace", cache_dir=cache)
    assert path == cache / "fake-trace" / "fake.csv"
    assert path.read_bytes() == source.read_bytes()
    assert [p.name for p in path.parent.iterdir()] == ["fake.csv"]  # no leftover temp file
    # Second call hits the cache, even when the URL is gone.
    source.unlink()
    assert fetch("fake-trace", cache_dir=cache) == path


def test_bad_download_never_overwrites_good_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    good = b"good bytes\n"
    served = tmp_path / "served.csv"
    served.write_bytes(b"corrupted\n")
    info = _fake_trace(monkeypatch, served.as_uri(), hashlib.sha256(good).hexdigest())
    cached = tmp_path / "cache" / "fake-trace" / "fake.csv"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated good byt")  # a corrupt cached copy triggers a download
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"download of 'fake-trace' from {info.url} has sha256 "
            f"{hashlib.sha256(b'corrupted' + bytes([10])).hexdigest()}, expected {info.sha256}; "
            f"the download was discarded and {cached} was left as it was."
        ),
    ):
        fetch("fake-trace", cache_dir=tmp_path / "cache")
    assert cached.read_bytes() == b"truncated good byt"
    assert [p.name for p in cached.parent.iterdir()] == ["fake.csv"]


def test_unverifiable_download_warns_with_hash(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served = tmp_path / "served.csv"
    served.write_bytes(b"x\n")
    _fake_trace(monkeypatch, served.as_uri(), None)
    with pytest.warns(
        UserWarning, match=re.escape(f"could not be verified (its sha256 is {sha256_of(served)})")
    ):
        fetch("fake-trace", cache_dir=tmp_path / "cache")


def test_offline_failure_names_the_mirror_variable(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    info = _fake_trace(monkeypatch, "https://example.invalid/fake.csv", None)

    def offline(url: str, timeout: float) -> None:
        raise _registry.urllib.error.URLError("no network")

    monkeypatch.setattr(_registry, "_urlopen", offline)
    with pytest.raises(
        FileNotFoundError,
        match=re.escape(
            f"could not download trace 'fake-trace' from {info.url} (<urlopen error no network>). "
            "Fix: when offline, point ROUTEPLAY_DATA_DIR at a local mirror holding fake/fake.csv"
        ),
    ):
        fetch("fake-trace", cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache" / "fake-trace" / "fake.csv").exists()


def test_trace_info_is_frozen() -> None:
    info = get_trace_info("mooncake-synthetic")
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.name = "other"  # type: ignore[misc]
    assert info.file_name == "synthetic_trace.jsonl"
