"""The batch report job's file: a TOML job file in, a validated :class:`ReportJobConfig` out.

A job file names the traces, their windowing into episodes, the cluster, the routers,
the statistics and (optionally) an output-length predictor; see ``docs/reports.md``
for the reference and ``reports/jobs/*.toml`` for examples. :func:`load_job` parses
and validates it (unknown keys and bad values are errors with close-match hints).
Running a job (:func:`~routeplay.reports.run_job`) lives in ``_job_run.py``, which
imports this module and the report pipeline; this module imports neither.
"""

# Why this module is long: the job file schema, its parser with one error message per
# mistake, and the run folder are one contract with users' files.

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from routeplay.offline_rl import LearningConfig
from routeplay.replay import Scenario

__all__ = [
    "BUILTIN_JOBS_DIR",
    "JobFileError",
    "ReportJobConfig",
    "builtin_job_path",
    "list_builtin_jobs",
    "load_job",
    "parse_job",
]

#: Folder of the job files shipped with routeplay (``routeplay report NAME``).
BUILTIN_JOBS_DIR = Path(__file__).parent / "jobs"

#: Latency columns a job may compare.
JOB_METRICS: tuple[str, ...] = ("e2e_s", "ttft_s", "tbt_mean_s", "tbt_max_s", "queue_wait_s")

