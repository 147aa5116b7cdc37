"""One experiment, one definition: the :class:`Scenario` every entry point replays.

An experiment compares routers — heuristic and learned — on the same episodes. Its
parts used to be rebuilt by each entry point (``routeplay train``/``evaluate``, the
report job, sweeps, the benchmark scripts), and the copies drifted. A
:class:`Scenario` names them once:

* the **workload**: a registered trace, a trace file or the paper's task mix
  (``trace="task-mix"``, one trace generated with the scenario's seed), optionally cut
  to its first requests and with its arrival rate scaled;
* the **episode split**: windows of ``episode_requests`` requests or
  ``episode_duration_s`` seconds; with ``test_fraction`` the earliest windows are the
  *training* episodes (they fit the predictor and are logged for offline RL) and the
  latest are the *test* episodes (the only ones replayed for comparisons), never
  overlapping (:func:`routeplay.datasets.split_train_test`);
* the **cluster** (built-in name or TOML file), the **predictor** (none, or a histogram
  output-length predictor fitted on the training episodes with time buckets of the
  cluster's first instance unless ``predictor_preset`` names a latency preset) and the
  **replay settings** (mode, timeline sampling);
* the **observation layout** of logs and learned routers, derived from the cluster, the
  replay settings and the predictor (:attr:`PreparedScenario.layout`);
* **one seed rule** (:func:`episode_seed`): episode ``k`` (its global index in the
  split) under seed ``s`` is replayed with ``ReplayConfig.seed = s + k`` — for every
  router, in every entry point, as :func:`~routeplay.replay.replay_episodes` and sweeps
  do. Behaviour logs of episode ``k`` use the same ``s`` and ``k``
  (:func:`log_behaviours`).

:meth:`Scenario.prepare` materialises it (:class:`PreparedScenario`: episodes, cluster,
predictor, replay config); :func:`replay_scenario` replays routers on its test episodes,
paired; :func:`log_behaviours` logs heuristics on its training episodes. Training and
evaluation (d3rlpy) are in :mod:`routeplay.offline_rl` (``train_scenario``,
``evaluate_scenario``), the HTML report in :mod:`routeplay.reports`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl

from routeplay._checks import check_bool, check_int, check_number

from .._types import ClusterConfig, Router
from ..engine._result import ReplayConfig
from ._episodes import EpisodeReplays, RouterFactory, replay_episodes

if TYPE_CHECKING:
    from routeplay.datasets import Episode
    from routeplay.estimator import OutputLengthPredictor, PredictorEvaluation

    from ..rl._observation import ObservationLayout
    from ..rl._rewards import RewardFunction
    from ..rl._transitions import TransitionLogResult

__all__ = [
    "BehaviourLog",
    "PreparedScenario",
    "Scenario",
    "log_behaviours",
    "replay_scenario",
]

#: Replay modes of :class:`ReplayConfig`.
_MODES = ("fast", "reference")
#: Output-length predictors a scenario can fit.
PREDICTORS: tuple[str, ...] = ("histogram",)


def _bad(name: str, value: object, expected: str, fix: str = "") -> ValueError:
    return ValueError(
        f"Scenario.{name} = {value!r}; expected {expected}." + (f" Fix: {fix}" if fix else "")
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """An experiment's workload, episode split, cluster, predictor, replay settings, seed.

    Attributes:
        trace: a registered trace name (``routeplay datasets list``), a trace file, or
            ``"task-mix"`` (the paper's five-task mix, generated with ``seed``).
        cluster: a built-in cluster name (``routeplay clusters``) or a cluster TOML file.
        task_mix: ``TaskMixConfig`` fields (without ``seed``) when ``trace="task-mix"``.
        first_requests: keep only the first N requests (``None`` = all).
        rate_scale: multiply the arrival rate by this factor (> 0).
        episode_requests: requests per episode window (exactly one of this and
            ``episode_duration_s``).
        episode_duration_s: window length in seconds.
        drop_partial: drop the partial last window.
        test_fraction: share of (latest) windows held out for testing, in (0, 1); the
            earlier ones train the predictor and the learned routers. ``None``: every
            window is a test episode and there is no training split.
        max_test_episodes: replay at most this many (the earliest) test episodes (>= 2).
        predictor: ``None`` or ``"histogram"`` (fitted on the training episodes).
        predictor_features: predictor features (default: task and prompt tokens when
            the trace has tasks, else prompt tokens).
        predictor_preset: latency preset whose decode time defines the predictor's
            buckets (e.g. ``"llama2-7b/v100-paper"``); ``None`` = the latency model of
            the cluster's first instance.
        mode: replay mode, ``"fast"`` or ``"reference"``.
        timeline_sample_interval_s: timeline sampling period of comparison replays
            (``None`` = no timelines); logging never samples timelines.
        seed: base seed: task-mix generation, replays (:func:`episode_seed`), behaviour
            logging and training (unless the training config sets its own), bootstrap.
        base_dir: folder that relative trace and cluster paths are resolved against.

    Raises:
        ValueError: naming the field, its value, what was expected and the fix.

    Example:
        >>> from routeplay.replay import Scenario
        >>> s = Scenario(trace="task-mix", task_mix={"n_requests": 40, "rate_per_s": 5.0},
        ...              episode_requests=10, test_fraction=0.5, cluster="v100x2", seed=3)
        >>> prepared = s.prepare()
        >>> [e.index for e in prepared.train], [e.index for e in prepared.test]
        ([0, 1], [2, 3])
        >>> prepared.config.seed
        3
        >>> Scenario(trace="task-mix", cluster="v100x2", episode_requests=0)
        Traceback (most recent call last):
        ...
        ValueError: Scenario.episode_requests = 0; expected an integer >= 1.
    """

    trace: str
    cluster: str
    task_mix: Mapping[str, Any] = field(default_factory=dict)
    first_requests: int | None = None
    rate_scale: float = 1.0
    episode_requests: int | None = None
    episode_duration_s: float | None = None
    drop_partial: bool = True
    test_fraction: float | None = None
    max_test_episodes: int | None = None
    predictor: str | None = None
    predictor_features: tuple[str, ...] | None = None
    predictor_preset: str | None = None
    mode: Literal["fast", "reference"] = "fast"
    timeline_sample_interval_s: float | None = 1.0
    seed: int = 0
    base_dir: Path = Path(".")

    def __post_init__(self) -> None:
        owner = "Scenario"
        if not isinstance(self.trace, str) or not self.trace:
            raise _bad("trace", self.trace, "a registered trace name, a file path or 'task-mix'")
        if not isinstance(self.cluster, str) or not self.cluster:
            raise _bad("cluster", self.cluster, "a built-in cluster name or a cluster TOML path")
        if not isinstance(self.task_mix, Mapping):
            raise _bad("task_mix", self.task_mix, "a mapping of TaskMixConfig fields")
        if self.task_mix and self.trace != "task-mix":
            raise _bad(
                "task_mix", dict(self.task_mix), "no task-mix fields", "set trace='task-mix'."
            )
        if "seed" in self.task_mix:
            raise _bad(
                "task_mix", dict(self.task_mix), "no 'seed' key", "the scenario's seed is used."
            )
        object.__setattr__(self, "task_mix", dict(self.task_mix))
        if self.first_requests is not None:
            check_int(owner, "first_requests", self.first_requests, minimum=1)
        check_number(owner, "rate_scale", self.rate_scale, minimum=0.0, strict=True)
        n_req, dur = self.episode_requests, self.episode_duration_s
        if (n_req is None) == (dur is None):
            raise ValueError(
                "Scenario needs exactly one of episode_requests and episode_duration_s "
                f"(got {n_req!r} and {dur!r}). Fix: pass e.g. episode_requests=500."
            )
        if n_req is not None:
            check_int(owner, "episode_requests", n_req, minimum=1)
        if dur is not None:
            check_number(owner, "episode_duration_s", dur, minimum=0.0, strict=True)
        check_bool(owner, "drop_partial", self.drop_partial)
        tf = self.test_fraction
        if tf is not None and not (
            isinstance(tf, int | float) and not isinstance(tf, bool) and 0 < tf < 1
        ):
            raise _bad("test_fraction", tf, "a number in (0, 1) or None", "pass e.g. 0.5.")
        if self.max_test_episodes is not None:
            check_int(owner, "max_test_episodes", self.max_test_episodes, minimum=2)
        if self.predictor is not None and self.predictor not in PREDICTORS:
            raise _bad("predictor", self.predictor, f"None or one of {list(PREDICTORS)}")
        if self.predictor is not None and tf is None:
            raise _bad(
                "predictor",
                self.predictor,
                "a test_fraction beside it (the predictor is fitted on the training episodes)",
                "set test_fraction, e.g. 0.5.",
            )
        if self.predictor_features is not None:
            feats = tuple(self.predictor_features)
            if not feats or not all(isinstance(f, str) and f for f in feats):
                raise _bad("predictor_features", feats, "a non-empty tuple of column names")
            object.__setattr__(self, "predictor_features", feats)
        if self.predictor_preset is not None:
            from routeplay.estimator import list_presets

            if self.predictor_preset not in list_presets():
                raise _bad(
                    "predictor_preset",
                    self.predictor_preset,
                    f"None or a latency preset from {list_presets()}",
                )
        if self.mode not in _MODES:
            raise _bad("mode", self.mode, f"one of {list(_MODES)}")
        interval = self.timeline_sample_interval_s
        if interval is not None:
            check_number(owner, "timeline_sample_interval_s", interval, minimum=0.0, strict=True)
        check_int(owner, "seed", self.seed, minimum=0)
        object.__setattr__(self, "base_dir", Path(self.base_dir))

    # ------------------------------------------------------------------ parts

    def replay_config(self) -> ReplayConfig:
        """The replay settings (base seed = ``seed``; :func:`episode_seed` per episode)."""
        return ReplayConfig(
            seed=self.seed,
            mode=self.mode,
            timeline_sample_interval_s=self.timeline_sample_interval_s,
        )

    def _resolve(self, value: str) -> str:
        p = (self.base_dir / value).expanduser()
        return str(p) if p.is_file() else value

    def load_cluster(self) -> ClusterConfig:
        """The cluster (a built-in name or a TOML file, relative to ``base_dir``)."""
        from ..engine._clusters import load_cluster

        return load_cluster(self._resolve(self.cluster))

    def load_trace(self) -> pl.DataFrame:
        """The workload: the trace (or generated task mix), cut and rate-scaled."""
        from routeplay.datasets import (
            TaskMixConfig,
            generate_task_mix,
            load_trace,
            scale_arrival_rate,
        )

        if self.trace == "task-mix":
            trace = generate_task_mix(TaskMixConfig(**dict(self.task_mix), seed=self.seed))
        else:
            trace = load_trace(self._resolve(self.trace))
        if self.first_requests is not None:
            trace = trace.head(self.first_requests)
        if self.rate_scale != 1.0:
            trace = scale_arrival_rate(trace, self.rate_scale)
        return trace  # type: ignore[no-any-return]

    def prepare(self) -> PreparedScenario:
        """Load the trace, split it, load the cluster and fit the predictor.

        Raises:
            ValueError: when the split yields fewer than 2 test episodes (paired
                statistics need 2), or a predictor without training episodes.
        """
        from routeplay.datasets import split_episodes, split_train_test

        trace = self.load_trace()
        episodes = split_episodes(
            trace,
            n_requests=self.episode_requests,
            duration_s=self.episode_duration_s,
            drop_partial=self.drop_partial,
        )
        train: list[Episode] = []
        test = list(episodes)
        if self.test_fraction is not None:
            train, test = split_train_test(episodes, test_fraction=self.test_fraction)
        if self.max_test_episodes is not None:
            test = test[: self.max_test_episodes]
        if len(test) < 2:
            raise ValueError(
                f"the scenario yields {len(test)} test episode(s) ({len(episodes)} windows in "
                f"all); expected at least 2 for paired statistics. Fix: use smaller windows "
                "(episode_requests/episode_duration_s), more requests or a larger test_fraction."
            )
        cluster = self.load_cluster()
        predictor, evaluation = self._fit_predictor(trace, cluster, train, test)
        return PreparedScenario(
            scenario=self,
            trace=trace,
            episodes=tuple(episodes),
            train=tuple(train),
            test=tuple(test),
            cluster=cluster,
            predictor=predictor,
            predictor_evaluation=evaluation,
            config=self.replay_config(),
        )

    def _fit_predictor(
        self,
        trace: pl.DataFrame,
        cluster: ClusterConfig,
        train: Sequence[Episode],
        test: Sequence[Episode],
    ) -> tuple[OutputLengthPredictor | None, PredictorEvaluation | None]:
        if self.predictor is None:
            return None, None
        from routeplay.estimator import (
            evaluate_predictor,
            fit_length_predictor,
            get_preset,
            time_buckets,
        )

        if not train:
            raise ValueError(
                f"Scenario.predictor = {self.predictor!r} but the split has no training "
                "episode to fit it on. Fix: use more windows or a smaller test_fraction."
            )
        latency = (
            get_preset(self.predictor_preset)
            if self.predictor_preset is not None
            else cluster.instances[0].latency
        )
        features = self.predictor_features or (
            ("task", "prompt_tokens") if "task" in trace.columns else ("prompt_tokens",)
        )
        train_trace = pl.concat([e.original_trace() for e in train], how="diagonal_relaxed")
        test_trace = pl.concat([e.original_trace() for e in test], how="diagonal_relaxed")
        predictor = fit_length_predictor(train_trace, time_buckets(latency), features=features)
        return predictor, evaluate_predictor(predictor, test_trace)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict of every field."""
        out = dataclasses.asdict(self)
        out["task_mix"] = dict(self.task_mix)
        out["base_dir"] = str(self.base_dir)
        if self.predictor_features is not None:
            out["predictor_features"] = list(self.predictor_features)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class PreparedScenario:
    """A scenario's materialised parts (:meth:`Scenario.prepare`), or hand-built ones.

    Scripts with their own episodes (e.g. independent task-mix draws) build one
    directly; every pipeline function takes this.

    Attributes:
        scenario: the scenario (``None`` when built by hand).
        trace: the whole workload (``None`` when built by hand).
        episodes: every window, in time order.
        train: training episodes (logged, fit the predictor); may be empty.
        test: test episodes (replayed for comparisons), at least one.
        cluster: the cluster.
        predictor: the output-length predictor or ``None``.
        predictor_evaluation: its held-out quality on the test episodes, if fitted here.
        config: replay settings; its seed is the base seed.
    """

    scenario: Scenario | None
    trace: pl.DataFrame | None
    episodes: tuple[Episode, ...]
    train: tuple[Episode, ...]
    test: tuple[Episode, ...]
    cluster: ClusterConfig
    predictor: OutputLengthPredictor | None
    predictor_evaluation: PredictorEvaluation | None
    config: ReplayConfig

    @property
    def seed(self) -> int:
        """The base seed (``config.seed``)."""
        return int(self.config.seed)

    @property
    def log_config(self) -> ReplayConfig:
        """The replay settings of behaviour logging (no timelines)."""
        return replace(self.config, timeline_sample_interval_s=None)

    @property
    def layout(self) -> ObservationLayout:
        """The observation layout of behaviour logs and learned routers."""
        from ..rl._transitions import default_layout

        return default_layout(self.cluster, self.log_config, self.predictor)

    def episodes_of(self, split: str) -> tuple[Episode, ...]:
        """``"train"`` or ``"test"`` episodes."""
        if split not in ("train", "test"):
            raise ValueError(f"split = {split!r}; expected 'train' or 'test'.")
        return self.train if split == "train" else self.test

    def max_sim_time_s(self, slack_s: float, *, split: str = "test") -> float:
        """The latest arrival of the split's episodes plus ``slack_s`` (a replay guard)."""
        eps = self.episodes_of(split)
        return max(float(e.trace["arrival_s"].max()) for e in eps) + float(slack_s)


def replay_scenario(
    prepared: PreparedScenario,
    routers: Mapping[str, Router | RouterFactory],
    *,
    split: str = "test",
    max_sim_time_s: float | None = None,
    show_progress: bool = False,
) -> EpisodeReplays:
    """Replay every router on every episode of a split, paired, with timelines.

    Episode ``k`` is replayed with seed ``episode_seed(prepared.seed, k)`` for every
    router (``k`` = the episode's global index).

    Args:
        prepared: the prepared scenario.
        routers: label -> router or zero-argument factory.
        split: ``"test"`` (default) or ``"train"``.
        max_sim_time_s: simulated-time guard of every replay (``None``: the config's).
        show_progress: a progress bar over replays.

    Returns:
        :class:`~routeplay.replay.EpisodeReplays` (``timelines`` kept when the
        scenario samples them).

    Example:
        >>> from routeplay.replay import Scenario, make_router, replay_scenario
        >>> prepared = Scenario(trace="task-mix", task_mix={"n_requests": 20},
        ...     episode_requests=10, cluster="v100x2").prepare()
        >>> out = replay_scenario(prepared, {"rr": lambda: make_router("round-robin")})
        >>> out.summaries.select("router", "episode").rows()
        [('rr', 0), ('rr', 1)]
    """
    eps = prepared.episodes_of(split)
    config = prepared.config
    if max_sim_time_s is not None:
        config = replace(config, max_sim_time_s=float(max_sim_time_s))
    return replay_episodes(
        [e.trace for e in eps],
        prepared.cluster,
        routers,
        config=config,
        predictor=prepared.predictor,
        episode_ids=[e.index for e in eps],
        keep_timelines=config.timeline_sample_interval_s is not None,
        show_progress=show_progress,
    )


@dataclass(frozen=True, slots=True)
class BehaviourLog:
    """One behaviour's transition file (:func:`log_behaviours`).

    Attributes:
        behaviour: the router name.
        path: the Parquet file.
        result: the logging result, ``None`` when an existing file was reused.
    """

    behaviour: str
    path: Path
    result: TransitionLogResult | None


def training_logs_plan(
    prepared: PreparedScenario, behaviours: Sequence[str], who: str, kind: str
) -> tuple[list[str], list[pl.DataFrame], int]:
    """``(behaviour names, training traces, episode offset)`` of a scenario's logs.

    The episode offset is the first training window's global index when the training
    windows are contiguous (so episode ``k`` is logged with the replay seed an
    evaluation of that window would use), else 0.

    Raises:
        ValueError: no training episodes; no behaviours or a behaviour twice (``who``
            and ``kind`` name the caller and what the names are, in the message).
    """
    if not prepared.train:
        raise ValueError(
            f"{who} needs training episodes; the scenario has none. Fix: set "
            "Scenario.test_fraction (e.g. 0.5) so that the earlier windows are logged."
        )
    names = list(behaviours)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"behaviours = {names!r}; expected distinct {kind} names, at least one.")
    traces = [e.trace for e in prepared.train]
    first = int(prepared.train[0].index)
    contiguous = [int(e.index) for e in prepared.train] == list(range(first, first + len(traces)))
    return names, traces, first if contiguous else 0


