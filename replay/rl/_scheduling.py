"""Learned schedulers: which queued request to release, as a discrete decision (issue 12).

A router decides once per request; a *scheduler* (``routeplay.replay.Scheduler``) is
offered the whole router queue and picks which waiting request goes next. In the
paper's overload regime (4 x ``v100-paper`` at 20 req/s) that order is where the gain
is: every balancing router is within +-0.5 % of round robin there, while late binding
with shortest-predicted-job-first (``late-binding-spf``) is +14 % (docs/notes/headroom.md).
This module makes the order learnable with the same offline pipeline as the routers.

The decision
    At each decision point the :class:`SchedulerEncoder` finds the *free* instances
    (:func:`~routeplay.replay.routers.free_instances`: empty local queue and a sequence
    slot left). With none free, every request is held: holding is a fixed rule, not
    learned. Otherwise it builds a *shortlist* of ``n_candidates`` queued requests: the
    ``n_candidates - 1`` with the smallest predicted job size (``late-binding-spf``'s
    ``size_s``: isolated service time with the predicted output length; ties: the
    oldest) plus the oldest request, in order of size (ties: age). A queue shorter than
    the shortlist fills the remaining slots by repeating its entries cyclically, so
    every action index names a real request and no masking is needed. The policy's
    action is a slot; the request in it is released to the free instance where min-min
    estimates it would finish earliest (``late-binding-spf``'s placement). Slot 0 is
    therefore exactly ``late-binding-spf``'s choice; the policy learns when another
    request (a slightly longer but much older one, say) should go first.

The observation (:class:`SchedulerLayout`, version :data:`SCHEDULER_LAYOUT_VERSION`)
    Per slot: log prompt tokens, log predicted output tokens, log job size, log of the
    size over the smallest size in the queue, log waiting time, log estimated time to
    finish on the best free instance, is-the-oldest, is-a-repeat. Per instance:
    running / sequence limit, queued / sequence limit, KV use, free. Then the router
    queue length (log) and the share of free instances. Logs are ``log1p(x) / log1p(cap)``
    clipped to 1. Never a true output length.

The reward (:func:`queue_time_rewards`)
    Minus the integral of the number of requests in the system (arrived, not finished)
    from one decision to the next, in request-seconds. Summed over an episode it is
    minus the total end-to-end latency of the requests served after the first
    decision (Little's law), so maximising the return minimises mean latency.

Logging (:func:`log_scheduler_transitions`) runs a behaviour scheduler (default
``late-binding-spf``) with epsilon-uniform exploration over the distinct shortlist
slots, through :func:`~routeplay.replay.run_replay`, and returns transitions in the
router logs' schema (``episode, step, obs, action, reward, next_obs, terminal,
timeout, behaviour, dt_s``), ready for ``routeplay.offline_rl.build_dataset``.
"""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from routeplay._checks import check_int, check_number

from .._types import WAIT, ClusterConfig, ClusterState, RequestView, episode_seed
from ..engine._engine import is_scheduler, run_replay
from ..engine._result import ReplayConfig
from ..routers._schedulers import HOLD, LateBindingSPFScheduler

__all__ = [
    "SCHEDULER_LAYOUT_VERSION",
    "SchedulerEncoder",
    "SchedulerLayout",
    "log_scheduler_transitions",
    "queue_time_rewards",
    "scheduler_parquet_metadata",
    "shortlist",
    "write_scheduler_transitions",
]

#: Version of the scheduler observation; saved policies record it and refuse another.
SCHEDULER_LAYOUT_VERSION = "s1"

#: Per-slot features, in order.
CANDIDATE_FEATURES: tuple[str, ...] = (
    "prompt",
    "predicted_output",
    "size",
    "size_ratio",
    "wait",
    "eta",
    "oldest",
    "repeat",
)
#: Per-instance features, in order.
INSTANCE_FEATURES: tuple[str, ...] = ("running", "queued", "kv", "free")
#: Cluster-wide features, in order.
GLOBAL_FEATURES: tuple[str, ...] = ("queue_len", "free_share")


