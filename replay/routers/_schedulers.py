"""Router-queue schedulers: which waiting request goes next, and when (tracker issue 11).

A scheduler (the :class:`~routeplay.replay._types.Scheduler` protocol) is offered the
whole router queue at every decision point and returns ``(queue index, instance)`` or
``(index, WAIT)`` (:data:`HOLD`); see the engine's module docstring, "Schedulers".

* :class:`LateBindingSPFScheduler` (``late-binding-spf``, deployable): hold requests
  at the router until an instance is *free*, then release the shortest *predicted*
  job first to the free instance where it would finish earliest.
* :class:`LateBindingSPFOracleScheduler` (``late-binding-spf-oracle``, ORACLE): the
  same rule with true output lengths.

Schedulers are registered with the routers (``routeplay routers`` lists them) and run
through :func:`routeplay.replay.run_replay`, ``routeplay replay --router NAME``,
:func:`routeplay.replay.replay_episodes`, sweeps and report jobs. They have no
per-request ``route``: drivers that only ask for one request at a time (the RL
environment, transition logging) refuse them with a clear error.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .._types import WAIT, ClusterConfig, ClusterState, RequestView
from ._common import (
    DEFAULT_OUTPUT_TOKENS,
    RouterBase,
    argmin_list,
    check_positive,
    require_oracle_view,
)
from ._paper import completion_s_list

__all__ = [
    "HOLD",
    "LateBindingSPFOracleScheduler",
    "LateBindingSPFScheduler",
    "SchedulerBase",
    "free_instances",
]

#: A scheduler's answer that holds every queued request until the next decision point.
HOLD: tuple[int, int] = (0, WAIT)


def free_instances(state: ClusterState, max_local_queue: int = 0) -> npt.NDArray[np.bool_]:
    """Which instances are *free* for late binding.

    An instance is free when its local queue holds at most ``max_local_queue``
    requests (default 0: empty) and it has a sequence slot left
    (``n_running + n_queued < max_running_seqs``). So at most ``max_local_queue + 1``
    requests are ever bound to an instance before it can admit them; KV pressure shows
    as a request that stays in the local queue, which makes the instance busy.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> s = make_cluster_state(n_running=[4, 2, 0], n_queued=[0, 1, 0],
        ...                        max_running_seqs=[4, 8, 8])
        >>> free_instances(s).tolist(), free_instances(s, max_local_queue=1).tolist()
        ([False, False, True], [False, True, True])
    """
    outstanding = state.n_running + state.n_queued
    out: npt.NDArray[np.bool_] = (state.n_queued <= max_local_queue) & (
        outstanding < state.max_running_seqs
    )
    return out


class SchedulerBase(RouterBase):
    """Plumbing of a scheduler: ``reset`` bookkeeping, and a ``route`` that refuses.

    A scheduler decides over the whole router queue (``schedule``); asked for one
    request at a time it could only act as a FIFO router, which is not the policy, so
    ``route`` raises a TypeError that says how to drive it.
    """

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Refuse: a scheduler is driven with ``schedule(queue, state)``."""
        raise TypeError(
            f"{self.name!r} is a router-queue scheduler: it picks among all queued requests "
            "with schedule(queue, state) and has no per-request route(). Fix: replay it with "
            "run_replay / replay_episodes / `routeplay replay` (they call schedule), or drive "
            "an Engine with engine.dispatch(scheduler.schedule(engine.router_queue(), state))."
        )


