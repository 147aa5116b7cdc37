"""Output-length bucket schemes: the paper's time buckets, quantile and equal-width buckets.

A :class:`BucketScheme` is a tuple of ``n_buckets + 1`` ascending edges in tokens;
bucket ``b`` holds output lengths in ``[edges[b], edges[b + 1])`` and the last edge may
be ``inf`` (an open top bucket). Three constructors:

* :func:`time_buckets`: the paper's unequal, time-based buckets (decode phase of
  0-0.5 s, 0.5-2 s, 2-4 s, ...) converted to tokens with a latency model's decode
  iteration time under a stated batch assumption;
* :func:`quantile_buckets`: edges at quantiles of observed output lengths (each task
  weighted equally when a task column is given), so every bucket is about equally full;
* :func:`equal_width_buckets`: the equal-bucket baseline.

How many buckets there are and where their edges lie decides how hard the
classification problem is: compare predictors on the same scheme.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from ._latency import LinearLatencyModel

__all__ = [
    "PAPER_TIME_EDGES_S",
    "BucketScheme",
    "equal_width_buckets",
    "quantile_buckets",
    "time_buckets",
]

#: Decode-time bucket edges (s). The paper publishes 0-0.5, 0.5-2 and 2-4 s; beyond 4 s
#: we keep doubling (4-8, 8-16, 16+), our choice, so heavy decodes (>= 5 s) are split too.
PAPER_TIME_EDGES_S: tuple[float, ...] = (0.0, 0.5, 2.0, 4.0, 8.0, 16.0, math.inf)


def _format_edge(edge: float) -> str:
    return "inf" if math.isinf(edge) else f"{edge:g}"


@dataclass(frozen=True, slots=True)
class BucketScheme:
    """Output-length buckets: ``n_buckets + 1`` ascending edges in tokens.

    Bucket ``b`` holds lengths ``edges[b] <= tokens < edges[b + 1]``. The first edge is
    >= 0, every edge but the last is finite, and the last may be ``inf``.

    Attributes:
        edges_tokens: the bucket boundaries (tokens).
        name: a label for reports (e.g. ``"time-paper"``).

    Example:
        >>> s = BucketScheme((0.0, 10.0, 100.0, float("inf")), name="demo")
        >>> s.n_buckets, s.assign([1, 10, 99, 5000]).tolist()
        (3, [0, 1, 1, 2])
        >>> s.labels()
        ('[0, 10)', '[10, 100)', '[100, inf)')
    """

    edges_tokens: tuple[float, ...]
    name: str = "custom"

    def __post_init__(self) -> None:
        edges = tuple(float(e) for e in self.edges_tokens)
        object.__setattr__(self, "edges_tokens", edges)
        if len(edges) < 2:
            raise ValueError(
                f"BucketScheme.edges_tokens = {edges!r}; expected at least 2 edges "
                "(n_buckets + 1). Fix: pass e.g. (0, 100, inf)."
            )
        arr = np.asarray(edges)
        if np.isnan(arr).any() or np.isinf(arr[:-1]).any() or arr[0] < 0:
            raise ValueError(
                f"BucketScheme.edges_tokens = {edges!r}; expected a first edge >= 0 and "
                "finite edges (only the last may be inf). Fix: e.g. (0, 100, inf)."
            )
        if not (np.diff(arr) > 0).all():
            raise ValueError(
                f"BucketScheme.edges_tokens = {edges!r}; expected strictly ascending edges. "
                "Fix: sort them and remove duplicates."
            )

    @property
    def n_buckets(self) -> int:
        """Number of buckets (``len(edges_tokens) - 1``)."""
        return len(self.edges_tokens) - 1

    def assign(self, tokens: npt.ArrayLike | pl.Series) -> npt.NDArray[np.int64]:
        """Bucket index of every length in ``tokens``.

        Raises:
            ValueError: if a length lies outside ``[edges[0], edges[-1])`` (nothing is
                clipped into the end buckets silently) or is not finite.
        """
        values = np.asarray(tokens.to_numpy() if isinstance(tokens, pl.Series) else tokens)
        values = values.astype(np.float64, copy=False)
        edges = np.asarray(self.edges_tokens)
        outside = ~np.isfinite(values) | (values < edges[0]) | (values >= edges[-1])
        if outside.any():
            row = int(np.flatnonzero(outside.ravel())[0])
            raise ValueError(
                f"scheme {self.name!r}: length {float(values.ravel()[row])!r} at row {row} lies "
                f"outside [{_format_edge(edges[0])}, {_format_edge(edges[-1])}); expected "
                "every length inside the edges. Fix: use a scheme whose last edge is inf "
                "(equal_width_buckets and quantile_buckets make one)."
            )
        return (np.searchsorted(edges, values, side="right") - 1).astype(np.int64)

    def labels(self) -> tuple[str, ...]:
        """Human-readable ``[lo, hi)`` label of each bucket."""
        e = self.edges_tokens
        return tuple(
            f"[{_format_edge(e[b])}, {_format_edge(e[b + 1])})" for b in range(self.n_buckets)
        )

    def representative_tokens(self) -> npt.NDArray[np.float64]:
        """A point inside each bucket: its midpoint, or the lower edge of an open top bucket."""
        e = np.asarray(self.edges_tokens)
        mid = (e[:-1] + e[1:]) / 2.0
        return np.where(np.isinf(e[1:]), e[:-1], mid)

    def to_frame(self) -> pl.DataFrame:
        """One row per bucket: index, lower and upper edge (tokens), label."""
        e = self.edges_tokens
        return pl.DataFrame(
            {
                "bucket": np.arange(self.n_buckets, dtype=np.int64),
                "lower_tokens": np.asarray(e[:-1]),
                "upper_tokens": np.asarray(e[1:]),
                "label": list(self.labels()),
            }
        )


def time_buckets(
    latency_model: LinearLatencyModel,
    edges_s: Sequence[float] = PAPER_TIME_EDGES_S,
    *,
    n_batch_seqs: int = 1,
    context_tokens_per_seq: float = 256.0,
    name: str | None = None,
) -> BucketScheme:
    """The paper's unequal time-based buckets, converted to tokens.

    A request that produces ``n`` output tokens spends about ``n`` decode iterations in
    its decode phase. The conversion prices every iteration at one fixed batch: a
    decode-only iteration of ``n_batch_seqs`` sequences holding
    ``context_tokens_per_seq`` tokens of context each, i.e.
    ``t_iter = latency_model.decode_iteration_time_s(n_batch_seqs,
    n_batch_seqs * context_tokens_per_seq)``, and the token edge of a time edge is
    ``edge_s / t_iter``. The default, one sequence with 256 context tokens (an
    unloaded instance serving a short request), is the reference batch of the
    ``llama2-7b/v100-paper`` preset, whose intercept is set so that this batch decodes
    in the paper's ~0.035 s per iteration: with that preset the edges are 14.3, 57.1,
    114.3, 228.6 and 457.1 tokens. A busier batch makes every iteration slower, so the
    same seconds hold fewer tokens; pass the batch you expect to serve at.

    Args:
        latency_model: the instance's latency model.
        edges_s: ascending decode-time edges in seconds, starting at 0; the last may be
            inf. Default :data:`PAPER_TIME_EDGES_S`.
        n_batch_seqs: sequences in the assumed decode batch (>= 1).
        context_tokens_per_seq: context tokens per sequence in that batch (>= 0).
        name: label; default ``"time"`` plus the iteration time.

    Returns:
        The scheme (edges in tokens, possibly fractional).

    Raises:
        ValueError: on bad edges, a bad batch assumption, or a model whose decode
            iteration takes no time.

    Example:
        >>> v100 = LinearLatencyModel(intercept_s=0.035, prefill_s_per_token=3.2e-4,
        ...     prefill_s_per_token2=0.0, decode_s_per_seq=0.0, decode_s_per_context_token=0.0)
        >>> s = time_buckets(v100)
        >>> [round(e, 1) for e in s.edges_tokens], s.name
        ([0.0, 14.3, 57.1, 114.3, 228.6, 457.1, inf], 'time@35.0ms')
    """
    if isinstance(n_batch_seqs, bool) or not isinstance(n_batch_seqs, int) or n_batch_seqs < 1:
        raise ValueError(
            f"n_batch_seqs = {n_batch_seqs!r}; expected an int >= 1 (sequences in the assumed "
            "decode batch). Fix: pass e.g. n_batch_seqs=8."
        )
    if not (np.isfinite(context_tokens_per_seq) and context_tokens_per_seq >= 0):
        raise ValueError(
            f"context_tokens_per_seq = {context_tokens_per_seq!r}; expected a finite count >= 0. "
            "Fix: pass e.g. 256.0."
        )
    edges = np.asarray(edges_s, dtype=np.float64)
    if edges.ndim != 1 or edges.shape[0] < 2 or edges[0] != 0.0:
        raise ValueError(
            f"edges_s = {tuple(edges_s)!r}; expected at least 2 ascending times starting at 0. "
            "Fix: e.g. (0, 0.5, 2, 4, inf)."
        )
    t_iter = float(
        latency_model.decode_iteration_time_s(
            n_batch_seqs, n_batch_seqs * float(context_tokens_per_seq)
        )
    )
    if not t_iter > 0:
        raise ValueError(
            f"latency model {latency_model.name!r} gives a decode iteration of {t_iter!r} s "
            f"for {n_batch_seqs} sequence(s) x {context_tokens_per_seq} context tokens; "
            "expected a positive time to convert seconds into tokens. Fix: use a model with "
            "decode costs."
        )
    label = name if name is not None else f"time@{t_iter * 1e3:.1f}ms"
    return BucketScheme(tuple(float(e) for e in edges / t_iter), name=label)


def _weighted_quantile_edges(
    values: npt.NDArray[np.float64], weights: npt.NDArray[np.float64], n_buckets: int
) -> list[float]:
    order = np.argsort(values, kind="stable")
    v = values[order]
    cum = np.cumsum(weights[order])
    cum /= cum[-1]
    distinct = np.unique(v)
    edges: list[float] = []
    for k in range(1, n_buckets):
        # the smallest value whose cumulative weight reaches k / n_buckets ...
        q = v[min(int(np.searchsorted(cum, k / n_buckets - 1e-12, side="left")), v.size - 1)]
        # ... closes the lower bucket: the edge sits halfway to the next distinct value
        nxt = np.searchsorted(distinct, q, side="right")
        if nxt >= distinct.size:
            continue
        edge = float((q + distinct[nxt]) / 2.0)
        if not edges or edge > edges[-1]:
            edges.append(edge)
    return edges


def quantile_buckets(
    output_tokens: npt.ArrayLike | pl.Series,
    n_buckets: int,
    *,
    task: npt.ArrayLike | pl.Series | None = None,
    name: str | None = None,
) -> BucketScheme:
    """Buckets whose edges sit at quantiles of observed output lengths.

    Edge ``k`` lies halfway between the ``k / n_buckets`` quantile and the next larger
    observed length, so each bucket holds about ``1 / n_buckets`` of the data and no
    observed length sits on an edge. The first edge is 0 and the last is inf. With
    ``task`` given, every row is weighted by ``1 / (count of its task)``: each task
    counts equally, so a small task's lengths shape the edges as much as a big task's
    (one shared scheme, as the router state needs one bucket axis).

    With many tied lengths some quantiles coincide; the scheme then has fewer buckets
    and a warning says how many.

    Args:
        output_tokens: observed output lengths (> 0). Use training data only.
        n_buckets: requested number of buckets (>= 2).
        task: optional task label per row.
        name: label; default ``"quantile-<n>"`` or ``"quantile-per-task-<n>"``.

    Returns:
        The scheme.

    Raises:
        ValueError: on empty input, non-positive lengths, a length mismatch with ``task``
            or ``n_buckets < 2``.

    Example:
        >>> s = quantile_buckets([1, 2, 3, 4, 5, 6, 7, 8], 4)
        >>> s.edges_tokens
        (0.0, 2.5, 4.5, 6.5, inf)
        >>> quantile_buckets([5, 5, 50], 2, task=["a", "a", "b"]).edges_tokens
        (0.0, 27.5, inf)
    """
    if isinstance(n_buckets, bool) or not isinstance(n_buckets, int) or n_buckets < 2:
        raise ValueError(
            f"n_buckets = {n_buckets!r}; expected an int >= 2. Fix: pass e.g. n_buckets=6."
        )
    values = np.asarray(
        output_tokens.to_numpy() if isinstance(output_tokens, pl.Series) else output_tokens,
        dtype=np.float64,
    )
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"output_tokens has shape {values.shape}; expected a non-empty 1-D array of "
            "lengths. Fix: pass trace['output_tokens'] of the training split."
        )
    bad = ~np.isfinite(values) | (values <= 0)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"output_tokens has value {float(values[row])!r} at row {row}; expected finite "
            "lengths > 0. Fix: validate the trace first (routeplay.datasets.validate_trace)."
        )
    if task is None:
        weights = np.ones_like(values)
        label = name if name is not None else f"quantile-{n_buckets}"
    else:
        labels = (task if isinstance(task, pl.Series) else pl.Series(np.asarray(task))).cast(
            pl.String
        )
        if labels.len() != values.size:
            raise ValueError(
                f"task has {labels.len()} rows but output_tokens has {values.size}; expected "
                "one task label per length. Fix: pass both columns of the same frame."
            )
        counts = pl.DataFrame({"t": labels}).group_by("t").agg(pl.len().alias("n"))
        per_row = pl.DataFrame({"t": labels}).join(
            counts, on="t", how="left", maintain_order="left"
        )
        weights = 1.0 / per_row.get_column("n").to_numpy().astype(np.float64)
        label = name if name is not None else f"quantile-per-task-{n_buckets}"
    inner = _weighted_quantile_edges(values, weights, n_buckets)
    if len(inner) + 1 < n_buckets:
        warnings.warn(
            f"quantile_buckets: asked for {n_buckets} buckets but tied lengths leave only "
            f"{len(inner) + 1} distinct quantile edges; the scheme has {len(inner) + 1} buckets.",
            stacklevel=2,
        )
    return BucketScheme((0.0, *inner, math.inf), name=label)


def equal_width_buckets(
    max_tokens: float, n_buckets: int, *, name: str | None = None
) -> BucketScheme:
    """The equal-bucket baseline: ``n_buckets`` buckets of width ``max_tokens / n_buckets``.

    The top bucket is open (``[max_tokens - width, inf)``) so that a held-out length
    above the training maximum still has a bucket instead of being clipped or rejected.

    Args:
        max_tokens: the span to divide (e.g. the training split's longest output).
        n_buckets: number of buckets (>= 2).
        name: label; default ``"equal-width-<n>"``.

    Returns:
        The scheme.

    Raises:
        ValueError: on ``max_tokens <= 0`` or ``n_buckets < 2``.

    Example:
        >>> equal_width_buckets(1000, 4).edges_tokens
        (0.0, 250.0, 500.0, 750.0, inf)
    """
    if isinstance(n_buckets, bool) or not isinstance(n_buckets, int) or n_buckets < 2:
        raise ValueError(
            f"n_buckets = {n_buckets!r}; expected an int >= 2. Fix: pass e.g. n_buckets=6."
        )
    if not (np.isfinite(max_tokens) and max_tokens > 0):
        raise ValueError(
            f"max_tokens = {max_tokens!r}; expected a finite length > 0. Fix: pass e.g. "
            "int(train['output_tokens'].max())."
        )
    edges = np.linspace(0.0, float(max_tokens), n_buckets + 1)
    edges[-1] = math.inf
    label = name if name is not None else f"equal-width-{n_buckets}"
    return BucketScheme(tuple(float(e) for e in edges), name=label)
