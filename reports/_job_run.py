"""Running a report job: a validated job in, a dated report folder out.

:func:`run_job` runs a :class:`~routeplay.reports.ReportJobConfig` (from
:func:`~routeplay.reports.load_job`) and writes ``<out>/<name>-<run id>/`` atomically:
everything is built in ``<out>/.tmp-<name>-<run id>-<pid>/`` and renamed at the end,
so a crashed or killed job never leaves a complete-looking report behind.
:func:`build_job_report` is the job's pipeline: load and split the trace, fit the
predictor, train (``[training]``), replay, compare, and lay out the report.

This module needs both the job's config (``_job.py``) and the report pipeline
(``_pipeline.py``); neither of them imports it, so the three form no import circle.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
from routeplay.estimator import ComparisonResult, compare_routers

from ._charts import learning_curve_chart
from ._job import _NAME, ReportJobConfig
from ._pipeline import _paired, build_replay_report
from ._report import ReportSection, write_report

if TYPE_CHECKING:
    from routeplay.offline_rl import EvaluationResult
    from routeplay.replay import PreparedScenario, Router

    from ._training import JobTrainingResult

__all__ = [
    "ReportJobResult",
    "build_job_report",
    "compare_job_routers",
    "evaluate_job_routers",
    "run_job",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportJobResult:
    """A finished job.

    Attributes:
        run_dir: the completed run folder.
        report_path: its ``report.html``.
        wall_time_s: how long the job took.
    """

    run_dir: Path
    report_path: Path
    wall_time_s: float


def evaluate_job_routers(
    job: ReportJobConfig,
    prepared: PreparedScenario,
    learned: Mapping[str, Router],
    *,
    show_progress: bool = False,
) -> EvaluationResult:
    """Replay ``learned`` routers and the job's heuristics on ``prepared.test``, paired.

    :func:`~routeplay.offline_rl.evaluate_scenario` with the job's routers, baseline,
    bootstrap size and ``[training]`` fallback settings: what :func:`run_job` does, for
    callers that evaluate on another split of the same job (e.g. validation windows).

    Raises:
        ValueError: the job has no ``[training]`` section.
    """
    from routeplay.offline_rl import evaluate_scenario

    if job.training is None:
        raise ValueError(
            f"job {job.name!r} has no [training] section; expected one (its fallback "
            "settings apply to learned routers). Fix: add [training] to the job file."
        )
    return evaluate_scenario(
        prepared,
        learned,
        job.routers,
        baseline=job.baseline,
        max_router_wait_s=job.training.max_router_wait_s,
        fallback=job.training.fallback,
        sim_slack_s=job.training.sim_slack_s,
        n_boot=job.n_boot,
        show_progress=show_progress,
    )


def compare_job_routers(job: ReportJobConfig, requests: pl.DataFrame) -> ComparisonResult:
    """:func:`~routeplay.estimator.compare_routers` with the job's statistics settings.

    Example:
        >>> from routeplay.reports import load_job
        >>> job = load_job("default")
        >>> f = pl.DataFrame({"router": ["round-robin", "min-min"] * 4,
        ...     "episode": [0, 0, 1, 1, 2, 2, 3, 3],
        ...     "e2e_s": [2.0, 1.0, 2.0, 1.1, 2.2, 1.0, 2.1, 1.2],
        ...     "ttft_s": [0.2, 0.1] * 4, "tbt_mean_s": [0.02, 0.01] * 4})
        >>> compare_job_routers(job, f).baseline
        'round-robin'
    """
    return compare_routers(
        requests,
        baseline=job.baseline,
        metrics=job.metrics,
        statistics=job.statistics,
        n_boot=job.n_boot,
        confidence=job.confidence,
        seed=job.seed,
    )


def run_job(
    job: ReportJobConfig,
    out_dir: str | Path,
    *,
    run_id: str | None = None,
    overwrite: bool = False,
    show_progress: bool = False,
) -> ReportJobResult:
    """Run a report job into ``out_dir/<name>-<run id>/``, atomically.

    The run folder is built under ``out_dir/.tmp-<name>-<run id>-<pid>/`` (with the
    job's log, ``job.log``) and renamed into place only when everything was written.
    On failure the temporary folder is left for inspection (its log says what
    happened) and no run folder appears.

    Args:
        job: the job.
        out_dir: parent folder of run folders (created).
        run_id: the run folder's suffix (default: UTC time ``YYYYmmddTHHMMSSZ``).
        overwrite: replace an existing run folder of the same name.
        show_progress: tqdm progress bars on stderr.

    Returns:
        A :class:`ReportJobResult`.

    Raises:
        FileExistsError: if the run folder exists and ``overwrite`` is False.
        ValueError: if ``run_id`` is not a plain name.
    """
    start = time.perf_counter()
    run_id = run_id or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if not _NAME.match(run_id):
        raise ValueError(
            f"run id {run_id!r} is invalid; expected letters, digits, '.', '_' or '-'."
        )
    out = Path(out_dir)
    final = out / f"{job.name}-{run_id}"
    if final.exists() and not overwrite:
        raise FileExistsError(
            f"run folder {final} already exists; pass --overwrite to replace it or choose "
            "another --run-id."
        )
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".tmp-{job.name}-{run_id}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    handler = logging.FileHandler(tmp / "job.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("routeplay")
    previous_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        logger.info("job %s (run id %s) building in %s", job.name, run_id, tmp)
        stale = sorted(p.name for p in out.glob(f".tmp-{job.name}-*") if p != tmp)
        if stale:
            logger.warning("left-over temporary folders of killed or failed runs: %s", stale)
        build_job_report(job, tmp, run_id=run_id, show_progress=show_progress)
        logger.info(
            "job %s finished in %.1f s; moving into place", job.name, time.perf_counter() - start
        )
    except BaseException:
        logger.exception("job %s failed; the partial output stays in %s", job.name, tmp)
        raise
    finally:
        root.removeHandler(handler)
        root.setLevel(previous_level)
        handler.close()
    if final.exists():  # overwrite: move the old run aside first, then swap
        old = out / f".old-{final.name}-{os.getpid()}"
        os.rename(final, old)
        os.rename(tmp, final)
        shutil.rmtree(old)
    else:
        os.rename(tmp, final)
    return ReportJobResult(
        run_dir=final, report_path=final / "report.html", wall_time_s=time.perf_counter() - start
    )


def build_job_report(
    job: ReportJobConfig, out_dir: Path, *, run_id: str, show_progress: bool = False
) -> Path:
    """Run a job's pipeline and write its report into ``out_dir``.

    Args:
        job: the validated job.
        out_dir: the (temporary) run folder.
        run_id: the run's id (recorded in the metadata).
        show_progress: tqdm bars.

    Returns:
        The report's HTML path.
    """
    import json
    import time
    import warnings

    from routeplay.replay import make_router, replay_scenario

    t_start = time.perf_counter()
    wall: dict[str, float] = {}
    (out_dir / "job.json").write_text(json.dumps(job.to_dict(), indent=2, default=str) + "\n")
    prepared = job.scenario.prepare()
    trace = prepared.trace
    assert trace is not None
    episodes, train, test = prepared.episodes, prepared.train, prepared.test
    logger.info("trace %s: %d requests", job.trace_source, trace.height)
    logger.info("%d episodes: %d for training, %d replayed", len(episodes), len(train), len(test))
    cluster = prepared.cluster
    evaluation = prepared.predictor_evaluation
    if evaluation is not None:
        logger.info("predictor top-1 accuracy on the test episodes: %.3f", evaluation.top1_accuracy)
    wall["load_split_predictor"] = time.perf_counter() - t_start
    training: JobTrainingResult | None = None
    learned_eval: EvaluationResult | None = None
    if job.training is not None:
        from routeplay.offline_rl import train_scenario

        t0 = time.perf_counter()
        training = train_scenario(
            prepared, job.training, out_dir / "training", show_progress=show_progress
        )
        wall["training"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        learned_eval = evaluate_job_routers(
            job, prepared, training.routers, show_progress=show_progress
        )
        replays = _paired(learned_eval.replays)
    else:
        t0 = time.perf_counter()
        routers = {name: make_router(name) for name in job.routers}
        replays = _paired(replay_scenario(prepared, routers, show_progress=show_progress))
    wall["replays"] = time.perf_counter() - t0
    t_cmp = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        comparison = compare_job_routers(job, replays.requests)
    notes = [str(w.message) for w in caught]
    for note in notes:
        logger.warning("%s", note)
    metadata = {
        "job": job.name,
        "run_id": run_id,
        "data": (
            f"{job.trace_source}: {trace.height} requests"
            + (f" (first {job.trace_first_requests})" if job.trace_first_requests else "")
            + (f", arrival rate x{job.trace_rate_scale:g}" if job.trace_rate_scale != 1 else "")
            + f"; {len(episodes)} episodes of "
            + (
                f"{job.episodes_n_requests} requests"
                if job.episodes_n_requests
                else f"{job.episodes_duration_s:g} s"
            )
            + f", {len(test)} replayed (ids {[e.index for e in test]})"
        ),
        "cluster": f"{job.cluster} ({cluster.n_instances} instances: "
        + ", ".join(i.latency.name for i in cluster.instances)
        + ")",
        "routers": replays.summaries["router"].unique(maintain_order=True).to_list(),
        "seed": job.seed,
        "replay_mode": job.replay_mode,
        "predictor": _predictor_description(job),
    }
    extra_sections: list[ReportSection] = []
    extra_tables: dict[str, pl.DataFrame] = {}
    numbers: dict[str, Any] = {}
    if training is not None:
        metadata["training"] = _training_description(
            training,
            test_ids=[e.index for e in test],
            settings_note=job.training_settings_note,
        )
        notes = [
            f"How the learned router{' was' if len(training.routers) == 1 else 's were'} "
            f"trained: {metadata['training']}",
            *training.notes,
            *notes,
            *_fallback_notes(training, replays.summaries),
        ]
        extra_sections.append(
            ReportSection(
                key="learning-curve",
                title="Training losses (learning curves)",
                chart=learning_curve_chart(training.losses),
                caption=(
                    f"Mean of each loss over {training.config.n_steps_per_epoch} gradient steps; "
                    f"{training.card.n_transitions} logged transitions of the training episodes."
                ),
            )
        )
        extra_tables["training_behaviours"] = training.behaviour_logs
        extra_tables["training_dataset"] = training.card.to_frame()
        if learned_eval is not None:  # the table `routeplay evaluate` prints and stores
            extra_tables["evaluation"] = learned_eval.to_frame()
        numbers["training"] = {
            **training.summary_numbers(out_dir),
            "test_episode_ids": [int(e.index) for e in test],
            "settings_note": job.training_settings_note,
            "fallbacks": _fallback_totals(training, replays.summaries),
        }
    numbers["wall_time_s"] = {**wall, "comparison": time.perf_counter() - t_cmp}
    report = build_replay_report(
        replays,
        comparison,
        title=job.title or f"routeplay report: {job.name}",
        metadata=metadata,
        predictor_evaluation=evaluation,
        extra_sections=extra_sections,
        extra_tables=extra_tables,
        extra_numbers=numbers,
        notes=notes,
        learned_routers=tuple(training.routers) if training is not None else (),
    )
    logger.info("writing the report (%d charts)", len(report.sections))
    result = write_report(report, out_dir, image_formats=job.images)
    logger.info("wrote %d files", len(result.files))
    return result.html_path


def _predictor_description(job: ReportJobConfig) -> str:
    if job.predictor is None:
        return "none"
    preset = job.predictor_preset or "the cluster's first instance"
    return f"{job.predictor} (time buckets of {preset})"


def _fallback_totals(training: JobTrainingResult, summaries: pl.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label in training.routers:
        rows = summaries.filter(pl.col("router") == label)
        out[label] = {
            "n_fallback_routes": int(rows["n_fallback_routes"].sum()),
            "n_requests": int(rows["n_requests"].sum()) if "n_requests" in rows.columns else None,
            "per_episode": {
                str(e): int(n) for e, n in rows.select("episode", "n_fallback_routes").iter_rows()
            },
            "max_router_wait_s": training.config.max_router_wait_s,
            "fallback": training.config.fallback,
        }
    return out


def _fallback_notes(training: JobTrainingResult, summaries: pl.DataFrame) -> list[str]:
    notes = []
    for label, total in _fallback_totals(training, summaries).items():
        requests = f" of {total['n_requests']} requests" if total["n_requests"] is not None else ""
        notes.append(
            f"Learned router {label}: {total['n_fallback_routes']} routing decision(s){requests} "
            f"were taken by the fallback heuristic {training.config.fallback} because the "
            f"policy kept a request waiting >= {training.config.max_router_wait_s:g} s at the "
            "router (column n_fallback_routes)."
        )
    return notes


def _training_description(
    training: JobTrainingResult, *, test_ids: Sequence[int], settings_note: str = ""
) -> str:
    """How each learned router was trained, where it was evaluated, how it was set up.

    :meth:`~routeplay.offline_rl.LearningResult.describe` per router (algorithm, steps,
    behaviours and epsilon, reward and its normalisation, gamma, target sync, seed),
    the test episodes and the job's ``[training] settings_note``.
    """
    text = (
        " ".join(training.describe(label) for label in training.routers)
        + f" Evaluated on test episodes {list(test_ids)} only (never logged or trained on)."
    )
    if settings_note:
        text += f" Settings: {settings_note}"
    return text
