"""Routers of production LLM serving stacks, rebuilt from their documented scoring rules.

llm-d's default weighted scorer, SGLang's cache-aware router, NVIDIA Dynamo's KV
router cost, AIBrix least-latency, and session affinity. The prefix-aware ones keep
their own bounded, approximate index of the prefix blocks they routed to each
instance (:class:`PrefixBlockIndex`), as those routers do when they do not receive
KV-cache events from the engines.
"""

# Why this module is long: the production routers (llm-d, SGLang, Dynamo, AIBrix) share
# the prefix-block index and scoring helpers.

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from typing import Any

import numpy as np
import numpy.typing as npt

from .._types import WAIT, ClusterConfig, ClusterState, RequestView, Router
from ._common import (
    PrefixBlockIndex,
    RouterBase,
    argmax_list,
    argmin_list,
    check_non_negative,
    check_positive,
    outstanding_list,
    queue_and_prefill_terms,
    request_block_keys,
)
from ._registry import make_router

__all__ = [
    "AIBrixLeastLatencyRouter",
    "DynamoKVRouter",
    "LLMDWeightedScorerRouter",
    "SGLangCacheAwareRouter",
    "SessionAffinityRouter",
]


#: what the tie-break among equal trees gives the instances it leaves out (np.int64's max)
_INT64_MAX = int(np.iinfo(np.int64).max)


def _check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{owner}: {name} = {value!r}; expected an int >= {minimum}.")


