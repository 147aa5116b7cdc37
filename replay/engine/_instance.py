"""One instance of the cluster: running sequences, local queue, KV and batch formation.

The rules it implements are specified in the engine's module docstring
(:mod:`routeplay.replay.engine._engine`: "Instance", "Scheduler variants", "Prefix cache", "Fast
mode"); this module holds the per-instance half of them, the engine the clock, the
event queue, routing and the state handed to routers. Both modes share this code:
reference mode only makes every decode iteration its own event (``reference=True``
plans runs of one iteration).
"""

# Why this module is long: the per-instance rules of the three scheduler variants
# (vllm-v1, vllm-v0, sarathi) share one slot layout and one KV accounting; split, one
# specification would be scattered over files.

from __future__ import annotations

import heapq
import math
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from routeplay.estimator._clock import IterationClock, get_clock

from .._types import InstanceConfig, RequestView

__all__ = ["Instance", "RequestBook"]

#: (view, prompt, output, predicted tokens, predicted bucket, prompt bucket, prefix)
Record = tuple[RequestView, int, int, float, int, int, tuple[int, ...]]
_Record = Record
_I64 = npt.NDArray[np.int64]

# A running sequence ("slot") is a small list, in admission order per instance (newest
# last = the preemption victim); plain Python ints and floats, which are cheaper than
# numpy for the few to few hundred sequences an instance runs. Fields:
_RID = 0  # trace row
_CTX = 1  # prompt + generated tokens (the prefill target while prefilling)
_GEN = 2  # output tokens generated
_OUT = 3  # true output tokens
_PLEFT = 4  # prefill tokens still to compute
_PDONE = 5  # prefill tokens already in KV
_PRED = 6  # predicted output tokens (float)
_CHUNK = 7  # this iteration's prefill chunk
_MGAP = 8  # longest token gap so far (float, s)
_STALL = 9  # vllm-v0: paused time since the last token (float, s)
_EV = 10  # vllm-v1 decoder: first gap event it takes part in (-1 while prefilling)
_FT = 11  # vllm-v1 decoder: the instance tick at which it finishes (-1 otherwise)
_DEAD_SLOT = (-1,) * 12  # the length of a slot

# Lazy decoders (vllm-v1 only; ``Instance.lazy``). A decode run of k iterations adds k
# tokens to *every* decoding sequence, and a mixed iteration one; writing them into
# every slot made each iteration end O(running sequences). Instead a vllm-v1 instance
# keeps a tick, the tokens every decoder has received since the instance was created,
# and a decoder (a slot with nothing left to prefill: the prefix [0, d) of the slots)
# stores its _GEN and _CTX *minus the tick* (actual = stored + tick); sequences still
# prefilling (the suffix [d, n)) store actual values. A decoder's _MGAP holds its
# longest gap before it became a decoder; the gaps of the iterations since (one value
# per decode run or mixed iteration, the same for every decoder) are in a suffix-max
# stack, queried from its _EV. Finishing decoders come from a heap of their finish
# ticks (_FT = _OUT - stored _GEN), and the KV block sums over decoders from counts of
# their stored contexts modulo the block size. vllm-v0 and sarathi keep the tick at 0
# and update every slot as before (their rules read each sequence at every iteration).


def pairwise_sum(a: list[float], lo: int, n: int) -> float:
    """``float(np.array(a[lo:lo + n]).sum())`` for float64, bit for bit, without numpy.

    numpy sums a contiguous float64 array pairwise: fewer than 8 values in order; up to
    128 in eight interleaved partial sums combined as ``((r0 + r1) + (r2 + r3)) + ((r4
    + r5) + (r6 + r7))`` and the remainder added in order; longer arrays split at
    ``n // 2`` rounded down to a multiple of 8. The state's predicted tokens left have
    always been summed by numpy; this keeps them identical at a fraction of the cost
    (checked against numpy on 20,000 random arrays of 1-400 values in
    tests/replay/test_engine.py).

    Example:
        >>> a = [0.1] * 10
        >>> pairwise_sum(a, 0, 10) == float(np.array(a).sum())
        True
    """
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    if n <= 128:
        r0, r1, r2, r3, r4, r5, r6, r7 = a[lo : lo + 8]
        end = lo + n - (n % 8)
        j = lo + 8
        while j < end:
            r0 += a[j]
            r1 += a[j + 1]
            r2 += a[j + 2]
            r3 += a[j + 3]
            r4 += a[j + 4]
            r5 += a[j + 5]
            r6 += a[j + 6]
            r7 += a[j + 7]
            j += 8
        res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        while j < lo + n:
            res += a[j]
            j += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return pairwise_sum(a, lo, n2) + pairwise_sum(a, lo + n2, n - n2)


def _last_fitting(k: int, fits: Callable[[int], bool]) -> int:
    """The largest ``j`` in ``[1, k)`` with ``fits(j)``, given ``fits(1)`` and not ``fits(k)``.

    ``fits`` must be monotone (true up to some ``j``, false after): a decode run's KV use
    only grows with its length. Binary search.
    """
    lo, hi = 1, k
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo


def _by_rid(slot: list[Any]) -> int:
    return int(slot[_RID])


def _blocks_after(slots: list[list[Any]], k: int, b: int) -> int:
    """KV tokens (block-rounded per sequence) once every slot has ``k`` more tokens."""
    add = k + b - 1
    blocks = 0
    for sl in slots:
        blocks += (sl[_CTX] + add) // b
    return blocks * b


#: the per-request result columns (one row per trace row; copied by a fork)
RESULT_ARRAYS = (
    "instance_id",
    "routed_s",
    "admitted_s",
    "first_token_s",
    "finish_s",
    "max_gap_s",
    "n_preempt",
    "saved_gen",
)


class RequestBook:
    """Per-request state of one replay, shared by the engine and its instances.

    ``live`` maps the trace row of every request in flight (arrived, not finished) to
    its record; ``last_token`` the preempted ones to the time of their last token; the
    result columns (:data:`RESULT_ARRAYS`) are preallocated numpy arrays, the only O(rows)
    state of a replay.
    """

    def __init__(self, n: int) -> None:
        self.live: dict[int, Record] = {}
        self.last_token: dict[int, float] = {}
        self.instance_id = np.full(n, -1, np.int32)
        self.routed_s = np.full(n, np.nan)
        self.admitted_s = np.full(n, np.nan)
        self.first_token_s = np.full(n, np.nan)
        self.finish_s = np.full(n, np.nan)
        self.max_gap_s = np.zeros(n, np.float64)
        self.n_preempt = np.zeros(n, np.int32)
        self.saved_gen = np.zeros(n, np.int32)  # tokens generated before a preemption
        self.n_admitted = 0  # requests admitted (for the first time) so far

    def fork(self) -> RequestBook:
        """An independent copy (records are immutable tuples and are shared)."""
        new = object.__new__(RequestBook)
        new.live = self.live.copy()
        new.last_token = self.last_token.copy()
        new.n_admitted = self.n_admitted
        for name in RESULT_ARRAYS:
            setattr(new, name, getattr(self, name).copy())
        return new


def _apply_chunks(slots: list[list[Any]], d: int, n: int) -> int:
    """Book the prefill chunks of ``slots[d:n]`` that ran; return the end of the finished run.

    The prefilling slots follow the ``d`` decoders in order; each with a chunk in this
    iteration gets it counted (``_PDONE`` up, ``_PLEFT`` down). Slots whose prompt is now
    complete form ``slots[d:e]``; the first that still has prompt left stops the run.
    """
    e = d
    while e < n and slots[e][_CHUNK] > 0:
        sl = slots[e]
        c = sl[_CHUNK]
        sl[_CHUNK] = 0
        sl[_PDONE] += c
        left = sl[_PLEFT] - c
        sl[_PLEFT] = left
        if left:
            break
        e += 1
    return e


