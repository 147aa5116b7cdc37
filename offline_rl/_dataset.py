"""Transition logs (Parquet, RL_CONTRACT) -> a d3rlpy dataset plus a dataset card.

:func:`build_dataset` reads any number of transition files (any mix of behaviour
policies, with or without epsilon-random exploration), checks that they agree on the
observation layout version, the observation width and the action count, and returns a
:class:`RoutingDataset` holding

* ``mdp``: a d3rlpy ``MDPDataset`` with one episode per ``(file, episode)`` and
  ``action_size = n_actions`` passed explicitly (a log without any WAIT would
  otherwise shrink the action space);
* flat transition arrays (``observations``, ``actions``, ``rewards``,
  ``next_observations``, ``terminals``) with *every* logged row, used by
  :func:`routeplay.offline_rl.train_router`'s sampler;
* a :class:`DatasetCard` (behaviour policies, sizes, action histogram, rewards).

Episode ends, and what d3rlpy does with them (measured on d3rlpy 2.8.1):

* ``terminal`` (every request finished): the last transition's next observation is
  zeros and its target does not bootstrap. Same in ``mdp`` and in the flat arrays.
* ``timeout`` (episode cut short): d3rlpy keeps the rows but an episode ending by
  timeout *loses its last transition* (it has no next row to bootstrap from). The flat
  arrays keep it, bootstrapping from the logged ``next_obs`` column; the card reports
  both ``n_transitions`` and ``n_transitions_d3rlpy``.
* An episode whose last row has neither flag (e.g. a log cut off mid-episode) would
  be silently dropped by d3rlpy (rows after the last terminal/timeout are dropped).
  Here its last row is marked as a timeout, with a warning that counts such episodes.
* A terminal/timeout flag on a row that is not its episode's last row, or a row that
  is both, is an error.

Inside an episode d3rlpy takes the next observation from the next row's ``obs``; the
flat arrays use the logged ``next_obs``. When the two disagree the builder warns with
the count (the logs then skip decisions, and the two views differ).

Observation layout: files must carry the current
:data:`~routeplay.replay.rl._observation.OBSERVATION_LAYOUT_VERSION`; older files are
refused with a message naming both versions (re-log them). The optional columns of
layout version 2 are carried into flat arrays: ``dt_s`` (seconds to the next decision;
NaN when an input lacks it), ``behaviour_markov`` (False when absent) and
``train_episode``. :meth:`RoutingDataset.discounts` turns ``dt_s`` into per-transition
semi-MDP discounts ``gamma_per_s ** dt_s``.
"""

# Why this module is long: reading, validating and converting transition logs and
# writing the dataset card form one contract (the transition file format).

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import numpy.typing as npt
import polars as pl
from routeplay.replay.rl._observation import OBSERVATION_LAYOUT_VERSION
from routeplay.replay.rl._scheduling import SCHEDULER_LAYOUT_VERSION

if TYPE_CHECKING:
    from d3rlpy.dataset import MDPDataset

__all__ = ["DatasetCard", "RoutingDataset", "build_dataset"]

# Columns every transition frame must have (RL_CONTRACT.md), with their dtypes'
# base types (``obs``/``next_obs`` are ``Array(Float32, d)``).
_REQUIRED_COLUMNS: dict[str, Any] = {
    "episode": pl.Int64,
    "step": pl.Int64,
    "obs": pl.Array,
    "action": pl.Int64,
    "reward": pl.Float64,
    "next_obs": pl.Array,
    "terminal": pl.Boolean,
    "timeout": pl.Boolean,
    "behaviour": pl.String,
}

# Optional columns (layout version 2) and their dtypes.
_OPTIONAL_COLUMNS: dict[str, Any] = {
    "dt_s": pl.Float64,
    "train_episode": pl.Int64,
    "behaviour_markov": pl.Boolean,
}

_META_PREFIX = "routeplay."
_LOG = logging.getLogger(__name__)