def _auto_capacity(cluster: ClusterConfig, capacity_blocks: int | None) -> list[int]:
    """Per-instance index capacity: given, or what each instance's KV cache holds in blocks."""
    if capacity_blocks is not None:
        return [capacity_blocks] * cluster.n_instances
    return [
        max(1, inst.kv_capacity_tokens // max(inst.prefix_block_tokens, 1))
        for inst in cluster.instances
    ]


class _PrefixRouter(RouterBase):
    """Shared prefix-index plumbing of the cache-aware routers."""

    def __init__(self, *, capacity_blocks: int | None, max_blocks: int) -> None:
        super().__init__()
        owner = type(self).__name__
        if capacity_blocks is not None:
            _check_int(owner, "capacity_blocks", capacity_blocks, 1)
        _check_int(owner, "max_blocks", max_blocks, 1)
        self.capacity_blocks = capacity_blocks
        self.max_blocks = int(max_blocks)
        self._index = PrefixBlockIndex(n_instances=1, capacity_blocks=1)
        self._block_tokens: list[int] = [1]

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Empty the prefix index (one LRU per instance)."""
        super().reset(cluster, rng)
        self._index = PrefixBlockIndex(
            n_instances=cluster.n_instances,
            capacity_blocks=_auto_capacity(cluster, self.capacity_blocks),
        )
        self._block_tokens = [int(inst.prefix_block_tokens) for inst in cluster.instances]

    def _keys(self, request: RequestView) -> list[Any]:
        return request_block_keys(request, self._block_tokens[0], self.max_blocks)

    def _matched_tokens(self, request: RequestView, keys: list[Any]) -> list[float]:
        """Prompt tokens of ``request`` each instance holds by the index (0 without prefixes)."""
        if not request.prefix_blocks:
            return [0.0] * len(self._block_tokens)
        prompt = request.prompt_tokens
        return [
            float(min(n * block, prompt))
            for n, block in zip(self._index.match_list(keys), self._block_tokens, strict=True)
        ]


class LLMDWeightedScorerRouter(_PrefixRouter):
    """llm-d's default scheduling profile: queue 2 + KV-cache utilisation 2 + prefix cache 3.

    Each scorer maps every instance to [0, 1] as llm-d's plugins do, and the router
    picks the argmax of the weighted sum (ties: lowest index; llm-d's max-score
    picker breaks ties at random):

    * ``queue-scorer``: ``(max_q - q_i) / (max_q - min_q)`` over the waiting-queue
      sizes ``q = n_queued`` (1.0 for every instance when all are equal);
    * ``kv-cache-utilization-scorer``: ``1 - kv_used_tokens / kv_capacity_tokens``;
    * ``prefix-cache-scorer``: matched leading prefix blocks / the request's blocks
      (at most ``max_blocks``), looked up in the router's own approximate index
      (per-instance LRU of the blocks it routed there; after each decision the
      request's blocks are recorded on the chosen instance).

    Source: llm-d inference scheduler, ``pkg/epp/framework/plugins/scheduling/scorer/``
    (``queuedepth``, ``kvcacheutilization``, ``prefix`` READMEs) and its default
    profile (prefix 3, queue 2, KV 2; llm-d.ai "Intelligent Inference Scheduling").

    Args:
        queue_weight: weight of the queue scorer.
        kv_weight: weight of the KV-utilisation scorer.
        prefix_weight: weight of the prefix-cache scorer.
        capacity_blocks: index capacity per instance in blocks; ``None`` (default,
            llm-d's auto-tune) = the instance's ``kv_capacity_tokens //
            prefix_block_tokens``.
        max_blocks: most leading blocks of a prompt considered (llm-d's
            ``maxPrefixBlocksToMatch``, 256).

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(2)
        >>> r = LLMDWeightedScorerRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> s = make_cluster_state(n_queued=[0, 1])
        >>> r.route(RequestView(0, 0.0, 1024, prefix_blocks=(1, 2)), s)  # queue decides
        0
        >>> s = make_cluster_state(n_queued=[1, 0])  # 2*0 + 2*1 + 3*1 = 5 vs 2*1 + 2*1 = 4
        >>> r.route(RequestView(1, 0.0, 1024, prefix_blocks=(1, 2)), s)
        0
    """

    name = "llm-d"
    oracle = False

    def __init__(
        self,
        *,
        queue_weight: float = 2.0,
        kv_weight: float = 2.0,
        prefix_weight: float = 3.0,
        capacity_blocks: int | None = None,
        max_blocks: int = 256,
    ) -> None:
        super().__init__(capacity_blocks=capacity_blocks, max_blocks=max_blocks)
        for name, w in (
            ("queue_weight", queue_weight),
            ("kv_weight", kv_weight),
            ("prefix_weight", prefix_weight),
        ):
            check_non_negative("LLMDWeightedScorerRouter", name, w)
        self.queue_weight = float(queue_weight)
        self.kv_weight = float(kv_weight)
        self.prefix_weight = float(prefix_weight)

    def scores(self, request: RequestView, state: ClusterState) -> npt.NDArray[np.float64]:
        """Weighted total score of every instance for ``request`` (higher is better)."""
        return np.array(self._scores(request, state, self._keys(request)), dtype=np.float64)

    def _scores(self, request: RequestView, state: ClusterState, keys: list[Any]) -> list[float]:
        cols = state.columns()
        q = [float(n) for n in cols.n_queued]
        q_max = max(q)
        spread = q_max - min(q)
        if request.prefix_blocks:
            n_keys = len(keys)
            prefix = [float(n) / float(n_keys) for n in self._index.match_list(keys)]
        else:
            prefix = [0.0] * len(q)
        w_queue, w_kv, w_prefix = self.queue_weight, self.kv_weight, self.prefix_weight
        out: list[float] = []
        for q_i, kv_used, kv_cap, prefix_i in zip(
            q, cols.kv_used_tokens, cols.kv_capacity_tokens, prefix, strict=True
        ):
            queue = 1.0 if spread == 0 else (q_max - q_i) / spread
            kv = 1.0 - float(kv_used) / float(kv_cap if kv_cap > 1 else 1)
            out.append(w_queue * queue + w_kv * kv + w_prefix * prefix_i)
        return out

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the best-scoring instance and record the request's blocks there."""
        self._m(state)
        keys = self._keys(request)
        choice = argmax_list(self._scores(request, state, keys))
        self._index.insert(choice, keys)
        return choice


class SGLangCacheAwareRouter(_PrefixRouter):
    """SGLang router's cache-aware policy with its default thresholds.

    Load of a worker = its outstanding requests (``n_queued + n_running``). The
    cluster is *imbalanced* when ``max_load - min_load > balance_abs_threshold`` and
    ``max_load > balance_rel_threshold * min_load``; then the request goes to the
    least-loaded worker. Otherwise the router looks the prompt up in its
    approximate per-worker prefix trees (here: per-instance LRU block indexes):
    match rate = matched prompt tokens / prompt tokens of the best-matching worker;
    if it exceeds ``cache_threshold`` the request goes to that worker, else to the
    worker with the smallest tree (fewest indexed blocks; among equal trees — e.g. all
    full on a long trace without prefix hashes — the least loaded). Ties: lowest index. The
    request's blocks are then inserted into the chosen worker's tree (also in the
    imbalanced case, as SGLang does).

    Source: SGLang router (``sgl-router``, policy ``cache_aware``; defaults
    cache_threshold 0.3, balance_abs_threshold 64, balance_rel_threshold 1.5 per the
    SGLang model-gateway docs "Load Balancing"/"Cache-Aware Routing").

    Args:
        cache_threshold: minimum prefix match rate to follow the cache, in [0, 1].
        balance_abs_threshold: absolute load gap (requests) for imbalance.
        balance_rel_threshold: relative load ratio for imbalance (>= 1).
        capacity_blocks: tree capacity per instance (``None``: KV capacity in
            blocks, standing in for SGLang's ``max_tree_size`` + periodic eviction).
        max_blocks: most leading blocks of a prompt considered.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(2)
        >>> r = SGLangCacheAwareRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> calm = make_cluster_state(n_running=[0, 5])
        >>> r.route(RequestView(0, 0.0, 1024, prefix_blocks=(7, 8)), calm)  # equal trees
        0
        >>> r.route(RequestView(1, 0.0, 1024, prefix_blocks=(9,)), calm)  # smallest tree
        1
        >>> r.route(RequestView(2, 0.0, 1024, prefix_blocks=(7, 8)), calm)  # cache hit
        0
        >>> busy = make_cluster_state(n_running=[100, 0])
        >>> r.route(RequestView(3, 0.0, 1024, prefix_blocks=(7, 8)), busy)  # imbalanced
        1
    """

    name = "sglang-cache-aware"
    oracle = False

    def __init__(
        self,
        *,
        cache_threshold: float = 0.3,
        balance_abs_threshold: float = 64,
        balance_rel_threshold: float = 1.5,
        capacity_blocks: int | None = None,
        max_blocks: int = 4096,
    ) -> None:
        super().__init__(capacity_blocks=capacity_blocks, max_blocks=max_blocks)
        check_non_negative("SGLangCacheAwareRouter", "cache_threshold", cache_threshold)
        if cache_threshold > 1:
            raise ValueError(
                f"SGLangCacheAwareRouter: cache_threshold = {cache_threshold!r}; expected a "
                "match rate in [0, 1] (default 0.3)."
            )
        check_non_negative("SGLangCacheAwareRouter", "balance_abs_threshold", balance_abs_threshold)
        check_positive("SGLangCacheAwareRouter", "balance_rel_threshold", balance_rel_threshold)
        self.cache_threshold = float(cache_threshold)
        self.balance_abs_threshold = float(balance_abs_threshold)
        self.balance_rel_threshold = float(balance_rel_threshold)

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the least-loaded, best-matching or smallest-tree worker (see class doc)."""
        self._m(state)
        load = outstanding_list(state)
        lo, hi = min(load), max(load)
        keys = self._keys(request)
        if hi - lo > self.balance_abs_threshold and hi > self.balance_rel_threshold * lo:
            choice = load.index(lo)  # the first least-loaded, as np.argmin
        else:
            matched = self._matched_tokens(request, keys)
            best = argmax_list(matched)
            rate = matched[best] / max(request.prompt_tokens, 1)
            if rate > self.cache_threshold:
                choice = best
            else:
                # smallest tree; among equal sizes (e.g. every tree full) the least loaded
                sizes = self._index.size_list()
                smallest = min(sizes)
                tied_load = [
                    n if s == smallest else _INT64_MAX for n, s in zip(load, sizes, strict=True)
                ]
                choice = tied_load.index(min(tied_load))
        self._index.insert(choice, keys)
        return choice


class DynamoKVRouter(_PrefixRouter):
    """NVIDIA Dynamo's KV router: min of ``overlap_score_weight * prefill_blocks + decode_blocks``.

    Per instance i, in KV blocks of ``kv_block_tokens``:

    * ``prefill_blocks_i = (prefill_tokens_pending_i + prompt - overlap_tokens_i) / block``
      — the prompt-side load already queued plus this request's uncached prompt;
      ``overlap_tokens_i`` = leading prefix blocks the router's own index says
      instance i holds (Dynamo's approximate mode, used when engines send no KV
      events) times ``prefix_block_tokens``, capped at the prompt;
    * ``decode_blocks_i = ceil(kv_used_tokens_i / block) + ceil(prompt / block)`` —
      the active blocks plus the blocks the request would add.

    With ``temperature = 0`` (Dynamo's default) the lowest cost wins (ties: lowest
    index); with ``temperature > 0`` an instance is sampled from
    ``softmax(-normalised_cost / temperature)`` using the reset generator, the
    cost being min-max normalised to [0, 1] first.

    Source: NVIDIA Dynamo docs, "KV Router" / "Routing Concepts" (cost formula,
    ``--kv-overlap-score-weight`` default 1.0, ``--router-temperature`` default 0).

    Args:
        overlap_score_weight: weight of the prefill term (Dynamo's default 1.0).
        temperature: softmax temperature (0 = deterministic argmin).
        capacity_blocks: index capacity per instance (``None``: its KV capacity).
        max_blocks: most leading prefix blocks of a prompt considered.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import ClusterConfig, InstanceConfig, RequestView
        >>> from routeplay.estimator import LinearLatencyModel
        >>> lat = LinearLatencyModel.from_throughput(1000.0)
        >>> cluster = ClusterConfig(instances=tuple(InstanceConfig(name=f"i{k}",
        ...     latency=lat, kv_block_tokens=16, prefix_block_tokens=64) for k in range(2)))
        >>> r = DynamoKVRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> s = make_cluster_state(kv_used_tokens=[160, 0])   # 10 active blocks vs 0
        >>> req = RequestView(0, 0.0, 640, prefix_blocks=tuple(range(10)))
        >>> r.costs(req, s).tolist()      # [40 + 10 + 40, 40 + 0 + 40]
        [90.0, 80.0]
        >>> r.route(req, s)
        1
        >>> r.costs(req, s).tolist()      # instance 1 now holds the 640-token prefix
        [90.0, 40.0]
    """

    name = "dynamo-kv"
    oracle = False

    def __init__(
        self,
        *,
        overlap_score_weight: float = 1.0,
        temperature: float = 0.0,
        capacity_blocks: int | None = None,
        max_blocks: int = 4096,
    ) -> None:
        super().__init__(capacity_blocks=capacity_blocks, max_blocks=max_blocks)
        check_non_negative("DynamoKVRouter", "overlap_score_weight", overlap_score_weight)
        check_non_negative("DynamoKVRouter", "temperature", temperature)
        self.overlap_score_weight = float(overlap_score_weight)
        self.temperature = float(temperature)
        self._kv_block: list[float] = [1.0]

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Empty the index and read each instance's KV block size."""
        super().reset(cluster, rng)
        self._kv_block = [float(inst.kv_block_tokens) for inst in cluster.instances]

    def costs(self, request: RequestView, state: ClusterState) -> npt.NDArray[np.float64]:
        """Dynamo's routing cost of every instance for ``request`` (lower is better)."""
        return np.array(self._costs(request, state, self._keys(request)), dtype=np.float64)

    def _costs(self, request: RequestView, state: ClusterState, keys: list[Any]) -> list[float]:
        p = float(request.prompt_tokens)
        weight = self.overlap_score_weight
        cols = state.columns()
        out: list[float] = []
        for block, pending, kv_used, overlap in zip(
            self._kv_block,
            cols.prefill_tokens_pending,
            cols.kv_used_tokens,
            self._matched_tokens(request, keys),
            strict=True,
        ):
            prefill_blocks = (float(pending) + p - overlap) / block
            # math.ceil of a finite float is exact as an int, and so back as a float
            decode_blocks = float(math.ceil(float(kv_used) / block)) + float(math.ceil(p / block))
            out.append(weight * prefill_blocks + decode_blocks)
        return out

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the lowest-cost instance (or a softmax sample) and index its blocks."""
        self._m(state)
        keys = self._keys(request)
        costs = self._costs(request, state, keys)
        if self.temperature > 0 and len(costs) > 1:
            cost = np.array(costs, dtype=np.float64)
            spread = cost.max() - cost.min()
            norm = (cost - cost.min()) / spread if spread > 0 else np.zeros_like(cost)
            logits = -norm / self.temperature
            prob = np.exp(logits - logits.max())
            choice = int(self._rng.choice(cost.size, p=prob / prob.sum()))
        else:
            choice = argmin_list(costs)
        self._index.insert(choice, keys)
        return choice


class AIBrixLeastLatencyRouter(RouterBase):
    """AIBrix ``least-latency``: lowest expected (queueing + prefill + decode) latency.

    AIBrix scores each pod by its mean queue time plus its mean prefill and decode
    times scaled to a *typical* request (the cluster-average prompt and generation
    lengths, 10 and 100 tokens when unknown), and routes to the minimum. The
    simulator has no per-pod latency histograms, so we estimate the same three terms
    from the snapshot and each instance's latency model:

    * queueing = slot wait (until ``earliest_completion_s`` if every sequence slot is
      taken) + one iteration prefilling the queued ``prefill_tokens_pending``;
    * prefill = the typical prompt's prefill iteration beside the running decodes;
    * decode = typical output tokens x the decode iteration with one more sequence.

    The typical request is the running mean of the prompt and predicted output
    lengths of the requests this router has seen (including the current one), 10 /
    100 tokens before any prediction, as AIBrix guesses. Because the score does not
    depend on the request's own size, it differs from ``min-min``. Ties: lowest index.

    Source: AIBrix ``pkg/plugins/gateway/algorithms/least_latency.go`` (router
    ``least-latency``) and the AIBrix router design doc (aibrix.readthedocs.io).

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(2)
        >>> r = AIBrixLeastLatencyRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> s = make_cluster_state(prefill_tokens_pending=[500, 0], n_queued=[1, 0])
        >>> r.route(RequestView(0, 0.0, 100, predicted_output_tokens=20.0), s)
        1
    """

    name = "aibrix-least-latency"
    oracle = False

    def __init__(self) -> None:
        super().__init__()
        self._n_seen = 0
        self._sum_prompt = 0.0
        self._n_pred = 0
        self._sum_output = 0.0

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Read the latency models and forget the running means."""
        super().reset(cluster, rng)
        self._read_latency(cluster)
        self._n_seen = 0
        self._sum_prompt = 0.0
        self._n_pred = 0
        self._sum_output = 0.0

    def expected_latency_s(
        self, state: ClusterState, prompt_tokens: float, output_tokens: float
    ) -> npt.NDArray[np.float64]:
        """Expected queueing + prefill + decode time of a (p, d) request on every instance.

        Per instance, with its latency model (:meth:`ClusterLatency.iteration_s`):
        ``slot_wait`` (``max(earliest_completion_s - now_s, 0)`` when every sequence
        slot is taken, else 0) + ``backlog`` (one iteration prefilling
        ``prefill_tokens_pending``, attention work ``pending**2 / max(n_queued, 1)``,
        beside the running decodes; 0 without pending prompts) + ``prefill`` (one
        iteration prefilling ``p`` beside the running decodes) + ``d`` x one decode
        iteration of ``n_running + 1`` sequences with context ``kv_used_tokens + p``.
        """
        return np.array(
            self._expected_latency(state, prompt_tokens, output_tokens), dtype=np.float64
        )

    def _expected_latency(
        self, state: ClusterState, prompt_tokens: float, output_tokens: float
    ) -> list[float]:
        if self._cluster is None:
            raise RuntimeError(
                f"router {self.name!r}: call reset(cluster, rng) before estimating latencies."
            )
        p = float(prompt_tokens)
        d = float(output_tokens)
        out: list[float] = []
        for row, n_run, ctx, slot_wait, backlog, prefill in queue_and_prefill_terms(
            self._rows, state, p
        ):
            decode_only, cd, ckv = row[8], row[4], row[5]
            n_dec = n_run + 1.0
            step = 0.0 if n_dec <= 0 else decode_only + cd * n_dec + ckv * (ctx + p)
            out.append(slot_wait + backlog + prefill + d * step)
        return out

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the instance with the lowest expected latency of a typical request."""
        self._m(state)
        self._n_seen += 1
        self._sum_prompt += request.prompt_tokens
        if request.predicted_output_tokens is not None:
            self._n_pred += 1
            self._sum_output += float(request.predicted_output_tokens)
        typical_p = self._sum_prompt / self._n_seen
        typical_d = self._sum_output / self._n_pred if self._n_pred else 100.0
        return argmin_list(self._expected_latency(state, typical_p, typical_d))


class SessionAffinityRouter(RouterBase):
    """Sticky sessions: every request of a session goes where the session's first one went.

    ``mode="sticky"`` (default): the first request of a session is routed by the
    ``fallback`` router (default ``least-connections``) and the choice is remembered
    (an LRU of at most ``max_sessions`` sessions, so memory stays bounded; an evicted
    session is placed afresh). ``mode="hash"``: a session goes to
    ``crc32(session_id) % m`` (a stable hash; never Python's salted ``hash()``), with
    no memory at all. Requests without ``session_id`` always use the fallback.

    Source: AIBrix ``session-affinity`` router (AIBrix router design doc); llm-d
    ``session-affinity-scorer``; seed 003's "session locality".

    Args:
        mode: ``"sticky"`` or ``"hash"``.
        fallback: registry name of the router for new sessions and session-less
            requests (not itself ``session-affinity``; must not be an oracle router).
        max_sessions: sessions remembered in sticky mode.
        **fallback_params: parameters of the fallback router.

    Example:
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> from routeplay.replay import make_uniform_cluster
        >>> cluster = make_uniform_cluster(3)
        >>> r = SessionAffinityRouter()
        >>> r.reset(cluster, np.random.default_rng(0))
        >>> first = RequestView(0, 0.0, 10, session_id="a")
        >>> r.route(first, make_cluster_state(n_running=[2, 0, 1]))
        1
        >>> again = RequestView(1, 0.0, 10, session_id="a")
        >>> r.route(again, make_cluster_state(n_running=[0, 9, 0]))
        1
    """

    name = "session-affinity"
    oracle = False
    MODES = ("sticky", "hash")

    def __init__(
        self,
        *,
        mode: str = "sticky",
        fallback: str = "least-connections",
        max_sessions: int = 100_000,
        **fallback_params: Any,
    ) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(
                f"SessionAffinityRouter: mode = {mode!r}; expected one of {list(self.MODES)}."
            )
        _check_int("SessionAffinityRouter", "max_sessions", max_sessions, 1)
        if fallback == self.name:
            raise ValueError(
                "SessionAffinityRouter: fallback = 'session-affinity' would recurse; expected "
                "another router name, e.g. 'least-connections'."
            )
        try:
            self._fallback: Router = make_router(fallback, **fallback_params)
        except ValueError as exc:
            raise ValueError(
                f"SessionAffinityRouter: its own parameters are mode, fallback and "
                f"max_sessions; the others {sorted(fallback_params)} go to the fallback "
                f"router {fallback!r}, which refused them: {exc}"
            ) from exc
        if self._fallback.oracle:
            raise ValueError(
                f"SessionAffinityRouter: fallback = {fallback!r} is an oracle router; expected "
                "a non-oracle router (session-affinity itself is not an oracle)."
            )
        self.mode = mode
        self.fallback = fallback
        self.max_sessions = int(max_sessions)
        self._sessions: OrderedDict[str, int] = OrderedDict()

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Forget all sessions and reset the fallback router with the same generator."""
        super().reset(cluster, rng)
        self._sessions = OrderedDict()
        self._fallback.reset(cluster, rng)

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return the session's instance, or the fallback's choice for a new session."""
        m = self._m(state)
        sid = request.session_id
        if sid is None:
            return self._fallback.route(request, state)
        if self.mode == "hash":
            return zlib.crc32(sid.encode("utf-8")) % m
        known = self._sessions.get(sid)
        if known is not None:
            self._sessions.move_to_end(sid)
            return known
        choice = self._fallback.route(request, state)
        if choice != WAIT:
            self._sessions[sid] = int(choice)
            if len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return choice
