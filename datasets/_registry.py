"""Registry of public LLM request traces and :func:`fetch`, which finds or downloads them.

:func:`fetch` looks for a trace in this order and returns the first hit:

1. the local mirror named by ``ROUTEPLAY_DATA_DIR`` (``<mirror>/<mirror_path>``);
2. the cache (``cache_dir``, else ``ROUTEPLAY_CACHE_DIR``, else ``$XDG_CACHE_HOME/routeplay``
   or ``~/.cache/routeplay``), at ``<cache>/<name>/<file name>``;
3. a copy embedded in the package (the two Azure 2023 traces, CC-BY-4.0);
4. a download from the published URL into a temporary file in the cache, checked
   against the known sha256 and then renamed atomically into place, so that a bad or
   interrupted download never replaces a good file.

A file whose sha256 is known is verified wherever it is found. A trace without a
published sha256 is *pinned on first use*: the hash of the file first used (mirror,
cache or download) is recorded in ``<cache>/<name>/<file name>.sha256.json`` and
:class:`HashPinnedWarning` says so; every later use checks the file against that pin
and refuses a mismatch (naming both hashes; ``fetch(name, repin=True)`` or
``routeplay datasets ... --repin``, or deleting the pin file, accepts the new content).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DATA_DIR_ENV",
    "CACHE_DIR_ENV",
    "HashPinnedWarning",
    "PIN_SUFFIX",
    "pin_path",
    "TraceInfo",
    "default_cache_dir",
    "fetch",
    "get_trace_info",
    "list_traces",
]

#: Environment variable naming a local mirror of the public traces.
DATA_DIR_ENV = "ROUTEPLAY_DATA_DIR"
#: Environment variable naming the download cache.
CACHE_DIR_ENV = "ROUTEPLAY_CACHE_DIR"

_CHUNK_BYTES = 1 << 20
#: Suffix of the file, beside the cached trace, that pins the hash of an unhashed trace.
PIN_SUFFIX = ".sha256.json"


class HashPinnedWarning(UserWarning):
    """A trace without a published sha256 was used for the first time and its hash pinned."""


@dataclass(frozen=True, slots=True, kw_only=True)
class TraceInfo:
    """One public trace: where it comes from, how to check it, how to read it.

    Attributes:
        name: registry key, e.g. ``"azure-2023-conv"``.
        url: published download URL.
        sha256: hex digest of the published file, or ``None`` when not known here
            (the file could not be checked from this project; fetch then warns).
        license: SPDX identifier of the data license.
        citation: the paper to cite.
        format: loader format (``"azure"``, ``"mooncake"``, ``"vidur"``, ``"lengths"``,
            ``"burstgpt"``).
        n_rows: number of requests as published (``None`` if unknown).
        mirror_path: the file's path inside a ``ROUTEPLAY_DATA_DIR`` mirror.
        notes: caveats (synthetic data, unverified figures, ...).
        embedded_path: path under the package's ``_data/`` folder if a copy ships with
            routeplay, else ``None``.

    Example:
        >>> info = get_trace_info("azure-2023-conv")
        >>> info.n_rows, info.format, info.license
        (19366, 'azure', 'CC-BY-4.0')
    """

    name: str
    url: str
    sha256: str | None
    license: str
    citation: str
    format: str
    n_rows: int | None
    mirror_path: str
    notes: str = ""
    embedded_path: str | None = None

    @property
    def file_name(self) -> str:
        """The file's base name (used inside the cache)."""
        return Path(self.mirror_path).name