_STATISTIC = re.compile(r"^(mean|p(\d{1,2}(\.\d+)?))$")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class JobFileError(ValueError):
    """A job file that cannot be run: unknown keys, wrong types, bad values."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportJobConfig:
    """A parsed, validated job file: a scenario, the routers to compare, the statistics.

    The job file's ``[trace]``, ``[episodes]``, ``[cluster]``, ``[replay]``,
    ``[predictor]`` sections and its ``seed`` build one
    :class:`~routeplay.replay.Scenario` (the same class ``routeplay train``/``evaluate``
    and Python code build), its ``[training]`` section one
    :class:`~routeplay.offline_rl.LearningConfig`; their defaults are those classes'.

    Attributes:
        name: job name (run folder prefix).
        title: report title.
        scenario: workload, episode split, cluster, predictor, replay settings, seed
            (episode ``k`` replays with ``seed + k``; bootstrap seed).
        routers: router names (``routeplay routers``).
        baseline: the router every other router is compared with.
        metrics: latency columns compared.
        statistics: per-episode statistics (``mean``, ``pXX``).
        n_boot: bootstrap resamples.
        confidence: bootstrap CI coverage.
        images: image formats exported per chart.
        training: the ``[training]`` section: routers trained offline on logs of the
            training episodes and replayed beside the heuristics on the test episodes;
            ``None`` = no training.
        training_settings_note: ``[training] settings_note``: how the training
            settings were chosen (printed in the report beside how the router was
            trained; e.g. the validation windows and command); ``""`` = not stated.

    The scenario's fields are also readable under their job-file names
    (``trace_source``, ``episodes_n_requests``, ``cluster``, ``seed``, ...).
    """

    name: str
    title: str = ""
    scenario: Scenario
    routers: tuple[str, ...]
    baseline: str
    metrics: tuple[str, ...] = ("e2e_s", "ttft_s", "tbt_mean_s")
    statistics: tuple[str, ...] = ("mean", "p99")
    n_boot: int = 2000
    confidence: float = 0.95
    images: tuple[str, ...] = ("svg", "png")
    training: LearningConfig | None = None
    training_settings_note: str = ""

    # the scenario under the job file's names (read-only)
    @property
    def seed(self) -> int:
        """``scenario.seed``."""
        value: int = self.scenario.seed
        return value

    @property
    def trace_source(self) -> str:
        """``scenario.trace``."""
        value: str = self.scenario.trace
        return value

    @property
    def trace_first_requests(self) -> int | None:
        """``scenario.first_requests``."""
        value: int | None = self.scenario.first_requests
        return value

    @property
    def trace_rate_scale(self) -> float:
        """``scenario.rate_scale``."""
        value: float = self.scenario.rate_scale
        return value

    @property
    def task_mix(self) -> Mapping[str, Any]:
        """``scenario.task_mix``."""
        value: Mapping[str, Any] = self.scenario.task_mix
        return value

    @property
    def episodes_n_requests(self) -> int | None:
        """``scenario.episode_requests``."""
        value: int | None = self.scenario.episode_requests
        return value

    @property
    def episodes_duration_s(self) -> float | None:
        """``scenario.episode_duration_s``."""
        value: float | None = self.scenario.episode_duration_s
        return value

    @property
    def episodes_drop_partial(self) -> bool:
        """``scenario.drop_partial``."""
        value: bool = self.scenario.drop_partial
        return value

    @property
    def episodes_test_fraction(self) -> float | None:
        """``scenario.test_fraction``."""
        value: float | None = self.scenario.test_fraction
        return value

    @property
    def episodes_max(self) -> int | None:
        """``scenario.max_test_episodes``."""
        value: int | None = self.scenario.max_test_episodes
        return value

    @property
    def cluster(self) -> str:
        """``scenario.cluster``."""
        value: str = self.scenario.cluster
        return value

    @property
    def replay_mode(self) -> str:
        """``scenario.mode``."""
        value: str = self.scenario.mode
        return value

    @property
    def timeline_sample_interval_s(self) -> float | None:
        """``scenario.timeline_sample_interval_s``."""
        value: float | None = self.scenario.timeline_sample_interval_s
        return value

    @property
    def predictor(self) -> str | None:
        """``scenario.predictor``."""
        value: str | None = self.scenario.predictor
        return value

    @property
    def predictor_features(self) -> tuple[str, ...] | None:
        """``scenario.predictor_features``."""
        value: tuple[str, ...] | None = self.scenario.predictor_features
        return value

    @property
    def predictor_preset(self) -> str | None:
        """``scenario.predictor_preset``."""
        value: str | None = self.scenario.predictor_preset
        return value

    @property
    def base_dir(self) -> Path:
        """``scenario.base_dir``."""
        value: Path = self.scenario.base_dir
        return value

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly dict of every setting, under the job file's names."""
        sc = self.scenario
        return {
            "name": self.name,
            "title": self.title,
            "seed": sc.seed,
            "trace_source": sc.trace,
            "trace_first_requests": sc.first_requests,
            "trace_rate_scale": sc.rate_scale,
            "task_mix": dict(sc.task_mix),
            "episodes_n_requests": sc.episode_requests,
            "episodes_duration_s": sc.episode_duration_s,
            "episodes_drop_partial": sc.drop_partial,
            "episodes_test_fraction": sc.test_fraction,
            "episodes_max": sc.max_test_episodes,
            "cluster": sc.cluster,
            "routers": list(self.routers),
            "baseline": self.baseline,
            "replay_mode": sc.mode,
            "timeline_sample_interval_s": sc.timeline_sample_interval_s,
            "metrics": list(self.metrics),
            "statistics": list(self.statistics),
            "n_boot": self.n_boot,
            "confidence": self.confidence,
            "predictor": sc.predictor,
            "predictor_features": (
                None if sc.predictor_features is None else list(sc.predictor_features)
            ),
            "predictor_preset": sc.predictor_preset,
            "images": list(self.images),
            "training": None if self.training is None else self.training.to_dict(),
            "training_settings_note": self.training_settings_note,
            "base_dir": str(sc.base_dir),
        }


