"""The one place that turns a routing decision's inputs into an observation vector.

Dataset building (transition logs), the gymnasium environment and ``PolicyRouter``
(serving a trained policy as a router) all encode with an :class:`ObservationEncoder`
(or the one-shot :func:`encode_observation`), so training and serving cannot drift
apart. The encoder needs the cluster (each instance's latency model) besides the
snapshot: it prices the new request on every instance with min-min's own estimate
(:func:`~routeplay.replay.routers._paper.estimate_completion_s`) and scores it with the
workload-impact estimator (:func:`routeplay.estimator.estimate_impact`).

Layout (version :data:`OBSERVATION_LAYOUT_VERSION` = ``"3"``), for ``m`` instances,
``B_p`` prompt buckets and ``B_d`` decode buckets. ``lg(x, cap)`` is
``min(log1p(x) / log1p(cap), 1)`` (log-scaled: 0 -> 0, ``cap`` -> 1):

=======================  ==========  ==================================================
block                    size        value
=======================  ==========  ==================================================
``queue``                1           lg(router queue length, queue_cap)
``prompt``               1           lg(prompt tokens, prompt_scale_tokens)
``decode_bucket``        B_d         one-hot of the predicted output bucket (zeros if none)
``P``                    m * B_p     lg(per-instance prompt-bucket count, count_cap)
``D``                    m * B_d     lg(per-instance predicted-decode-bucket count, count_cap)
``local_queue``          m           lg(requests in the instance's local queue, count_cap)
``capacity``             m           free sequence slots / max_running_seqs
``kv_free``              m           free KV tokens / KV capacity
``prefill_pending``      m           lg(prompt tokens queued or not yet prefilled, tokens_cap)
``speed``                m           speed index: fastest reference iteration / this one's
``earliest_completion``  m           (earliest completion - now) / (that + time_scale_s)
``minmin_eta``           m           lg(min-min's estimated completion - now (s), eta_cap_s)
``impact_cost``          m           lg(1 - r_mix, impact_cap): 0 = no impact
``minmin_gap``           m           lg(min-min's ETA - the least ETA (s), eta_cap_s)
``total_latency_gap``    m           lg(min-total-latency's score - the least (s), eta_cap_s)
=======================  ==========  ==================================================

Definitions:

* **speed index** (:func:`instance_speed_index`): each instance's predicted time of one
  reference iteration (:data:`REFERENCE_PREFILL_TOKENS` prompt tokens prefilled beside
  :data:`REFERENCE_DECODE_SEQS` decoding sequences of :data:`REFERENCE_CONTEXT_TOKENS`
  context each) from its own latency model; the index is ``min_j t_j / t_i`` (1 = the
  cluster's fastest instance, 0.5 = half as fast). Constant within a cluster.
* **min-min ETA**: :func:`~routeplay.replay.routers._paper.estimate_completion_s` of
  ``(prompt, predicted output)``, the very function ``MinMinRouter`` minimises, so the
  router is recoverable from the observation as the argmin of this block (the log
  transform is monotone). The predicted output is the request's prediction, else
  ``layout.default_output_tokens`` (min-min's own default, 128) — never the truth.
* **gaps** (version 3): how far each instance is from the best one by min-min's and by
  ``min-total-latency``'s own scores
  (:class:`~routeplay.replay.routers._reference.MinTotalLatencyRouter`, the strongest
  deployable heuristic of docs/notes/headroom.md): 0 exactly on the
  heuristic's choice and > 0 elsewhere (the log scale resolves small gaps: 0.1 s ->
  0.012). Version 2 had min-min's ETA only as absolute values (instances 0.1 s apart
  differ by ~0.001 when the ETAs are ~10 s) and no ``min-total-latency`` term at all: a
  policy trained by imitation stayed 3 % behind min-min and could not represent
  ``min-total-latency`` (docs/notes/offline-rl-results.md).
* **impact cost**: ``1 - r_mix`` of the workload-impact estimate (``r_mix <= 1``, so the
  cost is >= 0 and unbounded above) with each instance's gradients scaled by its own
  latency model (:func:`impact_relative_cost`); the same estimate the paper reward's
  penalty uses (:class:`~routeplay.replay.rl._outcomes.OutcomeTracker`).

*Speed.* An encoding is one step of :class:`~routeplay.replay.RoutingEnv` and of the
transition writer, so the encoder computes its cluster constants once and, for up to
:data:`SCALAR_MAX_INSTANCES` instances, prices the request per instance in Python floats
with exactly the operations of ``estimate_completion_s`` and ``estimate_impact`` (the
same numbers bit for bit, tested against those functions: a change to min-min's estimate
fails that test), then log-scales every entry with one numpy call per operation.
Larger clusters call the numpy functions themselves.

*Choice: no saturation in overload.* Version 1 divided counts by 64 and clipped: on the
paper's overload regime (4 x ``llama2-7b/v100-paper``, 2,000 task-mix requests at
20 req/s) 84.7 % of round-robin decisions had a clipped feature. Counts, tokens, times
and costs are now log-scaled up to caps far beyond any replay (65,536 requests, 2**24
tokens, one hour, an impact cost of 1e6); measured share after: 0 %
(docs/notes/rl-interface.md). Every value lies in [0, 1], which keeps the Q-networks'
inputs on one scale without a fitted scaler. The router queue length arrives capped at
the cluster's ``router_queue_cap`` (the engine's choice), so ``queue`` reaches 1 only at
that cap.

*Old files.* A transition file or saved policy of layout version ``"1"`` is refused
with a message naming both versions (re-log or retrain); its columns meant other
things.
"""

