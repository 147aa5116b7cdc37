"""Clusters from TOML files or by name.

A cluster file lists instance groups; each group names a latency model (a preset,
explicit coefficients, or a seed-000 style tokens-per-second rate) and its limits:

.. code-block:: toml

    action_interval_s = 0.02      # router decision tick
    state_delay_s = 0.0           # routers see state this stale

    [[instances]]
    name = "a100"
    count = 4                     # four identical replicas a100-0 .. a100-3
    preset = "llama2-7b/a100"     # or: tokens_per_s = 3000.0, or: [instances.latency] table
    max_running_seqs = 256
    max_batched_tokens = 8192
    kv_capacity_tokens = 117_000
    batching = "fcfs"
    chunked_prefill = false

KV capacities of the built-in clusters are derived from memory sizes: Llama-2-7B in
fp16 keeps ``2 (K,V) x 32 layers x 4096 x 2 bytes = 0.5 MiB`` of KV per token; after
13.5 GB of weights and a 0.9 memory-utilisation cap that leaves ~117k tokens on an
A100-80GB or H100-80GB and ~30k tokens on a V100-32GB.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from routeplay.estimator._latency import LinearLatencyModel

from routeplay._checks import check_int, check_number

from ._types import ClusterConfig, InstanceConfig

__all__ = ["cluster_from_dict", "list_clusters", "load_cluster", "make_cluster"]

_KV_TOKENS_80GB = 117_000
_KV_TOKENS_V100_32GB = 30_000
# The public traces hold prompts up to 14,050 tokens (Azure 2023 conv); without chunked
# prefill a prompt must fit one iteration, so the A100 clusters allow 16,384 batched
# tokens (the latency fit covers batches up to 4,096 tokens: longer prompts extrapolate).
_A100_BATCHED_TOKENS = 16_384

_CLUSTER_KEYS = {"action_interval_s", "router_queue_cap", "state_delay_s", "instances"}
_INSTANCE_FIELDS = {f.name for f in dataclasses.fields(InstanceConfig)} - {"name", "latency"}
_LATENCY_FIELDS = {f.name for f in dataclasses.fields(LinearLatencyModel)}


def _preset(name: str) -> LinearLatencyModel:
    from routeplay.estimator._presets import get_preset

    return get_preset(name)


def _unknown(kind: str, keys: set[str], valid: set[str]) -> ValueError:
    key = sorted(keys)[0]
    close = difflib.get_close_matches(key, sorted(valid), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ValueError(
        f"unknown {kind} key(s) {sorted(keys)}; expected some of {sorted(valid)}.{hint}"
    )


def _latency_from(spec: Mapping[str, Any], where: str) -> LinearLatencyModel:
    given = [k for k in ("preset", "tokens_per_s", "latency") if k in spec]
    if len(given) != 1:
        raise ValueError(
            f"{where}: found latency keys {given}; expected exactly one of 'preset' "
            "(e.g. \"llama2-7b/a100\"), 'tokens_per_s' (e.g. 3000.0) or a [latency] table of "
            "LinearLatencyModel coefficients."
        )
    if "preset" in spec:
        return _preset(str(spec["preset"]))
    if "tokens_per_s" in spec:
        rate = check_number(where, "tokens_per_s", spec["tokens_per_s"], minimum=0.0, strict=True)
        return LinearLatencyModel.from_throughput(rate)
    table = dict(spec["latency"])
    extra = set(table) - _LATENCY_FIELDS
    if extra:
        raise _unknown(f"{where} latency", extra, _LATENCY_FIELDS)
    return LinearLatencyModel(**table)


def cluster_from_dict(spec: Mapping[str, Any]) -> ClusterConfig:
    """Build a :class:`ClusterConfig` from a parsed cluster file (see the module docstring).

    Example:
        >>> c = cluster_from_dict({"instances": [
        ...     {"name": "s", "tokens_per_s": 3000.0, "max_running_seqs": 3},
        ...     {"name": "l", "count": 2, "tokens_per_s": 7000.0, "max_running_seqs": 7}]})
        >>> [i.name for i in c.instances]
        ['s', 'l-0', 'l-1']
    """
    extra = set(spec) - _CLUSTER_KEYS
    if extra:
        raise _unknown("cluster", extra, _CLUSTER_KEYS)
    groups = spec.get("instances")
    if not groups:
        raise ValueError("cluster spec has no [[instances]]; expected at least one instance group.")
    instances: list[InstanceConfig] = []
    for k, group in enumerate(groups):
        where = f"instances[{k}]"
        group = dict(group)
        name = str(group.pop("name", f"instance{k}"))
        count = check_int(where, "count", group.pop("count", 1), minimum=1)
        latency = _latency_from(group, where)
        for key in ("preset", "tokens_per_s", "latency"):
            group.pop(key, None)
        extra = set(group) - _INSTANCE_FIELDS
        if extra:
            raise _unknown(where, extra, _INSTANCE_FIELDS)
        for j in range(count):
            label = name if count == 1 else f"{name}-{j}"
            instances.append(InstanceConfig(name=label, latency=latency, **group))
    options = {
        k: spec[k] for k in ("action_interval_s", "router_queue_cap", "state_delay_s") if k in spec
    }
    return ClusterConfig(instances=tuple(instances), **options)


def load_cluster(path: str | Path) -> ClusterConfig:
    """Read a cluster TOML file, or build a named cluster (see :func:`list_clusters`).

    Raises:
        FileNotFoundError: when ``path`` is neither a file nor a built-in cluster name.
    """
    if str(path) in _BUILTIN:
        return make_cluster(str(path))
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"cluster file {str(path)!r} not found; expected a TOML file or one of the "
            f"built-in clusters {list_clusters()}."
        )
    with p.open("rb") as fh:
        try:
            spec = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"cluster file {str(p)!r} is not valid TOML: {exc}") from exc
    return cluster_from_dict(spec)


def _paper_v100(n: int) -> ClusterConfig:
    return cluster_from_dict(
        {
            "instances": [
                {
                    "name": "v100",
                    "count": n,
                    "preset": "llama2-7b/v100-paper",
                    "kv_capacity_tokens": _KV_TOKENS_V100_32GB,
                }
            ]
        }
    )


def _v100_scaled(n: int) -> ClusterConfig:
    return cluster_from_dict(
        {
            "instances": [
                {
                    "name": "v100",
                    "count": n,
                    "preset": "llama2-7b/v100-scaled",
                    "kv_capacity_tokens": _KV_TOKENS_V100_32GB,
                    "max_batched_tokens": _A100_BATCHED_TOKENS,
                }
            ]
        }
    )


def _a100(n: int, **options: Any) -> ClusterConfig:
    return cluster_from_dict(
        {
            "instances": [
                {
                    "name": "a100",
                    "count": n,
                    "preset": "llama2-7b/a100",
                    "kv_capacity_tokens": _KV_TOKENS_80GB,
                    "max_batched_tokens": _A100_BATCHED_TOKENS,
                    **options,
                }
            ]
        }
    )


def _seed000() -> ClusterConfig:
    return cluster_from_dict(
        {
            "instances": [
                {"name": f"server-{rate}", "tokens_per_s": float(rate), "max_running_seqs": conc}
                for rate, conc in ((3000, 3), (5000, 5), (7000, 7))
            ]
        }
    )


_BUILTIN: dict[str, Callable[[], ClusterConfig]] = {
    "paper-2xv100": lambda: _paper_v100(2),
    "paper-4xv100": lambda: _paper_v100(4),
    "v100x2": lambda: _v100_scaled(2),
    "v100x4": lambda: _v100_scaled(4),
    "a100x4": lambda: _a100(4),
    "a100x4-chunked": lambda: _a100(4, chunked_prefill=True, max_batched_tokens=2048),
    "seed000-hetero": _seed000,
}


def list_clusters() -> list[str]:
    """Names of the built-in clusters.

    Example:
        >>> "a100x4" in list_clusters()
        True
    """
    return sorted(_BUILTIN)


def make_cluster(name: str) -> ClusterConfig:
    """A built-in cluster by name.

    ``paper-2xv100``/``paper-4xv100``: the Intelligent Router testbed (Llama-2-7B on V100,
    the paper's gradients as the latency model); ``v100x2``/``v100x4``: the same testbed with
    the ``llama2-7b/v100-scaled`` preset (the A100 fit scaled to V100 datasheet speeds:
    realistic iteration times); ``a100x4``: four A100 replicas of the Vidur-fitted preset
    (``a100x4-chunked`` with chunked prefill, 2,048-token budget); ``seed000-hetero``: seed
    000's servers of 3000/5000/7000 tokens/s with concurrency 3/5/7.
    """
    try:
        return _BUILTIN[name]()
    except KeyError:
        close = difflib.get_close_matches(name, list(_BUILTIN), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown cluster {name!r}; expected one of {list_clusters()}.{hint}"
        ) from None
