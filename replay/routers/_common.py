"""Helpers shared by the routers: a base class, latency coefficients, a prefix index.

Nothing here is public; the routers re-export what users need.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._types import ClusterConfig, ClusterState, OracleRequestView, RequestView, StateColumns

__all__ = [
    "ClusterLatency",
    "InstanceLatency",
    "PrefixBlockIndex",
    "RouterBase",
    "argmax_list",
    "argmin_list",
    "check_non_negative",
    "check_positive",
    "decode_tokens_left_list",
    "np_maximum",
    "np_minimum",
    "request_block_keys",
    "require_oracle_view",
    "queue_and_prefill_terms",
]


def check_positive(owner: str, name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite number > 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{owner}: {name} = {value!r}; expected a finite number > 0.")
    if value <= 0:
        raise ValueError(f"{owner}: {name} = {value!r}; expected a finite number > 0.")


def check_non_negative(owner: str, name: str, value: float) -> None:
    """Raise ValueError unless ``value`` is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ValueError(f"{owner}: {name} = {value!r}; expected a finite number >= 0.")
    if value < 0:
        raise ValueError(f"{owner}: {name} = {value!r}; expected a finite number >= 0.")


def require_oracle_view(router_name: str, request: RequestView) -> OracleRequestView:
    """Return ``request`` as an :class:`OracleRequestView` or raise a TypeError that explains."""
    if not isinstance(request, OracleRequestView):
        raise TypeError(
            f"router {router_name!r} is an oracle router (oracle=True) and needs an "
            f"OracleRequestView carrying the true output length; got "
            f"{type(request).__name__} for request {request.request_id}. Fix: replay it "
            "through the engine (which gives oracle routers OracleRequestView), or use the "
            "predicted variant."
        )
    return request


def argmin_list(values: Sequence[float]) -> int:
    """Index of the smallest of ``values`` by ``np.argmin``'s rules, without numpy.

    The first minimum wins ties; a NaN counts as the minimum (the first NaN wins), as in
    numpy. On the 2-8 values of a cluster a Python loop is several times cheaper than
    building an array.

    Example:
        >>> argmin_list([3.0, 1.0, 1.0]), argmin_list([2.0, float("nan"), 0.0])
        (1, 1)
    """
    best = values[0]
    if best != best:
        return 0
    k = 0
    for i in range(1, len(values)):
        v = values[i]
        if v < best:
            best = v
            k = i
        elif v != v:
            return i
    return k


def argmax_list(values: Sequence[float]) -> int:
    """Index of the largest of ``values`` by ``np.argmax``'s rules (first maximum, first NaN).

    Example:
        >>> argmax_list([1.0, 3.0, 3.0]), argmax_list([float("nan"), 5.0])
        (1, 0)
    """
    # v > best exactly when -v < -best, and NaN stays NaN: the same first index
    return argmin_list([-v for v in values])


def np_maximum(x: float, y: float) -> float:
    """``np.maximum(x, y)`` on two floats, bit for bit: NaN propagates, ties return ``y``.

    (Python's ``max`` returns the *first* of equal values, which differs from numpy
    for ``-0.0`` and ``0.0``; and it drops a NaN in second place.)

    Example:
        >>> np_maximum(-0.0, 0.0), np_maximum(0.0, -0.0), np_maximum(float("nan"), 1.0)
        (0.0, -0.0, nan)
    """
    return x if x > y or x != x else y


def np_minimum(x: float, y: float) -> float:
    """``np.minimum(x, y)`` on two floats, bit for bit: NaN propagates, ties return ``y``.

    Example:
        >>> np_minimum(1.0, 2.0), np_minimum(0.0, -0.0), np_minimum(1.0, float("nan"))
        (1.0, -0.0, nan)
    """
    return x if x < y or x != x else y


def _require_reset(router_name: str, n_instances: int | None, state: ClusterState) -> int:
    if n_instances is None:
        raise RuntimeError(
            f"router {router_name!r}: route() was called before reset(cluster, rng). "
            "Fix: call reset at the start of every replay."
        )
    if state.n_instances != n_instances:
        raise ValueError(
            f"router {router_name!r} was reset for {n_instances} instances but the state has "
            f"{state.n_instances}. Fix: call reset with the cluster being replayed."
        )
    return n_instances