# Why this module is long: one observation layout serves logging, the environment and
# serving; its blocks and their exact arithmetic must stay in one place.

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from routeplay.estimator._impact import ImpactConfig, ImpactEstimate, estimate_impact

from routeplay._checks import check_int, check_number

from .._types import ClusterConfig, ClusterState, RequestView
from ..routers._common import ClusterLatency
from ..routers._paper import estimate_completion_s
from ..routers._reference import MinTotalLatencyRouter

__all__ = [
    "MIN_IMPACT_COST",
    "OBSERVATION_LAYOUT_VERSION",
    "REFERENCE_CONTEXT_TOKENS",
    "REFERENCE_DECODE_SEQS",
    "REFERENCE_PREFILL_TOKENS",
    "SCALAR_MAX_INSTANCES",
    "ObservationEncoder",
    "ObservationLayout",
    "encode_observation",
    "impact_relative_cost",
    "instance_impact",
    "instance_speed_index",
]

#: Bumped whenever the meaning or order of the observation entries changes; stored
#: beside every transition dataset and trained policy.
OBSERVATION_LAYOUT_VERSION = "3"

#: The reference iteration behind the speed index and the impact cost multipliers.
REFERENCE_PREFILL_TOKENS = 512
REFERENCE_DECODE_SEQS = 32
REFERENCE_CONTEXT_TOKENS = 512
#: Impact cost multiplier of an instance whose latency model has no marginal cost.
MIN_IMPACT_COST = 1e-9


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservationLayout:
    """Shape and scales of the observation vector (see the module docstring).

    Attributes:
        n_instances: number of instances ``m``.
        n_prompt_buckets: columns of ``ClusterState.prompt_bucket_counts``.
        n_decode_buckets: columns of ``ClusterState.decode_bucket_counts``.
        queue_cap: router-queue length that maps to 1.0 (the paper's 512).
        prompt_scale_tokens: prompt length that maps to 1.0 on the log scale.
        count_cap: request count (bucket counts, local queue) that maps to 1.0.
        tokens_cap: pending prefill tokens that map to 1.0.
        time_scale_s: time to earliest completion that maps to 0.5.
        eta_cap_s: min-min's estimated time to completion that maps to 1.0.
        impact_cap: impact cost ``1 - r_mix`` that maps to 1.0.
        default_output_tokens: predicted output assumed for a request without a
            prediction (min-min's default).

    Example:
        >>> layout = ObservationLayout(n_instances=2, n_prompt_buckets=2, n_decode_buckets=3)
        >>> layout.size
        35
        >>> layout.names()[:4]
        ['queue', 'prompt', 'decode_bucket_0', 'decode_bucket_1']
        >>> layout.names()[-2:]
        ['total_latency_gap_0', 'total_latency_gap_1']
    """

    n_instances: int
    n_prompt_buckets: int
    n_decode_buckets: int
    queue_cap: int = 512
    prompt_scale_tokens: float = 32_768.0
    count_cap: float = 65_536.0
    tokens_cap: float = float(2**24)
    time_scale_s: float = 10.0
    eta_cap_s: float = 3600.0
    impact_cap: float = 1e6
    default_output_tokens: float = 128.0

    def __post_init__(self) -> None:
        for name in ("n_instances", "n_prompt_buckets", "n_decode_buckets", "queue_cap"):
            check_int("ObservationLayout", name, getattr(self, name), minimum=1)
        for name in (
            "prompt_scale_tokens",
            "count_cap",
            "tokens_cap",
            "time_scale_s",
            "eta_cap_s",
            "impact_cap",
            "default_output_tokens",
        ):
            check_number("ObservationLayout", name, getattr(self, name), minimum=0, strict=True)

    @property
    def size(self) -> int:
        """Length of the observation vector."""
        m = self.n_instances
        return (
            2
            + self.n_decode_buckets
            + m * (self.n_prompt_buckets + self.n_decode_buckets)
            + len(_PER_INSTANCE_BLOCKS) * m
        )

    def names(self) -> list[str]:
        """One name per observation entry, in order."""
        m = self.n_instances
        names = ["queue", "prompt"]
        names += [f"decode_bucket_{b}" for b in range(self.n_decode_buckets)]
        names += [f"P_{i}_{b}" for i in range(m) for b in range(self.n_prompt_buckets)]
        names += [f"D_{i}_{b}" for i in range(m) for b in range(self.n_decode_buckets)]
        for block in _PER_INSTANCE_BLOCKS:
            names += [f"{block}_{i}" for i in range(m)]
        return names

    def block_slice(self, block: str) -> slice:
        """Where a per-instance block (e.g. ``"minmin_eta"``) sits in the vector.

        Example:
            >>> layout = ObservationLayout(n_instances=2, n_prompt_buckets=1, n_decode_buckets=1)
            >>> layout.block_slice("local_queue")
            slice(7, 9, None)
        """
        if block not in _PER_INSTANCE_BLOCKS:
            raise ValueError(
                f"unknown observation block {block!r}; expected one of "
                f"{list(_PER_INSTANCE_BLOCKS)}."
            )
        m = self.n_instances
        start = 2 + self.n_decode_buckets + m * (self.n_prompt_buckets + self.n_decode_buckets)
        start += m * _PER_INSTANCE_BLOCKS.index(block)
        return slice(start, start + m)

    @classmethod
    def for_state(cls, state: ClusterState, **scales: float) -> ObservationLayout:
        """The layout whose shape matches ``state`` (scales default or as given)."""
        return cls(
            n_instances=state.n_instances,
            n_prompt_buckets=int(state.prompt_bucket_counts.shape[1]),
            n_decode_buckets=int(state.decode_bucket_counts.shape[1]),
            **scales,  # type: ignore[arg-type]
        )


