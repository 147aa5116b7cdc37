"""Latency model and calibration, workload-impact estimator, length predictor, statistics.

Light by design (numpy, scipy, statsmodels, polars): other schedulers import it alone.
"""

from __future__ import annotations

from ._latency import LinearLatencyModel

__all__ = ["LinearLatencyModel"]
