"""Shared vocabulary of the replay layer: configs, the router protocol, and its views.

Routers never hold a reference to the simulator: at every decision they receive a
:class:`RequestView` (what is knowable about the request at routing time — never its
true output length) and a read-only :class:`ClusterState` snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, NamedTuple, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from routeplay.estimator._clock import get_clock
from routeplay.estimator._latency import LinearLatencyModel

from routeplay._checks import check_bool, check_int, check_number

__all__ = [
    "BATCHING_POLICIES",
    "BATCH_SCHEDULERS",
    "BatchScheduler",
    "WAIT",
    "BatchingPolicy",
    "ClusterConfig",
    "ClusterState",
    "InstanceConfig",
    "OracleRequestView",
    "RequestView",
    "Router",
    "RouterError",
    "Scheduler",
    "StateColumns",
    "episode_seed",
]

#: A router returns WAIT to hold the request at the router until the next action tick.
WAIT: int = -1

BatchingPolicy = Literal["fcfs", "least-work-left", "bin-packing"]
BATCHING_POLICIES: tuple[str, ...] = ("fcfs", "least-work-left", "bin-packing")

#: iteration-level batching rules of an instance (``InstanceConfig.scheduler``); the
#: rules of each are listed in the engine's module docstring ("Scheduler variants")
BatchScheduler = Literal["vllm-v1", "vllm-v0", "sarathi"]
BATCH_SCHEDULERS: tuple[str, ...] = ("vllm-v1", "vllm-v0", "sarathi")


class RouterError(RuntimeError):
    """A router returned something the engine cannot act on (names router, request, value)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class InstanceConfig:
    """One model instance (replica) of the cluster.

    Attributes:
        name: label used in results.
        latency: iteration-time model of this instance.
        max_running_seqs: most sequences batched at once (vLLM ``max_num_seqs``).
        max_batched_tokens: most tokens (prefill + one per decode) in one iteration
            (vLLM ``max_num_batched_tokens``).
        kv_capacity_tokens: KV-cache capacity in tokens.
        kv_block_tokens: KV allocation granularity (vLLM block size).
        batching: local admission order: "fcfs", "least-work-left" or "bin-packing".
        chunked_prefill: split long prompts across iterations (Sarathi-style).
        prefix_cache: keep an LRU cache of prefix blocks that removes cached prompt
            tokens from prefill work.
        prefix_cache_blocks: capacity of that cache, in prefix blocks.
        prefix_block_tokens: tokens per prefix block (Mooncake traces use 512).
        scheduler: the iteration-level batching rules. ``"vllm-v1"`` (default):
            mixed prefill + decode iterations with an unpadded token budget (and
            chunked prefill when ``chunked_prefill``); ``"vllm-v0"``: vLLM's original
            scheduler as Vidur models it: prefill-only iterations whenever the queue
            head fits (decodes pause), padded budget (batch size x longest prompt),
            ``max_running_seqs`` counting every sequence holding KV, a free-block
            watermark and recompute preemption; ``"sarathi"``: Sarathi-Serve's
            stall-free batching as Vidur models it: every iteration fills a fixed
            chunk of ``max_batched_tokens`` tokens, running decodes first (never
            paused), then partial prefills, then new prompts in chunks (requires
            ``chunked_prefill=True``), with vllm-v0's block accounting, batch cap,
            watermark and preemption. The engine's module docstring lists the rules
            one by one with their sources.
        kv_watermark_fraction: ``"vllm-v0"`` and ``"sarathi"`` only: a request is
            admitted only if ``int(kv_watermark_fraction x KV blocks)`` blocks stay
            free after its prompt's blocks (vLLM's ``watermark``, default 0.01;
            Vidur's ``watermark_blocks_fraction``); 0 admits whenever the prompt's
            blocks fit.
        clock: name of an iteration clock (``routeplay.estimator.list_clocks()``) or
            path to a clock file: the engine then prices every iteration from that
            profile (e.g. ``"vidur-forest/llama2-7b-a100"``, Vidur's own composition and
            random forests) instead of ``latency``, one iteration per event; routers and
            the state's estimates keep using ``latency``. ``None`` (default): the
            engine's clock is ``latency``.

    Example:
        >>> from routeplay.estimator import LinearLatencyModel
        >>> lat = LinearLatencyModel.from_throughput(1000.0)
        >>> InstanceConfig(name="a", latency=lat, scheduler="vllm-v0").scheduler
        'vllm-v0'
        >>> InstanceConfig(name="b", latency=lat, scheduler="vllm-v2")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: InstanceConfig('b').scheduler = 'vllm-v2'; expected one of [...]. Fix: ...
    """

    name: str
    latency: LinearLatencyModel
    max_running_seqs: int = 256
    max_batched_tokens: int = 8192
    kv_capacity_tokens: int = 200_000
    kv_block_tokens: int = 16
    batching: BatchingPolicy = "fcfs"
    chunked_prefill: bool = False
    prefix_cache: bool = False
    prefix_cache_blocks: int = 0
    prefix_block_tokens: int = 512
    scheduler: BatchScheduler = "vllm-v1"
    kv_watermark_fraction: float = 0.01
    clock: str | None = None

    def __post_init__(self) -> None:
        owner = f"InstanceConfig({self.name!r})"
        if self.clock is not None:
            self._check_clock(owner)
        for name in (
            "max_running_seqs",
            "max_batched_tokens",
            "kv_capacity_tokens",
            "kv_block_tokens",
            "prefix_block_tokens",
        ):
            check_int(owner, name, getattr(self, name), minimum=1)
        check_int(owner, "prefix_cache_blocks", self.prefix_cache_blocks, minimum=0)
        check_bool(owner, "chunked_prefill", self.chunked_prefill)
        check_bool(owner, "prefix_cache", self.prefix_cache)
        if self.batching not in BATCHING_POLICIES:
            raise ValueError(
                f"InstanceConfig({self.name!r}).batching = {self.batching!r}; expected one of "
                f"{list(BATCHING_POLICIES)}."
            )
        if self.scheduler not in BATCH_SCHEDULERS:
            raise ValueError(
                f"InstanceConfig({self.name!r}).scheduler = {self.scheduler!r}; expected one of "
                f'{list(BATCH_SCHEDULERS)}. Fix: use "vllm-v1" (mixed iterations, the '
                'default), "vllm-v0" (prefill-first, what Vidur models) or "sarathi" '
                "(stall-free batching with a fixed chunk)."
            )
        fraction = check_number(owner, "kv_watermark_fraction", self.kv_watermark_fraction)
        if not 0.0 <= fraction < 1.0:
            raise ValueError(
                f"{owner}.kv_watermark_fraction = {fraction!r}; expected a fraction in [0, 1) "
                "of the KV blocks kept free at admission. Fix: use vLLM's default 0.01, or 0."
            )
        if self.scheduler == "vllm-v0":
            if self.chunked_prefill:
                raise ValueError(
                    f"{owner} has scheduler='vllm-v0' and chunked_prefill=True; expected "
                    "chunked_prefill=False: vllm-v0 prefills whole prompts in prefill-only "
                    "iterations. Fix: drop chunked_prefill, or use scheduler='vllm-v1'."
                )
            if self.batching == "bin-packing":
                raise ValueError(
                    f"{owner} has scheduler='vllm-v0' and batching='bin-packing'; expected "
                    "'fcfs' or 'least-work-left': vllm-v0 admits in queue order and stops at "
                    "the first request that does not fit. Fix: use batching='fcfs'."
                )
        if self.scheduler == "sarathi":
            if not self.chunked_prefill:
                raise ValueError(
                    f"{owner} has scheduler='sarathi' and chunked_prefill=False; expected "
                    "chunked_prefill=True: sarathi prefills every prompt in chunks that fill "
                    "a fixed token budget (the chunk size is max_batched_tokens). Fix: set "
                    "chunked_prefill=True (and max_batched_tokens to the chunk size, e.g. "
                    "512), or use scheduler='vllm-v0' for whole-prompt prefills."
                )
            if self.batching == "bin-packing":
                raise ValueError(
                    f"{owner} has scheduler='sarathi' and batching='bin-packing'; expected "
                    "'fcfs' or 'least-work-left': sarathi admits in queue order and stops at "
                    "the first request that does not fit. Fix: use batching='fcfs'."
                )
            if self.max_running_seqs > self.max_batched_tokens:
                raise ValueError(
                    f"{owner} has scheduler='sarathi', max_running_seqs = "
                    f"{self.max_running_seqs} > max_batched_tokens = {self.max_batched_tokens}; "
                    "expected max_running_seqs <= max_batched_tokens: every running decode "
                    "takes one token of the fixed chunk. Fix: raise max_batched_tokens (the "
                    "chunk size) or lower max_running_seqs."
                )
        if self.prefix_cache and self.prefix_cache_blocks < 1:
            raise ValueError(
                f"InstanceConfig({self.name!r}) has prefix_cache=True but prefix_cache_blocks="
                f"{self.prefix_cache_blocks!r}; expected a positive block count. Fix: set "
                "prefix_cache_blocks, e.g. kv_capacity_tokens // prefix_block_tokens."
            )

    def _check_clock(self, owner: str) -> None:
        """The clock exists and covers the largest batch this instance can form."""
        if not isinstance(self.clock, str):
            raise ValueError(
                f"{owner}.clock = {self.clock!r}; expected a clock name or .npz path (str). "
                "Fix: e.g. clock = 'vidur-forest/llama2-7b-a100'."
            )
        try:
            clock = get_clock(self.clock)
        except (ValueError, FileNotFoundError) as exc:
            raise ValueError(f"{owner}.clock: {exc}") from exc
        largest = max(self.max_batched_tokens, self.max_running_seqs)
        if largest > clock.max_batch_tokens:
            raise ValueError(
                f"{owner}.clock = {self.clock!r} covers batches up to "
                f"{clock.max_batch_tokens} tokens, but max_batched_tokens = "
                f"{self.max_batched_tokens} and max_running_seqs = {self.max_running_seqs}; "
                f"expected both <= {clock.max_batch_tokens}. Fix: lower them, or drop the clock."
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterConfig:
    """A (possibly heterogeneous) cluster and its router layer.

    Attributes:
        instances: the instances, indexed 0..m-1 by routers.
        action_interval_s: while requests wait at the router, it is asked again every
            this many seconds (the paper's 0.02 s decision tick).
        router_queue_cap: the router-queue length reported to routers is capped here
            (the paper's 512); the queue itself is unbounded (nothing is dropped).
        state_delay_s: routers see the cluster state as it was this long ago
            (production routers read lagging metrics); 0 = exact.
    """

    instances: tuple[InstanceConfig, ...]
    action_interval_s: float = 0.02
    router_queue_cap: int = 512
    state_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if not self.instances:
            raise ValueError("ClusterConfig.instances is empty; expected at least one instance.")
        check_number(
            "ClusterConfig",
            "action_interval_s",
            self.action_interval_s,
            minimum=0.0,
            strict=True,
            unit="s",
        )
        check_int("ClusterConfig", "router_queue_cap", self.router_queue_cap, minimum=1)
        check_number("ClusterConfig", "state_delay_s", self.state_delay_s, minimum=0.0, unit="s")

    @property
    def n_instances(self) -> int:
        """Number of instances."""
        return len(self.instances)


@dataclass(frozen=True, slots=True)
class RequestView:
    """What a router may know about a request at decision time.

    There is deliberately no output length here; only :class:`OracleRequestView`
    (given to routers whose ``oracle`` attribute is True) carries it.
    """

    request_id: int
    arrival_s: float
    prompt_tokens: int
    task: str | None = None
    session_id: str | None = None
    prefix_blocks: tuple[int, ...] = ()
    predicted_bucket: int | None = None
    predicted_output_tokens: float | None = None


@dataclass(frozen=True, slots=True)
class OracleRequestView(RequestView):
    """A :class:`RequestView` plus the true output length, for labelled oracle routers only."""

    output_tokens: int = 0


def _readonly(a: npt.ArrayLike, dtype: type) -> npt.NDArray:  # type: ignore[type-arg]
    arr: npt.NDArray = np.array(a, dtype=dtype)  # type: ignore[type-arg]
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, slots=True)
class ClusterState:
    """A read-only snapshot of the cluster, one entry per instance in every array.

    Attributes:
        now_s: simulated time of the decision.
        router_queue_len: requests waiting at the router (capped at the cluster's cap).
        n_queued: requests waiting in each instance's local queue.
        n_running: sequences running (admitted, not finished) per instance.
        prefill_tokens_pending: prompt tokens queued or not yet prefilled per instance.
        decode_tokens_done: output tokens generated so far by running sequences.
        predicted_decode_tokens_left: predicted remaining output tokens of queued and
            running requests (from the length predictor; never the truth).
        kv_used_tokens / kv_capacity_tokens: KV-cache use and capacity.
        max_running_seqs: sequence limit per instance.
        prompt_bucket_counts: (m, n_prompt_buckets) counts of the instance's requests by
            prompt bucket (the paper's P_t).
        decode_bucket_counts: (m, n_decode_buckets) counts by predicted decode bucket
            (the paper's D_t).
        earliest_completion_s: estimated absolute time of the earliest completion on
            each instance (``now_s`` when idle).
        n_completed: requests finished per instance so far.
        tokens_in_system: per instance, the sum over its queued and running requests of
            (prompt tokens + output tokens generated so far): the paper's
            ``sum_j (p_j + d_j)`` that the workload-impact estimator reads.
        oracle_decode_tokens_left: true remaining output tokens per instance; filled
            only for routers with ``oracle = True`` (``None`` otherwise).
    """

    now_s: float
    router_queue_len: int
    n_queued: npt.NDArray[np.int64]
    n_running: npt.NDArray[np.int64]
    prefill_tokens_pending: npt.NDArray[np.int64]
    decode_tokens_done: npt.NDArray[np.int64]
    predicted_decode_tokens_left: npt.NDArray[np.float64]
    kv_used_tokens: npt.NDArray[np.int64]
    kv_capacity_tokens: npt.NDArray[np.int64]
    max_running_seqs: npt.NDArray[np.int64]
    prompt_bucket_counts: npt.NDArray[np.int64]
    decode_bucket_counts: npt.NDArray[np.int64]
    earliest_completion_s: npt.NDArray[np.float64]
    n_completed: npt.NDArray[np.int64] = field(default_factory=lambda: _readonly([], np.int64))
    tokens_in_system: npt.NDArray[np.int64] = field(default_factory=lambda: _readonly([], np.int64))
    oracle_decode_tokens_left: npt.NDArray[np.int64] | None = None

    @property
    def n_instances(self) -> int:
        """Number of instances."""
        return int(self.n_running.shape[0])

    @property
    def n_outstanding(self) -> npt.NDArray[np.int64]:
        """Queued + running requests per instance (least-connections' count)."""
        return self.n_queued + self.n_running

    def columns(self) -> StateColumns:
        """``now_s`` and the per-instance counts as tuples of Python numbers.

        The same numbers as the arrays (see :class:`StateColumns`); routers that score
        the few instances of a cluster in Python floats read these. A state the engine
        hands out computes them without building its arrays, once.

        Example:
            >>> from routeplay.replay import make_cluster_state
            >>> make_cluster_state(n_running=[3, 0], n_queued=[1, 0]).columns().n_running
            (3, 0)
        """
        counts = (tuple(getattr(self, name).tolist()) for name in StateColumns._fields[1:])
        return StateColumns(self.now_s, *counts)


