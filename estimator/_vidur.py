"""Turn Vidur's GPU profiling tables into an iteration table (see ``_calibration``).

Vidur (Agrawal et al., MLSys 2024; github.com/microsoft/vidur) profiles one
transformer layer op by op and composes a batch's time from the pieces. The files
(``data/profiling/`` upstream; a local mirror under ``vidur_profiling/``):

- ``compute/<gpu>/<model>/mlp.csv``: median ms per layer of every *token-parallel*
  op (layer norms, QKV/O projections, RoPE, gated MLP, residual add, embedding) against
  ``num_tokens``, the batch's total token count.
- ``compute/<gpu>/<model>/attention.csv`` (absent from the mirror, too large) or the
  hand-made extract ``derived/attention_a100_llama2_7b_tp1_subsample.csv``: median ms
  per layer of the FlashAttention kernels, decode rows (``batch_size`` sequences whose
  mean context is ``kv_cache_size``) and prefill rows (one chunk of
  ``prefill_chunk_size`` new tokens on ``kv_cache_size`` cached tokens).

How Vidur composes a batch (``sklearn_execution_time_predictor`` + ``ExecutionTime``
at the snapshot 7d47513), for tensor parallelism 1 and one pipeline stage::

    n = total tokens in the batch, rounded up to a multiple of 8
    layer_ms = sum over token-parallel ops except `emb` of op_ms(n)
             + attn_prefill_ms(chunk, cached)                      (prefill requests)
             + attn_decode_ms(batch, mean_context) * (1 + f * [batch > 1])
    iteration_s = n_layers * layer_ms / 1000

``f`` is Vidur's ``attention_decode_batching_overhead_fraction`` (0.1 by default), but
Vidur applies it only to grouped-query models, whose KV heads are fewer than their
query heads (``SklearnExecutionTimePredictor.__init__``: "These overheads are only for
GQA models"); for Llama-2-7B (32 KV heads = 32 query heads) ``f = 0``. The same holds
for the 1.1 on several prefills in one batch (the tables here have one each).
:data:`ATTENTION_HEADS` lists the heads of the models read here; the fraction can also
be given explicitly (``decode_batching_overhead_fraction``).

What Vidur leaves out, and so do the tables built here (the fitted presets therefore
*under*-estimate a real server's iteration by these amounts):

- CPU overhead: scheduling, input preparation, sampling and output processing
  (``skip_cpu_overhead_modeling=True`` is Vidur's default and the mirror has no
  ``cpu_overhead/`` profiles); typically a few ms per iteration in vLLM.
- The embedding lookup (``emb``, excluded by Vidur), the LM head (vocabulary
  projection) and the softmax/sampling of the last layer.
- ``attn_kv_cache_save`` and the attention input/output reshapes (not in the extract:
  Vidur fills them with 0).
- Tensor/pipeline-parallel communication (only TP = 1 is supported here).

The reader composes *measured* points only: one decode-only iteration per decode
row of the attention table and one prefill-only iteration per prefill row. No mixed
batches are synthesised; the linear model prices them as the sum of both parts.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

__all__ = [
    "ATTENTION_HEADS",
    "DECODE_BATCHING_OVERHEAD_FRACTION",
    "TOKEN_PARALLEL_OPS",
    "VidurSources",
    "attention_scale_factors",
    "decode_batching_overhead",
    "read_vidur_profiling",
    "sha256_file",
    "vidur_sources",
]

#: The mlp.csv ops Vidur sums per layer (every op except the embedding ``emb``).
TOKEN_PARALLEL_OPS: tuple[str, ...] = (
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
    "add",
)

#: The profiled GPU and model folder read by default (the built-in presets and clock).
DEFAULT_GPU = "a100"
DEFAULT_MODEL = "meta-llama/Llama-2-7b-hf"

#: Vidur's default extra cost of batching several decode sequences in one attention call
#: (applied by Vidur to grouped-query models only; see :func:`decode_batching_overhead`).
DECODE_BATCHING_OVERHEAD_FRACTION = 0.1

#: (query heads, KV heads) per model (the models' Hugging Face configs, as in Vidur's
#: ``vidur/config/model_config.py``); Vidur's batching overheads apply when KV < query.
ATTENTION_HEADS: dict[str, tuple[int, int]] = {
    "meta-llama/Llama-2-7b-hf": (32, 32),
    "meta-llama/Llama-2-70b-hf": (64, 8),
    "meta-llama/Meta-Llama-3-8B": (32, 8),
    "meta-llama/Meta-Llama-3-70B": (64, 8),
    "codellama/CodeLlama-34b-Instruct-hf": (64, 8),
}


def decode_batching_overhead(model: str, heads: tuple[int, int] | None = None) -> float:
    """Vidur's decode-attention batching overhead for ``model``: 0.1 if grouped-query, else 0.

    Args:
        model: model name as in Vidur's profiling folders.
        heads: ``(query heads, KV heads)``; default from :data:`ATTENTION_HEADS`.

    Returns:
        :data:`DECODE_BATCHING_OVERHEAD_FRACTION` when KV heads < query heads, else 0.0.

    Raises:
        ValueError: the model's heads are unknown and not given.

    Example:
        >>> decode_batching_overhead("meta-llama/Llama-2-7b-hf")
        0.0
        >>> decode_batching_overhead("meta-llama/Meta-Llama-3-8B")
        0.1
    """
    if heads is None:
        if model not in ATTENTION_HEADS:
            raise ValueError(
                f"the attention heads of model {model!r} are unknown; expected one of "
                f"{sorted(ATTENTION_HEADS)} or heads=(query heads, KV heads). Fix: pass "
                "attention_heads=..., or decode_batching_overhead_fraction=... explicitly."
            )
        heads = ATTENTION_HEADS[model]
    n_q, n_kv = heads
    if n_q < 1 or n_kv < 1 or n_q % n_kv:
        raise ValueError(
            f"attention heads {heads!r} of {model!r}; expected positive (query, KV) counts "
            "with the query heads a multiple of the KV heads, e.g. (32, 8)."
        )
    return DECODE_BATCHING_OVERHEAD_FRACTION if n_kv < n_q else 0.0


#: Attention extracts in the data mirror that are not at the upstream path.
_DERIVED_ATTENTION: dict[tuple[str, str, int], str] = {
    ("a100", "meta-llama/Llama-2-7b-hf", 1): "derived/attention_a100_llama2_7b_tp1_subsample.csv",
}


@dataclass(frozen=True, slots=True, kw_only=True)
class VidurSources:
    """The profiling files one preset is built from, relative to the profiling dir.

    Attributes:
        mlp: the token-parallel op table of the target GPU.
        attention: the attention table used (possibly of another GPU).
        attention_gpu: the GPU the attention table was measured on.
        reference_mlp: the mlp table of ``attention_gpu`` when it differs from the
            target GPU (used to measure the attention scale factors), else None.
    """

    mlp: str
    attention: str
    attention_gpu: str
    reference_mlp: str | None = None

    def paths(self) -> tuple[str, ...]:
        """Every file used, in a stable order."""
        extra = (self.reference_mlp,) if self.reference_mlp else ()
        return (self.mlp, self.attention, *extra)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes.

    Example:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "x")
        >>> _ = open(p, "wb").write(b"abc")
        >>> sha256_file(p)[:12]
        'ba7816bf8f01'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _mlp_path(gpu: str, model: str) -> str:
    return f"compute/{gpu}/{model}/mlp.csv"


def vidur_sources(
    profiling_dir: str | Path,
    *,
    gpu: str = DEFAULT_GPU,
    model: str = DEFAULT_MODEL,
    tp: int = 1,
    attention_gpu: str | None = None,
) -> VidurSources:
    """Locate the files :func:`read_vidur_profiling` would use (raises if absent).

    The attention table is the upstream ``compute/<gpu>/<model>/attention.csv`` when
    present, else a known extract under ``derived/``.

    Example:
        >>> import tempfile, os
        >>> d = tempfile.mkdtemp()
        >>> vidur_sources(d)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: Vidur mlp table '...mlp.csv' not found for gpu='a100', ...
    """
    root = Path(profiling_dir)
    if not root.is_dir():
        raise FileNotFoundError(
            f"Vidur profiling dir {str(root)!r} not found; expected a folder holding "
            "compute/<gpu>/<model>/mlp.csv. Fix: pass e.g. ../shared/data/vidur_profiling."
        )
    if tp != 1:
        raise ValueError(
            f"tp = {tp!r}; only tensor parallelism 1 is supported (TP > 1 adds all-reduce "
            "costs from network/*.csv that this reader does not compose). Fix: pass tp=1."
        )
    mlp = _mlp_path(gpu, model)
    if not (root / mlp).is_file():
        raise FileNotFoundError(
            f"Vidur mlp table {str(root / mlp)!r} not found for gpu={gpu!r}, model={model!r}. "
            "Fix: check the gpu/model names against the folders under compute/."
        )
    att_gpu = attention_gpu or gpu
    candidates = [f"compute/{att_gpu}/{model}/attention.csv"]
    if (att_gpu, model, tp) in _DERIVED_ATTENTION:
        candidates.append(_DERIVED_ATTENTION[(att_gpu, model, tp)])
    found = [c for c in candidates if (root / c).is_file()]
    if not found:
        hint = (
            " Fix: borrow another GPU's attention with attention_gpu='a100' (scaled, "
            "see attention_scale_factors)."
            if attention_gpu is None
            else ""
        )
        raise FileNotFoundError(
            f"no attention table for gpu={att_gpu!r}, model={model!r}, tp={tp} under "
            f"{str(root)!r}; looked for {candidates}.{hint}"
        )
    reference = _mlp_path(att_gpu, model) if att_gpu != gpu else None
    if reference is not None and not (root / reference).is_file():
        raise FileNotFoundError(
            f"Vidur mlp table {str(root / reference)!r} (needed to scale {att_gpu} attention "
            f"to {gpu}) not found."
        )
    return VidurSources(mlp=mlp, attention=found[0], attention_gpu=att_gpu, reference_mlp=reference)


def _token_parallel_ms(path: Path, tp: int) -> pl.DataFrame:
    """Per-layer ms of the token-parallel ops (sum, without `emb`) per num_tokens."""
    frame = pl.read_csv(path, infer_schema_length=None)
    cols = [f"time_stats.{op}.median" for op in TOKEN_PARALLEL_OPS]
    missing = [
        c for c in [*cols, "num_tokens", "num_tensor_parallel_workers"] if c not in frame.columns
    ]
    if missing:
        raise ValueError(f"{str(path)!r} lacks Vidur mlp.csv column(s) {missing}.")
    return (
        frame.filter(pl.col("num_tensor_parallel_workers") == tp)
        .select(pl.col("num_tokens"), pl.sum_horizontal(cols).alias("mlp_ms"))
        # 2048 and 4096 were profiled twice: average the repeats
        .group_by("num_tokens")
        .agg(pl.col("mlp_ms").mean())
        .sort("num_tokens")
    )


def _mlp_at(table: pl.DataFrame, n_tokens: np.ndarray) -> np.ndarray:
    """Vidur's lookup: round up to a multiple of 8, then the profiled value (interpolated)."""
    rounded = np.ceil(n_tokens / 8.0) * 8.0
    grid = table["num_tokens"].to_numpy().astype(np.float64)
    if rounded.max() > grid.max():
        raise ValueError(
            f"batch of {int(rounded.max())} tokens exceeds the profiled range "
            f"(max num_tokens {int(grid.max())})."
        )
    return np.asarray(np.interp(rounded, grid, table["mlp_ms"].to_numpy()), dtype=np.float64)