@dataclass(frozen=True, slots=True)
class SchedulerLayout:
    """Shape and scales of the scheduler observation (module docstring).

    Attributes:
        n_instances: instances of the cluster (> 0).
        n_candidates: shortlist slots, the action count (>= 2).
        tokens_cap: prompt / output tokens mapped to 1.
        time_cap_s: sizes, waits and times to finish mapped to 1 (seconds).
        ratio_cap: size over the smallest size mapped to 1.
        queue_cap: router queue length mapped to 1.

    Example:
        >>> layout = SchedulerLayout(n_instances=4, n_candidates=8)
        >>> layout.size, layout.n_actions, layout.names()[:2]
        (82, 8, ['c0_prompt', 'c0_predicted_output'])
    """

    n_instances: int
    n_candidates: int = 8
    tokens_cap: float = 32_768.0
    time_cap_s: float = 3_600.0
    ratio_cap: float = 1_000.0
    queue_cap: float = 10_000.0

    def __post_init__(self) -> None:
        for name, low in (("n_instances", 1), ("n_candidates", 2)):
            check_int("SchedulerLayout", name, getattr(self, name), minimum=low)
        for name in ("tokens_cap", "time_cap_s", "ratio_cap", "queue_cap"):
            check_number("SchedulerLayout", name, getattr(self, name), minimum=0, strict=True)

    @property
    def size(self) -> int:
        """Observation width."""
        return (
            self.n_candidates * len(CANDIDATE_FEATURES)
            + self.n_instances * len(INSTANCE_FEATURES)
            + len(GLOBAL_FEATURES)
        )

    @property
    def n_actions(self) -> int:
        """Action count: one per shortlist slot."""
        return self.n_candidates

    def names(self) -> list[str]:
        """Names of the observation entries, in order."""
        out = [f"c{k}_{f}" for k in range(self.n_candidates) for f in CANDIDATE_FEATURES]
        out += [f"i{k}_{f}" for k in range(self.n_instances) for f in INSTANCE_FEATURES]
        return out + list(GLOBAL_FEATURES)


def shortlist(sizes_s: Sequence[float], n_candidates: int) -> list[int]:
    """Queue positions of the shortlist: the smallest sizes plus the oldest (position 0).

    ``sizes_s`` are the queued requests' predicted sizes in queue (arrival) order. The
    ``n_candidates - 1`` smallest (ties: the lower position) and position 0 are
    returned in order of (size, position); a queue with fewer distinct entries than
    slots repeats them cyclically.

    Example:
        >>> shortlist([5.0, 1.0, 3.0, 2.0, 4.0], 3)   # two smallest + the oldest
        [1, 3, 0]
        >>> shortlist([2.0, 1.0], 4)                  # repeated to fill 4 slots
        [1, 0, 1, 0]
    """
    n = len(sizes_s)
    if n == 0:
        raise ValueError("shortlist of an empty queue; expected at least one request.")
    keys = heapq.nsmallest(n_candidates - 1, ((s, k) for k, s in enumerate(sizes_s)))
    if all(k != 0 for _, k in keys):
        keys.append((sizes_s[0], 0))
        keys.sort()
    picked = [k for _, k in keys]
    distinct = len(picked)
    return [picked[j % distinct] for j in range(n_candidates)]


def _lg(x: float, cap: float) -> float:
    return min(math.log1p(max(x, 0.0)) / math.log1p(cap), 1.0)