class RouterBase:
    """Common plumbing: ``name``/``oracle`` attributes, ``reset`` bookkeeping, a repr.

    Subclasses set the class attributes ``name`` and ``oracle``, call
    ``super().reset(cluster, rng)`` first in their own ``reset``, and implement ``route``.
    """

    name: str = "base"
    oracle: bool = False

    def __init__(self) -> None:
        self._n_instances: int | None = None
        self._rng: np.random.Generator = np.random.default_rng(np.random.SeedSequence(0))
        # latency models of the cluster last read (by routers that score with them)
        self._latency: ClusterLatency | None = None
        self._rows: tuple[InstanceLatency, ...] = ()
        self._cluster: ClusterConfig | None = None

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Prepare for a new replay on ``cluster`` with the replay's dedicated generator."""
        if not isinstance(rng, np.random.Generator):
            raise TypeError(
                f"router {self.name!r}: reset() needs a numpy Generator, got "
                f"{type(rng).__name__}. Fix: pass np.random.default_rng(seed)."
            )
        self._n_instances = cluster.n_instances
        self._rng = rng

    def _read_latency(self, cluster: ClusterConfig) -> bool:
        """Read every instance's latency model into ``_latency`` and ``_rows``.

        For routers that score with the latency models, from their ``reset``. Returns
        False, doing nothing, when ``cluster`` is the object read last: a frozen config,
        its coefficients cannot have changed (the lookahead resets its base router at
        every rollout).
        """
        if cluster is self._cluster:
            return False
        self._latency = ClusterLatency.from_cluster(cluster)
        self._rows = self._latency.instances()
        self._cluster = cluster
        return True

    def _m(self, state: ClusterState) -> int:
        m = self._n_instances
        if m is None or state.n_instances != m:
            return _require_reset(self.name, m, state)  # raises, saying why
        return m

    def route(self, request: RequestView, state: ClusterState) -> int:  # pragma: no cover
        """Return an instance index or WAIT."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


#: Output tokens assumed per request by routers that need a prediction when the
#: replay has no length predictor (the request then carries no prediction).
DEFAULT_OUTPUT_TOKENS = 128.0


def decode_tokens_left(
    state: ClusterState, request: RequestView, default_output_tokens: float
) -> npt.NDArray[np.float64]:
    """Predicted output tokens still to generate per instance.

    With a length predictor in the replay (``request.predicted_output_tokens`` is set)
    this is ``state.predicted_decode_tokens_left``. Without one the engine reports 0
    for every instance, which would make token-based routers send everything to
    instance 0; every queued or running request then counts ``default_output_tokens``
    instead (the router degrades to join-the-shortest-queue, never to a constant).

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> s = make_cluster_state(n_queued=[1, 0], n_running=[2, 1],
        ...                        predicted_decode_tokens_left=[0.0, 0.0])
        >>> decode_tokens_left(s, RequestView(0, 0.0, 5), 100.0).tolist()
        [300.0, 100.0]
    """
    if request.predicted_output_tokens is not None:
        return np.asarray(state.predicted_decode_tokens_left, dtype=np.float64)
    return (state.n_queued + state.n_running).astype(np.float64) * default_output_tokens


def outstanding_list(state: ClusterState) -> list[int]:
    """Queued + running requests per instance as Python ints (``state.n_outstanding``).

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> outstanding_list(make_cluster_state(n_queued=[1, 0], n_running=[2, 1]))
        [3, 1]
    """
    s = state.columns()
    return [q + r for q, r in zip(s.n_queued, s.n_running, strict=True)]


def decode_tokens_left_list(
    state: ClusterState, request: RequestView, default_output_tokens: float
) -> list[float]:
    """:func:`decode_tokens_left` as a list of Python floats (the same values, bit for bit).

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> s = make_cluster_state(n_queued=[1, 0], n_running=[2, 1])
        >>> decode_tokens_left_list(s, RequestView(0, 0.0, 5), 100.0)
        [300.0, 100.0]
    """
    if request.predicted_output_tokens is not None:
        left: list[float] = state.predicted_decode_tokens_left.tolist()
        return left
    return [float(n) * default_output_tokens for n in outstanding_list(state)]


class PredictedLengthRouter(RouterBase):
    """A router that reads predicted output lengths.

    Without a predictor each outstanding request counts ``default_output_tokens`` (see
    :func:`decode_tokens_left`).
    """

    def __init__(self, *, default_output_tokens: float = DEFAULT_OUTPUT_TOKENS) -> None:
        super().__init__()
        self.default_output_tokens = float(default_output_tokens)


class InstanceLatency(NamedTuple):
    """One instance's latency coefficients as Python floats, for routers' scalar fast paths.

    :meth:`ClusterLatency.iteration_s` adds its six terms left to right, starting with
    ``intercept_s + prefill_batch_s * (prefill_tokens > 0)``. ``with_prefill_s`` and
    ``no_prefill_s`` are that first partial sum for an iteration with and without
    prefill tokens, and ``decode_only_s`` the partial sum of a decode-only iteration
    (no prefill tokens) before its decode terms. Scalar code that continues those sums
    in the same order gets exactly the numpy result, bit for bit
    (:meth:`iteration_s`); routers build these once per ``reset``
    (:meth:`ClusterLatency.instances`).
    """

    intercept_s: float
    prefill_batch_s: float
    prefill_s_per_token: float
    prefill_s_per_token2: float
    decode_s_per_seq: float
    decode_s_per_context_token: float
    with_prefill_s: float
    no_prefill_s: float
    decode_only_s: float

    def iteration_s(
        self,
        prefill_tokens: float,
        prefill_sq_tokens: float,
        n_decode_seqs: float,
        decode_context_tokens: float,
    ) -> float:
        """This instance's entry of :meth:`ClusterLatency.iteration_s`, bit for bit."""
        if prefill_tokens <= 0 and n_decode_seqs <= 0:
            return 0.0
        base = self.with_prefill_s if prefill_tokens > 0 else self.no_prefill_s
        return (
            base
            + self.prefill_s_per_token * prefill_tokens
            + self.prefill_s_per_token2 * prefill_sq_tokens
            + self.decode_s_per_seq * n_decode_seqs
            + self.decode_s_per_context_token * decode_context_tokens
        )


