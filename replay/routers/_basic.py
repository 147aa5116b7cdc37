"""Classic load-balancing routers: the baselines every comparison starts from.

Every router ties to the lowest index (``np.argmin``/``np.argmax`` semantics) unless
its docstring says otherwise, draws randomness only from the generator given to
``reset``, and reads only the :class:`RequestView` and the :class:`ClusterState`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from .._types import ClusterConfig, ClusterState, RequestView
from ._common import (
    DEFAULT_OUTPUT_TOKENS,
    PredictedLengthRouter,
    RouterBase,
    argmax_list,
    argmin_list,
    check_positive,
    decode_tokens_left,
    decode_tokens_left_list,
    np_minimum,
    outstanding_list,
)

__all__ = [
    "JSQTokensRouter",
    "LeastConnectionsRouter",
    "LeastLoadedRouter",
    "LeastWorkLeftRouter",
    "MaxCapacityRouter",
    "PowerOfTwoRouter",
    "RandomRouter",
    "RoundRobinRouter",
    "WeightedRoundRobinRouter",
]


class RoundRobinRouter(RouterBase):
    """Cycle through the instances 0, 1, ..., m-1, 0, ... regardless of load.

    Source: the classic baseline of every system compared here (Vidur's ``round_robin``
    global scheduler, the paper's RR reference, System B baselines).

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(3)
        >>> r = RoundRobinRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> s = make_cluster_state(3)
        >>> [r.route(RequestView(k, 0.0, 10), s) for k in range(4)]
        [0, 1, 2, 0]
    """

    name = "round-robin"
    oracle = False

    def __init__(self) -> None:
        super().__init__()
        self._next = 0

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Start the cycle at instance 0."""
        super().reset(cluster, rng)
        self._next = 0

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the next instance in the cycle."""
        m = self._m(state)
        choice = self._next % m
        self._next = (choice + 1) % m
        return choice


class WeightedRoundRobinRouter(RouterBase):
    """Smooth weighted round robin (nginx's algorithm): instance i gets w_i / sum(w) of requests.

    At each decision every instance's ``current`` grows by its weight; the instance
    with the largest ``current`` (ties: lowest index) is chosen and its ``current`` is
    lowered by the total weight. This interleaves picks instead of sending bursts
    (weights 5,1,1 give a a b a c a a, not a a a a a b c).

    Source: nginx ``ngx_http_upstream_round_robin.c`` smooth weighted round-robin
    (nginx 1.3.1+), as documented in the nginx upstream ``weight=`` parameter; seed 003's
    "weighted round robin".

    Args:
        weights: positive weight per instance; ``None`` (default) uses each
            instance's capacity ``max_running_seqs`` (System B's 3/5/7 concurrency
            servers then get 3:5:7 of the traffic).

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(3)
        >>> r = WeightedRoundRobinRouter(weights=(5, 1, 1))
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> s = make_cluster_state(3)
        >>> [r.route(RequestView(k, 0.0, 10), s) for k in range(7)]
        [0, 0, 1, 0, 2, 0, 0]
    """

    name = "weighted-round-robin"
    oracle = False

    def __init__(self, *, weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if weights is not None:
            weights = tuple(weights)
            if not weights:
                raise ValueError(
                    "WeightedRoundRobinRouter: weights is empty; expected one positive "
                    "weight per instance, or None to use max_running_seqs."
                )
            for k, w in enumerate(weights):
                check_positive("WeightedRoundRobinRouter", f"weights[{k}]", w)
        self._weights_param = weights
        self._weights = np.zeros(0)
        self._weight_list: list[float] = []
        self._total = 0.0
        self._current: list[float] = []

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Resolve the weights for ``cluster`` and zero the running counters."""
        super().reset(cluster, rng)
        if self._weights_param is None:
            w = np.array([c.max_running_seqs for c in cluster.instances], dtype=np.float64)
        else:
            if len(self._weights_param) != cluster.n_instances:
                raise ValueError(
                    f"WeightedRoundRobinRouter: got {len(self._weights_param)} weights "
                    f"{list(self._weights_param)} for a cluster of {cluster.n_instances} "
                    "instances; expected one weight per instance."
                )
            w = np.array(self._weights_param, dtype=np.float64)
        self._weights = w
        self._weight_list = w.tolist()
        self._total = float(w.sum())
        self._current = [0.0] * len(self._weight_list)

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the instance with the largest smoothed credit."""
        self._m(state)
        current = [c + w for c, w in zip(self._current, self._weight_list, strict=True)]
        choice = argmax_list(current)
        current[choice] -= self._total
        self._current = current
        return choice


class RandomRouter(RouterBase):
    """Uniformly random instance, drawn from the generator handed to ``reset``.

    Source: Vidur's ``random`` global scheduler; AIBrix ``random``; System B baseline.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(4)
        >>> r = RandomRouter()
        >>> r.reset(cluster, np.random.default_rng(7))
        >>> a = [r.route(RequestView(k, 0.0, 10), make_cluster_state(4)) for k in range(5)]
        >>> r.reset(cluster, np.random.default_rng(7))
        >>> a == [r.route(RequestView(k, 0.0, 10), make_cluster_state(4)) for k in range(5)]
        True
    """

    name = "random"
    oracle = False

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return ``rng.integers(m)``."""
        return int(self._rng.integers(self._m(state)))


class LeastConnectionsRouter(RouterBase):
    """Join the shortest queue by request count: argmin of ``n_queued + n_running``.

    Source: least connections / JSQ by count (nginx ``least_conn``; AIBrix
    ``least-request``; Vidur's LOR "least outstanding requests"; System B baseline).

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> r = LeastConnectionsRouter()
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(3)
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> r.route(RequestView(0, 0.0, 10), make_cluster_state(n_queued=[1, 0, 0],
        ...                                                      n_running=[2, 3, 1]))
        2
    """

    name = "least-connections"
    oracle = False

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the instance with the fewest outstanding requests (ties: lowest index)."""
        self._m(state)
        load = outstanding_list(state)
        return load.index(min(load))  # ints: the first minimum, as np.argmin


def outstanding_tokens(
    state: ClusterState, request: RequestView, default_output_tokens: float = DEFAULT_OUTPUT_TOKENS
) -> npt.NDArray[np.float64]:
    """Predicted tokens still to process per instance: pending prefill + predicted decode left.

    Without a length predictor see :func:`decode_tokens_left`.
    """
    return state.prefill_tokens_pending.astype(np.float64) + decode_tokens_left(
        state, request, default_output_tokens
    )


class JSQTokensRouter(PredictedLengthRouter):
    """The paper's JSQ: join the instance with the fewest outstanding tokens.

    Outstanding tokens = ``prefill_tokens_pending`` (prompt tokens queued or not yet
    prefilled) + ``predicted_decode_tokens_left`` (the length predictor's estimate of
    the output tokens still to generate; never the truth).

    Source: Jain et al., "Intelligent Router for LLM Workloads" (EuroMLSys 2025),
    JSQ baseline (0.46% lower mean E2E than round robin in their Table 3).

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> r = JSQTokensRouter()
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(2)
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> r.route(RequestView(0, 0.0, 10, predicted_output_tokens=20.0), make_cluster_state(
        ...     prefill_tokens_pending=[100, 0], predicted_decode_tokens_left=[0.0, 150.0]))
        0
    """

    name = "jsq-tokens"
    oracle = False

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return argmin of outstanding tokens (ties: lowest index)."""
        self._m(state)
        left = decode_tokens_left_list(state, request, self.default_output_tokens)
        if request.predicted_output_tokens is None:  # the state's arrays were not needed
            pending: Sequence[int] = state.columns().prefill_tokens_pending
        else:
            pending = state.prefill_tokens_pending.tolist()
        return argmin_list([float(p) + d for p, d in zip(pending, left, strict=True)])


class LeastLoadedRouter(RouterBase):
    """Least loaded in System B's sense: fewest outstanding requests per unit of concurrency.

    load_i = (n_queued_i + n_running_i) / max_running_seqs_i, so a 7-slot server with 3
    requests (0.43) is less loaded than a 3-slot server with 2 (0.67). On a homogeneous
    cluster it equals least-connections.

    Source: System B (online RL router README, baseline "least loaded" on servers of
    3/5/7 concurrency) and seed 003's strategy catalogue ("least loaded").

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> r = LeastLoadedRouter()
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(2)
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> r.route(RequestView(0, 0.0, 10), make_cluster_state(
        ...     n_running=[2, 3], max_running_seqs=[3, 7]))
        1
    """

    name = "least-loaded"
    oracle = False

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return argmin of outstanding requests / max_running_seqs."""
        self._m(state)
        cols = state.columns()
        load = [
            float(q + r) / float(s if s > 1 else 1)  # numpy: int64 / int64 -> float64
            for q, r, s in zip(cols.n_queued, cols.n_running, cols.max_running_seqs, strict=True)
        ]
        return argmin_list(load)


class LeastWorkLeftRouter(PredictedLengthRouter):
    """Route to the instance with the fewest predicted decode tokens left.

    Reads ``predicted_decode_tokens_left`` (the predictor's estimate for queued and
    running requests); never the true lengths. Compare ``decode-balancer``, which
    also counts the incoming request and normalises by decode slots.

    Source: the paper's "least work left" local policy (Jain et al., EuroMLSys 2025,
    Table 2 batching column) lifted to the router, as seed 003's "token-aware" routing.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> r = LeastWorkLeftRouter()
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(3)
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> r.route(RequestView(0, 0.0, 10, predicted_output_tokens=5.0), make_cluster_state(
        ...     predicted_decode_tokens_left=[30.0, 10.0, 10.0]))
        1
    """

    name = "least-work-left"
    oracle = False

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return argmin of predicted remaining decode tokens (see decode_tokens_left)."""
        self._m(state)
        return argmin_list(decode_tokens_left_list(state, request, self.default_output_tokens))


