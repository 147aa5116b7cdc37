"""What happened between two routing decisions: the numbers a reward reads.

:class:`OutcomeTracker` follows one :class:`~routeplay.replay.engine._engine.Engine` run and
turns each decision into a :class:`~routeplay.replay.rl._rewards.StepOutcome`. The
transition writer (:func:`routeplay.replay.log_transitions`) and the gymnasium
environment (:class:`routeplay.replay.RoutingEnv`) both use it, so a logged dataset and
an online rollout compute the same rewards.

Definitions (the choices the paper leaves open are marked):

* **Interval.** The outcome of the decision at time ``t`` covers ``(t, t']`` where
  ``t'`` is the engine's time at the next decision of the same episode (or the end of
  the simulation after the last decision). Engine events at ``t'`` that come before a
  routing decision (iteration ends) belong to the interval.
* ``n_completed`` / ``response_times_s``: requests whose last token came in the
  interval and their E2E latency (``finish_s - arrival_s``, queueing included).
  Summed over an episode, ``n_completed`` equals the number of requests.
* ``n_admitted``: requests admitted into an instance's batch for the first time in
  the interval (re-admissions after a preemption do not count again).
* ``progress_deficit`` (the paper's ``sum_j (1/T_j)(1 - f_jt)``), evaluated at ``t'``
  over the requests *in the system*: arrived (``arrival_s <= t'``) and not finished,
  whether waiting at the router, queued at an instance or running. *Choice*: requests
  held at the router count too, so that WAIT cannot hide work from the penalty.
  ``f_jt = generated_j / d_j`` with ``d_j`` the request's *predicted* output tokens
  (the predictor's ``expected_output_tokens``; without a predictor the constant
  :attr:`OutcomeConfig.fallback_output_tokens` — never the true length).
  *Choice (overrun)*: the remaining share is ``max(1 - f_jt,``
  :attr:`OutcomeConfig.min_remaining_fraction` ``)``, so a request that outlives its
  predicted length keeps costing (``min_remaining_fraction / T_j`` per decision) until
  it finishes; with the paper's literal ``min(f, 1)`` it would cost nothing once past
  its prediction, and a router could park long requests for free. The floor is
  continuous in ``generated_j`` (it takes over at ``1 - min_remaining_fraction`` of
  the prediction). ``min_remaining_fraction = 0`` restores the literal reading.
  ``T_j`` is the ideal service time of ``(p_j, d_j)`` alone on an idle instance,
  ``LinearLatencyModel.request_time_s(p_j, d_j)``, taking the fastest instance of the
  cluster (*choice*: the ideal does not depend on where the request went, so the
  term measures delay rather than instance speed).
* ``dt_s``: ``t' - t``, the simulated time the decision's interval spans (the
  semi-MDP holding time: a per-second discount ``gamma ** dt_s`` can be applied). After
  the last decision ``t'`` is the last completion of the episode (not a later
  bookkeeping event of the engine).
* ``impact_r_mix``: :func:`routeplay.estimator.estimate_impact` of the routed request
  (prompt, predicted output as above) against the router's snapshot
  ``tokens_in_system``, with :attr:`OutcomeConfig.impact` and *each instance's own
  latency model*: the gradients are scaled per instance by
  :func:`~routeplay.replay.rl._observation.impact_relative_cost` (exactly 1 on the paper's
  V100 cluster, whose latency coefficients are the paper's gradients; 0.5 for an
  instance twice as fast). The observation's ``impact_cost`` block is the same
  estimate (:func:`~routeplay.replay.rl._observation.instance_impact`).
* ``estimated_time_s``: ``request_time_s(p_i, d_i)`` on the chosen instance's latency
  model beside its current load (``n_other_seqs = n_running``, ``other_context_tokens
  = kv_used_tokens`` of the snapshot); ``None`` for WAIT.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from routeplay.estimator._impact import ImpactConfig, ImpactEstimate
from routeplay.estimator._latency import LinearLatencyModel

from .._types import WAIT, ClusterState, RequestView
from ._observation import impact_relative_cost, instance_impact
from ._rewards import StepOutcome

if TYPE_CHECKING:
    from ..engine._engine import Engine
    from ._observation import ObservationEncoder

__all__ = ["OutcomeConfig", "OutcomeTracker", "running_generated_tokens"]

_I64 = npt.NDArray[np.int64]
_F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True, kw_only=True)
class OutcomeConfig:
    """Settings of the per-decision outcome (see the module docstring).

    Attributes:
        fallback_output_tokens: predicted output length assumed for every request when
            the replay has no length predictor (the routers' ``default_output_tokens``
            default, 128). Never the true length.
        impact: parameters of the workload-impact estimator behind ``impact_r_mix``.
        min_remaining_fraction: floor of a request's remaining share ``1 - f_jt`` in
            the progress deficit, in [0, 1] (module docstring: a request past its
            predicted length keeps costing); 0 = the paper's literal ``min(f, 1)``.

    Example:
        >>> OutcomeConfig().fallback_output_tokens
        128.0
        >>> OutcomeConfig(fallback_output_tokens=0.0)
        Traceback (most recent call last):
        ...
        ValueError: OutcomeConfig.fallback_output_tokens = 0.0; expected a finite ...
    """

    fallback_output_tokens: float = 128.0
    impact: ImpactConfig = field(default_factory=ImpactConfig)
    min_remaining_fraction: float = 0.1

    def __post_init__(self) -> None:
        value = self.fallback_output_tokens
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(
                f"OutcomeConfig.fallback_output_tokens = {value!r}; expected a finite number "
                "of tokens > 0. Fix: pass e.g. 128.0."
            )
        floor = self.min_remaining_fraction
        if not (isinstance(floor, int | float) and math.isfinite(floor) and 0 <= floor <= 1):
            raise ValueError(
                f"OutcomeConfig.min_remaining_fraction = {floor!r}; expected a share in "
                "[0, 1]. Fix: pass e.g. 0.1 (or 0 for the paper's literal min(f, 1))."
            )
        if not isinstance(self.impact, ImpactConfig):
            raise ValueError(f"OutcomeConfig.impact = {self.impact!r}; expected an ImpactConfig.")


def running_generated_tokens(engine: Engine) -> tuple[_I64, _I64]:
    """Trace row indices and generated output tokens of the running sequences, now.

    The one place the outcome computation reads the engine's in-flight progress:
    :meth:`Engine.running_tokens` (exact in the middle of a decode run).
    """
    return engine.running_tokens()


def _linear_coefficients(latency: LinearLatencyModel) -> tuple[float, ...] | None:
    """A plain :class:`LinearLatencyModel`'s coefficients for :func:`_request_time_s`.

    ``(intercept, batch, per prompt token, per prompt token squared, per sequence, per
    context token, decode-only partial sum)``; ``None`` for any other model (subclasses
    included), whose own ``request_time_s`` is called instead.
    """
    if type(latency) is not LinearLatencyModel:
        return None
    c0 = float(latency.intercept_s)
    c1 = float(latency.prefill_batch_s)
    c2 = float(latency.prefill_s_per_token)
    c3 = float(latency.prefill_s_per_token2)
    c4 = float(latency.decode_s_per_seq)
    c5 = float(latency.decode_s_per_context_token)
    return (c0, c1, c2, c3, c4, c5, c0 + c1 * 0.0 + c2 * 0.0 + c3 * 0.0)


def _request_time_s(
    c: tuple[float, ...], p: float, output_tokens: float, n_other: int, other_ctx: int
) -> float:
    """``LinearLatencyModel.request_time_s`` of one request in Python floats.

    The same floating-point operations in the same order as the model's numpy code
    (its ``iteration_time_s`` for the prefill and the first decode iteration, then the
    arithmetic series of the decode run), so the result is identical bit for bit.
    """
    others = float(n_other)
    ctx = float(other_ctx)
    prefill = 0.0
    if not (p <= 0 and others <= 0):
        prefill = c[0] + c[1] * (1.0 if p > 0 else 0.0) + c[2] * p + c[3] * (p * p)
        prefill = prefill + c[4] * others + c[5] * ctx
    k = max(output_tokens - 1.0, 0.0)
    n_dec = others + 1.0
    first_decode = 0.0 if n_dec <= 0 else c[6] + c[4] * n_dec + c[5] * (ctx + p + 1.0)
    decode = k * first_decode + c[5] * k * (k - 1.0) / 2.0
    return prefill + decode


class OutcomeTracker:
    """Builds the :class:`StepOutcome` of each decision of one engine run.

    Use: for every decision call :meth:`decision_terms` *before* ``engine.apply``, then
    advance the engine to the next decision (or the end) and call :meth:`outcome`.

    Per-episode constants (predicted lengths, ideal service times, impact multipliers,
    latency coefficients) are computed once here; each :meth:`advance` touches only the
    requests in the system.

    Args:
        engine: the engine of the episode (fresh: no decision applied yet).
        config: see :class:`OutcomeConfig`.

    Raises:
        ValueError: when an ideal service time is not positive (a latency model that
            prices a request at 0 s makes ``1/T_j`` undefined).

    Example:
        >>> import polars as pl
        >>> from routeplay.estimator import LinearLatencyModel
        >>> from routeplay.replay import Engine
        >>> from routeplay.replay import ClusterConfig, InstanceConfig
        >>> lat = LinearLatencyModel.from_throughput(1000.0)
        >>> cluster = ClusterConfig(instances=(InstanceConfig(name="a", latency=lat),))
        >>> trace = pl.DataFrame({"request_id": [0, 1], "arrival_s": [0.0, 0.5],
        ...                       "prompt_tokens": [100, 100], "output_tokens": [11, 1]})
        >>> eng = Engine(trace, cluster)
        >>> tracker = OutcomeTracker(eng)
        >>> done = 0
        >>> while (d := eng.next_decision()) is not None:
        ...     terms = tracker.decision_terms(d[0], d[1], 0)
        ...     eng.apply(0)
        ...     nxt = eng.next_decision()
        ...     out = tracker.outcome(d[0], d[1], 0, nxt[1] if nxt else eng.state(), terms)
        ...     done += out.n_completed
        >>> done
        2
    """

    def __init__(self, engine: Engine, config: OutcomeConfig | None = None) -> None:
        self.config = config if config is not None else OutcomeConfig()
        self.engine = engine
        n = engine.n_requests
        if engine.has_predictor:
            d_hat = np.asarray(engine.pred_tokens, dtype=np.float64).copy()
        else:
            d_hat = np.full(n, float(self.config.fallback_output_tokens))
        self._d_hat = d_hat
        prompt = np.asarray(engine.prompt, dtype=np.float64)
        ideal = np.full(n, np.inf)
        for inst in engine.cluster.instances:
            t = np.asarray(inst.latency.request_time_s(prompt, d_hat), dtype=np.float64)
            ideal = np.minimum(ideal, t)
        if n and not (np.isfinite(ideal) & (ideal > 0)).all():
            j = int(np.flatnonzero(~(np.isfinite(ideal) & (ideal > 0)))[0])
            raise ValueError(
                f"the ideal service time of trace row {j} is {ideal[j]!r} s; expected a "
                "finite time > 0 (the reward divides by it). Fix: use latency models with "
                "a positive per-iteration or per-token cost."
            )
        self._inv_ideal = 1.0 / ideal if n else ideal
        self._all_rows = np.arange(n, dtype=np.int64)
        # every request produces >= 1 token: the share's denominator is max(d_j, 1)
        self._d_floor = np.maximum(d_hat, 1.0)
        self._floor = self.config.min_remaining_fraction
        self._impact_cost = impact_relative_cost(engine.cluster, self.config.impact)
        self._impact_key = (repr(self.config.impact), self._impact_cost.tobytes())
        # latency coefficients for estimated_time_s, per instance (None: call the model)
        self._coefs: list[tuple[float, ...] | None] = [
            _linear_coefficients(inst.latency) for inst in engine.cluster.instances
        ]
        self._decision_s = 0.0
        # The rows in flight (arrived, not finished) in arrival order, and per row its
        # max(d, 1), 1 / T, stored generated tokens and token segment, live in the first
        # _size entries of preallocated buffers (a row is appended at its arrival and the
        # buffers compacted when rows finish): no array is rebuilt per step. The order is
        # the one the deficit is summed in, so the sum is the same (pairwise) sum of the
        # same floats as over a freshly built array.
        self._size = 0
        self._rows = np.empty(n, np.int64)
        self._d_live = np.empty(n, np.float64)
        self._inv_live = np.empty(n, np.float64)
        # generated tokens of row _rows[j] now = _stored[j] + adds[_seg[j]], adds being
        # Engine.running_adds() and a last 0 for the rows not running (their saved
        # tokens); valid while (engine.running_key, _positions_epoch) equals _tok_key
        self._stored = np.empty(n, np.int64)
        self._seg = np.empty(n, np.intp)
        self._no_add = 2 * engine.m  # the segment of the rows not running
        self._tok_key: object = None
        self._work = np.empty(n, np.float64)  # the per-row terms of the deficit
        self._waiting = np.empty(n, np.int64)  # in flight, never admitted (first _n_waiting)
        self._n_waiting = 0
        self._position = np.zeros(n, dtype=np.int64)  # row -> index in the live rows
        self._positions_epoch = 0  # counts the compactions of the live rows
        self._seen_admitted = -1  # engine.n_admitted / n_finished at the last scan
        self._seen_finished = -1
        self._next_arrival = 0

    def predicted_output_tokens(self, request: RequestView) -> float:
        """The request's predicted output ``d_i`` (prediction, else the fallback)."""
        pred = request.predicted_output_tokens
        return float(self.config.fallback_output_tokens if pred is None else pred)

    def shares_impact_with(self, encoder: ObservationEncoder) -> bool:
        """Whether ``encoder``'s impact estimates are this tracker's, bit for bit.

        True when both use the same impact parameters and per-instance multipliers and
        assume the same output length for a request without a prediction; then
        :meth:`decision_terms` may take the estimate from
        :meth:`ObservationEncoder.encode` instead of computing it again.
        """
        same_default = float(encoder.layout.default_output_tokens) == float(
            self.config.fallback_output_tokens
        )
        key = (repr(encoder.impact_config), np.asarray(encoder.impact_cost).tobytes())
        return same_default and key == self._impact_key

    def decision_terms(
        self,
        request: RequestView,
        state: ClusterState,
        action: int,
        impact: ImpactEstimate | None = None,
    ) -> tuple[ImpactEstimate, float | None]:
        """``(impact estimate, estimated_time_s)`` of a decision, from what the router saw.

        Also notes the engine's time, the start of the decision's interval (``dt_s``).

        Args:
            request: the request being routed.
            state: the snapshot the router saw.
            action: the instance index or ``WAIT``.
            impact: the decision's impact estimate when the caller already has it from
                an encoder for which :meth:`shares_impact_with` is True (the same
                numbers this method would compute); ``None``: compute it.
        """
        self._decision_s = float(self.engine.now_s)
        d_i = self.predicted_output_tokens(request)
        if impact is None:
            impact = instance_impact(request, state, d_i, self._impact_cost, self.config.impact)
        if action == WAIT:
            return impact, None
        coefs = self._coefs[action]
        n_other = int(state.n_running[action])
        other_ctx = int(state.kv_used_tokens[action])
        if coefs is None:
            lat = self.engine.cluster.instances[action].latency
            est = float(
                lat.request_time_s(
                    request.prompt_tokens,
                    d_i,
                    n_other_seqs=n_other,
                    other_context_tokens=other_ctx,
                )
            )
        else:
            est = _request_time_s(coefs, float(request.prompt_tokens), d_i, n_other, other_ctx)
        return impact, est

    def advance(self) -> tuple[int, int, tuple[float, ...], float]:
        """Move to ``engine.now_s``: ``(n_completed, n_admitted, response times, deficit)``.

        Counts are of what changed since the previous call (or the start of the run).
        """
        eng = self.engine
        now = eng.now_s
        arrival = eng.arrival
        # rows with arrival_s <= now (arrivals are sorted; now never decreases)
        lo = hi = self._next_arrival
        n = arrival.shape[0]
        while hi < n and arrival.item(hi) <= now:
            hi += 1
        size = self._size
        position = self._position
        if hi > lo:
            # append the arrivals to the live rows (and to the rows never admitted); a
            # new row is not running unless running_key changed since the last rebuild
            # of the stored tokens, which then happens below
            w = self._n_waiting
            if hi == lo + 1:  # the common case: one arrival, element by element
                self._rows[size] = lo
                position[lo] = size
                self._d_live[size] = self._d_floor.item(lo)
                self._inv_live[size] = self._inv_ideal.item(lo)
                self._stored[size] = eng.saved_gen.item(lo)
                self._seg[size] = self._no_add
                self._waiting[w] = lo
            else:
                end = size + (hi - lo)
                self._rows[size:end] = self._all_rows[lo:hi]
                position[lo:hi] = self._all_rows[size:end]
                self._d_live[size:end] = self._d_floor[lo:hi]
                self._inv_live[size:end] = self._inv_ideal[lo:hi]
                self._stored[size:end] = eng.saved_gen[lo:hi]
                self._seg[size:end] = self._no_add
                self._waiting[w : w + (hi - lo)] = self._all_rows[lo:hi]
            self._n_waiting = w + (hi - lo)
            size = self._size = size + (hi - lo)
            self._next_arrival = hi
        # first admissions: admitted_s is set once, at a request's first admission (the
        # engine counts them: no new one, nothing to look for)
        n_admitted = 0
        if self._n_waiting and eng.n_admitted != self._seen_admitted:
            self._seen_admitted = eng.n_admitted
            waiting = self._waiting[: self._n_waiting]
            admitted = eng.admitted_s[waiting]
            newly = admitted == admitted  # not NaN
            n_admitted = int(np.count_nonzero(newly))
            if n_admitted:
                keep = waiting[~newly]
                self._n_waiting = keep.shape[0]
                waiting[: keep.shape[0]] = keep
        response: tuple[float, ...] = ()
        n_completed = 0
        if size and eng.n_finished != self._seen_finished:
            self._seen_finished = eng.n_finished
            cand = self._rows[:size]
            finish = eng.finish_s[cand]
            fin = finish == finish  # not NaN
            n_completed = int(np.count_nonzero(fin))
            if n_completed:
                done = cand[fin]
                response = tuple((finish[fin] - arrival[done]).tolist())
                stay = ~fin
                live = cand[stay]
                new_size = live.shape[0]
                d_live = self._d_live[:size][stay]
                inv_live = self._inv_live[:size][stay]
                self._rows[:new_size] = live
                self._d_live[:new_size] = d_live
                self._inv_live[:new_size] = inv_live
                position[live] = self._all_rows[:new_size]  # rows left: positions moved
                self._positions_epoch += 1
                size = self._size = new_size
        deficit = 0.0
        if size:
            # live holds every running request (arrived, not finished): running ones
            # take their tokens now, the others (at the router, queued, preempted) the
            # tokens they saved
            stored = self._stored[:size]
            seg = self._seg[:size]
            key = (eng.running_key, self._positions_epoch)
            if key != self._tok_key:
                # the running rows, their order or the saved tokens (written only when a
                # running row is preempted) may have changed: rebuild the stored tokens
                self._tok_key = key
                r_idx, r_stored, r_seg = eng.running_token_parts()
                stored[:] = eng.saved_gen[self._rows[:size]]
                seg.fill(self._no_add)
                if r_idx.size:
                    at = position[r_idx]
                    stored[at] = r_stored
                    seg[at] = r_seg
            adds = eng.running_adds()
            adds.append(0)
            tokens = stored + np.array(adds, np.int64)[seg]
            # max(1 - gen / max(d, 1), floor) / T, summed in row order (a contiguous
            # array of the live rows, as before: numpy's pairwise sum, the same floats)
            gen = self._work[:size]
            np.divide(tokens, self._d_live[:size], out=gen)
            np.subtract(1.0, gen, out=gen)
            np.maximum(gen, self._floor, out=gen)
            np.multiply(self._inv_live[:size], gen, out=gen)
            deficit = float(gen.sum())
        return n_completed, n_admitted, response, deficit

    def _interval_end_s(self) -> float:
        eng = self.engine
        if eng.done and eng.n_requests:
            return float(np.nanmax(eng.finish_s))  # the last completion, not a later event
        return float(eng.now_s)

    def outcome(
        self,
        request: RequestView,
        state: ClusterState,
        action: int,
        next_state: ClusterState,
        terms: tuple[ImpactEstimate, float | None],
        *,
        episode: int = 0,
    ) -> StepOutcome:
        """The :class:`StepOutcome` of a decision, once the engine reached the next one.

        Args:
            request: the routed request.
            state: the snapshot the router saw.
            action: the instance index or ``WAIT`` that was applied.
            next_state: the snapshot at the next decision (or the final exact state).
            terms: :meth:`decision_terms` of this decision.
            episode: the episode index ``k`` (workload-guided reward weight).
        """
        n_completed, n_admitted, response, deficit = self.advance()
        impact, est = terms
        return StepOutcome(
            request=request,
            action=int(action),
            state=state,
            next_state=next_state,
            episode=int(episode),
            n_completed=n_completed,
            n_admitted=n_admitted,
            progress_deficit=deficit,
            response_times_s=response,
            impact_r_mix=impact.r_mix,
            estimated_time_s=est,
            impact=impact,
            dt_s=max(self._interval_end_s() - self._decision_s, 0.0),
        )
