"""The greedy action of a trained policy: a d3rlpy learnable or a TorchScript callable.

One place for what :class:`~routeplay.offline_rl.PolicyRouter` and
:class:`~routeplay.offline_rl.PolicyScheduler` share: recognising a d3rlpy learnable,
checking its (observation size, action count) against the layout it is served with, and
taking its greedy action on one observation.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GreedyPolicy", "is_learnable", "learnable_shape"]


def is_learnable(policy: Any) -> bool:
    """True for a d3rlpy learnable (it has ``predict`` and an ``impl``)."""
    return hasattr(policy, "predict") and hasattr(policy, "impl")


def learnable_shape(policy: Any) -> tuple[int, int] | None:
    """``(observation size, action count)`` of a built d3rlpy learnable, else ``None``."""
    impl = getattr(policy, "impl", None)
    if impl is None:
        return None
    shape = impl.observation_shape
    size = int(shape[0]) if isinstance(shape, (tuple, list)) else int(shape)
    return size, int(impl.action_size)


class GreedyPolicy:
    """Greedy actions of ``policy``, checked against the ``(obs size, actions)`` it serves.

    Args:
        policy: a trained d3rlpy learnable, or a TorchScript module (or any torch
            callable) mapping float32 ``(1, obs_size)`` to ``(1,)`` action indices.
        expected: the ``(observation size, action count)`` of the serving layout.
        layout: the layout, named in the error message.

    Raises:
        ValueError: a learnable of another shape, or a policy that is neither.

    Example:
        >>> import torch
        >>> class First(torch.nn.Module):
        ...     def forward(self, x: torch.Tensor) -> torch.Tensor:
        ...         return torch.zeros((x.shape[0],), dtype=torch.int64)
        >>> GreedyPolicy(First(), expected=(3, 2), layout="a layout")(np.zeros(3, np.float32))
        0
    """

    def __init__(self, policy: Any, *, expected: tuple[int, int], layout: object) -> None:
        self.policy = policy
        self.learnable = is_learnable(policy)
        if self.learnable:
            shape = learnable_shape(policy)
            if shape is not None and shape != expected:
                raise ValueError(
                    f"policy has (observation size, actions) = {shape} but the layout "
                    f"{layout} gives {expected}; expected them equal. Fix: pass the layout "
                    "the policy was trained with (router.json of its saved folder)."
                )
        elif not callable(policy):
            raise ValueError(
                f"policy of type {type(policy).__name__} is neither a d3rlpy learnable nor a "
                "callable TorchScript module; expected one of them."
            )
        import torch

        self._torch = torch

    def __call__(self, obs: npt.NDArray[np.float32]) -> int:
        """The greedy action index for one encoded observation."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32).reshape(1, -1))
        with torch.inference_mode():
            if self.learnable:
                out = self.policy.impl.predict_best_action(x)
            else:
                out = self.policy(x)
        return int(out.reshape(-1)[0])