class SchedulerEncoder:
    """Build the shortlist and the observation of one scheduling decision.

    ``reset(cluster)`` reads the cluster's latency models (job sizes and completion
    estimates are ``late-binding-spf``'s). :meth:`encode` returns the observation and
    the queue position of each slot; :meth:`place` is the placement rule.

    Example:
        >>> import numpy as np
        >>> from routeplay.replay import RequestView, make_cluster_state, make_uniform_cluster
        >>> enc = SchedulerEncoder(SchedulerLayout(n_instances=2, n_candidates=2))
        >>> enc.reset(make_uniform_cluster(2))
        >>> queue = (RequestView(0, 0.0, 900, predicted_output_tokens=50.0),
        ...          RequestView(1, 0.5, 10, predicted_output_tokens=5.0))
        >>> state = make_cluster_state(n_running=[0, 0], now_s=1.0)
        >>> obs, slots = enc.encode(queue, state, enc.free(state))
        >>> obs.shape, slots          # the shorter request first, then the oldest
        ((26,), [1, 0])
    """

    def __init__(self, layout: SchedulerLayout) -> None:
        self.layout = layout
        self._spf = LateBindingSPFScheduler()
        self._sizes: dict[int, float] = {}
        self._ready = False

    def reset(self, cluster: ClusterConfig) -> None:
        """Read ``cluster`` (its instance count must be the layout's)."""
        if cluster.n_instances != self.layout.n_instances:
            raise ValueError(
                f"the scheduler layout has {self.layout.n_instances} instances but the "
                f"cluster has {cluster.n_instances}; expected the same count. Fix: use a "
                "policy trained on logs of a cluster of this shape."
            )
        self._spf.reset(cluster, np.random.default_rng(0))  # the rng is unused
        self._sizes = {}
        self._ready = True

    def free(self, state: ClusterState) -> list[bool]:
        """Which instances are free (empty local queue and a sequence slot left)."""
        return self._spf.free_list(state)

    def size_s(self, request: RequestView) -> float:
        """``late-binding-spf``'s predicted job size of ``request`` (seconds)."""
        return self._spf.size_s(request)

    def place(self, request: RequestView, state: ClusterState, free: list[bool]) -> int:
        """The free instance where ``request`` is estimated to finish earliest."""
        return self._spf.place(request, state, free)

    def encode(
        self, queue: Sequence[RequestView], state: ClusterState, free: list[bool]
    ) -> tuple[npt.NDArray[np.float32], list[int]]:
        """``(observation, queue position of each slot)`` of one decision.

        Raises:
            RuntimeError: before :meth:`reset`.
            ValueError: an empty queue, or no free instance (then the rule is to hold).
        """
        if not self._ready:
            raise RuntimeError(
                "SchedulerEncoder.encode() before reset(cluster); expected reset first."
            )
        if not queue or not any(free):
            raise ValueError(
                f"encode needs a queued request and a free instance; got {len(queue)} "
                f"queued and free = {free}. Fix: hold (the rule) when none is free."
            )
        lay = self.layout
        cache = self._sizes  # a size depends on the request only: computed once per replay
        sizes = []
        for view in queue:
            size = cache.get(view.request_id)
            if size is None:
                size = cache[view.request_id] = self._spf.size_s(view)
            sizes.append(size)
        slots = shortlist(sizes, lay.n_candidates)
        smallest = min(sizes[k] for k in slots)
        now = state.now_s
        tc, sc, rc = lay.tokens_cap, lay.time_cap_s, lay.ratio_cap
        out: list[float] = []
        seen: set[int] = set()
        for pos in slots:
            view = queue[pos]
            est = self._spf.completion_s(view, state)
            eta = min(e for e, f in zip(est, free, strict=True) if f) - now
            out += [
                _lg(float(view.prompt_tokens), tc),
                _lg(self._spf.output_tokens(view), tc),
                _lg(sizes[pos], sc),
                _lg(sizes[pos] / smallest - 1.0 if smallest > 0 else 0.0, rc),
                _lg(now - view.arrival_s, sc),
                _lg(eta, sc),
                1.0 if pos == 0 else 0.0,
                1.0 if pos in seen else 0.0,
            ]
            seen.add(pos)
        cols = state.columns()
        for n_run, n_q, kv, cap, seqs, f in zip(
            cols.n_running,
            cols.n_queued,
            cols.kv_used_tokens,
            cols.kv_capacity_tokens,
            cols.max_running_seqs,
            free,
            strict=True,
        ):
            out += [
                min(n_run / seqs, 1.0),
                min(n_q / seqs, 1.0),
                min(kv / cap, 1.0) if cap > 0 else 1.0,
                1.0 if f else 0.0,
            ]
        out += [_lg(float(len(queue)), lay.queue_cap), sum(free) / len(free)]
        return np.asarray(out, dtype=np.float32), slots


