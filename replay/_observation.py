"""The one place that turns a routing decision's inputs into an observation vector.

Dataset building (transition logs), the gymnasium environment and ``PolicyRouter``
(serving a trained policy as a router) all call :func:`encode_observation`, so
training and serving cannot drift apart.

Layout (version :data:`OBSERVATION_LAYOUT_VERSION`), for ``m`` instances, ``B_p``
prompt buckets and ``B_d`` decode buckets — the paper's state (DESIGN.md, System A):

=======================  ==========  ==================================================
block                    size        value
=======================  ==========  ==================================================
``queue``                1           router queue length / cap (already capped at 512)
``prompt``               1           log1p(prompt tokens) / log1p(prompt_scale_tokens)
``decode_bucket``        B_d         one-hot of the predicted output bucket (zeros if none)
``P``                    m * B_p     per-instance prompt-bucket counts / count_scale
``D``                    m * B_d     per-instance predicted-decode-bucket counts / count_scale
``capacity``             m           free sequence slots / max_running_seqs
``kv_free``              m           free KV tokens / KV capacity
``earliest_completion``  m           (earliest completion - now) / (that + time_scale_s)
=======================  ==========  ==================================================

Counts are divided by ``count_scale`` and clipped to [0, 1] (a count above the scale
saturates; the raw counts stay in the ClusterState). Every value lies in [0, 1], which
keeps the Q-networks' inputs on one scale without a fitted scaler (a fitted scaler's
statistics would have to travel with the policy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ._types import ClusterState, RequestView

__all__ = [
    "OBSERVATION_LAYOUT_VERSION",
    "ObservationLayout",
    "encode_observation",
]

#: Bumped whenever the meaning or order of the observation entries changes; stored
#: beside every transition dataset and trained policy.
OBSERVATION_LAYOUT_VERSION = "1"


@dataclass(frozen=True, slots=True, kw_only=True)
class ObservationLayout:
    """Shape and scales of the observation vector (see the module docstring).

    Attributes:
        n_instances: number of instances ``m``.
        n_prompt_buckets: columns of ``ClusterState.prompt_bucket_counts``.
        n_decode_buckets: columns of ``ClusterState.decode_bucket_counts``.
        queue_cap: router-queue length that maps to 1.0 (the paper's 512).
        prompt_scale_tokens: prompt length that maps to 1.0 on the log scale.
        count_scale: per-bucket request count that maps to 1.0.
        time_scale_s: time to earliest completion that maps to 0.5.

    Example:
        >>> layout = ObservationLayout(n_instances=2, n_prompt_buckets=2, n_decode_buckets=3)
        >>> layout.size
        21
        >>> layout.names()[:4]
        ['queue', 'prompt', 'decode_bucket_0', 'decode_bucket_1']
    """

    n_instances: int
    n_prompt_buckets: int
    n_decode_buckets: int
    queue_cap: int = 512
    prompt_scale_tokens: float = 32_768.0
    count_scale: float = 64.0
    time_scale_s: float = 10.0

    def __post_init__(self) -> None:
        for name in ("n_instances", "n_prompt_buckets", "n_decode_buckets", "queue_cap"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"ObservationLayout.{name} = {value!r}; expected a positive integer."
                )
        for name in ("prompt_scale_tokens", "count_scale", "time_scale_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"ObservationLayout.{name} = {value!r}; expected > 0.")

    @property
    def size(self) -> int:
        """Length of the observation vector."""
        m = self.n_instances
        return (
            2 + self.n_decode_buckets + m * (self.n_prompt_buckets + self.n_decode_buckets) + 3 * m
        )

    def names(self) -> list[str]:
        """One name per observation entry, in order."""
        m = self.n_instances
        names = ["queue", "prompt"]
        names += [f"decode_bucket_{b}" for b in range(self.n_decode_buckets)]
        names += [f"P_{i}_{b}" for i in range(m) for b in range(self.n_prompt_buckets)]
        names += [f"D_{i}_{b}" for i in range(m) for b in range(self.n_decode_buckets)]
        names += [f"capacity_{i}" for i in range(m)]
        names += [f"kv_free_{i}" for i in range(m)]
        names += [f"earliest_completion_{i}" for i in range(m)]
        return names

    @classmethod
    def for_state(cls, state: ClusterState, **scales: float) -> ObservationLayout:
        """The layout whose shape matches ``state`` (scales default or as given)."""
        return cls(
            n_instances=state.n_instances,
            n_prompt_buckets=int(state.prompt_bucket_counts.shape[1]),
            n_decode_buckets=int(state.decode_bucket_counts.shape[1]),
            **scales,  # type: ignore[arg-type]
        )


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
    request: RequestView, state: ClusterState, layout: ObservationLayout | None = None
) -> npt.NDArray[np.float32]:
    """Encode one routing decision's inputs as a float32 vector in [0, 1].

    Args:
        request: the request being routed (its true output length is never read).
        state: the cluster snapshot the router sees.
        layout: shape and scales; inferred from ``state`` when omitted.

    Returns:
        A vector of length ``layout.size`` (layout in the module docstring).

    Raises:
        ValueError: when ``state`` does not have the layout's shape.

    Example:
        >>> import numpy as np
        >>> from routeplay.replay._types import ClusterState, RequestView
        >>> z = np.zeros(2, dtype=np.int64)
        >>> state = ClusterState(now_s=0.0, router_queue_len=3, n_queued=z, n_running=z,
        ...     prefill_tokens_pending=z, decode_tokens_done=z,
        ...     predicted_decode_tokens_left=np.zeros(2), kv_used_tokens=z,
        ...     kv_capacity_tokens=np.array([100, 100]), max_running_seqs=np.array([4, 4]),
        ...     prompt_bucket_counts=np.zeros((2, 2), dtype=np.int64),
        ...     decode_bucket_counts=np.array([[1, 0, 0], [0, 0, 2]]),
        ...     earliest_completion_s=np.array([0.0, 10.0]))
        >>> obs = encode_observation(RequestView(0, 0.0, 100, predicted_bucket=1), state)
        >>> obs.shape, obs.dtype.name
        ((21,), 'float32')
        >>> obs[2:5].tolist(), float(obs[-1])
        ([0.0, 1.0, 0.0], 0.5)
    """
    if layout is None:
        layout = ObservationLayout.for_state(state)
    _check_shape(layout, state)
    m = layout.n_instances
    out = np.empty(layout.size, dtype=np.float64)
    out[0] = min(state.router_queue_len, layout.queue_cap) / layout.queue_cap
    out[1] = min(
        np.log1p(max(request.prompt_tokens, 0)) / np.log1p(layout.prompt_scale_tokens), 1.0
    )
    k = 2
    one_hot = out[k : k + layout.n_decode_buckets]
    one_hot[:] = 0.0
    bucket = request.predicted_bucket
    if bucket is not None:
        if not 0 <= bucket < layout.n_decode_buckets:
            raise ValueError(
                f"request {request.request_id} has predicted_bucket={bucket}; expected a "
                f"bucket in range({layout.n_decode_buckets}). Fix: use the predictor the "
                "layout was built for."
            )
        one_hot[bucket] = 1.0
    k += layout.n_decode_buckets
    for counts in (state.prompt_bucket_counts, state.decode_bucket_counts):
        flat = np.asarray(counts, dtype=np.float64).ravel()
        out[k : k + flat.size] = np.clip(flat / layout.count_scale, 0.0, 1.0)
        k += flat.size
    max_seqs = np.maximum(np.asarray(state.max_running_seqs, dtype=np.float64), 1.0)
    free_seqs = max_seqs - np.asarray(state.n_running, dtype=np.float64)
    out[k : k + m] = np.clip(free_seqs / max_seqs, 0.0, 1.0)
    k += m
    kv_cap = np.maximum(np.asarray(state.kv_capacity_tokens, dtype=np.float64), 1.0)
    out[k : k + m] = np.clip(1.0 - np.asarray(state.kv_used_tokens) / kv_cap, 0.0, 1.0)
    k += m
    wait = np.maximum(np.asarray(state.earliest_completion_s, dtype=np.float64) - state.now_s, 0)
    out[k : k + m] = wait / (wait + layout.time_scale_s)
    return out.astype(np.float32)
