"""The discrete-event engine: router queue, continuous-batching instances, two modes.

Rules (the specification of docs/design.md "The engine", with every choice this module makes):

Router layer
    A request joins the router queue at ``arrival_s``. At each arrival and at each
    action tick the queue is offered to the router head first (FIFO): every request
    it routes leaves the queue; the first ``WAIT`` ends the offer, and the rest of the
    queue (behind the waiting head) is held too — nothing overtakes the head. Ticks lie
    on the global grid ``k * action_interval_s``; after a WAIT the next grid point after
    now is scheduled. With ``state_delay_s > 0`` the router sees the state as it was at
    ``now - state_delay_s``: the engine takes snapshots at every ``arrival_s - delay``
    and every ``k * action_interval_s - delay`` (so every decision time has an exact
    one); before t = 0 it sees the empty cluster. ``state.now_s`` is the snapshot time.

Schedulers (router-queue scheduling, late binding)
    A router that has a ``schedule(queue, state)`` method (the :class:`Scheduler`
    protocol of ``_types``; e.g. ``late-binding-spf``) is offered the *whole* router
    queue instead of its head, at exactly the same decision points: ``queue`` is the
    tuple of the waiting requests' views in arrival order (plain :class:`RequestView`,
    :class:`OracleRequestView` only for ``oracle = True``) and ``state`` the same
    snapshot a router would get. It returns ``(index, instance)``: ``queue[index]``
    leaves the router queue for ``instance`` (the requests before and after it keep
    their order) and the offer goes on with the rest, with a fresh state; or
    ``(index, WAIT)`` (``index`` any valid one, by convention 0: ``HOLD``), which ends
    the offer and holds *every* queued request until the next arrival or action tick
    (late binding: nothing is bound to an instance before the scheduler says so).
    ``Engine.router_queue()`` is the queue, ``Engine.apply(action, index=k)`` the
    dispatch; ``index`` defaults to 0, so a plain router is exactly a scheduler that
    always picks the head (FIFO), and its replays are unchanged bit for bit.
    With ``state_delay_s > 0`` a scheduler sees the same stale snapshot for every
    dispatch of one offer (it does not show the dispatches made since).

Events at the same time
    are ordered by ``(time_s, kind_priority, seq)``: iteration ends, then arrivals,
    then ticks, then batch formation, then samples/snapshots. So a request routed at
    the instant an iteration ends joins the next batch, and routers see completions
    that happen at their decision time.

Instance (iteration-level continuous batching)
    At the start of each iteration the instance forms its batch:

    1. Every running sequence that finished its prefill decodes one token; with
       chunked prefill, partially prefilled sequences continue in admission order with
       chunks that fill the budget left after one token per decode (Sarathi-style).
    2. KV: a sequence uses ``blocks(prompt + generated)`` tokens (``blocks(x) =
       ceil(x / kv_block_tokens) * kv_block_tokens``); a sequence being prefilled
       reserves ``blocks(prefill target)`` at admission and ``blocks(target + 1)`` in
       the iteration that completes it (token 1). If the end-of-iteration use would
       exceed capacity, the newest running sequence is preempted (KV freed, moved to
       the front of the local queue, prefilled again later as prompt + generated
       tokens); repeated until it fits. An iteration that preempted admits nothing.
    3. Admission: preempted sequences first (oldest preemption first), then the local
       policy: ``fcfs`` (routing order), ``least-work-left`` (fewest *predicted* output
       tokens, routing order on ties; with no predictor this is FCFS), or
       ``bin-packing`` (the largest prefill target that fits the token budget and KV;
       with chunked prefill and nothing fitting whole, the oldest request is chunked).
       FCFS and least-work-left stop at the first request that does not fit. Limits:
       ``max_running_seqs``, the token budget (without chunking a prompt is admitted
       only whole) and free KV.
    4. The iteration lasts ``latency.iteration_time_s(prefill_tokens,
       prefill_sq_tokens = sum(chunk * (chunk + already_in_kv)), n_decode_seqs,
       decode_context_tokens = sum(prompt + generated))``.

    A prompt longer than ``max_batched_tokens`` without chunked prefill, or a request
    whose final KV (``blocks(prompt + output)``) exceeds the instance's capacity, raises
    ``ValueError`` when routed there. A *recomputation* (prompt + generated tokens)
    longer than the budget is admitted alone as the batch's only prefill.

Scheduler variants (``InstanceConfig.scheduler``)
    ``"vllm-v1"`` (the default) is the instance rules above: mixed prefill + decode
    iterations, an unpadded token budget, chunked prefill when ``chunked_prefill``
    (vLLM >= 0.6 with chunked prefill; vLLM v1 always chunks), KV reserved for a
    prefill's whole target at admission, preemption of the newest sequence.

    ``"vllm-v0"`` is vLLM's original scheduler (``vllm/core/scheduler.py`` of vLLM
    0.2-0.3, ``_schedule`` without chunked prefill) as Microsoft Vidur models it
    (``vidur/scheduler/replica_scheduler/vllm_replica_scheduler.py``, commit 7d47513).
    Block counts below are ``ceil(tokens / kv_block_tokens)`` and the capacity is
    ``kv_capacity_tokens // kv_block_tokens`` blocks; a running sequence with ``ctx =
    prompt + generated`` tokens holds ``ceil((ctx - 1) / block)`` blocks between
    iterations (the newest token's KV is written by the next decode).

    1. *Prefill first.* At every batch formation the local queue (preempted requests
       first, then the local policy, ``fcfs`` or ``least-work-left``) is offered
       head first; if at least one request is admitted, the iteration is
       prefill-only: the admitted prompts run whole and the running decodes pause
       (they produce no token; their next token gap includes the pause). vLLM:
       ``_schedule`` returns the prefills when ``scheduled`` is non-empty; Vidur:
       ``_get_next_batch`` returns the new-request batch before the decodes.
    2. *Padded budget.* A request joins the prefill batch only if
       ``(batch size + 1) x max(longest prompt so far, its prompt) <=
       max_batched_tokens`` (vLLM 0.2 ``num_batched_tokens = len(seq_lens) *
       max(seq_lens)``; Vidur the same). The iteration is priced on the real tokens.
    3. *Batch cap on KV holders.* Admission stops when ``max_running_seqs`` sequences
       hold KV (running decodes included; vLLM's ``num_curr_seqs``, Vidur's
       ``len(self._allocation_map) == batch_size_cap``).
    4. *Watermark.* A request is admitted only if ``free blocks - blocks(prompt) >=
       int(kv_watermark_fraction x capacity blocks)`` (vLLM ``BlockSpaceManager
       .can_allocate``; Vidur ``_can_allocate_request``); the first that fails stops
       admission (head-of-line).
    5. *Decode iterations.* Otherwise every running sequence decodes one token; they
       are taken in arrival order and each needs at least one free block at its turn
       (vLLM ``can_append_slots``; Vidur ``_can_allocate_request``), then holds
       ``ceil(ctx / block)`` blocks. While a sequence finds no free block, the newest
       (latest-arriving) sequence not yet taken is preempted, or the sequence itself
       if it is the last one.
    6. *Recompute preemption.* A preempted sequence frees its blocks and goes to the
       front of the local queue; it is prefilled again as prompt + generated tokens
       (vLLM ``PreemptionMode.RECOMPUTE``; Vidur ``Request.restart``).

    A request routed to a ``vllm-v0`` instance must satisfy ``blocks(prompt + output)
    + max(watermark blocks, 1) <= capacity blocks`` (it could otherwise stall there
    alone). Fast mode prices the decode runs of ``vllm-v0`` in closed form like the
    default rules, stopping at the first completion or the first iteration whose
    rule 5 would preempt; prefill-only iterations and iterations that preempted are
    single events.

    ``"sarathi"`` is Sarathi-Serve's stall-free batching (Agrawal et al., "Taming
    Throughput-Latency Tradeoff in LLM Inference with Sarathi-Serve", OSDI 2024, section
    4) as Vidur models it (``vidur/scheduler/replica_scheduler/sarathi_replica_scheduler.py``,
    commit 7d47513), with ``max_batched_tokens`` as the fixed chunk size (Vidur's
    ``chunk_size``). It requires ``chunked_prefill=True``, ``batching`` ``fcfs`` or
    ``least-work-left`` and ``max_running_seqs <= max_batched_tokens``. Blocks, the
    capacity and what a running sequence holds are vllm-v0's (above).

    1. *Fixed token budget, no padding.* An iteration computes at most
       ``max_batched_tokens`` tokens: one per running decode plus the prefill chunks,
       counted unpadded (Sarathi-Serve's token budget; Vidur's ``chunk_size -
       num_batch_tokens`` for each prefill).
    2. *Decodes first, never paused.* Every running sequence that finished its prefill
       decodes one token in every iteration (stall-free batching; Vidur schedules the
       running requests first, one token each). They take their KV as vllm-v0's rule 5,
       in arrival order: each needs one free block at its turn, then holds
       ``ceil(ctx / block)``. While one finds no free block, the latest-arriving running
       sequence that arrived after it (decoding or partially prefilled) is preempted, or
       the decode itself if there is none, and recomputed later (vllm-v0's rule 6).
       Vidur walks its running requests in arrival order, sets the partial prefills
       aside and preempts the newest of those not yet walked: exactly these.
    3. *Partial prefills continue* in admission order, each with a chunk of
       ``min(tokens left, budget left)`` (the default rules' chunked budget filling;
       Vidur's running prefills).
    4. *Admission.* Then the local queue (preempted requests first, then ``fcfs`` or
       ``least-work-left``) is offered head first; the head is admitted while budget
       is left, fewer than ``max_running_seqs`` sequences hold KV (vllm-v0's rule 3)
       and the blocks of its whole prefill target fit with the watermark
       (``free blocks - blocks(target) >= int(kv_watermark_fraction x capacity
       blocks)``, vllm-v0's rule 4; free blocks counted after the decodes took
       theirs; ``kv_watermark_fraction=0``: the prompt's blocks fit). It holds those
       blocks from admission on (Vidur allocates the prompt's blocks at admission) and
       prefills a chunk of ``min(target - cached, budget left)``; the first head that
       does not fit stops admission. Rules 2-4 run at every batch formation, also
       after a preemption (as in Vidur's ``_get_next_batch``).
    5. *Iteration time* as the default rules: prefill chunks and decodes of one
       iteration priced together on the real tokens.

    The routing check is vllm-v0's (``blocks(prompt + output) + max(watermark blocks,
    1) <= capacity blocks``). Fast mode prices decode-only runs (nothing prefilling,
    nothing admitted, no preemption) in closed form, stopping at the first completion
    or the first iteration whose rule 2 would preempt; every other iteration is a
    single event.

Prefix cache (``prefix_cache=True``)
    An LRU over the trace's ``prefix_blocks`` hashes (``prefix_block_tokens`` each).
    At admission the request's leading blocks found in the cache are removed from its
    prefill work (at most ``target - 1`` tokens, so that at least one token is
    computed), then all its blocks are touched/inserted. KV is still reserved for the
    whole target (no sharing of blocks between sequences is modelled).

Fast mode
    When a batch has no prefill work, nothing to admit and no preemption, its next
    iterations are decode-only and change nothing but token counts until the first
    completion or KV exhaustion. The engine schedules that whole run as one event and
    prices it in closed form (iteration times grow arithmetically with the context:
    ``LinearLatencyModel.decode_run_time_s``). A request routed to a busy instance cuts
    the run at the first iteration boundary at or after its routing time; state
    queries in the middle of a run count the iterations completed so far by solving
    the quadratic. Reference mode forms every iteration as its own event; everything
    else is shared, so the two agree to rounding.

Predictions
    With a predictor, ``predictor.predict(trace)`` is called once; requests carry
    ``predicted_bucket``/``predicted_output_tokens`` and the state's
    ``decode_bucket_counts`` (one column per predictor bucket) and
    ``predicted_decode_tokens_left`` use them. Without one, routers see ``None`` for
    both request fields, a single decode-bucket column holding every request, and 0
    predicted tokens left. Only routers with ``oracle = True`` get
    :class:`OracleRequestView` and ``oracle_decode_tokens_left``.

Memory
    Proportional to the result columns plus the requests in flight: the trace's input
    columns are read as numpy views; Python records of requests (their
    :class:`RequestView`, token counts, predictions, prefix) are built ``_BLOCK`` at a
    time when the first of them arrives, kept while a request is in flight and dropped
    when it finishes; outputs go to preallocated numpy columns.

State fields
    Bucket counts (P_t, D_t), ``tokens_in_system`` and the predicted tokens left cover
    the instance's queued and running requests. ``earliest_completion_s`` is an estimate
    from predictions only: ``now + t_decode(batch) * min(max(predicted - generated, 1))``
    over running sequences, ``now + prefill time`` of the next queued request when the
    instance is idle with a queue, ``now`` when empty.
"""

