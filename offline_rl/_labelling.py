"""Lookahead labelling of episodes, in this process or on worker processes.

:func:`~routeplay.offline_rl.label_states` labels episodes one after another; each
episode's labels depend only on the episode's index (its trace and its generators
``SeedSequence([seed, round, k])``), never on the other episodes. This module holds the
one per-episode labelling loop (:func:`label_episode`) and the driver that collects
episodes in order until enough decisions are labelled (:func:`collect_labels`): in this
process (``n_workers = 1``) or on ``n_workers`` worker processes (``spawn`` start
method, as the sweep's process backend), which label the next episodes while earlier
ones finish. Episodes are assembled in episode order and the last one is cut at the
label count, so both ways give the same labels, bit for bit (tested).

Why processes: the teacher (``lookahead-oracle``) forks the simulator and rolls every
action out at each labelled decision (~10-150 ms each); it is pure Python, so threads
would not run it in parallel.

Work done ahead: a worker starts the next episode only while the labels still needed
exceed what the episodes already running are expected to give (their requests times the
labels per request of the episodes finished so far in the run, at least one decision
per request). When the labels are complete, episodes still running stop at their next
decision and are dropped. Only speed depends on the estimate, never the labels.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing
import pickle
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from routeplay.estimator._protocols import OutputLengthPredictor
from routeplay.replay._types import ClusterConfig, RequestView, Router
from routeplay.replay.engine._engine import Engine
from routeplay.replay.engine._result import ReplayConfig
from routeplay.replay.rl._observation import ObservationEncoder, ObservationLayout
from routeplay.replay.rl._transitions import action_to_index
from routeplay.replay.routers._reference import LookaheadOracleRouter

__all__ = [
    "EpisodeLabels",
    "LabelTask",
    "check_n_workers",
    "collect_labels",
    "episode_rngs",
    "label_episode",
    "plain_view",
]

_F32 = npt.NDArray[np.float32]
_F64 = npt.NDArray[np.float64]


def plain_view(view: RequestView) -> RequestView:
    """The request as a deployable router sees it: a plain ``RequestView`` (no true length).

    Example:
        >>> from routeplay.replay import OracleRequestView
        >>> v = plain_view(OracleRequestView(3, 1.0, 100, predicted_output_tokens=9.0,
        ...                                  output_tokens=250))
        >>> type(v).__name__, v.predicted_output_tokens, hasattr(v, "output_tokens")
        ('RequestView', 9.0, False)
    """
    if type(view) is RequestView:
        return view
    return RequestView(**{f.name: getattr(view, f.name) for f in dataclasses.fields(RequestView)})


def episode_rngs(
    seed: int, round_: int, episode: int
) -> tuple[np.random.Generator, np.random.Generator]:
    """The behaviour's and the teacher's generators of episode ``episode`` of a round."""
    behaviour_ss, teacher_ss = np.random.SeedSequence([seed, round_, episode]).spawn(2)
    return np.random.default_rng(behaviour_ss), np.random.default_rng(teacher_ss)


@dataclass(frozen=True, slots=True, kw_only=True)
class LabelTask:
    """Everything one round's labelling needs (sent once to each worker process)."""

    episodes: Sequence[pl.DataFrame]
    cluster: ClusterConfig
    behaviour: Router
    teacher: LookaheadOracleRouter
    layout: ObservationLayout
    predictor: OutputLengthPredictor | None
    config: ReplayConfig
    label_every: int
    seed: int
    round_index: int


@dataclass(frozen=True, slots=True)
class EpisodeLabels:
    """The labelled decisions of one episode, in decision order (lists, one per column)."""

    episode: int
    observations: list[_F32]
    actions: list[int]
    behaviour_actions: list[int]
    costs_s: list[_F64]
    request_id: list[int]
    time_s: list[float]
    teacher_wall_s: float

    @property
    def n_labels(self) -> int:
        """Number of labelled decisions."""
        return len(self.actions)

    def head(self, n: int) -> EpisodeLabels:
        """The first ``n`` labels (the same labels an episode cut at ``n`` gives)."""
        if n >= self.n_labels:
            return self
        return EpisodeLabels(
            self.episode,
            self.observations[:n],
            self.actions[:n],
            self.behaviour_actions[:n],
            self.costs_s[:n],
            self.request_id[:n],
            self.time_s[:n],
            self.teacher_wall_s,
        )