@contextlib.contextmanager
def quiet_d3rlpy() -> Iterator[None]:
    """Capture what d3rlpy prints (its structlog console output) and log it at DEBUG.

    d3rlpy configures structlog to print to stdout on import; inside this block that
    output goes to ``logging.getLogger("routeplay.offline_rl._dataset")`` instead.
    """
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            yield
    finally:
        text = buffer.getvalue().strip()
        if text:
            _LOG.debug("d3rlpy: %s", text)


_F32 = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True, kw_only=True)
class DatasetCard:
    """What a transition dataset contains (frozen; printable with :meth:`summary`).

    Attributes:
        behaviour_rows: ``(behaviour policy, n_rows)`` pairs, sorted by name.
        n_episodes: episodes (one per ``(file, episode)``).
        n_terminal_episodes: episodes that ended with every request finished.
        n_timeout_episodes: episodes cut short (including those marked by the builder).
        n_transitions: logged rows (every one is a training transition).
        n_transitions_d3rlpy: transitions in the d3rlpy ``MDPDataset`` (one fewer per
            timeout episode).
        action_counts: how often each action index ``0..n_actions-1`` was taken
            (index ``n_actions - 1`` is WAIT).
        reward_mean / reward_std / reward_min / reward_max: per-row reward statistics
            (population std).
        layout_version: observation layout version shared by every file.
        n_actions: size of the discrete action space (instances + WAIT).
        obs_size: observation width.

    Example:
        >>> card = DatasetCard(behaviour_rows=(("round-robin", 3),), n_episodes=1,
        ...     n_terminal_episodes=1, n_timeout_episodes=0, n_transitions=3,
        ...     n_transitions_d3rlpy=3, action_counts=(2, 1, 0), reward_mean=0.5,
        ...     reward_std=0.1, reward_min=0.4, reward_max=0.6, layout_version="1",
        ...     n_actions=3, obs_size=4)
        >>> card.to_frame().filter(pl.col("section") == "action")["value"].to_list()
        [2.0, 1.0, 0.0]
    """

    behaviour_rows: tuple[tuple[str, int], ...]
    n_episodes: int
    n_terminal_episodes: int
    n_timeout_episodes: int
    n_transitions: int
    n_transitions_d3rlpy: int
    action_counts: tuple[int, ...]
    reward_mean: float
    reward_std: float
    reward_min: float
    reward_max: float
    layout_version: str
    n_actions: int
    obs_size: int

    def to_frame(self) -> pl.DataFrame:
        """Long table ``section, key, value`` (sections: size, behaviour, action, reward).

        Action keys are indices as strings, the last one labelled ``"<m> (WAIT)"``
        (not for scheduler logs, whose actions are shortlist slots).
        """
        rows: list[tuple[str, str, float]] = [
            ("size", "n_episodes", float(self.n_episodes)),
            ("size", "n_terminal_episodes", float(self.n_terminal_episodes)),
            ("size", "n_timeout_episodes", float(self.n_timeout_episodes)),
            ("size", "n_transitions", float(self.n_transitions)),
            ("size", "n_transitions_d3rlpy", float(self.n_transitions_d3rlpy)),
            ("size", "n_actions", float(self.n_actions)),
            ("size", "obs_size", float(self.obs_size)),
        ]
        rows += [("behaviour", name, float(n)) for name, n in self.behaviour_rows]
        last = self.n_actions - 1 if not self.is_scheduler else -1
        rows += [
            ("action", f"{a} (WAIT)" if a == last else str(a), float(n))
            for a, n in enumerate(self.action_counts)
        ]
        rows += [
            ("reward", "mean", self.reward_mean),
            ("reward", "std", self.reward_std),
            ("reward", "min", self.reward_min),
            ("reward", "max", self.reward_max),
        ]
        return pl.DataFrame(
            rows,
            schema={"section": pl.String, "key": pl.String, "value": pl.Float64},
            orient="row",
        )

    @property
    def is_scheduler(self) -> bool:
        """True for scheduler logs (actions are shortlist slots; none is WAIT)."""
        return bool(self.layout_version == SCHEDULER_LAYOUT_VERSION)

    def summary(self) -> str:
        """A few human-readable lines (for notebooks and CLI output)."""
        last = self.n_actions - 1 if not self.is_scheduler else -1
        share = [
            f"{'WAIT' if a == last else a}:{n / max(self.n_transitions, 1):.1%}"
            for a, n in enumerate(self.action_counts)
        ]
        kind = "shortlist slots" if self.is_scheduler else "actions incl. WAIT"
        lines = [
            f"transition dataset (layout v{self.layout_version}, obs size {self.obs_size}, "
            f"{self.n_actions} {kind})",
            f"  {self.n_episodes} episodes ({self.n_terminal_episodes} terminal, "
            f"{self.n_timeout_episodes} timeout), {self.n_transitions} transitions "
            f"({self.n_transitions_d3rlpy} in d3rlpy's MDPDataset)",
            "  behaviour: " + ", ".join(f"{b}={n}" for b, n in self.behaviour_rows),
            "  actions: " + " ".join(share),
            f"  reward: mean {self.reward_mean:.4g} std {self.reward_std:.4g} "
            f"min {self.reward_min:.4g} max {self.reward_max:.4g}",
        ]
        return "\n".join(lines)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoutingDataset:
    """Transitions ready for d3rlpy, plus their card (see the module docstring).

    Attributes:
        mdp: d3rlpy ``MDPDataset`` (episodes, discrete actions, ``action_size`` set).
        observations / next_observations: ``(n_transitions, obs_size)`` float32.
        actions: ``(n_transitions,)`` int64 action indices (``n_actions - 1`` = WAIT).
        rewards: ``(n_transitions,)`` float32.
        terminals: ``(n_transitions,)`` float32, 1.0 on the last row of terminal episodes.
        episode_starts: ``(n_episodes,)`` row index of each episode's first transition.
        obs_names: names of the observation entries (from the files' metadata, or
            ``None`` when built from frames without it).
        metadata: the first file's ``routeplay.*`` metadata (keys without the prefix).
        card: the :class:`DatasetCard`.
        dt_s: ``(n_transitions,)`` float64 seconds from each decision to the next
            (NaN where an input had no ``dt_s`` column).
        behaviour_markov: ``(n_transitions,)`` bool, True where the behaviour policy is
            a function of the decision state (its propensity is usable for importance
            weighting; ``routeplay.replay.rl._transitions``).
        train_episode: ``(n_transitions,)`` int64 training episode ``k`` of each row's
            reward weight.
    """

    mdp: MDPDataset
    observations: _F32
    actions: npt.NDArray[np.int64]
    rewards: _F32
    next_observations: _F32
    terminals: _F32
    episode_starts: npt.NDArray[np.int64]
    obs_names: tuple[str, ...] | None
    metadata: Mapping[str, str]
    card: DatasetCard
    dt_s: npt.NDArray[np.float64] | None = None
    behaviour_markov: npt.NDArray[np.bool_] | None = None
    train_episode: npt.NDArray[np.int64] | None = None

    def discounts(self, gamma_per_s: float) -> npt.NDArray[np.float64]:
        """Per-transition semi-MDP discounts ``gamma_per_s ** dt_s``.

        Raises:
            ValueError: ``gamma_per_s`` outside (0, 1], or rows without ``dt_s``.

        Example:
            >>> import numpy as np, polars as pl
            >>> frame = pl.DataFrame({"episode": [0, 0], "step": [0, 1],
            ...     "obs": np.zeros((2, 2), np.float32), "action": [0, 1],
            ...     "reward": [1.0, 0.0], "next_obs": np.zeros((2, 2), np.float32),
            ...     "terminal": [False, True], "timeout": [False, False],
            ...     "behaviour": ["rr"] * 2, "dt_s": [0.5, 2.0]},
            ...     schema_overrides={"obs": pl.Array(pl.Float32, 2),
            ...                       "next_obs": pl.Array(pl.Float32, 2)})
            >>> build_dataset(frame, n_actions=3).discounts(0.9).round(6).tolist()
            [0.948683, 0.81]
        """
        if not (isinstance(gamma_per_s, int | float) and 0.0 < float(gamma_per_s) <= 1.0):
            raise ValueError(
                f"gamma_per_s = {gamma_per_s!r}; expected a per-second discount in (0, 1]. "
                "Fix: pass e.g. 0.99."
            )
        dt = self.dt_s
        if dt is None or np.isnan(dt).any():
            n = self.card.n_transitions if dt is None else int(np.isnan(dt).sum())
            raise ValueError(
                f"{n} transition(s) have no dt_s; expected logs of observation layout "
                "version 2 (log_transitions records dt_s). Fix: re-log them."
            )
        return np.asarray(float(gamma_per_s) ** dt, dtype=np.float64)

    @property
    def n_actions(self) -> int:
        """Size of the discrete action space (instances + WAIT)."""
        return self.card.n_actions

    @property
    def n_instances(self) -> int:
        """Instances of the logged cluster (``n_actions - 1``)."""
        return self.card.n_actions - 1

    @property
    def obs_size(self) -> int:
        """Observation width."""
        return self.card.obs_size

    @property
    def layout_version(self) -> str:
        """Observation layout version of the logs."""
        return self.card.layout_version


