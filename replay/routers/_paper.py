"""The routers of the seed paper (Jain et al., EuroMLSys 2025) and its baselines.

Decode balancer (oracle and predicted, labelled), dedicated small/large instances,
and min-min (earliest predicted completion). The impact-greedy router lives in
``_impact.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from routeplay.datasets._taskmix import PAPER_HEAVY_DECODE_TOKENS, PAPER_HEAVY_PROMPT_TOKENS

from .._types import ClusterConfig, ClusterState, RequestView
from ._common import (
    ClusterLatency,
    InstanceLatency,
    RouterBase,
    argmin_list,
    check_positive,
    decode_tokens_left_list,
    outstanding_list,
    queue_and_prefill_terms,
    require_oracle_view,
)

__all__ = [
    "DecodeBalancerOracleRouter",
    "DecodeBalancerRouter",
    "DedicatedSmallLargeRouter",
    "MinMinRouter",
    "completion_s_list",
    "estimate_completion_s",
]

#: The paper's class thresholds, shared with the task-mix generator so that a router's
#: "large" and the workload's LH/HL/HH classes are the same requests: heavy prompt =
#: isolated prefill ``grad1 * p^2 >= 0.5 s`` (40 tokens; see datasets/_taskmix.py for why
#: the linear reading, 1,563 tokens, would leave no heavy prompts in the task mix);
#: heavy decode = decode phase >= 5 s at ~0.035 s per V100 iteration (143 tokens).
HEAVY_PROMPT_TOKENS = PAPER_HEAVY_PROMPT_TOKENS
HEAVY_DECODE_TOKENS = PAPER_HEAVY_DECODE_TOKENS


class DecodeBalancerOracleRouter(RouterBase):
    """ORACLE decode balancer: balance *true* decode tokens per decode slot.

    score_i = (oracle_decode_tokens_left_i + output_tokens) / max_running_seqs_i, and
    the router picks argmin (ties: lowest index). ``output_tokens`` is the incoming
    request's true length (from :class:`OracleRequestView`); the state's
    ``oracle_decode_tokens_left`` holds the true remaining tokens of queued and running
    requests. It is an upper reference, not a deployable policy: ``oracle = True``, and
    it raises TypeError when handed a plain RequestView.

    Source: Jain et al., "Intelligent Router for LLM Workloads" (EuroMLSys 2025),
    Table 2 "decode balancer" (which assumes known decode lengths).

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import OracleRequestView, RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(2)
        >>> r = DecodeBalancerOracleRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> s = make_cluster_state(oracle_decode_tokens_left=[500, 200])
        >>> r.route(OracleRequestView(0, 0.0, 10, output_tokens=50), s)
        1
    """

    name = "decode-balancer-oracle"
    oracle = True

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return argmin of true decode tokens per slot after adding this request."""
        self._m(state)
        view = require_oracle_view(self.name, request)
        left = state.oracle_decode_tokens_left
        if left is None:
            raise TypeError(
                f"router {self.name!r} got a ClusterState without oracle_decode_tokens_left. "
                "Fix: the engine fills it for routers with oracle=True; when building states "
                "by hand pass oracle_decode_tokens_left=[...]."
            )
        out = view.output_tokens
        return argmin_list(
            [
                float(n + out) / float(s if s > 1 else 1)  # numpy: int64 / int64 -> float64
                for n, s in zip(left.tolist(), state.columns().max_running_seqs, strict=True)
            ]
        )


