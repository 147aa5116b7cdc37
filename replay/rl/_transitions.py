"""Transition datasets: any router's decisions logged as Parquet for offline RL.

One row per routing decision (the contract with ``offline_rl``, fixed in
``RL_CONTRACT.md``):

==============  ==================  ===================================================
column          dtype               meaning
==============  ==================  ===================================================
``episode``     Int64               episode index (global across the file)
``step``        Int64               decision index within the episode, 0..
``time_s``      Float64             simulated decision time (engine clock)
``request_id``  UInt64              the request being routed
``obs``         Array(Float32, d)   :func:`encode_observation` at the decision
``action``      Int64               action index ``0..m`` (``m`` = WAIT)
``reward``      Float64             reward of the decision (function in the metadata)
``next_obs``    Array(Float32, d)   observation at the next decision of the episode
``terminal``    Boolean             last decision of an episode whose requests all finished
``timeout``     Boolean             last decision of an episode cut at ``max_steps``
``behaviour``   String              behaviour policy, e.g. ``round-robin+eps0.1``
``propensity``  Float64             probability the behaviour policy gave the action
``dt_s``        Float64             simulated seconds to the next decision (or the end)
``train_episode`` Int64             training episode ``k`` of the reward's weight
``behaviour_markov`` Boolean        the behaviour is a function of the decision state
==============  ==================  ===================================================

Choices:

* ``next_obs`` of an episode's last row: zeros when the episode is terminal (every
  request finished: there is no next decision to encode; the value is never
  bootstrapped from), and the real observation of the next (unlogged) decision when it
  timed out.
* A row is never both terminal and timeout; every episode ends with exactly one of
  them. A decision's transition spans to the next decision of the same episode
  (:mod:`routeplay.replay.rl._outcomes` defines the interval and the reward inputs).
* Epsilon-random exploration: at every decision the behaviour router is asked (so its
  internal state advances as in a plain replay), then with probability ``epsilon`` its
  answer is replaced by a uniformly random action among all ``m + 1`` (WAIT included;
  the replay offers a waiting request again at the next action tick). The propensity
  is ``1 - eps + eps/(m+1)`` for the router's own choice and ``eps/(m+1)`` otherwise —
  exact for deterministic routers. For a router that draws random numbers itself
  (``random``, ``power-of-two``) the column treats its draw as fixed, which is *not*
  the policy's marginal probability: do not use such logs for importance-weighted
  off-policy evaluation.
* ``dt_s`` (semi-MDP): the time the decision's interval spans, ``t' - t``
  (:mod:`routeplay.replay.rl._outcomes`); the last row of a terminal episode spans to
  the end of the simulation. Decisions are irregularly spaced (one per arrival plus
  WAIT retries), so a per-second discount ``gamma_s ** dt_s`` in place of a constant
  per-decision ``gamma`` treats a decision followed by a long quiet spell differently
  from a burst (``RoutingDataset.discounts(gamma_per_s)`` in ``offline_rl``). The
  rewards themselves are not discounted within the interval.
* ``train_episode``: the ``k`` of the workload-guided weight ``exp(-0.5 k)`` — the
  position of the episode in the list given to :func:`log_transitions` (0, 1, ...),
  *not* ``episode`` (which adds ``episode_offset`` so that several files keep distinct
  indices). Logging the same episodes under several behaviours (``routeplay train``
  gives each behaviour its own ``episode_offset``) thus gives every behaviour the same
  weights.
* ``behaviour_markov`` (also :func:`behaviour_is_markov`): True when the behaviour
  router's answer is a deterministic, memoryless function of what it sees at the
  decision (the request view and the cluster snapshot, which the observation encodes;
  min-min and impact-greedy exactly, via the ``minmin_eta`` and ``impact_cost``
  blocks) and uses no oracle input. Then the logged ``propensity`` is the behaviour's
  probability of the action given the state, usable for importance weighting. False
  for routers with memory (round robin's counter, prefix and session tables, a
  ``PolicyRouter`` with a ``wait_limit``), their own random draws (``random``,
  ``power-of-two``) or oracle inputs (true lengths, simulator forks): their propensity
  is conditional on hidden router state and is *not* the policy's probability given
  the observation. A router declares it with an ``observation_markov`` attribute;
  built-in routers without one are looked up in :data:`MARKOV_ROUTERS`; unknown
  routers count as False (conservative).
* Seeds: episode ``k`` (global index) gives the behaviour router the generator a replay
  of that episode gives it, ``default_rng(SeedSequence(seed + k))`` (the pipeline's one
  seed rule, :func:`episode_seed`), and draws exploration from its own stream spawned
  from ``SeedSequence(seed, spawn_key=(k,))``; a given episode's log does not depend on
  which other episodes were logged with it.

File-level Parquet key-value metadata: ``routeplay.layout_version``,
``routeplay.obs_names`` (JSON list), ``routeplay.n_instances``, ``routeplay.n_actions``,
``routeplay.reward``, ``routeplay.cluster`` (JSON), ``routeplay.version``.

Versions: files of an older observation layout (``routeplay.layout_version`` other
than :data:`OBSERVATION_LAYOUT_VERSION`) are refused by :func:`read_transitions` with a
message naming both versions: their observation columns mean other things and they
lack the ``dt_s``/``train_episode``/``behaviour_markov`` columns. Re-log them.
"""