#: Job value name -> Scenario field (the rest are ReportJobConfig fields).
_SCENARIO_FIELDS: dict[str, str] = {
    "seed": "seed",
    "trace_source": "trace",
    "trace_first_requests": "first_requests",
    "trace_rate_scale": "rate_scale",
    "task_mix": "task_mix",
    "episodes_n_requests": "episode_requests",
    "episodes_duration_s": "episode_duration_s",
    "episodes_drop_partial": "drop_partial",
    "episodes_test_fraction": "test_fraction",
    "episodes_max": "max_test_episodes",
    "cluster": "cluster",
    "replay_mode": "mode",
    "timeline_sample_interval_s": "timeline_sample_interval_s",
    "predictor": "predictor",
    "predictor_features": "predictor_features",
    "predictor_preset": "predictor_preset",
    "base_dir": "base_dir",
}


# section -> key -> (field name, accepted python types, description for messages)
_Spec = tuple[str, tuple[type, ...], str]
_SCHEMA: dict[str, dict[str, _Spec]] = {
    "": {
        "name": ("name", (str,), "a name of letters, digits, '.', '_' or '-'"),
        "title": ("title", (str,), "a string"),
        "seed": ("seed", (int,), "an integer >= 0"),
    },
    "trace": {
        "source": ("trace_source", (str,), "a registered trace name, a file path or 'task-mix'"),
        "first_requests": ("trace_first_requests", (int,), "an integer >= 1"),
        "rate_scale": ("trace_rate_scale", (int, float), "a number > 0"),
        "task_mix": ("task_mix", (dict,), "a table of TaskMixConfig fields"),
    },
    "episodes": {
        "n_requests": ("episodes_n_requests", (int,), "an integer >= 1"),
        "duration_s": ("episodes_duration_s", (int, float), "a number > 0"),
        "drop_partial": ("episodes_drop_partial", (bool,), "true or false"),
        "test_fraction": ("episodes_test_fraction", (int, float), "a number in (0, 1)"),
        "max_episodes": ("episodes_max", (int,), "an integer >= 2"),
    },
    "cluster": {"name": ("cluster", (str,), "a built-in cluster name or a TOML path")},
    "routers": {
        "names": ("routers", (list,), "a list of router names"),
        "baseline": ("baseline", (str,), "one of the router names"),
    },
    "replay": {
        "mode": ("replay_mode", (str,), "'fast' or 'reference'"),
        "timeline_sample_interval_s": (
            "timeline_sample_interval_s",
            (int, float),
            "a finite number of seconds > 0",
        ),
    },
    "statistics": {
        "metrics": ("metrics", (list,), f"a list from {list(JOB_METRICS)}"),
        "statistics": ("statistics", (list,), "a list of 'mean' or 'pXX'"),
        "n_boot": ("n_boot", (int,), "an integer >= 100"),
        "confidence": ("confidence", (int, float), "a number in (0, 1)"),
    },
    "predictor": {
        "kind": ("predictor", (str,), "'histogram'"),
        "features": ("predictor_features", (list,), "a list of trace column names"),
        "preset": (
            "predictor_preset",
            (str,),
            "a latency preset name (default: the cluster's first instance)",
        ),
    },
    "report": {"images": ("images", (list,), "a list from ['svg', 'png']")},
}
_REQUIRED: dict[str, tuple[str, ...]] = {
    "": ("name",),
    "trace": ("source",),
    "cluster": ("name",),
    "routers": ("names", "baseline"),
}
#: ``[training] settings_note`` -> ``ReportJobConfig.training_settings_note``.
_SETTINGS_NOTE = "training_settings_note"
# [training] key -> (JobTrainingConfig field, accepted python types, description)
_TRAINING_SCHEMA: dict[str, _Spec] = {
    "decision": ("decision", (str,), "'route' (a router) or 'schedule' (a scheduler)"),
    "n_candidates": ("n_candidates", (int,), "an integer >= 2 (shortlist of a scheduler)"),
    "behaviours": ("behaviours", (list,), "a list of heuristic router (or scheduler) names"),
    "epsilon": ("epsilon", (int, float), "a probability in [0, 1]"),
    "reward": ("reward", (str,), "a reward name, e.g. 'paper-workload-guided'"),
    "algorithms": ("algorithms", (list,), "a list from ['cql', 'bcq', 'bc', 'double-dqn']"),
    "n_steps": ("n_steps", (int,), "an integer >= 1"),
    "n_steps_per_epoch": ("n_steps_per_epoch", (int,), "an integer >= 1"),
    "batch_size": ("batch_size", (int,), "an integer >= 1"),
    "learning_rate": ("learning_rate", (int, float), "a number in (0, 1)"),
    "gamma": ("gamma", (int, float), "a number in [0, 1]"),
    "hidden_units": ("hidden_units", (list,), "a list of integers >= 1"),
    "target_update_interval": ("target_update_interval", (int,), "an integer >= 1"),
    "reward_normalization": (
        "reward_normalization",
        (str,),
        "'none', 'scale' or 'standardize'",
    ),
    "reward_scale": ("reward_scale", (int, float), "a finite number > 0"),
    "seed": ("seed", (int,), "an integer >= 0"),
    "max_router_wait_s": ("max_router_wait_s", (int, float), "a finite number of seconds >= 0"),
    "fallback": ("fallback", (str,), "a heuristic router name"),
    "sim_slack_s": ("sim_slack_s", (int, float), "a finite number of seconds > 0"),
    # not a LearningConfig field: the job's own note, moved out before LearningConfig
    "settings_note": (
        _SETTINGS_NOTE,
        (str,),
        "a sentence saying how the settings were chosen",
    ),
}
_RESERVED_TABLES = ("training",)