# Why this module is long: its docstring is the engine's rule-by-rule specification, and
# the event loop, the routing API, forks, run_until/drain and the state handed to
# routers share the engine's private state (the per-instance rules live in
# _instance.py).

from __future__ import annotations

import dataclasses
import heapq
import math
import weakref
from collections import deque
from collections.abc import Callable
from itertools import repeat
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from routeplay.datasets._schema import validate_trace
from routeplay.estimator._protocols import OutputLengthPredictor

from .._types import (
    WAIT,
    ClusterConfig,
    ClusterState,
    OracleRequestView,
    RequestView,
    Router,
    RouterError,
    Scheduler,
    StateColumns,
)
from ._instance import Instance, Record, RequestBook
from ._metrics import (
    IMBALANCE_MAX_MIN,
    UTILISATION_CV,
    summarize_requests,
    utilisation_imbalance,
)
from ._result import REQUEST_SCHEMA, TIMELINE_SCHEMA, ReplayConfig, ReplayResult

__all__ = ["Engine", "RouteFn", "ScheduleFn", "is_scheduler", "run_replay"]

#: requests whose Python records are built at once (at the first arrival among them)
_BLOCK = 4096
_Record = Record  # (view, prompt, output, predicted tokens and bucket, prompt bucket, prefix)

# event kinds, in priority order at equal times
_ITER_END = 0
_ARRIVAL = 1
_TICK = 2
_FORM = 3
_SAMPLE = 4
_SNAPSHOT = 5

_I64 = npt.NDArray[np.int64]
_F64 = npt.NDArray[np.float64]


def _column(trace: pl.DataFrame, name: str, dtype: Any) -> np.ndarray:
    """A trace column as a read-only numpy array (a view of the trace when possible)."""
    a = trace[name].to_numpy()
    if dtype is not None and a.dtype != dtype:
        a = a.astype(dtype)
    if a.flags.writeable:
        a.setflags(write=False)
    return a


def _ro(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)
    return a


#: a routing function: (request, state) -> instance index or WAIT (e.g. ``router.route``)
RouteFn = Callable[[RequestView, ClusterState], int]
#: a scheduling function: (router queue, state) -> (queue index, instance index or WAIT)
#: (e.g. ``scheduler.schedule``)
ScheduleFn = Callable[[tuple[RequestView, ...], ClusterState], tuple[int, int]]


#: ClusterState's fields in order (Engine._state_values returns them so)
_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(ClusterState))
#: where ``predicted_decode_tokens_left`` sits among them, and the others
_PRED_AT = _STATE_FIELDS.index("predicted_decode_tokens_left")
_FIELDS_BUT_PRED = _STATE_FIELDS[:_PRED_AT] + _STATE_FIELDS[_PRED_AT + 1 :]


#: a field of a lazy state computed only when read (Engine._state_values)
_LATER: Any = object()


def _is_set(state: _LazyClusterState, name: str) -> bool:
    try:
        object.__getattribute__(state, name)
    except AttributeError:
        return False
    return True


def _lazy_engine(state: _LazyClusterState) -> Engine | None:
    """The engine that will compute ``state``, or None once computed (or for a copy)."""
    try:
        engine: Engine | None = object.__getattribute__(state, "_engine")
    except AttributeError:  # a copy or an unpickled state: its fields came with it
        return None
    return engine