class DecodeBalancerRouter(RouterBase):
    """Predicted decode balancer: like the oracle one, on predicted lengths only.

    score_i = (predicted_decode_tokens_left_i + predicted_output) / max_running_seqs_i,
    argmin (ties: lowest index). ``predicted_output`` is the request's
    ``predicted_output_tokens`` (``default_output_tokens`` if the replay has no
    predictor; a constant added to every instance, so it only matters on
    heterogeneous clusters). Never reads a true output length: it works with a plain
    :class:`RequestView`.

    Source: Jain et al., EuroMLSys 2025, Table 2 decode balancer, with the paper's
    task-aware length predictor in place of known lengths (docs/design.md, System A).

    Args:
        default_output_tokens: prediction used when the request carries none.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(2)
        >>> r = DecodeBalancerRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> s = make_cluster_state(predicted_decode_tokens_left=[90.0, 300.0],
        ...                        max_running_seqs=[1, 8])
        >>> r.route(RequestView(0, 0.0, 10, predicted_output_tokens=30.0), s)  # 120 vs 41
        1
    """

    name = "decode-balancer"
    oracle = False

    def __init__(self, *, default_output_tokens: float = 128.0) -> None:
        super().__init__()
        check_positive("DecodeBalancerRouter", "default_output_tokens", default_output_tokens)
        self.default_output_tokens = float(default_output_tokens)

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return argmin of predicted decode tokens per slot after adding this request."""
        self._m(state)
        pred = request.predicted_output_tokens
        add = self.default_output_tokens if pred is None else float(pred)
        left = decode_tokens_left_list(state, request, self.default_output_tokens)
        return argmin_list(
            [
                (n + add) / float(s if s > 1 else 1)
                for n, s in zip(left, state.columns().max_running_seqs, strict=True)
            ]
        )


class DedicatedSmallLargeRouter(RouterBase):
    """Dedicate some instances to small (light) requests and the rest to large (heavy) ones.

    Split: the first ``n_small = max(1, round(small_fraction * m))`` instances serve
    small requests and the remaining ``m - n_small`` serve large ones (with
    ``m >= 2`` at least one instance of each kind; with ``m = 1`` everything goes to 0).

    Rule (the paper's classes): a request is *large* if its prompt is heavy
    (``prompt_tokens >= heavy_prompt_tokens``, default 40: the task mix's definition,
    ``grad1 * p^2 >= 0.5 s``) or its predicted decode is heavy (``predicted_output_tokens >=
    heavy_decode_tokens``, 143 = 5 s at 0.035 s per decode iteration); LL requests are
    small, LH/HL/HH are large. A request with no prediction is classed by its prompt
    alone. Within its group a request joins the instance with the fewest outstanding
    requests (ties: lowest index).

    Source: Jain et al., EuroMLSys 2025, Table 2 "dedicated small-large" (the worst
    routing policy in every column there).

    Args:
        small_fraction: share of instances reserved for small requests, in (0, 1).
        heavy_prompt_tokens: prompt length from which a prompt is heavy.
        heavy_decode_tokens: predicted output length from which a decode is heavy.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(4)
        >>> r = DedicatedSmallLargeRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> s = make_cluster_state(n_running=[3, 1, 5, 2])
        >>> small = RequestView(0, 0.0, 30, predicted_output_tokens=20.0)
        >>> large = RequestView(1, 0.0, 30, predicted_output_tokens=500.0)
        >>> r.route(small, s), r.route(large, s)
        (1, 3)
    """

    name = "dedicated-small-large"
    oracle = False

    def __init__(
        self,
        *,
        small_fraction: float = 0.5,
        heavy_prompt_tokens: int = HEAVY_PROMPT_TOKENS,
        heavy_decode_tokens: float = HEAVY_DECODE_TOKENS,
    ) -> None:
        super().__init__()
        check_positive("DedicatedSmallLargeRouter", "small_fraction", small_fraction)
        if small_fraction >= 1:
            raise ValueError(
                f"DedicatedSmallLargeRouter: small_fraction = {small_fraction!r}; expected a "
                "share in (0, 1), e.g. 0.5 for half the instances."
            )
        check_positive("DedicatedSmallLargeRouter", "heavy_prompt_tokens", heavy_prompt_tokens)
        check_positive("DedicatedSmallLargeRouter", "heavy_decode_tokens", heavy_decode_tokens)
        self.small_fraction = float(small_fraction)
        self.heavy_prompt_tokens = heavy_prompt_tokens
        self.heavy_decode_tokens = float(heavy_decode_tokens)
        self._n_small = 1

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Fix the small/large split for ``cluster``."""
        super().reset(cluster, rng)
        m = cluster.n_instances
        self._n_small = 1 if m == 1 else min(max(1, round(self.small_fraction * m)), m - 1)

    def is_large(self, request: RequestView) -> bool:
        """True if the request has a heavy prompt or a heavy predicted decode."""
        pred = request.predicted_output_tokens
        heavy_decode = pred is not None and pred >= self.heavy_decode_tokens
        return request.prompt_tokens >= self.heavy_prompt_tokens or heavy_decode

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the least-connections instance of the request's group."""
        m = self._m(state)
        if m == 1:
            return 0
        load = outstanding_list(state)
        small = self._n_small
        if self.is_large(request):
            large = load[small:]
            return small + large.index(min(large))  # ints: the first minimum, as np.argmin
        group = load[:small]
        return group.index(min(group))


def estimate_completion_s(
    latency: ClusterLatency,
    state: ClusterState,
    prompt_tokens: float,
    output_tokens: float,
) -> npt.NDArray[np.float64]:
    """Estimated absolute completion time of a request (p, d) on every instance.

    The estimate has three parts, all from the snapshot and each instance's own
    latency model (vectorised over instances):

    * **slot wait**: if the instance's sequences are all taken
      (``n_running + n_queued >= max_running_seqs``), the request waits until the
      earliest completion, ``max(earliest_completion_s - now_s, 0)``; else 0;
    * **backlog**: one iteration prefilling the ``prefill_tokens_pending`` queued
      ahead (attention work approximated as pending**2 / n_queued, i.e. equal prompts)
      beside the running decodes;
    * **service**: the request's own prefill beside ``n_running`` decoding sequences
      (context ``kv_used_tokens``), then ``d - 1`` decode iterations with one more
      sequence whose context grows by one token per iteration (the same steady-state
      formula as ``LinearLatencyModel.request_time_s``).

    Returns ``now_s + slot_wait + backlog + service`` per instance.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import ClusterConfig, InstanceConfig
        >>> from routeplay.estimator import LinearLatencyModel
        >>> lat = LinearLatencyModel(intercept_s=0.0, prefill_s_per_token=1e-3,
        ...     prefill_s_per_token2=0.0, decode_s_per_seq=0.01, decode_s_per_context_token=0.0)
        >>> cl = ClusterLatency.from_cluster(ClusterConfig(instances=(
        ...     InstanceConfig(name="a", latency=lat),)))
        >>> estimate_completion_s(cl, make_cluster_state(1), 100, 11).round(6).tolist()
        [0.2]
    """
    now = state.now_s
    n_run = state.n_running.astype(np.float64)
    n_q = state.n_queued.astype(np.float64)
    full = (state.n_running + state.n_queued) >= state.max_running_seqs
    slot_wait = np.where(full, np.maximum(state.earliest_completion_s - now, 0.0), 0.0)
    pending = state.prefill_tokens_pending.astype(np.float64)
    ctx = state.kv_used_tokens.astype(np.float64)
    backlog = np.where(
        pending > 0,
        latency.iteration_s(pending, pending * pending / np.maximum(n_q, 1.0), n_run, ctx),
        0.0,
    )
    p = np.full_like(n_run, float(prompt_tokens))
    prefill = latency.iteration_s(p, p * p, n_run, ctx)
    k = max(float(output_tokens) - 1.0, 0.0)
    first_decode = latency.decode_iteration_s(n_run + 1.0, ctx + p + 1.0)
    decode = k * first_decode + latency.decode_s_per_context_token * k * (k - 1.0) / 2.0
    return now + slot_wait + backlog + prefill + decode


def completion_s_list(
    rows: Sequence[InstanceLatency],
    state: ClusterState,
    prompt_tokens: float,
    output_tokens: float,
) -> list[float]:
    """:func:`estimate_completion_s` in plain Python: the same floats, bit for bit.

    ``rows`` are the instances' coefficients (:meth:`ClusterLatency.instances`). Every
    term is computed with the same floating-point operations in the same order as the
    numpy version (see :class:`InstanceLatency`), so routers taking the argmin of this
    list choose exactly what they would on the array; on the 2-8 instances of a cluster
    it is several times cheaper than the dozens of tiny numpy operations.

    Example:
        >>> from routeplay.replay import make_cluster_state, make_uniform_cluster
        >>> lat = ClusterLatency.from_cluster(make_uniform_cluster(2))
        >>> s = make_cluster_state(n_running=[3, 0], prefill_tokens_pending=[0, 500],
        ...                        n_queued=[0, 2], kv_used_tokens=[900, 0])
        >>> fast = completion_s_list(lat.instances(), s, 200, 40)
        >>> fast == estimate_completion_s(lat, s, 200, 40).tolist()
        True
    """
    cols = state.columns()
    now = cols.now_s
    p = float(prompt_tokens)
    k = max(float(output_tokens) - 1.0, 0.0)
    km1 = k - 1.0
    out: list[float] = []
    terms = queue_and_prefill_terms(rows, state, p, cols)
    for row, n_run, ctx, slot_wait, backlog, prefill in terms:
        decode_only, cd, ckv = row[8], row[4], row[5]
        n_dec = n_run + 1.0
        first_decode = 0.0 if n_dec <= 0 else decode_only + cd * n_dec + ckv * (ctx + p + 1.0)
        decode = k * first_decode + ckv * k * km1 / 2.0
        out.append(now + slot_wait + backlog + prefill + decode)
    return out


class MinMinRouter(RouterBase):
    """Min-min: route to the instance with the earliest estimated completion of this request.

    For each instance the completion time of the incoming request is estimated with
    that instance's :class:`LinearLatencyModel` (taken from the cluster at ``reset``)
    from the snapshot and the request's *predicted* output length (see
    :func:`estimate_completion_s` for the formula); the router picks the argmin (ties:
    lowest index). Without a prediction it assumes ``default_output_tokens``.

    Source: the min-min heuristic (Ibarra & Kim 1977; Braun et al., JPDC 2001) as the
    paper's "min-min" baseline (Jain et al., EuroMLSys 2025); seed 003's "predictive
    (earliest completion)" routing.

    Args:
        default_output_tokens: output length assumed when the request has no prediction.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import ClusterConfig, InstanceConfig, RequestView
        >>> from routeplay.estimator import LinearLatencyModel
        >>> slow = LinearLatencyModel.from_throughput(1000.0)
        >>> fast = LinearLatencyModel.from_throughput(4000.0)
        >>> cluster = ClusterConfig(instances=(InstanceConfig(name="slow", latency=slow),
        ...                                    InstanceConfig(name="fast", latency=fast)))
        >>> r = MinMinRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> s = make_cluster_state(n_running=[0, 3], kv_used_tokens=[0, 3000])
        >>> r.route(RequestView(0, 0.0, 200, predicted_output_tokens=50.0), s)
        1
    """

    name = "min-min"
    oracle = False

    def __init__(self, *, default_output_tokens: float = 128.0) -> None:
        super().__init__()
        check_positive("MinMinRouter", "default_output_tokens", default_output_tokens)
        self.default_output_tokens = float(default_output_tokens)

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Read every instance's latency model (kept while the same cluster comes back)."""
        super().reset(cluster, rng)
        self._read_latency(cluster)

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the instance with the earliest estimated completion."""
        self._m(state)
        pred = request.predicted_output_tokens
        out = self.default_output_tokens if pred is None else float(pred)
        return argmin_list(completion_s_list(self._rows, state, request.prompt_tokens, out))