def _hint(word: str, options: list[str]) -> str:
    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def _err(where: str, message: str) -> JobFileError:
    return JobFileError(f"{where}: {message}")


def parse_job(
    data: Mapping[str, Any], *, where: str = "job", base_dir: Path | None = None
) -> ReportJobConfig:
    """Validate a job (as parsed TOML) and build its config.

    Args:
        data: the TOML document as a dict.
        where: what to call the job in messages (usually the file path).
        base_dir: folder for relative paths (default: the working directory).

    Returns:
        A :class:`ReportJobConfig`.

    Raises:
        JobFileError: on an unknown section or key (with a close-match hint), a
            missing required key, a value of the wrong type or out of range, or an
            unknown router, cluster, trace, metric or statistic.

    Example:
        >>> job = parse_job({"name": "demo", "trace": {"source": "azure-2023-conv"},
        ...     "episodes": {"n_requests": 100}, "cluster": {"name": "a100x4"},
        ...     "routers": {"names": ["round-robin", "least-connections"],
        ...                 "baseline": "round-robin"}})
        >>> job.routers, job.statistics
        (('round-robin', 'least-connections'), ('mean', 'p99'))
        >>> parse_job({"name": "demo", "rauters": {}})
        Traceback (most recent call last):
        ...
        routeplay.reports._job.JobFileError: job: unknown section [rauters]. Did you mean ...
    """
    values: dict[str, Any] = {}
    top_keys = set(_SCHEMA[""])
    sections = [s for s in _SCHEMA if s]
    for key, value in data.items():
        if isinstance(value, dict) and key not in top_keys:
            if key == "training":
                values["training"] = _parse_training(value, where)
                continue
            if key not in _SCHEMA:
                raise _err(
                    where,
                    f"unknown section [{key}].{_hint(key, sections + list(_RESERVED_TABLES))} "
                    f"Valid sections: {sections + list(_RESERVED_TABLES)}.",
                )
            _parse_section(key, value, values, where)
        elif key in top_keys:
            _parse_value("", key, value, values, where)
        else:
            options = sorted(top_keys) + sections
            raise _err(
                where,
                f"unknown key {key!r} at the top level.{_hint(key, options)} Valid top-level "
                f"keys: {sorted(top_keys)}; sections: {sections}.",
            )
    for section, keys in _REQUIRED.items():
        for key in keys:
            if _SCHEMA[section][key][0] not in values:
                label = f"[{section}] {key}" if section else key
                raise _err(where, f"missing required key {label} ({_SCHEMA[section][key][2]}).")
    if base_dir is not None:
        values["base_dir"] = base_dir
    _check_values(values, where)
    scenario_values = {
        _SCENARIO_FIELDS[k]: values.pop(k) for k in list(values) if k in _SCENARIO_FIELDS
    }
    try:
        scenario = Scenario(**scenario_values)
    except ValueError as exc:
        raise _err(where, str(exc)) from exc
    try:
        return ReportJobConfig(scenario=scenario, **values)
    except TypeError as exc:  # pragma: no cover - every field is checked above
        raise _err(where, str(exc)) from exc