class LateBindingSPFScheduler(SchedulerBase):
    """Late binding + shortest predicted job first.

    At each decision point:

    1. the free instances are found with :func:`free_instances` (local queue holding at
       most ``max_local_queue`` requests and a sequence slot left); if none is free,
       every request is held (:data:`HOLD`) until the next arrival or action tick;
    2. otherwise the queued request with the smallest predicted job size is released
       (ties: the oldest): ``size_s`` = the isolated service time of a request of
       ``prompt_tokens`` and the predicted output length (``predicted_output_tokens``
       of the view, from the replay's predictor; ``default_output_tokens`` without
       one) under the cluster's mean latency model (the mean of each coefficient over
       the instances): ``LinearLatencyModel.request_time_s`` with no other sequences,
       i.e. the prompt's prefill plus ``d - 1`` decode iterations;
    3. it goes to the free instance with the earliest estimated completion for it
       (min-min's :func:`estimate_completion_s` restricted to the free instances;
       ties: the lowest index).

    The engine asks again right after each dispatch, with a fresh state (the instance
    just used has a request in its local queue, so it is no longer free with the
    default ``max_local_queue = 0``); the offer ends at the first HOLD. Never reads
    true output lengths.

    Source: late binding at the router (requests stay unassigned until a server can
    serve them, as in join-idle-queue, Lu et al., Performance Evaluation 2011) with
    shortest-predicted-job-first ordering (SRPT with predictions, Mitzenmacher,
    "Scheduling with predictions and the price of misprediction", ITCS 2020);
    "Intelligent Router for LLM Workloads" (Jain et al., 2025) reports +11.43 % on its
    testbed for such a policy; tracker issue 11.

    Args:
        max_local_queue: requests an instance may hold in its local queue and still be
            free (>= 0; 0 = bind only to instances whose queue is empty).
        default_output_tokens: predicted output length without a predictor (> 0).

    Example:
        >>> import polars as pl
        >>> from routeplay.replay import run_replay
        >>> from routeplay.replay import make_uniform_cluster
        >>> from routeplay.replay import InstanceConfig, ClusterConfig
        >>> c = make_uniform_cluster(1)          # 1,000 tok/s, one slot: one at a time
        >>> one_slot = ClusterConfig(instances=(
        ...     InstanceConfig(name="a", latency=c.instances[0].latency, max_running_seqs=1),))
        >>> trace = pl.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 0.01, 0.01],
        ...                       "prompt_tokens": [100, 900, 100], "output_tokens": [1, 1, 1]})
        >>> res = run_replay(trace, one_slot, LateBindingSPFScheduler())
        >>> res.requests["finish_s"].round(6).to_list()   # 2 (shorter prompt) overtakes 1
        [0.1, 1.1, 0.2]
    """

    name = "late-binding-spf"
    oracle = False

    def __init__(
        self, *, max_local_queue: int = 0, default_output_tokens: float = DEFAULT_OUTPUT_TOKENS
    ) -> None:
        super().__init__()
        if (
            isinstance(max_local_queue, bool)
            or not isinstance(max_local_queue, int)
            or max_local_queue < 0
        ):
            raise ValueError(
                f"{type(self).__name__}: max_local_queue = {max_local_queue!r}; expected an "
                "int >= 0 (requests an instance may hold queued and still be free)."
            )
        check_positive(type(self).__name__, "default_output_tokens", default_output_tokens)
        self.max_local_queue = max_local_queue
        self.default_output_tokens = float(default_output_tokens)
        self._mean: tuple[float, float, float, float, float, float] = (0.0,) * 6
        self._sizes: dict[int, float] = {}

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Read the latency models; forget the cached job sizes."""
        super().reset(cluster, rng)
        if self._read_latency(cluster):
            lat = self._latency
            assert lat is not None
            self._mean = (
                float(lat.intercept_s.mean()),
                float(lat.prefill_batch_s.mean()),
                float(lat.prefill_s_per_token.mean()),
                float(lat.prefill_s_per_token2.mean()),
                float(lat.decode_s_per_seq.mean()),
                float(lat.decode_s_per_context_token.mean()),
            )
        self._sizes = {}

    def output_tokens(self, request: RequestView) -> float:
        """The output length the job size uses: the prediction (or the default)."""
        pred = request.predicted_output_tokens
        return self.default_output_tokens if pred is None else float(pred)

    def size_s(self, request: RequestView) -> float:
        """Predicted isolated service time of ``request`` (seconds; see the class doc)."""
        c0, c_pb, c_p, c_p2, c_d, c_kv = self._mean
        p = float(request.prompt_tokens)
        k = max(self.output_tokens(request) - 1.0, 0.0)
        prefill = c0 + c_pb + c_p * p + c_p2 * p * p
        decode = k * (c0 + c_d + c_kv * (p + 1.0)) + c_kv * k * (k - 1.0) / 2.0
        return prefill + decode

    def schedule(self, queue: tuple[RequestView, ...], state: ClusterState) -> tuple[int, int]:
        """Release the shortest predicted job to a free instance, or hold everything."""
        self._m(state)
        if not queue:
            raise ValueError(
                f"scheduler {self.name!r} was given an empty queue; expected at least one "
                "waiting request (the engine only asks when some request waits)."
            )
        if self.oracle:  # refuse plain views even when nothing would be released
            require_oracle_view(self.name, queue[0])
        free = self.free_list(state)
        if not any(free):
            return HOLD
        sizes = self._sizes
        best = 0
        best_size = np.inf
        for pos, view in enumerate(queue):
            size = sizes.get(view.request_id)
            if size is None:
                size = self.size_s(view)
                sizes[view.request_id] = size
            if size < best_size:
                best, best_size = pos, size
        chosen = queue[best]
        instance = self.place(chosen, state, free)
        del sizes[chosen.request_id]
        return best, instance

    def free_list(self, state: ClusterState) -> list[bool]:
        """:func:`free_instances` with this scheduler's ``max_local_queue``, as a list."""
        max_q = self.max_local_queue
        cols = state.columns()
        return [
            n_q <= max_q and n_run + n_q < max_seqs
            for n_q, n_run, max_seqs in zip(
                cols.n_queued, cols.n_running, cols.max_running_seqs, strict=True
            )
        ]

    def completion_s(self, request: RequestView, state: ClusterState) -> list[float]:
        """Min-min's estimated completion time of ``request`` on each instance."""
        return completion_s_list(
            self._rows, state, request.prompt_tokens, self.output_tokens(request)
        )

    def place(self, request: RequestView, state: ClusterState, free: list[bool]) -> int:
        """The free instance with the earliest estimated completion (ties: lowest index)."""
        est = self.completion_s(request, state)
        return argmin_list([e if f else np.inf for e, f in zip(est, free, strict=True)])


