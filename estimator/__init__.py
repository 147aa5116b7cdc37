"""Latency model and calibration, workload-impact estimator, length predictor, statistics.

Light by design (numpy, scipy, statsmodels, polars): other schedulers import it alone.
"""

from __future__ import annotations

from ._bootstrap import BlockBootstrapResult, moving_block_bootstrap, optimal_block_length
from ._buckets import (
    PAPER_TIME_EDGES_S,
    BucketScheme,
    equal_width_buckets,
    quantile_buckets,
    time_buckets,
)
from ._calibration import (
    LatencyFit,
    ResidualSummary,
    fit_latency_model,
    read_iteration_log,
    score_latency_model,
)
from ._clock import (
    IterationClock,
    fit_vidur_clock,
    get_clock,
    list_clocks,
    load_clock_file,
    save_clock,
)
from ._impact import (
    ImpactBatchEstimate,
    ImpactConfig,
    ImpactEstimate,
    estimate_impact,
    estimate_impact_batch,
    impact_penalty,
)
from ._latency import LinearLatencyModel
from ._power import episodes_needed, estimate_sd_of_relative_differences, power_of
from ._predictor import (
    ConstantLengthPredictor,
    HistogramLengthPredictor,
    PredictorEvaluation,
    evaluate_predictor,
    fit_length_predictor,
    fit_task_mix_predictor,
)
from ._presets import PresetInfo, get_preset, list_presets, preset_info
from ._protocols import LengthPrediction, OutputLengthPredictor
from ._stats import ComparisonResult, RouterComparison, compare_routers, holm_adjust
from ._verdict import (
    VERDICT_ALPHA,
    VERDICT_POWER,
    EpisodeCheck,
    Leader,
    PairedChange,
    Verdict,
    compute_verdict,
    format_change,
    format_p,
    format_percent,
    metric_name,
    statistic_label,
)
from ._vidur import read_vidur_profiling

__all__ = [
    "IterationClock",
    "fit_vidur_clock",
    "get_clock",
    "list_clocks",
    "load_clock_file",
    "save_clock",
    "ImpactBatchEstimate",
    "ImpactConfig",
    "ImpactEstimate",
    "estimate_impact",
    "estimate_impact_batch",
    "impact_penalty",
    "PAPER_TIME_EDGES_S",
    "BucketScheme",
    "ConstantLengthPredictor",
    "HistogramLengthPredictor",
    "LengthPrediction",
    "OutputLengthPredictor",
    "PredictorEvaluation",
    "equal_width_buckets",
    "evaluate_predictor",
    "fit_length_predictor",
    "fit_task_mix_predictor",
    "quantile_buckets",
    "time_buckets",
    "LinearLatencyModel",
    "LatencyFit",
    "ResidualSummary",
    "fit_latency_model",
    "read_iteration_log",
    "score_latency_model",
    "read_vidur_profiling",
    "PresetInfo",
    "get_preset",
    "list_presets",
    "preset_info",
    "BlockBootstrapResult",
    "ComparisonResult",
    "RouterComparison",
    "compare_routers",
    "episodes_needed",
    "estimate_sd_of_relative_differences",
    "holm_adjust",
    "moving_block_bootstrap",
    "optimal_block_length",
    "power_of",
    "VERDICT_ALPHA",
    "VERDICT_POWER",
    "EpisodeCheck",
    "Leader",
    "PairedChange",
    "Verdict",
    "compute_verdict",
    "format_change",
    "format_p",
    "format_percent",
    "metric_name",
    "statistic_label",
]