_AZURE_RAW = "https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/"
_AZURE_BLOB = "https://azurepublicdatasettraces.blob.core.windows.net/azurellminfererencetrace/"
_VIDUR_RAW = (
    "https://raw.githubusercontent.com/microsoft/vidur/"
    "7d47513363ec447a741ac5e47241580b47724fbf/data/processed_traces/"
)
_MOONCAKE_RAW = "https://raw.githubusercontent.com/kvcache-ai/Mooncake/main/FAST25-release/traces/"
_SPLITWISE = (
    "Patel et al., 'Splitwise: Efficient Generative LLM Inference Using Phase Splitting', ISCA 2024"
)
_DYNAMOLLM = (
    "Stojkovic et al., 'DynamoLLM: Designing LLM Inference Clusters for Performance and "
    "Energy Efficiency', HPCA 2025 (arXiv:2408.00741)"
)
_MOONCAKE = "Qin et al., 'Mooncake: Trading More Storage for Less Computation', FAST 2025"
_VIDUR = "Agrawal et al., 'Vidur: A Large-Scale Simulation Framework for LLM Inference', MLSys 2024"

_TRACES: tuple[TraceInfo, ...] = (
    TraceInfo(
        name="azure-2023-code",
        url=_AZURE_RAW + "AzureLLMInferenceTrace_code.csv",
        sha256="54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6",
        license="CC-BY-4.0",
        citation=_SPLITWISE,
        format="azure",
        n_rows=8819,
        mirror_path="azure-public-dataset/AzureLLMInferenceTrace_code.csv",
        notes="One hour of a coding service, 2023-11-16; very bursty (IA-CV ~13).",
        embedded_path="azure-2023/AzureLLMInferenceTrace_code.csv",
    ),
    TraceInfo(
        name="azure-2023-conv",
        url=_AZURE_RAW + "AzureLLMInferenceTrace_conv.csv",
        sha256="2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8",
        license="CC-BY-4.0",
        citation=_SPLITWISE,
        format="azure",
        n_rows=19366,
        mirror_path="azure-public-dataset/AzureLLMInferenceTrace_conv.csv",
        notes="One hour of a conversation service, 2023-11-16; close to Poisson.",
        embedded_path="azure-2023/AzureLLMInferenceTrace_conv.csv",
    ),
    TraceInfo(
        name="azure-2024-code",
        url=_AZURE_BLOB + "AzureLLMInferenceTrace_code_1week.csv",
        sha256=None,
        license="CC-BY-4.0",
        citation=_DYNAMOLLM,
        format="azure",
        n_rows=16_803_695,
        mirror_path="azure-public-dataset/AzureLLMInferenceTrace_code_1week.csv",
        notes=(
            "One week (2024-05-10..16). URL from AzureLLMInferenceDataset2024Links.txt "
            "(Azure blob storage; the repository also has a migration to the GitHub release "
            "'dataset-llm-2024'). sha256 and row count not verified here (no copy available; "
            "the row count is from the upstream notebook)."
        ),
    ),
    TraceInfo(
        name="azure-2024-conv",
        url=_AZURE_BLOB + "AzureLLMInferenceTrace_conv_1week.csv",
        sha256=None,
        license="CC-BY-4.0",
        citation=_DYNAMOLLM,
        format="azure",
        n_rows=27_303_999,
        mirror_path="azure-public-dataset/AzureLLMInferenceTrace_conv_1week.csv",
        notes=(
            "One week (2024-05-12..18). URL from AzureLLMInferenceDataset2024Links.txt; "
            "sha256 and row count not verified here (row count from the upstream notebook)."
        ),
    ),
    TraceInfo(
        name="azure-2025-multimodal",
        url=_AZURE_RAW + "AzureLMMInferenceTrace_multimodal.csv.gz",
        sha256=None,
        license="CC-BY-4.0",
        citation=(
            "Qiu et al., 'ModServe: Modality- and Stage-Aware Resource Disaggregation for "
            "Scalable Multimodal Model Serving', SoCC 2025"
        ),
        format="azure",
        n_rows=1_000_000,
        mirror_path="azure-public-dataset/AzureLMMInferenceTrace_multimodal.csv.gz",
        notes=(
            "Multimodal (NumImages kept as num_images), 2024-10-15..22, gzipped CSV. "
            "sha256 and row count not verified here (row count from the upstream notebook)."
        ),
    ),
    TraceInfo(
        name="mooncake-synthetic",
        url=_MOONCAKE_RAW + "synthetic_trace.jsonl",
        sha256="bd070915a98fc0ed264d7cfef2ce746002eb3076a695ec31ba2674c0111ec131",
        license="Apache-2.0",
        citation=_MOONCAKE,
        format="mooncake",
        n_rows=3993,
        mirror_path="mooncake-fast25/synthetic_trace.jsonl",
        notes="SYNTHETIC (built from public datasets, Poisson arrivals), not production data.",
    ),
    TraceInfo(
        name="mooncake-conversation",
        url=_MOONCAKE_RAW + "conversation_trace.jsonl",
        sha256=None,
        license="Apache-2.0",
        citation=_MOONCAKE,
        format="mooncake",
        n_rows=None,
        mirror_path="mooncake-fast25/conversation_trace.jsonl",
        notes="Production conversation trace of the FAST'25 paper; not checked here.",
    ),
    TraceInfo(
        name="mooncake-toolagent",
        url=_MOONCAKE_RAW + "toolagent_trace.jsonl",
        sha256=None,
        license="Apache-2.0",
        citation=_MOONCAKE,
        format="mooncake",
        n_rows=None,
        mirror_path="mooncake-fast25/toolagent_trace.jsonl",
        notes="Tool/agent trace of the FAST'25 paper; not checked here.",
    ),
    TraceInfo(
        name="vidur-arxiv-summarization",
        url=_VIDUR_RAW + "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
        sha256="9d3580538d915ca75e4aaaa54590b42dbb17abc6d74c8913310cf07c232adcdc",
        license="MIT",
        citation=_VIDUR,
        format="lengths",
        n_rows=28257,
        mirror_path="vidur_traces/arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
        notes=(
            "Lengths only (Llama-2 tokens, total <= 4096), no arrivals: use load_lengths and "
            "attach_arrivals."
        ),
    ),
    TraceInfo(
        name="vidur-splitwise-code",
        url=_VIDUR_RAW + "splitwise_code.csv",
        sha256="f266b907d109d471c61283ab69771c17ad79a18b33ff6e96aa546346f52767a6",
        license="MIT AND CC-BY-4.0",
        citation=f"{_VIDUR}; data: {_SPLITWISE}",
        format="vidur",
        n_rows=8819,
        mirror_path="vidur_traces/splitwise_code.csv",
        notes="Same requests as azure-2023-code in Vidur's schema (arrivals within 1 us).",
    ),
    TraceInfo(
        name="vidur-splitwise-conv",
        url=_VIDUR_RAW + "splitwise_conv.csv",
        sha256="439e4138b7e384f316de614c071f7162be05b8af0cef866f82faacd1b0472249",
        license="MIT AND CC-BY-4.0",
        citation=f"{_VIDUR}; data: {_SPLITWISE}",
        format="vidur",
        n_rows=19366,
        mirror_path="vidur_traces/splitwise_conv.csv",
        notes="Same requests as azure-2023-conv in Vidur's schema (arrivals within 1 us).",
    ),
    TraceInfo(
        name="burstgpt-v1",
        url="https://github.com/HPMLL/BurstGPT/raw/main/data/BurstGPT_1.csv",
        sha256=None,
        license="CC-BY-4.0",
        citation=(
            "Wang et al., 'BurstGPT: A Real-world Workload Dataset to Optimize LLM Serving "
            "Systems', KDD 2025"
        ),
        format="burstgpt",
        n_rows=None,
        mirror_path="burstgpt/BurstGPT_1.csv",
        notes=(
            "About 52 MB; failed requests have 0 response tokens (load with "
            "drop_zero_tokens=True to drop them with a warning). Not checked here."
        ),
    ),
)

