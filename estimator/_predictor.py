"""Output-length predictors from features known at routing time, and their evaluation.

:class:`HistogramLengthPredictor` (built by :func:`fit_length_predictor`) is a smoothed
histogram classifier. Every feature is turned into a discrete code: a categorical
column (``task``, ``source``, ...) by its value, a numeric one (``prompt_tokens``,
``num_images``, ...) by a log2 bin, ``floor(log2(1 + x) * bins_per_octave)``. For each
prefix of the feature tuple it counts training requests per (cell, bucket): for the
default ``("task", "prompt_tokens")`` the levels are global, per task, and per
(task, prompt bin). Bucket probabilities are smoothed top-down:

    global:  p0(b)        = (n(b) + laplace) / (n + n_buckets * laplace)
    level k: p_k(b | cell) = (n_cell(b) + prior_strength * p_{k-1}(b | parent))
                             / (n_cell + prior_strength)

so a sparse cell backs off smoothly to its task and then to the global histogram, and
a cell never seen in training (an unseen task, a prompt longer than any seen) uses the
deepest level that knows it. The prediction is the most probable bucket (ties -> the
lowest index). ``expected_output_tokens`` is the conditional mean of the training
lengths in the row's cell *and* predicted bucket (so it lies inside that bucket); when
the cell has no training row in that bucket, the parent cell's mean, and at the top the
bucket's midpoint (lower edge for an open top bucket).

:class:`ConstantLengthPredictor` is the majority-class baseline. Neither ever reads
``output_tokens`` when predicting.
"""

# Why this module is long: the predictor's fitting, bucketing, prediction and held-out
# evaluation are one model.

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import polars as pl
from routeplay.datasets._schema import validate_trace

from ._buckets import BucketScheme
from ._protocols import LengthPrediction, OutputLengthPredictor

if TYPE_CHECKING:
    from routeplay.datasets import TaskMixConfig

    from ._latency import LinearLatencyModel

__all__ = [
    "ConstantLengthPredictor",
    "HistogramLengthPredictor",
    "PredictorEvaluation",
    "evaluate_predictor",
    "fit_length_predictor",
    "fit_task_mix_predictor",
]

_FORBIDDEN_FEATURES = ("output_tokens", "request_id")


def _training_frame(trace: pl.DataFrame, scheme: BucketScheme) -> tuple[pl.DataFrame, np.ndarray]:
    if not isinstance(trace, pl.DataFrame):
        raise TypeError(f"trace must be a polars DataFrame, got {type(trace).__name__}")
    trace = validate_trace(trace, allow_extra_columns=True)
    buckets = scheme.assign(trace.get_column("output_tokens"))
    return trace, buckets


def _check_scheme(scheme: object) -> BucketScheme:
    if not isinstance(scheme, BucketScheme):
        raise TypeError(
            f"scheme must be a BucketScheme, got {type(scheme).__name__}. Fix: build one with "
            "time_buckets, quantile_buckets or equal_width_buckets."
        )
    return scheme


@dataclass(frozen=True, slots=True, eq=False)
class ConstantLengthPredictor:
    """The majority-class baseline: always the training split's most frequent bucket.

    Attributes:
        scheme: the bucket scheme.
        bucket: the predicted bucket (the most frequent in training; ties -> lowest).
        expected_output_tokens: the mean training length within that bucket.

    Example:
        >>> from routeplay.estimator import equal_width_buckets
        >>> t = pl.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 1.0, 2.0],
        ...                   "prompt_tokens": [5, 6, 7], "output_tokens": [10, 20, 900]})
        >>> c = ConstantLengthPredictor.fit(t, equal_width_buckets(1000, 4))
        >>> c.bucket, c.expected_output_tokens
        (0, 15.0)
        >>> c.predict(t.drop("output_tokens")).bucket.tolist()
        [0, 0, 0]
    """

    scheme: BucketScheme
    bucket: int
    expected_output_tokens: float

    def __post_init__(self) -> None:
        _check_scheme(self.scheme)
        if not 0 <= self.bucket < self.scheme.n_buckets:
            raise ValueError(
                f"ConstantLengthPredictor.bucket = {self.bucket!r}; expected an index in "
                f"range({self.scheme.n_buckets}). Fix: use ConstantLengthPredictor.fit."
            )

    @classmethod
    def fit(cls, trace: pl.DataFrame, scheme: BucketScheme) -> ConstantLengthPredictor:
        """Fit the majority class of ``trace`` (canonical schema) under ``scheme``."""
        scheme = _check_scheme(scheme)
        trace, buckets = _training_frame(trace, scheme)
        counts = np.bincount(buckets, minlength=scheme.n_buckets)
        bucket = int(np.argmax(counts))
        outputs = trace.get_column("output_tokens").to_numpy().astype(np.float64)
        return cls(
            scheme=scheme,
            bucket=bucket,
            expected_output_tokens=float(outputs[buckets == bucket].mean()),
        )

    @property
    def n_buckets(self) -> int:
        """Number of buckets of the scheme."""
        return self.scheme.n_buckets

    @property
    def bucket_edges_tokens(self) -> tuple[float, ...]:
        """The scheme's edges (tokens)."""
        return self.scheme.edges_tokens

    def predict(self, trace: pl.DataFrame) -> LengthPrediction:
        """The same bucket for every row (only the row count of ``trace`` is used)."""
        n = trace.height
        return LengthPrediction(
            bucket=np.full(n, self.bucket, dtype=np.int64),
            expected_output_tokens=np.full(n, self.expected_output_tokens, dtype=np.float64),
        )


