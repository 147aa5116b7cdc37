"""Small protocols shared by the estimator and its users (the replay engine, routers).

They live here, not beside an implementation, so that a scheduler can depend on the
shape without importing a particular predictor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import polars as pl

__all__ = ["LengthPrediction", "OutputLengthPredictor"]


@dataclass(frozen=True, slots=True)
class LengthPrediction:
    """Predicted output lengths of a batch of requests (one entry per trace row).

    Attributes:
        bucket: predicted output-length bucket index, in ``range(n_buckets)``.
        expected_output_tokens: a point estimate of the output length (tokens), used
            by routers and local policies that need a number rather than a class.

    Example:
        >>> p = LengthPrediction(bucket=np.array([0, 2]),
        ...                      expected_output_tokens=np.array([12.0, 300.0]))
        >>> int(p.bucket[1])
        2
    """

    bucket: npt.NDArray[np.int64]
    expected_output_tokens: npt.NDArray[np.float64]


@runtime_checkable
class OutputLengthPredictor(Protocol):
    """Predicts a request's output-length bucket from features known at routing time.

    Implementations never read ``output_tokens`` in :meth:`predict` (it may be absent);
    only fitting looks at it.
    """

    @property
    def n_buckets(self) -> int:
        """Number of output-length buckets."""
        ...

    @property
    def bucket_edges_tokens(self) -> tuple[float, ...]:
        """Bucket boundaries in tokens: ``n_buckets + 1`` ascending edges (last may be inf)."""
        ...

    def predict(self, trace: pl.DataFrame) -> LengthPrediction:
        """Predict every row of ``trace`` (canonical schema, output column not used)."""
        ...