#: Per-instance blocks after ``P`` and ``D``, in order.
_PER_INSTANCE_BLOCKS: tuple[str, ...] = (
    "local_queue",
    "capacity",
    "kv_free",
    "prefill_pending",
    "speed",
    "earliest_completion",
    "minmin_eta",
    "impact_cost",
    "minmin_gap",
    "total_latency_gap",
)
#: The blocks the tails write (everything before the gaps).
_N_TAIL_BLOCKS = _PER_INSTANCE_BLOCKS.index("minmin_gap")


def _reference_iteration_s(latency: ClusterLatency) -> npt.NDArray[np.float64]:
    m = latency.intercept_s.shape[0]
    p = np.full(m, float(REFERENCE_PREFILL_TOKENS))
    seqs = np.full(m, float(REFERENCE_DECODE_SEQS))
    return latency.iteration_s(p, p * p, seqs, seqs * REFERENCE_CONTEXT_TOKENS)


def instance_speed_index(cluster: ClusterConfig) -> npt.NDArray[np.float64]:
    """Per instance ``min_j t_j / t_i``, ``t`` = predicted time of the reference iteration.

    Example:
        >>> from routeplay.estimator import LinearLatencyModel
        >>> from routeplay.replay import ClusterConfig, InstanceConfig
        >>> fast = LinearLatencyModel.from_throughput(4000.0)
        >>> slow = LinearLatencyModel.from_throughput(1000.0)
        >>> cluster = ClusterConfig(instances=(InstanceConfig(name="s", latency=slow),
        ...                                    InstanceConfig(name="f", latency=fast)))
        >>> instance_speed_index(cluster).tolist()
        [0.25, 1.0]
    """
    t = _reference_iteration_s(ClusterLatency.from_cluster(cluster))
    if not (np.isfinite(t).all() and (t > 0).all()):
        raise ValueError(
            f"reference iteration times {t.tolist()} s; expected finite times > 0 for every "
            "instance. Fix: use latency models with a positive per-token or per-sequence cost."
        )
    return np.asarray(t.min() / t, dtype=np.float64)


