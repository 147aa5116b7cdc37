"""Reference policies that bound what routing can gain (tracker issue 11, "Headroom first").

* :class:`MinTotalLatencyRouter` (``min-total-latency``, deployable): min-min plus the
  delay the new request imposes on the requests already on each instance, from
  predicted lengths only.
* :class:`MinMinOracleRouter` (``min-min-oracle``, ORACLE): min-min with the request's
  true output length.
* :class:`LookaheadOracleRouter` (``lookahead-oracle``, ORACLE): forks the simulator at
  every decision, tries every action, continues with a base router and keeps the action
  with the least total latency. It is the only router that needs the engine; it gets a
  fork function through the explicit ``needs_engine``/``bind_engine`` hook (see
  :meth:`routeplay.replay.Engine.bind_router`), never the engine itself.

The pooled reference cluster (one instance with the cluster's summed capacity) is
:func:`routeplay.replay.pooled_cluster`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from .._types import WAIT, ClusterConfig, ClusterState, RequestView, Router
from ..engine._engine import Engine, is_scheduler
from ._common import (
    DEFAULT_OUTPUT_TOKENS,
    ClusterLatency,
    RouterBase,
    argmin_list,
    check_non_negative,
    check_positive,
    decode_tokens_left_list,
    np_minimum,
    require_oracle_view,
)
from ._paper import MinMinRouter, completion_s_list
from ._registry import make_router

__all__ = [
    "LookaheadOracleRouter",
    "MinMinOracleRouter",
    "MinTotalLatencyRouter",
    "imposed_delay_s",
]


def imposed_delay_s(
    latency: ClusterLatency,
    state: ClusterState,
    prompt_tokens: float,
    output_tokens: float,
    others_decode_tokens_left: npt.NDArray[np.float64],
) -> npt.NDArray[np.float64]:
    """Estimated total delay a request (p, d) imposes on the requests already on each instance.

    With ``N = n_running + n_queued`` requests on the instance and that instance's
    latency model:

    * **prefill**: the iteration that prefills the request is longer by
      ``prefill_batch_s + prefill_s_per_token * p + prefill_s_per_token2 * p**2`` for
      every one of the ``N`` requests (each waits for it once);
    * **decode**: each of its ``d - 1`` decode iterations is longer by
      ``decode_s_per_seq + decode_s_per_context_token * (p + d / 2)`` (its mean
      context) for every request decoding beside it. The co-decoding iterations,
      summed over the others, are at most ``N * (d - 1)`` and at most the tokens the
      others still have to decode (``others_decode_tokens_left``), so their minimum is
      used.

    Slot limits (``max_running_seqs``) and preemption are ignored: this is an estimate
    for a score, like min-min's own.

    Example:
        >>> from routeplay.replay import make_cluster_state, make_uniform_cluster
        >>> lat = ClusterLatency.from_cluster(make_uniform_cluster(2))   # 1 ms per token
        >>> s = make_cluster_state(n_running=[10, 0], n_queued=[0, 1])
        >>> imposed_delay_s(lat, s, 100, 11, np.array([1000.0, 50.0])).round(6).tolist()
        [1.1, 0.11]
    """
    n_others = (state.n_running + state.n_queued).astype(np.float64)
    p = float(prompt_tokens)
    d = max(float(output_tokens), 1.0)
    prefill = latency.prefill_batch_s + latency.prefill_s_per_token * p
    prefill = prefill + latency.prefill_s_per_token2 * p * p
    step = latency.decode_s_per_seq + latency.decode_s_per_context_token * (p + d / 2.0)
    overlap = np.minimum(n_others * (d - 1.0), np.maximum(others_decode_tokens_left, 0.0))
    out: npt.NDArray[np.float64] = n_others * prefill + step * overlap
    return out


class MinTotalLatencyRouter(RouterBase):
    """Min-total-latency: min-min plus the delay the request imposes on the others.

    score_i = (min-min's estimated completion of the request on i - now)
    + ``weight`` * :func:`imposed_delay_s` on i, and the router picks the argmin (ties:
    lowest index). Both terms use the request's *predicted* output length
    (``default_output_tokens`` without a predictor) and the state's predicted decode
    tokens left (each outstanding request counts ``default_output_tokens`` without a
    predictor); never true output lengths.

    ``weight`` is the price of one second of delay imposed on another request, in
    seconds of the request's own latency: 1.0 (default) scores the change in the
    *total* latency of all requests (the sum of E2E times, which is what the mean E2E
    measures); 0.0 is exactly min-min.

    Source: min-min (Braun et al., JPDC 2001) extended with the marginal-delay term of
    shortest-expected-delay routing with externalities (the "routing with congestion
    externalities" view, e.g. Roughgarden, "Selfish Routing", 2005); tracker issue 11.

    Args:
        weight: price of the delay imposed on others (>= 0).
        default_output_tokens: output length assumed without a prediction.

    Example:
        >>> from routeplay.replay import make_cluster_state, make_uniform_cluster
        >>> r = MinTotalLatencyRouter()
        >>> r.reset(make_uniform_cluster(2), np.random.default_rng(0))
        >>> s = make_cluster_state(n_running=[10, 0], n_queued=[0, 1],
        ...                        prefill_tokens_pending=[0, 300],
        ...                        predicted_decode_tokens_left=[1000.0, 50.0])
        >>> request = RequestView(0, 0.0, 100, predicted_output_tokens=11.0)
        >>> mm = MinMinRouter()
        >>> mm.reset(make_uniform_cluster(2), np.random.default_rng(0))
        >>> r.route(request, s), mm.route(request, s)   # 0.52 s vs 1.32 s; min-min: 0.41 vs 0.22
        (1, 0)
    """

    name = "min-total-latency"
    oracle = False

    def __init__(
        self, *, weight: float = 1.0, default_output_tokens: float = DEFAULT_OUTPUT_TOKENS
    ) -> None:
        super().__init__()
        check_non_negative("MinTotalLatencyRouter", "weight", weight)
        check_positive("MinTotalLatencyRouter", "default_output_tokens", default_output_tokens)
        self.weight = float(weight)
        self.default_output_tokens = float(default_output_tokens)

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Read every instance's latency model (kept while the same cluster comes back)."""
        super().reset(cluster, rng)
        self._read_latency(cluster)

    def scores_s(self, request: RequestView, state: ClusterState) -> npt.NDArray[np.float64]:
        """The score of every instance (seconds; lower is better).

        ``estimate_completion_s(...) - now_s + weight * imposed_delay_s(...)``, computed
        in plain Python with the same floating-point operations in the same order
        (:meth:`route` takes the argmin of these exact values).
        """
        return np.array(self._scores(request, state), dtype=np.float64)

    def _scores(
        self, request: RequestView, state: ClusterState, eta_s: list[float] | None = None
    ) -> list[float]:
        """The scores; ``eta_s``: min-min's ``estimate - now`` per instance if known already.

        (The observation encoder computes those with the same floating-point operations,
        bit for bit, and passes them in.)
        """
        self._m(state)
        pred = request.predicted_output_tokens
        out = self.default_output_tokens if pred is None else float(pred)
        rows = self._rows
        cols = state.columns()
        now = cols.now_s
        if eta_s is None:
            eta_s = [e - now for e in completion_s_list(rows, state, request.prompt_tokens, out)]
        if self.weight == 0.0:
            return eta_s
        left = decode_tokens_left_list(state, request, self.default_output_tokens)
        # imposed_delay_s, term by term in its order of operations
        p = float(request.prompt_tokens)
        d = max(float(out), 1.0)
        d_minus_1 = d - 1.0
        mean_context = p + d / 2.0
        weight = self.weight
        scores: list[float] = []
        for row, eta, n_run, n_q, left_i in zip(
            rows, eta_s, cols.n_running, cols.n_queued, left, strict=True
        ):
            n_others = float(n_run + n_q)
            prefill = row.prefill_batch_s + row.prefill_s_per_token * p
            prefill = prefill + row.prefill_s_per_token2 * p * p
            step = row.decode_s_per_seq + row.decode_s_per_context_token * mean_context
            left_pos = left_i if left_i > 0.0 or left_i != left_i else 0.0  # np.maximum(., 0.0)
            overlap = np_minimum(n_others * d_minus_1, left_pos)
            scores.append(eta + weight * (n_others * prefill + step * overlap))
        return scores

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the instance with the least own + imposed latency."""
        return argmin_list(self._scores(request, state))


class MinMinOracleRouter(MinMinRouter):
    """ORACLE min-min: min-min with the request's *true* output length.

    Exactly :class:`MinMinRouter`'s estimate (:func:`estimate_completion_s`) with the
    request's true output length from :class:`OracleRequestView` in place of the
    prediction; the state's terms are the same (nothing else is clairvoyant). It bounds
    what a perfect length predictor can add to min-min: ``oracle = True``, not
    deployable, and it raises TypeError when handed a plain RequestView.

    Source: the min-min heuristic (Braun et al., JPDC 2001) with clairvoyant lengths,
    as in clairvoyant scheduling bounds; tracker issue 11.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import ClusterConfig, InstanceConfig, OracleRequestView
        >>> from routeplay.estimator import LinearLatencyModel
        >>> slow = LinearLatencyModel.from_throughput(1000.0)
        >>> fast = LinearLatencyModel.from_throughput(4000.0)
        >>> cluster = ClusterConfig(instances=(InstanceConfig(name="slow", latency=slow),
        ...                                    InstanceConfig(name="fast", latency=fast)))
        >>> s = make_cluster_state(n_running=[0, 40])
        >>> r = MinMinOracleRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> short = OracleRequestView(0, 0.0, 100, predicted_output_tokens=500.0, output_tokens=2)
        >>> mm = MinMinRouter()
        >>> mm.reset(cluster, np.random.default_rng(0))
        >>> r.route(short, s), mm.route(short, s)   # 2 tokens: the busy fast one; 500: the idle
        (1, 0)
    """

    name = "min-min-oracle"
    oracle = True

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the instance with the earliest completion for the true output length."""
        view = require_oracle_view(self.name, request)
        self._m(state)
        output_tokens = float(view.output_tokens)
        return argmin_list(completion_s_list(self._rows, state, view.prompt_tokens, output_tokens))


ForkFn = Callable[..., Engine]  # Engine.fork: (*, timelines=True) -> Engine


class LookaheadOracleRouter(RouterBase):
    """ORACLE one-step lookahead: fork the simulator, try every action, keep the best.

    At each decision it forks the engine (:meth:`Engine.fork`, at the decision), and for
    every action — each instance, then ``WAIT`` when ``include_wait`` — it applies the
    action on a fork of that fork, continues the simulation with the ``base`` router for
    ``horizon_s`` simulated seconds (arrivals keep coming and are routed by the base
    router), stops arrivals and drains (:meth:`Engine.drain`, routing what is still at
    the router with the base router), then sums the end-to-end latencies of the
    requests from the oldest one in flight at the decision to the last one arrived in
    the rollout (every action sees the same requests). It picks the action with the
    least sum (ties: the lowest instance index, WAIT last).

    Why ORACLE (``oracle = True``, not deployable): the simulator inside the fork knows
    every request's *true* output length (running, queued and the new one), and the
    rollout sees the trace's *future arrivals* (times and sizes) during the horizon.
    It is a reference for how much a policy that plans ahead could gain, not a policy.

    Determinism: every decision draws one seed from the generator given to ``reset``;
    every rollout of that decision resets the base router with a generator from that
    seed (common random numbers across actions). Same trace, cluster and seed give the
    same decisions.

    Cost (read after a replay; reset clears them): ``n_decisions`` (route calls),
    ``n_rollouts``, ``n_policy_calls`` (base-router calls inside rollouts) and
    ``wall_time_s`` (time spent in ``route``); ``last_costs_s`` holds the rollout sums
    of the last decision, in the order of ``last_actions``.

    The engine interface: ``needs_engine = True`` tells the driver to call
    ``bind_engine(fork)`` after ``reset`` (:func:`run_replay` does, through
    :meth:`Engine.bind_router`); ``fork()`` returns a fork of the engine at the decision
    being routed. Without a bound engine ``route`` raises RuntimeError.

    Source: rollout / one-step lookahead policy improvement (Bertsekas & Tsitsiklis,
    "Neuro-Dynamic Programming", 1996, §6.1; Bertsekas, "Rollout algorithms", 2005);
    tracker issue 11.

    Args:
        base: the router continuing every rollout: a registry name or a router that
            does not itself need the engine (default ``"min-min"``); a router-queue
            scheduler (e.g. ``"late-binding-spf"``) continues rollouts with its own
            ``schedule`` (the decision being tried is still the head's).
        horizon_s: simulated seconds of arrivals after the decision (>= 0).
        include_wait: also try WAIT (hold the request until the next action tick).

    Example:
        >>> import polars as pl
        >>> from routeplay.estimator import LinearLatencyModel
        >>> from routeplay.replay import ClusterConfig, InstanceConfig, run_replay
        >>> slow = LinearLatencyModel.from_throughput(1000.0)
        >>> fast = LinearLatencyModel.from_throughput(4000.0)
        >>> cluster = ClusterConfig(instances=(InstanceConfig(name="slow", latency=slow),
        ...                                    InstanceConfig(name="fast", latency=fast)))
        >>> trace = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.001],
        ...                       "prompt_tokens": [100, 100], "output_tokens": [1, 1]})
        >>> r = LookaheadOracleRouter()
        >>> res = run_replay(trace, cluster, r)
        >>> res.requests["instance_id"].to_list(), r.n_rollouts, r.n_policy_calls
        ([1, 1], 6, 5)
        >>> [round(c, 6) for c in r.last_costs_s]   # request 1 at t = 0.001: slow, fast, WAIT
        [0.125, 0.074, 0.074]
    """

    name = "lookahead-oracle"
    oracle = True
    needs_engine = True

    def __init__(
        self, *, base: str | Router = "min-min", horizon_s: float = 0.5, include_wait: bool = True
    ) -> None:
        super().__init__()
        check_non_negative("LookaheadOracleRouter", "horizon_s", horizon_s)
        if not isinstance(include_wait, bool):
            raise ValueError(
                f"LookaheadOracleRouter: include_wait = {include_wait!r}; expected a bool."
            )
        if isinstance(base, str):
            base_router = make_router(base)
        else:
            base_router = base
        if getattr(base_router, "needs_engine", False):
            raise ValueError(
                f"LookaheadOracleRouter: base = {getattr(base_router, 'name', base)!r} needs "
                "the engine itself; expected a router that routes from (request, state) "
                "only, e.g. 'min-min'."
            )
        if not callable(getattr(base_router, "route", None)):
            raise ValueError(
                f"LookaheadOracleRouter: base = {base!r}; expected a registry name or a router "
                "with reset() and route()."
            )
        self.base: Router = base_router
        self.horizon_s = float(horizon_s)
        self.include_wait = include_wait
        self._fork: ForkFn | None = None
        self._cluster: ClusterConfig | None = None
        self._clear_cost()

    def _clear_cost(self) -> None:
        self.n_decisions = 0
        self.n_rollouts = 0
        self.n_policy_calls = 0
        self.wall_time_s = 0.0
        self.last_actions: tuple[int, ...] = ()
        self.last_costs_s: tuple[float, ...] = ()

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Start a replay: forget the bound engine and the cost counters."""
        super().reset(cluster, rng)
        self._cluster = cluster
        self._fork = None
        self._clear_cost()

    def bind_engine(self, fork: ForkFn) -> None:
        """Receive the engine's fork function (called by :meth:`Engine.bind_router`)."""
        if not callable(fork):
            raise TypeError(
                f"router {self.name!r}: bind_engine needs a callable returning an Engine fork; "
                f"got {type(fork).__name__}."
            )
        self._fork = fork

    def cost(self) -> dict[str, Any]:
        """The cost counters of the current/last replay as a dict."""
        return {
            "n_decisions": self.n_decisions,
            "n_rollouts": self.n_rollouts,
            "n_policy_calls": self.n_policy_calls,
            "wall_time_s": self.wall_time_s,
        }

    def skip_decision(self) -> None:
        """Advance the generator past one decision as :meth:`route` does, without rollouts.

        :meth:`route` draws one seed per decision (its rollouts' base router starts from
        it). A process that labels only some of an episode's decisions (labelling split
        over worker processes) skips the others with this, so that each decision it does
        label gets the seed it would get in one process.

        Example:
            >>> a, b = LookaheadOracleRouter(), LookaheadOracleRouter()
            >>> from routeplay.replay import make_uniform_cluster
            >>> a.reset(make_uniform_cluster(2), np.random.default_rng(5))
            >>> b.reset(make_uniform_cluster(2), np.random.default_rng(5))
            >>> a.skip_decision()
            >>> _ = b._decision_seed()
            >>> a._decision_seed() == b._decision_seed()
            True
        """
        self._decision_seed()

    def _decision_seed(self) -> int:
        """The next decision's seed (the one draw :meth:`route` makes per decision)."""
        return int(self._rng.integers(2**63))

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the action whose rollout has the least total latency."""
        require_oracle_view(self.name, request)
        m = self._m(state)
        if self._fork is None or self._cluster is None:
            raise RuntimeError(
                f"router {self.name!r} needs the simulator (needs_engine = True) but no engine "
                "is bound. Fix: replay it with run_replay (which calls "
                "engine.bind_router(router) after reset), or call engine.bind_router(router) "
                "yourself after router.reset(...)."
            )
        start = time.perf_counter()
        root = self._fork(timelines=False)  # rollouts read latencies only
        pending = root.next_decision()
        if pending is None or pending[0].request_id != request.request_id:
            raise RuntimeError(
                f"router {self.name!r}: the bound engine's pending decision is not request "
                f"{request.request_id}; expected route() to be called for the engine's own "
                "decision. Fix: bind the engine that produced this decision."
            )
        lo = root.first_in_flight
        until_s = root.now_s + self.horizon_s
        seed = self._decision_seed()
        actions = (*range(m), WAIT) if self.include_wait else tuple(range(m))
        costs: list[float] = []
        cluster = self._cluster
        base = self.base
        scheduler = is_scheduler(base)
        last = len(actions) - 1
        calls = 0
        for k, action in enumerate(actions):
            # one fork per action (the last one runs on the root fork itself); the base
            # router restarts with the decision's seed (its reset keeps what only depends
            # on the cluster, e.g. min-min's latency coefficients)
            sim = root if k == last else root.fork()
            base.reset(cluster, np.random.default_rng(np.random.SeedSequence(seed)))
            sim.apply(action)
            if scheduler:  # a scheduler base picks among the queued requests itself
                calls += sim.run_until(until_s, schedule=base.schedule)  # type: ignore[attr-defined]
                calls += sim.drain(schedule=base.schedule)  # type: ignore[attr-defined]
            else:
                calls += sim.run_until(until_s, base.route)
                calls += sim.drain(base.route)
            costs.append(sim.e2e_sum_s(lo))
        self.n_policy_calls += calls
        self.n_rollouts += len(actions)
        self.n_decisions += 1
        self.last_actions = actions
        self.last_costs_s = tuple(costs)
        self.wall_time_s += time.perf_counter() - start
        return actions[argmin_list(costs)]