def label_episode(
    task: LabelTask,
    k: int,
    cap: int,
    encoder: ObservationEncoder | None = None,
    on_label: Callable[[], None] | None = None,
    stop: Callable[[], bool] | None = None,
) -> EpisodeLabels:
    """Drive episode ``k`` with the behaviour and label up to ``cap`` of its decisions.

    At every ``label_every``-th decision the teacher forks the engine and rolls every
    action out (its action is the label, its rollout costs are kept); the behaviour's
    action is applied. Labelling stops after ``cap`` labels or at the episode's end;
    the labels of a cut episode are the first ones of the whole episode (each depends
    only on the decisions before it). ``stop()`` True (checked at every decision) ends it
    early: the caller no longer needs its labels.
    """
    cluster = task.cluster
    m = cluster.n_instances
    n_actions = m + 1
    behaviour, teacher = task.behaviour, task.teacher
    if encoder is None:
        encoder = ObservationEncoder(task.layout, cluster)
    engine = Engine(
        task.episodes[k],
        cluster,
        config=task.config,
        predictor=task.predictor,
        oracle=True,  # the teacher's view; the student gets plain_view(...)
        router_name=f"label-{getattr(behaviour, 'name', 'behaviour')}",
    )
    b_rng, t_rng = episode_rngs(task.seed, task.round_index, k)
    behaviour.reset(cluster, b_rng)
    teacher.reset(cluster, t_rng)
    engine.bind_router(teacher)
    out = EpisodeLabels(k, [], [], [], [], [], [], 0.0)
    teacher_wall_s = 0.0
    n_seen = 0
    while out.n_labels < cap and not (stop is not None and stop()):
        decision = engine.next_decision()
        if decision is None:
            break
        request, state = decision
        view = plain_view(request)
        if n_seen % task.label_every == 0:
            t0 = time.perf_counter()
            best = teacher.route(request, state)
            teacher_wall_s += time.perf_counter() - t0
            row = np.full(n_actions, np.nan)
            for a, c in zip(teacher.last_actions, teacher.last_costs_s, strict=True):
                row[action_to_index(a, m)] = c
            out.observations.append(encoder(view, state))
            out.actions.append(action_to_index(best, m))
            out.costs_s.append(row)
            out.request_id.append(view.request_id)
            out.time_s.append(engine.now_s)
            act = behaviour.route(view, state)
            out.behaviour_actions.append(action_to_index(act, m))
            if on_label is not None:
                on_label()
        else:
            act = behaviour.route(view, state)
        engine.apply(act)
        n_seen += 1
    return dataclasses.replace(out, teacher_wall_s=teacher_wall_s)


# ------------------------------------------------------------------------ worker processes

_WORKER_TASK: LabelTask | None = None
_WORKER_ENCODER: ObservationEncoder | None = None
_WORKER_STOP: Any = None  # the parent's multiprocessing Event: labels complete


def _init_worker(payload: bytes, torch_threads: int | None, stop: Any) -> None:
    global _WORKER_TASK, _WORKER_ENCODER, _WORKER_STOP
    _WORKER_STOP = stop
    if torch_threads is not None:  # the parent's intra-op threads (a policy's numbers)
        import torch

        torch.set_num_threads(torch_threads)
    # the parent's own pickle of its LabelTask (never a file from a user)
    task = pickle.loads(payload)  # noqa: S301
    _WORKER_TASK = task
    _WORKER_ENCODER = ObservationEncoder(task.layout, task.cluster)


def _worker_label(k: int, cap: int) -> EpisodeLabels:
    assert _WORKER_TASK is not None, "worker used before its initializer ran"
    return label_episode(_WORKER_TASK, k, cap, _WORKER_ENCODER, stop=_WORKER_STOP.is_set)


