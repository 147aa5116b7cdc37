"""Lookahead labelling of episodes, in this process or on worker processes.

:func:`~routeplay.offline_rl.label_states` labels episodes one after another; each
episode's labels depend only on the episode's index (its trace and its generators
``SeedSequence([seed, round, k])``), never on the other episodes. This module holds the
one per-episode labelling loop (:func:`label_episode`) and the driver that collects
episodes in order until enough decisions are labelled (:func:`collect_labels`), in this
process (``n_workers = 1``) or on ``n_workers`` worker processes (``spawn`` start
method, as the sweep's process backend).

With workers, every worker drives the same episode with the behaviour (cheap next to the
teacher's rollouts) and the teacher labels an interleaved share of its labelled
decisions: worker ``w`` of ``n`` labels the ``j``-th one when ``j mod n = w`` and only
advances the teacher's generator past the others
(:meth:`~routeplay.replay.routers._reference.LookaheadOracleRouter.skip_decision`), so
each label gets the seed it gets in one process. The trajectory does not depend on the
teacher (its rollouts run on forks), so the shares are labels of the same decisions;
they are merged back in decision order, episode after episode, the last episode cut at
the label count. The labels are the same for any number of workers, bit for bit
(tested), and the work splits evenly however few episodes a round has.

Why processes: the teacher (``lookahead-oracle``) forks the simulator and rolls every
action out at each labelled decision (~10-150 ms each); it is pure Python, so threads
would not run it in parallel.
"""