_BY_NAME: dict[str, TraceInfo] = {t.name: t for t in _TRACES}


def list_traces() -> list[TraceInfo]:
    """Return every registered trace, sorted by name.

    Example:
        >>> [t.name for t in list_traces()][:3]
        ['azure-2023-code', 'azure-2023-conv', 'azure-2024-code']
    """
    return sorted(_TRACES, key=lambda t: t.name)


def get_trace_info(name: str) -> TraceInfo:
    """Return the registry entry called ``name``.

    Raises:
        ValueError: unknown name (the message suggests close matches and lists all).

    Example:
        >>> get_trace_info("azure-2023-code").n_rows
        8819
        >>> try:
        ...     get_trace_info("azure-2023-cod")
        ... except ValueError as exc:
        ...     print(str(exc).split(';')[0])
        unknown trace 'azure-2023-cod' (did you mean 'azure-2023-code'?)
    """
    try:
        return _BY_NAME[name]
    except KeyError:
        names = sorted(_BY_NAME)
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(
            f"unknown trace {name!r}{hint}; registered traces: {', '.join(names)}. "
            "Fix: use one of these names or pass a file path."
        ) from None


def default_cache_dir() -> Path:
    """The download cache: ``ROUTEPLAY_CACHE_DIR``, else the platform user cache."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "routeplay"


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _matches(info: TraceInfo, path: Path) -> bool:
    return info.sha256 is None or sha256_of(path) == info.sha256


def _embedded(info: TraceInfo) -> Path | None:
    if info.embedded_path is None:
        return None
    resource = resources.files("routeplay.datasets").joinpath("_data", info.embedded_path)
    if not resource.is_file():
        return None
    return Path(str(resource))


#: The opener used for downloads (a seam for tests; ``urlopen`` handles ``file://`` too).
_urlopen: Callable[..., Any] = urllib.request.urlopen


def pin_path(info: TraceInfo, cache: Path) -> Path:
    """Where the pinned hash of an unhashed trace lives: beside its cached file.

    Example:
        >>> pin_path(get_trace_info("burstgpt-v1"), Path("/cache")).as_posix()
        '/cache/burstgpt-v1/BurstGPT_1.csv.sha256.json'
    """
    return cache / info.name / (info.file_name + PIN_SUFFIX)


def _read_pin(pin: Path) -> str | None:
    if not pin.is_file():
        return None
    try:
        digest = json.loads(pin.read_text(encoding="utf-8"))["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"{pin}: the hash pin cannot be read ({type(exc).__name__}); expected JSON with a "
            "'sha256' hex digest. Fix: delete the pin file; the next use pins the file again."
        ) from None
    if not (
        isinstance(digest, str)
        and len(digest) == 64
        and all(c in "0123456789abcdef" for c in digest)
    ):
        raise ValueError(
            f"{pin}: 'sha256' is {digest!r}; expected 64 lowercase hex digits. Fix: delete the "
            "pin file; the next use pins the file again."
        )
    return digest


def _write_pin(pin: Path, info: TraceInfo, digest: str, origin: str) -> None:
    pin.parent.mkdir(parents=True, exist_ok=True)
    record = {"name": info.name, "file": info.file_name, "sha256": digest, "pinned_from": origin}
    fd, tmp_name = tempfile.mkstemp(prefix=f".{pin.name}.", suffix=".part", dir=pin.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(record, handle, indent=2)
            handle.write("\n")
        os.replace(tmp_name, pin)
    finally:
        Path(tmp_name).unlink(missing_ok=True)


def _pin_mismatch(info: TraceInfo, what: str, got: str, pinned: str, pin: Path) -> str:
    return (
        f"{what} has sha256 {got}, but {info.name!r} was pinned to sha256 {pinned} on first "
        f"use (pin file {pin}); no published hash is registered, so the content changed "
        "since then. Fix: restore the original file; or, if the new content is the one you "
        f"want, delete {pin} or pass --repin (Python: fetch({info.name!r}, repin=True)) to "
        "pin it again."
    )


def _check_pin(info: TraceInfo, path: Path, cache: Path, repin: bool, *, origin: str) -> None:
    """Check an unhashed trace's file against its pin, or pin it (warning) on first use."""
    pin = pin_path(info, cache)
    got = sha256_of(path)
    pinned = None if repin else _read_pin(pin)
    if pinned is not None:
        if got != pinned:
            raise ValueError(_pin_mismatch(info, str(path), got, pinned, pin))
        return
    _write_pin(pin, info, got, origin)
    warnings.warn(
        HashPinnedWarning(
            f"{info.name!r}: no published sha256 is registered, so {origin} could not be "
            f"verified (its sha256 is {got}); pinned that hash in {pin}: later uses of "
            f"{info.name!r} are refused if the content changes."
        ),
        stacklevel=4,
    )