def queue_time_rewards(
    decision_s: npt.ArrayLike, arrival_s: npt.ArrayLike, finish_s: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Minus the request-seconds spent in the system between consecutive decisions.

    Reward ``k`` is ``-integral of N(t) dt`` over ``[decision_s[k], decision_s[k+1])``,
    the last one up to the last finish, where ``N(t)`` counts requests arrived and not
    finished. Their sum is minus the total time requests spent in the system after the
    first decision (Little's law), i.e. minus the total end-to-end latency when the
    first decision is at the first arrival.

    Args:
        decision_s: non-decreasing decision times.
        arrival_s: every request's arrival (finite).
        finish_s: every request's finish (finite).

    Example:
        >>> queue_time_rewards([0.0, 1.0], [0.0, 0.5], [2.0, 3.0]).tolist()
        [-1.5, -3.0]
    """
    t = np.asarray(decision_s, dtype=np.float64)
    arr = np.sort(np.asarray(arrival_s, dtype=np.float64))
    fin = np.sort(np.asarray(finish_s, dtype=np.float64))
    if t.size == 0:
        return np.zeros(0, dtype=np.float64)
    if not (np.isfinite(arr).all() and np.isfinite(fin).all()):
        raise ValueError("queue_time_rewards needs finite arrival and finish times.")
    if np.any(np.diff(t) < 0):
        raise ValueError("decision_s must be non-decreasing.")
    end = max(float(fin[-1]) if fin.size else float(t[-1]), float(t[-1]))
    edges = np.append(t, end)

    def area(sorted_times: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        # integral from 0 to x of #{times <= t} dt = sum over times <= x of (x - time)
        n = np.searchsorted(sorted_times, edges, side="right")
        prefix = np.concatenate([[0.0], np.cumsum(sorted_times)])
        return np.asarray(n * edges - prefix[n], dtype=np.float64)

    in_system = area(arr) - area(fin)
    return np.asarray(-np.diff(in_system), dtype=np.float64)


class _LoggingScheduler:
    """Drive a behaviour scheduler through the shortlist rule and record its decisions."""

    oracle = False

    def __init__(
        self,
        behaviour: Any,
        layout: SchedulerLayout,
        epsilon: float,
        explore: np.random.Generator,
    ) -> None:
        self.name = getattr(behaviour, "name", "behaviour")
        self.behaviour = behaviour
        self.encoder = SchedulerEncoder(layout)
        self.epsilon = float(epsilon)
        self.explore = explore
        self.times: list[float] = []
        self.obs: list[npt.NDArray[np.float32]] = []
        self.actions: list[int] = []

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        self.encoder.reset(cluster)
        self.behaviour.reset(cluster, rng)

    def schedule(self, queue: tuple[RequestView, ...], state: ClusterState) -> tuple[int, int]:
        enc = self.encoder
        free = enc.free(state)
        if not any(free):
            return HOLD
        obs, slots = enc.encode(queue, state, free)
        if self.epsilon > 0 and self.explore.random() < self.epsilon:
            slot = int(self.explore.integers(len(set(slots))))
        else:
            pos, instance = self.behaviour.schedule(queue, state)
            if instance == WAIT:
                raise ValueError(
                    f"behaviour {self.name!r} held every request while instance(s) "
                    f"{[k for k, f in enumerate(free) if f]} were free; expected a "
                    "scheduler that releases whenever an instance is free (e.g. "
                    "late-binding-spf)."
                )
            if pos not in slots:
                raise ValueError(
                    f"behaviour {self.name!r} released queue position {pos}, which is "
                    f"not on the shortlist {slots}; expected a behaviour whose choices "
                    "are shortlisted (the smallest predicted sizes and the oldest request)."
                )
            slot = slots.index(pos)
        self.times.append(state.now_s)
        self.obs.append(obs)
        self.actions.append(slot)
        pos = slots[slot]
        return pos, enc.place(queue[pos], state, free)


def _episode_frame(
    rec: _LoggingScheduler, requests: pl.DataFrame, episode: int, behaviour: str
) -> pl.DataFrame:
    n = len(rec.actions)
    width = rec.encoder.layout.size
    finish = requests["finish_s"].to_numpy().astype(np.float64)
    timeout = bool(np.isnan(finish).any())
    arrival = requests["arrival_s"].to_numpy().astype(np.float64)
    done = ~np.isnan(finish)
    if timeout:  # unfinished requests count until the last finish
        finish = np.where(done, finish, np.nanmax(finish) if done.any() else rec.times[-1])
    rewards = queue_time_rewards(rec.times, arrival, finish)
    obs = np.vstack(rec.obs) if n else np.zeros((0, width), np.float32)
    next_obs = np.vstack([obs[1:], np.zeros((1, width), np.float32)]) if n else obs
    times = np.asarray(rec.times, dtype=np.float64)
    end = float(finish.max()) if finish.size else 0.0
    dt = np.diff(np.append(times, max(end, times[-1] if n else 0.0)))
    return pl.DataFrame(
        {
            "episode": np.full(n, episode, dtype=np.int64),
            "step": np.arange(n, dtype=np.int64),
            "obs": obs,
            "action": np.asarray(rec.actions, dtype=np.int64),
            "reward": rewards,
            "next_obs": next_obs,
            "terminal": np.arange(n) == n - 1 if not timeout else np.zeros(n, dtype=bool),
            "timeout": np.arange(n) == n - 1 if timeout else np.zeros(n, dtype=bool),
            "behaviour": [behaviour] * n,
            "dt_s": dt,
        },
        schema_overrides={
            "obs": pl.Array(pl.Float32, width),
            "next_obs": pl.Array(pl.Float32, width),
        },
    )


def scheduler_parquet_metadata(layout: SchedulerLayout) -> dict[str, str]:
    """The Parquet footer of a scheduler transition file (``routeplay.*`` keys).

    ``routeplay.offline_rl.build_dataset`` reads ``layout_version`` and ``n_actions``
    from it, like the router logs' (``TransitionMetadata``).

    Example:
        >>> meta = scheduler_parquet_metadata(SchedulerLayout(n_instances=2))
        >>> meta["routeplay.layout_version"], meta["routeplay.n_actions"]
        ('s1', '8')
    """
    return {
        "routeplay.kind": "scheduler",
        "routeplay.layout_version": SCHEDULER_LAYOUT_VERSION,
        "routeplay.layout": json.dumps(dataclasses.asdict(layout), sort_keys=True),
        "routeplay.obs_names": json.dumps(layout.names()),
        "routeplay.n_instances": str(layout.n_instances),
        "routeplay.n_actions": str(layout.n_actions),
        "routeplay.reward": "queue-time",
    }


def write_scheduler_transitions(
    frame: pl.DataFrame, path: str | Path, layout: SchedulerLayout
) -> Path:
    """Write scheduler transitions with their metadata (temporary file, then rename).

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from routeplay.datasets import TaskMixConfig, generate_task_mix
        >>> from routeplay.replay import make_cluster
        >>> trace = generate_task_mix(TaskMixConfig(n_requests=30, seed=0))
        >>> frame = log_scheduler_transitions([trace], make_cluster("v100x2"),
        ...                                   "late-binding-spf")
        >>> out = write_scheduler_transitions(frame, Path(tempfile.mkdtemp()) / "l.parquet",
        ...                                   SchedulerLayout(n_instances=2))
        >>> pl.read_parquet(out).height == frame.height
        True
    """
    out = Path(path)
    width = frame.schema["obs"]
    if not isinstance(width, pl.Array) or int(width.shape[0]) != layout.size:
        raise ValueError(
            f"frame observations are {width}; expected Array(Float32, {layout.size}) for "
            f"{layout}. Fix: write the frame log_scheduler_transitions gave with its layout."
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        frame.write_parquet(tmp, metadata=scheduler_parquet_metadata(layout))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def log_scheduler_transitions(
    traces: Sequence[pl.DataFrame],
    cluster: ClusterConfig,
    behaviour: str,
    *,
    layout: SchedulerLayout | None = None,
    epsilon: float = 0.1,
    seed: int = 0,
    predictor: Any = None,
    config: ReplayConfig | None = None,
    episode_offset: int = 0,
) -> pl.DataFrame:
    """Replay ``traces`` with a behaviour scheduler and return its decisions as transitions.

    Episode ``k`` (global index ``episode_offset + k``) replays with seed
    ``episode_seed(config.seed, index)`` (as every evaluation does) and explores with
    its own generator spawned from ``seed``; with probability ``epsilon`` the released
    request is a uniformly random distinct shortlist slot instead of the behaviour's.

    Args:
        traces: episodes (trace frames).
        cluster: the cluster.
        behaviour: a registered scheduler name (e.g. ``late-binding-spf``).
        layout: the observation layout (default: 8 slots for this cluster).
        epsilon: exploration probability in [0, 1].
        seed: exploration seed (>= 0).
        predictor: the output-length predictor of the replays.
        config: replay settings (default ``ReplayConfig()``).
        episode_offset: global index of the first trace.

    Returns:
        One frame in the transition schema (``routeplay.offline_rl.build_dataset``
        takes it with ``n_actions=layout.n_actions``).

    Example:
        >>> from routeplay.datasets import TaskMixConfig, generate_task_mix
        >>> from routeplay.replay import make_cluster
        >>> trace = generate_task_mix(TaskMixConfig(n_requests=60, rate_per_s=20.0, seed=0))
        >>> frame = log_scheduler_transitions([trace], make_cluster("v100x2"),
        ...                                   "late-binding-spf", epsilon=0.0)
        >>> frame.height > 0, frame["action"].unique().to_list()   # always slot 0: SPF
        (True, [0])
    """
    from ..routers._registry import make_router

    if not (isinstance(epsilon, int | float) and 0.0 <= float(epsilon) <= 1.0):
        raise ValueError(f"epsilon = {epsilon!r}; expected a probability in [0, 1].")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed = {seed!r}; expected an int >= 0.")
    if is_scheduler(make_router(behaviour)) is False:
        raise ValueError(
            f"behaviour {behaviour!r} is a router, not a scheduler; expected a registered "
            "scheduler such as 'late-binding-spf' (`routeplay routers` lists them)."
        )
    lay = layout if layout is not None else SchedulerLayout(n_instances=cluster.n_instances)
    base = config if config is not None else ReplayConfig()
    name = behaviour if epsilon == 0 else f"{behaviour}+eps{float(epsilon):g}"
    frames: list[pl.DataFrame] = []
    for k, trace in enumerate(traces):
        index = episode_offset + k
        explore = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index,)))
        rec = _LoggingScheduler(make_router(behaviour), lay, float(epsilon), explore)
        cfg = dataclasses.replace(base, seed=episode_seed(base.seed, index))
        result = run_replay(trace, cluster, rec, config=cfg, predictor=predictor)
        if rec.actions:
            frames.append(_episode_frame(rec, result.requests, index, name))
    if not frames:
        raise ValueError(
            "no scheduling decision was logged (every trace empty?); expected requests."
        )
    return pl.concat(frames)