class _LazyClusterState(ClusterState):
    """The state of a pending decision, its arrays computed on first access.

    A router that ignores the state (round robin, random) never pays for it. The values
    are those of ``Engine._state_now(at_s)``: the engine computes them at the first
    attribute access, or, if somebody still holds the object, just before it changes
    anything (:meth:`Engine._settle_state`, called first in :meth:`Engine.apply`); so
    a state read after the engine moved on still shows the decision's moment. With a
    predictor, ``predicted_decode_tokens_left`` (sums over every running sequence) waits
    for its own first access the same way. Copies and pickles carry the computed fields
    (the dataclass's state is its fields).
    """

    __slots__ = ("_engine", "_at_s", "_columns", "__weakref__")

    @property
    def n_instances(self) -> int:
        """Number of instances (known without computing the state)."""
        engine = _lazy_engine(self)
        return int(engine.m) if engine is not None else int(self.n_running.shape[0])

    def columns(self) -> StateColumns:
        """As :meth:`ClusterState.columns`; before the arrays exist, without building them.

        Computed once (the columns are tuples: nobody can change them for the next reader).
        """
        try:
            cols: StateColumns = object.__getattribute__(self, "_columns")
            return cols
        except AttributeError:
            pass
        engine = _lazy_engine(self)
        if engine is None or _is_set(self, "now_s"):
            cols = ClusterState.columns(self)
        else:
            cols = engine._state_columns(object.__getattribute__(self, "_at_s"))
        object.__setattr__(self, "_columns", cols)
        return cols

    def __getattr__(self, name: str) -> Any:
        # reached only for attributes not set yet: the fields of an unmaterialised state
        if name.startswith("__") or _lazy_engine(self) is None:
            raise AttributeError(name)
        self._materialise(everything=name == "predicted_decode_tokens_left")
        return object.__getattribute__(self, name)

    def _materialise(self, everything: bool = True) -> None:
        """Compute the fields: all but the predicted tokens left, and those if ``everything``.

        The predicted tokens left wait for their first read (or :meth:`Engine._settle_state`,
        which calls this with ``everything`` before the engine changes).
        """
        engine = _lazy_engine(self)
        if engine is None:
            return
        at = object.__getattribute__(self, "_at_s")
        if not _is_set(self, "now_s"):
            values = engine._state_values(at, defer_pred=True)
            # every field at once (map: no Python loop), the deferred one left unset
            if values[_PRED_AT] is _LATER:
                names, values = _FIELDS_BUT_PRED, values[:_PRED_AT] + values[_PRED_AT + 1 :]
            else:
                names = _STATE_FIELDS
            deque(map(object.__setattr__, repeat(self), names, values), maxlen=0)
        if not _is_set(self, "predicted_decode_tokens_left"):
            if not everything:
                return
            object.__setattr__(self, "predicted_decode_tokens_left", engine._pred_values(at))
        object.__setattr__(self, "_engine", None)


def _one_policy(where: str, route: object, schedule: object) -> None:
    if route is not None and schedule is not None:
        raise ValueError(
            f"Engine.{where} got both route and schedule; expected one policy: route= for a "
            "router, schedule= for a scheduler."
        )