class StateColumns(NamedTuple):
    """A :class:`ClusterState`'s time and per-instance counts as Python ints and floats.

    Each field is the ``tuple(.tolist())`` of the array of the same name. Not included:
    the predicted and oracle tokens left, the bucket counts and ``earliest_completion_s``
    (with a predictor each takes a pass over every running sequence).
    """

    now_s: float
    n_queued: tuple[int, ...]
    n_running: tuple[int, ...]
    prefill_tokens_pending: tuple[int, ...]
    decode_tokens_done: tuple[int, ...]
    kv_used_tokens: tuple[int, ...]
    kv_capacity_tokens: tuple[int, ...]
    max_running_seqs: tuple[int, ...]
    n_completed: tuple[int, ...]
    tokens_in_system: tuple[int, ...]


@runtime_checkable
class Router(Protocol):
    """A routing policy: maps (request, cluster snapshot) to an instance index or WAIT.

    ``reset`` is called once at the start of every replay with the cluster and a
    dedicated, seeded generator; ``oracle`` is True only for routers that are
    explicitly allowed to see true output lengths (they then receive
    :class:`OracleRequestView`).
    """

    name: str
    oracle: bool

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Prepare for a new replay on ``cluster``."""
        ...

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Return an instance index in ``range(state.n_instances)`` or :data:`WAIT`."""
        ...