# Why this module is long: the transition file format (schema, metadata, writer, reader)
# and the logging loop that fills it are one contract read by offline_rl.

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from routeplay.datasets._workloads import Episode
from routeplay.estimator._impact import ImpactEstimate
from routeplay.estimator._protocols import OutputLengthPredictor

from .._types import WAIT, ClusterConfig, Router, RouterError, episode_seed
from ..engine._engine import Engine
from ..engine._result import ReplayConfig, ReplayResult
from ._observation import OBSERVATION_LAYOUT_VERSION, ObservationEncoder, ObservationLayout
from ._outcomes import OutcomeConfig, OutcomeTracker
from ._rewards import RewardFunction, make_reward

__all__ = [
    "MARKOV_ROUTERS",
    "TRANSITION_COLUMNS",
    "TransitionLogResult",
    "TransitionMetadata",
    "TransitionWriter",
    "action_to_index",
    "behaviour_is_markov",
    "index_to_action",
    "log_transitions",
    "read_transitions",
    "transition_schema",
]

logger = logging.getLogger(__name__)

#: Column names of a transition file, in order.
TRANSITION_COLUMNS: tuple[str, ...] = (
    "episode",
    "step",
    "time_s",
    "request_id",
    "obs",
    "action",
    "reward",
    "next_obs",
    "terminal",
    "timeout",
    "behaviour",
    "propensity",
    "dt_s",
    "train_episode",
    "behaviour_markov",
)

#: Built-in routers whose answer is a deterministic, memoryless function of the
#: request view and the cluster snapshot, without oracle inputs (module docstring).
MARKOV_ROUTERS: frozenset[str] = frozenset(
    {
        "least-connections",
        "jsq-tokens",
        "least-loaded",
        "least-work-left",
        "decode-balancer",
        "dedicated-small-large",
        "max-capacity",
        "min-min",
        "impact-greedy",
        "aibrix-least-latency",
        "min-total-latency",
    }
)


def behaviour_is_markov(router: object) -> bool:
    """Whether ``router`` is a function of the decision state (module docstring).

    Its ``observation_markov`` attribute when it has one, else membership of
    :data:`MARKOV_ROUTERS` (oracle routers never are).

    Example:
        >>> from routeplay.replay import make_router
        >>> behaviour_is_markov(make_router("min-min")), behaviour_is_markov(make_router(
        ...     "round-robin")), behaviour_is_markov(make_router("min-min-oracle"))
        (True, False, False)
    """
    if bool(getattr(router, "oracle", False)):
        return False
    declared = getattr(router, "observation_markov", None)
    if declared is not None:
        return bool(declared)
    return str(getattr(router, "name", "")) in MARKOV_ROUTERS


_META_PREFIX = "routeplay."


def transition_schema(obs_size: int) -> pl.Schema:
    """The Parquet/Polars schema of a transition file with ``obs_size`` features.

    Example:
        >>> transition_schema(3)["obs"]
        Array(Float32, shape=(3,))
    """
    obs = pl.Array(pl.Float32, obs_size)
    return pl.Schema(
        {
            "episode": pl.Int64(),
            "step": pl.Int64(),
            "time_s": pl.Float64(),
            "request_id": pl.UInt64(),
            "obs": obs,
            "action": pl.Int64(),
            "reward": pl.Float64(),
            "next_obs": obs,
            "terminal": pl.Boolean(),
            "timeout": pl.Boolean(),
            "behaviour": pl.String(),
            "propensity": pl.Float64(),
            "dt_s": pl.Float64(),
            "train_episode": pl.Int64(),
            "behaviour_markov": pl.Boolean(),
        }
    )


def action_to_index(action: int, n_instances: int) -> int:
    """Router action (instance index or ``WAIT``) -> discrete action index ``0..m``.

    Raises:
        ValueError: when ``action`` is neither an instance index nor ``WAIT``.

    Example:
        >>> action_to_index(2, 4), action_to_index(-1, 4)
        (2, 4)
    """
    if not _is_int(action):
        raise ValueError(
            f"action = {action!r}; expected an int instance index in range({n_instances}) "
            f"or WAIT ({WAIT})."
        )
    if action == WAIT:
        return n_instances
    if 0 <= action < n_instances:
        return int(action)
    raise ValueError(
        f"action = {action!r}; expected an instance index in range({n_instances}) or WAIT ({WAIT})."
    )