def _payload(task: LabelTask, n_workers: int) -> bytes:
    try:
        return pickle.dumps(task, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - any pickling failure has the same fix
        name = getattr(task.behaviour, "name", type(task.behaviour).__name__)
        raise ValueError(
            f"label_states n_workers = {n_workers} sends the behaviour router {name!r}, the "
            f"teacher and the predictor to worker processes, but they cannot be pickled "
            f"({type(exc).__name__}: {exc}); expected picklable routers (heuristics and "
            "PolicyRouter of a d3rlpy learnable are). Fix: pass n_workers=1."
        ) from None


class _Expected:
    """How many labels an episode is expected to give (it decides work done ahead only).

    Each request is decided at least once; the estimate is the episode's requests times
    the labels per request seen in the episodes finished whole so far (at least
    ``1 / label_every``), capped at what the episode may label.
    """

    def __init__(self, task: LabelTask) -> None:
        self.task = task
        self.labels = 0
        self.requests = 0

    def __call__(self, k: int, cap: int) -> int:
        n = self.task.episodes[k].height
        per_request = 1.0 / self.task.label_every
        if self.requests:
            per_request = max(per_request, self.labels / self.requests)
        return min(cap, math.ceil(n * per_request))

    def saw(self, labels: EpisodeLabels, cap: int) -> None:
        if labels.n_labels < cap:  # the whole episode (not cut at its cap)
            self.labels += labels.n_labels
            self.requests += self.task.episodes[labels.episode].height


def collect_labels(
    task: LabelTask,
    n_labels: int,
    start_episode: int,
    *,
    n_workers: int = 1,
    on_labels: Callable[[int], None] | None = None,
) -> tuple[list[EpisodeLabels], int]:
    """Label episodes from ``start_episode`` on (cycling) until ``n_labels`` labels.

    Returns the labelled episodes in order (the last one cut at the label count) and the
    index of the next unused episode. ``on_labels(n)`` is called as ``n`` labels are
    added (per decision in this process, per episode with workers).

    Raises:
        ValueError: when no episode has a routing decision, or when ``n_workers > 1``
            and the task cannot be sent to worker processes.
        RuntimeError: when a worker process died.
    """
    n_episodes = len(task.episodes)
    k = start_episode % n_episodes
    done: list[EpisodeLabels] = []
    total = 0
    n_empty = 0

    def take(labels: EpisodeLabels) -> None:
        nonlocal total, n_empty
        labels = labels.head(n_labels - total)
        done.append(labels)
        total += labels.n_labels
        n_empty = n_empty + 1 if labels.n_labels == 0 else 0
        if n_empty > n_episodes:  # pragma: no cover - every trace has a decision
            raise ValueError("the episodes have no routing decisions to label.")

    if n_workers == 1:
        encoder = ObservationEncoder(task.layout, task.cluster)
        tick = (lambda: on_labels(1)) if on_labels is not None else None
        while total < n_labels:
            take(label_episode(task, k, n_labels - total, encoder, tick))
            k = (k + 1) % n_episodes
        return done, k

    payload = _payload(task, n_workers)
    torch = sys.modules.get("torch")  # a policy router's forward passes use it
    torch_threads = int(torch.get_num_threads()) if torch is not None else None
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    estimate = _Expected(task)
    running: deque[tuple[Future[EpisodeLabels], int, int]] = deque()  # (future, cap, expected)
    expected = 0  # labels the running episodes are expected to give
    with ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(payload, torch_threads, stop),
    ) as pool:
        try:
            while total < n_labels:
                while len(running) < n_workers and (not running or total + expected < n_labels):
                    cap = n_labels - total
                    guess = estimate(k, cap)
                    running.append((pool.submit(_worker_label, k, cap), cap, guess))
                    expected += guess
                    k = (k + 1) % n_episodes
                future, cap, guess = running.popleft()
                try:
                    labels = future.result()
                except BrokenProcessPool:
                    raise RuntimeError(
                        f"a labelling worker process (of n_workers = {n_workers}) died before "
                        "it finished its episode; no labels were returned. Fix: run the "
                        "calling script's top-level code under `if __name__ == '__main__':` "
                        "(worker processes start with `spawn` and import it), check memory, "
                        "or pass n_workers=1 to label in this process."
                    ) from None
                expected -= guess
                estimate.saw(labels, cap)
                before = total
                take(labels)
                if on_labels is not None:
                    on_labels(total - before)
        finally:
            stop.set()  # episodes still running end at their next decision
            for future, _, _ in running:
                future.cancel()
    # episodes started ahead and not needed are dropped: the next unused one follows
    # the last one taken
    return done, (done[-1].episode + 1) % n_episodes


def check_n_workers(n_workers: Any, where: str = "label_states n_workers =") -> int:
    """``n_workers`` as an int >= 1, or a ValueError that names ``where`` and the value.

    Example:
        >>> check_n_workers(2)
        2
        >>> check_n_workers(0, "--label-workers")
        Traceback (most recent call last):
        ...
        ValueError: --label-workers 0; expected an int >= 1 (1: label in this process; ...
    """
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(
            f"{where} {n_workers!r}; expected an int >= 1 (1: label in this process; more: "
            "that many worker processes)."
        )
    return n_workers