@runtime_checkable
class Scheduler(Protocol):
    """A router-queue scheduler: picks *which* waiting request goes *where*, or holds all.

    At every decision point of the engine (an arrival or an action tick with requests
    at the router, then again after every dispatch) ``schedule`` gets the whole router
    queue (views in arrival order; :class:`OracleRequestView` only when ``oracle`` is
    True) and the same :class:`ClusterState` a router would, and returns
    ``(index, instance)`` to send ``queue[index]`` to ``instance``, or
    ``(index, WAIT)`` to hold every queued request until the next decision point
    (late binding). A plain :class:`Router` is the scheduler that always picks index 0.
    ``reset`` is called as for routers. Schedulers may also define ``route``; the
    engine uses ``schedule`` whenever it exists (see the engine's module docstring).
    """

    name: str
    oracle: bool

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Prepare for a new replay on ``cluster``."""
        ...

    def schedule(self, queue: tuple[RequestView, ...], state: ClusterState) -> tuple[int, int]:
        """Return ``(index in range(len(queue)), instance index or WAIT)``."""
        ...


def episode_seed(seed: int, episode: int) -> int:
    """The replay seed of episode ``episode`` under base seed ``seed``: ``seed + episode``.

    The one seed rule of the pipeline: :func:`replay_episodes`, scenarios and sweeps
    replay episode ``k`` with this seed, and transition logging gives the behaviour
    router of episode ``k`` the same generator, ``default_rng(SeedSequence(seed + k))``
    (exploration draws come from their own stream of ``(seed, k)``).

    Example:
        >>> from routeplay.replay import episode_seed
        >>> episode_seed(10, 3)
        13
    """
    return int(seed) + int(episode)