def attention_scale_factors(
    profiling_dir: str | Path,
    *,
    gpu: str,
    attention_gpu: str,
    model: str = DEFAULT_MODEL,
    tp: int = 1,
) -> tuple[float, float]:
    """Factors that carry attention times measured on ``attention_gpu`` over to ``gpu``.

    Measured from the two GPUs' ``mlp.csv`` tables, one per regime:

    - decode attention is memory-bound (it streams the KV cache), so it is scaled by the
      ratio of the token-parallel time at small batches (num_tokens <= 64, where loading
      the weights dominates): the measured memory-bandwidth ratio;
    - prefill attention is compute-bound, so it is scaled by the ratio of the slopes
      (ms per token) of the token-parallel time over num_tokens in [1024, 4096]: the
      measured dense-GEMM throughput ratio.

    This is an estimate, not a measurement of attention on ``gpu``: FlashAttention's
    efficiency differs between GPUs (FlashAttention-2 uses a smaller share of an H100's
    peak than of an A100's), so the prefill factor is optimistic.

    Returns:
        ``(decode_factor, prefill_factor)``: multiply ``attention_gpu`` times by these.

    Example:
        >>> attention_scale_factors("/nonexistent", gpu="h100", attention_gpu="a100")
        Traceback (most recent call last):
        ...
        FileNotFoundError: Vidur mlp table '/nonexistent/compute/h100/.../mlp.csv' not found.
    """
    root = Path(profiling_dir)
    tables = []
    for g in (gpu, attention_gpu):
        p = root / _mlp_path(g, model)
        if not p.is_file():
            raise FileNotFoundError(f"Vidur mlp table {str(p)!r} not found.")
        tables.append(_token_parallel_ms(p, tp))
    target, source = tables
    small = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 24.0, 32.0, 40.0, 48.0, 56.0, 64.0])

    def small_mean(t: pl.DataFrame) -> float:
        sel = t.filter(pl.col("num_tokens").is_in(small.astype(np.int64).tolist()))
        return float(sel["mlp_ms"].mean())  # type: ignore[arg-type]

    def slope(t: pl.DataFrame) -> float:
        sel = t.filter(pl.col("num_tokens").is_between(1024, 4096))
        x = sel["num_tokens"].to_numpy().astype(np.float64)
        return float(np.polyfit(x, sel["mlp_ms"].to_numpy(), 1)[0])

    return small_mean(target) / small_mean(source), slope(target) / slope(source)