def _download(
    info: TraceInfo,
    target: Path,
    timeout_s: float,
    pinned: str | None = None,
    pin: Path | None = None,
) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle: IO[bytes]
    fd, tmp_name = tempfile.mkstemp(prefix=f".{info.file_name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as handle, _urlopen(info.url, timeout=timeout_s) as response:
            for chunk in iter(lambda: response.read(_CHUNK_BYTES), b""):
                digest.update(chunk)
                handle.write(chunk)
        got = digest.hexdigest()
        if pinned is not None and pin is not None and got != pinned:
            raise ValueError(_pin_mismatch(info, f"the download from {info.url}", got, pinned, pin))
        if info.sha256 is not None and got != info.sha256:
            raise ValueError(
                f"download of {info.name!r} from {info.url} has sha256 {got}, expected "
                f"{info.sha256}; the download was discarded and {target} was left as it was. "
                f"Fix: retry, or place a verified copy under ${DATA_DIR_ENV}/{info.mirror_path}."
            )
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError) as exc:
        raise FileNotFoundError(
            f"could not download trace {info.name!r} from {info.url} ({exc}). Fix: when "
            f"offline, point {DATA_DIR_ENV} at a local mirror holding "
            f"{info.mirror_path}, or copy the file to {target}."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


def fetch(
    name: str,
    *,
    cache_dir: str | Path | None = None,
    timeout_s: float = 60.0,
    repin: bool = False,
) -> Path:
    """Return a local path to the registered trace ``name``, downloading it if needed.

    Resolution order: ``ROUTEPLAY_DATA_DIR`` mirror, cache, embedded copy, download
    (see the module docstring). Files with a known sha256 are verified wherever found;
    files without one are checked against the hash pinned on their first use (and
    pinned, with a :class:`HashPinnedWarning`, when there is no pin yet).

    Args:
        name: registry name (see :func:`list_traces`).
        cache_dir: the download cache (default :func:`default_cache_dir`).
        timeout_s: network timeout of the download.
        repin: for a trace without a published sha256, replace its pin with the hash
            of the file found now (after you checked that its new content is intended).

    Returns:
        Path of a verified local copy.

    Raises:
        ValueError: unknown name; a mirror file or download with the wrong sha256; a
            file that no longer matches its pinned sha256.
        FileNotFoundError: the file is nowhere local and cannot be downloaded.

    Example:
        >>> fetch("azure-2023-code").name
        'AzureLLMInferenceTrace_code.csv'
    """
    info = get_trace_info(name)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    mirror = os.environ.get(DATA_DIR_ENV)
    if mirror:
        candidate = Path(mirror).expanduser() / info.mirror_path
        if candidate.is_file():
            if info.sha256 is None:
                _check_pin(
                    info, candidate, cache, repin, origin=f"{candidate} (from {DATA_DIR_ENV})"
                )
            elif not _matches(info, candidate):
                raise ValueError(
                    f"{candidate} (from {DATA_DIR_ENV}) has sha256 {sha256_of(candidate)}, "
                    f"expected {info.sha256} for {info.name!r}. Fix: replace it with the "
                    f"published file from {info.url}, or unset {DATA_DIR_ENV}."
                )
            return candidate
    cached = cache / info.name / info.file_name
    if cached.is_file():
        if info.sha256 is None:
            _check_pin(info, cached, cache, repin, origin=f"the cached copy {cached}")
            return cached
        if _matches(info, cached):
            return cached
    embedded = _embedded(info)
    if embedded is not None and _matches(info, embedded):
        return embedded
    if info.sha256 is None:
        pin = pin_path(info, cache)
        _download(info, cached, timeout_s, None if repin else _read_pin(pin), pin)
        _check_pin(info, cached, cache, True, origin=f"the download from {info.url}")
    else:
        _download(info, cached, timeout_s)
    return cached
