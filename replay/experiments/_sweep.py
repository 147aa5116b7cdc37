"""Sweeps: many replays (and training runs) over a grid, on a process pool or on Ray.

A :class:`SweepGrid` names a trace and how to cut it into episodes, router labels,
clusters, episodes and seeds; its cells are the cross product
``routers x clusters x episodes x seeds`` (plus optional *call* cells that run a
function named by a dotted path, e.g. a training job in ``offline_rl``, without
``replay`` importing it). :func:`run_sweep` runs every cell and returns a
:class:`SweepResult`.

Guarantees:

- **Deterministic.** A cell depends only on its config: episode ``k`` under seed ``s``
  is replayed with ``ReplayConfig.seed = s + k`` (the convention of
  :func:`~routeplay.replay.replay_episodes`), and results are assembled in grid order,
  never in completion order. So the result is identical, bit for bit, whatever the
  backend (``"serial"``, ``"process"``, ``"ray"``) and the number of workers.
- **Keyed by content.** A cell's key is the SHA-256 of its canonical JSON config
  (sorted keys; the cluster enters as its full parameter set, not just its name),
  never Python's ``hash()``.
- **Nothing dropped.** A cell that raises, or whose worker process dies (killed, OOM,
  ``os._exit``), is retried once; if it fails again it appears in
  :attr:`SweepResult.cells` with ``status = "failed"`` and the error.
- **Resumable.** With ``results_dir``, each finished cell is written atomically as
  ``cells/<key>.parquet`` (per-request rows) then ``cells/<key>.json`` (the commit
  marker); a rerun with ``resume=True`` loads finished cells instead of running them.
  Failed cells are run again on resume (their failure may have been transient).

The ``"process"`` backend keeps ``n_workers`` long-lived worker processes (``spawn``
start method) and hands each one cell at a time, so a dead worker is attributed to
exactly the cell it was running and replaced. The ``"ray"`` backend submits one task
per cell to the running Ray cluster (``ray.init(address=...)`` before the call), or
starts a local one with ``n_workers`` CPUs; it needs the ``ray`` extra. The
``"serial"`` backend runs cells in this process (a cell that kills its process kills
the sweep: use it for debugging).

Trace identity: the key holds the trace's name or path, not the file's bytes; after
changing a file in place, use a new ``results_dir`` or ``resume=False``.
"""

# Why this module is long: the grid, cell keys, resume, the three backends (serial,
# process pool, Ray) and their shared retry logic are one contract (the guarantees
# above), tested as one.

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib
import inspect
import json
import logging
import multiprocessing
import os
import tempfile
import traceback
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal

import polars as pl
from tqdm.auto import tqdm

__all__ = [
    "SWEEP_BACKENDS",
    "SweepCallConfig",
    "SweepCellConfig",
    "SweepGrid",
    "SweepResult",
    "load_sweep",
    "run_sweep",
    "sweep_from_dict",
]

logger = logging.getLogger(__name__)

SweepBackend = Literal["serial", "process", "ray"]
SWEEP_BACKENDS: tuple[str, ...] = ("serial", "process", "ray")
#: Bump when the meaning of a cell config changes, so old results are not reused.
_KEY_FORMAT_VERSION = 1
_MAX_ATTEMPTS = 2  # the first run plus one retry
#: Columns that identify a cell in :attr:`SweepResult.cells` and ``requests``.
_ID_COLUMNS = ("key", "kind", "label", "router", "cluster", "episode", "seed")


def _canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=True)


def _jsonable(value: Any, where: str) -> Any:
    """Check that ``value`` survives a JSON round trip unchanged (tuples become lists)."""
    try:
        text = json.dumps(value, sort_keys=True)
    except TypeError as exc:
        raise ValueError(
            f"{where} = {value!r} is not JSON-serialisable ({exc}); expected numbers, strings, "
            "booleans, lists and tables only (they enter the cell's key)."
        ) from None
    return json.loads(text)


@functools.lru_cache(maxsize=64)
def _cluster_digest(cluster: str) -> str:
    from ..engine._clusters import load_cluster

    spec = dataclasses.asdict(load_cluster(cluster))
    return hashlib.sha256(_canonical_json(spec).encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepCallConfig:
    """A non-replay job in a sweep: ``function(seed=s, **params)`` for each seed.

    The function is named by a dotted path (``"package.module:function"`` or
    ``"package.module.function"``) and imported in the worker, so ``replay`` never
    imports the package that defines it (e.g. an ``offline_rl`` training entry point).
    It must return a mapping of metric name to number (or string/bool/None); if it
    accepts a ``cell_dir`` keyword it also gets a directory for its artefacts
    (``results_dir/cells/<key>/``, or a temporary one without ``results_dir``).

    Attributes:
        label: the cell label in the results.
        function: dotted path of the function.
        params: JSON-serialisable keyword arguments (they enter the cell key).
        seeds: one cell per seed.

    Example:
        >>> SweepCallConfig(label="gcd", function="math:gcd", seeds=(0,)).function
        'math:gcd'
        >>> SweepCallConfig(label="x", function="nodots")
        Traceback (most recent call last):
        ...
        ValueError: SweepCallConfig.function = 'nodots'; expected a dotted path such as ...
    """

    label: str
    function: str
    params: Mapping[str, Any] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0,)

    def __post_init__(self) -> None:
        if not self.label:
            raise ValueError("SweepCallConfig.label is empty; expected a non-empty name.")
        if ":" not in self.function and "." not in self.function:
            raise ValueError(
                f"SweepCallConfig.function = {self.function!r}; expected a dotted path such as "
                "'package.module:function'."
            )
        object.__setattr__(self, "params", _jsonable(dict(self.params), "SweepCallConfig.params"))
        object.__setattr__(self, "seeds", _check_seeds(self.seeds, "SweepCallConfig.seeds"))


