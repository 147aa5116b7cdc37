"""Configuration and result of one replay (:func:`routeplay.replay.run_replay`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import polars as pl

from routeplay._checks import check_int, check_number

from .._types import ClusterConfig
from ._metrics import slo_attainment

__all__ = ["REPLAY_MODES", "REQUEST_SCHEMA", "TIMELINE_SCHEMA", "ReplayConfig", "ReplayResult"]

ReplayMode = Literal["fast", "reference"]
REPLAY_MODES: tuple[str, ...] = ("fast", "reference")

#: Columns of :attr:`ReplayResult.requests` (``task`` is added when the trace has it).
REQUEST_SCHEMA = pl.Schema(
    {
        "request_id": pl.UInt64(),
        "arrival_s": pl.Float64(),
        "prompt_tokens": pl.UInt32(),
        "output_tokens": pl.UInt32(),
        "instance_id": pl.UInt16(),
        "routed_s": pl.Float64(),
        "admitted_s": pl.Float64(),
        "first_token_s": pl.Float64(),
        "finish_s": pl.Float64(),
        "ttft_s": pl.Float64(),
        "tbt_mean_s": pl.Float64(),
        "tbt_max_s": pl.Float64(),
        "e2e_s": pl.Float64(),
        "router_wait_s": pl.Float64(),
        "queue_wait_s": pl.Float64(),
        "n_preemptions": pl.UInt32(),
    }
)

#: Columns of :attr:`ReplayResult.timelines` (one row per sample time and instance).
TIMELINE_SCHEMA = pl.Schema(
    {
        "time_s": pl.Float64(),
        "instance_id": pl.UInt16(),
        "n_queued": pl.UInt32(),
        "n_running": pl.UInt32(),
        "kv_used_tokens": pl.Int64(),
        "busy": pl.Boolean(),
    }
)

_DEFAULT_PROMPT_EDGES = (0.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0, math.inf)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayConfig:
    """Settings of one replay.

    Attributes:
        seed: seeds the generator handed to ``router.reset`` (the engine itself is
            deterministic and draws no random numbers).
        mode: ``"fast"`` advances decode-only stretches in closed form; ``"reference"``
            simulates every iteration as its own event. Both implement the same rules
            and agree to floating-point rounding (a test checks 1e-9 relative).
        timeline_sample_interval_s: sample per-instance queue/running/KV every this
            many seconds (from the first arrival until the last request finishes);
            ``None`` = no timelines.
        prompt_bucket_edges_tokens: ascending edges of the prompt-length buckets of
            :attr:`ClusterState.prompt_bucket_counts` (the paper's P_t); a prompt of
            ``p`` tokens is in bucket ``i`` when ``edges[i] <= p < edges[i+1]``.
        max_sim_time_s: abort (RuntimeError) when simulated time passes this; ``None``
            means last arrival + 24 h. Guards against routers that WAIT forever.
        max_idle_wait_s: abort (RuntimeError) when the router keeps requests waiting
            this long (simulated seconds) while every instance is idle: such a router
            never dispatches, and nothing else can change the state.
        max_timeline_samples: most timeline sample times per instance; a replay that
            would need more is refused before it starts (when the trace's span alone
            needs more) or stopped (RuntimeError) when it reaches the cap, so a tiny
            interval or a stretched trace cannot fill memory.

    Example:
        >>> ReplayConfig(seed=3, mode="reference").mode
        'reference'
        >>> ReplayConfig(mode="slow")
        Traceback (most recent call last):
        ...
        ValueError: ReplayConfig.mode = 'slow'; expected one of ['fast', 'reference'].
    """

    seed: int = 0
    mode: ReplayMode = "fast"
    timeline_sample_interval_s: float | None = 1.0
    prompt_bucket_edges_tokens: tuple[float, ...] = _DEFAULT_PROMPT_EDGES
    max_sim_time_s: float | None = None
    max_idle_wait_s: float = 600.0
    max_timeline_samples: int = 2_000_000

    def __post_init__(self) -> None:
        check_int("ReplayConfig", "seed", self.seed, minimum=0)
        if self.mode not in REPLAY_MODES:
            raise ValueError(
                f"ReplayConfig.mode = {self.mode!r}; expected one of {list(REPLAY_MODES)}."
            )
        if self.timeline_sample_interval_s is not None:
            check_number(
                "ReplayConfig",
                "timeline_sample_interval_s",
                self.timeline_sample_interval_s,
                minimum=0.0,
                strict=True,
                unit="s (or None: no timelines)",
            )
        edges = tuple(float(e) for e in self.prompt_bucket_edges_tokens)
        if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
            raise ValueError(
                f"ReplayConfig.prompt_bucket_edges_tokens = {self.prompt_bucket_edges_tokens!r}; "
                "expected at least two strictly ascending edges, e.g. (0, 512, inf)."
            )
        if edges[0] > 1:
            raise ValueError(
                f"ReplayConfig.prompt_bucket_edges_tokens starts at {edges[0]!r}; expected a "
                "first edge <= 1 so that every prompt (>= 1 token) has a bucket."
            )
        object.__setattr__(self, "prompt_bucket_edges_tokens", edges)
        check_number(
            "ReplayConfig",
            "max_idle_wait_s",
            self.max_idle_wait_s,
            minimum=0.0,
            strict=True,
            unit="s",
        )
        check_int("ReplayConfig", "max_timeline_samples", self.max_timeline_samples, minimum=1)
        if self.max_sim_time_s is not None:
            check_number(
                "ReplayConfig",
                "max_sim_time_s",
                self.max_sim_time_s,
                minimum=0.0,
                strict=True,
                unit="s (or None: last arrival + 24 h)",
            )

    @property
    def n_prompt_buckets(self) -> int:
        """Number of prompt-length buckets."""
        return len(self.prompt_bucket_edges_tokens) - 1


@dataclass(frozen=True, slots=True, kw_only=True)
class ReplayResult:
    """Everything one replay produced: pure data, writing files is the caller's choice.

    Attributes:
        requests: one row per request (:data:`REQUEST_SCHEMA`, plus ``task`` when the
            trace has it), in trace order.
        timelines: per-instance samples (:data:`TIMELINE_SCHEMA`).
        summary: latency statistics, throughput, utilisation and imbalance (keys are
            the constants of :mod:`routeplay.replay.engine._metrics`, plus
            ``utilisation_<instance index>``).
        utilisation: busy fraction of each instance over the makespan.
        config: the replay settings; ``seed`` repeats ``config.seed``.
        cluster: the replayed cluster.
        router_name: the router's ``name``; ``oracle`` whether it saw true lengths.
    """

    requests: pl.DataFrame
    timelines: pl.DataFrame
    summary: dict[str, float]
    utilisation: tuple[float, ...]
    config: ReplayConfig
    cluster: ClusterConfig
    router_name: str
    oracle: bool = False
    seed: int = field(default=0)

    def to_frame(self) -> pl.DataFrame:
        """The per-request frame (:attr:`requests`)."""
        return self.requests

    def slo_attainment(
        self, *, ttft_s: float | None = None, tbt_s: float | None = None, e2e_s: float | None = None
    ) -> float:
        """Fraction of requests meeting every given target (see :func:`slo_attainment`)."""
        return slo_attainment(self.requests, ttft_s=ttft_s, tbt_s=tbt_s, e2e_s=e2e_s)

    def to_dict(self) -> dict[str, Any]:
        """Summary, router and seed as a JSON-friendly dict (for a run's ``summary.json``)."""
        return {
            "router": self.router_name,
            "oracle": self.oracle,
            "seed": self.seed,
            "summary": dict(self.summary),
        }