def impact_relative_cost(
    cluster: ClusterConfig, config: ImpactConfig | None = None
) -> npt.NDArray[np.float64]:
    """Per-instance multipliers of the impact estimator's gradients, from each latency model.

    ``cost_i`` = the marginal time instance ``i``'s own latency model charges for the
    reference work (a :data:`REFERENCE_PREFILL_TOKENS`-token prefill, with its
    quadratic attention term, beside :data:`REFERENCE_DECODE_SEQS` decoding sequences
    of :data:`REFERENCE_CONTEXT_TOKENS` context) divided by the same work priced with
    the estimator's gradients (``grad1`` per prompt token, ``grad2`` per context token).
    The intercept is left out: the estimator has none. The paper's gradients are the
    ``llama2-7b/v100-paper`` coefficients, so that cluster gets exactly 1 everywhere
    (the paper's reward unchanged); an instance twice as fast gets 0.5. A model with
    no marginal cost (intercept only: load does not slow it) gets
    :data:`MIN_IMPACT_COST` (the estimator needs multipliers > 0).

    Example:
        >>> from routeplay.replay import make_cluster
        >>> impact_relative_cost(make_cluster("paper-2xv100")).tolist()
        [1.0, 1.0]
    """
    cfg = config if config is not None else ImpactConfig()
    lat = ClusterLatency.from_cluster(cluster)
    p = float(REFERENCE_PREFILL_TOKENS)
    seqs = float(REFERENCE_DECODE_SEQS)
    ctx = seqs * REFERENCE_CONTEXT_TOKENS
    own = (
        lat.prefill_s_per_token * p
        + lat.prefill_s_per_token2 * p * p
        + lat.decode_s_per_seq * seqs
        + lat.decode_s_per_context_token * ctx
    )
    ref = cfg.grad1_s_per_token * p + cfg.grad2_s_per_token * ctx
    if not np.isfinite(own).all():
        raise ValueError(
            f"impact cost multipliers: marginal reference times {own.tolist()} s; expected "
            "finite times. Fix: check the instances' latency coefficients."
        )
    if ref <= 0:  # both gradients 0: the multipliers scale nothing
        return np.ones(cluster.n_instances, dtype=np.float64)
    return np.asarray(np.maximum(own / ref, MIN_IMPACT_COST), dtype=np.float64)


def instance_impact(
    request: RequestView,
    state: ClusterState,
    predicted_output_tokens: float,
    relative_cost: npt.NDArray[np.float64],
    config: ImpactConfig | None = None,
) -> ImpactEstimate:
    """The workload-impact estimate of ``request`` with per-instance gradients.

    The one call behind both the ``impact_cost`` block and the paper reward's penalty.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> s = make_cluster_state(tokens_in_system=[5000, 0, 1200])
        >>> est = instance_impact(RequestView(0, 0.0, 20), s, 100.0, np.ones(3))
        >>> est.best_instance
        1
    """
    tokens = state.tokens_in_system
    if tokens.shape != (state.n_instances,):
        tokens = np.zeros(state.n_instances, dtype=np.int64)
    return estimate_impact(
        request.prompt_tokens,
        predicted_output_tokens,
        tokens,
        config if config is not None else ImpactConfig(),
        relative_cost=relative_cost,
    )


def _lg(x: npt.ArrayLike, cap: float) -> npt.NDArray[np.float64]:
    v = np.log1p(np.maximum(np.asarray(x, dtype=np.float64), 0.0)) / math.log1p(cap)
    return np.minimum(v, 1.0)


#: Clusters of up to this many instances are encoded with per-instance Python arithmetic
#: (a few numpy calls per decision); larger ones with the numpy functions vectorised over
#: instances. Both give the same numbers, bit for bit (tested). Measured crossover on
#: this project's machine: about 70 instances (4 instances: ~20 us vs ~120 us).
SCALAR_MAX_INSTANCES = 64

#: Per instance: the latency coefficients in :meth:`ClusterLatency.iteration_s` order
#: (intercept, prefill batch, per prompt token, per prompt token squared, per decoding
#: sequence, per context token), then the partial sum of a decode-only iteration up to
#: its decode terms (``intercept + batch * 0 + per_token * 0 + per_token2 * 0``).
_Coefs = tuple[float, float, float, float, float, float, float]