class Engine:
    """The replay engine, driven one routing decision at a time.

    :func:`run_replay` is a loop over this class; a gymnasium environment can drive it
    the same way: ``next_decision()`` advances the simulation to the next moment a
    router must decide and returns ``(request, state)`` (``None`` once every request
    has finished); ``apply(action)`` acts on it; ``result()`` builds the
    :class:`ReplayResult`. See the module docstring for the exact rules.

    Args:
        trace: a trace in the canonical schema (validated here).
        cluster: the cluster to replay on.
        config: replay settings.
        predictor: optional output-length predictor (called once, on the whole trace).
        oracle: hand out :class:`OracleRequestView` and true tokens left (for routers
            with ``oracle = True`` only).
        router_name: used in error messages and the result.

    Example:
        >>> import polars as pl
        >>> from routeplay.estimator import LinearLatencyModel
        >>> from routeplay.replay import ClusterConfig, InstanceConfig
        >>> lat = LinearLatencyModel.from_throughput(1000.0)
        >>> cluster = ClusterConfig(instances=(InstanceConfig(name="a", latency=lat),))
        >>> trace = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.5],
        ...                       "prompt_tokens": [100, 100], "output_tokens": [11, 1]})
        >>> eng = Engine(trace, cluster)
        >>> n = 0
        >>> while (d := eng.next_decision()) is not None:
        ...     eng.apply(0); n += 1
        >>> res = eng.result()
        >>> n, res.requests["e2e_s"].round(6).to_list()
        (2, [0.11, 0.1])
    """

    def __init__(
        self,
        trace: pl.DataFrame,
        cluster: ClusterConfig,
        *,
        config: ReplayConfig | None = None,
        predictor: OutputLengthPredictor | None = None,
        oracle: bool = False,
        router_name: str = "router",
    ) -> None:
        self.config = config if config is not None else ReplayConfig()
        self.cluster = cluster
        self.oracle = bool(oracle)
        self.router_name = router_name
        trace = validate_trace(trace, allow_extra_columns=True)
        self._trace = trace
        n = trace.height
        self.n_requests = n
        # input columns: read-only numpy views of the trace where Polars allows it (no
        # per-request Python objects; scalars are read block by block at arrival)
        self.arrival: _F64 = _column(trace, "arrival_s", np.float64)
        self.prompt: npt.NDArray[Any] = _column(trace, "prompt_tokens", None)
        self.output: npt.NDArray[Any] = _column(trace, "output_tokens", None)
        self._has_prefix = "prefix_blocks" in trace.columns
        # predictions (features only; never the truth)
        self.has_predictor = predictor is not None
        if predictor is not None:
            pred = predictor.predict(trace)
            bucket = np.asarray(pred.bucket, dtype=np.int64)
            expected = np.asarray(pred.expected_output_tokens, dtype=np.float64)
            n_db = int(predictor.n_buckets)
            if bucket.shape != (n,) or expected.shape != (n,):
                raise ValueError(
                    f"predictor.predict returned arrays of shapes {bucket.shape} and "
                    f"{expected.shape}; expected ({n},) for a trace of {n} rows."
                )
            if n and (bucket.min() < 0 or bucket.max() >= n_db):
                raise ValueError(
                    f"predictor.predict returned buckets in [{bucket.min()}, {bucket.max()}]; "
                    f"expected range(0, {n_db}) (predictor.n_buckets = {n_db})."
                )
            self.pred_bucket: npt.NDArray[np.int64] = bucket
            self.pred_tokens: _F64 = expected
        else:
            n_db = 1
            # zero-stride views: no memory per request
            self.pred_bucket = np.broadcast_to(np.zeros(1, np.int64), (n,))
            self.pred_tokens = np.broadcast_to(np.zeros(1, np.float64), (n,))
        self._edges = np.asarray(self.config.prompt_bucket_edges_tokens, dtype=np.float64)
        n_pb = self.config.n_prompt_buckets
        # per-request Python records, only for requests in flight (arrived, not finished):
        # (view, prompt, output, predicted tokens, predicted bucket, prompt bucket, prefix)
        # and the per-request results (preallocated columns, the only O(n) state of a
        # replay): the request book shared with the instances; the engine's attributes
        # below are the book's own objects
        book = RequestBook(n)
        self._book = book
        self._live = book.live
        self._last_token = book.last_token  # preempted requests: time of their last token
        self._set_result_arrays(book)
        self._block: list[_Record] = []
        self._block_lo = 0
        self.n_prompt_buckets = n_pb
        self.n_decode_buckets = n_db
        # engine checks on the cluster
        for k, inst in enumerate(cluster.instances):
            if inst.max_batched_tokens < inst.max_running_seqs:
                raise ValueError(
                    f"instance {k} ({inst.name!r}): max_batched_tokens = "
                    f"{inst.max_batched_tokens} < max_running_seqs = {inst.max_running_seqs}; "
                    "expected a budget of at least one token per running sequence (vLLM "
                    "requires the same). Fix: raise max_batched_tokens."
                )
        reference = self.config.mode == "reference"
        self.inst = [
            Instance(k, c, n_pb, n_db, book, reference=reference, has_prefix=self._has_prefix)
            for k, c in enumerate(cluster.instances)
        ]
        self.m = len(self.inst)
        self._pb_counts = np.zeros((self.m, n_pb), np.int64)
        self._db_counts = np.zeros((self.m, n_db), np.int64)
        for k, state in enumerate(self.inst):
            state.pb_counts = self._pb_counts[k]
            state.db_counts = self._db_counts[k]
        self._kv_cap = _ro(np.array([i.cap_kv for i in self.inst], np.int64))
        self._kv_cap_ints: tuple[int, ...] = tuple(self._kv_cap.tolist())
        self._max_seqs = _ro(np.array([i.max_seqs for i in self.inst], np.int64))
        self._max_seqs_ints: tuple[int, ...] = tuple(self._max_seqs.tolist())
        # event machinery
        self._heap: list[tuple[float, int, int, int, int]] = []
        self._nseq = 0  # tie-breaking sequence number of the next event / LWL queue entry
        self._n_limit = n  # arrivals stop at this row (n, or fewer after stop_arrivals)
        self._next_arrival = 0
        self._na = self.arrival.item(0) if n else math.inf  # next arrival time
        self.now_s = 0.0
        self._rq: deque[int] = deque()
        self._offering = False
        self._tick_pending = False
        self._n_finished = 0
        self._reference = self.config.mode == "reference"
        last_arrival = float(self.arrival[-1]) if n else 0.0
        self._max_time = (
            self.config.max_sim_time_s
            if self.config.max_sim_time_s is not None
            else last_arrival + 86_400.0
        )
        self._idle_wait_since_s: float | None = None
        self._timeline: list[tuple[float, int, int, int, int, bool]] = []
        self._sampling = True  # False in a fork(timelines=False): SAMPLE events do nothing
        if self.config.timeline_sample_interval_s is not None and n:
            # samples on a grid anchored at the first arrival (a trace whose arrivals are
            # epoch seconds would otherwise be sampled from t = 0, ~1.7e9 samples)
            self._sample_t0_s = float(self.arrival[0])
            self._sample_k = 0
            span_s = last_arrival - self._sample_t0_s
            cap = self.config.max_timeline_samples
            if span_s / self.config.timeline_sample_interval_s >= cap:
                raise ValueError(
                    f"timeline_sample_interval_s = {self.config.timeline_sample_interval_s!r} "
                    f"over a trace spanning {span_s:.6g} s needs more than {cap:,} samples per "
                    f"instance (ReplayConfig.max_timeline_samples); expected at most {cap:,}. "
                    "Fix: sample less often (timeline_sample_interval_s >= "
                    f"{span_s / cap:.3g}), set it to None (no timelines), or raise "
                    "max_timeline_samples."
                )
            self._push(self._sample_t0_s, _SAMPLE, 0, 0)
        self._delay = cluster.state_delay_s
        self._snapshots: deque[tuple[float, ClusterState]] = deque()
        self._snap_arrival = 0
        if self._delay > 0 and n:
            self._snap_grid_k = max(0, math.ceil(self._delay / cluster.action_interval_s))
            self._push_grid_snapshot()
        self._decision: int | None = None
        self._cached_state: ClusterState | None = None
        self._lazy_state: weakref.ref[_LazyClusterState] | None = None
        self._running_cache: tuple[tuple[int, ...], tuple[_I64, _I64, _I64]] | None = None

    # -- event queue -----------------------------------------------------------------
    def _push(self, t: float, kind: int, a: int, b: int) -> None:
        s = self._nseq
        self._nseq = s + 1
        heapq.heappush(self._heap, (t, kind, s, a, b))

    def _push_grid_snapshot(self) -> None:
        interval = self.cluster.action_interval_s
        t = self._snap_grid_k * interval - self._delay
        self._push(t, _SNAPSHOT, 0, 0)

    def _pop(self) -> tuple[float, int, int, int] | None:
        """Next event as (time, kind, a, b), merging the arrival stream."""
        heap = self._heap
        i = self._next_arrival
        na = self._na
        # arrival-time snapshots (stale state) interleave as their own stream
        if self._delay > 0 and self._snap_arrival < self._n_limit:
            ts = self.arrival.item(self._snap_arrival) - self._delay
            if ts >= 0 and (not heap or (ts, _SNAPSHOT) < heap[0][:2]) and ts < na:
                self._snap_arrival += 1
                return ts, _SNAPSHOT, 1, 0
            if ts < 0:
                self._snap_arrival += 1
        if heap:
            top = heap[0]
            t0 = top[0]
            if t0 < na or (t0 == na and top[1] < _ARRIVAL):  # (t0, kind) < (na, _ARRIVAL)
                t, kind, _, a, b = heapq.heappop(heap)
                return t, kind, a, b
        if i < self._n_limit:
            self._next_arrival = i + 1
            self._na = self.arrival.item(i + 1) if i + 1 < self._n_limit else math.inf
            return na, _ARRIVAL, i, 0
        return None

    def _arrive(self, i: int) -> None:
        """Make the in-flight record of request ``i`` (read from the current block)."""
        k = i - self._block_lo
        if not 0 <= k < len(self._block):
            self._load_block(i)
            k = 0
        self._live[i] = self._block[k]

    def _load_block(self, lo: int) -> None:
        """Python records of requests ``[lo, lo + _BLOCK)``: bounded, reused at arrival."""
        hi = min(lo + _BLOCK, self.n_requests)
        tr = self._trace[lo:hi]
        ids = tr["request_id"].to_list()
        arrival = self.arrival[lo:hi].tolist()
        prompt_np = self.prompt[lo:hi]
        prompt = prompt_np.tolist()
        output = self.output[lo:hi].tolist()
        n_pb = self.n_prompt_buckets
        pb = np.searchsorted(self._edges, prompt_np.astype(np.float64), side="right") - 1
        prompt_bucket = np.clip(pb, 0, n_pb - 1).tolist()
        size = hi - lo
        pt_list: list[float] = self.pred_tokens[lo:hi].tolist()
        pbk_list: list[int] = self.pred_bucket[lo:hi].tolist()
        task = tr["task"].cast(pl.String).to_list() if "task" in tr.columns else [None] * size
        session = tr["session_id"].to_list() if "session_id" in tr.columns else [None] * size
        prefix: list[tuple[int, ...]] = (
            [tuple(x) if x is not None else () for x in tr["prefix_blocks"].to_list()]
            if self._has_prefix
            else [()] * size
        )
        has_pred = self.has_predictor
        block: list[_Record] = []
        for k in range(size):
            pb_k = pbk_list[k] if has_pred else None
            pt_k = pt_list[k] if has_pred else None
            view: RequestView
            if self.oracle:
                view = OracleRequestView(
                    ids[k],
                    arrival[k],
                    prompt[k],
                    task[k],
                    session[k],
                    prefix[k],
                    pb_k,
                    pt_k,
                    output[k],
                )
            else:
                view = RequestView(
                    ids[k], arrival[k], prompt[k], task[k], session[k], prefix[k], pb_k, pt_k
                )
            block.append(
                (view, prompt[k], output[k], pt_list[k], pbk_list[k], prompt_bucket[k], prefix[k])
            )
        self._block = block
        self._block_lo = lo

    # -- public driving API ----------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once every request has finished."""
        return self._n_finished == self._n_limit

    def next_decision(self) -> tuple[RequestView, ClusterState] | None:
        """Advance to the next routing decision; ``None`` when every request finished.

        Calling it again without :meth:`apply` returns the same pending decision.
        """
        return self._advance(math.inf)

    def _peek_time(self) -> float | None:
        """Time of the event :meth:`_pop` would return next (no side effects), or None."""
        heap = self._heap
        na = self._na
        if self._delay > 0 and self._snap_arrival < self._n_limit:
            ts = self.arrival.item(self._snap_arrival) - self._delay
            if ts >= 0 and (not heap or (ts, _SNAPSHOT) < heap[0][:2]) and ts < na:
                return float(ts)
        if heap:
            t0 = heap[0][0]
            if t0 < na or (t0 == na and heap[0][1] < _ARRIVAL):  # (t0, kind) < (na, _ARRIVAL)
                return t0
        if self._next_arrival < self._n_limit:
            return na
        return None

    def _advance(self, until_s: float) -> tuple[RequestView, ClusterState] | None:
        """Process events up to the next decision; ``None`` when done or past ``until_s``."""
        bounded = until_s != math.inf
        while True:
            if self._offering:
                if self._rq:
                    i = self._rq[0]
                    if self._decision != i or self._cached_state is None:
                        self._decision = i
                        self._cached_state = self._router_state()
                    return self._view(i), self._cached_state
                self._offering = False
            if bounded:
                t_next = self._peek_time()
                if t_next is None or t_next > until_s:
                    return None
            ev = self._pop()
            if ev is None:
                if self.done:
                    return None
                raise RuntimeError(  # pragma: no cover - engine invariant
                    f"replay stalled at t={self.now_s} with {self._n_limit - self._n_finished} "
                    "unfinished requests and no pending events; this is an engine bug."
                )
            t, kind, a, b = ev
            if t > self._max_time:
                raise RuntimeError(
                    f"replay passed max_sim_time_s = {self._max_time} s with "
                    f"{self._n_limit - self._n_finished} of {self._n_limit} requests "
                    f"unfinished ({len(self._rq)} at the router); expected every request to "
                    "finish. Fix: check that the router does not WAIT forever, or raise "
                    "ReplayConfig.max_sim_time_s."
                )
            self.now_s = t
            if kind == _ITER_END:
                inst = self.inst[a]
                if b == inst.version and inst.busy:
                    self._end_iteration(inst, t)
            elif kind == _ARRIVAL:
                self._arrive(a)
                self._rq.append(a)
                self._offering = True
            elif kind == _TICK:
                self._tick_pending = False
                if self._rq:
                    self._offering = True
            elif kind == _FORM:
                self._form(self.inst[a], t)
            elif kind == _SAMPLE:
                self._sample(t)
            else:
                self._snapshot(t, grid=(a == 0))

    def apply(self, action: int, *, index: int = 0) -> None:
        """Act on the pending decision: route a queued request to ``action`` or WAIT.

        Args:
            action: an instance index, or :data:`WAIT` to hold every queued request
                until the next arrival or action tick.
            index: which request of :meth:`router_queue` to route (default 0, the
                head: what every plain router does). Schedulers may pick any; with
                WAIT it only has to be a valid index.

        Raises:
            RouterError: when ``action`` is not an instance index or :data:`WAIT`, or
                ``index`` is not a position in the router queue.
            RuntimeError: when there is no pending decision.
        """
        if not self._offering or not self._rq:
            raise RuntimeError(
                "Engine.apply called without a pending decision; expected a call to "
                "next_decision() that returned (request, state) first."
            )
        if index != 0:
            ok_index = isinstance(index, (int, np.integer)) and not isinstance(
                index, (bool, np.bool_)
            )
            if not ok_index or not 0 <= int(index) < len(self._rq):
                raise RouterError(
                    f"router {self.router_name!r} chose queue index {index!r} of a router "
                    f"queue of {len(self._rq)} request(s) at t={self.now_s}; expected an int "
                    f"in range(0, {len(self._rq)}). Fix: return a position in the queue "
                    "tuple the scheduler was given."
                )
            index = int(index)
        i = self._rq[index]
        ok = isinstance(action, (int, np.integer)) and not isinstance(action, (bool, np.bool_))
        if not ok or not (action == WAIT or 0 <= int(action) < self.m):
            raise RouterError(
                f"router {self.router_name!r} returned {action!r} for request "
                f"{self._live[i][0].request_id}; expected an instance index in "
                f"range(0, {self.m}) or WAIT ({WAIT}). Fix: return an int index of "
                "ClusterState's instances."
            )
        action = int(action)
        self._decision = None
        self._cached_state = None
        self._settle_state()  # before anything changes
        if action == WAIT:
            self._check_idle_wait()
            self._offering = False
            if not self._tick_pending:
                interval = self.cluster.action_interval_s
                k = math.floor(self.now_s / interval) + 1
                while k * interval <= self.now_s:
                    k += 1
                self._tick_pending = True
                self._push(k * interval, _TICK, 0, 0)
            return
        if index == 0:
            self._rq.popleft()
        else:
            del self._rq[index]
        self._route(i, self.inst[action], self.now_s)

    def router_queue(self) -> tuple[RequestView, ...]:
        """The requests waiting at the router, in arrival order (what a scheduler sees).

        The same views :meth:`next_decision` hands out (:class:`OracleRequestView` only
        for an engine built with ``oracle=True``); position ``k`` is the ``index`` that
        :meth:`apply` and :meth:`dispatch` take. Empty when nothing waits.

        Example:
            >>> import polars as pl
            >>> from routeplay.replay import make_uniform_cluster
            >>> trace = pl.DataFrame({"request_id": [7, 8], "arrival_s": [0.0, 0.0],
            ...                       "prompt_tokens": [100, 10], "output_tokens": [5, 5]})
            >>> eng = Engine(trace, make_uniform_cluster(1))
            >>> _ = eng.next_decision(); eng.apply(WAIT)   # hold request 7 ...
            >>> _ = eng.next_decision()                    # ... 8 arrives: both wait
            >>> [v.request_id for v in eng.router_queue()]
            [7, 8]
            >>> eng.dispatch((1, 0))                       # the short one overtakes the head
            >>> [v.request_id for v in eng.router_queue()], eng.instance_id.tolist()
            ([7], [-1, 0])
        """
        live = self._live
        return tuple(live[i][0] for i in self._rq)

    def dispatch(self, choice: tuple[int, int]) -> None:
        """Apply a scheduler's ``(queue index, instance or WAIT)`` to the pending decision.

        ``(k, instance)`` routes ``router_queue()[k]``; ``(k, WAIT)`` holds the whole
        queue (see the module docstring, "Schedulers").

        Raises:
            RouterError: ``choice`` is not a pair of ints, or either is out of range.
            RuntimeError: when there is no pending decision.
        """
        if not (isinstance(choice, tuple) and len(choice) == 2):
            raise RouterError(
                f"scheduler {self.router_name!r} returned {choice!r}; expected a pair "
                f"(queue index, instance index or WAIT ({WAIT})), e.g. (0, {WAIT}) to hold "
                "every queued request."
            )
        self.apply(choice[1], index=choice[0])

    def _check_idle_wait(self) -> None:
        """Abort a router that keeps requests waiting while the whole cluster is idle.

        Called on every WAIT. While some instance has work, waiting may pay off (a slot
        frees up); while every instance is idle and no request will arrive before the
        router's next tick, only the router can change anything. After
        ``ReplayConfig.max_idle_wait_s`` of simulated time in that state the replay
        stops with a clear error instead of ticking on until ``max_sim_time_s``
        (an always-WAIT router took 4-5 minutes of wall time to get there).
        """
        idle = all(not inst.busy and not inst.slots and inst.n_waiting == 0 for inst in self.inst)
        if not idle:
            self._idle_wait_since_s = None
            return
        if self._idle_wait_since_s is None:
            self._idle_wait_since_s = self.now_s
        elif self.now_s - self._idle_wait_since_s > self.config.max_idle_wait_s:
            raise RuntimeError(
                f"router {self.router_name!r} kept {len(self._rq)} request(s) waiting at the "
                f"router for {self.now_s - self._idle_wait_since_s:.6g} s of simulated time "
                f"(since t = {self._idle_wait_since_s:.6g} s) while every instance was idle; "
                "expected a router to dispatch when the cluster has nothing to do. Fix: route "
                "waiting requests to an idle instance, or raise ReplayConfig.max_idle_wait_s "
                f"(now {self.config.max_idle_wait_s:g} s)."
            )

    # -- forks and run-until helpers -------------------------------------------------
    def fork(self, *, timelines: bool = True) -> Engine:
        """An independent copy of the simulation, continuing bit-identically.

        The fork holds copies of every piece of *mutable* state — the running
        sequences of every instance, local queues and prefix caches, the event heap and
        its sequence counter, the router queue, the records of the requests in flight, the
        per-request result columns, the stale-state snapshots and the timeline samples
        — and shares everything immutable: the trace and its read-only input columns,
        the predictions, the cluster and replay configs, the frozen request views and
        state snapshots. Driving the fork (``apply``, ``next_decision``,
        :meth:`run_until`, :meth:`drain`) never changes this engine, and vice versa.

        Forking at a pending decision keeps it pending: the fork's
        :meth:`next_decision` returns the same request and the same state. Given the
        same actions, the fork and the original produce bit-identical results (same
        event order, same floating-point operations), in both modes.

        Cost: O(requests in flight + instances) Python copies plus an O(trace rows)
        memcpy of the eight result columns (41 bytes per row); see
        ``docs/notes/speed.md`` for measurements (tens of microseconds for 4 instances
        with ~100 requests in flight, vs ~100 ms for ``copy.deepcopy``).

        Args:
            timelines: False for a fork that stops sampling instance timelines (its
                :meth:`result` has none): everything else, every request's numbers
                included, is the same; rollouts that only read latencies use it.

        Returns:
            A new :class:`Engine` at the same simulated time.

        Example:
            >>> import polars as pl
            >>> from routeplay.estimator import LinearLatencyModel
            >>> from routeplay.replay import make_uniform_cluster
            >>> trace = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.05],
            ...                       "prompt_tokens": [100, 100], "output_tokens": [50, 1]})
            >>> eng = Engine(trace, make_uniform_cluster(2))
            >>> _ = eng.next_decision(); eng.apply(0)
            >>> request, _ = eng.next_decision()        # request 1 at t = 0.05
            >>> f = eng.fork()
            >>> f.next_decision()[0] == request          # the decision is still pending
            True
            >>> f.apply(0); _ = f.drain()                # the fork sends it to the busy instance
            >>> eng.apply(1); _ = eng.drain()            # the original to the idle one
            >>> round(float(f.finish_s[1]), 6), round(float(eng.finish_s[1]), 6)
            (0.201, 0.15)
        """
        new = object.__new__(Engine)
        d = self.__dict__.copy()  # scalars and shared immutable inputs
        pb = self._pb_counts.copy()
        db = self._db_counts.copy()
        d["_pb_counts"] = pb
        d["_db_counts"] = db
        book = self._book.fork()
        d["_book"] = book
        d["_live"] = book.live
        d["_last_token"] = book.last_token
        d["inst"] = [inst.fork(book, pb[k], db[k]) for k, inst in enumerate(self.inst)]
        d["_heap"] = self._heap.copy()  # events are immutable tuples
        d["_rq"] = self._rq.copy()
        d["_snapshots"] = self._snapshots.copy()
        d["_timeline"] = self._timeline.copy() if timelines else []
        d["_sampling"] = self._sampling and timelines
        new.__dict__.update(d)
        new._set_result_arrays(book)
        return new

    def _set_result_arrays(self, book: RequestBook) -> None:
        """Expose the book's result columns as the engine's attributes (same arrays)."""
        self.instance_id = book.instance_id
        self.routed_s = book.routed_s
        self.admitted_s = book.admitted_s
        self.first_token_s = book.first_token_s
        self.finish_s = book.finish_s
        self.max_gap_s = book.max_gap_s
        self.n_preempt = book.n_preempt
        self.saved_gen = book.saved_gen

    def stop_arrivals(self) -> None:
        """Admit no more arrivals: the replay ends once the requests arrived so far finish.

        Requests of the trace that have not arrived yet (``arrival_s`` after the last
        processed event) never enter the simulation; :attr:`done` then means "every
        arrived request finished" and :meth:`result` covers the arrived requests only.
        Typically called on a :meth:`fork` (see :meth:`drain`).
        """
        self._n_limit = self._next_arrival
        self._na = math.inf

    def run_until(
        self, until_s: float, route: RouteFn | None = None, *, schedule: ScheduleFn | None = None
    ) -> int:
        """Process every event at or before ``until_s`` (simulated seconds), then pause.

        Decisions met on the way (including one pending now) are routed with
        ``route``; afterwards ``now_s == until_s`` (or later, if ``until_s`` is in the
        past) and :meth:`state` is the exact state at that time. The next
        :meth:`next_decision` continues from there exactly as if never paused.

        Args:
            until_s: absolute simulated time to run to.
            route: ``(request, state) -> action`` for the decisions on the way, e.g.
                ``router.route`` of a router already reset for this cluster.
            schedule: instead of ``route``, ``(queue, state) -> (index, action)`` for
                a scheduler (e.g. ``scheduler.schedule``); give one of the two.

        Returns:
            The number of decisions routed.

        Raises:
            RuntimeError: a decision came up and neither ``route`` nor ``schedule``
                was given.
            ValueError: both were given.

        Example:
            >>> import polars as pl
            >>> from routeplay.replay import make_uniform_cluster
            >>> trace = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 1.0],
            ...                       "prompt_tokens": [100, 100], "output_tokens": [300, 1]})
            >>> eng = Engine(trace, make_uniform_cluster(1))
            >>> eng.run_until(0.2, lambda request, state: 0)
            1
            >>> eng.now_s, eng.running_tokens()[1].tolist()  # 0.1 s prefill + 100 decodes
            (0.2, [101])
        """
        _one_policy("run_until", route, schedule)
        until = float(until_s)
        n = self._decide_all(
            lambda: self._advance(until), route, schedule, f"Engine.run_until({until_s!r})"
        )
        if until_s > self.now_s:
            self.now_s = float(until_s)
        return n

    def drain(self, route: RouteFn | None = None, *, schedule: ScheduleFn | None = None) -> int:
        """Stop arrivals (:meth:`stop_arrivals`) and run until every arrived request finished.

        Requests still waiting at the router are routed with ``route`` (WAIT is allowed;
        the action ticks keep coming). Usually called on a :meth:`fork`.

        Args:
            route: ``(request, state) -> action`` for the remaining decisions.
            schedule: instead of ``route``, ``(queue, state) -> (index, action)`` for
                a scheduler; give one of the two.

        Returns:
            The number of decisions routed.

        Raises:
            RuntimeError: a decision came up and neither ``route`` nor ``schedule``
                was given, or simulated time passed ``max_sim_time_s``.
            ValueError: both were given.
        """
        _one_policy("drain", route, schedule)
        self.stop_arrivals()
        return self._decide_all(self.next_decision, route, schedule, "Engine.drain")

    def _decide_all(
        self,
        step: Callable[[], tuple[RequestView, ClusterState] | None],
        route: RouteFn | None,
        schedule: ScheduleFn | None,
        where: str,
    ) -> int:
        """Act on every decision ``step`` yields (with ``schedule`` or ``route``); count them."""
        n = 0
        while (decision := step()) is not None:
            # the decision is dropped before acting on it: a state nobody kept is then
            # never computed (see _LazyClusterState)
            if schedule is not None:
                choice = schedule(self.router_queue(), decision[1])
                decision = None
                self.dispatch(choice)
            elif route is None:
                raise RuntimeError(
                    f"{where} met a routing decision at t={self.now_s} (request "
                    f"{decision[0].request_id} waiting at the router) but route is None; "
                    "expected a function (request, state) -> action. Fix: pass "
                    "route=router.route."
                )
            else:
                action = route(decision[0], decision[1])
                decision = None
                self.apply(action)
            n += 1
        return n

    @property
    def n_arrived(self) -> int:
        """Requests (trace rows ``0..n_arrived-1``) that have arrived so far."""
        return self._next_arrival

    @property
    def n_finished(self) -> int:
        """Requests finished so far."""
        return self._n_finished

    @property
    def n_admitted(self) -> int:
        """Requests admitted into an instance's batch (for the first time) so far."""
        return self._book.n_admitted

    @property
    def n_in_flight(self) -> int:
        """Requests arrived and not finished (at the router, queued or running)."""
        return len(self._live)

    @property
    def first_in_flight(self) -> int:
        """Row of the oldest request arrived and not finished (``n_arrived`` if none).

        Rows before it have final results: nothing a router does now can change them.
        """
        return min(self._live) if self._live else self._next_arrival

    def e2e_sum_s(self, start: int = 0) -> float:
        """Sum of end-to-end latencies (finish - arrival) of rows ``start..n_arrived-1``.

        Raises:
            RuntimeError: when one of those requests has not finished (drain first).
        """
        lo, hi = int(start), self._next_arrival
        e2e = self.finish_s[lo:hi] - self.arrival[lo:hi]
        if np.isnan(e2e).any():
            raise RuntimeError(
                f"Engine.e2e_sum_s({start}): {int(np.isnan(e2e).sum())} of rows {lo}..{hi - 1} "
                "have not finished; expected all finished. Fix: call drain() first."
            )
        return float(e2e.sum())

    def bind_router(self, router: object) -> None:
        """Give a router that declares ``needs_engine = True`` a fork function.

        The hook for routers that need the simulator (reference policies such as
        ``lookahead-oracle``): they never get the engine itself, only
        ``router.bind_engine(fork)`` where ``fork()`` returns :meth:`fork` of this
        engine *at the decision being routed*. Routers without the flag are left
        alone. :func:`run_replay` calls this after ``router.reset``; other drivers of
        the engine do the same (once per replay, after ``reset``).

        Raises:
            TypeError: the router declares ``needs_engine`` but has no ``bind_engine``.
        """
        if not getattr(router, "needs_engine", False):
            return
        bind = getattr(router, "bind_engine", None)
        if not callable(bind):
            raise TypeError(
                f"router {getattr(router, 'name', type(router).__name__)!r} declares "
                "needs_engine = True but has no bind_engine(fork) method; expected one that "
                "stores the fork function. Fix: add bind_engine or drop needs_engine."
            )
        bind(self.fork)

    # -- routing ---------------------------------------------------------------------
    def _route(self, i: int, inst: Instance, t: float) -> None:
        rec = self._live[i]
        inst.check_routable(rec)
        self.instance_id[i] = inst.idx
        self.routed_s[i] = t
        seq = 0
        if inst.policy == "least-work-left":  # ties in its queue: routing order
            seq = self._nseq
            self._nseq = seq + 1
        inst.accept(i, rec, seq)
        if inst.busy:
            if inst.cut_run(t):
                self._push(inst.t_end, _ITER_END, inst.idx, inst.version)
        elif not inst.form_pending:
            inst.form_pending = True
            self._push(t, _FORM, inst.idx, 0)

    # -- instance events -------------------------------------------------------------------
    def _form(self, inst: Instance, t: float) -> None:
        """The instance forms its next iteration at ``t``; schedule the iteration's end."""
        if inst.form(t):
            self._push(inst.t_end, _ITER_END, inst.idx, inst.version)

    def _end_iteration(self, inst: Instance, t: float) -> None:
        """The instance's iteration (or decode run) ended at ``t``; form the next one."""
        self._n_finished += inst.iteration_end(t)
        if inst.slots or inst.n_queued():
            nt = self._peek_time()
            if nt is not None and nt <= t:
                inst.form_pending = True
                self._push(t, _FORM, inst.idx, 0)
            else:
                # nothing else is due at t: a FORM event pushed now would be the very next
                # one popped, so form at once (event order and every result unchanged;
                # only the tie-breaking counter skips a number, which keeps its order)
                self._form(inst, t)

    # -- observation ---------------------------------------------------------------------
    def _view(self, i: int) -> RequestView:
        return self._live[i][0]

    def _state_now(self, t: float) -> ClusterState:
        return ClusterState(*self._state_values(t))

    def _state_values(self, t: float, defer_pred: bool = False) -> tuple[Any, ...]:
        """The fields of the state at ``t``, in the order of ``ClusterState``'s fields.

        ``defer_pred`` (a lazy state): with a predictor, ``predicted_decode_tokens_left``
        is :data:`_LATER` (summed by :meth:`_pred_values` when read, or before the engine
        changes if the state is still held: the sums over every running sequence are a
        third of a state's cost, and most routers never read them).
        """
        has_pred = self.has_predictor
        defer = defer_pred and has_pred
        cols = list(zip(*[inst.numbers(t, has_pred, defer) for inst in self.inst], strict=True))
        ints = np.array(cols[:8], np.int64)
        ints.setflags(write=False)
        if defer:
            pred: Any = _LATER
            earliest = _ro(np.array(cols[9], np.float64))
        else:
            floats = np.array(cols[8:10], np.float64)
            floats.setflags(write=False)
            pred = floats[0]
            earliest = floats[1]
        pb = self._pb_counts.copy()
        db = self._db_counts.copy()
        pb.setflags(write=False)
        db.setflags(write=False)
        return (
            t,  # now_s
            min(len(self._rq), self.cluster.router_queue_cap),  # router_queue_len
            ints[0],  # n_queued
            ints[1],  # n_running
            ints[2],  # prefill_tokens_pending
            ints[3],  # decode_tokens_done
            pred,  # predicted_decode_tokens_left
            ints[4],  # kv_used_tokens
            self._kv_cap,  # kv_capacity_tokens
            self._max_seqs,  # max_running_seqs
            pb,  # prompt_bucket_counts
            db,  # decode_bucket_counts
            earliest,  # earliest_completion_s
            ints[7],  # n_completed
            ints[5],  # tokens_in_system
            ints[6] if self.oracle else None,  # oracle_decode_tokens_left
        )

    def _state_columns(self, t: float) -> StateColumns:
        """:meth:`ClusterState.columns` of the state at ``t`` (the engine still at ``t``)."""
        has_pred = self.has_predictor
        numbers = [inst.numbers(t, has_pred, True, True) for inst in self.inst]
        cols = tuple(zip(*numbers, strict=True))
        return StateColumns(
            t,
            cols[0],
            cols[1],
            cols[2],
            cols[3],
            cols[4],
            self._kv_cap_ints,
            self._max_seqs_ints,
            cols[7],
            cols[5],
        )

    def _pred_values(self, t: float) -> _F64:
        """``predicted_decode_tokens_left`` at ``t`` (the engine still at ``t``)."""
        has_pred = self.has_predictor
        return _ro(np.array([inst.numbers(t, has_pred)[8] for inst in self.inst], np.float64))

    def _router_state(self) -> ClusterState:
        if self._delay <= 0:
            state = object.__new__(_LazyClusterState)
            object.__setattr__(state, "_engine", self)
            object.__setattr__(state, "_at_s", self.now_s)
            self._lazy_state = weakref.ref(state)
            return state
        target = self.now_s - self._delay
        snaps = self._snapshots
        while len(snaps) > 1 and snaps[1][0] <= target:
            snaps.popleft()
        if not snaps or snaps[0][0] > target:
            return self._empty_state(max(target, 0.0))
        return snaps[0][1]

    def _settle_state(self) -> None:
        """Give the pending decision's lazy state its values if anybody still holds it.

        Called before the engine changes anything after a decision (:meth:`apply`); a
        state nobody holds any more is simply dropped (never computed).
        """
        ref = self._lazy_state
        if ref is not None:
            self._lazy_state = None
            state = ref()
            if state is not None:
                state._materialise()

    def _empty_state(self, t: float) -> ClusterState:
        m = self.m
        zi = _ro(np.zeros(m, np.int64))
        return ClusterState(
            now_s=t,
            router_queue_len=0,
            n_queued=zi,
            n_running=zi,
            prefill_tokens_pending=zi,
            decode_tokens_done=zi,
            predicted_decode_tokens_left=_ro(np.zeros(m, np.float64)),
            kv_used_tokens=zi,
            kv_capacity_tokens=self._kv_cap,
            max_running_seqs=self._max_seqs,
            prompt_bucket_counts=_ro(np.zeros((m, self.n_prompt_buckets), np.int64)),
            decode_bucket_counts=_ro(np.zeros((m, self.n_decode_buckets), np.int64)),
            earliest_completion_s=_ro(np.full(m, t)),
            n_completed=zi,
            tokens_in_system=zi,
            oracle_decode_tokens_left=zi if self.oracle else None,
        )

    def state(self) -> ClusterState:
        """The exact (never stale) cluster state at the current simulated time."""
        return self._state_now(self.now_s)

    def running_tokens(self) -> tuple[_I64, _I64]:
        """Trace row indices and generated output tokens of the running sequences, now.

        Read-only; counts the iterations of a decode run completed by ``now_s`` exactly
        as :meth:`state` does. Used by the RL reward's progress term
        (:mod:`routeplay.replay.rl._outcomes`). Requests queued after a preemption keep
        their tokens in :attr:`saved_gen`.

        Example:
            >>> import polars as pl
            >>> from routeplay.estimator import LinearLatencyModel
            >>> from routeplay.replay import ClusterConfig, InstanceConfig
            >>> lat = LinearLatencyModel.from_throughput(1000.0)
            >>> cluster = ClusterConfig(instances=(InstanceConfig(name="a", latency=lat),))
            >>> trace = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.5],
            ...                       "prompt_tokens": [100, 100], "output_tokens": [900, 1]})
            >>> eng = Engine(trace, cluster)
            >>> _ = eng.next_decision(); eng.apply(0)
            >>> _ = eng.next_decision()  # t = 0.5: prefill took 0.1 s, then 1 ms per token
            >>> idx, gen = eng.running_tokens()
            >>> idx.tolist(), gen.tolist()
            ([0], [401])
        """
        rows, base, segment = self._running_base()
        return rows.copy(), base + np.array(self.running_adds(), np.int64)[segment]

    def running_token_parts(self) -> tuple[_I64, _I64, _I64]:
        """:meth:`running_tokens` in parts: ``(rows, stored tokens, segment ids)``.

        The generated tokens of running row ``rows[j]`` now are ``stored[j] +
        running_adds()[segment[j]]``. The three arrays change only when
        :attr:`running_key` does (they are the same objects until then, and read-only
        by convention: never mutate them), so a caller that keeps per-row data aligned
        with them rebuilds it only then and adds :meth:`running_adds` at every step.
        """
        return self._running_base()

    def running_adds(self) -> list[int]:
        """Per segment of :meth:`running_token_parts`, the tokens to add to the stored ones.

        Segment ``2 k`` (instance ``k``'s decoders) gets the instance's tick plus the
        iterations of a decode run in progress completed by ``now_s``; segment ``2 k + 1``
        (its sequences still prefilling: no decode run then) gets that run's iterations,
        i.e. 0.
        """
        # per instance: lazy decoders (the prefix of its slots) store gen - tick; a decode
        # run in progress (nothing prefilling then) adds the iterations completed by now
        now = self.now_s
        add: list[int] = []
        for inst in self.inst:
            k = inst.k_done(now - inst.t0) if inst.busy and inst.run_k > 1 else 0
            add.append(inst.tick + k)
            add.append(k)
        return add

    @property
    def running_key(self) -> tuple[int, ...]:
        """Changes whenever the rows of :meth:`running_tokens` (or their order) may change."""
        return tuple([inst.slot_epoch for inst in self.inst])

    def _running_base(self) -> tuple[_I64, _I64, _I64]:
        """Running rows, their stored generated tokens and segment ids, cached by ``running_key``.

        Segment ``2 k`` is instance ``k``'s decoders (stored gen - tick), ``2 k + 1`` its
        sequences still prefilling (stored gen). The arrays are never mutated (a fork
        shares them until its own instances change).
        """
        key = self.running_key
        cached = self._running_cache
        if cached is not None and cached[0] == key:
            return cached[1]
        parts = [inst.stored_running() for inst in self.inst]
        lengths: list[int] = []
        for _, gens, d in parts:
            lengths += [d, gens.shape[0] - d]
        arrays = (
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.repeat(np.arange(2 * self.m), lengths),
        )
        self._running_cache = (key, arrays)
        return arrays

    def _snapshot(self, t: float, *, grid: bool) -> None:
        if self.done:
            return
        self._snapshots.append((t, self._state_now(t)))
        if grid:
            self._snap_grid_k += 1
            self._push_grid_snapshot()

    def _sample(self, t: float) -> None:
        if not self._sampling:
            return  # a pending SAMPLE event of a fork without timelines: no state change
        for inst in self.inst:
            nq, n, kv_used, busy = inst.timeline_numbers(t)
            self._timeline.append((t, inst.idx, nq, n, kv_used, bool(busy)))
        if not self.done:
            self._sample_k += 1
            if self._sample_k >= self.config.max_timeline_samples:
                raise RuntimeError(
                    f"the timeline reached ReplayConfig.max_timeline_samples = "
                    f"{self.config.max_timeline_samples:,} samples per instance at t = {t:.6g} s "
                    "with requests still unfinished; expected a replay that ends within that "
                    "many samples. Fix: raise timeline_sample_interval_s, set it to None, or "
                    "raise max_timeline_samples."
                )
            interval = float(self.config.timeline_sample_interval_s or 1.0)
            self._push(self._sample_t0_s + self._sample_k * interval, _SAMPLE, 0, 0)

    # -- result ------------------------------------------------------------------------------
    def result(self) -> ReplayResult:
        """Build the :class:`ReplayResult` (runs the remaining simulation if needed).

        Raises:
            RuntimeError: when a routing decision is still pending.
        """
        if not self.done:
            if self.next_decision() is not None:
                raise RuntimeError(
                    "Engine.result called while a routing decision is pending; expected "
                    "next_decision() to return None first (apply an action to every request)."
                )
        # after stop_arrivals only the arrived rows (a prefix of the trace) are reported
        lim = self._n_limit
        trace = self._trace if lim == self.n_requests else self._trace[:lim]
        arrival = self.arrival[:lim]
        first = self.first_token_s[:lim]
        finish = self.finish_s[:lim]
        routed = self.routed_s[:lim]
        n_out = self.output[:lim]
        with np.errstate(invalid="ignore", divide="ignore"):
            tbt_mean = np.where(n_out > 1, (finish - first) / np.maximum(n_out - 1, 1), np.nan)
        tbt_max = np.where(n_out > 1, self.max_gap_s[:lim], np.nan)
        cols: dict[str, Any] = {
            "request_id": trace["request_id"],
            "arrival_s": arrival,
            "prompt_tokens": trace["prompt_tokens"],
            "output_tokens": trace["output_tokens"],
            "instance_id": self.instance_id[:lim],
            "routed_s": routed,
            "admitted_s": self.admitted_s[:lim],
            "first_token_s": first,
            "finish_s": finish,
            "ttft_s": first - arrival,
            "tbt_mean_s": tbt_mean,
            "tbt_max_s": tbt_max,
            "e2e_s": finish - arrival,
            "router_wait_s": routed - arrival,
            "queue_wait_s": self.admitted_s[:lim] - routed,
            "n_preemptions": self.n_preempt[:lim],
        }
        requests = pl.DataFrame(
            {k: pl.Series(k, v).cast(REQUEST_SCHEMA[k]) for k, v in cols.items()}
        ).with_columns(pl.col("tbt_mean_s", "tbt_max_s").fill_nan(None))
        if "task" in trace.columns:
            requests = requests.insert_column(4, trace["task"])
        if self._timeline:
            tl = pl.DataFrame(self._timeline, schema=list(TIMELINE_SCHEMA), orient="row")
            timelines = tl.cast(dict(TIMELINE_SCHEMA))  # type: ignore[arg-type]
        else:
            timelines = pl.DataFrame(schema=TIMELINE_SCHEMA)
        summary = summarize_requests(requests)
        makespan = summary["makespan_s"]
        util = tuple((inst.busy_time_s / makespan) if makespan > 0 else 0.0 for inst in self.inst)
        for k, u in enumerate(util):
            summary[f"utilisation_{k}"] = u
        cv, ratio = utilisation_imbalance(util)
        summary[UTILISATION_CV] = cv
        summary[IMBALANCE_MAX_MIN] = ratio
        return ReplayResult(
            requests=requests,
            timelines=timelines,
            summary=summary,
            utilisation=util,
            config=self.config,
            cluster=self.cluster,
            router_name=self.router_name,
            oracle=self.oracle,
            seed=self.config.seed,
        )

    def router_rng(self) -> np.random.Generator:
        """The generator handed to ``router.reset`` (from ``config.seed``)."""
        return np.random.default_rng(np.random.SeedSequence(self.config.seed))