from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import pickle
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
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

    @classmethod
    def interleave(cls, shares: Sequence[EpisodeLabels]) -> EpisodeLabels:
        """One episode's labels from its shares, in decision order.

        Share ``w`` of ``n`` holds the ``j``-th label for ``j mod n = w``.

        Example:
            >>> a = EpisodeLabels(2, [0.0, 0.2], [0, 2], [0, 0], [0, 0], [10, 12], [0.0, 0.2], 1.0)
            >>> b = EpisodeLabels(2, [0.1], [1], [0], [0], [11], [0.1], 0.5)
            >>> both = EpisodeLabels.interleave([a, b])
            >>> both.actions, both.request_id, both.teacher_wall_s
            ([0, 1, 2], [10, 11, 12], 1.5)
        """
        n = len(shares)
        total = sum(part.n_labels for part in shares)
        for w, part in enumerate(shares):
            if part.n_labels != len(range(w, total, n)) or part.episode != shares[0].episode:
                raise RuntimeError(  # pragma: no cover - the shares label one trajectory
                    f"labelling shares of episode {shares[0].episode} do not fit together "
                    f"({[q.n_labels for q in shares]} labels); expected shares of one run."
                )
        order = [(j % n, j // n) for j in range(total)]

        def pick(name: str) -> list[Any]:
            columns = [getattr(part, name) for part in shares]
            return [columns[w][i] for w, i in order]

        return cls(
            shares[0].episode,
            pick("observations"),
            pick("actions"),
            pick("behaviour_actions"),
            pick("costs_s"),
            pick("request_id"),
            pick("time_s"),
            sum(part.teacher_wall_s for part in shares),
        )


def label_episode(
    task: LabelTask,
    k: int,
    cap: int,
    encoder: ObservationEncoder | None = None,
    on_label: Callable[[], None] | None = None,
    *,
    share: tuple[int, int] = (0, 1),
) -> EpisodeLabels:
    """Drive episode ``k`` with the behaviour and label up to ``cap`` of its decisions.

    At every ``label_every``-th decision the teacher forks the engine and rolls every
    action out (its action is the label, its rollout costs are kept); the behaviour's
    action is applied. Labelling stops after ``cap`` labelled decisions or at the
    episode's end; the labels of a cut episode are the first ones of the whole episode
    (each depends only on the decisions before it).

    ``share = (w, n)``: label only the ``j``-th labelled decision with ``j mod n = w``
    (the teacher's generator skips the others); ``(0, 1)``, the default, labels all.
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
    offset, stride = share
    teacher_wall_s = 0.0
    n_seen = 0
    n_labelled = 0  # labelled decisions so far, this share's and the others'
    while n_labelled < cap:
        decision = engine.next_decision()
        if decision is None:
            break
        request, state = decision
        view = plain_view(request)
        labelled = n_seen % task.label_every == 0
        if labelled and n_labelled % stride != offset:  # another share's label
            teacher.skip_decision()
            act = behaviour.route(view, state)
            n_labelled += 1
        elif labelled:
            n_labelled += 1
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


def _init_worker(payload: bytes, torch_threads: int | None) -> None:
    global _WORKER_TASK, _WORKER_ENCODER
    if torch_threads is not None:  # the parent's intra-op threads (a policy's numbers)
        import torch

        torch.set_num_threads(torch_threads)
    # the parent's own pickle of its LabelTask (never a file from a user)
    task = pickle.loads(payload)  # noqa: S301
    _WORKER_TASK = task
    _WORKER_ENCODER = ObservationEncoder(task.layout, task.cluster)


def _worker_label(k: int, cap: int, share: tuple[int, int]) -> EpisodeLabels:
    assert _WORKER_TASK is not None, "worker used before its initializer ran"
    return label_episode(_WORKER_TASK, k, cap, _WORKER_ENCODER, share=share)


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


def collect_labels(
    task: LabelTask,
    n_labels: int,
    start_episode: int,
    *,
    n_workers: int = 1,
    on_labels: Callable[[int], None] | None = None,
) -> tuple[list[EpisodeLabels], int]:
    """Label episodes from ``start_episode`` on (cycling) until ``n_labels`` labels.

    Returns the labelled episodes in order (the last one labelled up to the label count
    only) and the index of the next unused episode. With workers, each episode is labelled by all of
    them, in interleaved shares (module docstring). ``on_labels(n)`` is called as ``n``
    labels are added (per decision in this process, per episode with workers).

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
        done.append(labels)
        total += labels.n_labels
        n_empty = n_empty + 1 if labels.n_labels == 0 else 0
        if n_empty > n_episodes:  # pragma: no cover - every trace has a decision
            raise ValueError("the episodes have no routing decisions to label.")

    with contextlib.ExitStack() as stack:
        if n_workers == 1:
            encoder = ObservationEncoder(task.layout, task.cluster)
            tick = (lambda: on_labels(1)) if on_labels is not None else None

            def label_one(k: int, cap: int) -> EpisodeLabels:
                return label_episode(task, k, cap, encoder, tick)
        else:
            pool = stack.enter_context(_pool(task, n_workers))

            def label_one(k: int, cap: int) -> EpisodeLabels:
                shares = _label_shares(pool, k, cap, n_workers)
                if on_labels is not None:
                    on_labels(min(sum(part.n_labels for part in shares), cap))
                return EpisodeLabels.interleave(shares)

        while total < n_labels:
            take(label_one(k, n_labels - total))
            k = (k + 1) % n_episodes
    return done, k


def _pool(task: LabelTask, n_workers: int) -> ProcessPoolExecutor:
    """``n_workers`` spawn processes holding ``task`` (and the parent's torch threads)."""
    payload = _payload(task, n_workers)
    torch = sys.modules.get("torch")  # a policy router's forward passes use it
    torch_threads = int(torch.get_num_threads()) if torch is not None else None
    return ProcessPoolExecutor(
        max_workers=n_workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(payload, torch_threads),
    )


def _label_shares(
    pool: ProcessPoolExecutor, k: int, cap: int, n_workers: int
) -> list[EpisodeLabels]:
    """Episode ``k`` labelled on every worker, each its interleaved share."""
    futures = [pool.submit(_worker_label, k, cap, (w, n_workers)) for w in range(n_workers)]
    try:
        return [future.result() for future in futures]
    except BrokenProcessPool:
        raise RuntimeError(
            f"a labelling worker process (of n_workers = {n_workers}) died before it "
            "finished its share of an episode; no labels were returned. Fix: run the calling "
            "script's top-level code under `if __name__ == '__main__':` (worker processes "
            "start with `spawn` and import it), check memory, or pass n_workers=1 to label "
            "in this process."
        ) from None
    finally:
        for future in futures:
            future.cancel()


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