class _Constants:
    """What an encoder precomputes from its layout and cluster (constant per cluster)."""

    __slots__ = (
        "alpha",
        "coefs",
        "decode_scale_s",
        "den",
        "eps_s",
        "g1c",
        "g2c",
        "m",
        "one_minus_alpha",
        "p_d",
        "p_end",
        "prompt_power",
        "raw_mask",
        "scalar",
        "speed",
        "tail",
        "gaps",
        "eta_at",
    )

    def __init__(
        self,
        layout: ObservationLayout,
        latency: ClusterLatency,
        speed: npt.NDArray[np.float64],
        impact_cost: npt.NDArray[np.float64],
        config: ImpactConfig,
    ) -> None:
        m = layout.n_instances
        self.m = m
        self.scalar = m <= SCALAR_MAX_INSTANCES
        cols = (
            latency.intercept_s,
            latency.prefill_batch_s,
            latency.prefill_s_per_token,
            latency.prefill_s_per_token2,
            latency.decode_s_per_seq,
            latency.decode_s_per_context_token,
        )
        self.coefs: tuple[_Coefs, ...] = tuple(
            (c0, c1, c2, c3, c4, c5, c0 + c1 * 0.0 + c2 * 0.0 + c3 * 0.0)
            for c0, c1, c2, c3, c4, c5 in zip(*(c.tolist() for c in cols), strict=True)
        )
        self.speed: list[float] = speed.tolist()
        # the impact estimator's per-instance gradients, as estimate_impact forms them
        self.g1c: list[float] = (config.grad1_s_per_token * impact_cost).tolist()
        self.g2c: list[float] = (config.grad2_s_per_token * impact_cost).tolist()
        self.eps_s = float(config.eps_s)
        self.decode_scale_s = float(config.decode_scale_s)
        self.alpha = float(config.alpha)
        self.one_minus_alpha = 1.0 - config.alpha
        self.prompt_power = int(config.prompt_power)
        # positions: [queue, prompt, decode_bucket..., P..., D..., per-instance blocks...]
        self.p_d = 2 + layout.n_decode_buckets
        self.p_end = self.p_d + m * layout.n_prompt_buckets
        self.tail = self.p_end + m * layout.n_decode_buckets
        self.gaps = self.tail + _N_TAIL_BLOCKS * m
        self.eta_at = layout.block_slice("minmin_eta").start
        # log1p(cap) per entry of a log-scaled block; the other entries keep their value
        den = np.ones(layout.size, dtype=np.float64)
        raw = np.zeros(layout.size, dtype=bool)
        den[0] = math.log1p(layout.queue_cap)
        den[1] = math.log1p(layout.prompt_scale_tokens)
        raw[2 : self.p_d] = True
        den[self.p_d : self.tail] = math.log1p(layout.count_cap)
        caps = {
            "local_queue": layout.count_cap,
            "prefill_pending": layout.tokens_cap,
            "minmin_eta": layout.eta_cap_s,
            "impact_cost": layout.impact_cap,
            "minmin_gap": layout.eta_cap_s,
            "total_latency_gap": layout.eta_cap_s,
        }
        for block in _PER_INSTANCE_BLOCKS:
            where = layout.block_slice(block)
            if block in caps:
                den[where] = math.log1p(caps[block])
            else:
                raw[where] = True
        self.den = den
        self.raw_mask = raw