def _parse_section(
    section: str, table: Mapping[str, Any], values: dict[str, Any], where: str
) -> None:
    for key, value in table.items():
        if key not in _SCHEMA[section]:
            valid = sorted(_SCHEMA[section])
            raise _err(
                where,
                f"unknown key {key!r} in [{section}].{_hint(key, valid)} Valid keys: {valid}.",
            )
        _parse_value(section, key, value, values, where)


def _parse_training(table: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _TRAINING_SCHEMA:
            valid = sorted(_TRAINING_SCHEMA)
            raise _err(
                where,
                f"unknown key {key!r} in [training].{_hint(key, valid)} Valid keys: {valid}.",
            )
        name, types, description = _TRAINING_SCHEMA[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if ok and isinstance(value, list):
            inner = int if key == "hidden_units" else str
            ok = bool(value) and all(
                isinstance(v, inner) and not isinstance(v, bool) for v in value
            )
            value = tuple(value)
        if not ok:
            shown = list(value) if isinstance(value, tuple) else value
            raise _err(where, f"[training] {key} = {shown!r}; expected {description}.")
        if isinstance(value, int) and float in types:
            value = float(value)
        out[name] = value
    return out


def _parse_value(section: str, key: str, value: Any, values: dict[str, Any], where: str) -> None:
    name, types, description = _SCHEMA[section][key]
    label = f"[{section}] {key}" if section else key
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok:
        raise _err(where, f"{label} = {value!r}; expected {description}.")
    if isinstance(value, list):
        empty_ok = (section, key) == ("report", "images")  # [] = no image exports
        if (not value and not empty_ok) or not all(isinstance(v, str) for v in value):
            raise _err(where, f"{label} = {value!r}; expected {description} (non-empty strings).")
        value = tuple(value)
    if isinstance(value, int) and float in types and not isinstance(value, bool):
        value = float(value)
    values[name] = value


def _check_values(v: dict[str, Any], where: str) -> None:
    from routeplay.datasets import list_traces
    from routeplay.replay import list_clusters, list_routers
    from routeplay.replay.engine._clusters import canonical_cluster_name

    def bad(label: str, message: str) -> JobFileError:
        return _err(where, f"{label} = {message}")

    if not _NAME.match(v["name"]):
        raise bad("name", f"{v['name']!r}; expected {_SCHEMA['']['name'][2]}.")
    if v.get("seed", 0) < 0:
        raise bad("seed", f"{v['seed']!r}; expected an integer >= 0.")
    base = v.get("base_dir", Path("."))
    source = v["trace_source"]
    traces = [t.name for t in list_traces()]
    if source == "task-mix":
        from routeplay.datasets import TaskMixConfig

        mix = dict(v.get("task_mix", {}))
        if "seed" in mix:
            raise bad(
                "[trace.task_mix] seed", "set; expected no seed here: the job's seed is used."
            )
        try:
            TaskMixConfig(**mix, seed=0)
        except (TypeError, ValueError) as exc:
            raise _err(where, f"[trace.task_mix] is invalid: {exc}") from exc
    elif source not in traces and not (base / source).expanduser().is_file():
        raise bad(
            "[trace] source",
            f"{source!r} is neither a registered trace nor an existing file."
            f"{_hint(source, traces)} "
            f"Registered traces: {traces} (or 'task-mix').",
        )
    elif "task_mix" in v:
        raise _err(where, "[trace.task_mix] is set but [trace] source is not 'task-mix'.")
    if v.get("trace_first_requests") is not None and v["trace_first_requests"] < 1:
        raise bad("[trace] first_requests", f"{v['trace_first_requests']!r}; expected >= 1.")
    scale = v.get("trace_rate_scale", 1.0)
    if not (math.isfinite(scale) and scale > 0):
        raise bad("[trace] rate_scale", f"{scale!r}; expected a finite number > 0.")
    n_req, dur = v.get("episodes_n_requests"), v.get("episodes_duration_s")
    if (n_req is None) == (dur is None):
        raise _err(
            where,
            "[episodes] needs exactly one of n_requests and duration_s "
            f"(got n_requests={n_req!r}, duration_s={dur!r}).",
        )
    if n_req is not None and n_req < 1:
        raise bad("[episodes] n_requests", f"{n_req!r}; expected an integer >= 1.")
    if dur is not None and not (math.isfinite(dur) and dur > 0):
        raise bad("[episodes] duration_s", f"{dur!r}; expected a number > 0.")
    tf = v.get("episodes_test_fraction")
    if tf is not None and not 0 < tf < 1:
        raise bad("[episodes] test_fraction", f"{tf!r}; expected a number in (0, 1).")
    if v.get("episodes_max") is not None and v["episodes_max"] < 2:
        raise bad(
            "[episodes] max_episodes",
            f"{v['episodes_max']!r}; expected >= 2 (paired tests need at least 2 episodes).",
        )
    cluster = v["cluster"] = canonical_cluster_name(v["cluster"])  # former names warn
    if cluster not in list_clusters() and not (base / cluster).expanduser().is_file():
        raise bad(
            "[cluster] name",
            f"{cluster!r} is neither a built-in cluster nor an existing file."
            f"{_hint(cluster, list_clusters())} Built-in clusters: {list_clusters()}.",
        )
    known = list_routers()
    for router in v["routers"]:
        if router not in known:
            raise bad(
                "[routers] names",
                f"contains unknown router {router!r}.{_hint(router, known)} "
                "Run `routeplay routers` for the list.",
            )
    if len(set(v["routers"])) != len(v["routers"]):
        raise bad("[routers] names", f"{list(v['routers'])}; expected each router once.")
    if v["baseline"] not in v["routers"]:
        raise bad(
            "[routers] baseline",
            f"{v['baseline']!r} is not in [routers] names {list(v['routers'])}."
            f"{_hint(v['baseline'], list(v['routers']))}",
        )
    if len(v["routers"]) < 2:
        raise bad(
            "[routers] names",
            f"{list(v['routers'])}; expected the baseline and at least one other router.",
        )
    if v.get("replay_mode", "fast") not in ("fast", "reference"):
        raise bad("[replay] mode", f"{v['replay_mode']!r}; expected 'fast' or 'reference'.")
    interval = v.get("timeline_sample_interval_s", 1.0)
    if not (math.isfinite(interval) and interval > 0):
        raise bad(
            "[replay] timeline_sample_interval_s",
            f"{interval!r}; expected a finite number of seconds > 0.",
        )
    for metric in v.get("metrics", ()):
        if metric not in JOB_METRICS:
            raise bad(
                "[statistics] metrics",
                f"contains {metric!r}.{_hint(metric, list(JOB_METRICS))} Expected names from "
                f"{list(JOB_METRICS)}.",
            )
    for stat in v.get("statistics", ()):
        if not _STATISTIC.match(stat):
            raise bad(
                "[statistics] statistics",
                f"contains {stat!r}; expected 'mean' or 'pXX' (e.g. 'p99').",
            )
    if v.get("n_boot", 2000) < 100:
        raise bad("[statistics] n_boot", f"{v['n_boot']!r}; expected an integer >= 100.")
    if not 0 < v.get("confidence", 0.95) < 1:
        raise bad("[statistics] confidence", f"{v['confidence']!r}; expected a number in (0, 1).")
    if v.get("predictor") is not None:
        if v["predictor"] != "histogram":
            raise bad(
                "[predictor] kind",
                f"{v['predictor']!r}; expected 'histogram'.{_hint(v['predictor'], ['histogram'])}",
            )
        if tf is None:
            raise _err(
                where,
                "[predictor] needs [episodes] test_fraction: the predictor is fitted on the "
                "earlier (training) episodes and the routers are replayed on the later ones. "
                "Fix: add e.g. test_fraction = 0.5 to [episodes].",
            )
    for fmt in v.get("images", ()):
        if fmt not in ("svg", "png"):
            raise bad("[report] images", f"contains {fmt!r}; expected any of ['svg', 'png'].")
    if v.get("training") is not None:
        if tf is None:
            raise _err(
                where,
                "[training] needs [episodes] test_fraction: routers are trained on logs of the "
                "earlier (training) episodes and replayed on the later (test) ones only. "
                "Fix: add e.g. test_fraction = 0.5 to [episodes].",
            )
        learning = dict(v["training"])
        note = learning.pop(_SETTINGS_NOTE, "")
        if note:
            v[_SETTINGS_NOTE] = note
        try:
            training = LearningConfig(**learning)
        except ValueError as exc:
            raise _err(where, str(exc).replace("LearningConfig.", "[training] ", 1)) from exc
        clash = sorted(set(training.algorithms) & set(v["routers"]))
        if clash:
            raise _err(
                where,
                f"[training] algorithms {clash} are also in [routers] names; a learned router "
                "is labelled with its algorithm key, expected distinct labels.",
            )
        v["training"] = training


def load_job(path: str | Path) -> ReportJobConfig:
    """Read and validate a job file (or a built-in job by name, e.g. ``"default"``).

    Args:
        path: a TOML file, or the name of a file in :data:`BUILTIN_JOBS_DIR`.

    Returns:
        A :class:`ReportJobConfig`; relative paths in it are resolved against the
        job file's folder.

    Raises:
        FileNotFoundError: if the file does not exist (the message lists the
            built-in jobs).
        JobFileError: on invalid TOML or an invalid job.

    Example:
        >>> load_job("default").name
        'default'
    """
    p = Path(path)
    if not p.is_file():
        builtin = builtin_job_path(str(path))
        if builtin is None:
            raise FileNotFoundError(
                f"job file {str(path)!r} not found; expected a TOML file or a built-in job "
                f"{list_builtin_jobs()}."
            )
        p = builtin
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(f"{p}: not valid TOML: {exc}") from exc
    return parse_job(data, where=str(p), base_dir=p.parent)


def list_builtin_jobs() -> list[str]:
    """Names of the job files shipped with routeplay.

    Example:
        >>> "default" in list_builtin_jobs()
        True
    """
    return sorted(p.stem for p in BUILTIN_JOBS_DIR.glob("*.toml"))


def builtin_job_path(name: str) -> Path | None:
    """Path of a built-in job, or ``None``."""
    p = BUILTIN_JOBS_DIR / f"{name}.toml"
    return p if name in list_builtin_jobs() else None


def _resolve(base: Path, value: str) -> str:
    p = (base / value).expanduser()
    return str(p) if p.is_file() else value


def _load_trace(job: ReportJobConfig) -> pl.DataFrame:
    """The job's workload (:meth:`routeplay.replay.Scenario.load_trace`)."""
    trace: pl.DataFrame = job.scenario.load_trace()
    return trace


ProgressFactory = Callable[[int, str], Any]
