"""A trained policy served as a replay router, and its on-disk format.

:class:`PolicyRouter` encodes every decision with
:func:`routeplay.replay._observation.encode_observation` — the same function the
transition logger uses — so training and serving cannot drift apart. It works with a
d3rlpy learnable (``predict``) or with a TorchScript policy (greedy action).

A saved router is a folder:

``model.d3``
    the d3rlpy learnable (``algo.save``). **It is a pickle**: load it only from
    trusted sources. :func:`load_router` prefers the TorchScript file, which is not.
``policy.pt``
    TorchScript greedy policy (``algo.save_policy``): float32 ``(batch, obs_size)`` ->
    int64 ``(batch,)`` action indices.
``router.json``
    observation layout version and fields, ``n_actions``, ``obs_size``, algorithm,
    seed, training config (when known) and library versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from routeplay.replay._observation import (
    OBSERVATION_LAYOUT_VERSION,
    ObservationLayout,
    encode_observation,
)
from routeplay.replay._routers import LeastLoadedRouter
from routeplay.replay._transitions import index_to_action
from routeplay.replay._types import WAIT, ClusterConfig, ClusterState, RequestView, Router

from ._dataset import quiet_d3rlpy
from ._train import TrainResult

__all__ = ["ROUTER_FILES", "PolicyRouter", "load_router", "save_router"]

#: Files of a saved router folder.
ROUTER_FILES: dict[str, str] = {
    "d3": "model.d3",
    "torchscript": "policy.pt",
    "meta": "router.json",
}

_FORMAT_VERSION = 1


@contextlib.contextmanager
def _quiet_torchscript() -> Iterator[None]:
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


def _is_learnable(policy: Any) -> bool:
    return hasattr(policy, "predict") and hasattr(policy, "impl")


def _learnable_shape(policy: Any) -> tuple[int, int] | None:
    impl = getattr(policy, "impl", None)
    if impl is None:
        return None
    shape = impl.observation_shape
    size = int(shape[0]) if isinstance(shape, (tuple, list)) else int(shape)
    return size, int(impl.action_size)


class PolicyRouter:
    """Route with a trained policy: greedy action on ``encode_observation(request, state)``.

    Action index ``m`` (``layout.n_instances``) is WAIT. The router is deterministic
    (the generator given to ``reset`` is only passed on to ``fallback``) and never sees
    true output lengths.

    A learned policy can WAIT on a request forever (the replay then runs into
    ``ReplayConfig.max_sim_time_s``). With ``wait_limit=k``, after ``k`` consecutive
    WAITs on the same request the decision is taken by ``fallback`` (default
    :class:`~routeplay.replay.LeastLoadedRouter`) instead; :attr:`n_fallback_routes`
    counts how often that happened since ``reset`` (report it beside any result: it is
    not the policy's own decision).

    Args:
        policy: a trained d3rlpy learnable, or a TorchScript module (or any torch
            callable) mapping float32
            ``(1, obs_size)`` observations to ``(1,)`` action indices (``policy.pt``).
        layout: the observation layout the policy was trained with.
        name: router name used in results.
        wait_limit: consecutive WAITs on one request before ``fallback`` decides;
            ``None`` = never (pure policy).
        fallback: the router used after ``wait_limit`` WAITs (must not WAIT itself).

    Raises:
        ValueError: a d3rlpy policy whose observation size or action count does not
            match ``layout``.

    Example:
        >>> import torch
        >>> from routeplay.replay._check import make_cluster_state
        >>> from routeplay.replay._types import RequestView
        >>> layout = ObservationLayout(n_instances=2, n_prompt_buckets=4, n_decode_buckets=5)
        >>> class Wait(torch.nn.Module):  # always the last action index (WAIT)
        ...     def forward(self, x: torch.Tensor) -> torch.Tensor:
        ...         return torch.full((x.shape[0],), 2, dtype=torch.int64)
        >>> router = PolicyRouter(Wait(), layout=layout, name="wait")
        >>> router.route(RequestView(0, 0.0, 10), make_cluster_state(2))
        -1
    """

    oracle = False

    def __init__(
        self,
        policy: Any,
        *,
        layout: ObservationLayout,
        name: str = "policy",
        wait_limit: int | None = None,
        fallback: Router | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"PolicyRouter name = {name!r}; expected a non-empty str.")
        if wait_limit is not None and (
            isinstance(wait_limit, bool) or not isinstance(wait_limit, int) or wait_limit < 0
        ):
            raise ValueError(
                f"PolicyRouter wait_limit = {wait_limit!r}; expected None or an int >= 0."
            )
        self.name = name
        self.wait_limit = wait_limit
        self.fallback: Router = fallback if fallback is not None else LeastLoadedRouter()
        self.n_fallback_routes = 0
        self._wait_request: int | None = None
        self._n_waits = 0
        self.layout = layout
        self.policy = policy
        self.n_actions = layout.n_instances + 1
        #: check_router skips its one-instance phase for routers with a fixed count
        self.fixed_n_instances = layout.n_instances
        self._learnable = _is_learnable(policy)
        if self._learnable:
            shape = _learnable_shape(policy)
            expected = (layout.size, self.n_actions)
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

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Check that ``cluster`` has the layout's instance count (the rng is unused).

        Raises:
            ValueError: when the instance counts differ.
        """
        if cluster.n_instances != self.layout.n_instances:
            raise ValueError(
                f"PolicyRouter {self.name!r} was trained for {self.layout.n_instances} "
                f"instances (observation layout) but the cluster has {cluster.n_instances}; "
                "expected the same count. Fix: replay on a cluster shaped like the training "
                "logs, or train a policy on logs of this cluster."
            )
        self.fallback.reset(cluster, rng)
        self.n_fallback_routes = 0
        self._wait_request = None
        self._n_waits = 0

    def action_index(self, obs: npt.NDArray[np.float32]) -> int:
        """The policy's greedy action index for one encoded observation."""
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(obs, dtype=np.float32).reshape(1, -1))
        with torch.inference_mode():
            if self._learnable:
                out = self.policy.impl.predict_best_action(x)
            else:
                out = self.policy(x)
        return int(out.reshape(-1)[0])

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Encode the decision, take the greedy action, map index ``m`` to WAIT."""
        obs = encode_observation(request, state, self.layout)
        action = index_to_action(self.action_index(obs), self.layout.n_instances)
        if action != WAIT:
            self._wait_request = None
            return int(action)
        if self._wait_request != request.request_id:
            self._wait_request = request.request_id
            self._n_waits = 0
        self._n_waits += 1
        if self.wait_limit is not None and self._n_waits > self.wait_limit:
            self.n_fallback_routes += 1
            self._wait_request = None
            return int(self.fallback.route(request, state))
        return int(WAIT)


def save_router(
    result_or_algo: TrainResult | Any,
    path_dir: str | Path,
    *,
    layout: ObservationLayout,
    layout_version: str = OBSERVATION_LAYOUT_VERSION,
) -> Path:
    """Write a trained policy as a router folder (``model.d3``, ``policy.pt``, ``router.json``).

    Args:
        result_or_algo: a :class:`TrainResult` (config and seed are recorded) or a
            trained d3rlpy learnable.
        path_dir: folder to write (created if missing; files are overwritten).
        layout: the observation layout the policy was trained with.
        layout_version: observation layout version of the training logs.

    Returns:
        The folder.

    Raises:
        ValueError: the policy's observation size or action count does not match
            ``layout``.
    """
    import d3rlpy
    import torch

    import routeplay

    if isinstance(result_or_algo, TrainResult):
        algo = result_or_algo.algo
        config: dict[str, Any] | None = result_or_algo.config.to_dict()
        algorithm: str = result_or_algo.config.algorithm
        seed: int | None = result_or_algo.seed
    else:
        algo = result_or_algo
        config = None
        algorithm = type(algo).__name__
        seed = None
    shape = _learnable_shape(algo)
    expected = (layout.size, layout.n_instances + 1)
    if shape != expected:
        raise ValueError(
            f"policy has (observation size, actions) = {shape} but the layout gives "
            f"{expected}; expected them equal. Fix: pass the layout of the training logs."
        )
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    with quiet_d3rlpy(), _quiet_torchscript():
        algo.save(str(out / ROUTER_FILES["d3"]))
        algo.save_policy(str(out / ROUTER_FILES["torchscript"]))
    meta = {
        "format_version": _FORMAT_VERSION,
        "layout_version": layout_version,
        "layout": dataclasses.asdict(layout),
        "obs_names": layout.names(),
        "obs_size": layout.size,
        "n_actions": layout.n_instances + 1,
        "algorithm": algorithm,
        "seed": seed,
        "config": config,
        "versions": {
            "routeplay": routeplay.__version__,
            "d3rlpy": d3rlpy.__version__,
            "torch": torch.__version__,
        },
    }
    (out / ROUTER_FILES["meta"]).write_text(
        json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8"
    )
    return out


def load_router(
    path_dir: str | Path,
    *,
    prefer: Literal["torchscript", "d3"] = "torchscript",
    name: str | None = None,
    wait_limit: int | None = None,
    fallback: Router | None = None,
) -> PolicyRouter:
    """Load a router folder written by :func:`save_router`.

    Args:
        path_dir: the folder.
        prefer: "torchscript" (``policy.pt``; no pickle) or "d3" (``model.d3``: a
            pickle, trusted files only; gives the full d3rlpy learnable).
        name: router name (default ``"policy-<algorithm>"``).
        wait_limit: see :class:`PolicyRouter`.
        fallback: see :class:`PolicyRouter`.

    Returns:
        A :class:`PolicyRouter` with the stored layout.

    Raises:
        ValueError: the folder's observation layout version differs from this
            routeplay's, its layout does not match its stored observation size or
            action count, or ``prefer`` is unknown.
        FileNotFoundError: a needed file is missing.
    """
    if prefer not in ("torchscript", "d3"):
        raise ValueError(f"prefer = {prefer!r}; expected one of ['torchscript', 'd3'].")
    folder = Path(path_dir)
    meta_path = folder / ROUTER_FILES["meta"]
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{str(meta_path)!r} does not exist; expected a folder written by save_router."
        )
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    stored = str(meta.get("layout_version"))
    if stored != OBSERVATION_LAYOUT_VERSION:
        raise ValueError(
            f"router {str(folder)!r} was trained with observation layout version {stored!r}, "
            f"but this routeplay encodes observations with layout version "
            f"{OBSERVATION_LAYOUT_VERSION!r}; its inputs would be misread. Fix: retrain it "
            "on transitions logged with this routeplay, or load it with the routeplay "
            f"version that wrote it ({meta.get('versions', {}).get('routeplay')})."
        )
    try:
        layout = ObservationLayout(**meta["layout"])
    except TypeError as exc:
        raise ValueError(
            f"router {str(folder)!r} has layout fields {sorted(meta['layout'])} that this "
            f"routeplay's ObservationLayout does not accept ({exc}). Fix: retrain, or use the "
            "routeplay version that wrote it."
        ) from exc
    got = (layout.size, layout.n_instances + 1)
    want = (int(meta["obs_size"]), int(meta["n_actions"]))
    if got != want:
        raise ValueError(
            f"router {str(folder)!r}: its layout gives (observation size, actions) = {got} "
            f"but the stored policy expects {want}; the folder is inconsistent. Fix: save it "
            "again with save_router(..., layout=<the training layout>)."
        )
    file = folder / ROUTER_FILES[prefer]
    if not file.is_file():
        raise FileNotFoundError(f"{str(file)!r} does not exist; expected it beside router.json.")
    if prefer == "d3":
        import d3rlpy

        with quiet_d3rlpy():
            policy = d3rlpy.load_learnable(str(file), device="cpu:0")
    else:
        import torch

        with _quiet_torchscript():
            policy = torch.jit.load(str(file), map_location="cpu")  # type: ignore[no-untyped-call]
        policy.eval()
    return PolicyRouter(
        policy,
        layout=layout,
        name=name or f"policy-{meta['algorithm']}",
        wait_limit=wait_limit,
        fallback=fallback,
    )
