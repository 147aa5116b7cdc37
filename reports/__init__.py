"""Altair charts, self-contained HTML reports and the batch report job.

Only this package imports altair. :func:`~routeplay.estimator.compute_verdict` states in words which
router won, by how much and whether it is significant; the report page opens with it.
``routeplay report JOB.toml --out DIR`` runs a job file (see ``docs/reports.md``); the
Python API builds the same charts and reports from replay and estimator results.
"""

from __future__ import annotations

from ._charts import (
    ChartLike,
    chart_data,
    confusion_matrix_chart,
    improvement_forest_chart,
    instance_timeline_chart,
    latency_cdf_chart,
    latency_fit_chart,
    latency_residual_chart,
    learning_curve_chart,
    load_imbalance_chart,
    routing_heatmap_chart,
)
from ._job import (
    JobFileError,
    ReportJobConfig,
    list_builtin_jobs,
    load_job,
    parse_job,
)
from ._job_run import ReportJobResult, compare_job_routers, evaluate_job_routers, run_job
from ._pipeline import (
    SIGNIFICANCE_METHOD,
    PairedReplays,
    build_replay_report,
    replay_routers,
    router_summary_table,
)
from ._report import (
    IMAGE_FORMATS,
    SECTION_LAYOUTS,
    PageTable,
    Report,
    ReportResult,
    ReportSection,
    render_html,
    write_report,
)
from ._reproduction import (
    PUBLISHED_SECTION61,
    Section61Config,
    compare_on_episodes,
    section61_tables,
)
from ._training import DEFAULT_BEHAVIOURS, JobTrainingConfig, JobTrainingResult

__all__ = [
    # the reproduction study's building blocks
    "PUBLISHED_SECTION61",
    "Section61Config",
    "compare_on_episodes",
    "section61_tables",
    "DEFAULT_BEHAVIOURS",
    "JobTrainingConfig",
    "JobTrainingResult",
    "IMAGE_FORMATS",
    "SECTION_LAYOUTS",
    "SIGNIFICANCE_METHOD",
    "ChartLike",
    "JobFileError",
    "PageTable",
    "PairedReplays",
    "Report",
    "ReportJobConfig",
    "ReportJobResult",
    "ReportResult",
    "ReportSection",
    "build_replay_report",
    "chart_data",
    "confusion_matrix_chart",
    "improvement_forest_chart",
    "instance_timeline_chart",
    "latency_cdf_chart",
    "latency_fit_chart",
    "latency_residual_chart",
    "learning_curve_chart",
    "list_builtin_jobs",
    "load_imbalance_chart",
    "load_job",
    "parse_job",
    "render_html",
    "replay_routers",
    "router_summary_table",
    "routing_heatmap_chart",
    "run_job",
    "compare_job_routers",
    "evaluate_job_routers",
    "write_report",
]
