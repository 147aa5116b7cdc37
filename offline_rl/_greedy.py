"""The greedy action of a trained policy: a d3rlpy learnable or a TorchScript callable.

One place for what :class:`~routeplay.offline_rl.PolicyRouter` and
:class:`~routeplay.offline_rl.PolicyScheduler` share: recognising a d3rlpy learnable,
checking its (observation size, action count) against the layout it is served with, and
taking its greedy action on one observation.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GreedyPolicy", "is_learnable", "learnable_shape", "quiet_torchscript"]


@contextlib.contextmanager
def quiet_torchscript() -> Iterator[None]:
    """Silence torch 2.13's TorchScript deprecation notices and d3rlpy's tracer warnings.

    ``torch.jit.trace``/``torch.jit.load`` still work in torch 2.13 but warn that
    TorchScript is deprecated; the trace of d3rlpy's greedy policy also emits a
    ``TracerWarning`` about a distribution check that does not affect the greedy action.
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # type: ignore[attr-defined]
        yield


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

    def __getstate__(self) -> dict[str, Any]:
        """Pickle support (labelling worker processes): without the torch module.

        A TorchScript policy travels as its ``torch.jit.save`` bytes (TorchScript
        modules cannot be pickled); a d3rlpy learnable pickles as it is.
        """
        state = {k: v for k, v in self.__dict__.items() if k != "_torch"}
        if isinstance(self.policy, self._torch.jit.ScriptModule):
            buffer = io.BytesIO()
            with quiet_torchscript():
                self._torch.jit.save(self.policy, buffer)
            state["policy"] = _TorchScriptBytes(buffer.getvalue())
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        import torch

        policy = state["policy"]
        if isinstance(policy, _TorchScriptBytes):
            # bytes this class wrote in another process of the same run (never a file)
            with quiet_torchscript():
                state["policy"] = torch.jit.load(io.BytesIO(policy.data), map_location="cpu")  # type: ignore[no-untyped-call]
        self.__dict__.update(state)
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


class _TorchScriptBytes:
    """A TorchScript policy's ``torch.jit.save`` bytes inside a pickled GreedyPolicy."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __getstate__(self) -> bytes:
        return self.data

    def __setstate__(self, data: bytes) -> None:
        self.data = data