@dataclass(frozen=True, slots=True, eq=False)
class _Level:
    """The fitted table of one back-off level (cells keyed by a tuple of feature codes)."""

    cells: dict[tuple[int, ...], int]
    counts: npt.NDArray[np.int64]  # (n_cells, n_buckets)
    proba: npt.NDArray[np.float64]  # (n_cells, n_buckets), smoothed
    expected_tokens: npt.NDArray[np.float64]  # (n_cells, n_buckets)


def _cell_ids(codes: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.intp]]:
    """Unique rows of ``codes`` (n, k) and the inverse index; works for k = 0."""
    if codes.shape[1] == 0:
        return np.zeros((1, 0), dtype=np.int64), np.zeros(codes.shape[0], dtype=np.intp)
    unique, inverse = np.unique(codes, axis=0, return_inverse=True)
    return unique, inverse.reshape(-1)


@dataclass(frozen=True, slots=True, eq=False)
class HistogramLengthPredictor:
    """A smoothed per-cell histogram classifier of output-length buckets (module docstring).

    Build it with :func:`fit_length_predictor`. It satisfies
    :class:`~routeplay.estimator.OutputLengthPredictor`.

    Attributes:
        scheme: the bucket scheme.
        features: feature columns, coarsest first (back-off drops them from the end).
        numeric_features: which of ``features`` are log2-binned numbers.
        categories: per categorical feature, the training values (sorted).
        bins_per_octave: resolution of the log2 bins of numeric features.
        laplace: pseudo-count per bucket of the global histogram.
        prior_strength: pseudo-count weight of the parent level in every cell.
        n_train: training rows.
    """

    scheme: BucketScheme
    features: tuple[str, ...]
    numeric_features: frozenset[str]
    categories: dict[str, tuple[str, ...]]
    bins_per_octave: float
    laplace: float
    prior_strength: float
    n_train: int
    levels: tuple[_Level, ...] = field(repr=False)

    @property
    def n_buckets(self) -> int:
        """Number of buckets of the scheme."""
        return self.scheme.n_buckets

    @property
    def bucket_edges_tokens(self) -> tuple[float, ...]:
        """The scheme's edges (tokens)."""
        return self.scheme.edges_tokens

    def _encode(self, trace: pl.DataFrame, *, warn_unseen: bool) -> npt.NDArray[np.int64]:
        return _encode_features(
            trace,
            self.features,
            self.numeric_features,
            self.categories,
            self.bins_per_octave,
            warn_unseen=warn_unseen,
        )

    def _lookup(self, codes: npt.NDArray[np.int64]) -> tuple[npt.NDArray[np.intp], ...]:
        """Per level, the cell index of every row (-1 where the level lacks the cell)."""
        out = []
        for k, level in enumerate(self.levels):
            unique, inverse = _cell_ids(codes[:, :k])
            ids = np.array(
                [level.cells.get(tuple(row.tolist()), -1) for row in unique], dtype=np.intp
            )
            out.append(ids[inverse])
        return tuple(out)

    def predict_proba(self, trace: pl.DataFrame) -> npt.NDArray[np.float64]:
        """(n, n_buckets) smoothed bucket probabilities of the deepest known cell of each row."""
        proba, _, _ = self._predict_arrays(trace)
        return proba

    def _predict_arrays(
        self, trace: pl.DataFrame
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        codes = self._encode(trace, warn_unseen=True)
        ids = self._lookup(codes)
        n = trace.height
        depth = np.zeros(n, dtype=np.intp)
        cell = np.zeros(n, dtype=np.intp)
        for k in range(1, len(self.levels)):
            known = (ids[k] >= 0) & (depth == k - 1)
            depth[known] = k
            cell[known] = ids[k][known]
        proba = np.empty((n, self.n_buckets), dtype=np.float64)
        for k, level in enumerate(self.levels):
            rows = depth == k
            proba[rows] = level.proba[cell[rows]]
        return proba, depth, cell

    def predict(self, trace: pl.DataFrame) -> LengthPrediction:
        """Predict the bucket and expected length of every row from its features only.

        Raises:
            ValueError: if a feature column is missing or has nulls.
        """
        proba, depth, cell = self._predict_arrays(trace)
        bucket = np.argmax(proba, axis=1).astype(np.int64)
        expected = np.empty(trace.height, dtype=np.float64)
        for k, level in enumerate(self.levels):
            rows = depth == k
            expected[rows] = level.expected_tokens[cell[rows], bucket[rows]]
        return LengthPrediction(bucket=bucket, expected_output_tokens=expected)

    def to_frame(self) -> pl.DataFrame:
        """The fitted cells: level, key codes, training count and predicted bucket."""
        rows: dict[str, list[object]] = {"level": [], "key": [], "n_train": [], "bucket": []}
        for k, level in enumerate(self.levels):
            for key, idx in sorted(level.cells.items()):
                rows["level"].append(k)
                rows["key"].append(list(key))
                rows["n_train"].append(int(level.counts[idx].sum()))
                rows["bucket"].append(int(np.argmax(level.proba[idx])))
        return pl.DataFrame(
            rows,
            schema={
                "level": pl.Int64,
                "key": pl.List(pl.Int64),
                "n_train": pl.Int64,
                "bucket": pl.Int64,
            },
        )


def _is_numeric(dtype: pl.DataType) -> bool:
    return dtype.is_numeric() and not isinstance(dtype, pl.Boolean)


def _encode_features(
    trace: pl.DataFrame,
    features: tuple[str, ...],
    numeric: frozenset[str],
    categories: dict[str, tuple[str, ...]],
    bins_per_octave: float,
    *,
    warn_unseen: bool,
) -> npt.NDArray[np.int64]:
    codes = np.empty((trace.height, len(features)), dtype=np.int64)
    for j, name in enumerate(features):
        if name not in trace.columns:
            raise ValueError(
                f"feature column {name!r} is missing; the predictor uses {list(features)} and "
                f"the frame has {trace.columns}. Fix: add the column or fit with "
                "features= the columns this trace has."
            )
        col = trace.get_column(name)
        if col.null_count():
            row = int(col.is_null().arg_true()[0])
            raise ValueError(
                f"feature column {name!r} is null at row {row}; expected a value on every row. "
                "Fix: fill or drop the rows before predicting."
            )
        if name in numeric:
            x = col.cast(pl.Float64).to_numpy()
            bad = ~np.isfinite(x) | (x < 0)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise ValueError(
                    f"feature column {name!r} has value {float(x[row])!r} at row {row}; expected "
                    "finite numbers >= 0 (they are log2-binned). Fix: check the column."
                )
            codes[:, j] = np.floor(np.log2(1.0 + x) * bins_per_octave).astype(np.int64)
        else:
            vocab = categories[name]
            values = col.cast(pl.String)
            lookup = pl.DataFrame(
                {"v": list(vocab), "code": np.arange(len(vocab), dtype=np.int64)},
                schema={"v": pl.String, "code": pl.Int64},
            )
            mapped = (
                pl.DataFrame({"v": values})
                .join(lookup, on="v", how="left", maintain_order="left")
                .get_column("code")
            )
            unseen = mapped.is_null()
            if warn_unseen and unseen.any():
                examples = values.filter(unseen).unique(maintain_order=True).head(3).to_list()
                warnings.warn(
                    f"{int(unseen.sum())} of {trace.height} rows have {name!r} values not seen "
                    f"in training (e.g. {examples}); they back off to the coarser levels.",
                    stacklevel=5,
                )
            codes[:, j] = mapped.fill_null(-1).to_numpy()
    return codes


def fit_length_predictor(
    trace: pl.DataFrame,
    scheme: BucketScheme,
    *,
    features: Sequence[str] = ("task", "prompt_tokens"),
    bins_per_octave: float = 1.0,
    laplace: float = 1.0,
    prior_strength: float = 5.0,
) -> HistogramLengthPredictor:
    """Fit a :class:`HistogramLengthPredictor` on a training trace.

    Args:
        trace: training requests in the canonical schema (extra columns allowed).
        scheme: the bucket scheme (its edges must cover every training length).
        features: columns known at routing time, coarsest first; back-off drops them
            from the end. Numeric columns are log2-binned, others are categories.
            ``output_tokens`` and ``request_id`` are refused. ``()`` fits the global
            histogram alone (the majority class).
        bins_per_octave: log2-bin resolution for numeric features (> 0).
        laplace: pseudo-count per bucket of the global histogram (>= 0).
        prior_strength: pseudo-count weight of the parent level in every cell (> 0).

    Returns:
        The fitted predictor.

    Raises:
        ValueError: on a forbidden, repeated or missing feature, nulls in a feature,
            bad smoothing parameters, or lengths outside the scheme.
        TraceSchemaError: if ``trace`` is not a valid trace.

    Example:
        >>> from routeplay.estimator import BucketScheme
        >>> train = pl.DataFrame({
        ...     "request_id": [0, 1, 2, 3], "arrival_s": [0.0, 1.0, 2.0, 3.0],
        ...     "prompt_tokens": [100, 100, 100, 100], "output_tokens": [5, 6, 400, 500],
        ...     "task": ["code", "code", "conv", "conv"]})
        >>> p = fit_length_predictor(train, BucketScheme((0, 50, float("inf"))))
        >>> pred = p.predict(train.drop("output_tokens"))
        >>> pred.bucket.tolist(), pred.expected_output_tokens.tolist()
        ([0, 0, 1, 1], [5.5, 5.5, 450.0, 450.0])
    """
    scheme = _check_scheme(scheme)
    features = tuple(features)
    for name in features:
        if name in _FORBIDDEN_FEATURES:
            raise ValueError(
                f"feature {name!r} is not known at routing time (or is an identifier); expected "
                "request features such as 'task' or 'prompt_tokens'. Fix: remove it from features."
            )
    if len(set(features)) != len(features):
        raise ValueError(f"features = {features!r} repeat a column; expected distinct names.")
    if not (np.isfinite(bins_per_octave) and bins_per_octave > 0):
        raise ValueError(
            f"bins_per_octave = {bins_per_octave!r}; expected a finite number > 0. "
            "Fix: pass e.g. 1.0 (one bin per doubling)."
        )
    if not (np.isfinite(laplace) and laplace >= 0):
        raise ValueError(f"laplace = {laplace!r}; expected a finite pseudo-count >= 0, e.g. 1.0.")
    if not (np.isfinite(prior_strength) and prior_strength > 0):
        raise ValueError(
            f"prior_strength = {prior_strength!r}; expected a finite pseudo-count > 0, e.g. 5.0."
        )
    trace, buckets = _training_frame(trace, scheme)
    for name in features:
        if name not in trace.columns:
            hint = " Fix: pass features=('prompt_tokens',)" if name == "task" else ""
            raise ValueError(
                f"feature column {name!r} is missing from the training trace (columns "
                f"{trace.columns}).{hint or ' Fix: add the column or drop the feature.'}"
            )
    numeric = frozenset(f for f in features if _is_numeric(trace.schema[f]))
    categories = {
        f: tuple(sorted(trace.get_column(f).drop_nulls().cast(pl.String).unique().to_list()))
        for f in features
        if f not in numeric
    }
    codes = _encode_features(
        trace, features, numeric, categories, float(bins_per_octave), warn_unseen=False
    )
    outputs = trace.get_column("output_tokens").to_numpy().astype(np.float64)
    n_b = scheme.n_buckets
    fallback = scheme.representative_tokens()

    levels: list[_Level] = []
    parent_cells: npt.NDArray[np.intp] = np.zeros(0, dtype=np.intp)
    for k in range(len(features) + 1):
        unique, inverse = _cell_ids(codes[:, :k])
        n_cells = unique.shape[0]
        counts = np.zeros((n_cells, n_b), dtype=np.int64)
        np.add.at(counts, (inverse, buckets), 1)
        sums = np.zeros((n_cells, n_b), dtype=np.float64)
        np.add.at(sums, (inverse, buckets), outputs)
        with np.errstate(invalid="ignore", divide="ignore"):
            means = sums / counts
        if k == 0:
            proba = (counts + laplace) / (counts.sum(axis=1, keepdims=True) + n_b * laplace)
            if laplace == 0:
                proba = counts / counts.sum(axis=1, keepdims=True)
            expected = np.where(counts > 0, means, fallback[None, :])
        else:
            parent = levels[k - 1]
            # each cell's parent: the cell of the first k-1 codes of any of its rows
            # (any row of the cell will do: they all share the first k-1 codes)
            first_row = np.zeros(n_cells, dtype=np.intp)
            first_row[inverse] = np.arange(inverse.size)
            parent_of = parent_cells[first_row]
            prior = parent.proba[parent_of]
            proba = (counts + prior_strength * prior) / (
                counts.sum(axis=1, keepdims=True) + prior_strength
            )
            expected = np.where(counts > 0, means, parent.expected_tokens[parent_of])
        cells = {tuple(row.tolist()): i for i, row in enumerate(unique)}
        levels.append(_Level(cells=cells, counts=counts, proba=proba, expected_tokens=expected))
        parent_cells = inverse.astype(np.intp)

    return HistogramLengthPredictor(
        scheme=scheme,
        features=features,
        numeric_features=numeric,
        categories=categories,
        bins_per_octave=float(bins_per_octave),
        laplace=float(laplace),
        prior_strength=float(prior_strength),
        n_train=trace.height,
        levels=tuple(levels),
    )


def fit_task_mix_predictor(
    latency: LinearLatencyModel | str,
    workload: TaskMixConfig,
    *,
    features: Sequence[str] = ("task", "prompt_tokens"),
) -> HistogramLengthPredictor:
    """A length predictor fitted on its own task-mix trace (never an evaluation trace).

    The task-mix experiments fit their predictor on a separate draw of the workload
    (its own seed), with the paper's time buckets of one latency model:
    ``fit_length_predictor(generate_task_mix(workload), time_buckets(latency))``.

    Args:
        latency: the latency model whose decode time defines the buckets, or a preset
            name (``routeplay.estimator.list_presets()``).
        workload: the training workload (size, ordering, seed); use a seed that no
            evaluation episode uses.
        features: predictor features (default: task, then prompt length).

    Returns:
        The fitted :class:`HistogramLengthPredictor`.

    Example:
        >>> from routeplay.datasets import TaskMixConfig
        >>> from routeplay.estimator import fit_task_mix_predictor
        >>> p = fit_task_mix_predictor("llama2-7b/v100-paper",
        ...                            TaskMixConfig(n_requests=500, seed=7))
        >>> p.n_train, p.features
        (500, ('task', 'prompt_tokens'))
    """
    from routeplay.datasets import generate_task_mix

    from ._buckets import time_buckets
    from ._presets import get_preset

    model = get_preset(latency) if isinstance(latency, str) else latency
    trace = generate_task_mix(workload)
    return fit_length_predictor(trace, time_buckets(model), features=features)


@dataclass(frozen=True, slots=True)
class PredictorEvaluation:
    """Held-out quality of a length predictor under one bucket scheme.

    Attributes:
        scheme_name: the scheme's label.
        edges_tokens: the scheme's edges.
        n_requests: evaluated rows.
        top1_accuracy: share of rows whose predicted bucket is the true one.
        within_one_accuracy: share whose prediction is at most one bucket off.
        cohen_kappa: chance-corrected agreement ``(acc - p_e) / (1 - p_e)``, with ``p_e``
            from the confusion matrix's margins; comparable across schemes, unlike
            raw accuracy. 0 for a constant predictor.
        mean_abs_error_tokens: mean ``|expected_output_tokens - output_tokens|``.
        confusion: (n_buckets, n_buckets) counts, rows = true bucket, columns = predicted.
    """

    scheme_name: str
    edges_tokens: tuple[float, ...]
    n_requests: int
    top1_accuracy: float
    within_one_accuracy: float
    cohen_kappa: float
    mean_abs_error_tokens: float
    confusion: npt.NDArray[np.int64]

    def to_frame(self) -> pl.DataFrame:
        """The confusion matrix in long form: true bucket, predicted bucket, count."""
        n_b = self.confusion.shape[0]
        return pl.DataFrame(
            {
                "true_bucket": np.repeat(np.arange(n_b, dtype=np.int64), n_b),
                "predicted_bucket": np.tile(np.arange(n_b, dtype=np.int64), n_b),
                "n_requests": self.confusion.ravel().astype(np.int64),
            }
        )

    def summary(self) -> dict[str, float | int | str]:
        """The scalar metrics as a dict (one row of a comparison table)."""
        return {
            "scheme": self.scheme_name,
            "n_buckets": len(self.edges_tokens) - 1,
            "n_requests": self.n_requests,
            "top1_accuracy": self.top1_accuracy,
            "within_one_accuracy": self.within_one_accuracy,
            "cohen_kappa": self.cohen_kappa,
            "mean_abs_error_tokens": self.mean_abs_error_tokens,
        }


def evaluate_predictor(
    predictor: OutputLengthPredictor,
    test_trace: pl.DataFrame,
    scheme: BucketScheme | None = None,
) -> PredictorEvaluation:
    """Score ``predictor`` on held-out requests.

    The predictor sees ``test_trace`` without its ``output_tokens`` column; the truth
    is bucketed with ``scheme`` (default: the predictor's own edges).

    Args:
        predictor: any :class:`~routeplay.estimator.OutputLengthPredictor`.
        test_trace: held-out requests (canonical schema, with ``output_tokens``).
        scheme: the scheme for the truth; must have the predictor's edges.

    Returns:
        A :class:`PredictorEvaluation`.

    Raises:
        ValueError: if ``scheme``'s edges differ from the predictor's, the trace lacks
            ``output_tokens`` or is empty, or the predictor returns bad buckets.

    Example:
        >>> from routeplay.estimator import equal_width_buckets
        >>> t = pl.DataFrame({"request_id": [0, 1, 2], "arrival_s": [0.0, 1.0, 2.0],
        ...                   "prompt_tokens": [5, 6, 7], "output_tokens": [10, 20, 900]})
        >>> s = equal_width_buckets(1000, 4)
        >>> ev = evaluate_predictor(ConstantLengthPredictor.fit(t, s), t, s)
        >>> round(ev.top1_accuracy, 4), ev.confusion[3].tolist(), ev.cohen_kappa
        (0.6667, [1, 0, 0, 0], 0.0)
    """
    edges = tuple(float(e) for e in predictor.bucket_edges_tokens)
    if scheme is None:
        scheme = BucketScheme(edges, name="predictor")
    scheme = _check_scheme(scheme)
    if scheme.edges_tokens != edges:
        raise ValueError(
            f"scheme {scheme.name!r} has edges {scheme.edges_tokens} but the predictor uses "
            f"{edges}; expected the same buckets. Fix: fit the predictor on this scheme."
        )
    if "output_tokens" not in test_trace.columns or test_trace.height == 0:
        raise ValueError(
            f"test_trace has {test_trace.height} rows and columns {test_trace.columns}; "
            "expected a non-empty trace with 'output_tokens' (the truth). Fix: evaluate on a "
            "held-out split of a loaded trace."
        )
    truth_tokens = test_trace.get_column("output_tokens").to_numpy().astype(np.float64)
    truth = scheme.assign(truth_tokens)
    pred = predictor.predict(test_trace.drop("output_tokens"))
    bucket = np.asarray(pred.bucket)
    n_b = scheme.n_buckets
    if bucket.shape != truth.shape or not ((bucket >= 0) & (bucket < n_b)).all():
        raise ValueError(
            f"predictor returned buckets of shape {bucket.shape} with range "
            f"[{bucket.min() if bucket.size else None}, {bucket.max() if bucket.size else None}]; "
            f"expected shape {truth.shape} with values in range({n_b})."
        )
    confusion = np.zeros((n_b, n_b), dtype=np.int64)
    np.add.at(confusion, (truth, bucket), 1)
    n = int(truth.size)
    accuracy = float(np.trace(confusion) / n)
    within_one = float(np.mean(np.abs(truth - bucket) <= 1))
    p_e = float((confusion.sum(axis=1) @ confusion.sum(axis=0)) / (n * n))
    kappa = 0.0 if math.isclose(p_e, 1.0) else (accuracy - p_e) / (1.0 - p_e)
    mae = float(np.mean(np.abs(np.asarray(pred.expected_output_tokens) - truth_tokens)))
    return PredictorEvaluation(
        scheme_name=scheme.name,
        edges_tokens=scheme.edges_tokens,
        n_requests=n,
        top1_accuracy=accuracy,
        within_one_accuracy=within_one,
        cohen_kappa=float(kappa),
        mean_abs_error_tokens=mae,
        confusion=confusion,
    )
