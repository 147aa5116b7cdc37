"""Named latency-model presets with their provenance.

The presets live in ``_data/presets.json`` (coefficients, fit statistics, source-file
sha256s, the command that produced them). That file is written by exactly one
command, which reads Vidur's profiling tables and refits::

    routeplay estimator fit-presets --profiling-dir ../shared/data/vidur_profiling

- ``llama2-7b/a100``: fitted (WLS, relative errors) to Vidur's A100 Llama-2-7B tables:
  the token-parallel ops of ``mlp.csv`` plus the hand-made attention extract.
- ``llama2-7b/h100``: H100 ``mlp.csv`` (measured) plus the *A100* attention extract
  scaled to the H100 by factors measured from the two ``mlp.csv`` tables (there is no
  H100 attention data); see :func:`~routeplay.estimator._vidur.attention_scale_factors`.
- ``llama2-7b/v100-scaled``: the A100 fit carried to a V100 by datasheet ratios of
  compute (prefill terms) and memory bandwidth (intercept and decode terms) — an
  estimate for replaying the paper's V100 testbed at realistic speed.
- ``llama2-7b/v100-paper``: the seed paper's published gradients (V100, vLLM):
  grad1 = 3.2e-4 s per prompt token and grad2 = 3.3e-5 s per context token of the
  decoding batch, with the intercept set so that one sequence at 256 context tokens
  decodes in the paper's ~0.035 s (see its ``notes``).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import polars as pl

from ._calibration import LATENCY_TERMS, fit_latency_model, score_latency_model
from ._latency import LinearLatencyModel
from ._vidur import (
    DECODE_BATCHING_OVERHEAD_FRACTION,
    DEFAULT_MODEL,
    attention_scale_factors,
    decode_batching_overhead,
    read_vidur_profiling,
    sha256_file,
    vidur_sources,
)

__all__ = [
    "PRESETS_COMMAND",
    "PresetInfo",
    "build_presets_document",
    "get_preset",
    "list_presets",
    "preset_info",
]

#: The one command that regenerates ``_data/presets.json``.
PRESETS_COMMAND = "routeplay estimator fit-presets --profiling-dir ../shared/data/vidur_profiling"
_FORMAT = "routeplay-latency-presets/1"
_VIDUR_SNAPSHOT = "microsoft/vidur@7d47513363ec447a741ac5e47241580b47724fbf (data/profiling/)"
_MODEL = DEFAULT_MODEL
_FIT_OPTIONS: dict[str, Any] = {
    "method": "wls",
    "weights": "1/iteration_s^2 (relative errors)",
    "cov_type": "HC3",
    "seed": 0,
    "test_fraction": 0.2,
}
# The paper's gradients (Jain et al., EuroMLSys 2025) and the reference decode batch.
_GRAD1_S_PER_TOKEN = 3.2e-4
_GRAD2_S_PER_CONTEXT_TOKEN = 3.3e-5
_PAPER_DECODE_ITERATION_S = 0.035
_PAPER_REFERENCE_CONTEXT_TOKENS = 256
_MODEL_FIELDS = ("intercept_s", *LATENCY_TERMS.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class PresetInfo:
    """Provenance of one preset.

    Attributes:
        name: preset name, e.g. ``"llama2-7b/a100"``.
        kind: ``"vidur-fit"`` (fitted to profiling tables), ``"paper"`` (published) or
            ``"scaled"`` (another preset carried over by datasheet ratios).
        description: one line on what the preset models.
        model: the latency model :func:`get_preset` returns.
        sources: ``(path relative to the profiling dir, sha256)`` of each input file.
        method: fit method (None for published presets).
        r_squared: R^2 of the fit on its training rows as statsmodels reports it
            (weighted for WLS); None for published presets.
        heldout_mape: mean absolute percentage error on the held-out rows.
        n_train: training rows of the fit.
        n_test: held-out rows of the fit.
        phase_scores: per phase (``prefill``/``decode``), unweighted errors of the final
            model on every row of the table: ``n_rows``, ``r_squared``, ``mape``,
            ``p95_abs_rel``.
        coefficients: per fitted term ``(term, estimate, ci_low, ci_high)`` in seconds.
        command: the command that regenerated the preset file.
        generated_on: ISO date of that run.
        notes: caveats and derivations (what the tables leave out, scalings, choices).

    Example:
        >>> info = preset_info("llama2-7b/a100")
        >>> info.kind, info.r_squared > 0.99
        ('vidur-fit', True)
        >>> info.to_frame().columns
        ['term', 'estimate', 'ci_low', 'ci_high']
    """

    name: str
    kind: str
    description: str
    model: LinearLatencyModel
    sources: tuple[tuple[str, str], ...]
    method: str | None
    r_squared: float | None
    heldout_mape: float | None
    n_train: int | None
    n_test: int | None
    phase_scores: Mapping[str, Mapping[str, float]]
    coefficients: tuple[tuple[str, float, float, float], ...]
    command: str
    generated_on: str
    notes: tuple[str, ...]

    def to_frame(self) -> pl.DataFrame:
        """The fitted coefficients with their 95% CIs (empty for published presets)."""
        return pl.DataFrame(
            {
                "term": [c[0] for c in self.coefficients],
                "estimate": [c[1] for c in self.coefficients],
                "ci_low": [c[2] for c in self.coefficients],
                "ci_high": [c[3] for c in self.coefficients],
            },
            schema={
                "term": pl.String,
                "estimate": pl.Float64,
                "ci_low": pl.Float64,
                "ci_high": pl.Float64,
            },
        )

    def describe(self) -> str:
        """Multi-line human-readable provenance."""
        m = self.model
        lines = [
            f"{self.name} ({self.kind}): {self.description}",
            f"  t_iter = {m.intercept_s * 1e3:.4g} ms {m.prefill_batch_s * 1e3:+.4g} ms"
            f"*[prefill] + {m.prefill_s_per_token * 1e3:.4g} ms/token"
            f" + {m.prefill_s_per_token2 * 1e3:.4g} ms/token^2"
            f" + {m.decode_s_per_seq * 1e3:.4g} ms/seq"
            f" + {m.decode_s_per_context_token * 1e3:.4g} ms/context token",
        ]
        if self.r_squared is not None:
            lines.append(
                f"  fit: {self.method}, R^2 {self.r_squared:.4f}, held-out MAPE "
                f"{self.heldout_mape:.2%}, n_train {self.n_train}, n_test {self.n_test}"
            )
        for phase, s in self.phase_scores.items():
            lines.append(
                f"  {phase}: n={int(s['n_rows'])}, R^2 {s['r_squared']:.4f}, "
                f"MAPE {s['mape']:.2%}, p95 |err| {s['p95_abs_rel']:.2%}"
            )
        lines += [f"  source: {p} sha256={h}" for p, h in self.sources]
        lines.append(f"  regenerated by: {self.command} (on {self.generated_on})")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _presets_path() -> Path:
    return Path(str(resources.files("routeplay.estimator").joinpath("_data", "presets.json")))


@lru_cache(maxsize=1)
def _document() -> dict[str, Any]:
    path = _presets_path()
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if doc.get("format") != _FORMAT:
        raise ValueError(
            f"{str(path)!r} has format {doc.get('format')!r}; expected {_FORMAT!r}. "
            f"Fix: regenerate it with `{PRESETS_COMMAND}`."
        )
    return doc


def list_presets() -> list[str]:
    """Names of the available presets, sorted.

    Example:
        >>> list_presets()  # doctest: +NORMALIZE_WHITESPACE
        ['llama2-7b/a100', 'llama2-7b/a100-vidur', 'llama2-7b/h100', 'llama2-7b/v100-paper',
         'llama2-7b/v100-scaled']
    """
    return sorted(_document()["presets"])


def _entry(name: str) -> dict[str, Any]:
    presets: dict[str, Any] = _document()["presets"]
    if name not in presets:
        close = difflib.get_close_matches(str(name), list(presets), n=1, cutoff=0.5)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(
            f"unknown latency preset {name!r}; valid presets are {sorted(presets)}.{hint}"
        )
    entry: dict[str, Any] = presets[name]
    return entry


def get_preset(name: str) -> LinearLatencyModel:
    """The latency model of a named preset.

    Args:
        name: one of :func:`list_presets`.

    Returns:
        A :class:`LinearLatencyModel` whose ``name`` is the preset name.

    Raises:
        ValueError: unknown name (the message lists the valid names and a close match).

    Example:
        >>> m = get_preset("llama2-7b/a100")
        >>> 0.005 < m.decode_iteration_time_s(1, 256) < 0.02
        True
        >>> get_preset("llama2-7b/a10")
        Traceback (most recent call last):
        ...
        ValueError: unknown latency preset 'llama2-7b/a10'; valid presets are [...]. Did you mean...
    """
    entry = _entry(name)
    return LinearLatencyModel(name=name, **entry["model"])


def preset_info(name: str) -> PresetInfo:
    """Provenance of a named preset: sources and hashes, fit statistics, command, date.

    Example:
        >>> info = preset_info("llama2-7b/v100-paper")
        >>> info.kind, info.sources, round(info.model.prefill_s_per_token, 6)
        ('paper', (), 0.00032)
    """
    entry = _entry(name)
    doc = _document()
    fit = entry.get("fit")
    return PresetInfo(
        name=name,
        kind=entry["kind"],
        description=entry["description"],
        model=get_preset(name),
        sources=tuple((s["path"], s["sha256"]) for s in entry["sources"]),
        method=fit["method"] if fit else None,
        r_squared=fit["r_squared"] if fit else None,
        heldout_mape=fit["heldout_mape"] if fit else None,
        n_train=fit["n_train"] if fit else None,
        n_test=fit["n_test"] if fit else None,
        phase_scores=dict(fit["by_phase"]) if fit else {},
        coefficients=tuple(
            (c["term"], c["estimate"], c["ci_low"], c["ci_high"]) for c in fit["coefficients"]
        )
        if fit
        else (),
        command=doc["command"],
        generated_on=doc["generated_on"],
        notes=tuple(entry["notes"]),
    )


# ---------------------------------------------------------------- regeneration


def _model_dict(model: LinearLatencyModel) -> dict[str, float]:
    return {f: float(getattr(model, f)) for f in _MODEL_FIELDS}


def _vidur_entry(
    root: Path, *, gpu: str, attention_gpu: str | None, name: str, decode_overhead: float
) -> dict[str, Any]:
    src = vidur_sources(root, gpu=gpu, model=_MODEL, attention_gpu=attention_gpu)
    table = read_vidur_profiling(
        root,
        gpu=gpu,
        model=_MODEL,
        attention_gpu=attention_gpu,
        decode_batching_overhead_fraction=decode_overhead,
    )
    fit = fit_latency_model(
        table,
        method="wls",
        cov_type=_FIT_OPTIONS["cov_type"],
        seed=_FIT_OPTIONS["seed"],
        test_fraction=_FIT_OPTIONS["test_fraction"],
        name=name,
    )
    by_phase = {}
    for phase in ("prefill", "decode"):
        s = score_latency_model(fit.model, table.filter(pl.col("phase") == phase))
        by_phase[phase] = {
            "n_rows": s.n_rows,
            "r_squared": s.r_squared,
            "mape": s.mape,
            "p95_abs_rel": s.p95_abs_rel,
        }
    roles = {
        src.mlp: f"token-parallel ops ({gpu})",
        src.attention: f"attention ({src.attention_gpu})",
    }
    if src.reference_mlp:
        roles[src.reference_mlp] = (
            f"token-parallel ops ({src.attention_gpu}), for the scale factors"
        )
    vidur_rule = decode_batching_overhead(_MODEL)
    if decode_overhead == vidur_rule:
        overhead_note = (
            f"decode attention x{1.0 + decode_overhead:g} for batch > 1, Vidur's own rule: its "
            "0.1 batching overhead applies to grouped-query models only and Llama-2-7B has "
            "32 KV heads = 32 query heads"
        )
    else:
        overhead_note = (
            f"decode attention x{1.0 + decode_overhead:g} for batch > 1, an explicit "
            f"coefficient (Vidur's rule gives x{1.0 + vidur_rule:g} for Llama-2-7B, which has "
            "no grouped-query attention; kept so that results made with this preset stay "
            "comparable; the -vidur preset follows Vidur's rule)"
        )
    notes = [
        f"Vidur data: {_VIDUR_SNAPSHOT}; iteration = 32 layers x (sum of the 9 mlp.csv op "
        "medians except emb at the batch tokens rounded up to 8 + attention median, "
        f"{overhead_note}), TP=1.",
        "Leaves out (as Vidur does): CPU overhead (scheduling, input preparation, sampling, "
        "output processing), embedding, LM head and sampling, kv-cache save kernel. Real "
        "servers are slower by these (typically a few ms per iteration).",
        "Decode attention rows cover batch 1-128 at contexts 32-4032; prefill rows chunks "
        "64-4096 on 0-4032 cached tokens (a ~9%/~15% hand-made subsample of Vidur's "
        "attention.csv, see the data README). Extrapolation beyond that is unvalidated.",
        "Linear fit ignores the weight-loading floor: token-parallel time is flat below "
        "~100 tokens, so small prefills are priced by a line through larger ones.",
    ]
    if src.reference_mlp:
        dec, pre = attention_scale_factors(root, gpu=gpu, attention_gpu=src.attention_gpu)
        notes.append(
            f"Attention NOT measured on {gpu}: the {src.attention_gpu} extract scaled by "
            f"{dec:.4f} (decode, memory-bound: ratio of token-parallel time at <= 64 tokens) "
            f"and {pre:.4f} (prefill, compute-bound: ratio of ms/token slopes over 1024-4096 "
            "tokens), both measured from the two mlp.csv files. An estimate: FlashAttention-2 "
            "uses a smaller share of an H100's peak, so prefill attention is likely optimistic."
        )
    return {
        "kind": "vidur-fit",
        "description": f"Llama-2-7B, 1x {gpu.upper()}, TP=1, fitted to Vidur profiling tables"
        + ("" if decode_overhead else " as Vidur composes them (no decode batching overhead)"),
        "model": _model_dict(fit.model),
        "fit": {
            **_FIT_OPTIONS,
            "r_squared": fit.r_squared,
            "train_mape": fit.train.mape,
            "heldout_mape": fit.heldout_mape,
            "heldout_p95_abs_rel": fit.test.p95_abs_rel if fit.test else None,
            "n_train": fit.n_train,
            "n_test": fit.n_test,
            "coefficients": [
                {"term": t, "estimate": c, "std_error": se, "ci_low": lo, "ci_high": hi}
                for t, c, se, lo, hi in zip(
                    fit.terms,
                    fit.coefficients,
                    fit.std_errors,
                    fit.ci_low,
                    fit.ci_high,
                    strict=True,
                )
            ],
            "by_phase": by_phase,
        },
        "sources": [
            {"path": p, "sha256": sha256_file(root / p), "role": roles[p]} for p in src.paths()
        ],
        "notes": notes,
    }


def _paper_entry() -> dict[str, Any]:
    intercept = (
        _PAPER_DECODE_ITERATION_S - _GRAD2_S_PER_CONTEXT_TOKEN * _PAPER_REFERENCE_CONTEXT_TOKENS
    )
    model = LinearLatencyModel(
        intercept_s=intercept,
        prefill_s_per_token=_GRAD1_S_PER_TOKEN,
        prefill_s_per_token2=0.0,
        decode_s_per_seq=0.0,
        decode_s_per_context_token=_GRAD2_S_PER_CONTEXT_TOKEN,
        prefill_batch_s=0.0,
    )
    return {
        "kind": "paper",
        "description": "Llama-2-7B on a V100 with vLLM, from the seed paper's published gradients",
        "model": _model_dict(model),
        "fit": None,
        "sources": [],
        "notes": [
            "Jain et al., 'Intelligent Router for LLM Workloads' (EuroMLSys 2025): grad1 = "
            "3.2e-4 s per prompt token (prefill), grad2 = 3.3e-5 (decode); no fit data or "
            "intercepts were published.",
            "grad1 -> prefill_s_per_token (linear prefill, no quadratic term: the paper's "
            "gradient is a slope in prompt tokens).",
            "grad2 -> decode_s_per_context_token: the paper's decode impact multiplies grad2 "
            "by sum_j (p_j + d_j), the tokens held by the requests on the instance, i.e. the "
            "KV context the decode iteration reads. No per-sequence term is published "
            "(decode_s_per_seq = 0).",
            f"intercept_s = {_PAPER_DECODE_ITERATION_S} - grad2 x "
            f"{_PAPER_REFERENCE_CONTEXT_TOKENS} = {intercept:.6f} s: the paper's ~0.035 s V100 "
            "decode iteration (5 s heavy-decode threshold ~ 143 tokens) read as one sequence "
            f"at a typical {_PAPER_REFERENCE_CONTEXT_TOKENS}-token context. prefill_batch_s = 0: "
            "a prefill iteration pays the same fixed cost (weights are read either way).",
            "Caveat: 3.3e-5 s per context token is ~50x what V100 memory bandwidth implies "
            "for reading Llama-2-7B's KV cache (0.5 MB/token at 900 GB/s ~ 5.8e-7 s), so this "
            "preset makes decode iterations grow steeply with load (10 sequences x 500 tokens "
            "-> 0.19 s). It reproduces the paper's estimator, not a measured V100.",
        ],
    }


# Datasheet peak figures (dense fp16 tensor TFLOP/s; HBM GB/s) used to carry the A100
# fit over to a V100 when no V100 profile exists: A100-SXM4-80GB vs V100-SXM2-32GB.
_A100_TFLOPS, _V100_TFLOPS = 312.0, 125.0
_A100_GBPS, _V100_GBPS = 2039.0, 900.0


def _scaled_entry(base: Mapping[str, Any], *, base_name: str) -> dict[str, Any]:
    compute = _A100_TFLOPS / _V100_TFLOPS
    memory = _A100_GBPS / _V100_GBPS
    model = dict(base["model"])
    scaled = {
        "intercept_s": model["intercept_s"] * memory,
        "prefill_batch_s": model["prefill_batch_s"] * memory,
        "prefill_s_per_token": model["prefill_s_per_token"] * compute,
        "prefill_s_per_token2": model["prefill_s_per_token2"] * compute,
        "decode_s_per_seq": model["decode_s_per_seq"] * memory,
        "decode_s_per_context_token": model["decode_s_per_context_token"] * memory,
    }
    return {
        "kind": "scaled",
        "description": (
            "Llama-2-7B on a V100, estimated: the A100 fit scaled by datasheet ratios "
            "(no V100 profile is available)"
        ),
        "model": scaled,
        "fit": None,
        "sources": list(base.get("sources", [])),
        "notes": [
            f"Derived from {base_name}: compute-bound prefill terms x {compute:.4f} "
            f"(A100 {_A100_TFLOPS:g} / V100 {_V100_TFLOPS:g} dense fp16 TFLOP/s), memory-bound "
            f"terms (intercept = weight reads, per-sequence and KV-context decode costs) x "
            f"{memory:.4f} (HBM {_A100_GBPS:g} / {_V100_GBPS:g} GB/s).",
            "An estimate, not a measurement: use it to replay the paper's V100 testbed at "
            "realistic speed; llama2-7b/v100-paper keeps the paper's own gradients (whose "
            "decode slope is ~50x the V100's memory-bandwidth cost) for its estimator.",
        ],
    }


def build_presets_document(
    profiling_dir: str | Path, *, generated_on: str | None = None
) -> dict[str, Any]:
    """Build the content of ``_data/presets.json`` from Vidur's profiling tables.

    This is what ``routeplay estimator fit-presets`` writes; a test checks that the
    committed file equals it.

    Args:
        profiling_dir: a folder laid out like Vidur's ``data/profiling``.
        generated_on: ISO date to record (default: today).

    Returns:
        The JSON-ready document.

    Example:
        >>> build_presets_document("/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        FileNotFoundError: Vidur profiling dir '/nonexistent' not found; ...
    """
    root = Path(profiling_dir)
    # the a100/h100 presets keep Vidur's 0.1 decode batching overhead as an explicit
    # coefficient (results in the docs were made with it); a100-vidur applies Vidur's
    # own rule (no overhead for Llama-2-7B, which has no grouped-query attention)
    presets = {
        "llama2-7b/a100": _vidur_entry(
            root,
            gpu="a100",
            attention_gpu=None,
            name="llama2-7b/a100",
            decode_overhead=DECODE_BATCHING_OVERHEAD_FRACTION,
        ),
        "llama2-7b/a100-vidur": _vidur_entry(
            root,
            gpu="a100",
            attention_gpu=None,
            name="llama2-7b/a100-vidur",
            decode_overhead=decode_batching_overhead(_MODEL),
        ),
        "llama2-7b/h100": _vidur_entry(
            root,
            gpu="h100",
            attention_gpu="a100",
            name="llama2-7b/h100",
            decode_overhead=DECODE_BATCHING_OVERHEAD_FRACTION,
        ),
        "llama2-7b/v100-paper": _paper_entry(),
    }
    presets["llama2-7b/v100-scaled"] = _scaled_entry(
        presets["llama2-7b/a100"], base_name="llama2-7b/a100"
    )
    return {
        "format": _FORMAT,
        "command": PRESETS_COMMAND,
        "generated_on": generated_on or _dt.date.today().isoformat(),
        "presets": presets,
    }


#: Relative tolerance of :func:`preset_document_differences` on floats. A fresh fit of
#: the same tables differs from another only in BLAS rounding (measured: the last digit of
#: a held-out MAPE between two fits in one process, i.e. ~1e-16 relative); a fit that
#: changed moves numbers by far more than 1e-9.
PRESET_FLOAT_RTOL = 1e-9


def preset_document_differences(committed: Any, fresh: Any, where: str = "") -> list[str]:
    """Paths where two preset documents differ (``generated_on`` ignored).

    Structure and strings must be equal; floats equal to :data:`PRESET_FLOAT_RTOL`
    relative (``1e-15`` absolute), so BLAS rounding is not a difference.

    Example:
        >>> preset_document_differences({"a": [1.0, "x"]}, {"a": [1.0 + 1e-13, "x"]})
        []
        >>> preset_document_differences({"a": [1.0, "x"]}, {"a": [1.1, "y"]})
        ['/a[0]', '/a[1]']
    """
    if isinstance(committed, dict) and isinstance(fresh, dict):
        skip = {"generated_on"} if not where else set()  # the date, at the top only
        keys = [k for k in committed if k not in skip]
        other = [k for k in fresh if k not in skip]
        if sorted(keys) != sorted(other):
            return [f"{where} keys"]
        return [
            d
            for k in keys
            for d in preset_document_differences(committed[k], fresh[k], f"{where}/{k}")
        ]
    if isinstance(committed, list) and isinstance(fresh, list):
        if len(committed) != len(fresh):
            return [f"{where} length"]
        return [
            d
            for i, (a, b) in enumerate(zip(committed, fresh, strict=True))
            for d in preset_document_differences(a, b, f"{where}[{i}]")
        ]
    if isinstance(committed, float) and isinstance(fresh, float):
        same = math.isclose(committed, fresh, rel_tol=PRESET_FLOAT_RTOL, abs_tol=1e-15)
        return [] if same else [where]
    return [] if committed == fresh else [where]


def write_presets_document(document: Mapping[str, Any], out: str | Path | None = None) -> Path:
    """Write a presets document as JSON (default: the package's ``_data/presets.json``)."""
    path = Path(out) if out is not None else _presets_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    if out is None:
        _document.cache_clear()
    return path