def log_behaviours(
    prepared: PreparedScenario,
    behaviours: Sequence[str],
    *,
    reward: str | RewardFunction,
    epsilon: float,
    out_dir: str | Path,
    seed: int | None = None,
    reuse_existing: bool = False,
    show_progress: bool = False,
) -> list[BehaviourLog]:
    """Log each behaviour heuristic on the training episodes (``<out_dir>/<name>.parquet``).

    Every behaviour replays the same training episodes; episode ``k`` (global index) is
    logged with ``log_transitions(seed=seed, ...)`` at episode index ``k``, whatever the
    behaviour, so behaviours differ only by their own decisions. The workload-guided
    reward's ``k`` is the episode's position among the training episodes.

    Args:
        prepared: the prepared scenario (its ``train`` episodes, cluster, predictor,
            layout and replay settings are used).
        behaviours: registered heuristic router names.
        reward: a reward name (``REWARD_VARIANTS``) or function.
        epsilon: probability of a uniformly random action, in [0, 1].
        out_dir: folder of the Parquet files (created).
        seed: logging seed (default: the scenario's seed).
        reuse_existing: keep a behaviour's file when it exists (resumed runs).
        show_progress: progress bars.

    Returns:
        One :class:`BehaviourLog` per behaviour, in order.

    Raises:
        ValueError: no training episodes, no behaviours, a behaviour twice.
    """
    from ..rl._transitions import log_transitions
    from ..routers._registry import make_router

    names, traces, offset = training_logs_plan(prepared, behaviours, "log_behaviours", "router")
    routers = {name: make_router(name) for name in names}  # fail fast on a bad name
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layout = prepared.layout
    logs: list[BehaviourLog] = []
    for name in names:
        path = out / f"{name}.parquet"
        if reuse_existing and path.is_file():
            logs.append(BehaviourLog(name, path, None))
            continue
        res = log_transitions(
            traces,
            prepared.cluster,
            routers[name],
            reward=reward,
            path=path,
            epsilon=epsilon,
            seed=prepared.seed if seed is None else int(seed),
            predictor=prepared.predictor,
            layout=layout,
            config=prepared.log_config,
            episode_offset=offset,
            show_progress=show_progress,
        )
        logs.append(BehaviourLog(name, res.path, res))
    return logs