@dataclass(frozen=True, slots=True)
class ClusterLatency:
    """Per-instance latency-model coefficients as arrays, so routers price all instances at once.

    Example:
        >>> from routeplay.estimator import LinearLatencyModel
        >>> from routeplay.replay import ClusterConfig, InstanceConfig
        >>> fast = LinearLatencyModel(intercept_s=0.01, prefill_s_per_token=1e-4,
        ...     prefill_s_per_token2=0.0, decode_s_per_seq=1e-3, decode_s_per_context_token=0.0)
        >>> cl = ClusterConfig(instances=(InstanceConfig(name="a", latency=fast),))
        >>> lat = ClusterLatency.from_cluster(cl)
        >>> lat.decode_iteration_s(np.array([2.0]), np.array([0.0])).round(6).tolist()
        [0.012]
    """

    intercept_s: npt.NDArray[np.float64]
    prefill_batch_s: npt.NDArray[np.float64]
    prefill_s_per_token: npt.NDArray[np.float64]
    prefill_s_per_token2: npt.NDArray[np.float64]
    decode_s_per_seq: npt.NDArray[np.float64]
    decode_s_per_context_token: npt.NDArray[np.float64]

    @classmethod
    def from_cluster(cls, cluster: ClusterConfig) -> ClusterLatency:
        """Collect the coefficients of every instance's latency model."""
        lat = [inst.latency for inst in cluster.instances]

        def col(attr: str) -> npt.NDArray[np.float64]:
            return np.array([getattr(m, attr) for m in lat], dtype=np.float64)

        return cls(
            intercept_s=col("intercept_s"),
            prefill_batch_s=col("prefill_batch_s"),
            prefill_s_per_token=col("prefill_s_per_token"),
            prefill_s_per_token2=col("prefill_s_per_token2"),
            decode_s_per_seq=col("decode_s_per_seq"),
            decode_s_per_context_token=col("decode_s_per_context_token"),
        )

    def iteration_s(
        self,
        prefill_tokens: npt.NDArray[np.float64],
        prefill_sq_tokens: npt.NDArray[np.float64],
        n_decode_seqs: npt.NDArray[np.float64],
        decode_context_tokens: npt.NDArray[np.float64],
    ) -> npt.NDArray[np.float64]:
        """Iteration time on every instance (same formula as ``LinearLatencyModel``)."""
        t = (
            self.intercept_s
            + self.prefill_batch_s * (prefill_tokens > 0)
            + self.prefill_s_per_token * prefill_tokens
            + self.prefill_s_per_token2 * prefill_sq_tokens
            + self.decode_s_per_seq * n_decode_seqs
            + self.decode_s_per_context_token * decode_context_tokens
        )
        return np.where((prefill_tokens <= 0) & (n_decode_seqs <= 0), 0.0, t)

    def decode_iteration_s(
        self, n_seqs: npt.NDArray[np.float64], context_tokens: npt.NDArray[np.float64]
    ) -> npt.NDArray[np.float64]:
        """Decode-only iteration time on every instance."""
        zero = np.zeros_like(n_seqs, dtype=np.float64)
        return self.iteration_s(zero, zero, n_seqs, context_tokens)

    def instances(self) -> tuple[InstanceLatency, ...]:
        """Every instance's coefficients as an :class:`InstanceLatency` of Python floats.

        Example:
            >>> from routeplay.replay import make_uniform_cluster
            >>> lat = ClusterLatency.from_cluster(make_uniform_cluster(2))
            >>> one = lat.instances()[1]
            >>> x = lat.iteration_s(*(np.array([v, v]) for v in (300.0, 9e4, 3.0, 800.0)))
            >>> one.iteration_s(300.0, 9e4, 3.0, 800.0) == float(x[1])
            True
        """
        rows: list[InstanceLatency] = []
        for k in range(self.intercept_s.shape[0]):
            c0 = float(self.intercept_s[k])
            pb = float(self.prefill_batch_s[k])
            cp = float(self.prefill_s_per_token[k])
            cp2 = float(self.prefill_s_per_token2[k])
            no_prefill = c0 + pb * 0.0  # the numpy sum multiplies by the bool as 0.0 / 1.0
            rows.append(
                InstanceLatency(
                    intercept_s=c0,
                    prefill_batch_s=pb,
                    prefill_s_per_token=cp,
                    prefill_s_per_token2=cp2,
                    decode_s_per_seq=float(self.decode_s_per_seq[k]),
                    decode_s_per_context_token=float(self.decode_s_per_context_token[k]),
                    with_prefill_s=c0 + pb * 1.0,
                    no_prefill_s=no_prefill,
                    decode_only_s=no_prefill + cp * 0.0 + cp2 * 0.0,
                )
            )
        return tuple(rows)


