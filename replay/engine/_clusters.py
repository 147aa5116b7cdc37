"""Clusters from TOML files or by name.

A cluster file lists instance groups; each group names a latency model (a preset,
explicit coefficients, or a tokens-per-second rate shared by the batch) and its limits:

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
    scheduler = "vllm-v1"         # or "vllm-v0" (prefill-first, padded budget), "sarathi"
    # clock = "vidur-forest/llama2-7b-a100"   # price iterations from a profile (optional)

KV capacities of the built-in clusters are derived from memory sizes: Llama-2-7B in
fp16 keeps ``2 (K,V) x 32 layers x 4096 x 2 bytes = 0.5 MiB`` of KV per token; after
13.5 GB of weights and a 0.9 memory-utilisation cap that leaves ~117k tokens on an
A100-80GB or H100-80GB and ~30k tokens on a V100-32GB.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from routeplay.estimator._latency import LinearLatencyModel

from routeplay._checks import check_int, check_number

from .._types import ClusterConfig, InstanceConfig

__all__ = [
    "canonical_cluster_name",
    "cluster_from_dict",
    "list_clusters",
    "load_cluster",
    "make_cluster",
    "pooled_cluster",
    "with_instance_settings",
]

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
        rate = check_number(
            where, "tokens_per_s", spec["tokens_per_s"], minimum=0.0, strict=True, unit="tokens/s"
        )
        return LinearLatencyModel.from_throughput(rate)
    table = dict(spec["latency"])
    extra = set(table) - _LATENCY_FIELDS
    if extra:
        raise _unknown(f"{where} latency", extra, _LATENCY_FIELDS)
    required = {
        f.name
        for f in dataclasses.fields(LinearLatencyModel)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    missing = sorted(required - set(table))
    if missing:
        raise ValueError(
            f"{where}.latency lacks {missing}; expected every coefficient of "
            f"LinearLatencyModel: {sorted(required)} (seconds; prefill_batch_s and name are "
            "optional)."
        )
    try:
        return LinearLatencyModel(**table)
    except ValueError as exc:
        raise ValueError(f"{where}.latency: {exc}") from exc


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

    ``"pooled:<name or file>"`` gives :func:`pooled_cluster` of that cluster.

    Raises:
        FileNotFoundError: when ``path`` is neither a file nor a built-in cluster name.
    """
    if str(path).startswith(_POOLED):
        return pooled_cluster(load_cluster(str(path)[len(_POOLED) :]))
    if str(path) in _BUILTIN or str(path) in _DEPRECATED_CLUSTER_NAMES:
        return make_cluster(canonical_cluster_name(str(path), stacklevel=2))
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
    try:
        return cluster_from_dict(spec)
    except ValueError as exc:
        raise ValueError(f"cluster file {str(p)!r}: {exc}") from exc


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


#: Vidur's defaults for Llama-2-7B on one A100-80GB (``vidur_reference/conv-x4/config.json``):
#: 7,424 KV blocks of 16 tokens, batch cap 128, 4,096 tokens per batch, vLLM scheduler
_VIDUR_KV_BLOCKS = 7424
_VIDUR_BLOCK_TOKENS = 16


def _vidur_a100(n: int, **clock: str) -> ClusterConfig:
    return cluster_from_dict(
        {
            "instances": [
                {
                    "name": "a100",
                    "count": n,
                    "preset": "llama2-7b/a100-vidur",
                    "kv_capacity_tokens": _VIDUR_KV_BLOCKS * _VIDUR_BLOCK_TOKENS,
                    "kv_block_tokens": _VIDUR_BLOCK_TOKENS,
                    "max_running_seqs": 128,
                    "max_batched_tokens": 4096,
                    "scheduler": "vllm-v0",
                    "kv_watermark_fraction": 0.01,
                    **clock,
                }
            ]
        }
    )


def _hetero_a100_v100(n_each: int) -> ClusterConfig:
    """``n_each`` A100-80GB + ``n_each`` V100-32GB (A100 fit scaled to V100 ratios)."""
    return cluster_from_dict(
        {
            "instances": [
                {
                    "name": "a100",
                    "count": n_each,
                    "preset": "llama2-7b/a100",
                    "kv_capacity_tokens": _KV_TOKENS_80GB,
                    "max_batched_tokens": _A100_BATCHED_TOKENS,
                },
                {
                    "name": "v100",
                    "count": n_each,
                    "preset": "llama2-7b/v100-scaled",
                    "kv_capacity_tokens": _KV_TOKENS_V100_32GB,
                    "max_batched_tokens": _A100_BATCHED_TOKENS,
                },
            ]
        }
    )