def _check_seeds(seeds: Iterable[int], where: str) -> tuple[int, ...]:
    out = tuple(seeds)
    if not out or any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in out):
        raise ValueError(f"{where} = {out!r}; expected a non-empty list of integers >= 0.")
    if len(set(out)) != len(out):
        raise ValueError(f"{where} = {out!r} repeats a seed; expected distinct seeds.")
    return out


def _router_entry(label: str, spec: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"name": spec, "params": {}}
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"router {label!r} = {spec!r} ({type(spec).__name__}); expected a router name or "
            "a table such as {name = 'max-capacity', mode = 'best-fit'}."
        )
    entry = dict(spec)
    if "name" not in entry:
        raise ValueError(
            f"router {label!r} = {spec!r} has no 'name'; expected a router name or a table "
            "such as {name = 'max-capacity', mode = 'best-fit'}."
        )
    name = str(entry.pop("name"))
    params = dict(entry.pop("params", {}))
    params.update(entry)
    return {"name": name, "params": _jsonable(params, f"router {label!r} parameters")}


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepGrid:
    """A sweep: ``routers x clusters x episodes x seeds`` replay cells, plus call cells.

    Attributes:
        trace: registered trace name or file path (loaded with ``load_trace`` in each
            worker, once per worker). ``None`` only for sweeps of call cells alone.
        routers: label -> router name, or label -> ``{"name": ..., <parameters>}``
            (built with :func:`~routeplay.replay.make_router`).
        clusters: built-in cluster names or cluster TOML paths.
        seeds: base seeds; episode ``k`` is replayed with seed ``seed + k``.
        episodes: episode indices to run; ``None`` = every episode of the split.
        episode_n_requests: cut the trace into windows of this many requests, or
        episode_duration_s: into windows of this many seconds (at most one of the two;
            neither = the whole trace is episode 0). See ``split_episodes``.
        first_requests: use only the first N requests of the trace.
        mode: replay mode (``"fast"`` or ``"reference"``).
        timeline_sample_interval_s: timeline sampling (``None``: no timelines, the
            default for sweeps; timelines are not kept in sweep results).
        keep_requests: keep per-request rows (``SweepResult.requests``); summaries are
            always kept.
        calls: extra cells that run a function by dotted path (see
            :class:`SweepCallConfig`).

    Example:
        >>> grid = SweepGrid(trace="azure-2023-code", routers={"rr": "round-robin"},
        ...     clusters=("paper-2xv100",), seeds=(0, 1), episodes=(0, 1, 2),
        ...     episode_n_requests=100)
        >>> len(grid.cells())
        6
        >>> SweepGrid(trace="t.csv", routers={"rr": "round-robin"}, clusters=())
        Traceback (most recent call last):
        ...
        ValueError: SweepGrid.clusters is empty; expected at least one cluster name or TOML ...
    """

    trace: str | None = None
    routers: Mapping[str, Any] = field(default_factory=dict)
    clusters: tuple[str, ...] = ()
    seeds: tuple[int, ...] = (0,)
    episodes: tuple[int, ...] | None = None
    episode_n_requests: int | None = None
    episode_duration_s: float | None = None
    first_requests: int | None = None
    mode: Literal["fast", "reference"] = "fast"
    timeline_sample_interval_s: float | None = None
    keep_requests: bool = True
    calls: tuple[SweepCallConfig, ...] = ()

    def __post_init__(self) -> None:
        from ..engine._result import ReplayConfig

        routers = {str(k): _router_entry(str(k), v) for k, v in dict(self.routers).items()}
        object.__setattr__(self, "routers", routers)
        object.__setattr__(self, "clusters", tuple(str(c) for c in self.clusters))
        object.__setattr__(self, "seeds", _check_seeds(self.seeds, "SweepGrid.seeds"))
        object.__setattr__(self, "calls", tuple(self.calls))
        if not routers and not self.calls:
            raise ValueError(
                "SweepGrid has no routers and no calls; expected at least one router label "
                "(e.g. routers={'rr': 'round-robin'}) or one SweepCallConfig."
            )
        if routers:
            if not self.clusters:
                raise ValueError(
                    "SweepGrid.clusters is empty; expected at least one cluster name or TOML "
                    "path when routers are given."
                )
            if self.trace is None:
                raise ValueError(
                    "SweepGrid.trace is None but routers are given; expected a registered "
                    "trace name or a trace file path to replay."
                )
        if len(set(self.clusters)) != len(self.clusters):
            raise ValueError(f"SweepGrid.clusters = {self.clusters!r} repeats a cluster.")
        labels = [*routers, *(c.label for c in self.calls)]
        if len(set(labels)) != len(labels):
            raise ValueError(
                f"SweepGrid labels {labels!r} repeat a name; expected distinct router and "
                "call labels."
            )
        if self.episode_n_requests is not None and self.episode_duration_s is not None:
            raise ValueError(
                "SweepGrid got both episode_n_requests and episode_duration_s; expected at "
                "most one way to cut the trace into episodes."
            )
        if self.episode_n_requests is not None and self.episode_n_requests < 1:
            raise ValueError(
                f"SweepGrid.episode_n_requests = {self.episode_n_requests!r}; expected >= 1."
            )
        if self.episode_duration_s is not None and not self.episode_duration_s > 0:
            raise ValueError(
                f"SweepGrid.episode_duration_s = {self.episode_duration_s!r}; expected > 0 s."
            )
        if self.first_requests is not None and self.first_requests < 1:
            raise ValueError(f"SweepGrid.first_requests = {self.first_requests!r}; expected >= 1.")
        if self.episodes is not None:
            eps = tuple(int(e) for e in self.episodes)
            if not eps or min(eps) < 0 or len(set(eps)) != len(eps):
                raise ValueError(
                    f"SweepGrid.episodes = {self.episodes!r}; expected distinct episode "
                    "indices >= 0, or None for every episode."
                )
            object.__setattr__(self, "episodes", eps)
        # validates mode and the timeline interval with ReplayConfig's messages
        ReplayConfig(mode=self.mode, timeline_sample_interval_s=self.timeline_sample_interval_s)
        # every router and cluster is built once here, so a misspelt name fails the grid
        # (one clear error) instead of every cell of it in the workers
        from ..engine._clusters import load_cluster
        from ..routers._registry import make_router

        for label, entry in routers.items():
            try:
                make_router(entry["name"], **entry["params"])
            except (ValueError, TypeError) as exc:
                raise ValueError(f"router {label!r}: {exc}") from exc
        for cluster in self.clusters:
            load_cluster(cluster)

    def _episode_indices(self) -> tuple[int, ...]:
        if self.episodes is not None:
            return self.episodes
        assert self.trace is not None  # checked in __post_init__ when routers are given
        n = len(_load_episodes(self._trace_spec()))
        return tuple(range(n))

    def _trace_spec(self) -> tuple[str, int | None, int | None, float | None]:
        assert self.trace is not None
        return (self.trace, self.first_requests, self.episode_n_requests, self.episode_duration_s)

    def cells(self) -> list[SweepCellConfig]:
        """The cells in grid order: router, cluster, episode, seed; then the calls.

        ``episodes=None`` loads the trace here to count its episodes.
        """
        out: list[SweepCellConfig] = []
        if self.routers:
            trace = {
                "trace": self.trace,
                "first_requests": self.first_requests,
                "episode_n_requests": self.episode_n_requests,
                "episode_duration_s": self.episode_duration_s,
            }
            replay = {
                "mode": self.mode,
                "timeline_sample_interval_s": self.timeline_sample_interval_s,
            }
            episodes = self._episode_indices()
            for label, router in self.routers.items():
                for cluster in self.clusters:
                    for episode in episodes:
                        for seed in self.seeds:
                            out.append(
                                SweepCellConfig(
                                    kind="replay",
                                    label=label,
                                    seed=seed,
                                    spec={
                                        **trace,
                                        **replay,
                                        "router": router,
                                        "cluster": cluster,
                                        "cluster_sha256": _cluster_digest(cluster),
                                        "episode": episode,
                                        "keep_requests": self.keep_requests,
                                    },
                                )
                            )
        for call in self.calls:
            for seed in call.seeds:
                out.append(
                    SweepCellConfig(
                        kind="call",
                        label=call.label,
                        seed=seed,
                        spec={"function": call.function, "params": dict(call.params)},
                    )
                )
        return out

    def to_dict(self) -> dict[str, Any]:
        """The grid as a JSON-friendly dict (the layout of a sweep TOML file)."""
        out: dict[str, Any] = {
            k: v
            for k, v in (
                ("trace", self.trace),
                ("clusters", list(self.clusters)),
                ("seeds", list(self.seeds)),
                ("episodes", None if self.episodes is None else list(self.episodes)),
                ("episode_n_requests", self.episode_n_requests),
                ("episode_duration_s", self.episode_duration_s),
                ("first_requests", self.first_requests),
                ("mode", self.mode),
                ("timeline_sample_interval_s", self.timeline_sample_interval_s),
                ("keep_requests", self.keep_requests),
            )
            if v is not None
        }
        out["routers"] = {k: {"name": v["name"], **v["params"]} for k, v in self.routers.items()}
        out["calls"] = [
            {
                "label": c.label,
                "function": c.function,
                "params": dict(c.params),
                "seeds": list(c.seeds),
            }
            for c in self.calls
        ]
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SweepCellConfig:
    """One cell of a sweep: everything a worker needs, as JSON-friendly data.

    Attributes:
        kind: ``"replay"`` or ``"call"``.
        label: router label or call label.
        seed: the cell's base seed (replays use ``seed + episode``).
        spec: the rest of the config (trace, router, cluster and its SHA-256, episode,
            replay settings; or function and params).

    Example:
        >>> cell = SweepCellConfig(kind="call", label="gcd", seed=0,
        ...                        spec={"function": "math:gcd", "params": {}})
        >>> cell.key == SweepCellConfig(kind="call", label="gcd", seed=0,
        ...                             spec={"params": {}, "function": "math:gcd"}).key
        True
        >>> len(cell.key)
        64
    """

    kind: Literal["replay", "call"]
    label: str
    seed: int
    spec: Mapping[str, Any]

    def __post_init__(self) -> None:
        if self.kind not in ("replay", "call"):
            raise ValueError(f"SweepCellConfig.kind = {self.kind!r}; expected 'replay' or 'call'.")
        object.__setattr__(self, "spec", _jsonable(dict(self.spec), "SweepCellConfig.spec"))

    def to_dict(self) -> dict[str, Any]:
        """The cell as a plain dict (what the key hashes)."""
        return {
            "format": _KEY_FORMAT_VERSION,
            "kind": self.kind,
            "label": self.label,
            "seed": self.seed,
            "spec": dict(self.spec),
        }

    @property
    def key(self) -> str:
        """SHA-256 (hex) of the cell's canonical JSON: stable across runs and machines."""
        return hashlib.sha256(_canonical_json(self.to_dict()).encode()).hexdigest()

    @property
    def router(self) -> str | None:
        """Registered router name (replay cells)."""
        return str(self.spec["router"]["name"]) if self.kind == "replay" else None

    @property
    def cluster(self) -> str | None:
        """Cluster name or path (replay cells)."""
        return str(self.spec["cluster"]) if self.kind == "replay" else None

    @property
    def episode(self) -> int | None:
        """Episode index (replay cells)."""
        return int(self.spec["episode"]) if self.kind == "replay" else None


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What a sweep produced, in grid order.

    Attributes:
        cells: one row per cell: ``key``, ``kind``, ``label``, ``router``, ``cluster``,
            ``episode``, ``seed``, ``status`` (``"ok"`` or ``"failed"``), ``n_attempts``,
            ``error`` (null when ok), then one Float64 column per summary metric (null
            where a cell has no such metric).
        requests: per-request rows of every successful replay cell, with the cell's id
            columns first (``router`` is the label; ``episode`` is Int64 as in
            ``replay_episodes``); empty when ``keep_requests`` is off.
        n_loaded: cells loaded from ``results_dir`` instead of run (not part of the
            results: it differs between a fresh run and a resumed one).
    """

    cells: pl.DataFrame
    requests: pl.DataFrame
    n_loaded: int = 0

    def to_frame(self) -> pl.DataFrame:
        """The per-cell frame (:attr:`cells`)."""
        return self.cells

    @property
    def n_failed(self) -> int:
        """Number of cells that failed after their retry."""
        return int((self.cells["status"] == "failed").sum())

    def failed(self) -> pl.DataFrame:
        """The failed cells with their errors."""
        return self.cells.filter(pl.col("status") == "failed")


# ----------------------------------------------------------------------------- workers


@functools.lru_cache(maxsize=4)
def _load_episodes(
    spec: tuple[str, int | None, int | None, float | None],
) -> tuple[pl.DataFrame, ...]:
    from routeplay.datasets import load_trace, split_episodes

    name, first, n_requests, duration_s = spec
    trace = load_trace(name)
    if first is not None:
        trace = trace.head(first)
    if n_requests is None and duration_s is None:
        return (trace,)
    return tuple(
        e.trace for e in split_episodes(trace, n_requests=n_requests, duration_s=duration_s)
    )


#: Dotted paths a sweep *file* may name in ``[[calls]]`` without ``allow_code=True``
#: (``--allow-code``). Empty until a program registers its functions.
_SWEEP_FUNCTIONS: set[str] = set()


def register_sweep_function(path: str) -> str:
    """Allow sweep files to call the function at dotted path ``path``.

    A sweep file's ``[[calls]]`` entries run functions by dotted path in the worker
    processes, so a sweep file that may name *any* function is code: ``function =
    "logging:basicConfig"`` with a ``filename`` parameter truncates an arbitrary file.
    :func:`load_sweep` and :func:`sweep_from_dict` therefore accept only registered
    paths unless the caller passes ``allow_code=True`` (``routeplay sweep --allow-code``)
    for a file it trusts like its own code. :class:`SweepCallConfig` objects built in
    Python are not checked: that caller is already writing code.

    Args:
        path: ``"package.module:function"`` (or ``"package.module.function"``); it is
            imported to check that it names a callable.

    Returns:
        ``path``.

    Raises:
        ValueError: if ``path`` cannot be imported or is not callable.

    Example:
        >>> register_sweep_function("math:gcd")
        'math:gcd'
        >>> sweep_from_dict({"trace": "azure-2023-code", "calls": [
        ...     {"label": "g", "function": "math:gcd", "params": {"a": 4}}]}).calls[0].label
        'g'
    """
    _import_function(path)
    _SWEEP_FUNCTIONS.add(path)
    return path


def _import_function(path: str) -> Callable[..., Any]:
    module, _, name = path.rpartition(":") if ":" in path else path.rpartition(".")
    try:
        func = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"cannot import sweep function {path!r} ({exc}); expected 'package.module:function' "
            "importable in the worker processes."
        ) from exc
    if not callable(func):
        raise ValueError(f"sweep function {path!r} is {func!r}, not callable.")
    return func  # type: ignore[no-any-return]


def _metric_dict(raw: Any, where: str) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise TypeError(f"{where} returned {type(raw).__name__}; expected a mapping of metrics.")
    out: dict[str, Any] = {}
    for k, v in raw.items():
        if v is not None and not isinstance(v, str | bool | int | float):
            raise TypeError(
                f"{where} returned metric {k!r} = {v!r}; expected a number, string, bool or None."
            )
        out[str(k)] = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v
    return out


def _run_replay_cell(cell: dict[str, Any]) -> tuple[dict[str, Any], pl.DataFrame | None]:
    from ..engine._clusters import load_cluster
    from ..engine._engine import run_replay
    from ..engine._result import ReplayConfig
    from ..routers._registry import make_router
    from ._episodes import episode_seed

    spec = cell["spec"]
    episodes = _load_episodes(
        (
            spec["trace"],
            spec["first_requests"],
            spec["episode_n_requests"],
            spec["episode_duration_s"],
        )
    )
    k = int(spec["episode"])
    if k >= len(episodes):
        raise ValueError(
            f"episode {k} does not exist: trace {spec['trace']!r} splits into {len(episodes)} "
            f"episodes (0..{len(episodes) - 1})."
        )
    router = make_router(spec["router"]["name"], **spec["router"]["params"])
    config = ReplayConfig(
        seed=episode_seed(int(cell["seed"]), k),  # the pipeline's one seed rule
        mode=spec["mode"],
        timeline_sample_interval_s=spec["timeline_sample_interval_s"],
    )
    result = run_replay(episodes[k], load_cluster(spec["cluster"]), router, config=config)
    summary = {str(key): float(v) for key, v in result.summary.items()}
    return summary, (result.requests if spec["keep_requests"] else None)


def _run_call_cell(cell: dict[str, Any], cell_dir: str | None) -> dict[str, Any]:
    spec = cell["spec"]
    func = _import_function(spec["function"])
    kwargs = dict(spec["params"])
    try:
        accepts_dir = "cell_dir" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        accepts_dir = False
    if accepts_dir:
        path = Path(cell_dir) if cell_dir else Path(tempfile.mkdtemp(prefix="routeplay-cell-"))
        path.mkdir(parents=True, exist_ok=True)
        kwargs["cell_dir"] = str(path)
    return _metric_dict(func(seed=int(cell["seed"]), **kwargs), spec["function"])


def _execute_cell(cell: dict[str, Any], cell_dir: str | None) -> dict[str, Any]:
    """Run one cell; never raises for errors of the cell itself (they become the payload)."""
    try:
        if cell["kind"] == "replay":
            summary, requests = _run_replay_cell(cell)
        else:
            summary, requests = _run_call_cell(cell, cell_dir), None
    except Exception as exc:  # noqa: BLE001 - reported in the results, never dropped
        return {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    return {"ok": True, "summary": summary, "requests": requests}


def _worker_main(conn: Connection) -> None:  # pragma: no cover - runs in a child process
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        cell, cell_dir = message
        conn.send(_execute_cell(cell, cell_dir))


# ----------------------------------------------------------------------------- storage


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(tmp)
    os.replace(tmp, path)


class _Store:
    """Per-cell files under ``results_dir/cells``; the JSON is written last (commit)."""

    def __init__(self, root: Path) -> None:
        self.cells = root / "cells"
        self.cells.mkdir(parents=True, exist_ok=True)

    def cell_dir(self, key: str) -> str:
        return str(self.cells / key)

    def load(self, cell: SweepCellConfig) -> dict[str, Any] | None:
        meta_path = self.cells / f"{cell.key}.json"
        if not meta_path.is_file():
            return None
        try:
            record: dict[str, Any] = json.loads(meta_path.read_text())
        except json.JSONDecodeError:
            logger.warning("ignoring unreadable sweep record %s", meta_path)
            return None
        if record.get("status") != "ok" or record.get("cell") != cell.to_dict():
            return None
        requests = None
        if record.get("has_requests"):
            parquet = self.cells / f"{cell.key}.parquet"
            if not parquet.is_file():
                return None
            requests = pl.read_parquet(parquet)
        record["requests"] = requests
        return record

    def save(self, cell: SweepCellConfig, record: dict[str, Any]) -> None:
        from routeplay import __version__

        requests = record.get("requests")
        if requests is not None:
            _write_atomic(self.cells / f"{cell.key}.parquet", requests.write_parquet)
        meta = {k: v for k, v in record.items() if k != "requests"}
        meta.update(cell=cell.to_dict(), has_requests=requests is not None, version=__version__)
        text = json.dumps(meta, indent=2)  # key order kept: it is the column order
        _write_atomic(self.cells / f"{cell.key}.json", lambda p: p.write_text(text))


# ----------------------------------------------------------------------------- backends

_Done = Callable[[int, dict[str, Any]], None]


def _cell_dir(store: _Store | None, cell: SweepCellConfig) -> str | None:
    return store.cell_dir(cell.key) if store is not None else None


class _Attempts:
    """Retry bookkeeping shared by the backends: returns True when a cell is final."""

    def __init__(self, on_done: _Done) -> None:
        self.counts: dict[int, int] = {}
        self.on_done = on_done

    def report(self, index: int, payload: dict[str, Any]) -> bool:
        n = self.counts.get(index, 0) + 1
        self.counts[index] = n
        if payload["ok"] or n >= _MAX_ATTEMPTS:
            self.on_done(index, {**payload, "n_attempts": n})
            return True
        logger.warning("sweep cell %d failed (%s); retrying once", index, payload["error"])
        return False


def _run_serial(
    todo: list[tuple[int, SweepCellConfig]], store: _Store | None, on_done: _Done
) -> None:
    attempts = _Attempts(on_done)
    for index, cell in todo:
        while not attempts.report(index, _execute_cell(cell.to_dict(), _cell_dir(store, cell))):
            pass


class _Worker:
    def __init__(self, ctx: Any) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.index: int | None = None

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


def _run_process(
    todo: list[tuple[int, SweepCellConfig]],
    store: _Store | None,
    on_done: _Done,
    n_workers: int,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue: deque[tuple[int, SweepCellConfig]] = deque(todo)
    cells = dict(todo)
    attempts = _Attempts(on_done)
    workers = [_Worker(ctx) for _ in range(min(n_workers, len(todo)))]
    try:
        while queue or any(w.index is not None for w in workers):
            for k, w in enumerate(workers):
                if w.index is None and queue:
                    if not w.process.is_alive():
                        w = workers[k] = _Worker(ctx)
                    index, cell = queue.popleft()
                    w.index = index
                    w.conn.send((cell.to_dict(), _cell_dir(store, cell)))
            busy = [w for w in workers if w.index is not None]
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for w in workers:
                if w.index is None or (w.conn not in ready and w.process.sentinel not in ready):
                    continue
                index = w.index
                payload: dict[str, Any] | None = None
                if w.conn.poll():
                    try:
                        payload = w.conn.recv()
                    except (EOFError, OSError):
                        payload = None
                if payload is None:  # the worker died while running this cell
                    w.process.join()
                    code = w.process.exitcode
                    payload = {
                        "ok": False,
                        "error": f"worker process died while running the cell (exit code {code})",
                        "traceback": None,
                    }
                    w.conn.close()  # replaced by a fresh worker when there is more work
                w.index = None
                if not attempts.report(index, payload):
                    queue.appendleft((index, cells[index]))
    finally:
        for w in workers:
            w.stop()


def _run_ray(
    todo: list[tuple[int, SweepCellConfig]],
    store: _Store | None,
    on_done: _Done,
    n_workers: int | None,
) -> None:
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(
            "backend='ray' needs Ray; install it with `pip install 'routeplay[ray]'` "
            "(or use backend='process').",
            name=exc.name,
        ) from exc
    started = False
    if not ray.is_initialized():
        ray.init(num_cpus=n_workers, include_dashboard=False, log_to_driver=False)
        started = True
    try:
        remote = ray.remote(max_retries=0, num_cpus=1)(_execute_cell)
        attempts = _Attempts(on_done)
        cells = dict(todo)
        refs: dict[Any, int] = {}

        def submit(index: int) -> None:
            cell = cells[index]
            refs[remote.remote(cell.to_dict(), _cell_dir(store, cell))] = index

        for index, _ in todo:
            submit(index)
        while refs:
            done, _ = ray.wait(list(refs), num_returns=1)
            index = refs.pop(done[0])
            try:
                payload = ray.get(done[0])
            except ray.exceptions.RayError as exc:  # the worker died (killed, OOM, ...)
                payload = {
                    "ok": False,
                    "error": f"Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                    "traceback": str(exc),
                }
            if not attempts.report(index, payload):
                submit(index)
    finally:
        if started:
            ray.shutdown()


# ----------------------------------------------------------------------------- assembly


def _cells_frame(
    cells: Sequence[SweepCellConfig], records: Sequence[dict[str, Any]]
) -> pl.DataFrame:
    metric_names: list[str] = []
    seen: set[str] = set()
    for record in records:
        for name in record.get("summary") or {}:
            if name not in seen:
                seen.add(name)
                metric_names.append(name)
    ids: dict[str, list[Any]] = {c: [] for c in (*_ID_COLUMNS, "status", "n_attempts", "error")}
    metrics: dict[str, list[Any]] = {m: [] for m in metric_names}
    for cell, record in zip(cells, records, strict=True):
        ids["key"].append(cell.key)
        ids["kind"].append(cell.kind)
        ids["label"].append(cell.label)
        ids["router"].append(cell.router)
        ids["cluster"].append(cell.cluster)
        ids["episode"].append(cell.episode)
        ids["seed"].append(cell.seed)
        ids["status"].append(record["status"])
        ids["n_attempts"].append(record["n_attempts"])
        ids["error"].append(record.get("error"))
        summary = record.get("summary") or {}
        for m in metric_names:
            metrics[m].append(summary.get(m))
    schema: dict[str, Any] = {
        "key": pl.String,
        "kind": pl.String,
        "label": pl.String,
        "router": pl.String,
        "cluster": pl.String,
        "episode": pl.Int64,
        "seed": pl.Int64,
        "status": pl.String,
        "n_attempts": pl.Int64,
        "error": pl.String,
    }
    frame = pl.DataFrame(ids, schema=schema)
    extra = []
    for m in metric_names:
        values = metrics[m]
        numeric = all(v is None or isinstance(v, float) for v in values)
        dtype = pl.Float64 if numeric else pl.String
        extra.append(
            pl.Series(m, [v if numeric or v is None else str(v) for v in values], dtype=dtype)
        )
    return frame.with_columns(extra) if extra else frame


def _requests_frame(
    cells: Sequence[SweepCellConfig], records: Sequence[dict[str, Any]]
) -> pl.DataFrame:
    frames = []
    for cell, record in zip(cells, records, strict=True):
        requests = record.get("requests")
        if requests is None:
            continue
        frames.append(
            requests.with_columns(
                pl.lit(cell.key).alias("key"),
                pl.lit(cell.label).alias("router"),
                pl.lit(cell.cluster, dtype=pl.String).alias("cluster"),
                pl.lit(cell.episode, dtype=pl.Int64).alias("episode"),
                pl.lit(cell.seed, dtype=pl.Int64).alias("seed"),
            )
        )
    if not frames:
        return pl.DataFrame(
            schema={
                "key": pl.String,
                "router": pl.String,
                "cluster": pl.String,
                "episode": pl.Int64,
                "seed": pl.Int64,
            }
        )
    out = pl.concat(frames, how="diagonal_relaxed")
    first = ["key", "router", "cluster", "episode", "seed"]
    ordered: pl.DataFrame = out.select(first + [c for c in out.columns if c not in first])
    return ordered


def run_sweep(
    grid: SweepGrid | Sequence[SweepCellConfig],
    *,
    backend: SweepBackend = "process",
    n_workers: int | None = None,
    results_dir: str | Path | None = None,
    resume: bool = True,
    show_progress: bool = False,
) -> SweepResult:
    """Run every cell of a sweep and collect the results in grid order.

    Args:
        grid: the sweep, or an explicit list of cells.
        backend: ``"process"`` (local pool of spawned workers), ``"ray"`` (the running
            Ray cluster, or a local one with ``n_workers`` CPUs) or ``"serial"``.
        n_workers: worker processes (default: ``os.cpu_count()``); for Ray, the CPUs of
            a local cluster it starts (ignored when Ray is already initialised).
        results_dir: write each finished cell here (atomically) and a ``sweep.json``
            with the grid; ``None`` keeps everything in memory.
        resume: load cells already finished in ``results_dir`` instead of running them.
        show_progress: a tqdm bar over cells.

    Returns:
        :class:`SweepResult` with one row per cell (failed cells included).

    Raises:
        ValueError: unknown backend, bad ``n_workers``, or repeated cells.
        ModuleNotFoundError: ``backend="ray"`` without Ray installed.

    Example:
        >>> grid = SweepGrid(trace="azure-2023-code", first_requests=40,
        ...     episode_n_requests=20, routers={"rr": "round-robin"},
        ...     clusters=("paper-2xv100",), seeds=(0,))
        >>> result = run_sweep(grid, backend="serial")
        >>> result.cells.select("label", "episode", "status", "n_requests").rows()
        [('rr', 0, 'ok', 20.0), ('rr', 1, 'ok', 20.0)]
    """
    if backend not in SWEEP_BACKENDS:
        raise ValueError(
            f"run_sweep backend = {backend!r}; expected one of {list(SWEEP_BACKENDS)}."
        )
    if n_workers is not None and n_workers < 1:
        raise ValueError(f"run_sweep n_workers = {n_workers!r}; expected >= 1 or None.")
    cells = grid.cells() if isinstance(grid, SweepGrid) else list(grid)
    keys = [c.key for c in cells]
    if len(set(keys)) != len(keys):
        raise ValueError(
            f"run_sweep got {len(keys) - len(set(keys))} repeated cell(s); expected distinct cells."
        )
    store = None
    if results_dir is not None:
        store = _Store(Path(results_dir))
        if isinstance(grid, SweepGrid):
            from routeplay import __version__

            text = json.dumps({"version": __version__, "grid": grid.to_dict()}, indent=2)
            _write_atomic(Path(results_dir) / "sweep.json", lambda p: p.write_text(text))
    records: list[dict[str, Any] | None] = [None] * len(cells)
    n_loaded = 0
    if store is not None and resume:
        for i, cell in enumerate(cells):
            records[i] = store.load(cell)
            n_loaded += records[i] is not None
    todo = [(i, c) for i, c in enumerate(cells) if records[i] is None]
    bar = tqdm(total=len(cells), initial=n_loaded, desc="sweep cells", disable=not show_progress)

    def on_done(index: int, payload: dict[str, Any]) -> None:
        record: dict[str, Any] = {
            "status": "ok" if payload["ok"] else "failed",
            "n_attempts": payload["n_attempts"],
            "error": None if payload["ok"] else payload["error"],
            "traceback": None if payload["ok"] else payload.get("traceback"),
            "summary": payload.get("summary"),
            "requests": payload.get("requests"),
        }
        if store is not None:
            store.save(cells[index], record)
        records[index] = record
        bar.update(1)

    try:
        if todo:
            n = n_workers if n_workers is not None else (os.cpu_count() or 1)
            if backend == "serial":
                _run_serial(todo, store, on_done)
            elif backend == "process":
                _run_process(todo, store, on_done, n)
            else:
                _run_ray(todo, store, on_done, n_workers)
    finally:
        bar.close()
    final = [r for r in records if r is not None]
    if len(final) != len(cells):  # a backend bug, never a silent drop
        raise RuntimeError(f"sweep finished with {len(cells) - len(final)} unaccounted cells.")
    return SweepResult(
        cells=_cells_frame(cells, final),
        requests=_requests_frame(cells, final),
        n_loaded=n_loaded,
    )


# ----------------------------------------------------------------------------- TOML


def sweep_from_dict(
    spec: Mapping[str, Any],
    *,
    base_dir: str | Path | None = None,
    allow_code: bool = False,
) -> SweepGrid:
    """Build a :class:`SweepGrid` from a parsed sweep file.

    Cluster and trace paths that are relative and exist relative to ``base_dir`` (the
    sweep file's folder) are resolved against it; names of built-in clusters and
    registered traces are kept as they are. ``[[calls]]`` may name only functions
    registered with :func:`register_sweep_function`, unless ``allow_code`` is True
    (the file is then trusted like code: it can run any importable function).

    Example:
        >>> grid = sweep_from_dict({"trace": "azure-2023-code", "clusters": ["a100x4"],
        ...     "routers": {"rr": "round-robin", "mc": {"name": "max-capacity",
        ...     "mode": "best-fit"}}, "seeds": [0, 1]})
        >>> grid.routers["mc"]
        {'name': 'max-capacity', 'params': {'mode': 'best-fit'}}
        >>> sweep_from_dict({"trace": "x", "rooters": {}})
        Traceback (most recent call last):
        ...
        ValueError: unknown sweep key(s) ['rooters']; expected ... Did you mean 'routers'?
    """
    import difflib

    valid = {f.name for f in dataclasses.fields(SweepGrid)}
    extra = sorted(set(spec) - valid)
    if extra:
        close = difflib.get_close_matches(extra[0], sorted(valid), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown sweep key(s) {extra}; expected some of {sorted(valid)}.{hint}")
    base = Path(base_dir) if base_dir is not None else None

    def resolve(value: str) -> str:
        if base is not None and not Path(value).is_absolute() and (base / value).exists():
            return str((base / value).resolve())
        return value

    kwargs: dict[str, Any] = dict(spec)
    if "trace" in kwargs:
        kwargs["trace"] = resolve(str(kwargs["trace"]))
    if "clusters" in kwargs:
        kwargs["clusters"] = tuple(resolve(str(c)) for c in kwargs["clusters"])
    for name in ("seeds", "episodes"):
        if name in kwargs and kwargs[name] is not None:
            kwargs[name] = tuple(kwargs[name])
    calls = []
    call_fields = {f.name for f in dataclasses.fields(SweepCallConfig)}
    for k, call in enumerate(kwargs.pop("calls", [])):
        unknown = sorted(set(call) - call_fields)
        if unknown:
            raise ValueError(
                f"calls[{k}] has unknown key(s) {unknown}; expected some of {sorted(call_fields)}."
            )
        call = dict(call)
        function = str(call.get("function", ""))
        if not allow_code and function not in _SWEEP_FUNCTIONS:
            raise ValueError(
                f"calls[{k}].function = {function!r} is not a registered sweep function; a "
                "sweep file that names any importable function is code (it runs in every "
                f"worker). Registered: {sorted(_SWEEP_FUNCTIONS)}. Fix: register it with "
                "routeplay.replay.register_sweep_function, or pass --allow-code "
                "(allow_code=True) if you trust this file like your own code."
            )
        if "seeds" in call:
            call["seeds"] = tuple(call["seeds"])
        calls.append(SweepCallConfig(**call))
    return SweepGrid(**kwargs, calls=tuple(calls))


def load_sweep(path: str | Path, *, allow_code: bool = False) -> SweepGrid:
    """Read a sweep TOML file (keys: the fields of :class:`SweepGrid`).

    Args:
        path: the file.
        allow_code: let ``[[calls]]`` name any importable function (see
            :func:`register_sweep_function`: such a file is code).

    Raises:
        FileNotFoundError: no such file.
        ValueError: invalid TOML or an invalid grid.
    """
    import tomllib

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"sweep file {str(path)!r} not found; expected a TOML file.")
    try:
        spec = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"sweep file {str(p)!r} is not valid TOML: {exc}") from exc
    try:
        return sweep_from_dict(spec, base_dir=p.parent, allow_code=allow_code)
    except (ValueError, FileNotFoundError) as exc:  # a missing cluster file is a bad entry
        raise ValueError(f"sweep file {str(p)!r}: {exc}") from exc
