"""Discrete-event cluster simulator, routers, observation/reward encoding, RL environment."""

from __future__ import annotations

from ._types import (
    BATCHING_POLICIES,
    WAIT,
    ClusterConfig,
    ClusterState,
    InstanceConfig,
    OracleRequestView,
    RequestView,
    Router,
    RouterError,
)

__all__ = [
    "BATCHING_POLICIES",
    "WAIT",
    "ClusterConfig",
    "ClusterState",
    "InstanceConfig",
    "OracleRequestView",
    "RequestView",
    "Router",
    "RouterError",
]