class PrefixBlockIndex:
    """An approximate, bounded index of the prefix blocks a router sent to each instance.

    Production routers that cannot see the engines' caches (llm-d's approximate
    ``prefix-cache-scorer``, SGLang's cache-aware radix trees, Dynamo's KV router
    without KV events) remember which prompt blocks they routed where. This index
    keeps, per instance, an LRU of block keys bounded by ``capacity_blocks``, plus a
    reverse map from block key to a bit mask of the instances holding it, so a match
    costs one dict lookup per block of the request (not per past request).

    ``match`` returns, per instance, the number of *leading* blocks of the request that
    the instance holds (a prefix match stops at the first missing block).

    Example:
        >>> idx = PrefixBlockIndex(n_instances=2, capacity_blocks=3)
        >>> idx.insert(1, [10, 11, 12])
        >>> idx.match([10, 11, 99]).tolist()
        [0, 2]
        >>> idx.insert(1, [13])          # evicts the least recently used block, 10
        >>> idx.match([10, 11]).tolist(), idx.size_blocks().tolist()
        ([0, 0], [0, 3])
    """

    def __init__(self, *, n_instances: int, capacity_blocks: int | Sequence[int]) -> None:
        caps = (
            [int(capacity_blocks)] * n_instances
            if isinstance(capacity_blocks, (int, np.integer))
            else [int(c) for c in capacity_blocks]
        )
        if len(caps) != n_instances or any(c < 1 for c in caps):
            raise ValueError(
                f"PrefixBlockIndex: capacity_blocks = {capacity_blocks!r}; expected a positive "
                f"block count (or one per instance, {n_instances} in all)."
            )
        self._caps = caps
        self._lru: list[OrderedDict[Hashable, None]] = [OrderedDict() for _ in range(n_instances)]
        self._owners: dict[Hashable, int] = {}
        self._n = n_instances

    def match(self, blocks: Sequence[Hashable]) -> npt.NDArray[np.int64]:
        """Leading blocks of ``blocks`` held by each instance."""
        return np.array(self.match_list(blocks), dtype=np.int64)

    def match_list(self, blocks: Sequence[Hashable]) -> list[int]:
        """:meth:`match` as a list of Python ints (what the routers use)."""
        matched = [len(blocks)] * self._n
        alive = (1 << self._n) - 1
        for k, block in enumerate(blocks):
            bits = self._owners.get(block, 0) & alive
            dead = alive & ~bits
            while dead:  # instances whose match ends at block k
                low = dead & -dead
                matched[low.bit_length() - 1] = k
                dead ^= low
            alive = bits
            if not alive:
                break
        return matched

    def insert(self, instance: int, blocks: Sequence[Hashable]) -> None:
        """Record that ``blocks`` were sent to ``instance`` (most recently used last)."""
        lru = self._lru[instance]
        bit = 1 << instance
        for block in blocks:
            if block in lru:
                lru.move_to_end(block)
                continue
            lru[block] = None
            self._owners[block] = self._owners.get(block, 0) | bit
        cap = self._caps[instance]
        while len(lru) > cap:
            old, _ = lru.popitem(last=False)
            left = self._owners[old] & ~bit
            if left:
                self._owners[old] = left
            else:
                del self._owners[old]

    def size_blocks(self) -> npt.NDArray[np.int64]:
        """Blocks currently indexed per instance."""
        return np.array(self.size_list(), dtype=np.int64)

    def size_list(self) -> list[int]:
        """:meth:`size_blocks` as a list of Python ints."""
        return [len(lru) for lru in self._lru]


