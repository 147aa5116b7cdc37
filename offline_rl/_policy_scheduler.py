"""A trained policy served as a router-queue scheduler (tracker issue 12, item 4).

:class:`PolicyScheduler` is the learned counterpart of ``late-binding-spf``: at each
decision with a free instance it encodes the queue's shortlist with
:class:`~routeplay.replay.rl._scheduling.SchedulerEncoder` (the encoder the logger
used, so training and serving cannot drift apart), takes the policy's greedy slot and
releases that request to the free instance where it is estimated to finish earliest.
With no free instance it holds every request (a fixed rule). It never sees true output
lengths. Saved and loaded like a router (``save_router`` / ``load_router``: the folder's
``router.json`` says ``"kind": "scheduler"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from routeplay.replay._types import WAIT, ClusterConfig, ClusterState, RequestView
from routeplay.replay.rl._scheduling import SchedulerEncoder, SchedulerLayout

from ._greedy import GreedyPolicy

__all__ = ["PolicyScheduler"]


class PolicyScheduler:
    """Schedule the router queue with a trained policy over shortlist slots.

    Args:
        policy: a trained d3rlpy learnable, or a TorchScript module (or any torch
            callable) mapping float32 ``(1, layout.size)`` observations to ``(1,)``
            slot indices (``policy.pt``).
        layout: the scheduler layout the policy was trained with.
        name: the name in results.

    Example:
        >>> import numpy as np, torch
        >>> from routeplay.replay import RequestView, make_cluster_state, make_uniform_cluster
        >>> from routeplay.replay import SchedulerLayout
        >>> class Oldest(torch.nn.Module):   # always slot 1: here the oldest request
        ...     def forward(self, x: torch.Tensor) -> torch.Tensor:
        ...         return torch.ones((x.shape[0],), dtype=torch.int64)
        >>> s = PolicyScheduler(Oldest(), layout=SchedulerLayout(n_instances=2, n_candidates=2))
        >>> s.reset(make_uniform_cluster(2), np.random.default_rng(0))
        >>> queue = (RequestView(0, 0.0, 900, predicted_output_tokens=50.0),
        ...          RequestView(1, 0.5, 10, predicted_output_tokens=5.0))
        >>> s.schedule(queue, make_cluster_state(n_running=[1, 0], now_s=1.0))
        (0, 1)
    """

    oracle = False
    #: the observation depends on the decision state only
    observation_markov = True

    def __init__(self, policy: Any, *, layout: SchedulerLayout, name: str = "policy") -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"PolicyScheduler name = {name!r}; expected a non-empty str.")
        self.name = name
        self.layout = layout
        self.policy = policy
        self.n_actions = layout.n_actions
        self.fixed_n_instances = layout.n_instances
        self._greedy = GreedyPolicy(policy, expected=(layout.size, layout.n_actions), layout=layout)
        self._encoder = SchedulerEncoder(layout)
        self._ready = False

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Build the encoder for ``cluster`` (``rng`` is unused: the policy is greedy)."""
        self._encoder.reset(cluster)
        self._ready = True

    def action_index(self, obs: npt.NDArray[np.float32]) -> int:
        """The policy's greedy slot for one encoded observation."""
        return self._greedy(obs)

    def schedule(self, queue: tuple[RequestView, ...], state: ClusterState) -> tuple[int, int]:
        """Release the policy's shortlisted request to a free instance, or hold everything.

        Raises:
            RuntimeError: before :meth:`reset`.
            ValueError: an empty queue, or a policy answer outside ``0..n_actions-1``.
        """
        if not self._ready:
            raise RuntimeError(
                f"PolicyScheduler {self.name!r}: schedule() before reset(cluster, rng); "
                "expected reset first (run_replay calls it)."
            )
        if not queue:
            raise ValueError(
                f"scheduler {self.name!r} was given an empty queue; expected at least one "
                "waiting request."
            )
        enc = self._encoder
        free = enc.free(state)
        if not any(free):
            return 0, WAIT  # HOLD: every request waits for the next decision point
        obs, slots = enc.encode(queue, state, free)
        slot = self.action_index(obs)
        if not 0 <= slot < len(slots):
            raise ValueError(
                f"policy {self.name!r} answered slot {slot}; expected 0..{len(slots) - 1}."
            )
        pos = slots[slot]
        return pos, enc.place(queue[pos], state, free)