def _attention_table(root: Path, src: VidurSources, tp: int) -> pl.DataFrame:
    """The attention table of ``src`` (rows of tensor parallelism ``tp``), columns checked."""
    att = pl.read_csv(
        root / src.attention,
        infer_schema_length=None,
        schema_overrides={
            "time_stats.attn_decode.median": pl.Float64,
            "time_stats.attn_prefill.median": pl.Float64,
        },
    ).filter(pl.col("num_tensor_parallel_workers") == tp)
    need = ["batch_size", "prefill_chunk_size", "kv_cache_size", "is_prefill"]
    missing = [c for c in need if c not in att.columns]
    if missing:
        raise ValueError(f"{src.attention!r} lacks Vidur attention column(s) {missing}.")
    return att


def read_vidur_profiling(
    profiling_dir: str | Path,
    *,
    gpu: str = DEFAULT_GPU,
    model: str = DEFAULT_MODEL,
    tp: int = 1,
    n_layers: int = 32,
    attention_gpu: str | None = None,
    decode_batching_overhead_fraction: float | None = None,
    attention_heads: tuple[int, int] | None = None,
) -> pl.DataFrame:
    """Compose Vidur's per-layer op timings into whole-iteration times (an iteration table).

    One row per attention measurement (module docstring for the composition rule and
    what it leaves out):

    - decode row (``batch_size`` = B, ``kv_cache_size`` = K): ``n_decode_seqs = B``,
      ``decode_context_tokens = B * K``, batch tokens B;
    - prefill row (``prefill_chunk_size`` = P, ``kv_cache_size`` = C):
      ``prefill_tokens = P``, ``prefill_sq_tokens = P * (P + C)``, batch tokens P.

    ``iteration_s = n_layers * (token-parallel ms at the rounded batch tokens + attention
    ms) / 1000``, decode attention x (1 + f) for batches of more than one sequence, as
    Vidur composes it (``f`` = 0.1 for grouped-query models, 0 otherwise). Token counts
    between profiled grid points are interpolated linearly. Like Vidur, the times exclude
    CPU overhead (scheduling, input preparation, sampling), the embedding, the LM head and
    sampling, and TP communication.

    Args:
        profiling_dir: folder laid out like Vidur's ``data/profiling``.
        gpu: GPU of the token-parallel table (``a100``, ``h100``, ...).
        model: model folder under ``compute/<gpu>/``.
        tp: tensor-parallel degree; only 1 is supported.
        n_layers: transformer layers of the model (32 for Llama-2-7B).
        attention_gpu: take attention timings from this GPU instead (for GPUs without an
            attention table); they are multiplied by :func:`attention_scale_factors`.
        decode_batching_overhead_fraction: the decode batching overhead ``f``; default
            (None) Vidur's rule, :func:`decode_batching_overhead` of ``model`` (0 for
            Llama-2-7B, 0.1 for grouped-query models).
        attention_heads: ``(query heads, KV heads)`` for a model missing from
            :data:`ATTENTION_HEADS` (only read when the fraction is not given).

    Returns:
        A frame with the iteration-table columns plus ``phase`` ("prefill"/"decode"),
        ``batch_size``, ``prefill_chunk_size``, ``kv_cache_size``, ``batch_tokens``,
        ``mlp_ms_per_layer`` and ``attention_ms_per_layer``.

    Raises:
        FileNotFoundError: a needed table is missing (the message says which).
        ValueError: unsupported ``tp``, malformed tables or bad arguments.

    Example:
        >>> read_vidur_profiling("/nonexistent")
        Traceback (most recent call last):
        ...
        FileNotFoundError: Vidur profiling dir '/nonexistent' not found; expected a folder ...
    """
    if n_layers < 1:
        raise ValueError(f"n_layers = {n_layers!r}; expected a positive layer count (32).")
    if decode_batching_overhead_fraction is None:
        decode_batching_overhead_fraction = decode_batching_overhead(model, attention_heads)
    if decode_batching_overhead_fraction < 0:
        raise ValueError(
            f"decode_batching_overhead_fraction = {decode_batching_overhead_fraction!r}; "
            "expected >= 0 (Vidur's default is 0.1)."
        )
    root = Path(profiling_dir)
    src = vidur_sources(root, gpu=gpu, model=model, tp=tp, attention_gpu=attention_gpu)
    mlp = _token_parallel_ms(root / src.mlp, tp)
    if mlp.height == 0:
        raise ValueError(f"{src.mlp!r} has no rows with num_tensor_parallel_workers == {tp}.")
    if src.reference_mlp is not None:
        decode_factor, prefill_factor = attention_scale_factors(
            root, gpu=gpu, attention_gpu=src.attention_gpu, model=model, tp=tp
        )
    else:
        decode_factor = prefill_factor = 1.0

    att = _attention_table(root, src, tp)

    dec = att.filter(~pl.col("is_prefill"))
    b = dec["batch_size"].to_numpy().astype(np.float64)
    k = dec["kv_cache_size"].to_numpy().astype(np.float64)
    dec_att = (
        dec["time_stats.attn_decode.median"].to_numpy()
        * decode_factor
        * (1.0 + decode_batching_overhead_fraction * (b > 1))
    )
    pre = att.filter(pl.col("is_prefill"))
    p = pre["prefill_chunk_size"].to_numpy().astype(np.float64)
    c = pre["kv_cache_size"].to_numpy().astype(np.float64)
    pre_att = pre["time_stats.attn_prefill.median"].to_numpy() * prefill_factor
    if np.isnan(dec_att).any() or np.isnan(pre_att).any():
        raise ValueError(f"{src.attention!r} has empty attention medians.")

    def rows(
        phase: str,
        batch: np.ndarray,
        chunk: np.ndarray,
        kv: np.ndarray,
        tokens: np.ndarray,
        att_ms: np.ndarray,
        feats: dict[str, np.ndarray],
    ) -> pl.DataFrame:
        mlp_ms = _mlp_at(mlp, tokens)
        return pl.DataFrame(
            {
                **feats,
                "iteration_s": n_layers * (mlp_ms + att_ms) / 1000.0,
                "phase": [phase] * tokens.size,
                "batch_size": batch.astype(np.int64),
                "prefill_chunk_size": chunk.astype(np.int64),
                "kv_cache_size": kv.astype(np.int64),
                "batch_tokens": tokens.astype(np.int64),
                "mlp_ms_per_layer": mlp_ms,
                "attention_ms_per_layer": att_ms,
            }
        )

    zeros_p, zeros_d = np.zeros_like(p), np.zeros_like(b)
    prefill = rows(
        "prefill",
        np.ones_like(p),
        p,
        c,
        p,
        pre_att,
        {
            "prefill_tokens": p,
            "prefill_sq_tokens": p * (p + c),
            "n_decode_seqs": zeros_p,
            "decode_context_tokens": zeros_p,
        },
    )
    decode = rows(
        "decode",
        b,
        zeros_d,
        k,
        b,
        dec_att,
        {
            "prefill_tokens": zeros_d,
            "prefill_sq_tokens": zeros_d,
            "n_decode_seqs": b,
            "decode_context_tokens": b * k,
        },
    )
    return pl.concat([prefill, decode])


def _short_model(model: str) -> str:
    """``meta-llama/Llama-2-7b-hf`` -> ``llama-2-7b-hf`` (for labels)."""
    return re.sub(r"^.*/", "", model).lower()