def run_replay(
    trace: pl.DataFrame,
    cluster: ClusterConfig,
    router: Router | Scheduler,
    *,
    config: ReplayConfig | None = None,
    predictor: OutputLengthPredictor | None = None,
    show_progress: bool = False,
) -> ReplayResult:
    """Replay ``trace`` on ``cluster`` under ``router``; a pure function (writes no files).

    The router is reset with the cluster and a generator seeded from ``config.seed``,
    then asked at every decision (see :class:`Engine` and the module docstring for
    the rules). Routers whose ``oracle`` attribute is True see true output lengths.
    A :class:`Scheduler` (it has ``schedule``; :func:`is_scheduler`) is offered the
    whole router queue at every decision and answers ``(index, instance or WAIT)``.

    Args:
        trace: canonical trace (validated).
        cluster: the cluster.
        router: any object with ``name``, ``oracle``, ``reset`` and ``route``, or a
            scheduler with ``schedule`` instead of (or besides) ``route``.
        config: replay settings (default :class:`ReplayConfig()`).
        predictor: optional output-length predictor, called once on the trace.
        show_progress: a tqdm bar of requests arrived (with an ETA) on stderr: the
            replay runs in slices of 1/200 of the arrival span (:meth:`Engine.run_until`,
            which continues bit for bit as if never paused), so the result is the same.

    Returns:
        The :class:`ReplayResult`.

    Raises:
        RouterError: when the router returns an invalid index.

    Example:
        >>> import polars as pl
        >>> from routeplay.estimator import LinearLatencyModel
        >>> from routeplay.replay import ClusterConfig, InstanceConfig
        >>> class First:
        ...     name, oracle = "first", False
        ...     def reset(self, cluster, rng): pass
        ...     def route(self, request, state): return 0
        >>> lat = LinearLatencyModel.from_throughput(1000.0)
        >>> cluster = ClusterConfig(instances=(InstanceConfig(name="a", latency=lat),))
        >>> trace = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.0],
        ...                       "prompt_tokens": [100, 100], "output_tokens": [1, 1]})
        >>> res = run_replay(trace, cluster, First())
        >>> res.requests["finish_s"].to_list()  # one prefill iteration of 200 tokens
        [0.2, 0.2]
    """
    name = str(getattr(router, "name", type(router).__name__))
    engine = Engine(
        trace,
        cluster,
        config=config,
        predictor=predictor,
        oracle=bool(getattr(router, "oracle", False)),
        router_name=name,
    )
    router.reset(cluster, engine.router_rng())
    engine.bind_router(router)
    if show_progress and trace.height:
        _run_with_progress(engine, router, name)
    else:
        _run_to_end(engine, router)
    return engine.result()