class Instance:
    """One instance: its running sequences, local queue, KV use and batch formation.

    The engine owns the clock and the event queue; an instance is driven by four calls:
    :meth:`accept` (a request routed here), :meth:`form` (form the next iteration at
    ``t``; the engine schedules its end at :attr:`t_end`), :meth:`iteration_end` (apply
    the iteration or decode run that ended) and :meth:`cut_run` (a routing decision
    in the middle of a decode run ends it at the next iteration boundary). The rules
    are the engine module's docstring ("Instance", "Scheduler variants", "Fast
    mode"). Per-request state shared with the engine lives in the :class:`RequestBook`.

    Args:
        idx: the instance's index in the cluster.
        cfg: its configuration.
        n_pb / n_db: prompt / decode bucket counts of the state.
        book: the engine's request book.
        reference: reference mode (every iteration its own event).
        has_prefix: the trace has ``prefix_blocks`` (prefix caching possible).
    """

    def __init__(
        self,
        idx: int,
        cfg: InstanceConfig,
        n_pb: int,
        n_db: int,
        book: RequestBook,
        *,
        reference: bool,
        has_prefix: bool,
    ) -> None:
        self.idx = idx
        self.book = book
        self.reference = reference
        self.has_prefix = has_prefix
        self.cfg = cfg
        lat = cfg.latency
        self.c0 = lat.intercept_s
        self.c_pb = lat.prefill_batch_s
        self.c_p = lat.prefill_s_per_token
        self.c_p2 = lat.prefill_s_per_token2
        self.c_d = lat.decode_s_per_seq
        self.c_kv = lat.decode_s_per_context_token
        # a profile clock prices every iteration itself (not linear: no closed-form runs)
        self.clock: IterationClock | None = get_clock(cfg.clock) if cfg.clock is not None else None
        self.stepwise = reference or self.clock is not None
        self.block = cfg.kv_block_tokens
        self.cap_kv = cfg.kv_capacity_tokens
        self.max_seqs = cfg.max_running_seqs
        self.max_bt = cfg.max_batched_tokens
        self.chunked = cfg.chunked_prefill
        self.policy = cfg.batching
        # vllm-v0 and sarathi rules (see the module docstring, "Scheduler variants")
        self.v0 = cfg.scheduler == "vllm-v0"
        self.sarathi = cfg.scheduler == "sarathi"
        self.alt = self.v0 or self.sarathi  # not vllm-v1: the one branch of form()
        self.blockwise = self.alt  # vllm-v0's block accounting (kv_now, routing check)
        self.cap_blocks = cfg.kv_capacity_tokens // cfg.kv_block_tokens
        self.wm_blocks = int(cfg.kv_watermark_fraction * self.cap_blocks) if self.alt else 0
        self.paused = False  # vllm-v0: this iteration is prefill-only (decodes wait)
        # running sequences, in admission order (see _RID.._STALL)
        self.slots: list[list[Any]] = []
        # counts the changes of the running rows or their stored tokens (stored_running)
        self.slot_epoch = 0
        self._stored: tuple[int, _I64, _I64, int] | None = None  # stored_running()'s
        self.n_prefilling = 0
        # local queue: preempted first, then policy structure
        self.preempted: deque[int] = deque()
        self.fifo: deque[int] = deque()
        self.heap: list[tuple[float, int, int]] = []
        self.binlist: list[int] = []
        self.n_waiting = 0
        self.q_target_sum = 0  # prefill targets of queued requests
        self.q_gen_sum = 0  # generated tokens of queued (preempted) requests
        self.q_pred_left = 0.0  # sum of max(pred - gen, 0) over queued
        self.q_oracle_left = 0  # sum of (out - gen) over queued
        self.prompt_sum = 0  # prompt tokens of queued + running
        self.pb_counts = np.zeros(n_pb, np.int64)
        self.db_counts = np.zeros(n_db, np.int64)
        self.n_completed = 0
        # current iteration / run
        self.busy = False
        self.form_pending = False
        self.version = 0
        self.t0 = 0.0
        self.run_a = 0.0  # first iteration time of a decode run
        self.run_b = 0.0  # increment per iteration (c_kv * n)
        self.run_k = 0  # planned iterations (0 = mixed single iteration)
        self.t_end = 0.0
        self.busy_time_s = 0.0
        self.lru: OrderedDict[int, None] = OrderedDict()
        # running aggregates, kept incrementally
        self.gen_sum = 0
        self.ctx_sum = 0
        self.out_sum = 0
        self._kv = 0  # sum of blocks(ctx) over running; -1 = recompute
        # lazy decoders (see the comment at _EV/_FT); vllm-v1 only
        self.lazy = not self.alt
        self.tick = 0
        self.fin_heap: list[tuple[int, int, list[Any]]] = []  # (finish tick, seq, slot)
        self.heap_seq = 0
        self.gap_ev: list[int] = []  # event indices, increasing
        self.gap_val: list[float] = []  # their gaps, strictly decreasing (suffix maxima)
        self.n_ev = 0  # index of the next gap event
        self.res_cnt = [0] * self.block  # decoders per stored context modulo the block
        self.res_q = 0  # sum of stored context // block over decoders
        self.res_n = 0  # decoders counted in res_cnt
        self.gap_trim_at = 64  # trim the gap stack when it grows past this
        # numbers(): a counter of changes to this instance, and the last numbers computed
        # (key (mut, k, has_predictor), the first nine numbers (the ninth None until
        # summed), t_iter * r_min (None until computed))
        self.mut = 0
        self._numbers: tuple[tuple[int, int, bool], tuple[Any, ...], float | None] | None = None

    def kv_now(self) -> int:
        """KV tokens held by the running sequences (block-rounded)."""
        slots = self.slots
        if self.blockwise:
            # vllm-v0 allocation (sarathi too): a decoding sequence holds blocks(ctx - 1)
            # between iterations and while paused, blocks(ctx) during its decode iteration
            if not slots:
                return 0
            b = self.block
            d = len(slots) - self.n_prefilling
            lag = b - 1 - (1 if (self.paused or not self.busy) else 0)
            held = 0
            for sl in slots[:d]:
                held += (sl[_CTX] + lag) // b
            for sl in slots[d:]:
                held += (sl[_CTX] + (b - 1)) // b
            return held * b
        if self._kv < 0:
            if self.lazy:
                b = self.block
                blocks = self.dec_blocks(self.tick + b - 1)
                for sl in slots[len(slots) - self.n_prefilling :]:
                    blocks += (sl[_CTX] + b - 1) // b
                self._kv = blocks * b
            else:
                self._kv = _blocks_after(slots, 0, self.block)
        return self._kv

    # -- lazy decoders (vllm-v1; the comment at _EV/_FT) -------------------------------
    def dec_blocks(self, x: int) -> int:
        """``sum((stored ctx + x) // block)`` over the decoders, from the residue counts.

        With a stored context ``s = q * b + r`` (``0 <= r < b``, Python's floor
        division, also for negative ``s``): ``(s + x) // b = q + x // b + [r >= b - x %
        b]``; so the sum is the quotients' sum, ``x // b`` per decoder, and the decoders
        whose residue reaches ``b - x % b``.
        """
        b = self.block
        blocks = self.res_q + self.res_n * (x // b)
        xr = x % b
        if xr:
            blocks += sum(self.res_cnt[b - xr :])
        return blocks

    def dec_blocks_after(self, k: int) -> int:
        """KV tokens (block-rounded) of the decoders once each has ``k`` more tokens."""
        b = self.block
        return self.dec_blocks(self.tick + k + b - 1) * b

    def enroll(self, sl: list[Any]) -> None:
        """Make a slot whose prefill just completed a lazy decoder (stored = actual - tick)."""
        tick = self.tick
        b = self.block
        g = sl[_GEN] - tick
        c = sl[_CTX] - tick
        sl[_GEN] = g
        sl[_CTX] = c
        sl[_EV] = self.n_ev
        f = sl[_OUT] - g
        sl[_FT] = f
        heapq.heappush(self.fin_heap, (f, self.heap_seq, sl))
        self.heap_seq += 1
        self.res_cnt[c % b] += 1
        self.res_q += c // b
        self.res_n += 1

    def unenroll(self, sl: list[Any]) -> tuple[int, int, float]:
        """Take a lazy decoder out (finished or preempted): its actual (gen, ctx, max gap)."""
        tick = self.tick
        b = self.block
        c = sl[_CTX]
        self.res_cnt[c % b] -= 1
        self.res_q -= c // b
        self.res_n -= 1
        sl[_FT] = -1  # its heap entry, if any is left, is stale
        mg: float = sl[_MGAP]
        j = bisect_left(self.gap_ev, sl[_EV])
        if j < len(self.gap_val):
            g = self.gap_val[j]  # the longest gap of the iterations it decoded in
            if mg < g:
                mg = g
        return sl[_GEN] + tick, c + tick, mg

    def push_gap(self, gap: float) -> None:
        """Record the token gap every decoder had in the iteration or run that just ended."""
        ev = self.gap_ev
        val = self.gap_val
        # a query covers every event from some index to now: an older gap that is not
        # longer than this one can no longer be any query's maximum
        while val and val[-1] <= gap:
            val.pop()
            ev.pop()
        ev.append(self.n_ev)
        val.append(gap)
        self.n_ev += 1
        if len(ev) > self.gap_trim_at:
            # events before the oldest decoder's first one are never queried again
            first = min([sl[_EV] for sl in self.slots if sl[_FT] >= 0], default=self.n_ev)
            j = bisect_left(ev, first)
            del ev[:j]
            del val[:j]
            self.gap_trim_at = max(64, 2 * len(ev))

    def pop_finished(self) -> list[list[Any]]:
        """The decoders whose generated tokens reached their output at the current tick."""
        heap = self.fin_heap
        tick = self.tick
        out: list[list[Any]] = []
        while heap and heap[0][0] <= tick:
            f, _, sl = heapq.heappop(heap)
            if sl[_FT] == f:
                out.append(sl)
        return out

    def next_finish(self) -> int:
        """The least finish tick of the decoders (``min(out - gen)`` is this minus the tick)."""
        heap = self.fin_heap
        while heap[0][2][_FT] != heap[0][0]:
            heapq.heappop(heap)
        return heap[0][0]

    def actual_ctx(self) -> list[int]:
        """Every slot's context (prompt + generated tokens) in slot order."""
        slots = self.slots
        tick = self.tick
        d = len(slots) - self.n_prefilling
        if not self.lazy or not tick:
            return [sl[_CTX] for sl in slots]
        return [sl[_CTX] + tick for sl in slots[:d]] + [sl[_CTX] for sl in slots[d:]]

    # -- local queue ---------------------------------------------------------------
    def n_queued(self) -> int:
        return len(self.preempted) + self.n_waiting

    def decode_run_terms(self, n: int) -> None:
        """``run_a``, ``run_b`` of a decode run of the ``n`` running sequences.

        Linear model: iteration j (from 0) of the run lasts ``run_a + run_b * j``. With a
        clock the run is one iteration (``stepwise``), priced by the clock.
        """
        if self.clock is not None:
            self.run_a = self.clock.iteration_s((), self.actual_ctx())
            self.run_b = 0.0
        else:
            self.run_a = self.c0 + self.c_d * n + self.c_kv * float(self.ctx_sum)
            self.run_b = self.c_kv * n

    def run_time(self, k: int) -> float:
        """Closed-form duration of the first ``k`` iterations of the current decode run."""
        return k * self.run_a + self.run_b * k * (k - 1) / 2.0

    def k_done(self, dt: float) -> int:
        """Iterations of the current decode run completed within ``dt`` of its start."""
        a, b, kmax = self.run_a, self.run_b, self.run_k
        if dt <= 0:
            return 0
        if a <= 0 and b <= 0:
            return kmax
        if b == 0.0:
            k = int(dt / a)
        else:
            p = a - b / 2.0
            disc = p * p + 2.0 * b * dt
            k = int((-p + math.sqrt(max(disc, 0.0))) / b) if disc > 0 else 0
        k = max(0, min(k, kmax))
        # correct the rounding of the closed form; the expressions are run_time(k + 1)
        # and run_time(k), inlined (this runs at every state query)
        while k < kmax and (k + 1) * a + b * (k + 1) * k / 2.0 <= dt:
            k += 1
        while k > 0 and k * a + b * k * (k - 1) / 2.0 > dt:
            k -= 1
        return k

    def fork(self, book: RequestBook, pb_counts: _I64, db_counts: _I64) -> Instance:
        """A copy of this instance's mutable state (config and scalars shared/copied).

        ``pb_counts``/``db_counts`` are the fork's rows of the engine's bucket-count
        matrices (the instance writes its counts through these views).
        """
        new = object.__new__(Instance)
        d = self.__dict__.copy()  # scalars and the frozen config
        slots = [sl.copy() for sl in self.slots]  # slots hold only ints and floats
        d["slots"] = slots
        if self.fin_heap:
            # the heap's entries point at the fork's own slots (stale ones at a dead
            # stand-in: the heap keeps its order, its entries' keys are unchanged)
            dead: list[Any] = [-1] * len(_DEAD_SLOT)
            new_of = {id(old): sl for old, sl in zip(self.slots, slots, strict=True)}
            d["fin_heap"] = [
                (f, q, new_of[id(sl)] if sl[_FT] == f else dead) for f, q, sl in self.fin_heap
            ]
        else:
            d["fin_heap"] = []
        d["gap_ev"] = self.gap_ev.copy()
        d["gap_val"] = self.gap_val.copy()
        d["res_cnt"] = self.res_cnt.copy()
        d["preempted"] = self.preempted.copy()
        d["fifo"] = self.fifo.copy()
        d["heap"] = self.heap.copy()  # entries are immutable tuples
        d["binlist"] = self.binlist.copy()
        d["lru"] = self.lru.copy()
        d["pb_counts"] = pb_counts
        d["db_counts"] = db_counts
        d["book"] = book
        new.__dict__.update(d)
        return new

    # -- routing -----------------------------------------------------------------------
    def check_routable(self, rec: Record) -> None:
        """Raise ValueError when the request of ``rec`` could never run here."""
        p = rec[1]
        o = rec[2]
        cfg = self.cfg
        if not self.chunked and p > self.max_bt:
            raise ValueError(
                f"request {rec[0].request_id} has prompt_tokens = {p} > max_batched_tokens = "
                f"{self.max_bt} of instance {self.idx} ({cfg.name!r}) without chunked "
                "prefill; expected prompts that fit one iteration. Fix: set "
                "chunked_prefill=True or raise max_batched_tokens."
            )
        need = -(-(p + o) // self.block) * self.block
        if need > self.cap_kv:
            raise ValueError(
                f"request {rec[0].request_id} needs {need} KV tokens (prompt {p} + output {o}, "
                f"block-rounded) > kv_capacity_tokens = {self.cap_kv} of instance "
                f"{self.idx} ({cfg.name!r}); it could never finish there. Fix: raise "
                "kv_capacity_tokens or route it elsewhere."
            )
        if self.blockwise and need // self.block + max(self.wm_blocks, 1) > self.cap_blocks:
            raise ValueError(
                f"request {rec[0].request_id} needs {need // self.block} KV blocks (prompt {p} "
                f"+ output {o}) + max(watermark {self.wm_blocks}, 1) > {self.cap_blocks} blocks "
                f"of {cfg.scheduler} instance {self.idx} ({cfg.name!r}); expected room for it "
                "plus the watermark, or it could stall there. Fix: raise kv_capacity_tokens, lower "
                "kv_watermark_fraction, or cut long requests (for a Vidur trace: "
                "load_trace(path, max_tokens=4096))."
            )

    def accept(self, i: int, rec: Record, seq: int) -> None:
        """Request ``i`` was routed here: queue it and count it in the state."""
        self.mut += 1
        self.enqueue(i, rec, seq)
        self.prompt_sum += rec[1]
        self.pb_counts[rec[5]] += 1
        self.db_counts[rec[4]] += 1

    def cut_run(self, t: float) -> bool:
        """End a decode run at the first iteration boundary at or after ``t``.

        Returns True when the run was shortened (its new end is :attr:`t_end`, under a
        new :attr:`version`); False when the current iteration ends the run anyway.
        """
        if self.run_k <= 1:
            return False
        self.mut += 1
        dt = t - self.t0
        k = self.k_done(dt)
        if self.run_time(k) < dt:
            k += 1
        k = max(k, 1)
        if k >= self.run_k:
            return False
        self.run_k = k
        self.t_end = self.t0 + self.run_time(k)
        self.version += 1
        return True

    def stored_running(self) -> tuple[_I64, _I64, int]:
        """Rows and *stored* generated tokens of the running sequences, and the decoders' count.

        The first ``d`` slots are the decoders: lazy ones (vllm-v1) store gen - tick, the
        others the actual tokens; :meth:`Engine.running_tokens` adds the tick and the
        iterations of a decode run completed so far. They change only when
        :attr:`slot_epoch` does (a slot added, removed or made a decoder): the arrays are
        cached until then and never mutated.
        """
        cached = self._stored
        if cached is None or cached[0] != self.slot_epoch:
            slots = self.slots
            n = len(slots)
            cached = (
                self.slot_epoch,
                np.fromiter([sl[_RID] for sl in slots], np.int64, n),
                np.fromiter([sl[_GEN] for sl in slots], np.int64, n),
                n - self.n_prefilling,
            )
            self._stored = cached
        return cached[1], cached[2], cached[3]

    def enqueue(self, i: int, rec: _Record, seq: int) -> None:
        """Put request ``i`` (just routed here) in the local queue; ``seq`` breaks ties."""
        pol = self.policy
        if pol == "fcfs":
            self.fifo.append(i)
        elif pol == "least-work-left":
            heapq.heappush(self.heap, (rec[3], seq, i))
        else:
            self.binlist.append(i)
        self.n_waiting += 1
        self.q_target_sum += rec[1]
        self.q_pred_left += rec[3]
        self.q_oracle_left += rec[2]

    # -- batch formation ---------------------------------------------------------------
    def plan_running(self) -> tuple[int, int]:
        """Chunks of partially prefilled sequences; returns (token budget left, KV use)."""
        slots = self.slots
        n_dec = len(slots) - self.n_prefilling
        budget = self.max_bt - n_dec
        b = self.block
        if self.lazy:
            # decoders (the prefix) need blocks(ctx + 1) each, from the residue counts;
            # chunks go to the prefills (the suffix) in order
            kv = self.dec_blocks(self.tick + b)
            if self.n_prefilling == 0:
                return budget, kv * b
            for sl in slots[n_dec:]:
                left = sl[_PLEFT]
                ctx = sl[_CTX]
                c = min(left, max(budget, 0))
                sl[_CHUNK] = c
                budget -= c
                kv += (ctx + b) // b if c == left else (ctx + b - 1) // b
            return budget, kv * b
        kv = 0  # in blocks: ceil(x / b) = (x + b - 1) // b
        if self.n_prefilling == 0:
            for sl in slots:
                kv += (sl[_CTX] + b) // b  # blocks(ctx + 1)
            return budget, kv * b
        for sl in slots:
            left = sl[_PLEFT]
            ctx = sl[_CTX]
            if left == 0:
                kv += (ctx + b) // b
                sl[_CHUNK] = 0
                continue
            c = min(left, max(budget, 0))
            sl[_CHUNK] = c
            budget -= c
            kv += (ctx + b) // b if c == left else (ctx + b - 1) // b
        return budget, kv * b

    def preempt_last(self, t: float) -> None:
        sl = self.slots.pop()
        self.slot_epoch += 1
        i = sl[_RID]
        g = sl[_GEN]
        ctx = sl[_CTX]
        mgap = sl[_MGAP]
        if sl[_PLEFT] > 0:
            self.n_prefilling -= 1
        else:
            if self.lazy:
                g, ctx, mgap = self.unenroll(sl)
            # its last token came at the end of the last iteration it decoded in
            self.book.last_token[i] = t - sl[_STALL] if self.v0 else t
        self.gen_sum -= g
        self.ctx_sum -= ctx
        self.out_sum -= sl[_OUT]
        if self._kv >= 0:
            self._kv -= -(-ctx // self.block) * self.block
        self.book.max_gap_s[i] = mgap
        self.book.saved_gen[i] = g
        self.book.n_preempt[i] += 1
        self.preempted.appendleft(i)
        rec = self.book.live[i]
        self.q_target_sum += rec[1] + g
        self.q_gen_sum += g
        self.q_pred_left += max(rec[3] - g, 0.0)
        self.q_oracle_left += rec[2] - g

    def peek(self, budget: int, kv_free: int) -> tuple[int, int] | None:
        """Next candidate (request, source) in admission order, or None."""
        if self.preempted:
            return self.preempted[0], 0
        if self.n_waiting == 0:
            return None
        pol = self.policy
        if pol == "fcfs":
            return self.fifo[0], 1
        if pol == "least-work-left":
            return self.heap[0][2], 2
        # bin-packing: largest target that fits whole (ties: routing order)
        bound = min(budget, (kv_free // self.block) * self.block - 1)
        best = -1
        best_p = -1
        live = self.book.live
        for pos, i in enumerate(self.binlist):
            p = live[i][1]
            if best_p < p <= bound:
                best, best_p = pos, p
        if best >= 0:
            return self.binlist[best], 3 + best
        if self.chunked:
            return self.binlist[0], 3
        return None

    def next_candidate(self, budget: int, kv_free: int) -> tuple[int, int, Record, int, int] | None:
        """The next request in admission order (:meth:`peek`) with what admitting it needs.

        ``(row, source, record, tokens generated before a preemption, prefill target =
        prompt + those tokens)``, or None when nothing is queued (or nothing fits, for
        bin-packing).
        """
        cand = self.peek(budget, kv_free)
        if cand is None:
            return None
        i, source = cand
        rec = self.book.live[i]
        g = self.book.saved_gen.item(i) if source == 0 else 0
        return i, source, rec, g, rec[1] + g

    def take(self, source: int) -> int:
        if source == 0:
            i = self.preempted.popleft()
        elif source == 1:
            i = self.fifo.popleft()
            self.n_waiting -= 1
        elif source == 2:
            i = heapq.heappop(self.heap)[2]
            self.n_waiting -= 1
        else:
            i = self.binlist.pop(source - 3)
            self.n_waiting -= 1
        return i

    def cached_tokens(self, i: int, target: int) -> int:
        if not self.cfg.prefix_cache or not self.has_prefix:
            return 0
        hits = 0
        for h in self.book.live[i][6]:
            if h in self.lru:
                hits += 1
            else:
                break
        return min(hits * self.cfg.prefix_block_tokens, target - 1)

    def touch_prefix(self, i: int) -> None:
        if not self.cfg.prefix_cache or not self.has_prefix:
            return
        lru = self.lru
        for h in self.book.live[i][6]:
            if h in lru:
                lru.move_to_end(h)
            else:
                lru[h] = None
        cap = self.cfg.prefix_cache_blocks
        while len(lru) > cap:
            lru.popitem(last=False)

    def form(self, t: float) -> bool:
        """Form the next iteration at ``t``; True if one runs (its end is ``t_end``)."""
        self.mut += 1
        if self.alt:
            self.slot_epoch += 1
            return self.form_v0(t) if self.v0 else self.form_sarathi(t)
        # vllm-v1 (lazy decoders): the slots' stored numbers change only when a slot is
        # added, removed or enrolled, which count in slot_epoch themselves
        self.form_pending = False
        preempted = False
        queued = bool(self.preempted or self.n_waiting)
        slots = self.slots
        # decodes only and nothing queued: each needs blocks(ctx + 1) <= ctx + block, so
        # when even that bound fits nothing is preempted and nothing admitted
        if queued or self.n_prefilling or self.ctx_sum + len(slots) * self.block > self.cap_kv:
            while True:
                budget, kv = self.plan_running()
                if kv <= self.cap_kv or not slots:
                    break
                self.preempt_last(t)
                preempted = True
            if not preempted and len(slots) < self.max_seqs and queued:
                self.admit(t, budget, kv)
        n = len(slots)
        if n == 0:
            self.busy = False
            return False
        self.busy = True
        self.t0 = t
        self.version += 1
        if self.n_prefilling == 0 and not preempted:
            # decode-only: a run of iterations until the first completion or KV exhaustion
            self.decode_run_terms(n)
            k = 1
            if not self.stepwise:
                # every slot decodes: min(out - gen) over them, from the finish heap
                k = self.next_finish() - self.tick
                cap = self.cap_kv
                b = self.block
                # blocks_after(k) <= ctx_sum + n * (k + b - 1): skip the exact sum when
                # even that bound fits (the usual case away from KV exhaustion)
                if (
                    k > 1
                    and self.ctx_sum + n * (k + b - 1) > cap
                    and self.dec_blocks_after(k) > cap
                ):
                    k = _last_fitting(k, lambda j: self.dec_blocks_after(j) <= cap)
            self.run_k = k
            dt = self.run_time(k)
        else:
            self.run_k = 0
            dt = self.mixed_iteration_s()
            self.run_a = dt
            self.run_b = 0.0
        self.t_end = t + dt
        return True

    def mixed_iteration_s(self) -> float:
        """Duration of an iteration with prefill chunks and decodes (this iteration's chunks).

        ``latency.iteration_time_s`` with the prefill tokens and ``sum(chunk * (chunk +
        already in KV))`` of the chunks, the decoding sequences and their context.
        """
        slots = self.slots
        d = len(slots) - self.n_prefilling
        if self.clock is not None:
            if self.lazy:  # decoders: the prefix [0, d), stored minus the tick
                tick = self.tick
                chunks = [(sl[_CHUNK], sl[_PDONE]) for sl in slots[d:] if sl[_CHUNK]]
                decodes = [sl[_CTX] + tick for sl in slots[:d]]
            else:
                chunks = [(sl[_CHUNK], sl[_PDONE]) for sl in slots if sl[_CHUNK]]
                decodes = [sl[_CTX] for sl in slots if sl[_PLEFT] == 0]
            clocked: float = self.clock.iteration_s(chunks, decodes)
            return clocked
        pt = 0
        psq = 0
        if self.lazy:
            # chunks only in the prefills (the suffix [d, n)); the decoders' context is
            # every slot's (ctx_sum) minus the prefills'
            dctx = self.ctx_sum
            for sl in slots[d:]:
                c = sl[_CHUNK]
                if c:
                    pt += c
                    psq += c * (c + sl[_PDONE])
                dctx -= sl[_CTX]
        else:
            dctx = 0
            for sl in slots:
                c = sl[_CHUNK]
                if c:
                    pt += c
                    psq += c * (c + sl[_PDONE])
                if sl[_PLEFT] == 0:
                    dctx += sl[_CTX]
        dt: float = (
            self.c0
            + (self.c_pb if pt > 0 else 0.0)
            + self.c_p * pt
            + self.c_p2 * float(psq)
            + self.c_d * d
            + self.c_kv * float(dctx)
        )
        return dt

    def fill_slot(
        self,
        i: int,
        source: int,
        rec: tuple[Any, ...],
        g: int,
        target: int,
        cached: int,
        work: int,
        chunk: int,
        t: float,
    ) -> None:
        """Move request ``i`` from the local queue into the next running slot (both schedulers).

        ``target`` = prompt + generated tokens to prefill, ``cached`` of them from the
        prefix cache, ``work`` = target - cached, ``chunk`` this iteration's share.
        """
        self.take(source)
        self.touch_prefix(i)
        out = rec[2]
        mgap = self.book.max_gap_s.item(i)
        self.slots.append([i, target, g, out, work, cached, rec[3], chunk, mgap, 0.0, -1, -1])
        self.slot_epoch += 1
        self.gen_sum += g
        self.ctx_sum += target
        self.out_sum += out
        self.n_prefilling += 1
        self.q_target_sum -= target
        self.q_gen_sum -= g
        self.q_pred_left -= max(rec[3] - g, 0.0)
        self.q_oracle_left -= out - g
        if math.isnan(self.book.admitted_s.item(i)):
            self.book.admitted_s[i] = t
            self.book.n_admitted += 1

    def admit(self, t: float, budget: int, kv: int) -> bool:
        admitted = False
        oversize_ok = self.n_prefilling == 0 and not self.chunked
        b = self.block
        slots = self.slots
        while len(slots) < self.max_seqs:
            if self.chunked and budget <= 0:
                break
            cand = self.next_candidate(budget, self.cap_kv - kv)
            if cand is None:
                break
            i, source, rec, g, target = cand
            cached = self.cached_tokens(i, target)
            work = target - cached
            if self.chunked:
                c = min(work, budget)
            else:
                # a recomputation longer than the whole budget goes alone (only prefill)
                if work > budget and not (oversize_ok and source == 0 and work > self.max_bt):
                    break
                c = work
            need = -(-((target + 1) if c == work else target) // b) * b
            if kv + need > self.cap_kv:
                break
            self.fill_slot(i, source, rec, g, target, cached, work, c, t)
            if self._kv >= 0:
                self._kv += -(-target // b) * b
            budget -= c
            kv += need
            admitted = True
            oversize_ok = False
            if not self.chunked and budget <= 0:
                break
        return admitted

    # -- vllm-v0 (engine module docstring, "Scheduler variants") -----------------------
    def form_v0(self, t: float) -> bool:
        """Form a vllm-v0 iteration: prefill-only if the queue head fits, else decodes."""
        self.form_pending = False
        self.busy = True  # the KV accounting of kv_now counts this iteration as formed
        if self.n_queued() and len(self.slots) < self.max_seqs and self.admit_v0(t):
            # rule 1: prefill-only; the running decodes pause for this iteration
            self.paused = True
            slots = self.slots
            new = slots[len(slots) - self.n_prefilling :]
            if self.clock is not None:
                dt = self.clock.iteration_s([(sl[_CHUNK], sl[_PDONE]) for sl in new], ())
            else:
                pt = 0
                psq = 0
                for sl in new:
                    c = sl[_CHUNK]
                    pt += c
                    psq += c * (c + sl[_PDONE])
                dt = self.c0 + self.c_pb + self.c_p * pt + self.c_p2 * float(psq)
            self.t0 = t
            self.version += 1
            self.run_k = 0
            self.run_a = dt
            self.run_b = 0.0
            self.t_end = t + dt
            return True
        self.paused = False
        slots = self.slots
        if not slots:
            self.busy = False
            return False
        # rule 5: decodes in arrival order (trace rows arrive in order; row ids are unique)
        prev = -1
        for sl in slots:
            if sl[_RID] < prev:
                slots.sort(key=_by_rid)
                break
            prev = sl[_RID]
        preempted = self.preempt_v0(t)
        n = len(slots)
        if n == 0:  # pragma: no cover - excluded by the routing check
            raise RuntimeError(
                f"vllm-v0 instance {self.idx} preempted every sequence at t={t}; this is an "
                "engine bug (the routing check leaves room for one sequence)."
            )
        self.t0 = t
        self.version += 1
        return self._blockwise_decode_run(t, preempted)

    def _blockwise_decode_run(self, t: float, preempted: bool) -> bool:
        """Plan a decode-only run under block-wise KV (vllm-v0 rule 5, sarathi rule 2).

        Fast mode: until the first completion or the last iteration in which every
        decode finds its block without preempting; one iteration in reference mode or
        right after a preemption. Returns True (an iteration runs, ending at ``t_end``).
        """
        slots = self.slots
        n = len(slots)
        self.decode_run_terms(n)
        k = 1
        if not self.stepwise and not preempted:
            k = min([sl[_OUT] - sl[_GEN] for sl in slots])
            if k > 1 and not self.v0_decodes_fit(k):
                # the last iteration that fits the block rule without preempting
                k = _last_fitting(k, self.v0_decodes_fit)
        self.run_k = k
        self.t_end = t + self.run_time(k)
        return True

    def v0_decodes_fit(self, j: int) -> bool:
        """Rule 5 holds without preemption in decode iteration ``j`` (1-based) of a run.

        Allocations only grow, so the binding turn is the last (newest) sequence's: the
        others already hold ``blocks(ctx + j - 1)``, it still ``blocks(ctx + j - 2)``.
        """
        b = self.block
        slots = self.slots
        add = j - 1 + (b - 1)
        others = 0
        for sl in slots[:-1]:
            others += (sl[_CTX] + add) // b
        last: int = (slots[-1][_CTX] + (j - 2) + (b - 1)) // b
        return bool(self.cap_blocks - others - last >= 1)

    def preempt_v0(self, t: float) -> bool:
        """Rule 5/6 on slots sorted by arrival: preempt the newest until each finds a block."""
        if self.v0_decodes_fit(1):
            return False
        b = self.block
        slots = self.slots
        held = [(sl[_CTX] - 1 + (b - 1)) // b for sl in slots]
        new = [(sl[_CTX] + (b - 1)) // b for sl in slots]
        alloc = sum(held)
        lo, hi = 0, len(slots)
        while lo < hi:
            if self.cap_blocks - alloc >= 1:
                alloc += new[lo] - held[lo]
                lo += 1
                continue
            hi -= 1  # the newest sequence not yet taken (the current one if it is last)
            alloc -= held[hi]
            self.preempt_last(t)
        return True

    def admit_v0(self, t: float) -> bool:
        """Rules 2-4: admit queue heads whole into a prefill-only batch; True if any."""
        b = self.block
        slots = self.slots
        alloc = 0
        for sl in slots[: len(slots) - self.n_prefilling]:
            alloc += (sl[_CTX] - 1 + (b - 1)) // b
        count = 0
        longest = 0
        while len(slots) < self.max_seqs:
            cand = self.next_candidate(self.max_bt, self.cap_kv)
            if cand is None:
                break
            i, source, rec, g, target = cand
            need = -(-target // b)
            if self.cap_blocks - alloc - need < self.wm_blocks:
                break
            cached = self.cached_tokens(i, target)
            work = target - cached
            longest_new = max(longest, work)
            # a recomputation longer than the whole budget goes alone
            alone = count == 0 and source == 0 and work > self.max_bt
            if (count + 1) * longest_new > self.max_bt and not alone:
                break
            self.fill_slot(i, source, rec, g, target, cached, work, work, t)
            alloc += need
            count += 1
            longest = longest_new
            if alone:
                break
        return count > 0

    # -- sarathi (engine module docstring, "Scheduler variants") -----------------------
    def form_sarathi(self, t: float) -> bool:
        """Form a sarathi iteration: decodes (rule 2), partial prefills (3), admission (4).

        The prices (rule 5) are the default rules' (a decode run as in :meth:`form`, a
        mixed iteration as its single-iteration branch), written out here so that the
        vllm-v1 and vllm-v0 paths keep no extra call.
        """
        self.form_pending = False
        self.busy = True  # the KV accounting of kv_now counts this iteration as formed
        slots = self.slots
        d = len(slots) - self.n_prefilling
        # rule 2: decodes in arrival order (the decode prefix; prefills stay behind it)
        prev = -1
        for s in range(d):
            rid = slots[s][_RID]
            if rid < prev:
                slots[:d] = sorted(slots[:d], key=_by_rid)
                break
            prev = rid
        preempted = self.preempt_sarathi(t, d) if d else False
        # rule 3: partial prefills continue in admission order (vllm-v1's budget filling)
        if self.n_prefilling:
            budget = self.plan_running()[0]
        else:
            budget = self.max_bt - len(slots)
        if budget > 0 and len(slots) < self.max_seqs and self.n_queued():
            self.admit_sarathi(t, budget)
        n = len(slots)
        if n == 0:
            self.busy = False
            return False
        self.t0 = t
        self.version += 1
        if self.n_prefilling == 0:
            # decode-only: a run until the first completion or the first preemption
            return self._blockwise_decode_run(t, preempted)
        dt = self.mixed_iteration_s()
        self.run_k = 0
        self.run_a = dt
        self.run_b = 0.0
        self.t_end = t + dt
        return True

    def preempt_sarathi(self, t: float, d: int) -> bool:
        """Rule 2: the ``d`` decodes take their blocks in arrival order; True if any preempted.

        Slots ``[0, d)`` are the decodes sorted by arrival, ``[d, n)`` the partially
        prefilled sequences (holding ``blocks(target)``). While a decode finds no free
        block, the latest-arriving running sequence that arrived after it is preempted
        (vllm-v0's rules 5-6), or the decode itself if there is none.
        """
        b = self.block
        slots = self.slots
        alloc = 0
        for sl in slots[:d]:
            alloc += (sl[_CTX] + (b - 2)) // b  # blocks(ctx - 1)
        for sl in slots[d:]:
            alloc += (sl[_CTX] + (b - 1)) // b  # blocks(target)
        free = self.cap_blocks - alloc
        # the binding turn is the last decode's (allocations only grow): skip the walk
        grow = 0
        for sl in slots[: d - 1]:
            ctx = sl[_CTX]
            grow += (ctx + (b - 1)) // b - (ctx + (b - 2)) // b
        if free - grow >= 1:
            return False
        preempted = False
        j = 0
        while j < d:
            sl = slots[j]
            ctx = sl[_CTX]
            if free >= 1:
                free -= (ctx + (b - 1)) // b - (ctx + (b - 2)) // b
                j += 1
                continue
            victim = j
            newest = sl[_RID]
            for s in range(j + 1, len(slots)):
                if slots[s][_RID] > newest:
                    newest = slots[s][_RID]
                    victim = s
            vic = slots[victim]
            lag = b - 2 if victim < d else b - 1
            free += (vic[_CTX] + lag) // b
            if victim < d:
                d -= 1
            slots.append(slots.pop(victim))  # preempt_last takes the last slot
            self.preempt_last(t)
            preempted = True
        return preempted

    def admit_sarathi(self, t: float, budget: int) -> None:
        """Rule 4: admit queue heads, each reserving its target's blocks, chunks to the budget."""
        b = self.block
        slots = self.slots
        alloc = 0
        for sl in slots:
            alloc += (sl[_CTX] + (b - 1)) // b  # decodes now hold blocks(ctx)
        free = self.cap_blocks - alloc
        while budget > 0 and len(slots) < self.max_seqs:
            cand = self.next_candidate(budget, self.cap_kv)
            if cand is None:
                break
            i, source, rec, g, target = cand
            need = -(-target // b)
            if free - need < self.wm_blocks:
                break
            cached = self.cached_tokens(i, target)
            work = target - cached
            c = min(work, budget)
            self.fill_slot(i, source, rec, g, target, cached, work, c, t)
            free -= need
            budget -= c

    # -- iteration end -----------------------------------------------------------------
    def iteration_end(self, t: float) -> int:
        """End the running iteration (or decode run) at ``t``; returns how many finished."""
        self.mut += 1
        if self.lazy:
            return self._iteration_end_lazy(t)
        self.slot_epoch += 1
        slots = self.slots
        n = len(slots)
        k = self.run_k
        self.busy_time_s += t - self.t0
        fin: list[int] = []  # slots that finished, in slot order
        if k >= 1:
            # a decode run of k iterations: every sequence produced k tokens
            self.gen_sum += n * k
            self.ctx_sum += n * k
            gap = self.run_a if self.run_b <= 0 else self.run_a + self.run_b * (k - 1)
            if self.v0:  # the first token of the run also waited out the pauses before it
                a = self.run_a
                for s, sl in enumerate(slots):
                    g = sl[_GEN] + k
                    sl[_GEN] = g
                    sl[_CTX] += k
                    mg = sl[_MGAP]
                    if mg < gap:
                        mg = gap
                    st = sl[_STALL] + a
                    if mg < st:
                        mg = st
                    sl[_MGAP] = mg
                    sl[_STALL] = 0.0
                    if g >= sl[_OUT]:
                        fin.append(s)
            else:
                for s, sl in enumerate(slots):
                    g = sl[_GEN] + k
                    sl[_GEN] = g
                    sl[_CTX] += k
                    if sl[_MGAP] < gap:
                        sl[_MGAP] = gap
                    if g >= sl[_OUT]:
                        fin.append(s)
        else:
            # decoders are the slots [0, d); sequences in prefill the suffix [d, n), and
            # those completing now a prefix [d, e) of it (chunks go in admission order)
            dt = self.run_a
            d = n - self.n_prefilling
            paused = self.paused
            if d and paused:  # vllm-v0 prefill-only iteration: the decodes waited
                for sl in slots[:d]:
                    sl[_STALL] += dt
            elif d:
                v0 = self.v0
                for sl in slots[:d]:
                    sl[_GEN] += 1
                    sl[_CTX] += 1
                    gap = sl[_STALL] + dt if v0 else dt
                    if sl[_MGAP] < gap:
                        sl[_MGAP] = gap
                    if v0:
                        sl[_STALL] = 0.0
            e = _apply_chunks(slots, d, n)
            n_done = e - d
            self.n_prefilling -= n_done
            for sl in slots[d:e]:
                sl[_GEN] += 1
                sl[_CTX] += 1
                i = sl[_RID]
                if sl[_GEN] == 1:
                    self.book.first_token_s[i] = t
                else:  # a recomputation: the gap since the token before preemption
                    gap_s = t - self.book.last_token[i]
                    if gap_s > sl[_MGAP]:
                        sl[_MGAP] = gap_s
            advanced = e - d if paused else e
            self.gen_sum += advanced
            self.ctx_sum += advanced
            for s in range(e):
                sl = slots[s]
                if sl[_GEN] >= sl[_OUT]:
                    fin.append(s)
        self._kv = -1
        if fin:
            retire = self._retire
            for s in fin:
                sl = slots[s]
                retire(sl, t, sl[_GEN], sl[_CTX], sl[_MGAP])
            n_fin = len(fin)
            self.n_completed += n_fin
            if n_fin == 1:
                del slots[fin[0]]
            else:
                for s in reversed(fin):
                    del slots[s]
        self.busy = False
        self.paused = False
        self.run_k = 0
        return len(fin)

    def _iteration_end_lazy(self, t: float) -> int:
        """:meth:`iteration_end` of a vllm-v1 instance (lazy decoders, the comment at _EV).

        The same rules: a decode run of ``k`` iterations gives every decoder ``k`` tokens
        and the run's last (longest) iteration time as a gap; a mixed iteration gives
        the decoders one token and its duration as a gap, and the prefills their chunks
        (those completing get their first token). Only the tick moves for the decoders;
        the ones that finish come from the finish heap.
        """
        slots = self.slots
        n = len(slots)
        k = self.run_k
        self.busy_time_s += t - self.t0
        book = self.book
        done_now: list[int] = []  # prefills completing with their only token, by position
        n_done = 0
        if k >= 1:
            # a decode run of k iterations (nothing prefilling): every sequence got k tokens
            self.gen_sum += n * k
            self.ctx_sum += n * k
            self.tick += k
            self.push_gap(self.run_a if self.run_b <= 0 else self.run_a + self.run_b * (k - 1))
        else:
            dt = self.run_a
            d = n - self.n_prefilling
            if d:
                self.tick += 1
                self.push_gap(dt)
            e = _apply_chunks(slots, d, n)
            n_done = e - d
            self.n_prefilling -= n_done
            for s in range(d, e):
                sl = slots[s]
                g = sl[_GEN] + 1
                sl[_GEN] = g
                sl[_CTX] += 1
                i = sl[_RID]
                if g == 1:
                    book.first_token_s[i] = t
                else:  # a recomputation: the gap since the token before preemption
                    gap_s = t - book.last_token[i]
                    if gap_s > sl[_MGAP]:
                        sl[_MGAP] = gap_s
                if g >= sl[_OUT]:
                    done_now.append(s)
                else:
                    self.enroll(sl)
            self.gen_sum += e
            self.ctx_sum += e
        self._kv = -1
        heap = self.fin_heap
        finished = self.pop_finished() if heap and heap[0][0] <= self.tick else []
        n_fin = len(finished) + len(done_now)
        if n_fin or n_done:
            self.slot_epoch += 1
        if n_fin:
            retire = self._retire
            gone: list[tuple[list[Any], int, int, float]] = []
            for sl in finished:
                g, ctx, mg = self.unenroll(sl)
                gone.append((sl, g, ctx, mg))
            for s in done_now:
                sl = slots[s]
                gone.append((sl, sl[_GEN], sl[_CTX], sl[_MGAP]))
            for sl, g, ctx, mg in gone:
                retire(sl, t, g, ctx, mg)
                sl[_EV] = -2  # marks it for removal below
            self.n_completed += n_fin
            if n_fin == 1:
                # (slots compare equal only to themselves: their rows differ)
                del slots[slots.index(gone[0][0])]
            else:
                slots[:] = [sl for sl in slots if sl[_EV] != -2]
        self.busy = False
        self.paused = False
        self.run_k = 0
        return n_fin

    # -- observation -------------------------------------------------------------------
    def kv_used(self, k: int) -> int:
        """KV tokens in use once ``k`` iterations of the current decode run completed."""
        if not k:
            return self.kv_now()
        if self.lazy:  # a decode run: every slot is a decoder
            return self.dec_blocks_after(k)
        return _blocks_after(self.slots, k, self.block)

    def timeline_numbers(self, t: float) -> tuple[int, int, int, bool]:
        """``(queued, running, KV used, busy)`` at t: :meth:`numbers`' 0th, 1st, 4th, 10th."""
        n = len(self.slots)
        nq = len(self.preempted) + self.n_waiting
        if not n:
            return nq, 0, 0, self.busy
        k = self.k_done(t - self.t0) if self.busy and self.run_k > 1 else 0
        return nq, n, self.kv_used(k), self.busy

    def _to_first(self, k: int, has_predictor: bool, pred_run: list[float] | None) -> float:
        """``t_iter * r_min``: the time to the first finish expected, ``k`` iterations on.

        ``r_min``: the least predicted tokens left of a running sequence (at least 1; 1
        without a predictor); ``pred_run``: :meth:`_pred_run` if already computed.
        """
        n = len(self.slots)
        r_min = 1.0
        if has_predictor:
            r_min = max(min(self._pred_run(k) if pred_run is None else pred_run), 1.0)
        t_iter: float = self.c0 + self.c_d * n + self.c_kv * (self.ctx_sum + n * k)
        return t_iter * r_min

    def _pred_run(self, k: int) -> list[float]:
        """Per running sequence, ``(predicted - generated) - k`` once ``k`` more iterations ran."""
        slots = self.slots
        tick = self.tick
        if not tick:
            return [sl[_PRED] - sl[_GEN] - k for sl in slots]
        # lazy decoders (the prefix [0, d)) store gen - tick; the same float operations
        # on the actual gen: (pred - gen) - k
        n = len(slots)
        d = n - self.n_prefilling
        run = [sl[_PRED] - (sl[_GEN] + tick) - k for sl in slots[:d]]
        if d < n:
            run += [sl[_PRED] - sl[_GEN] - k for sl in slots[d:]]
        return run

    def _pred_total(self, pred_run: list[float]) -> float:
        """Predicted tokens left of the running sequences (``pred - gen - k`` each) + queued."""
        # np.maximum(pred_run, 0.0) (NaN kept), summed as numpy does
        left = [x if x > 0.0 or x != x else 0.0 for x in pred_run]
        pred_left: float = pairwise_sum(left, 0, len(left))
        return pred_left + self.q_pred_left

    def _retire(self, sl: list[Any], t: float, gen: int, ctx: int, max_gap: float) -> None:
        """Book the finish of the sequence in slot ``sl`` at ``t`` and free its request.

        ``gen``, ``ctx`` and ``max_gap`` are its actual counts (a lazy decoder's slot
        stores them relative to the tick; the caller passes the real ones).
        """
        book = self.book
        i = sl[_RID]
        book.finish_s[i] = t
        book.max_gap_s[i] = max_gap
        self.gen_sum -= gen
        self.ctx_sum -= ctx
        self.out_sum -= sl[_OUT]
        rec = book.live.pop(i)  # finished: its per-request state is freed
        self.prompt_sum -= rec[1]
        self.pb_counts[rec[5]] -= 1
        self.db_counts[rec[4]] -= 1
        if book.last_token:
            book.last_token.pop(i, None)

    def _first9(
        self,
        nq: int,
        n: int,
        pend: int,
        gsum: int,
        kv_used: int,
        oracle_left: int,
        pred_total: float | None,
    ) -> tuple[Any, ...]:
        """The first nine state numbers (:meth:`numbers`) from this instance's running sums.

        ``pend``, ``gsum``, ``kv_used`` and ``oracle_left`` are over the running
        sequences; the local queue's sums are added here. ``pred_total`` already holds
        the queue's predicted tokens left (``None``: deferred, see :meth:`numbers`).
        """
        return (
            nq,
            n,
            pend + self.q_target_sum,
            gsum,
            kv_used,
            self.prompt_sum + gsum + self.q_gen_sum,
            oracle_left + self.q_oracle_left,
            self.n_completed,
            pred_total,
        )

    def numbers(
        self, t: float, has_predictor: bool, defer_pred: bool = False, defer_earliest: bool = False
    ) -> tuple[Any, ...]:
        """State numbers at time t (the order of ``Engine._state_values``).

        ``defer_pred``: the predicted tokens left (index 8) may be ``None`` (not summed
        yet); a later call without it at the same moment sums them from the cache.
        ``defer_earliest``: the same for the earliest completion (index 9), whose
        ``r_min`` takes a pass over the running sequences when there is a predictor.
        """
        slots = self.slots
        n = len(slots)
        k = 0
        if self.busy and self.run_k > 1:
            k = self.k_done(t - self.t0)
        if n:
            # between two changes of this instance (``mut``) the numbers depend on t only
            # through k and the final ``t + t_iter * r_min``
            key = (self.mut, k, has_predictor)
            cached = self._numbers
            if cached is not None and cached[0] == key:
                first9, to_first = cached[1], cached[2]
                if first9[8] is None and not defer_pred:
                    first9 = (*first9[:8], self._pred_total(self._pred_run(k)))
                    self._numbers = (key, first9, to_first)
                if to_first is None:
                    if defer_earliest:
                        return (*first9, None, self.busy)
                    to_first = self._to_first(k, has_predictor, None)
                    self._numbers = (key, first9, to_first)
                return (*first9, t + to_first, self.busy)
        nq = len(self.preempted) + self.n_waiting
        if n:
            gsum = self.gen_sum + n * k
            lazy = self.lazy
            kv_used = self.kv_used(k)
            pend = 0
            if self.n_prefilling:
                for sl in slots if not lazy else slots[n - self.n_prefilling :]:
                    pend += sl[_PLEFT]
            oracle_left = self.out_sum - gsum
            pred_run: list[float] | None = None
            if not has_predictor:
                pred_total: float | None = 0.0 + self.q_pred_left
            elif defer_pred:
                pred_total = None
            else:
                pred_run = self._pred_run(k)
                pred_total = self._pred_total(pred_run)
            to_first = None if defer_earliest else self._to_first(k, has_predictor, pred_run)
            first9 = self._first9(nq, n, pend, gsum, kv_used, oracle_left, pred_total)
            self._numbers = (key, first9, to_first)
            return (*first9, None if to_first is None else t + to_first, self.busy)
        else:
            gsum = 0
            pred_left = 0.0
            kv_used = 0
            pend = 0
            oracle_left = 0
            if nq:
                if self.preempted:
                    head = self.preempted[0]
                elif self.policy == "fcfs":
                    head = self.fifo[0]
                elif self.policy == "least-work-left":
                    head = self.heap[0][2]
                else:
                    head = self.binlist[0]
                p = float(self.book.live[head][1])
                earliest = t + self.c0 + self.c_pb + self.c_p * p + self.c_p2 * p * p
            else:
                earliest = t
        first9 = self._first9(nq, n, pend, gsum, kv_used, oracle_left, pred_left + self.q_pred_left)
        return (*first9, earliest, self.busy)