def _read_file(path: Path) -> tuple[pl.DataFrame, dict[str, str]]:
    if not path.is_file():
        raise FileNotFoundError(
            f"transition file {str(path)!r} does not exist; expected a Parquet file written "
            "by routeplay.replay.log_transitions / TransitionWriter."
        )
    raw = pl.read_parquet_metadata(path)
    meta = {k[len(_META_PREFIX) :]: v for k, v in raw.items() if k.startswith(_META_PREFIX)}
    return pl.read_parquet(path), meta


def _width(dtype: Any) -> int:
    return int(cast(pl.Array, dtype).shape[0])


def _check_columns(frame: pl.DataFrame, label: str) -> None:
    missing = [c for c in _REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{label} lacks transition column(s) {missing}; expected the columns of "
            f"RL_CONTRACT ({list(_REQUIRED_COLUMNS)}). Fix: write logs with "
            "routeplay.replay.log_transitions."
        )
    for name, base in _REQUIRED_COLUMNS.items():
        dtype = frame.schema[name]
        ok = isinstance(dtype, pl.Array) if base is pl.Array else dtype == base
        if name in ("obs", "next_obs") and ok:
            ok = cast(pl.Array, dtype).inner == pl.Float32
        if not ok:
            expected = "Array(Float32, d)" if base is pl.Array else str(base)
            raise ValueError(
                f"{label} column {name!r} has dtype {dtype}; expected {expected} (RL_CONTRACT)."
            )
    if frame.height == 0:
        raise ValueError(f"{label} has no rows; expected at least one transition.")