def _run_to_end(engine: Engine, router: Router | Scheduler) -> None:
    """Ask ``router`` at every remaining decision until every request finished."""
    step = engine.next_decision
    if is_scheduler(router):
        schedule = router.schedule  # type: ignore[union-attr]
        queue = engine.router_queue
        dispatch = engine.dispatch
        while (decision := step()) is not None:
            choice = schedule(queue(), decision[1])
            decision = None  # so that a state nobody kept is never computed
            dispatch(choice)
        return
    route = router.route  # type: ignore[union-attr]
    apply = engine.apply
    while (decision := step()) is not None:
        action = route(decision[0], decision[1])
        decision = None  # so that a state nobody kept is never computed
        apply(action)


def _run_with_progress(engine: Engine, router: Router | Scheduler, name: str) -> None:
    """Run ``engine`` to the end: to its last arrival in slices, updating a bar of arrivals."""
    from tqdm.auto import tqdm

    first_s = float(engine.arrival[0])
    last_s = float(engine.arrival[-1])
    n = int(engine.arrival.shape[0])
    policy: dict[str, Any] = (
        {"schedule": router.schedule}  # type: ignore[union-attr]
        if is_scheduler(router)
        else {"route": router.route}  # type: ignore[union-attr]
    )
    # at most 200 redraws, so every slice may draw (mininterval=0)
    with tqdm(total=n, desc=f"replay {name}", unit="req", leave=False, mininterval=0) as bar:
        for k in range(1, 201):
            until_s = last_s if k == 200 else first_s + (last_s - first_s) * k / 200
            engine.run_until(until_s, **policy)
            bar.update(engine.n_arrived - bar.n)
        _run_to_end(engine, router)
        bar.update(engine.n_arrived - bar.n)
        bar.refresh()  # show the full count before the bar is cleared


def is_scheduler(policy: object) -> bool:
    """True for a :class:`Scheduler` (it has ``schedule``): it is offered the whole queue.

    Example:
        >>> from routeplay.replay import make_router
        >>> is_scheduler(make_router("late-binding-spf")), is_scheduler(make_router("min-min"))
        (True, False)
    """
    return callable(getattr(policy, "schedule", None))