def _is_int(value: object) -> bool:
    """An int or numpy integer, not a bool."""
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def index_to_action(index: int, n_instances: int) -> int:
    """Discrete action index ``0..m`` -> router action (``m`` becomes ``WAIT``).

    Raises:
        ValueError: when ``index`` is outside ``range(n_instances + 1)``.

    Example:
        >>> index_to_action(4, 4), index_to_action(1, 4)
        (-1, 1)
    """
    if _is_int(index) and 0 <= index <= n_instances:
        return WAIT if index == n_instances else int(index)
    raise ValueError(
        f"action index = {index!r}; expected an int in range({n_instances + 1}) "
        f"({n_instances} = WAIT)."
    )


def _cluster_json(cluster: ClusterConfig) -> str:
    return json.dumps(dataclasses.asdict(cluster), sort_keys=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class TransitionMetadata:
    """File-level metadata of a transition dataset.

    Attributes:
        layout_version: :data:`OBSERVATION_LAYOUT_VERSION` the observations were made with.
        obs_names: one name per observation entry (:meth:`ObservationLayout.names`).
        n_instances: instances ``m`` of the cluster.
        n_actions: ``m + 1`` (the last action is WAIT).
        reward: name of the reward function.
        cluster: the cluster as a JSON-compatible dict (``dataclasses.asdict``).
        version: routeplay version that wrote the file.

    Example:
        >>> layout = ObservationLayout(n_instances=2, n_prompt_buckets=1, n_decode_buckets=1)
        >>> meta = TransitionMetadata.for_layout(layout, reward="queue-balance", cluster={})
        >>> meta.n_actions, meta.obs_size
        (3, 27)
        >>> TransitionMetadata.from_parquet_metadata(meta.to_parquet_metadata()) == meta
        True
    """

    layout_version: str
    obs_names: tuple[str, ...]
    n_instances: int
    n_actions: int
    reward: str
    cluster: dict[str, Any]
    version: str

    def __post_init__(self) -> None:
        if self.n_actions != self.n_instances + 1:
            raise ValueError(
                f"TransitionMetadata.n_actions = {self.n_actions}; expected n_instances + 1 = "
                f"{self.n_instances + 1} (the last action is WAIT)."
            )

    @classmethod
    def for_layout(
        cls, layout: ObservationLayout, *, reward: str, cluster: dict[str, Any]
    ) -> TransitionMetadata:
        """Metadata for observations of ``layout`` (current layout and library version)."""
        from routeplay import __version__

        return cls(
            layout_version=OBSERVATION_LAYOUT_VERSION,
            obs_names=tuple(layout.names()),
            n_instances=layout.n_instances,
            n_actions=layout.n_instances + 1,
            reward=reward,
            cluster=cluster,
            version=__version__,
        )

    @property
    def obs_size(self) -> int:
        """Length ``d`` of an observation vector."""
        return len(self.obs_names)

    def to_parquet_metadata(self) -> dict[str, str]:
        """The key-value pairs stored in the Parquet footer."""
        return {
            f"{_META_PREFIX}layout_version": self.layout_version,
            f"{_META_PREFIX}obs_names": json.dumps(list(self.obs_names)),
            f"{_META_PREFIX}n_instances": str(self.n_instances),
            f"{_META_PREFIX}n_actions": str(self.n_actions),
            f"{_META_PREFIX}reward": self.reward,
            f"{_META_PREFIX}cluster": json.dumps(self.cluster, sort_keys=True),
            f"{_META_PREFIX}version": self.version,
        }

    @classmethod
    def from_parquet_metadata(
        cls, metadata: dict[str, str], *, source: str = "metadata"
    ) -> TransitionMetadata:
        """Parse the footer's key-value pairs.

        Raises:
            ValueError: when a key is missing (the file was not written by
                :class:`TransitionWriter`).
        """
        keys = (
            "layout_version",
            "obs_names",
            "n_instances",
            "n_actions",
            "reward",
            "cluster",
            "version",
        )
        missing = [k for k in keys if f"{_META_PREFIX}{k}" not in metadata]
        if missing:
            raise ValueError(
                f"{source} lacks the transition metadata keys "
                f"{[_META_PREFIX + k for k in missing]}; expected a file written by "
                "routeplay.replay.TransitionWriter / log_transitions. Fix: re-log it with "
                "`routeplay log`."
            )

        def get(key: str) -> str:
            return metadata[f"{_META_PREFIX}{key}"]

        return cls(
            layout_version=get("layout_version"),
            obs_names=tuple(json.loads(get("obs_names"))),
            n_instances=int(get("n_instances")),
            n_actions=int(get("n_actions")),
            reward=get("reward"),
            cluster=json.loads(get("cluster")),
            version=get("version"),
        )


class TransitionWriter:
    """Collects transition rows and writes them as one Parquet file, atomically.

    Rows are buffered in memory and written on :meth:`close` to a temporary file in
    the target folder that is then renamed over ``path`` (so a reader never sees a
    half-written file). Use it as a context manager; an exception inside the ``with``
    block discards the rows and leaves ``path`` untouched.

    Args:
        path: the ``.parquet`` file to write (its folder is created).
        metadata: the file-level metadata (observation size, action count, reward).

    Example:
        >>> import tempfile, numpy as np
        >>> layout = ObservationLayout(n_instances=1, n_prompt_buckets=1, n_decode_buckets=1)
        >>> meta = TransitionMetadata.for_layout(layout, reward="queue-balance", cluster={})
        >>> out = Path(tempfile.mkdtemp()) / "t.parquet"
        >>> with TransitionWriter(out, meta) as w:
        ...     w.add(episode=0, step=0, time_s=0.0, request_id=7,
        ...           obs=np.zeros(meta.obs_size, np.float32), action=0, reward=1.0,
        ...           next_obs=np.zeros(meta.obs_size, np.float32), terminal=True,
        ...           timeout=False, behaviour="round-robin", propensity=1.0)
        >>> frame, m = read_transitions(out)
        >>> frame.height, frame["action"].to_list(), m.n_actions
        (1, [0], 2)
    """

    def __init__(self, path: str | Path, metadata: TransitionMetadata) -> None:
        self.path = Path(path)
        self.metadata = metadata
        self._cols: dict[str, list[Any]] = {c: [] for c in TRANSITION_COLUMNS}
        self._closed = False

    @property
    def n_rows(self) -> int:
        """Rows added so far."""
        return len(self._cols["episode"])

    def add(
        self,
        *,
        episode: int,
        step: int,
        time_s: float,
        request_id: int,
        obs: npt.ArrayLike,
        action: int,
        reward: float,
        next_obs: npt.ArrayLike,
        terminal: bool,
        timeout: bool,
        behaviour: str,
        propensity: float,
        dt_s: float = 0.0,
        train_episode: int | None = None,
        behaviour_markov: bool = False,
    ) -> None:
        """Append one transition row (arguments are the columns).

        ``train_episode`` defaults to ``episode``; ``behaviour_markov`` to False (the
        conservative answer).

        Raises:
            ValueError: on an observation of the wrong size, an action outside
                ``range(n_actions)``, a row both terminal and timeout, a propensity
                outside ``(0, 1]`` or a negative or non-finite ``dt_s``.
            RuntimeError: after :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("TransitionWriter.add called after close(); open a new writer.")
        d = self.metadata.obs_size
        o = np.asarray(obs, dtype=np.float32)
        no = np.asarray(next_obs, dtype=np.float32)
        if o.shape != (d,) or no.shape != (d,):
            raise ValueError(
                f"obs/next_obs have shapes {o.shape}/{no.shape}; expected ({d},) as in the "
                "metadata's obs_names. Fix: encode with the layout the metadata was built from."
            )
        if not 0 <= int(action) < self.metadata.n_actions:
            raise ValueError(
                f"action index = {action!r}; expected range({self.metadata.n_actions}). Fix: "
                "convert router actions with action_to_index."
            )
        if terminal and timeout:
            raise ValueError(
                f"episode {episode} step {step} is both terminal and timeout; expected at most "
                "one (terminal = every request finished, timeout = cut short)."
            )
        if not (0.0 < float(propensity) <= 1.0):
            raise ValueError(
                f"propensity = {propensity!r} at episode {episode} step {step}; expected a "
                "probability in (0, 1]."
            )
        if not (math.isfinite(float(dt_s)) and float(dt_s) >= 0.0):
            raise ValueError(
                f"dt_s = {dt_s!r} at episode {episode} step {step}; expected the finite, "
                "non-negative seconds to the next decision."
            )
        c = self._cols
        c["episode"].append(int(episode))
        c["step"].append(int(step))
        c["time_s"].append(float(time_s))
        c["request_id"].append(int(request_id))
        c["obs"].append(o)
        c["action"].append(int(action))
        c["reward"].append(float(reward))
        c["next_obs"].append(no)
        c["terminal"].append(bool(terminal))
        c["timeout"].append(bool(timeout))
        c["behaviour"].append(str(behaviour))
        c["propensity"].append(float(propensity))
        c["dt_s"].append(float(dt_s))
        c["train_episode"].append(int(episode if train_episode is None else train_episode))
        c["behaviour_markov"].append(bool(behaviour_markov))

    def to_frame(self) -> pl.DataFrame:
        """The rows added so far, in the contract schema."""
        schema = transition_schema(self.metadata.obs_size)
        d = self.metadata.obs_size
        data: dict[str, Any] = {}
        for name in TRANSITION_COLUMNS:
            values = self._cols[name]
            if name in ("obs", "next_obs"):
                arr = np.stack(values) if values else np.zeros((0, d), np.float32)
                data[name] = pl.Series(name, arr, dtype=schema[name])
            else:
                data[name] = pl.Series(name, values, dtype=schema[name])
        return pl.DataFrame(data)

    def close(self) -> Path:
        """Write the file (temp file + rename) and return its path."""
        if self._closed:
            return self.path
        frame = self.to_frame()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            frame.write_parquet(tmp, metadata=self.metadata.to_parquet_metadata())
            os.replace(tmp, self.path)
        finally:
            if tmp.exists():
                tmp.unlink()
        self._closed = True
        return self.path

    def __enter__(self) -> TransitionWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._closed = True


def read_transitions(
    path_or_paths: str | Path | Sequence[str | Path],
) -> tuple[pl.DataFrame, TransitionMetadata]:
    """Read one or more transition files; they must share layout, actions and reward.

    With several files whose episode indices overlap, the episodes are renumbered
    ``0..`` in (file, episode) order so that every episode stays distinct (with a
    warning that says so); otherwise the indices are kept.

    Args:
        path_or_paths: a file or a list of files written by :class:`TransitionWriter`.

    Returns:
        ``(frame, metadata)``: the rows in the contract schema (files in the given
        order) and the metadata of the first file.

    Raises:
        ValueError: when no path is given, a file lacks the metadata, or two files
            differ in layout version, observation names, action count or reward.
        FileNotFoundError: when a file does not exist.
    """
    if isinstance(path_or_paths, str | Path):
        paths = [Path(path_or_paths)]
    else:
        paths = [Path(p) for p in path_or_paths]
    if not paths:
        raise ValueError("read_transitions got no paths; expected at least one Parquet file.")
    frames: list[pl.DataFrame] = []
    first: TransitionMetadata | None = None
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"transition file {str(p)!r} does not exist.")
        meta = TransitionMetadata.from_parquet_metadata(
            pl.read_parquet_metadata(p), source=f"file {str(p)!r}"
        )
        if meta.layout_version != OBSERVATION_LAYOUT_VERSION:
            raise ValueError(
                f"transition file {str(p)!r} has observation layout version "
                f"{meta.layout_version!r}; this routeplay reads version "
                f"{OBSERVATION_LAYOUT_VERSION!r} only (version 2 added local queues, pending "
                "prefill, speed, min-min ETA and impact columns, log-scaled counts and the "
                "dt_s/train_episode/behaviour_markov columns). Fix: re-log it with "
                "`routeplay log` (or log_transitions) of this routeplay."
            )
        if first is None:
            first = meta
        else:
            for field_name in ("layout_version", "obs_names", "n_instances", "n_actions", "reward"):
                a, b = getattr(first, field_name), getattr(meta, field_name)
                if a != b:
                    raise ValueError(
                        f"transition files disagree on {field_name}: {str(paths[0])!r} has "
                        f"{a!r} but {str(p)!r} has {b!r}; expected one observation layout, "
                        "action space and reward per dataset. Fix: re-log the files with the "
                        "same cluster, predictor, layout and reward, or read them separately."
                    )
        frame = pl.read_parquet(p)
        expected = transition_schema(meta.obs_size)
        if frame.schema != expected:
            raise ValueError(
                f"transition file {str(p)!r} has schema {dict(frame.schema)}; expected "
                f"{dict(expected)}."
            )
        frames.append(frame)
    assert first is not None
    if len(frames) > 1:
        seen: set[int] = set()
        overlap = False
        for f in frames:
            eps = set(f["episode"].unique().to_list())
            if seen & eps:
                overlap = True
                break
            seen |= eps
        if overlap:
            n_total = sum(f["episode"].n_unique() for f in frames)
            warnings.warn(
                f"episode indices overlap across {len(frames)} transition files; renumbered "
                f"the {n_total} episodes 0..{n_total - 1} in (file, episode) order. Pass "
                "episode_offset to log_transitions to keep indices distinct.",
                stacklevel=2,
            )
            renumbered = []
            offset = 0
            for f in frames:
                rank = f["episode"].rank(method="dense").cast(pl.Int64) - 1 + offset
                offset += f["episode"].n_unique()
                renumbered.append(f.with_columns(rank.alias("episode")))
            frames = renumbered
    return pl.concat(frames, how="vertical"), first


@dataclass(frozen=True, slots=True, kw_only=True)
class TransitionLogResult:
    """What :func:`log_transitions` wrote.

    Attributes:
        path: the Parquet file.
        metadata: its file-level metadata.
        behaviour: the behaviour policy's name (``router`` or ``router+eps<e>``).
        behaviour_markov: whether the behaviour is a function of the decision state
            (:func:`behaviour_is_markov`; the ``behaviour_markov`` column).
        n_transitions: rows written.
        n_episodes: episodes logged.
        action_counts: rows per action index ``0..m`` (``m`` = WAIT).
        reward_sum / reward_mean / reward_std / reward_min / reward_max: over all rows.
        episode_rewards: reward sum per episode, in order.
        episode_steps: decisions per episode, in order.
        terminal: per episode, True if it ended with every request finished (False:
            cut at ``max_steps``).
        results: per episode the :class:`ReplayResult` (``None`` for an episode cut at
            ``max_steps``, whose replay did not run to the end).
    """

    path: Path
    metadata: TransitionMetadata
    behaviour: str
    behaviour_markov: bool
    n_transitions: int
    n_episodes: int
    action_counts: tuple[int, ...]
    reward_sum: float
    reward_mean: float
    reward_std: float
    reward_min: float
    reward_max: float
    episode_rewards: tuple[float, ...]
    episode_steps: tuple[int, ...]
    terminal: tuple[bool, ...]
    results: tuple[ReplayResult | None, ...]

    def to_frame(self) -> pl.DataFrame:
        """One row per episode: steps, reward sum, terminal, mean and p99 E2E."""
        e2e_mean = [r.summary.get("e2e_s_mean") if r is not None else None for r in self.results]
        e2e_p99 = [r.summary.get("e2e_s_p99") if r is not None else None for r in self.results]
        return pl.DataFrame(
            {
                "episode": pl.Series(range(self.n_episodes), dtype=pl.Int64),
                "n_steps": pl.Series(self.episode_steps, dtype=pl.Int64),
                "reward_sum": pl.Series(self.episode_rewards, dtype=pl.Float64),
                "terminal": pl.Series(self.terminal, dtype=pl.Boolean),
                "e2e_s_mean": pl.Series(e2e_mean, dtype=pl.Float64),
                "e2e_s_p99": pl.Series(e2e_p99, dtype=pl.Float64),
            }
        )


def _as_traces(
    trace_or_episodes: pl.DataFrame | Sequence[pl.DataFrame] | Sequence[Episode],
) -> list[pl.DataFrame]:
    if isinstance(trace_or_episodes, pl.DataFrame):
        return [trace_or_episodes]
    traces: list[pl.DataFrame] = []
    for k, item in enumerate(trace_or_episodes):
        if isinstance(item, Episode):
            traces.append(item.trace)
        elif isinstance(item, pl.DataFrame):
            traces.append(item)
        else:
            raise ValueError(
                f"episode {k} is a {type(item).__name__}; expected a trace (polars DataFrame) "
                "or a routeplay.datasets.Episode."
            )
    if not traces:
        raise ValueError(
            "log_transitions got no episodes; expected a trace or a non-empty list of traces."
        )
    return traces


def default_layout(
    cluster: ClusterConfig,
    config: ReplayConfig | None = None,
    predictor: OutputLengthPredictor | None = None,
) -> ObservationLayout:
    """The observation layout of replays of ``cluster`` with ``config`` and ``predictor``.

    Example:
        >>> from routeplay.replay import make_cluster
        >>> default_layout(make_cluster("paper-2xv100")).n_instances
        2
    """
    cfg = config if config is not None else ReplayConfig()
    return ObservationLayout(
        n_instances=cluster.n_instances,
        n_prompt_buckets=cfg.n_prompt_buckets,
        n_decode_buckets=int(predictor.n_buckets) if predictor is not None else 1,
    )


def episode_generators(seed: int, episode: int) -> tuple[np.random.Generator, np.random.Generator]:
    """``(router rng, exploration rng)`` of global episode ``episode`` (module docstring).

    The router's generator is the one a replay of the episode gives it
    (``default_rng(SeedSequence(episode_seed(seed, episode)))``, as
    :meth:`Engine.router_rng` with ``ReplayConfig.seed = seed + episode``), so a logged
    episode and its replay route alike; the exploration draws have their own stream,
    spawned from ``SeedSequence(seed, spawn_key=(episode,))``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed = {seed!r}; expected an int >= 0.")
    router = np.random.default_rng(np.random.SeedSequence(episode_seed(int(seed), int(episode))))
    explore_ss = np.random.SeedSequence(int(seed), spawn_key=(int(episode),)).spawn(2)[1]
    return router, np.random.default_rng(explore_ss)


def behaviour_name(router_name: str, epsilon: float) -> str:
    """``router`` or ``router+eps<epsilon>`` (e.g. ``round-robin+eps0.1``)."""
    return router_name if epsilon == 0 else f"{router_name}+eps{epsilon:g}"


def log_transitions(
    trace_or_episodes: pl.DataFrame | Sequence[pl.DataFrame] | Sequence[Episode],
    cluster: ClusterConfig,
    router: Router,
    *,
    reward: RewardFunction | str,
    path: str | Path,
    epsilon: float = 0.0,
    seed: int = 0,
    predictor: OutputLengthPredictor | None = None,
    layout: ObservationLayout | None = None,
    config: ReplayConfig | None = None,
    outcome_config: OutcomeConfig | None = None,
    max_steps: int | None = None,
    episode_offset: int = 0,
    show_progress: bool = False,
) -> TransitionLogResult:
    """Replay episodes under ``router`` (optionally epsilon-random) and log every decision.

    Each episode is replayed by its own :class:`Engine` (same rules as
    :func:`run_replay`); the router is reset with the episode's seeded generator before
    it starts, then bound to the engine (``engine.bind_router``: routers that need the
    simulator, e.g. ``lookahead-oracle``, get their fork function). Rewards come from
    :class:`~routeplay.replay.rl._outcomes.OutcomeTracker` outcomes; rows are written to
    ``path`` per the module docstring.

    Args:
        trace_or_episodes: one trace, a list of traces (e.g. ``[e.trace for e in
            split_episodes(...)]``) or a list of :class:`Episode`.
        cluster: the cluster.
        router: the behaviour policy (any :class:`Router`).
        reward: a reward function or a name from ``REWARD_VARIANTS``.
        path: the Parquet file to write (atomically).
        epsilon: probability of replacing the router's action by a uniformly random
            one among ``m + 1`` (WAIT included), in [0, 1].
        seed: seeds the router's and the exploration generators (per episode).
        predictor: optional output-length predictor (as in :func:`run_replay`).
        layout: observation layout (default: :func:`default_layout`).
        config: replay settings.
        outcome_config: settings of the reward inputs (fallback output length, impact).
        max_steps: cut each episode after this many decisions (its last row is a
            timeout); ``None`` = run every episode to the end (last row terminal).
        episode_offset: global index of the first episode (the ``episode`` column
            only). The workload-guided weight's ``k`` is the episode's position in
            ``trace_or_episodes`` (``train_episode`` column), whatever the offset.
        show_progress: show a progress bar over episodes.

    Returns:
        A :class:`TransitionLogResult` with the path, counts, reward statistics and
        the per-episode replay results.

    Raises:
        ValueError: on a bad ``epsilon``, ``max_steps``, ``seed`` or empty input.
        RouterError: when the router returns an invalid action.

    Example:
        >>> import tempfile
        >>> from routeplay.estimator import LinearLatencyModel
        >>> from routeplay.replay import RoundRobinRouter
        >>> from routeplay.replay import ClusterConfig, InstanceConfig
        >>> lat = LinearLatencyModel.from_throughput(1000.0)
        >>> cluster = ClusterConfig(instances=(InstanceConfig(name="a", latency=lat),
        ...                                    InstanceConfig(name="b", latency=lat)))
        >>> trace = pl.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 0.1, 0.2],
        ...                       "prompt_tokens": [100, 50, 80], "output_tokens": [5, 9, 3]})
        >>> out = Path(tempfile.mkdtemp()) / "log.parquet"
        >>> res = log_transitions(trace, cluster, RoundRobinRouter(),
        ...                       reward="paper-baseline", path=out)
        >>> res.n_transitions, res.action_counts, res.behaviour
        (3, (2, 1, 0), 'round-robin')
    """
    if not (isinstance(epsilon, int | float) and 0.0 <= float(epsilon) <= 1.0):
        raise ValueError(
            f"epsilon = {epsilon!r}; expected a probability in [0, 1]. Fix: pass e.g. 0.1."
        )
    if max_steps is not None and (
        isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1
    ):
        raise ValueError(f"max_steps = {max_steps!r}; expected None or an int >= 1.")
    eps = float(epsilon)
    traces = _as_traces(trace_or_episodes)
    reward_fn = make_reward(reward) if isinstance(reward, str) else reward
    cfg = config if config is not None else ReplayConfig()
    if layout is None:
        layout = default_layout(cluster, cfg, predictor)
    m = cluster.n_instances
    if layout.n_instances != m:
        raise ValueError(
            f"layout.n_instances = {layout.n_instances} but the cluster has {m} instances; "
            "expected them equal. Fix: omit layout or build it for this cluster."
        )
    router_name = str(getattr(router, "name", type(router).__name__))
    behaviour = behaviour_name(router_name, eps)
    meta = TransitionMetadata.for_layout(
        layout, reward=str(reward_fn.name), cluster=json.loads(_cluster_json(cluster))
    )
    writer = TransitionWriter(path, meta)
    encoder = ObservationEncoder(layout, cluster)
    encode = encoder.encode
    markov = behaviour_is_markov(router)
    n_act = m + 1
    p_own = 1.0 - eps + eps / n_act
    p_other = eps / n_act
    zeros = np.zeros(layout.size, np.float32)
    episode_rewards: list[float] = []
    episode_steps: list[int] = []
    terminals: list[bool] = []
    results: list[ReplayResult | None] = []
    rewards_all: list[float] = []
    counts = np.zeros(n_act, np.int64)
    iterator: Any = enumerate(traces)
    if show_progress:
        from tqdm.auto import tqdm

        iterator = tqdm(iterator, total=len(traces), desc=f"log {behaviour}")
    with writer:
        for pos, trace in iterator:
            k = episode_offset + pos
            engine = Engine(
                trace,
                cluster,
                config=cfg,
                predictor=predictor,
                oracle=bool(getattr(router, "oracle", False)),
                router_name=router_name,
            )
            router_rng, explore_rng = episode_generators(seed, k)
            router.reset(cluster, router_rng)
            engine.bind_router(router)
            tracker = OutcomeTracker(engine, outcome_config)
            # the encoder's impact estimate of a decision is the tracker's (same inputs)
            share = tracker.shares_impact_with(encoder)
            decision = engine.next_decision()
            next_obs: npt.NDArray[np.float32] | None = None
            impact: ImpactEstimate | None = None
            step = 0
            total = 0.0
            truncated = False
            while decision is not None:
                request, state = decision
                time_s = engine.now_s
                # the previous row's next_obs encoded this very decision
                if next_obs is None:
                    next_obs, impact = encode(request, state)
                obs = next_obs
                proposed = router.route(request, state)
                try:
                    own = action_to_index(proposed, m)
                except ValueError:
                    raise RouterError(
                        f"router {router_name!r} returned {proposed!r} for request "
                        f"{request.request_id}; expected an instance index in range(0, {m}) "
                        f"or WAIT ({WAIT}). Fix: return an int index of ClusterState's "
                        "instances."
                    ) from None
                index = own
                if eps > 0.0 and explore_rng.random() < eps:
                    index = int(explore_rng.integers(n_act))
                propensity = p_own if index == own else p_other
                action = index_to_action(index, m)
                terms = tracker.decision_terms(request, state, action, impact if share else None)
                engine.apply(action)
                decision = engine.next_decision()
                step += 1
                truncated = decision is not None and max_steps is not None and step >= max_steps
                next_state = decision[1] if decision is not None else engine.state()
                outcome = tracker.outcome(request, state, action, next_state, terms, episode=pos)
                r = float(reward_fn(outcome))
                if decision is not None:
                    next_obs, impact = encode(decision[0], decision[1])
                else:
                    next_obs, impact = None, None
                writer.add(
                    episode=k,
                    step=step - 1,
                    time_s=time_s,
                    request_id=request.request_id,
                    obs=obs,
                    action=index,
                    reward=r,
                    next_obs=next_obs if next_obs is not None else zeros,
                    terminal=decision is None,
                    timeout=truncated,
                    behaviour=behaviour,
                    propensity=propensity,
                    dt_s=outcome.dt_s,
                    train_episode=pos,
                    behaviour_markov=markov,
                )
                counts[index] += 1
                total += r
                rewards_all.append(r)
                if truncated:
                    break
            episode_rewards.append(total)
            episode_steps.append(step)
            terminals.append(not truncated)
            results.append(None if truncated else engine.result())
            logger.debug("logged episode %s: %s steps, reward %s", k, step, total)
    rw = np.asarray(rewards_all, dtype=np.float64)
    return TransitionLogResult(
        path=writer.path,
        metadata=meta,
        behaviour=behaviour,
        behaviour_markov=markov,
        n_transitions=int(rw.size),
        n_episodes=len(traces),
        action_counts=tuple(int(c) for c in counts),
        reward_sum=float(rw.sum()) if rw.size else 0.0,
        reward_mean=float(rw.mean()) if rw.size else math.nan,
        reward_std=float(rw.std()) if rw.size else math.nan,
        reward_min=float(rw.min()) if rw.size else math.nan,
        reward_max=float(rw.max()) if rw.size else math.nan,
        episode_rewards=tuple(episode_rewards),
        episode_steps=tuple(episode_steps),
        terminal=tuple(terminals),
        results=tuple(results),
    )
