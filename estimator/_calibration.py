"""Calibrate a :class:`LinearLatencyModel` from measured iterations.

The input is an *iteration table*: one row per measured iteration (one forward pass
of a continuously batched instance), with the batch's composition and its duration.

=========================  =========  ==================================================
column                     unit       meaning
=========================  =========  ==================================================
``prefill_tokens``         tokens     new prompt tokens processed in the iteration
``prefill_sq_tokens``      tokens^2   prefill attention work, ``sum(chunk*(chunk+cached))``
``n_decode_seqs``          sequences  sequences that decode one token in the iteration
``decode_context_tokens``  tokens     sum of those sequences' context lengths (KV read)
``iteration_s``            seconds    measured duration of the iteration (> 0)
=========================  =========  ==================================================

Extra columns are ignored. The fitted model is

    iteration_s = intercept + prefill_batch * [prefill_tokens > 0]
                + prefill_tokens * a_p + prefill_sq_tokens * a_sq
                + n_decode_seqs * a_d + decode_context_tokens * a_kv + noise

Prefill and decode iterations have different fixed costs, which the indicator term
``prefill_batch`` (-> ``LinearLatencyModel.prefill_batch_s``) captures. A table of
prefill-only rows stacked on a table of decode-only rows therefore fits both phases
at once: the indicator gives each phase its own intercept, and the per-token
coefficients are the same as fitting the two tables separately.

Terms whose column is all zero (a prefill-only table has no decode work) cannot be
estimated: they are dropped with a warning, recorded in :attr:`LatencyFit.notes`, and
their coefficient is 0 in the returned model.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import numpy.typing as npt
import polars as pl

from ._latency import LinearLatencyModel

__all__ = [
    "ITERATION_COLUMNS",
    "LATENCY_TERMS",
    "LatencyFit",
    "ResidualSummary",
    "fit_latency_model",
    "read_iteration_log",
    "score_latency_model",
]

#: Feature columns of an iteration table, then the measured duration.
ITERATION_COLUMNS: tuple[str, ...] = (
    "prefill_tokens",
    "prefill_sq_tokens",
    "n_decode_seqs",
    "decode_context_tokens",
    "iteration_s",
)

#: Fit terms (besides the intercept) -> the LinearLatencyModel field they calibrate.
LATENCY_TERMS: dict[str, str] = {
    "prefill_batch": "prefill_batch_s",
    "prefill_tokens": "prefill_s_per_token",
    "prefill_sq_tokens": "prefill_s_per_token2",
    "n_decode_seqs": "decode_s_per_seq",
    "decode_context_tokens": "decode_s_per_context_token",
}

_UNITS: dict[str, str] = {
    "intercept": "s",
    "prefill_batch": "s",
    "prefill_tokens": "s/token",
    "prefill_sq_tokens": "s/token^2",
    "n_decode_seqs": "s/seq",
    "decode_context_tokens": "s/context token",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class ResidualSummary:
    """Prediction errors of a model on a set of iterations (residual = measured - predicted).

    Attributes:
        n_rows: number of iterations.
        mean_s: mean residual (seconds).
        std_s: standard deviation of the residuals (seconds, ddof=1; 0 for one row).
        max_abs_s: largest absolute residual (seconds).
        mape: mean absolute percentage error, ``mean(|residual| / measured)`` (a fraction).
        p95_abs_rel: 95th percentile of ``|residual| / measured`` (a fraction).
        r_squared: ``1 - SS_res / SS_tot`` on these rows (nan for constant measurements).

    Example:
        >>> s = ResidualSummary.from_arrays(np.array([1.0, 2.0]), np.array([1.1, 1.8]))
        >>> round(s.mape, 3), round(s.max_abs_s, 3)
        (0.1, 0.2)
    """

    n_rows: int
    mean_s: float
    std_s: float
    max_abs_s: float
    mape: float
    p95_abs_rel: float
    r_squared: float

    @classmethod
    def from_arrays(
        cls, measured_s: npt.NDArray[np.float64], predicted_s: npt.NDArray[np.float64]
    ) -> ResidualSummary:
        """Summarise ``measured_s - predicted_s`` (both 1-D, same length, measured > 0)."""
        y = np.asarray(measured_s, dtype=np.float64)
        resid = y - np.asarray(predicted_s, dtype=np.float64)
        rel = np.abs(resid) / y
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        return cls(
            n_rows=int(y.size),
            mean_s=float(resid.mean()),
            std_s=float(resid.std(ddof=1)) if y.size > 1 else 0.0,
            max_abs_s=float(np.abs(resid).max()),
            mape=float(rel.mean()),
            p95_abs_rel=float(np.quantile(rel, 0.95)),
            r_squared=1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else math.nan,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LatencyFit:
    """Result of :func:`fit_latency_model`: the model, its uncertainty and its errors.

    Coefficients, standard errors and CIs are aligned with :attr:`terms` and are in
    seconds per unit of the term (see :meth:`to_frame` for the units).

    Attributes:
        model: the calibrated latency model (dropped terms have coefficient 0).
        terms: fitted terms, ``"intercept"`` first when fitted.
        coefficients: point estimates.
        std_errors: heteroscedasticity-robust standard errors (``cov_type``).
        ci_low: lower ends of the 95% confidence intervals.
        ci_high: upper ends of the 95% confidence intervals.
        p_values: two-sided p-values of ``coefficient == 0``.
        dropped_terms: requested terms that could not be estimated (all-zero column).
        method: ``"ols"`` or ``"wls"``.
        cov_type: statsmodels covariance type of the standard errors.
        r_squared: R^2 of the fit on the training rows (weighted for WLS).
        train: residual summary on the training rows.
        test: residual summary on the held-out rows (None when ``test_fraction == 0``).
        n_train: training rows.
        n_test: held-out rows.
        seed: seed of the train/test split.
        notes: what the fit did that a reader should know (dropped terms, ...).

    Example:
        >>> rng = np.random.default_rng(np.random.SeedSequence(0))
        >>> n = np.arange(1, 61)
        >>> frame = pl.DataFrame({"prefill_tokens": n * 0, "prefill_sq_tokens": n * 0,
        ...     "n_decode_seqs": n, "decode_context_tokens": n * 300,
        ...     "iteration_s": 0.01 + 2e-4 * n + 1e-6 * n * 300})
        >>> fit = fit_latency_model(frame, terms=["n_decode_seqs"])
        >>> round(fit.model.intercept_s, 6), round(fit.model.decode_s_per_seq, 6)
        (0.01, 0.0005)
        >>> fit.to_frame()["term"].to_list()
        ['intercept', 'n_decode_seqs']
    """

    model: LinearLatencyModel
    terms: tuple[str, ...]
    coefficients: tuple[float, ...]
    std_errors: tuple[float, ...]
    ci_low: tuple[float, ...]
    ci_high: tuple[float, ...]
    p_values: tuple[float, ...]
    dropped_terms: tuple[str, ...]
    method: str
    cov_type: str
    r_squared: float
    train: ResidualSummary
    test: ResidualSummary | None
    n_train: int
    n_test: int
    seed: int
    notes: tuple[str, ...] = ()

    @property
    def heldout_mape(self) -> float:
        """Mean absolute percentage error on the held-out rows (nan without a test split)."""
        return self.test.mape if self.test is not None else math.nan

    def coefficient(self, term: str) -> float:
        """Point estimate of one fitted term (``KeyError``-free: raises ValueError)."""
        return self.coefficients[self._index(term)]

    def confidence_interval(self, term: str) -> tuple[float, float]:
        """95% confidence interval of one fitted term."""
        i = self._index(term)
        return self.ci_low[i], self.ci_high[i]

    def _index(self, term: str) -> int:
        if term not in self.terms:
            raise ValueError(
                f"term {term!r} was not fitted; fitted terms are {list(self.terms)}. "
                f"Fix: use one of those (dropped: {list(self.dropped_terms)})."
            )
        return self.terms.index(term)

    def to_frame(self) -> pl.DataFrame:
        """One row per fitted coefficient: term, model field, unit, estimate, SE, CI, p."""
        return pl.DataFrame(
            {
                "term": list(self.terms),
                "model_field": [
                    "intercept_s" if t == "intercept" else LATENCY_TERMS[t] for t in self.terms
                ],
                "unit": [_UNITS[t] for t in self.terms],
                "estimate": list(self.coefficients),
                "std_error": list(self.std_errors),
                "ci_low": list(self.ci_low),
                "ci_high": list(self.ci_high),
                "p_value": list(self.p_values),
            },
            schema={
                "term": pl.String,
                "model_field": pl.String,
                "unit": pl.String,
                "estimate": pl.Float64,
                "std_error": pl.Float64,
                "ci_low": pl.Float64,
                "ci_high": pl.Float64,
                "p_value": pl.Float64,
            },
        )

    def summary(self) -> str:
        """A plain-text report of the coefficients (in ms) and the fit quality."""
        lines = [
            f"LatencyFit ({self.method.upper()}, {self.cov_type} standard errors, "
            f"n_train={self.n_train}, n_test={self.n_test}, seed={self.seed})",
            f"{'term':<24}{'estimate':>14}{'95% CI':>30}  unit",
        ]
        for t, c, lo, hi in zip(
            self.terms, self.coefficients, self.ci_low, self.ci_high, strict=True
        ):
            unit = _UNITS[t].replace("s", "ms", 1)
            lines.append(
                f"{t:<24}{c * 1e3:>14.6g}   [{lo * 1e3:>11.6g}, {hi * 1e3:>11.6g}]  {unit}"
            )
        lines.append(
            f"R^2 (train) = {self.r_squared:.5f}; train MAPE = {self.train.mape:.2%}; "
            f"held-out MAPE = {self.heldout_mape:.2%}"
        )
        src = self.test if self.test is not None else self.train
        which = "held-out" if self.test is not None else "train"
        lines.append(
            f"residuals ({which}): mean {src.mean_s * 1e3:.4g} ms, std {src.std_s * 1e3:.4g} ms, "
            f"max |r| {src.max_abs_s * 1e3:.4g} ms, p95 |r|/t {src.p95_abs_rel:.2%}"
        )
        if self.dropped_terms:
            lines.append(f"dropped terms (coefficient 0): {', '.join(self.dropped_terms)}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _check_table(frame: pl.DataFrame, *, where: str) -> None:
    missing = [c for c in ITERATION_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{where} is missing column(s) {missing}; got columns {frame.columns}. "
            f"Expected an iteration table with columns {list(ITERATION_COLUMNS)}. Fix: "
            "rename your columns or set all-zero columns for work the iterations did not do."
        )
    for col in ITERATION_COLUMNS:
        dtype = frame.schema[col]
        if not dtype.is_numeric():
            raise ValueError(
                f"{where} column {col!r} has dtype {dtype}; expected a numeric column. "
                "Fix: cast it, e.g. pl.col(name).cast(pl.Float64)."
            )
        values = frame[col].cast(pl.Float64).to_numpy()
        bad = ~np.isfinite(values)
        if col == "iteration_s":
            bad |= values <= 0
            expected = "finite seconds > 0"
        else:
            bad |= values < 0
            expected = "finite values >= 0"
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{where} column {col!r} row {row} = {frame[col][row]!r} "
                f"({int(bad.sum())} bad row(s)); expected {expected}. Fix: drop or repair "
                "those iterations before fitting."
            )


def _split(n_rows: int, test_fraction: float, seed: int) -> tuple[npt.NDArray[np.int64], ...]:
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    order = rng.permutation(n_rows)
    n_test = int(round(test_fraction * n_rows))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def fit_latency_model(
    frame: pl.DataFrame,
    *,
    method: Literal["ols", "wls"] = "ols",
    weights: str | npt.NDArray[np.float64] | None = None,
    cov_type: str = "HC3",
    test_fraction: float = 0.2,
    seed: int = 0,
    fit_intercept: bool = True,
    terms: Sequence[str] | None = None,
    name: str = "fitted",
) -> LatencyFit:
    """Fit a :class:`LinearLatencyModel` to measured iterations with statsmodels OLS/WLS.

    Rows are split at random (seeded) into a training part, which the model is fitted
    on and whose coefficients, CIs and R^2 are reported, and a held-out part
    (``test_fraction`` of the rows) on which the MAPE is measured.

    Args:
        frame: an iteration table (see the module docstring for the columns).
        method: ``"ols"`` (least absolute-time squares) or ``"wls"``.
        weights: WLS weights, a column name of ``frame`` or an array with one positive
            weight per row. With ``method="wls"`` and no weights, ``1 / iteration_s**2``
            is used, i.e. the fit minimises squared *relative* errors.
        cov_type: statsmodels robust covariance for the standard errors and CIs
            (``"HC0"`` ... ``"HC3"``, or ``"nonrobust"``); CIs use the t distribution.
        test_fraction: share of rows held out, in ``[0, 0.9]``; 0 fits on every row.
        seed: seed of the train/test split.
        fit_intercept: fit ``intercept_s`` (otherwise it is 0).
        terms: terms to fit among ``prefill_batch`` (the prefill-iteration indicator),
            ``prefill_tokens``, ``prefill_sq_tokens``, ``n_decode_seqs`` and
            ``decode_context_tokens``; default all of them. Terms whose column is all zero
            (and the indicator when constant) are dropped with a warning.
        name: name given to the returned model.

    Returns:
        A :class:`LatencyFit`.

    Raises:
        ValueError: missing or non-numeric columns, non-positive times, negative or
            non-finite features, too few rows, collinear terms, unknown terms or
            options, or a fit whose base costs come out negative.

    Example:
        >>> p = np.repeat([64, 256, 1024, 2048], 5)
        >>> frame = pl.DataFrame({"prefill_tokens": p, "prefill_sq_tokens": p * p,
        ...     "n_decode_seqs": 0 * p, "decode_context_tokens": 0 * p,
        ...     "iteration_s": 0.007 + 7e-5 * p + 3e-9 * p * p})
        >>> import warnings
        >>> with warnings.catch_warnings():
        ...     warnings.simplefilter("ignore")
        ...     fit = fit_latency_model(frame, test_fraction=0.0)
        >>> round(fit.model.prefill_s_per_token, 9), fit.dropped_terms
        (7e-05, ('prefill_batch', 'n_decode_seqs', 'decode_context_tokens'))
    """
    if method not in ("ols", "wls"):
        raise ValueError(f"method = {method!r}; expected 'ols' or 'wls'.")
    if not 0.0 <= test_fraction <= 0.9:
        raise ValueError(
            f"test_fraction = {test_fraction!r}; expected a share in [0, 0.9]. "
            "Fix: pass e.g. 0.2, or 0.0 to fit on every row."
        )
    requested = tuple(LATENCY_TERMS) if terms is None else tuple(terms)
    unknown = [t for t in requested if t not in LATENCY_TERMS]
    if unknown or len(set(requested)) != len(requested):
        raise ValueError(
            f"terms = {list(requested)}: unknown or repeated term(s) {unknown}; expected "
            f"distinct names among {list(LATENCY_TERMS)}."
        )
    if not isinstance(frame, pl.DataFrame):
        raise ValueError(
            f"frame is a {type(frame).__name__}; expected a polars DataFrame. "
            "Fix: pl.from_pandas(df) or read_iteration_log(path)."
        )
    _check_table(frame, where="iteration table")
    if method == "ols" and weights is not None:
        raise ValueError("weights were given with method='ols'; pass method='wls' to use them.")

    y = frame["iteration_s"].cast(pl.Float64).to_numpy()
    columns: dict[str, npt.NDArray[np.float64]] = {}
    for t in requested:
        if t == "prefill_batch":
            columns[t] = (frame["prefill_tokens"].cast(pl.Float64).to_numpy() > 0).astype(float)
        else:
            columns[t] = frame[t].cast(pl.Float64).to_numpy()

    notes: list[str] = []
    dropped: list[str] = []
    for t, x in columns.items():
        if not np.any(x):
            dropped.append(t)
            notes.append(f"{t}: column is all zero in the table; term dropped (coefficient 0)")
        elif t == "prefill_batch" and np.all(x == 1.0):
            dropped.append(t)
            notes.append(
                "prefill_batch: every iteration has prefill work, so the indicator equals "
                "the intercept; term dropped (the intercept carries the prefill fixed cost)"
            )
    if dropped:
        warnings.warn(
            f"fit_latency_model dropped {len(dropped)} term(s) that this table cannot "
            f"identify: {dropped} (their coefficients are 0 in the model); see LatencyFit.notes",
            stacklevel=2,
        )
    fitted = [t for t in requested if t not in dropped]
    names = (["intercept"] if fit_intercept else []) + fitted
    if not names:
        raise ValueError(
            "nothing to fit: no intercept and every requested term was dropped. "
            "Fix: pass fit_intercept=True or terms that vary in the table."
        )
    x_full = np.column_stack(
        ([np.ones_like(y)] if fit_intercept else []) + [columns[t] for t in fitted]
    )

    if isinstance(weights, str):
        if weights not in frame.columns:
            raise ValueError(
                f"weights column {weights!r} not in the table; columns are {frame.columns}."
            )
        w = frame[weights].cast(pl.Float64).to_numpy()
    elif weights is not None:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != y.shape:
            raise ValueError(
                f"weights has shape {w.shape}; expected one weight per row, shape {y.shape}."
            )
    else:
        w = 1.0 / y**2 if method == "wls" else np.ones_like(y)
    if not np.all(np.isfinite(w) & (w > 0)):
        row = int(np.flatnonzero(~(np.isfinite(w) & (w > 0)))[0])
        raise ValueError(f"weights[{row}] = {float(w[row])!r}; expected finite weights > 0.")

    train_idx, test_idx = _split(y.size, test_fraction, seed)
    min_rows = len(names) + 2
    if train_idx.size < min_rows:
        raise ValueError(
            f"too few rows: {train_idx.size} training row(s) of {y.size} "
            f"(test_fraction={test_fraction}) for {len(names)} coefficient(s) {names}; "
            f"expected at least {min_rows}. Fix: measure more iterations, fit fewer terms "
            "or lower test_fraction."
        )
    x_train = x_full[train_idx]
    scale = np.abs(x_train).max(axis=0)
    if np.any(scale == 0):
        zero = [names[i] for i in np.flatnonzero(scale == 0)]
        raise ValueError(
            f"term(s) {zero} are zero on every training row (seed={seed}); the term cannot "
            "be estimated. Fix: use more rows, another seed, or drop the term."
        )
    xs = x_train / scale
    rank = int(np.linalg.matrix_rank(xs))
    if rank < len(names):
        raise ValueError(
            f"the terms {names} are collinear in this table (design rank {rank} < "
            f"{len(names)}), so their coefficients are not identified. Fix: measure "
            "iterations that vary these quantities independently or fit fewer terms."
        )

    from statsmodels.regression.linear_model import OLS, WLS

    if method == "wls":
        reg = WLS(y[train_idx], xs, weights=w[train_idx])
    else:
        reg = OLS(y[train_idx], xs)
    res = reg.fit(cov_type=cov_type, use_t=True)
    beta = np.asarray(res.params) / scale
    se = np.asarray(res.bse) / scale
    ci = np.asarray(res.conf_int(alpha=0.05)) / scale[:, None]
    pvals = np.asarray(res.pvalues, dtype=np.float64)

    coef = dict(zip(names, beta.tolist(), strict=True))
    model_kwargs = {"intercept_s": coef.get("intercept", 0.0)}
    for t, field_name in LATENCY_TERMS.items():
        model_kwargs[field_name] = coef.get(t, 0.0)
    try:
        model = LinearLatencyModel(name=name, **model_kwargs)
    except ValueError as exc:
        raise ValueError(
            f"the fitted coefficients do not form a valid latency model: {exc} (fitted: {coef})"
        ) from exc

    def predict(idx: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        return np.asarray(x_full[idx] @ beta, dtype=np.float64)

    train = ResidualSummary.from_arrays(y[train_idx], predict(train_idx))
    test = ResidualSummary.from_arrays(y[test_idx], predict(test_idx)) if test_idx.size else None
    return LatencyFit(
        model=model,
        terms=tuple(names),
        coefficients=tuple(beta.tolist()),
        std_errors=tuple(se.tolist()),
        ci_low=tuple(ci[:, 0].tolist()),
        ci_high=tuple(ci[:, 1].tolist()),
        p_values=tuple(pvals.tolist()),
        dropped_terms=tuple(dropped),
        method=method,
        cov_type=cov_type,
        r_squared=float(res.rsquared),
        train=train,
        test=test,
        n_train=int(train_idx.size),
        n_test=int(test_idx.size),
        seed=seed,
        notes=tuple(notes),
    )


def score_latency_model(model: LinearLatencyModel, frame: pl.DataFrame) -> ResidualSummary:
    """Errors of ``model`` on an iteration table (e.g. a preset on your own measurements).

    Args:
        model: any :class:`LinearLatencyModel`.
        frame: an iteration table (module docstring).

    Returns:
        The :class:`ResidualSummary` of ``iteration_s - model prediction``.

    Example:
        >>> m = LinearLatencyModel(intercept_s=0.01, prefill_s_per_token=1e-4,
        ...     prefill_s_per_token2=0.0, decode_s_per_seq=0.0, decode_s_per_context_token=0.0)
        >>> frame = pl.DataFrame({"prefill_tokens": [100, 200], "prefill_sq_tokens": [0, 0],
        ...     "n_decode_seqs": [0, 0], "decode_context_tokens": [0, 0],
        ...     "iteration_s": [0.02, 0.033]})
        >>> round(score_latency_model(m, frame).max_abs_s, 6)
        0.003
    """
    _check_table(frame, where="iteration table")
    predicted = model.iteration_time_s(
        prefill_tokens=frame["prefill_tokens"].cast(pl.Float64).to_numpy(),
        prefill_sq_tokens=frame["prefill_sq_tokens"].cast(pl.Float64).to_numpy(),
        n_decode_seqs=frame["n_decode_seqs"].cast(pl.Float64).to_numpy(),
        decode_context_tokens=frame["decode_context_tokens"].cast(pl.Float64).to_numpy(),
    )
    return ResidualSummary.from_arrays(
        frame["iteration_s"].cast(pl.Float64).to_numpy(), np.asarray(predicted, dtype=np.float64)
    )


def read_iteration_log(path: str | Path) -> pl.DataFrame:
    """Read your own measured iterations from a CSV or Parquet file.

    The file has one row per iteration (forward pass) of one instance, with the
    columns of an iteration table (module docstring); other columns are kept. For
    example, from vLLM's per-step logs or a profiler, summing over the batch's
    requests::

        prefill_tokens,prefill_sq_tokens,n_decode_seqs,decode_context_tokens,iteration_s
        512,262144,0,0,0.0451
        0,0,24,18240,0.0187
        128,16384,23,17650,0.0263

    ``prefill_sq_tokens`` is ``sum(chunk * (chunk + cached))`` over the prefill chunks
    (``prompt_tokens**2`` for a whole prompt with no cached prefix), and
    ``decode_context_tokens`` the sum of the decoding sequences' context lengths.

    Args:
        path: a ``.csv`` or ``.parquet`` file.

    Returns:
        The table, with the five columns validated (numeric, times > 0, features >= 0).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: unknown file suffix, or the table fails validation.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> p = os.path.join(d, "iters.csv")
        >>> lines = ["prefill_tokens,prefill_sq_tokens,n_decode_seqs,decode_context_tokens,"
        ...          "iteration_s", "512,262144,0,0,0.0451", "0,0,24,18240,0.0187"]
        >>> _ = open(p, "w").write(chr(10).join(lines))
        >>> read_iteration_log(p).height
        2
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(
            f"iteration log {str(p)!r} not found; expected a .csv or .parquet file."
        )
    suffix = p.suffix.lower()
    if suffix == ".csv":
        frame = pl.read_csv(p, infer_schema_length=None)
    elif suffix in (".parquet", ".pq"):
        frame = pl.read_parquet(p)
    else:
        raise ValueError(
            f"iteration log {str(p)!r} has suffix {suffix!r}; expected .csv or .parquet. "
            "Fix: convert the file or rename it."
        )
    _check_table(frame, where=f"iteration log {p.name}")
    return frame