class PowerOfTwoRouter(RouterBase):
    """Power of two choices: sample two distinct instances, keep the one with fewer requests.

    The two candidates are drawn without replacement from the reset generator; the
    one with fewer outstanding requests (``n_queued + n_running``) wins, ties going to
    the first one drawn. With one instance it always returns 0.

    Source: Mitzenmacher, "The Power of Two Choices in Randomized Load Balancing"
    (IEEE TPDS 2001); Ray Serve's default request router (``PowerOfTwoChoicesRequestRouter``,
    docs.ray.io "Request routing"); AIBrix ``power-of-two``.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(2)
        >>> r = PowerOfTwoRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> r.route(RequestView(0, 0.0, 10), make_cluster_state(n_running=[5, 1]))
        1
    """

    name = "power-of-two"
    oracle = False

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the less loaded of two random distinct instances."""
        m = self._m(state)
        if m == 1:
            return 0
        a: int
        b: int
        a, b = self._rng.choice(m, size=2, replace=False).tolist()
        load = outstanding_list(state)
        return b if load[b] < load[a] else a


class MaxCapacityRouter(RouterBase):
    """Maximum capacity: send the request where the most capacity is free.

    Free capacity of instance i is the smaller of its free KV fraction and its free
    sequence-slot fraction::

        free_kv_i   = (kv_capacity_i - kv_used_i - prefill_tokens_pending_i) / kv_capacity_i
        free_seqs_i = (max_running_seqs_i - n_running_i - n_queued_i) / max_running_seqs_i
        capacity_i  = min(free_kv_i, free_seqs_i)

    and ``mode="most-free"`` (default) picks argmax capacity_i. This is our reading of
    the paper's "maximum capacity" baseline (its state's capacity vector C_t; it
    beat round robin by 2.60%, which a spreading rule can and a packing rule would
    not). ``mode="best-fit"`` is the packing reading: among instances where the
    request's prompt + predicted output fits in free KV and a slot is free, pick
    the one with the *least* capacity left (maximum capacity usage); if none fits,
    fall back to most-free.

    Source: Jain et al., EuroMLSys 2025, "max capacity" baseline (docs/design.md, System A).

    Args:
        mode: ``"most-free"`` or ``"best-fit"``.
        default_output_tokens: output length assumed by best-fit when the request
            has no prediction.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> r = MaxCapacityRouter()
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(2)
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> s = make_cluster_state(kv_used_tokens=[10_000, 60_000], n_running=[200, 10])
        >>> r.route(RequestView(0, 0.0, 10), s)   # slots are scarcer on 0 than KV on 1
        1
    """

    name = "max-capacity"
    oracle = False
    MODES = ("most-free", "best-fit")

    def __init__(self, *, mode: str = "most-free", default_output_tokens: float = 128.0) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(
                f"MaxCapacityRouter: mode = {mode!r}; expected one of {list(self.MODES)}."
            )
        check_positive("MaxCapacityRouter", "default_output_tokens", default_output_tokens)
        self.mode = mode
        self.default_output_tokens = float(default_output_tokens)

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the instance with the most (or, best-fit, the least sufficient) free capacity."""
        self._m(state)
        cols = state.columns()
        free_kv_tokens: list[float] = []
        free_slots: list[float] = []
        capacity: list[float] = []
        for kv_cap_i, kv_used, pending, max_seqs, n_run, n_q in zip(
            cols.kv_capacity_tokens,
            cols.kv_used_tokens,
            cols.prefill_tokens_pending,
            cols.max_running_seqs,
            cols.n_running,
            cols.n_queued,
            strict=True,
        ):
            # the numpy formula's operations, in its order, on Python floats
            kv_cap = float(kv_cap_i if kv_cap_i > 1 else 1)
            free_kv = kv_cap - float(kv_used) - float(pending)
            slots = float(max_seqs if max_seqs > 1 else 1)
            free = slots - float(n_run) - float(n_q)
            free_kv_tokens.append(free_kv)
            free_slots.append(free)
            capacity.append(np_minimum(free_kv / kv_cap, free / slots))
        if self.mode == "best-fit":
            out = request.predicted_output_tokens
            need = request.prompt_tokens + (self.default_output_tokens if out is None else out)
            fits = [
                kv >= need and sl >= 1 for kv, sl in zip(free_kv_tokens, free_slots, strict=True)
            ]
            if any(fits):
                return argmin_list(
                    [c if f else np.inf for c, f in zip(capacity, fits, strict=True)]
                )
        return argmax_list(capacity)