@dataclass(frozen=True, slots=True)
class ObservationEncoder:
    """Encodes decisions of one cluster (latency-derived terms computed once).

    Everything that depends only on the layout and the cluster (latency coefficients,
    the ``speed`` block, the impact gradients, the log-scale denominators) is computed
    at construction; ``speed`` and ``impact_cost`` are read-only. Clusters of up to
    :data:`SCALAR_MAX_INSTANCES` instances are priced with per-instance Python
    arithmetic that performs the same floating-point operations as
    :func:`~routeplay.replay.routers._paper.estimate_completion_s` and
    :func:`instance_impact` (bit-identical, tested); larger ones call those functions.

    Args:
        layout: shape and scales.
        cluster: the cluster whose latency models price the request (its instance
            count must equal ``layout.n_instances``).
        impact_config: the workload-impact estimator's parameters.

    Raises:
        ValueError: when the cluster's instance count differs from the layout's.

    Example:
        >>> from routeplay.replay import make_cluster_state, make_uniform_cluster
        >>> layout = ObservationLayout(n_instances=2, n_prompt_buckets=4, n_decode_buckets=5)
        >>> enc = ObservationEncoder(layout, make_uniform_cluster(2))
        >>> obs = enc(RequestView(0, 0.0, 100), make_cluster_state(2, n_queued=[3, 0]))
        >>> obs.shape, round(float(obs[layout.block_slice("local_queue")][0]), 6)
        ((45,), 0.125)
    """

    layout: ObservationLayout
    cluster: ClusterConfig
    impact_config: ImpactConfig = field(default_factory=ImpactConfig)
    latency: ClusterLatency = field(init=False)
    speed: npt.NDArray[np.float64] = field(init=False)
    impact_cost: npt.NDArray[np.float64] = field(init=False)
    _c: _Constants = field(init=False, repr=False, compare=False)
    _mtl: MinTotalLatencyRouter = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.cluster.n_instances != self.layout.n_instances:
            raise ValueError(
                f"observation layout has n_instances = {self.layout.n_instances} but the "
                f"cluster has {self.cluster.n_instances}; expected them equal. Fix: build the "
                "layout for this cluster (default_layout(cluster)) or use the training cluster."
            )
        latency = ClusterLatency.from_cluster(self.cluster)
        speed = instance_speed_index(self.cluster)
        cost = impact_relative_cost(self.cluster, self.impact_config)
        speed.setflags(write=False)
        cost.setflags(write=False)
        object.__setattr__(self, "latency", latency)
        object.__setattr__(self, "speed", speed)
        object.__setattr__(self, "impact_cost", cost)
        object.__setattr__(
            self, "_c", _Constants(self.layout, latency, speed, cost, self.impact_config)
        )
        # min-total-latency's own scores (its rng is never drawn from)
        mtl = MinTotalLatencyRouter(default_output_tokens=self.layout.default_output_tokens)
        mtl.reset(self.cluster, np.random.default_rng(0))
        object.__setattr__(self, "_mtl", mtl)

    def predicted_output_tokens(self, request: RequestView) -> float:
        """The request's predicted output, else ``layout.default_output_tokens``."""
        pred = request.predicted_output_tokens
        return self.layout.default_output_tokens if pred is None else float(pred)

    def minmin_eta_s(self, request: RequestView, state: ClusterState) -> npt.NDArray[np.float64]:
        """Min-min's estimated time to completion (s, from now) on every instance."""
        eta = estimate_completion_s(
            self.latency, state, request.prompt_tokens, self.predicted_output_tokens(request)
        )
        return np.maximum(eta - state.now_s, 0.0)

    def impact(self, request: RequestView, state: ClusterState) -> ImpactEstimate:
        """The per-instance workload-impact estimate (see :func:`instance_impact`)."""
        return instance_impact(
            request,
            state,
            self.predicted_output_tokens(request),
            self.impact_cost,
            self.impact_config,
        )

    def __call__(self, request: RequestView, state: ClusterState) -> npt.NDArray[np.float32]:
        """Encode one decision (see :func:`encode_observation`)."""
        return self._encode(request, state, want_estimate=False)[0]

    def encode(
        self, request: RequestView, state: ClusterState
    ) -> tuple[npt.NDArray[np.float32], ImpactEstimate]:
        """Encode one decision; also return the impact estimate behind ``impact_cost``.

        The estimate equals :meth:`impact` of the same decision (callers that need both,
        such as the outcome tracker, reuse it instead of computing it again).

        Returns:
            ``(observation, impact estimate)``; the observation is a new array.
        """
        obs, estimate = self._encode(request, state, want_estimate=True)
        assert estimate is not None
        return obs, estimate

    def _encode(
        self, request: RequestView, state: ClusterState, *, want_estimate: bool
    ) -> tuple[npt.NDArray[np.float32], ImpactEstimate | None]:
        layout = self.layout
        _check_shape(layout, state)
        bucket = request.predicted_bucket
        if bucket is not None and not 0 <= bucket < layout.n_decode_buckets:
            raise ValueError(
                f"request {request.request_id} has predicted_bucket={bucket}; expected a "
                f"bucket in range({layout.n_decode_buckets}). Fix: use the predictor the "
                "layout was built for."
            )
        c = self._c
        x = np.empty(layout.size, dtype=np.float64)
        x[0] = state.router_queue_len
        x[1] = request.prompt_tokens
        x[2 : c.p_d] = 0.0
        if bucket is not None:
            x[2 + bucket] = 1.0
        x[c.p_d : c.p_end] = state.prompt_bucket_counts.reshape(-1)
        x[c.p_end : c.tail] = state.decode_bucket_counts.reshape(-1)
        estimate = None
        impact = self._scalar_tail(request, state, x) if c.scalar else None
        eta: list[float] | None = None
        if impact is None:
            estimate = self._vector_tail(request, state, x)
        else:
            r_p, r_d, r_mix, best, eta = impact
            if want_estimate:
                estimate = ImpactEstimate(
                    r_p=np.array(r_p, dtype=np.float64),
                    r_d=r_d,
                    r_mix=np.array(r_mix, dtype=np.float64),
                    best_instance=best,
                )
        self._gap_blocks(request, state, x, eta)
        # every log-scaled entry at once, min(log1p(max(x, 0)) / log1p(cap), 1), computed
        # in float64 and rounded to float32 on output; the other entries copied over
        scaled = np.log1p(np.maximum(x, 0.0))
        np.divide(scaled, c.den, out=scaled)
        obs = np.empty(layout.size, dtype=np.float32)
        np.minimum(scaled, 1.0, out=obs)
        np.copyto(obs, x, where=c.raw_mask)
        return obs, estimate

    def _gap_blocks(
        self,
        request: RequestView,
        state: ClusterState,
        x: npt.NDArray[np.float64],
        eta: list[float] | None,
    ) -> None:
        """``minmin_gap`` and ``total_latency_gap`` (before log scaling), after the tails.

        ``eta``: the scalar tail's min-min ``estimate - now`` (the very floats
        ``min-total-latency`` starts from, so it does not compute them again); None after
        the vector tail.
        """
        c = self._c
        m = c.m
        if eta is None:
            eta = x[c.eta_at : c.eta_at + m].tolist()
            scores = self._mtl._scores(request, state)
        else:
            scores = self._mtl._scores(request, state, eta)
        best = min(eta)
        low = min(scores)
        x[c.gaps : c.gaps + 2 * m] = [e - best for e in eta] + [v - low for v in scores]

    def _vector_tail(
        self, request: RequestView, state: ClusterState, x: npt.NDArray[np.float64]
    ) -> ImpactEstimate:
        """The per-instance blocks (before log scaling) with numpy over instances."""
        c = self._c
        max_seqs = np.maximum(np.asarray(state.max_running_seqs, dtype=np.float64), 1.0)
        free_seqs = max_seqs - np.asarray(state.n_running, dtype=np.float64)
        kv_cap = np.maximum(np.asarray(state.kv_capacity_tokens, dtype=np.float64), 1.0)
        wait = np.maximum(
            np.asarray(state.earliest_completion_s, dtype=np.float64) - state.now_s, 0
        )
        estimate = self.impact(request, state)
        x[c.tail : c.gaps] = np.concatenate(
            [
                np.asarray(state.n_queued, dtype=np.float64),
                np.clip(free_seqs / max_seqs, 0.0, 1.0),
                np.clip(1.0 - np.asarray(state.kv_used_tokens) / kv_cap, 0.0, 1.0),
                np.asarray(state.prefill_tokens_pending, dtype=np.float64),
                self.speed,
                wait / (wait + self.layout.time_scale_s),
                self.minmin_eta_s(request, state),
                1.0 - estimate.r_mix,
            ]
        )
        return estimate

    def _scalar_tail(
        self, request: RequestView, state: ClusterState, x: npt.NDArray[np.float64]
    ) -> tuple[list[float], npt.NDArray[np.float64], list[float], int, list[float]] | None:
        """The per-instance blocks (before log scaling) with per-instance Python floats.

        The same floating-point operations, in the same order, as :meth:`_vector_tail`
        (min-min's :func:`estimate_completion_s`, :func:`instance_impact`,
        ``ClusterLatency.iteration_s``); only ``tanh`` goes through numpy (numpy's
        result, not ``math.tanh``'s). Returns the impact terms ``(r_p, r_d, r_mix,
        best instance)`` and min-min's ``estimate - now`` per instance, or ``None``
        (nothing written) when the impact estimator would refuse the inputs:
        :meth:`_vector_tail` then raises its error.
        """
        c = self._c
        m = c.m
        tokens = state.tokens_in_system
        s_tok = tokens.tolist() if tokens.shape == (m,) else [0] * m
        p = float(request.prompt_tokens)
        d = float(self.predicted_output_tokens(request))
        if not (0.0 <= p < math.inf and 0.0 <= d < math.inf) or not all(
            0 <= v < math.inf for v in s_tok
        ):
            return None
        now = state.now_s
        n_queued = state.n_queued.tolist()
        n_running = state.n_running.tolist()
        max_seqs = np.asarray(state.max_running_seqs).tolist()
        kv_used = state.kv_used_tokens.tolist()
        kv_cap = np.asarray(state.kv_capacity_tokens).tolist()
        pending = state.prefill_tokens_pending.tolist()
        earliest = state.earliest_completion_s.tolist()
        # impact estimate (estimate_impact's _rewards, per instance)
        pp = p * p
        p_imp = pp if c.prompt_power == 2 else p
        p_plus_d = p + d
        eps_s, scale = c.eps_s, c.decode_scale_s
        r_p: list[float] = []
        r_d_arg: list[float] = []
        for g1, g2, s in zip(c.g1c, c.g2c, s_tok, strict=True):
            t_p = g1 * (p_imp + s)
            r_p.append(1.0 if t_p <= eps_s else 1.0 - t_p / eps_s)
            r_d_arg.append(g2 * (p_plus_d - s) / scale)
        r_d = np.tanh(r_d_arg)
        alpha, beta = c.alpha, c.one_minus_alpha
        r_mix = [alpha * a + beta * b for a, b in zip(r_p, r_d.tolist(), strict=True)]
        best, top = 0, r_mix[0]
        nan = top != top
        for i in range(1, m):
            v = r_mix[i]
            if v > top:
                best, top = i, v
            elif v != v:
                nan = True
        if nan:  # argmax's rule: the first NaN
            best = int(np.argmax(r_mix))
        # capacity, kv_free, earliest_completion and min-min's estimate_completion_s
        k = max(d - 1.0, 0.0)
        p_flag = 1.0 if p > 0 else 0.0
        time_scale = self.layout.time_scale_s
        capacity: list[float] = []
        kv_free: list[float] = []
        wait_share: list[float] = []
        eta: list[float] = []
        # (ints from the snapshot enter float arithmetic exactly as numpy's int64 ->
        # float64 conversion; only a product of two of them needs float() first)
        for i in range(m):
            c0, c1, c2, c3, c4, c5, decode_base = c.coefs[i]
            n_run = n_running[i]
            n_q = n_queued[i]
            ctx = kv_used[i]
            seqs = float(max_seqs[i])
            if 1.0 > seqs:
                seqs = 1.0
            v = (seqs - n_run) / seqs
            capacity.append(0.0 if v < 0.0 else (1.0 if v > 1.0 else v))
            cap = float(kv_cap[i])
            if 1.0 > cap:
                cap = 1.0
            v = 1.0 - ctx / cap
            kv_free.append(0.0 if v < 0.0 else (1.0 if v > 1.0 else v))
            wait = earliest[i] - now
            if 0.0 > wait:
                wait = 0.0
            wait_share.append(wait / (wait + time_scale))
            slot_wait = wait if n_run + n_q >= max_seqs[i] else 0.0
            pend = float(pending[i])
            backlog = 0.0
            if pend > 0:
                queued = float(n_q)
                if 1.0 > queued:
                    queued = 1.0
                backlog = (
                    c0 + c1 * 1.0 + c2 * pend + c3 * (pend * pend / queued) + c4 * n_run + c5 * ctx
                )
            prefill = 0.0
            if not (p <= 0 and n_run <= 0):
                prefill = c0 + c1 * p_flag + c2 * p + c3 * pp + c4 * n_run + c5 * ctx
            n_dec = n_run + 1.0
            first_decode = 0.0 if n_dec <= 0 else decode_base + c4 * n_dec + c5 * (ctx + p + 1.0)
            decode = k * first_decode + c5 * k * (k - 1.0) / 2.0
            eta.append(now + slot_wait + backlog + prefill + decode - now)
        x[c.tail : c.gaps] = (
            n_queued
            + capacity
            + kv_free
            + pending
            + c.speed
            + wait_share
            + eta
            + [1.0 - v for v in r_mix]
        )
        return r_p, r_d, r_mix, best, eta