class LateBindingSPFOracleScheduler(LateBindingSPFScheduler):
    """ORACLE late binding + shortest job first, with *true* output lengths.

    :class:`LateBindingSPFScheduler`'s rule with each request's true output length
    (from :class:`OracleRequestView`) in the job size and the completion estimate; the
    cluster state is the same. It bounds what a perfect length predictor adds to late
    binding: ``oracle = True``, not deployable; it raises TypeError on a plain
    RequestView.

    Source: clairvoyant shortest-job-first (SRPT, Schrage 1968) with late binding;
    tracker issue 11.

    Example:
        >>> from routeplay.replay import make_cluster_state, make_uniform_cluster
        >>> from routeplay.replay import OracleRequestView
        >>> s = LateBindingSPFOracleScheduler()
        >>> s.reset(make_uniform_cluster(2), np.random.default_rng(0))
        >>> queue = (OracleRequestView(0, 0.0, 100, predicted_output_tokens=5.0,
        ...                            output_tokens=900),
        ...          OracleRequestView(1, 0.0, 100, predicted_output_tokens=900.0,
        ...                            output_tokens=5))
        >>> state = make_cluster_state(n_running=[3, 0], n_queued=[1, 0])
        >>> s.schedule(queue, state)   # truly shorter: request 1, to the free instance 1
        (1, 1)
    """

    name = "late-binding-spf-oracle"
    oracle = True

    def output_tokens(self, request: RequestView) -> float:
        """The request's true output length."""
        return float(require_oracle_view(self.name, request).output_tokens)
