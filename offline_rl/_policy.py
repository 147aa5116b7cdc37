"""A trained policy served as a replay router, and its on-disk format.

:class:`PolicyRouter` encodes every decision with an
:class:`~routeplay.replay.rl._observation.ObservationEncoder` built at ``reset`` from the
stored layout and the replayed cluster — the same encoder the transition logger and
``RoutingEnv`` use — so training and serving cannot drift apart. It works with a
d3rlpy learnable (``predict``) or with a TorchScript policy (greedy action).

A saved router is a folder:

``model.d3``
    the d3rlpy learnable (``algo.save``). **It is a Python pickle**: unpickling runs
    whatever code its author put in it, so :func:`load_router` reads it only with
    ``prefer="d3", trust=True``. By default it loads the TorchScript file, which is
    not a pickle.
``policy.pt``
    TorchScript greedy policy (``algo.save_policy``): float32 ``(batch, obs_size)`` ->
    int64 ``(batch,)`` action indices. ``torch.jit.load`` reads it with TorchScript's
    own restricted unpickler (no Python objects of arbitrary classes are created).
``router.json``
    observation layout version and fields, ``n_actions``, ``obs_size``, algorithm,
    seed, training config (when known), library versions and the sha256 of the two
    model files (checked on load: a file replaced after saving is refused).

:func:`save_router` deletes ``router.json`` first and writes it last (every file via a
temporary file and ``os.replace``), so an interrupted save never leaves a folder that
loads: a folder without ``router.json`` is not a router.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from routeplay.replay._types import WAIT, ClusterConfig, ClusterState, RequestView, Router
from routeplay.replay.rl._observation import (
    OBSERVATION_LAYOUT_VERSION,
    ObservationEncoder,
    ObservationLayout,
)
from routeplay.replay.rl._scheduling import SCHEDULER_LAYOUT_VERSION, SchedulerLayout
from routeplay.replay.rl._transitions import index_to_action
from routeplay.replay.routers._builtin import LeastLoadedRouter

from ._dataset import quiet_d3rlpy
from ._files import LOAD_ERRORS, one_line, sha256_file, write_json_atomic
from ._greedy import GreedyPolicy, is_learnable, learnable_shape
from ._greedy import quiet_torchscript as _quiet_torchscript
from ._policy_scheduler import PolicyScheduler
from ._train import TrainResult

__all__ = ["ROUTER_FILES", "PolicyRouter", "load_router", "save_router"]

#: Files of a saved router folder.
ROUTER_FILES: dict[str, str] = {
    "d3": "model.d3",
    "torchscript": "policy.pt",
    "meta": "router.json",
}

_FORMAT_VERSION = 1


class PolicyRouter:
    """Route with a trained policy: greedy action on the encoded observation.

    Action index ``m`` (``layout.n_instances``) is WAIT. The router is deterministic
    (the generator given to ``reset`` is only passed on to ``fallback``) and never sees
    true output lengths. ``reset(cluster, rng)`` builds the observation encoder from
    the cluster's latency models (min-min ETA, speed, impact blocks), so it must come
    before ``route``.

    ``observation_markov`` (read by the transition logger's ``behaviour_markov``) is
    True only without a ``wait_limit``: the fallback after consecutive WAITs depends
    on the router's history, not on the observation alone.

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
        >>> from routeplay.replay import make_cluster_state
        >>> from routeplay.replay import RequestView
        >>> layout = ObservationLayout(n_instances=2, n_prompt_buckets=4, n_decode_buckets=5)
        >>> class Wait(torch.nn.Module):  # always the last action index (WAIT)
        ...     def forward(self, x: torch.Tensor) -> torch.Tensor:
        ...         return torch.full((x.shape[0],), 2, dtype=torch.int64)
        >>> router = PolicyRouter(Wait(), layout=layout, name="wait")
        >>> from routeplay.replay import make_uniform_cluster
        >>> router.reset(make_uniform_cluster(2), np.random.default_rng(0))
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
        self.observation_markov = wait_limit is None
        self._encoder: ObservationEncoder | None = None
        self.policy = policy
        self.n_actions = layout.n_instances + 1
        #: check_router skips its one-instance phase for routers with a fixed count
        self.fixed_n_instances = layout.n_instances
        self._greedy = GreedyPolicy(policy, expected=(layout.size, self.n_actions), layout=layout)

    def reset(self, cluster: ClusterConfig, rng: np.random.Generator) -> None:
        """Check ``cluster`` against the layout and build the encoder (rng: fallback only).

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
        self._encoder = ObservationEncoder(self.layout, cluster)
        self.fallback.reset(cluster, rng)
        self.n_fallback_routes = 0
        self._wait_request = None
        self._n_waits = 0

    def action_index(self, obs: npt.NDArray[np.float32]) -> int:
        """The policy's greedy action index for one encoded observation."""
        return self._greedy(obs)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle support (labelling worker processes): the policy travels once.

        It goes inside :class:`GreedyPolicy`, which carries a TorchScript module as its
        bytes.
        """
        return {k: v for k, v in self.__dict__.items() if k != "policy"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.policy = self._greedy.policy

    def route(self, request: RequestView, state: ClusterState) -> int:
        """Encode the decision, take the greedy action, map index ``m`` to WAIT.

        Raises:
            RuntimeError: before :meth:`reset` (the encoder needs the cluster).
        """
        encoder = self._encoder
        if encoder is None:
            raise RuntimeError(
                f"PolicyRouter {self.name!r}: route() called before reset(cluster, rng); "
                "expected reset first (the observation needs the cluster's latency models). "
                "Fix: call router.reset(cluster, rng), as run_replay does."
            )
        obs = encoder(request, state)
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
    layout: ObservationLayout | SchedulerLayout,
    layout_version: str | None = None,
) -> Path:
    """Write a trained policy as a router folder (``model.d3``, ``policy.pt``, ``router.json``).

    A policy trained on scheduler logs (``layout`` a
    :class:`~routeplay.replay.SchedulerLayout`) is saved the same way with
    ``"kind": "scheduler"`` in ``router.json``; :func:`load_router` then returns a
    :class:`~routeplay.offline_rl.PolicyScheduler`.

    Kill-safe: ``router.json`` is deleted first and written last (each file through a
    temporary file and ``os.replace``), so an interrupted save leaves a folder that
    :func:`load_router` refuses, never one that mixes two models. ``router.json``
    records the sha256 of both model files.

    Args:
        result_or_algo: a :class:`TrainResult` (config and seed are recorded) or a
            trained d3rlpy learnable.
        path_dir: folder to write (created if missing; files are overwritten).
        layout: the observation layout the policy was trained with (an
            ``ObservationLayout``, or a ``SchedulerLayout`` for a scheduler).
        layout_version: observation layout version of the training logs (default:
            this routeplay's version for the layout's kind).

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
    kind, n_actions = _kind(layout)
    if layout_version is None:
        layout_version = (
            SCHEDULER_LAYOUT_VERSION if kind == "scheduler" else OBSERVATION_LAYOUT_VERSION
        )
    shape = learnable_shape(algo)
    expected = (layout.size, n_actions)
    if shape != expected:
        raise ValueError(
            f"policy has (observation size, actions) = {shape} but the layout gives "
            f"{expected}; expected them equal. Fix: pass the layout of the training logs."
        )
    out = Path(path_dir)
    out.mkdir(parents=True, exist_ok=True)
    # router.json marks a complete folder: gone first, written last
    (out / ROUTER_FILES["meta"]).unlink(missing_ok=True)
    hashes: dict[str, str] = {}
    for key in ("d3", "torchscript"):
        final = out / ROUTER_FILES[key]
        tmp = final.with_name(".tmp-" + final.name)  # save_policy needs the .pt suffix
        with quiet_d3rlpy(), _quiet_torchscript():
            if key == "d3":
                algo.save(str(tmp))
            else:
                algo.save_policy(str(tmp))
        hashes[final.name] = sha256_file(tmp)
        os.replace(tmp, final)
    meta = {
        "format_version": _FORMAT_VERSION,
        "kind": kind,
        "layout_version": layout_version,
        "layout": dataclasses.asdict(layout),
        "obs_names": layout.names(),
        "obs_size": layout.size,
        "n_actions": n_actions,
        "algorithm": algorithm,
        "seed": seed,
        "config": config,
        "versions": {
            "routeplay": routeplay.__version__,
            "d3rlpy": d3rlpy.__version__,
            "torch": torch.__version__,
        },
        "sha256": hashes,
    }
    write_json_atomic(out / ROUTER_FILES["meta"], meta)
    return out


def _kind(layout: ObservationLayout | SchedulerLayout) -> tuple[str, int]:
    """``(kind, action count)`` of a layout: a router's (instances + WAIT) or a scheduler's."""
    if isinstance(layout, SchedulerLayout):
        return "scheduler", layout.n_actions
    return "router", layout.n_instances + 1


def _read_meta(folder: Path) -> dict[str, Any]:
    meta_path = folder / ROUTER_FILES["meta"]
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{str(meta_path)!r} does not exist; expected a folder written by save_router "
            "(a folder without router.json is not a router, e.g. an interrupted save)."
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(
            f"{str(meta_path)!r} is unreadable ({one_line(exc, 120)}); expected the JSON "
            "written by save_router. Fix: save the router again."
        ) from None
    missing = [k for k in ("layout_version", "layout", "obs_size", "n_actions") if k not in meta]
    if not isinstance(meta, dict) or missing or not isinstance(meta["layout"], dict):
        raise ValueError(
            f"{str(meta_path)!r} lacks {missing or ['a layout object']}; expected the JSON "
            "written by save_router. Fix: save the router again."
        )
    return meta


def _check_sha256(file: Path, meta: dict[str, Any]) -> None:
    """Refuse a model file whose sha256 differs from the one router.json records."""
    recorded = (meta.get("sha256") or {}).get(file.name)
    if recorded is None:  # folders saved before hashes were recorded
        return
    actual = sha256_file(file)
    if actual != recorded:
        raise ValueError(
            f"{str(file)!r} has sha256 {actual[:16]}... but router.json records "
            f"{str(recorded)[:16]}...; the file was replaced after save_router wrote the "
            "folder, so it was not loaded. Fix: save the router again from its training run."
        )


def _check_torchscript(policy: Any, file: Path, obs_size: int, n_actions: int) -> None:
    """One call on a zero observation: a policy.pt that is not a routing policy fails here."""
    import torch

    try:
        with torch.inference_mode():
            out = policy(torch.zeros((1, obs_size), dtype=torch.float32))
        ok = isinstance(out, torch.Tensor) and out.numel() == 1
        action = int(out.reshape(-1)[0]) if ok else -1
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(
            f"{str(file)!r} fails on a (1, {obs_size}) float32 observation "
            f"({one_line(exc, 120)}); expected a TorchScript policy written by save_router. "
            "Fix: save the router again."
        ) from None
    if not 0 <= action < n_actions:
        raise ValueError(
            f"{str(file)!r} maps a (1, {obs_size}) observation to {one_line(out, 60)}; "
            f"expected one action index in 0..{n_actions - 1}. Fix: save the router again."
        )


def load_router(
    path_dir: str | Path,
    *,
    prefer: Literal["torchscript", "d3"] = "torchscript",
    trust: bool = False,
    name: str | None = None,
    wait_limit: int | None = None,
    fallback: Router | None = None,
) -> PolicyRouter | PolicyScheduler:
    """Load a router folder written by :func:`save_router`, without unpickling by default.

    The default reads ``policy.pt`` (TorchScript: ``torch.jit.load`` creates no Python
    objects of arbitrary classes) and ``router.json`` (JSON). ``model.d3`` is d3rlpy's
    format, a Python **pickle**: unpickling a file runs whatever code its author put in
    it, so ``prefer="d3"`` needs ``trust=True``, which you should pass only for a folder
    you wrote yourself or got from someone you trust. Either model file is refused if
    its sha256 differs from the one ``router.json`` records (checked before loading).

    Args:
        path_dir: the folder.
        prefer: "torchscript" (``policy.pt``; no pickle) or "d3" (``model.d3``: a
            pickle; needs ``trust=True``; gives the full d3rlpy learnable).
        trust: allow unpickling ``model.d3`` (only with ``prefer="d3"``).
        name: router name (default ``"policy-<algorithm>"``).
        wait_limit: see :class:`PolicyRouter`.
        fallback: see :class:`PolicyRouter`.

    Returns:
        A :class:`PolicyRouter` with the stored layout, or a
        :class:`~routeplay.offline_rl.PolicyScheduler` for a folder whose
        ``router.json`` says ``"kind": "scheduler"`` (``wait_limit`` and ``fallback``
        do not apply to it: a scheduler holds only while no instance is free).

    Raises:
        ValueError: (one line) ``prefer="d3"`` without ``trust=True``; the folder's
            observation layout version differs from this routeplay's; its layout does
            not match its stored observation size or action count; a model file is
            not what ``router.json`` records or not a routing policy; ``prefer`` is
            unknown.
        FileNotFoundError: a needed file is missing.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     load_router(d, prefer="d3")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: load_router(prefer='d3') would unpickle '.../model.d3': ... trust=True ...
    """
    if prefer not in ("torchscript", "d3"):
        raise ValueError(f"prefer = {prefer!r}; expected one of ['torchscript', 'd3'].")
    folder = Path(path_dir)
    file = folder / ROUTER_FILES[prefer]
    if prefer == "d3" and trust is not True:
        raise ValueError(
            f"load_router(prefer='d3') would unpickle {str(file)!r}: d3rlpy's .d3 format is "
            "a Python pickle, and unpickling runs any code the file's author put in it. "
            "Fix: pass trust=True only for a folder you wrote or trust, or load policy.pt "
            "with the default prefer='torchscript' (TorchScript, not a pickle)."
        )
    meta = _read_meta(folder)
    kind = meta.get("kind", "router")
    if kind not in ("router", "scheduler"):
        raise ValueError(
            f"router {str(folder)!r} has kind {kind!r}; expected 'router' or 'scheduler'. "
            "Fix: save it again with save_router."
        )
    version = SCHEDULER_LAYOUT_VERSION if kind == "scheduler" else OBSERVATION_LAYOUT_VERSION
    stored = str(meta.get("layout_version"))
    if stored != version:
        raise ValueError(
            f"router {str(folder)!r} was trained with observation layout version {stored!r}, "
            f"but this routeplay encodes observations with layout version "
            f"{version!r}; its inputs would be misread. Fix: retrain it "
            "on transitions logged with this routeplay, or load it with the routeplay "
            f"version that wrote it ({(meta.get('versions') or {}).get('routeplay')})."
        )
    layout_type = SchedulerLayout if kind == "scheduler" else ObservationLayout
    layout: ObservationLayout | SchedulerLayout
    try:
        layout = layout_type(**meta["layout"])
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"router {str(folder)!r} has layout fields {sorted(meta['layout'])} that this "
            f"routeplay's {layout_type.__name__} does not accept ({one_line(exc, 160)}). "
            "Fix: retrain, or use the routeplay version that wrote it."
        ) from None
    n_actions = _kind(layout)[1]
    got = (layout.size, n_actions)
    try:
        want = (int(meta["obs_size"]), int(meta["n_actions"]))
    except (TypeError, ValueError):
        want = (-1, -1)
    if got != want:
        raise ValueError(
            f"router {str(folder)!r}: its layout gives (observation size, actions) = {got} "
            f"but the stored policy expects {want}; the folder is inconsistent. Fix: save it "
            "again with save_router(..., layout=<the training layout>)."
        )
    if not file.is_file():
        raise FileNotFoundError(f"{str(file)!r} does not exist; expected it beside router.json.")
    _check_sha256(file, meta)
    policy: Any
    if prefer == "d3":
        import d3rlpy

        try:
            with quiet_d3rlpy():
                policy = d3rlpy.load_learnable(str(file), device="cpu:0")
        except LOAD_ERRORS as exc:
            raise ValueError(
                f"{str(file)!r} is not a d3rlpy learnable ({one_line(exc, 160)}). Fix: save "
                "the router again."
            ) from None
        if not is_learnable(policy):
            raise ValueError(
                f"{str(file)!r} unpickled to a {type(policy).__name__}, not a d3rlpy "
                "learnable. Fix: save the router again."
            )
    else:
        import torch

        try:
            with _quiet_torchscript():
                policy = torch.jit.load(str(file), map_location="cpu")  # type: ignore[no-untyped-call]
        except LOAD_ERRORS as exc:
            raise ValueError(
                f"{str(file)!r} is not a TorchScript archive ({one_line(exc, 160)}); nothing "
                "in it was run. Fix: save the router again with save_router."
            ) from None
        policy.eval()
        _check_torchscript(policy, file, layout.size, n_actions)
    label = name or f"policy-{meta.get('algorithm', 'unknown')}"
    if isinstance(layout, SchedulerLayout):
        return PolicyScheduler(policy, layout=layout, name=label)
    return PolicyRouter(
        policy,
        layout=layout,
        name=label,
        wait_limit=wait_limit,
        fallback=fallback,
    )