def _with_optional_columns(frame: pl.DataFrame, label: str) -> pl.DataFrame:
    """Add missing optional columns (dt_s NaN, train_episode = episode, markov False)."""
    fill = {
        "dt_s": pl.lit(float("nan"), dtype=pl.Float64),
        "train_episode": pl.col("episode"),
        "behaviour_markov": pl.lit(False, dtype=pl.Boolean),
    }
    for name, dtype in _OPTIONAL_COLUMNS.items():
        if name not in frame.columns:
            frame = frame.with_columns(fill[name].alias(name))
        elif frame.schema[name] != dtype:
            raise ValueError(
                f"{label} column {name!r} has dtype {frame.schema[name]}; expected {dtype} "
                "(routeplay.replay.rl._transitions)."
            )
    return frame


def _episode_ends(
    frame: pl.DataFrame, label: str
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_], npt.NDArray[np.bool_], int]:
    """Episode start rows, terminal and timeout flags (per row), and unflagged episodes.

    ``frame`` is sorted by (episode, step). Returns ``(starts, terminal, timeout,
    n_marked)`` where unflagged episode ends are marked as timeouts.
    """
    episode = frame["episode"].to_numpy()
    terminal = frame["terminal"].to_numpy().astype(bool)
    timeout = frame["timeout"].to_numpy().astype(bool)
    both = np.flatnonzero(terminal & timeout)
    if both.size:
        r = int(both[0])
        raise ValueError(
            f"{label}: row of episode {int(episode[r])} step {int(frame['step'][r])} is both "
            "terminal and timeout; expected at most one (RL_CONTRACT). Fix the writer."
        )
    steps = frame["step"].to_numpy()
    dup = np.flatnonzero((np.diff(episode) == 0) & (np.diff(steps) == 0))
    if dup.size:
        r = int(dup[0])
        raise ValueError(
            f"{label}: episode {int(episode[r])} has step {int(steps[r])} twice; expected "
            "unique (episode, step) pairs."
        )
    is_last = np.ones(frame.height, dtype=bool)
    is_last[:-1] = episode[1:] != episode[:-1]
    early = np.flatnonzero((terminal | timeout) & ~is_last)
    if early.size:
        r = int(early[0])
        raise ValueError(
            f"{label}: episode {int(episode[r])} is flagged terminal/timeout at step "
            f"{int(steps[r])}, which is not its last step; expected the flag only on an "
            "episode's last row. Fix: give each episode its own `episode` index."
        )
    unflagged = is_last & ~terminal & ~timeout
    n_marked = int(unflagged.sum())
    timeout = timeout | unflagged
    starts = np.flatnonzero(np.concatenate([[True], episode[1:] != episode[:-1]]))
    return starts.astype(np.int64), terminal, timeout, n_marked


