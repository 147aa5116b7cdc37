"""Tiny fake routers and hand-checkable inputs for engine tests (real routers live in replay/)."""

from __future__ import annotations

import numpy as np
import polars as pl
from routeplay.estimator import LinearLatencyModel
from routeplay.replay._types import WAIT, ClusterConfig, ClusterState, RequestView

# 1 ms per prefill token, 10 ms per decoding sequence: times are easy to add up by hand
STEP_LAT = LinearLatencyModel(
    intercept_s=0.0,
    prefill_s_per_token=1e-3,
    prefill_s_per_token2=0.0,
    decode_s_per_seq=0.01,
    decode_s_per_context_token=0.0,
)
MODES = ["fast", "reference"]


def rows_trace(rows: list[tuple[float, int, int]]) -> pl.DataFrame:
    """A trace from ``(arrival_s, prompt_tokens, output_tokens)`` rows, ids 0..n-1."""
    return pl.DataFrame(
        {
            "request_id": np.arange(len(rows)),
            "arrival_s": [r[0] for r in rows],
            "prompt_tokens": [r[1] for r in rows],
            "output_tokens": [r[2] for r in rows],
        }
    )


class RoundRobinFake:
    """Instances 0, 1, ..., m-1, 0, ... in decision order."""

    name = "fake-round-robin"
    oracle = False

    def __init__(self) -> None:
        self._next = 0
        self._m = 1

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        self._next = 0
        self._m = cluster.n_instances

    def route(self, request: RequestView, state: ClusterState) -> int:
        k = self._next
        self._next = (k + 1) % self._m
        return k


class AlwaysZeroFake:
    """Everything to instance 0."""

    name = "fake-always-0"
    oracle = False

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        pass

    def route(self, request: RequestView, state: ClusterState) -> int:
        return 0


class WaitThenRouteFake:
    """WAITs ``n_waits`` times for each request, then routes it round robin.

    Records every (request id, now_s, state) it was offered in ``calls``.
    """

    name = "fake-wait-then-route"
    oracle = False

    def __init__(self, n_waits: int = 1) -> None:
        self.n_waits = n_waits
        self.calls: list[tuple[int, float, ClusterState]] = []
        self._seen: dict[int, int] = {}
        self._next = 0
        self._m = 1

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        self.calls = []
        self._seen = {}
        self._next = 0
        self._m = cluster.n_instances

    def route(self, request: RequestView, state: ClusterState) -> int:
        self.calls.append((request.request_id, state.now_s, state))
        seen = self._seen.get(request.request_id, 0)
        self._seen[request.request_id] = seen + 1
        if seen < self.n_waits:
            return WAIT
        k = self._next
        self._next = (k + 1) % self._m
        return k


class BadIndexFake:
    """Returns ``value`` for every request (to test RouterError)."""

    oracle = False

    def __init__(self, value: object = 7) -> None:
        self.value = value
        self.name = "fake-bad-index"

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        pass

    def route(self, request: RequestView, state: ClusterState) -> int:
        return self.value  # type: ignore[return-value]


class RecordingFake:
    """Round robin that records every request view and state it saw (oracle optional)."""

    def __init__(self, *, oracle: bool = False) -> None:
        self.oracle = oracle
        self.name = "fake-recording-oracle" if oracle else "fake-recording"
        self.views: list[RequestView] = []
        self.states: list[ClusterState] = []
        self._next = 0
        self._m = 1

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        self.views, self.states, self._next = [], [], 0
        self._m = cluster.n_instances

    def route(self, request: RequestView, state: ClusterState) -> int:
        self.views.append(request)
        self.states.append(state)
        k = self._next
        self._next = (k + 1) % self._m
        return k


class LeastTokensFake:
    """Scoring router: fewest ``tokens_in_system`` (ties: lowest index)."""

    name = "fake-least-tokens"
    oracle = False

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        pass

    def route(self, request: RequestView, state: ClusterState) -> int:
        return int(np.argmin(state.tokens_in_system))
