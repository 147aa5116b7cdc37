"""Traces: the canonical schema, loaders for public formats, registry, workload builders."""

from __future__ import annotations

from ._schema import OPTIONAL_SCHEMA, TRACE_SCHEMA, TraceSchemaError, canonical_columns, validate_trace

__all__ = [
    "OPTIONAL_SCHEMA",
    "TRACE_SCHEMA",
    "TraceSchemaError",
    "canonical_columns",
    "validate_trace",
]
