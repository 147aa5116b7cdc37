"""The linear prefill/decode latency model of one model instance.

One *iteration* of continuous batching processes some prefill work (new prompt
tokens, possibly a chunk of a longer prompt) and one decode token for every running
sequence. Its duration is modelled as

    t_iter = intercept_s
           + prefill_batch_s              * [batch has prefill work]
           + prefill_s_per_token          * prefill_tokens
           + prefill_s_per_token2         * prefill_sq_tokens
           + decode_s_per_seq             * n_decode_seqs
           + decode_s_per_context_token   * decode_context_tokens

where ``prefill_sq_tokens`` is the attention work of the prefill chunks,
``sum(chunk * (chunk + cached))`` over the chunks in the batch (``cached`` = prompt
tokens of that request already in the KV cache); without chunking it is
``sum(prompt_tokens**2)``. ``decode_context_tokens`` is the sum over decode sequences of
their context length (prompt + tokens generated so far), i.e. the KV tokens the decode
attention reads. With ``prefill_batch_s = 0`` this is exactly the model of docs/design.md.

Every method accepts numpy arrays and broadcasts, so an engine or a router can price
many candidate batches (or instances) in one call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

__all__ = ["ArrayLike", "LinearLatencyModel"]

ArrayLike: TypeAlias = float | int | npt.NDArray[np.float64] | npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True, kw_only=True)
class LinearLatencyModel:
    """Iteration time of one instance as a linear function of the batch's composition.

    Attributes:
        intercept_s: fixed cost of every iteration (seconds).
        prefill_s_per_token: cost per prefill (prompt) token in the batch.
        prefill_s_per_token2: cost per unit of prefill attention work (see module doc).
        decode_s_per_seq: cost per sequence that decodes one token in the iteration.
        decode_s_per_context_token: cost per KV token read by decode attention.
        prefill_batch_s: extra fixed cost of an iteration that contains prefill work.
        name: a label (preset name or "custom").

    Example:
        >>> m = LinearLatencyModel(intercept_s=0.01, prefill_s_per_token=1e-4,
        ...                        prefill_s_per_token2=0.0, decode_s_per_seq=1e-3,
        ...                        decode_s_per_context_token=0.0)
        >>> round(m.iteration_time_s(prefill_tokens=100, prefill_sq_tokens=100**2,
        ...                          n_decode_seqs=2, decode_context_tokens=500), 6)
        0.022
        >>> m.prefill_time_s(np.array([100, 200])).round(6).tolist()
        [0.02, 0.03]
    """

    intercept_s: float
    prefill_s_per_token: float
    prefill_s_per_token2: float
    decode_s_per_seq: float
    decode_s_per_context_token: float
    prefill_batch_s: float = 0.0
    name: str = "custom"

    def __post_init__(self) -> None:
        for field_name in (
            "intercept_s",
            "prefill_s_per_token",
            "prefill_s_per_token2",
            "decode_s_per_seq",
            "decode_s_per_context_token",
            "prefill_batch_s",
        ):
            value = getattr(self, field_name)
            if not np.isfinite(value):
                raise ValueError(
                    f"LinearLatencyModel.{field_name} = {value!r}; expected a finite number "
                    "of seconds. Fix: check the coefficients or the fit that produced them."
                )
        if self.intercept_s < 0 or self.prefill_s_per_token < 0 or self.decode_s_per_seq < 0:
            raise ValueError(
                "LinearLatencyModel has a negative base cost: "
                f"intercept_s={self.intercept_s!r}, prefill_s_per_token="
                f"{self.prefill_s_per_token!r}, decode_s_per_seq={self.decode_s_per_seq!r}; "
                "expected values >= 0 so that iterations take positive time. Fix: refit on "
                "data covering the batch sizes you replay."
            )
        for field_name in ("prefill_s_per_token2", "decode_s_per_context_token"):
            value = getattr(self, field_name)
            if value < 0:
                raise ValueError(
                    f"LinearLatencyModel.{field_name} = {value!r}; expected a value >= 0 (more "
                    "work can never make an iteration faster, and a negative slope gives "
                    "negative iteration times on large batches). Fix: use a coefficient >= 0 "
                    "or refit on data covering the batch sizes you replay."
                )
        if self.intercept_s + self.prefill_batch_s < 0:
            raise ValueError(
                "LinearLatencyModel: intercept_s + prefill_batch_s = "
                f"{self.intercept_s + self.prefill_batch_s!r} (intercept_s={self.intercept_s!r}, "
                f"prefill_batch_s={self.prefill_batch_s!r}); expected >= 0 so that an iteration "
                "with prefill work has a non-negative fixed cost (prefill_batch_s may be "
                "negative only down to -intercept_s). Fix: raise prefill_batch_s or refit."
            )

    @classmethod
    def from_throughput(cls, tokens_per_s: float, *, name: str | None = None) -> LinearLatencyModel:
        """A server that processes ``tokens_per_s`` tokens per second, shared by its batch.

        The servers of System B's heterogeneous cluster (docs/design.md) are of this kind:
        a request alone takes ``(prompt + output - 1) / tokens_per_s`` seconds (the
        prefill iteration yields the first output token); concurrent requests share the
        rate.

        Example:
            >>> m = LinearLatencyModel.from_throughput(5000.0)
            >>> round(float(m.request_time_s(1000, 250)), 6)
            0.2498
        """
        if not tokens_per_s > 0:
            raise ValueError(
                f"tokens_per_s = {tokens_per_s!r}; expected a positive rate. Fix: pass e.g. 3000.0."
            )
        per_token = 1.0 / tokens_per_s
        return cls(
            intercept_s=0.0,
            prefill_s_per_token=per_token,
            prefill_s_per_token2=0.0,
            decode_s_per_seq=per_token,
            decode_s_per_context_token=0.0,
            name=name or f"throughput-{tokens_per_s:g}tok/s",
        )

    def iteration_time_s(
        self,
        *,
        prefill_tokens: ArrayLike,
        prefill_sq_tokens: ArrayLike,
        n_decode_seqs: ArrayLike,
        decode_context_tokens: ArrayLike,
    ) -> npt.NDArray[np.float64] | float:
        """Duration of one iteration (vectorised over all arguments).

        Returns 0 for an empty batch (no prefill tokens and no decode sequences).
        """
        prefill = np.asarray(prefill_tokens, dtype=np.float64)
        n_dec = np.asarray(n_decode_seqs, dtype=np.float64)
        t = (
            self.intercept_s
            + self.prefill_batch_s * (prefill > 0)
            + self.prefill_s_per_token * prefill
            + self.prefill_s_per_token2 * np.asarray(prefill_sq_tokens, dtype=np.float64)
            + self.decode_s_per_seq * n_dec
            + self.decode_s_per_context_token * np.asarray(decode_context_tokens, dtype=np.float64)
        )
        t = np.where((prefill <= 0) & (n_dec <= 0), 0.0, t)
        return float(t) if t.ndim == 0 else t

    def prefill_time_s(self, prompt_tokens: ArrayLike) -> npt.NDArray[np.float64] | float:
        """Time of an iteration that prefills one whole prompt and nothing else."""
        p = np.asarray(prompt_tokens, dtype=np.float64)
        return self.iteration_time_s(
            prefill_tokens=p, prefill_sq_tokens=p * p, n_decode_seqs=0, decode_context_tokens=0
        )

    def decode_iteration_time_s(
        self, n_seqs: ArrayLike, context_tokens: ArrayLike
    ) -> npt.NDArray[np.float64] | float:
        """Time of a decode-only iteration with ``n_seqs`` sequences and that total context."""
        return self.iteration_time_s(
            prefill_tokens=0,
            prefill_sq_tokens=0,
            n_decode_seqs=n_seqs,
            decode_context_tokens=context_tokens,
        )

    def decode_run_time_s(
        self, n_seqs: ArrayLike, context_tokens: ArrayLike, n_iterations: ArrayLike
    ) -> npt.NDArray[np.float64] | float:
        """Total time of ``n_iterations`` back-to-back decode-only iterations, in closed form.

        Each iteration adds one token to every one of the ``n_seqs`` sequences, so the
        context grows by ``n_seqs`` per iteration and the iteration times form an
        arithmetic series: ``k * t(n, C) + a_kv * n * k (k - 1) / 2``.

        Example:
            >>> m = LinearLatencyModel(intercept_s=0.01, prefill_s_per_token=0.0,
            ...     prefill_s_per_token2=0.0, decode_s_per_seq=0.001,
            ...     decode_s_per_context_token=1e-5)
            >>> ts = [m.decode_iteration_time_s(3, 300 + 3 * i) for i in range(4)]
            >>> bool(np.isclose(m.decode_run_time_s(3, 300, 4), sum(ts)))
            True
        """
        n = np.asarray(n_seqs, dtype=np.float64)
        k = np.asarray(n_iterations, dtype=np.float64)
        first = np.asarray(self.decode_iteration_time_s(n, context_tokens), dtype=np.float64)
        t = k * first + self.decode_s_per_context_token * n * k * (k - 1.0) / 2.0
        t = np.where(k > 0, t, 0.0)
        return float(t) if t.ndim == 0 else t

    def request_time_s(
        self,
        prompt_tokens: ArrayLike,
        output_tokens: ArrayLike,
        *,
        n_other_seqs: ArrayLike = 0,
        other_context_tokens: ArrayLike = 0,
    ) -> npt.NDArray[np.float64] | float:
        """Estimated service time of one request on an instance, from admission to last token.

        The request's prefill iteration is priced with the other sequences decoding
        beside it, then its ``output_tokens - 1`` decode iterations with the other
        sequences' count and context held fixed (a steady-state approximation for
        routers; the replay engine simulates the real batch).
        """
        p = np.asarray(prompt_tokens, dtype=np.float64)
        n_out = np.asarray(output_tokens, dtype=np.float64)
        others = np.asarray(n_other_seqs, dtype=np.float64)
        other_ctx = np.asarray(other_context_tokens, dtype=np.float64)
        prefill = self.iteration_time_s(
            prefill_tokens=p,
            prefill_sq_tokens=p * p,
            n_decode_seqs=others,
            decode_context_tokens=other_ctx,
        )
        k = np.maximum(n_out - 1.0, 0.0)
        # the request's own context grows by one per iteration: p + 1, p + 2, ...
        first_decode = self.decode_iteration_time_s(others + 1.0, other_ctx + p + 1.0)
        decode = (
            k * np.asarray(first_decode) + self.decode_s_per_context_token * k * (k - 1.0) / 2.0
        )
        t = np.asarray(prefill) + decode
        return float(t) if t.ndim == 0 else t