def _hetero_3k5k7k() -> ClusterConfig:
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
    "vidur-a100x4": lambda: _vidur_a100(4),
    "vidur-a100x4-forest": lambda: _vidur_a100(4, clock="vidur-forest/llama2-7b-a100"),
    "hetero-a100x2-v100x2": lambda: _hetero_a100_v100(2),
    "hetero-3k5k7k": _hetero_3k5k7k,
}

#: Former built-in cluster names still accepted (with a ``DeprecationWarning``).
_DEPRECATED_CLUSTER_NAMES: dict[str, str] = {"seed000-hetero": "hetero-3k5k7k"}


def canonical_cluster_name(name: str, *, stacklevel: int = 1) -> str:
    """``name``, or the current name of a deprecated built-in cluster name (with a warning).

    Job and sweep files written for earlier versions may name a built-in cluster by its
    former name; this maps it to its name in :func:`list_clusters` and emits a
    ``DeprecationWarning``. Any other string is returned unchanged. ``stacklevel`` 1
    attributes the warning to the caller, 2 to the caller's caller, and so on.

    Example:
        >>> canonical_cluster_name("a100x4")
        'a100x4'
    """
    new = _DEPRECATED_CLUSTER_NAMES.get(name)
    if new is None:
        return name
    warnings.warn(
        f"cluster name {name!r} is deprecated; use {new!r} (the same cluster).",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )
    return new


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
    (``a100x4-chunked`` with chunked prefill, 2,048-token budget); ``vidur-a100x4``: the
    ``llama2-7b/a100-vidur`` preset (composed as Vidur composes Llama-2-7B: no decode
    batching overhead) with Vidur's defaults (7,424 KV blocks of 16 tokens, batch cap 128,
    4,096 tokens per batch, ``scheduler="vllm-v0"``, 1 % watermark; prompts must then
    be cut to prompt + output <= 4,096, e.g. ``load_trace(..., max_tokens=4096)``);
    ``vidur-a100x4-forest``: the same with the iteration clock
    ``vidur-forest/llama2-7b-a100`` (every iteration priced as Vidur prices it, random
    forests included; routers still estimate with the linear preset);
    ``hetero-3k5k7k``: three servers of 3,000/5,000/7,000 tokens/s with concurrency
    3/5/7 (System B's heterogeneous cluster, docs/design.md).

    Example:
        >>> inst = make_cluster("vidur-a100x4").instances[0]
        >>> inst.scheduler, inst.kv_capacity_tokens, inst.max_running_seqs, inst.max_batched_tokens
        ('vllm-v0', 118784, 128, 4096)
    """
    name = canonical_cluster_name(name, stacklevel=2)
    try:
        return _BUILTIN[name]()
    except KeyError:
        close = difflib.get_close_matches(name, list(_BUILTIN), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown cluster {name!r}; expected one of {list_clusters()}.{hint}"
        ) from None


def with_instance_settings(cluster: ClusterConfig, **settings: Any) -> ClusterConfig:
    """``cluster`` with the same instance settings applied to every instance.

    Experiments vary one setting of a built-in cluster (the local batching policy, the
    scheduler rules, chunked prefill, ...) and keep the rest; the instances are
    rebuilt, so every value is validated as in a cluster file.

    Args:
        cluster: the cluster to copy.
        **settings: :class:`~routeplay.replay.InstanceConfig` fields and their values
            (``name`` excluded), e.g. ``batching="bin-packing"``.

    Returns:
        A new cluster; the router settings (tick, queue cap, state delay) are kept.

    Raises:
        ValueError: no setting, or a name that is not an instance setting.

    Example:
        >>> from routeplay.replay import make_cluster, with_instance_settings
        >>> c = with_instance_settings(make_cluster("paper-2xv100"), batching="bin-packing")
        >>> [i.batching for i in c.instances]
        ['bin-packing', 'bin-packing']
        >>> with_instance_settings(c, batch="fcfs")
        Traceback (most recent call last):
        ...
        ValueError: with_instance_settings: unknown instance setting(s) ['batch']; ...
    """
    valid = _INSTANCE_FIELDS | {"latency"}
    unknown = sorted(k for k in settings if k not in valid)
    if not settings or unknown:
        raise ValueError(
            f"with_instance_settings: unknown instance setting(s) {unknown}; expected at least "
            f"one of {sorted(valid)}."
        )
    instances = tuple(dataclasses.replace(i, **settings) for i in cluster.instances)
    return dataclasses.replace(cluster, instances=instances)


_POOLED = "pooled:"
#: latency coefficients that scale with the work (the pooled instance shares them out)
_SLOPES = (
    "prefill_s_per_token",
    "prefill_s_per_token2",
    "decode_s_per_seq",
    "decode_s_per_context_token",
)
#: settings every instance of a pooled cluster must share
_SAME = (
    "kv_block_tokens",
    "batching",
    "chunked_prefill",
    "prefix_cache",
    "prefix_block_tokens",
    "scheduler",
    "kv_watermark_fraction",
)


def pooled_cluster(cluster: ClusterConfig) -> ClusterConfig:
    """A reference cluster: one instance with the summed capacity of ``cluster``.

    With a single instance there is nothing to balance, so replaying a trace on the
    pooled cluster bounds what any router can gain by balancing (imbalance is
    impossible; every request can use every slot and all the KV). The instance is:

    * **limits**: the sums of ``max_running_seqs``, ``max_batched_tokens``,
      ``kv_capacity_tokens`` and ``prefix_cache_blocks``;
    * **speed**: per-work coefficients (``prefill_s_per_token``,
      ``prefill_s_per_token2``, ``decode_s_per_seq``, ``decode_s_per_context_token``)
      add as rates, ``1 / sum_k(1 / c_k)`` (``m`` identical instances: ``c / m``; a
      1,000 and a 3,000 tokens/s server pool to 4,000 tokens/s); if some instance has a
      coefficient <= 0 (a fitted correction term), ``mean_k(c_k) / m`` instead. Fixed
      per-iteration costs (``intercept_s``, ``prefill_batch_s``) take the smallest
      instance's value: the pooled instance runs one iteration on all GPUs at once,
      which is an optimistic (ideal data-parallel) model — it is a bound, not a
      deployable configuration;
    * the router settings (tick, queue cap, state delay) are kept.

    Args:
        cluster: the cluster to pool; its instances must share ``kv_block_tokens``,
            ``batching``, ``chunked_prefill``, ``prefix_cache`` and
            ``prefix_block_tokens``.

    Returns:
        A one-instance cluster named ``pooled``. Also reachable as
        ``load_cluster("pooled:<name or file>")`` (e.g. ``routeplay replay --cluster
        pooled:a100x4``).

    Raises:
        ValueError: the instances differ in one of the shared settings.

    Example:
        >>> c = cluster_from_dict({"instances": [
        ...     {"name": "a", "tokens_per_s": 1000.0, "max_running_seqs": 3},
        ...     {"name": "b", "tokens_per_s": 3000.0, "max_running_seqs": 5}]})
        >>> p = pooled_cluster(c)
        >>> inst = p.instances[0]
        >>> inst.name, inst.max_running_seqs, inst.kv_capacity_tokens
        ('pooled', 8, 400000)
        >>> round(1.0 / inst.latency.prefill_s_per_token, 6)   # tokens per second
        4000.0
    """
    instances = cluster.instances
    m = len(instances)
    first = instances[0]
    clocked = sorted({i.name for i in instances if i.clock is not None})
    if clocked:
        raise ValueError(
            f"pooled_cluster: instance(s) {clocked} have an iteration clock; expected none: a "
            "clock prices one GPU's iterations from its profile, and the pooled instance "
            "has no profile. Fix: pool the cluster without the clock (clock = None)."
        )
    for key in _SAME:
        values = [getattr(i, key) for i in instances]
        if len(set(values)) > 1:
            raise ValueError(
                f"pooled_cluster: the instances have different {key} values {values}; expected "
                f"one value shared by every instance. Fix: pool only instances configured "
                f"alike (e.g. set {key} = {values[0]!r} on every instance)."
            )
    lat = [i.latency for i in instances]
    coeffs: dict[str, float] = {}
    for key in _SLOPES:
        values = [float(getattr(x, key)) for x in lat]
        if all(v > 0 for v in values):
            coeffs[key] = 1.0 / sum(1.0 / v for v in values)
        else:
            coeffs[key] = sum(values) / len(values) / m
    latency = LinearLatencyModel(
        intercept_s=min(x.intercept_s for x in lat),
        prefill_batch_s=min(x.prefill_batch_s for x in lat),
        name="pooled(" + ", ".join(sorted({x.name for x in lat})) + ")",
        **coeffs,
    )
    pooled = dataclasses.replace(
        first,
        name="pooled",
        latency=latency,
        max_running_seqs=sum(i.max_running_seqs for i in instances),
        max_batched_tokens=sum(i.max_batched_tokens for i in instances),
        kv_capacity_tokens=sum(i.kv_capacity_tokens for i in instances),
        prefix_cache_blocks=sum(i.prefix_cache_blocks for i in instances),
    )
    return dataclasses.replace(cluster, instances=(pooled,))