def _check_shape(layout: ObservationLayout, state: ClusterState) -> None:
    expected = (
        (layout.n_instances, layout.n_prompt_buckets),
        (layout.n_instances, layout.n_decode_buckets),
    )
    got = (state.prompt_bucket_counts.shape, state.decode_bucket_counts.shape)
    if got != expected:
        raise ValueError(
            f"cluster state has prompt/decode bucket-count shapes {got}, but the observation "
            f"layout expects {expected}. Fix: build the layout with "
            "ObservationLayout.for_state(state), or replay with the cluster and bucket "
            "edges the policy was trained on."
        )


def encode_observation(
    request: RequestView,
    state: ClusterState,
    layout: ObservationLayout | None = None,
    *,
    cluster: ClusterConfig,
) -> npt.NDArray[np.float32]:
    """Encode one routing decision's inputs as a float32 vector in [0, 1].

    A one-shot :class:`ObservationEncoder`; loops over many decisions should build the
    encoder once.

    Args:
        request: the request being routed (its true output length is never read).
        state: the cluster snapshot the router sees.
        layout: shape and scales; inferred from ``state`` when omitted.
        cluster: the cluster (its instances' latency models price the request).

    Returns:
        A vector of length ``layout.size`` (layout in the module docstring).

    Raises:
        ValueError: when ``state`` or ``cluster`` does not have the layout's shape.

    Example:
        >>> import numpy as np
        >>> from routeplay.replay import make_uniform_cluster
        >>> from routeplay.replay import ClusterState, RequestView
        >>> z = np.zeros(2, dtype=np.int64)
        >>> state = ClusterState(now_s=0.0, router_queue_len=3, n_queued=z, n_running=z,
        ...     prefill_tokens_pending=z, decode_tokens_done=z,
        ...     predicted_decode_tokens_left=np.zeros(2), kv_used_tokens=z,
        ...     kv_capacity_tokens=np.array([100, 100]), max_running_seqs=np.array([4, 4]),
        ...     prompt_bucket_counts=np.zeros((2, 2), dtype=np.int64),
        ...     decode_bucket_counts=np.array([[1, 0, 0], [0, 0, 2]]),
        ...     earliest_completion_s=np.array([0.0, 10.0]))
        >>> obs = encode_observation(RequestView(0, 0.0, 100, predicted_bucket=1), state,
        ...                          cluster=make_uniform_cluster(2))
        >>> obs.shape, obs.dtype.name
        ((35,), 'float32')
        >>> layout = ObservationLayout.for_state(state)
        >>> obs[2:5].tolist(), obs[layout.block_slice("earliest_completion")].tolist()
        ([0.0, 1.0, 0.0], [0.0, 0.5])
    """
    if layout is None:
        layout = ObservationLayout.for_state(state)
    return ObservationEncoder(layout, cluster)(request, state)