def build_dataset(
    frames_or_paths: Sequence[pl.DataFrame | str | Path] | pl.DataFrame | str | Path,
    *,
    n_actions: int | None = None,
    layout_version: str | None = None,
) -> RoutingDataset:
    """Build a :class:`RoutingDataset` from transition Parquet files and/or frames.

    Paths carry their own metadata (``routeplay.layout_version``,
    ``routeplay.n_actions``, ``routeplay.obs_names``); for frames pass ``n_actions``
    (and ``layout_version``, default the current
    :data:`~routeplay.replay.rl._observation.OBSERVATION_LAYOUT_VERSION`). Given
    explicitly, both are also checked against every file. Episodes are keyed by
    ``(input position, episode)``, so episode indices may repeat across inputs.

    Args:
        frames_or_paths: one or more Parquet paths or frames in the RL_CONTRACT schema.
        n_actions: action-space size (instances + WAIT); required for frames.
        layout_version: observation layout version of frames.

    Returns:
        The dataset (d3rlpy ``MDPDataset``, flat transition arrays, card).

    Raises:
        ValueError: missing/mistyped columns, layout version, observation width or
            action count differing between inputs, actions outside ``0..n_actions-1``,
            misplaced episode flags.
        FileNotFoundError: a path does not exist.

    Warns:
        UserWarning: episodes whose last row has neither flag (marked as timeouts), and
            rows whose ``next_obs`` differs from the next row's ``obs``.

    Example:
        >>> import numpy as np, polars as pl
        >>> obs = np.arange(8, dtype=np.float32).reshape(4, 2) / 8
        >>> frame = pl.DataFrame({"episode": [0, 0, 1, 1], "step": [0, 1, 0, 1],
        ...     "obs": obs, "action": [0, 2, 1, 0], "reward": [1.0, 0.0, 0.5, 0.5],
        ...     "next_obs": np.vstack([obs[1], np.zeros(2), obs[3], obs[3]]),
        ...     "terminal": [False, True, False, False],
        ...     "timeout": [False, False, False, True], "behaviour": ["rr"] * 4},
        ...     schema_overrides={"obs": pl.Array(pl.Float32, 2),
        ...                       "next_obs": pl.Array(pl.Float32, 2)})
        >>> ds = build_dataset(frame, n_actions=3)
        >>> ds.card.n_episodes, ds.card.n_transitions, ds.card.n_transitions_d3rlpy
        (2, 4, 3)
        >>> ds.card.action_counts
        (2, 1, 1)
    """
    from d3rlpy.constants import ActionSpace
    from d3rlpy.dataset import MDPDataset

    items: list[pl.DataFrame | str | Path]
    if isinstance(frames_or_paths, (pl.DataFrame, str, Path)):
        items = [frames_or_paths]
    else:
        items = list(frames_or_paths)
    if not items:
        raise ValueError("build_dataset got no inputs; expected at least one path or frame.")

    parts: list[pl.DataFrame] = []
    labels: list[str] = []
    first_meta: dict[str, str] | None = None
    obs_names: tuple[str, ...] | None = None
    versions: dict[str, str] = {}
    action_counts: dict[str, int] = {}
    for k, item in enumerate(items):
        if isinstance(item, pl.DataFrame):
            label = f"input {k} (frame)"
            frame = item
            if n_actions is None:
                raise ValueError(
                    f"{label}: n_actions is required when building from frames; expected "
                    "build_dataset(frames, n_actions=n_instances + 1)."
                )
            version = layout_version or OBSERVATION_LAYOUT_VERSION
            file_actions = n_actions
        else:
            label = f"input {k} ({str(item)!r})"
            frame, meta = _read_file(Path(item))
            for key in ("layout_version", "n_actions"):
                if key not in meta:
                    raise ValueError(
                        f"{label} has no Parquet metadata 'routeplay.{key}'; expected a file "
                        "written by routeplay.replay.log_transitions."
                    )
            version = meta["layout_version"]
            file_actions = int(meta["n_actions"])
            if first_meta is None:
                first_meta = meta
                if "obs_names" in meta:
                    obs_names = tuple(json.loads(meta["obs_names"]))
        _check_columns(frame, label)
        frame = _with_optional_columns(frame, label)
        versions[label] = version
        action_counts[label] = file_actions
        columns = [*_REQUIRED_COLUMNS, *_OPTIONAL_COLUMNS]
        parts.append(frame.select(columns).with_columns(pl.lit(k).alias("_src")))
        labels.append(label)

    if layout_version is not None:
        versions["layout_version argument"] = layout_version
    if len(set(versions.values())) > 1:
        raise ValueError(
            "transition inputs have different observation layout versions "
            f"{versions}; expected one version. Fix: regenerate the older logs with the "
            "current routeplay (OBSERVATION_LAYOUT_VERSION = "
            f"{OBSERVATION_LAYOUT_VERSION!r}) or build one dataset per version."
        )
    only_version = next(iter(versions.values()))
    readable = (OBSERVATION_LAYOUT_VERSION, SCHEDULER_LAYOUT_VERSION)
    if only_version not in readable:
        raise ValueError(
            f"transition inputs have observation layout version {only_version!r}; this "
            f"routeplay reads versions {list(readable)} only (routers', schedulers'; the "
            "observation entries of others mean other things). Fix: re-log them with "
            "this routeplay's log_transitions / `routeplay log`."
        )
    if n_actions is not None:
        action_counts["n_actions argument"] = n_actions
    if len(set(action_counts.values())) > 1:
        raise ValueError(
            f"transition inputs have different action counts {action_counts}; expected "
            "logs of clusters with the same number of instances."
        )
    widths: dict[str, int] = {}
    for lab, p in zip(labels, parts, strict=True):
        widths[lab] = _width(p.schema["obs"])
        widths[f"{lab} next_obs"] = _width(p.schema["next_obs"])
    if len(set(widths.values())) > 1:
        raise ValueError(
            f"transition inputs have different observation widths {widths}; expected one "
            "width (same cluster shape and bucket edges)."
        )
    version = next(iter(versions.values()))
    n_act = next(iter(action_counts.values()))
    if obs_names is not None and len(obs_names) != next(iter(widths.values())):
        raise ValueError(
            f"metadata obs_names has {len(obs_names)} names but observations have width "
            f"{next(iter(widths.values()))}; expected equal. The file is inconsistent."
        )

    frame = pl.concat(parts, how="vertical").sort(["_src", "episode", "step"])
    actions = frame["action"].to_numpy().astype(np.int64)
    bad = np.flatnonzero((actions < 0) | (actions >= n_act))
    if bad.size:
        r = int(bad[0])
        raise ValueError(
            f"action {int(actions[r])} in episode {int(frame['episode'][r])} step "
            f"{int(frame['step'][r])} is outside 0..{n_act - 1}; expected an action index "
            f"(0..{n_act - 2} = instances, {n_act - 1} = WAIT; RL_CONTRACT)."
        )
    # one episode id across inputs
    key = frame["_src"].to_numpy().astype(np.int64) * (1 << 40) + frame["episode"].to_numpy()
    keyed = frame.with_columns(pl.Series("episode", key))
    starts, terminal, timeout, n_marked = _episode_ends(keyed, "transition inputs")
    if n_marked:
        warnings.warn(
            f"{n_marked} episode(s) end without a terminal or timeout flag (log cut off?); "
            "their last row is treated as a timeout (d3rlpy would otherwise drop them).",
            stacklevel=2,
        )

    obs = np.ascontiguousarray(frame["obs"].to_numpy(), dtype=np.float32)
    next_obs = np.ascontiguousarray(frame["next_obs"].to_numpy(), dtype=np.float32)
    rewards = frame["reward"].to_numpy().astype(np.float32)
    is_last = np.zeros(frame.height, dtype=bool)
    is_last[np.concatenate([starts[1:] - 1, [frame.height - 1]])] = True
    inner = np.flatnonzero(~is_last)
    mismatch = int(np.any(next_obs[inner] != obs[inner + 1], axis=1).sum())
    if mismatch:
        warnings.warn(
            f"{mismatch} of {inner.size} within-episode rows have next_obs different from the "
            "next row's obs; d3rlpy's MDPDataset uses the next row's obs, the flat "
            "transition arrays (train_router) use next_obs.",
            stacklevel=2,
        )

    with quiet_d3rlpy():
        mdp = MDPDataset(
            observations=obs,
            actions=actions.reshape(-1, 1),
            rewards=rewards.reshape(-1, 1),
            terminals=terminal.astype(np.float32),
            timeouts=timeout.astype(np.float32),
            action_space=ActionSpace.DISCRETE,
            action_size=n_act,
        )
    behaviour = frame.group_by("behaviour").len().sort("behaviour").iter_rows()
    n_timeout = int(timeout.sum())
    card = DatasetCard(
        behaviour_rows=tuple((str(b), int(n)) for b, n in behaviour),
        n_episodes=int(starts.size),
        n_terminal_episodes=int(terminal.sum()),
        n_timeout_episodes=n_timeout,
        n_transitions=int(frame.height),
        n_transitions_d3rlpy=int(mdp.transition_count),
        action_counts=tuple(int(c) for c in np.bincount(actions, minlength=n_act)),
        reward_mean=float(rewards.astype(np.float64).mean()),
        reward_std=float(rewards.astype(np.float64).std()),
        reward_min=float(rewards.min()),
        reward_max=float(rewards.max()),
        layout_version=version,
        n_actions=n_act,
        obs_size=int(obs.shape[1]),
    )
    terminals = terminal.astype(np.float32)
    return RoutingDataset(
        mdp=mdp,
        observations=obs,
        actions=actions,
        rewards=rewards,
        next_observations=next_obs,
        terminals=terminals,
        episode_starts=starts,
        obs_names=obs_names,
        metadata=dict(first_meta or {}),
        card=card,
        dt_s=frame["dt_s"].to_numpy().astype(np.float64),
        behaviour_markov=frame["behaviour_markov"].to_numpy().astype(bool),
        train_episode=frame["train_episode"].to_numpy().astype(np.int64),
    )