def request_block_keys(
    request: RequestView, prefix_block_tokens: int, max_blocks: int
) -> list[Hashable]:
    """The block keys of a request, at most ``max_blocks`` of them.

    Requests with ``prefix_blocks`` use them. A request without them (a trace with no
    prefix hashes) still occupies cache space on the instance it goes to, exactly as
    its unique text would in a production router's index: it gets
    ``ceil(prompt_tokens / prefix_block_tokens)`` keys unique to the request, which
    can never match another request but do fill (and evict from) the LRU.

    Example:
        >>> from routeplay.replay import RequestView
        >>> request_block_keys(RequestView(1, 0.0, 100, prefix_blocks=(7, 8)), 64, 256)
        [7, 8]
        >>> request_block_keys(RequestView(5, 0.0, 100), 64, 256)
        [('request', 5, 0), ('request', 5, 1)]
    """
    if request.prefix_blocks:
        return list(request.prefix_blocks[:max_blocks])
    n_blocks = min(-(-int(request.prompt_tokens) // prefix_block_tokens), max_blocks)
    return [("request", int(request.request_id), k) for k in range(n_blocks)]


def queue_and_prefill_terms(
    rows: Sequence[InstanceLatency],
    state: ClusterState,
    prompt_tokens: float,
    columns: StateColumns | None = None,
) -> list[tuple[InstanceLatency, float, float, float, float, float]]:
    """Per instance: ``(row, n_running, context, slot_wait, backlog, prefill)`` in floats.

    The terms min-min's completion estimate and AIBrix's expected latency share, with
    numpy's semantics on Python floats: ``slot_wait = max(earliest_completion_s - now,
    0)`` when every sequence slot is taken (else 0); ``backlog`` = one iteration
    prefilling ``prefill_tokens_pending`` with attention work ``pending**2 /
    max(n_queued, 1)`` beside the running decodes (0 without pending prompts);
    ``prefill`` = one iteration prefilling the request's ``prompt_tokens`` beside them.
    ``rows`` are :meth:`ClusterLatency.instances`. The counts come from
    :meth:`ClusterState.columns` (``columns``: the caller's, if it has them);
    ``earliest_completion_s`` is read only for an instance whose slots are all taken.

    Example:
        >>> from routeplay.replay import make_cluster_state, make_uniform_cluster
        >>> rows = ClusterLatency.from_cluster(make_uniform_cluster(1)).instances()
        >>> s = make_cluster_state(n_running=[2], kv_used_tokens=[300])
        >>> [round(x, 6) for x in queue_and_prefill_terms(rows, s, 100.0)[0][1:]]
        [2.0, 300.0, 0.0, 0.0, 0.102]
    """
    s = state.columns() if columns is None else columns
    now = s.now_s
    p = prompt_tokens
    pp = p * p
    out: list[tuple[InstanceLatency, float, float, float, float, float]] = []
    for i, (row, n_run_i, n_q_i, max_seqs, pend_i, kv_i) in enumerate(
        zip(
            rows,
            s.n_running,
            s.n_queued,
            s.max_running_seqs,
            s.prefill_tokens_pending,
            s.kv_used_tokens,
            strict=True,
        )
    ):
        _c0, _pb, cp, cp2, cd, ckv, with_prefill, no_prefill, _decode_only = row
        n_run = float(n_run_i)
        ctx = float(kv_i)
        if n_run_i + n_q_i >= max_seqs:
            earliest: float = state.earliest_completion_s.item(i)
            wait = earliest - now
            slot_wait = wait if wait > 0.0 or wait != wait else 0.0  # np.maximum(wait, 0.0)
        else:
            slot_wait = 0.0
        pending = float(pend_i)
        if pending > 0:
            n_q = float(n_q_i)
            sq = pending * pending / (n_q if n_q > 1.0 else 1.0)  # np.maximum(n_q, 1.0)
            backlog = with_prefill + cp * pending + cp2 * sq + cd * n_run + ckv * ctx
        else:
            backlog = 0.0
        if p <= 0 and n_run <= 0:
            prefill = 0.0
        else:
            first = with_prefill if p > 0 else no_prefill
            prefill = first + cp * p + cp2 * pp + cd * n_run + ckv * ctx
        out.append((row, n_run, ctx, slot_wait, backlog, prefill))
    return out
