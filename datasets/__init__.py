"""Traces: the canonical schema, loaders for public formats, registry, workload builders."""

from __future__ import annotations

from ._azure import scan_azure
from ._burstgpt import scan_burstgpt
from ._describe import TokenStats, TraceDescription, describe_trace
from ._loaders import FORMATS, detect_format, load_trace, scan_trace
from ._mooncake import scan_mooncake
from ._registry import TraceInfo, fetch, get_trace_info, list_traces
from ._schema import (
    OPTIONAL_SCHEMA,
    TRACE_SCHEMA,
    TraceSchemaError,
    canonical_columns,
    validate_trace,
)
from ._table import scan_table
from ._taskmix import (
    PAPER_TASKS,
    REQUEST_CLASSES,
    TASK_ORDERINGS,
    TaskMixConfig,
    TaskSpec,
    fit_task_lengths,
    generate_task_mix,
    generate_task_mix_episodes,
    request_class,
)
from ._vidur import load_lengths, scan_lengths, scan_vidur
from ._workloads import (
    Episode,
    attach_arrivals,
    resample_arrivals,
    scale_arrival_rate,
    split_episodes,
    split_train_test,
)

__all__ = [
    "FORMATS",
    "TokenStats",
    "TraceDescription",
    "TraceInfo",
    "describe_trace",
    "detect_format",
    "fetch",
    "get_trace_info",
    "list_traces",
    "load_lengths",
    "load_trace",
    "scan_azure",
    "scan_burstgpt",
    "scan_lengths",
    "scan_mooncake",
    "scan_table",
    "scan_trace",
    "scan_vidur",
    "OPTIONAL_SCHEMA",
    "TRACE_SCHEMA",
    "TraceSchemaError",
    "canonical_columns",
    "validate_trace",
    "PAPER_TASKS",
    "REQUEST_CLASSES",
    "TASK_ORDERINGS",
    "TaskMixConfig",
    "TaskSpec",
    "fit_task_lengths",
    "generate_task_mix",
    "generate_task_mix_episodes",
    "request_class",
    "Episode",
    "attach_arrivals",
    "resample_arrivals",
    "scale_arrival_rate",
    "split_episodes",
    "split_train_test",
]
