"""``routeplay train`` and ``routeplay evaluate``: offline RL routers from the command line.

``routeplay train`` trains a router from transition Parquet files (``--transitions``,
e.g. written by ``routeplay log``) or logs heuristic behaviour on a workload first
(``--trace NAME`` windows or ``--task-mix``), then saves the router folder
(:func:`~routeplay.offline_rl.save_router`).

``routeplay train --from-lookahead`` (with ``--task-mix`` or ``--trace``) trains a router
that imitates ``lookahead-oracle`` instead (:func:`~routeplay.offline_rl.imitate_lookahead`):
a heuristic (``--behaviours``, one name, default min-min) drives the simulator on the
training episodes, the lookahead labels ``--label-decisions`` decisions with its action,
DiscreteBC learns them, then each of ``--dagger-rounds`` rounds lets the student drive,
labels its states and retrains on the union. The labels come from an ORACLE teacher
(true output lengths and future arrivals inside its simulator forks); the saved router
sees only the ordinary observation and is deployable. The lookahead costs ~50-150 ms per
labelled decision on a loaded cluster. ``--n-steps`` is per round.

``routeplay train --fine-tune-steps N --validation-episodes V`` (with ``--task-mix`` or
``--trace``; algorithm cql, bcq or double-dqn) holds the last V training windows out
(neither logged nor fine-tuned on), trains the offline policy on the other windows'
logs, then continues it online in the simulator for N env steps on those windows
(:func:`~routeplay.offline_rl.fine_tune_online`, reward ``--fine-tune-reward``, default
``--reward``, in the offline run's reward units). The offline start and then the policy
every ``--fine-tune-eval-every`` steps are replayed on the V validation windows; the one
with the least mean E2E is saved (the offline start when nothing beats it), and training
stops after ``--fine-tune-patience`` evaluations without improvement. ``OUT/online/``
holds ``validation_curve.parquet`` (one row per evaluation, ``kept`` flag),
``online_curve_long.parquet`` (step, metric, value, run), ``learning_curve.parquet``
(per training episode) and ``online.json`` (settings and the selection). A resumed run
fine-tunes again from the offline checkpoint (deterministic for a seed).

``routeplay evaluate`` replays a saved router folder against heuristics on held-out
episodes, paired, and prints the comparison (:func:`~routeplay.offline_rl.evaluate_routers`).

Episodes: the workload flags build one :class:`~routeplay.replay.Scenario` (the class
the report job and Python code build). With ``--trace`` the trace is cut into windows
of ``--window-requests`` requests (a partial last window is dropped); ``train`` logs
the earliest ``1 - test_fraction`` of them, ``evaluate`` replays the latest
``test_fraction``. With ``--task-mix`` one mix of ``2 x --n-episodes`` windows is
generated with ``--seed``: the first half trains, the second half is held out. Give
``train`` and ``evaluate`` the same workload flags and ``--seed`` (the scenario's
seed: mix generation, episode ``k`` replays and logs with seed ``seed + k``, training,
bootstrap). ``--predictor histogram`` fits an output-length predictor on the training
windows (time buckets of the cluster's first instance, or ``--predictor-preset``);
the default is none (observations carry one decode bucket). Learned routers are
labelled with their algorithm key (``cql``); their fallback decisions are counted in
the table's ``n_fallback_routes`` column. Defaults (steps, behaviours, fallback bound,
simulated-time slack) are :class:`~routeplay.offline_rl.LearningConfig`'s, as in a job
file's ``[training]``; ``routeplay train`` + ``routeplay evaluate`` and the report job
give the same table on the same scenario.

Output folder of ``train`` (``--out``): the work happens in ``.<name>.partial`` beside
it, which is renamed to ``--out`` when the router is saved, so a killed run never
leaves a folder that looks complete. ``train.json`` in the folder records the run's
settings (training flags, the input files' sha256 or the behaviour-logging flags) and
their sha256. When ``--out`` (or an unfinished ``.<name>.partial``) already exists,
``train`` refuses before touching anything unless told what to do: ``--resume``
continues an unfinished run with the same settings (a finished one is left as it is),
``--overwrite`` starts over and replaces the folder when the new router is complete.
Errors are one line on stderr with exit status 2 (130 when interrupted).

Nothing is unpickled: ``evaluate`` loads the TorchScript ``policy.pt`` of each router
folder, and a resumed run reads its checkpoint with ``torch.load(weights_only=True)``.
"""

# Why this module is long: the commands share workload flags, run-folder handling and
# error wording; each command's body is short.

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

_LOOKAHEAD_BEHAVIOUR = "min-min"
_DEFAULT_HEURISTICS = "round-robin,least-connections,jsq-tokens,least-loaded,min-min,impact-greedy"


def _learning_default(name: str) -> Any:
    """A :class:`LearningConfig` default (the one place it is defined)."""
    from ._pipeline import LearningConfig

    return getattr(LearningConfig(), name)


def _online_default(name: str) -> Any:
    """An :class:`OnlineConfig` default (the one place it is defined)."""
    from ._online import OnlineConfig

    for f in dataclasses.fields(OnlineConfig):
        if f.name == name:
            return f.default
    raise KeyError(name)  # pragma: no cover - a field name typo


def _add_workload(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload: the scenario (give train and evaluate the same flags)")
    g.add_argument("--trace", help="registered trace name or path, cut into windows")
    g.add_argument("--task-mix", action="store_true", help="generate the paper's task mix")
    g.add_argument("--window-requests", type=int, default=2000, help="requests per window")
    g.add_argument("--test-fraction", type=float, default=0.3, help="latest windows held out")
    g.add_argument(
        "--n-episodes", type=int, default=10, help="task-mix windows per split (train, held out)"
    )
    g.add_argument("--rate", type=float, default=20.0, help="task-mix arrival rate (req/s)")
    g.add_argument("--cluster", default="v100x4", help="built-in cluster name or TOML file")
    g.add_argument(
        "--predictor",
        choices=("none", "histogram"),
        default="none",
        help="output-length predictor fitted on the training windows (default none)",
    )
    g.add_argument(
        "--predictor-preset",
        default=None,
        help="latency preset of the predictor's time buckets (default: the cluster's first "
        "instance)",
    )
    g.add_argument("--seed", type=int, default=0, help="the scenario's seed (and training's)")


def _add_display(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--progress",
        action="store_true",
        help="show progress even when stderr is not a terminal (default: only on a terminal)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress and no stage lines")


def _show(args: argparse.Namespace) -> bool:
    from routeplay._console import progress_enabled

    return progress_enabled(quiet=args.quiet, force=args.progress)


def _say(args: argparse.Namespace, message: str) -> None:
    """A stage line on stderr (dropped with --quiet)."""
    if not args.quiet:
        print(message, file=sys.stderr)


#: ``routeplay train`` flags that set one LearningConfig field each: (field, type, help).
_LEARNING_FLAGS: tuple[tuple[str, type, str | None], ...] = (
    ("n_candidates", int, "shortlist slots of a learned scheduler (--decision schedule)"),
    ("epsilon", float, "exploration of the logged runs"),
    ("reward_scale", float, None),
    ("gamma", float, "discount factor (Q-learning algorithms)"),
    (
        "target_update_interval",
        int,
        "gradient steps between target-network copies (Q-learning algorithms)",
    ),
    (
        "learning_rate",
        float,
        "Adam learning rate of offline training (--from-lookahead: its own, 1e-3)",
    ),
)


def register(subparsers: Any) -> None:
    """Add ``train`` and ``evaluate`` to the ``routeplay`` parser."""
    from ._pipeline import DECISIONS, DEFAULT_SCHEDULER_BEHAVIOURS

    p = subparsers.add_parser(
        "train",
        help="train a router offline (d3rlpy) from transition logs or heuristic replays",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--transitions", nargs="+", type=Path, help="transition Parquet files")
    _add_workload(p)
    behaviours = ",".join(_learning_default("behaviours"))
    p.add_argument(
        "--behaviours",
        help=f"comma-separated heuristics to log (default {behaviours!r}; with --decision "
        f"schedule {','.join(DEFAULT_SCHEDULER_BEHAVIOURS)!r}); with --from-lookahead the "
        f"one heuristic driving round 0 (default {_LOOKAHEAD_BEHAVIOUR!r})",
    )
    p.add_argument(
        "--decision",
        choices=DECISIONS,
        default="route",
        help="what the policy decides: the instance of each request (route, default) or "
        "which queued request a free instance serves next (schedule: a learned scheduler "
        "over a shortlist of the queue, trained on scheduler logs)",
    )
    p.add_argument("--reward", default=_learning_default("reward"), help="reward of the logs")
    p.add_argument(
        "--reward-normalization",
        choices=("none", "scale", "standardize"),
        default=_learning_default("reward_normalization"),
        help="transform of the logged rewards before training (statistics of the logs)",
    )
    for field, kind, text in _LEARNING_FLAGS:  # flags whose default is LearningConfig's
        p.add_argument(
            "--" + field.replace("_", "-"), type=kind, default=_learning_default(field), help=text
        )
    p.add_argument(
        "--algorithm", help="cql (default), bcq, bc or double-dqn; bc with --from-lookahead"
    )
    la = p.add_argument_group("imitation of lookahead-oracle (--from-lookahead)")
    la.add_argument(
        "--from-lookahead",
        action="store_true",
        help="label visited states with lookahead-oracle's action and train DiscreteBC on "
        "them (+ DAgger rounds); needs --task-mix or --trace",
    )
    la.add_argument("--label-decisions", type=int, default=3000, help="labels per round")
    la.add_argument(
        "--dagger-rounds", type=int, default=1, help="rounds where the student drives (>= 0)"
    )
    la.add_argument("--label-every", type=int, default=1, help="label every k-th decision")
    la.add_argument(
        "--teacher-base",
        default="min-min",
        help="the router the lookahead's rollouts continue with (default min-min)",
    )
    la.add_argument(
        "--tie-break",
        default="min-min",
        help="BC target among actions within --tie-tolerance-s of the lookahead's best: "
        "min-min (default), min-total-latency (a residual teacher: that heuristic's pick "
        "unless the lookahead is clearly better) or teacher",
    )
    la.add_argument(
        "--tie-tolerance-s",
        type=float,
        default=1e-6,
        help="rollout-cost difference (s) that still counts as a tie",
    )
    la.add_argument(
        "--horizon-s", type=float, default=0.5, help="lookahead rollout horizon (simulated s)"
    )
    la.add_argument(
        "--label-workers",
        type=int,
        default=1,
        help="processes that label episodes at once (the labels are the same for any count; "
        "1 = label in this process)",
    )
    la.add_argument(
        "--validation-episodes",
        type=int,
        default=0,
        help="hold out the last N training windows for selection: --from-lookahead keeps the "
        "round whose student has the least mean E2E on them (they are not labelled); "
        "--fine-tune-steps keeps the policy (offline start included) with the least mean E2E "
        "on them (they are neither logged nor fine-tuned on); 0 = no selection",
    )
    ft = p.add_argument_group(
        "online fine-tuning after the offline stage (--fine-tune-steps; needs "
        "--validation-episodes)"
    )
    ft.add_argument(
        "--fine-tune-steps",
        type=int,
        default=0,
        help="continue the offline policy online in the simulator for N env steps on the "
        "training windows (0 = no fine-tuning); the saved router is the policy with the "
        "least validation mean E2E, the offline start included",
    )
    ft.add_argument(
        "--fine-tune-reward",
        help="reward of fine-tuning (paper-baseline, paper-workload-aware, "
        "paper-workload-guided, ...; default: --reward), in the offline run's reward units",
    )
    ft.add_argument(
        "--fine-tune-eval-every",
        type=int,
        help="env steps between validation evaluations (default: steps / 10)",
    )
    ft.add_argument(
        "--fine-tune-patience",
        type=int,
        help=f"stop after N evaluations without improvement (default "
        f"{_online_default('patience')}; 0 = never stop early)",
    )
    ft.add_argument(
        "--fine-tune-learning-rate",
        type=float,
        help="learning rate while fine-tuning (default: the offline one)",
    )
    ft.add_argument(
        "--fine-tune-epsilon",
        type=float,
        help=f"exploration rate at the first step, decaying to "
        f"{_online_default('epsilon_end')} (default {_online_default('epsilon_start')})",
    )
    p.add_argument("--n-steps", type=int, default=_learning_default("n_steps"))
    p.add_argument("--batch-size", type=int, default=_learning_default("batch_size"))
    p.add_argument("--out", type=Path, required=True, help="router folder to write")
    p.add_argument("--run-dir", type=Path, help="training run folder (default OUT/run)")
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue an unfinished run in OUT with the same settings (a finished one is "
        "kept as it is); a run with other settings is refused",
    )
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="start over; OUT is replaced once the new router is complete",
    )
    _add_display(p)
    p.set_defaults(func=_cmd_train)

    e = subparsers.add_parser(
        "evaluate",
        help="replay a saved router vs heuristics on held-out episodes (paired tests)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("--router", type=Path, nargs="+", required=True, help="router folder(s)")
    _add_workload(e)
    e.add_argument("--heuristics", default=_DEFAULT_HEURISTICS, help="comma-separated names")
    e.add_argument("--baseline", default="round-robin")
    e.add_argument(
        "--max-router-wait-s", type=float, default=_learning_default("max_router_wait_s")
    )
    e.add_argument("--fallback", default=_learning_default("fallback"))
    e.add_argument("--sim-slack-s", type=float, default=_learning_default("sim_slack_s"))
    e.add_argument("--n-boot", type=int, default=2000)
    e.add_argument("--output", type=Path, help="write the table as Parquet")
    _add_display(e)
    e.set_defaults(func=_cmd_evaluate)


_SCENARIO_FLAGS = {
    "trace": "--trace",
    "cluster": "--cluster",
    "episode_requests": "--window-requests",
    "test_fraction": "--test-fraction",
    "predictor_preset": "--predictor-preset",
    "seed": "--seed",
    "task_mix": "--rate",
}


def _scenario(args: argparse.Namespace) -> Any:
    """The :class:`~routeplay.replay.Scenario` the workload flags describe."""
    from routeplay.replay import Scenario

    if bool(args.trace) == bool(args.task_mix):
        raise ValueError(
            "give exactly one of --trace NAME and --task-mix (the workload to replay)."
        )
    try:
        if args.task_mix:
            if args.n_episodes < 2:
                raise ValueError(f"--n-episodes {args.n_episodes}; expected >= 2.")
            return Scenario(
                trace="task-mix",
                task_mix={
                    "n_requests": 2 * args.n_episodes * args.window_requests,
                    "rate_per_s": args.rate,
                },
                episode_requests=args.window_requests,
                test_fraction=0.5,
                cluster=args.cluster,
                predictor=None if args.predictor == "none" else args.predictor,
                predictor_preset=args.predictor_preset,
                seed=args.seed,
            )
        return Scenario(
            trace=args.trace,
            episode_requests=args.window_requests,
            test_fraction=args.test_fraction,
            cluster=args.cluster,
            predictor=None if args.predictor == "none" else args.predictor,
            predictor_preset=args.predictor_preset,
            seed=args.seed,
        )
    except ValueError as exc:
        text = str(exc)
        for name, flag in _SCENARIO_FLAGS.items():
            text = text.replace(f"Scenario.{name} =", f"{flag}:")
        raise ValueError(text) from None


def _prepare(args: argparse.Namespace) -> Any:
    """The prepared scenario; a split without 2 held-out windows is a one-line error."""
    scenario = _scenario(args)
    return scenario.prepare()


def _layout_from_names(names: tuple[str, ...], n_instances: int) -> Any:
    from routeplay.replay import ObservationLayout

    for n_p in range(1, 65):
        for n_d in range(1, 65):
            layout = ObservationLayout(
                n_instances=n_instances, n_prompt_buckets=n_p, n_decode_buckets=n_d
            )
            if layout.size == len(names) and tuple(layout.names()) == names:
                return layout
    raise ValueError(
        f"the transition files' {len(names)} observation names match no ObservationLayout "
        f"with {n_instances} instances; expected files written by routeplay's log_transitions."
    )


class CommandError(ValueError):
    """A one-line error of a command (``routeplay`` prints it and exits with 2)."""


def _describe(exc: BaseException) -> str | None:
    """One line saying what went wrong, or None for errors that are not the user's input."""
    from ._files import one_line

    if isinstance(exc, KeyError) and exc.args:
        return one_line(exc.args[0], 2000)
    if isinstance(exc, (ValueError, FileNotFoundError)):
        return one_line(exc, 2000)
    if isinstance(exc, pl.exceptions.PolarsError):
        return f"cannot read the input ({type(exc).__name__}: {one_line(exc, 600)})."
    if isinstance(exc, OSError):
        where = f" {str(exc.filename)!r}" if exc.filename else ""
        what = exc.strerror or one_line(exc, 300)
        return (
            f"cannot use{where}: {what} ({type(exc).__name__}). Fix: check that the path "
            "exists, is the right kind (file or folder) and that you may read/write it."
        )
    return None


def _guarded(
    args: argparse.Namespace,
    body: Callable[[argparse.Namespace, list[Path]], int],
    *,
    interrupted: Callable[[list[Path]], str],
) -> int:
    """Run ``body``; bad input becomes one line (exit 2), Ctrl-C exit 130.

    ``body`` appends the staging folder it works in to the list it gets, so the
    message of an interruption can say where the unfinished run is. Other errors (bugs)
    go to ``routeplay.cli.main``, which prints them on one line with their type (exit
    1); ``routeplay --debug`` shows every traceback.
    """
    staged: list[Path] = []
    try:
        return body(args, staged)
    except KeyboardInterrupt:
        print(f"routeplay {args.command}: interrupted; {interrupted(staged)}", file=sys.stderr)
        return 130
    except Exception as exc:
        message = None if getattr(args, "debug", False) else _describe(exc)
        if message is None:
            raise
        raise CommandError(message) from exc


def _cmd_train(args: argparse.Namespace) -> int:
    return _guarded(args, _train, interrupted=_train_interrupted)


def _cmd_evaluate(args: argparse.Namespace) -> int:
    return _guarded(args, _evaluate, interrupted=lambda _: "nothing was written.")


def _has_checkpoint(run_dir: Path) -> bool:
    return (run_dir / "checkpoint" / "state.json").is_file()


def _train_interrupted(staged: list[Path]) -> str:
    if staged and staged[0].exists():
        return (
            f"the unfinished run is in {str(staged[0])!r}; rerun the same command with "
            "--resume to continue it, or with --overwrite to start over."
        )
    return "nothing was written."


def _check_parquet(path: Path) -> None:
    """A one-line error unless ``path`` is a readable Parquet file."""
    from ._files import one_line

    if path.is_dir():
        raise ValueError(
            f"--transitions {str(path)!r} is a folder; expected a Parquet file written by "
            "routeplay log (or a list of them, e.g. FOLDER/*.parquet)."
        )
    if not path.is_file():
        raise FileNotFoundError(
            f"--transitions {str(path)!r} does not exist; expected a Parquet file written by "
            "routeplay log."
        )
    try:
        pl.read_parquet_schema(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise ValueError(
            f"--transitions {str(path)!r} is not a readable Parquet file "
            f"({one_line(exc, 160)}); expected a file written by routeplay log."
        ) from None


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _workload_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The scenario that decides which episodes are logged (and the files' hashes)."""
    from ._files import sha256_file

    scenario = _scenario(args)
    out: dict[str, Any] = scenario.to_dict()
    out.pop("base_dir")
    for key in ("trace", "cluster"):
        path = Path(out[key])
        out[f"{key}_sha256"] = sha256_file(path) if path.is_file() else None
    return out


_FINE_TUNE_FLAGS = {
    "fine_tune_reward": "--fine-tune-reward",
    "fine_tune_eval_every": "--fine-tune-eval-every",
    "fine_tune_patience": "--fine-tune-patience",
    "fine_tune_learning_rate": "--fine-tune-learning-rate",
    "fine_tune_epsilon": "--fine-tune-epsilon",
}
_ONLINE_FLAGS = {
    "n_steps": "--fine-tune-steps",
    "eval_every_steps": "--fine-tune-eval-every",
    "patience": "--fine-tune-patience",
    "learning_rate": "--fine-tune-learning-rate",
    "epsilon_start": "--fine-tune-epsilon",
    "seed": "--seed",
}


def _fine_tune_config(args: argparse.Namespace) -> tuple[Any, str] | None:
    """(OnlineConfig, reward name) of ``--fine-tune-*``, or None without fine-tuning.

    Every check runs before any file is written; messages name the flags.
    """
    from routeplay.replay.rl._rewards import make_reward

    from ._online import OnlineConfig

    steps = args.fine_tune_steps
    if isinstance(steps, bool) or steps < 0:
        raise ValueError(
            f"--fine-tune-steps {steps!r}; expected an integer >= 0 (0 = no fine-tuning)."
        )
    given = [flag for key, flag in _FINE_TUNE_FLAGS.items() if getattr(args, key) is not None]
    if steps == 0:
        if given:
            raise ValueError(
                f"{given[0]} has no effect without --fine-tune-steps N; expected "
                "--fine-tune-steps N >= 1 with it. Fix: add --fine-tune-steps or drop the flag."
            )
        if args.validation_episodes and not args.from_lookahead:
            raise ValueError(
                f"--validation-episodes {args.validation_episodes} has no effect without "
                "--from-lookahead or --fine-tune-steps; expected one of them. Fix: drop "
                "--validation-episodes or add --fine-tune-steps N."
            )
        return None
    if args.from_lookahead:
        raise ValueError(
            "--fine-tune-steps with --from-lookahead; online fine-tuning continues a "
            "Q-learning policy (cql, bcq, double-dqn), the lookahead imitator is DiscreteBC. "
            "Fix: drop --fine-tune-steps, or train without --from-lookahead."
        )
    if args.transitions:
        raise ValueError(
            "--fine-tune-steps with --transitions; fine-tuning replays the workload's "
            "training windows and validates on the last --validation-episodes of them. Fix: "
            "drop --transitions and give --task-mix or --trace NAME."
        )
    if args.algorithm == "bc":
        raise ValueError(
            "--fine-tune-steps with --algorithm bc; online fine-tuning continues a Q-learning "
            "policy. Fix: pass --algorithm cql, bcq or double-dqn."
        )
    if args.validation_episodes < 1:
        raise ValueError(
            f"--fine-tune-steps {steps} needs --validation-episodes N >= 1 (got "
            f"{args.validation_episodes}): the saved policy is the one with the least mean "
            "E2E on N held-out training windows, the offline start included. Fix: add e.g. "
            "--validation-episodes 2."
        )
    reward = args.fine_tune_reward if args.fine_tune_reward is not None else args.reward
    make_reward(reward)
    fields: dict[str, Any] = {"n_steps": steps, "seed": args.seed}
    if args.fine_tune_eval_every is not None:
        fields["eval_every_steps"] = args.fine_tune_eval_every
    if args.fine_tune_patience is not None:
        if args.fine_tune_patience < 0:
            raise ValueError(
                f"--fine-tune-patience {args.fine_tune_patience}; expected an integer >= 0 "
                "(0 = never stop early)."
            )
        fields["patience"] = args.fine_tune_patience or None
    if args.fine_tune_learning_rate is not None:
        fields["learning_rate"] = args.fine_tune_learning_rate
    if args.fine_tune_epsilon is not None:
        fields["epsilon_start"] = args.fine_tune_epsilon
        fields["epsilon_end"] = min(_online_default("epsilon_end"), args.fine_tune_epsilon)
    try:
        config = OnlineConfig(**fields)
    except ValueError as exc:
        text = str(exc)
        for field, flag in _ONLINE_FLAGS.items():
            text = text.replace(f"OnlineConfig {field} =", f"{flag}").replace(
                f" {field} = ", f" {flag} "
            )
        raise ValueError(text) from None
    return config, reward


def _scheduler_layout_of(files: list[Path]) -> Any:
    """The ``SchedulerLayout`` of scheduler transition files, ``None`` for router logs.

    Raises:
        ValueError: the files mix scheduler and router logs, or scheduler layouts.
    """
    from routeplay.replay import SchedulerLayout

    layouts: dict[str, Any] = {}
    for f in files:
        meta = pl.read_parquet_metadata(f)
        if meta.get("routeplay.kind") == "scheduler":
            layouts[str(f)] = SchedulerLayout(**json.loads(meta["routeplay.layout"]))
        else:
            layouts[str(f)] = None
    distinct = set(layouts.values())
    if len(distinct) > 1:
        raise ValueError(
            f"--transitions mix logs of different kinds or layouts ({layouts}); expected one "
            "kind: router logs (routeplay log) or scheduler logs of one layout."
        )
    return next(iter(distinct))


def _train(args: argparse.Namespace, staged: list[Path]) -> int:
    fine = _fine_tune_config(args)
    if args.from_lookahead:
        return _train_from_lookahead(args, staged)
    if args.algorithm is None:
        args.algorithm = _learning_default("algorithms")[0]
    from ._pipeline import DEFAULT_SCHEDULER_BEHAVIOURS

    schedule = args.decision == "schedule"
    default_behaviours = ",".join(
        DEFAULT_SCHEDULER_BEHAVIOURS if schedule else _learning_default("behaviours")
    )
    if args.behaviours is None:
        args.behaviours = default_behaviours
    if schedule and fine is not None:
        raise ValueError(
            "--fine-tune-steps with --decision schedule: online fine-tuning drives routers "
            "only; expected one of them. Fix: drop --fine-tune-steps for a scheduler."
        )
    from routeplay.offline_rl import TrainConfig, build_dataset, save_router, train_router
    from routeplay.replay import (
        SchedulerLayout,
        log_behaviours,
        log_scheduler_behaviours,
        make_router,
        read_transitions,
    )
    from routeplay.replay.rl._rewards import make_reward

    from ._files import sha256_file
    from ._output import Mode, commit_output, plan_output, start_output
    from ._pipeline import LearningConfig, scheduler_log_rows

    out: Path = args.out
    mode: Mode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    TrainConfig(  # checked first: its messages name the field
        algorithm=args.algorithm,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        reward_normalization=args.reward_normalization,
        reward_scale=args.reward_scale,
        gamma=args.gamma,
        target_update_interval=args.target_update_interval,
        learning_rate=args.learning_rate,
        seed=args.seed,
    )
    # everything that decides the result, read and checked before any file is written
    names: list[str] = []
    files: list[Path] = []
    prepared: Any = None
    validation: list[pl.DataFrame] = []
    layout: Any
    if args.transitions:
        files = list(args.transitions)
        for f in files:
            _check_parquet(f)
        sched_layout = _scheduler_layout_of(files)
        if sched_layout is not None:
            layout = sched_layout
        else:
            _, meta = read_transitions(files)
            layout = _layout_from_names(meta.obs_names, meta.n_instances)
        inputs: dict[str, Any] = {"transitions_sha256": [sha256_file(f) for f in files]}
    else:
        names = [b.strip() for b in args.behaviours.split(",") if b.strip()]
        if not names:
            raise ValueError(
                f"--behaviours {args.behaviours!r} names no heuristic; expected a comma-"
                f"separated list, e.g. {default_behaviours!r}."
            )
        for name in names:
            make_router(name)
        make_reward(args.reward)
        if not 0.0 <= args.epsilon <= 1.0:
            raise ValueError(
                f"--epsilon {args.epsilon!r}; expected a probability in [0, 1]. Fix: pass "
                "e.g. --epsilon 0.1."
            )
        prepared = _prepare(args)
        layout = (
            SchedulerLayout(
                n_instances=prepared.cluster.n_instances, n_candidates=args.n_candidates
            )
            if schedule
            else prepared.layout
        )
        if fine is not None:
            n_val = args.validation_episodes
            if n_val >= len(prepared.train):
                raise ValueError(
                    f"--validation-episodes {n_val} leaves no training window to log and "
                    f"fine-tune on (the scenario gives {len(prepared.train)} training "
                    "windows); expected fewer."
                )
            validation = [e.trace for e in prepared.train[-n_val:]]
            prepared = dataclasses.replace(prepared, train=prepared.train[:-n_val])
        workload = _workload_settings(args)
        if workload["cluster_sha256"] is None:  # built-in: its full (deterministic) repr
            workload["cluster_sha256"] = _sha256_text(repr(prepared.cluster))
        inputs = {
            "behaviours": names,
            "epsilon": args.epsilon,
            "reward": args.reward,
            "workload": workload,
        }
        if schedule:  # only then: the fingerprint of router runs stays as it was
            inputs["scheduler_layout"] = dataclasses.asdict(layout)
        if fine is not None:  # only then: the fingerprint of other runs stays as it was
            inputs["fine_tune"] = {
                "online": fine[0].to_dict(),
                "reward": fine[1],
                "validation_episodes": args.validation_episodes,
            }
    learning = LearningConfig(
        decision=args.decision,
        n_candidates=args.n_candidates,
        behaviours=tuple(names),
        epsilon=args.epsilon,
        reward=args.reward,
        algorithms=(args.algorithm,),
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        reward_normalization=args.reward_normalization,
        reward_scale=args.reward_scale,
        gamma=args.gamma,
        target_update_interval=args.target_update_interval,
        learning_rate=args.learning_rate,
    )
    config = learning.train_config(
        args.algorithm, seed=args.seed, checkpoint_every_steps=min(1000, args.n_steps)
    )
    plan = plan_output(out, settings={"config": config.to_dict(), "inputs": inputs}, mode=mode)
    run_dir: Path | None = args.run_dir
    if run_dir is not None and mode == "new" and _has_checkpoint(run_dir):
        raise ValueError(
            f"--run-dir {str(run_dir)!r} already holds a training checkpoint; nothing was "
            "changed. Fix: pass --resume to continue it (refused if its config or data "
            "differ) or --overwrite to start over."
        )
    if plan.action == "done":
        print(f"{out} already holds the router these settings train; nothing to do.")
        return 0

    staging = start_output(plan)
    staged.append(staging)
    try:
        if prepared is not None and schedule:
            sched_logs = log_scheduler_behaviours(
                prepared,
                names,
                epsilon=learning.epsilon,
                out_dir=staging / "logs",
                layout=layout,
                seed=args.seed,
                reuse_existing=plan.action == "continue",  # written atomically earlier
            )
            for j, row in enumerate(scheduler_log_rows(sched_logs, staging)):
                files.append(sched_logs[j].path)
                _say(
                    args,
                    f"[{j + 1}/{len(names)}] logged {row['behaviour']}: {row['n_episodes']} "
                    f"episodes, {row['n_transitions']} transitions -> {sched_logs[j].path}",
                )
        elif prepared is not None:
            logs = log_behaviours(
                prepared,
                names,
                reward=learning.reward,
                epsilon=learning.epsilon,
                out_dir=staging / "logs",
                seed=args.seed,
                reuse_existing=plan.action == "continue",  # written atomically earlier
                show_progress=_show(args),
            )
            for j, item in enumerate(logs):
                files.append(item.path)
                res = item.result
                if res is None:
                    _say(args, f"[{j + 1}/{len(names)}] reusing {item.path}")
                else:
                    _say(
                        args,
                        f"[{j + 1}/{len(names)}] logged {res.behaviour}: {res.n_episodes} "
                        f"episodes, {res.n_transitions} transitions -> {res.path}",
                    )
        dataset = build_dataset(files)
        _say(args, dataset.card.summary())
        _say(args, f"training {args.algorithm} for {args.n_steps} steps (seed {args.seed})")
        result = train_router(
            config,
            dataset,
            run_dir=run_dir or staging / "run",
            resume=mode != "overwrite",
            show_progress=_show(args),
        )
        online = None
        if fine is not None:
            online = _fine_tune(args, fine, result, prepared, validation, staging / "online")
        save_router(result, staging, layout=layout)  # the kept policy when fine-tuned
    except Exception:
        if not _has_checkpoint(run_dir or staging / "run"):
            shutil.rmtree(staging, ignore_errors=True)  # nothing worth resuming
            staged.clear()
        raise
    commit_output(plan)
    resumed = (
        f" (resumed from step {result.n_steps_resumed_from})" if result.n_steps_resumed_from else ""
    )
    tuned = ""
    if online is not None:
        tuned = (
            f", fine-tuned online ({online.reward}, {online.n_steps_done} steps): "
            + (
                f"kept step {online.kept_step}"
                if online.improved
                else "no evaluation beat the offline start, which is kept unchanged"
            )
            + f" (validation mean E2E {online.start_validation_e2e_s:.4g} s -> "
            f"{online.kept_validation_e2e_s:.4g} s; curve in {out / 'online'})"
        )
    print(
        f"trained {args.algorithm} for {result.n_steps_done} steps{resumed} in "
        f"{result.wall_time_s:.1f} s{tuned}; router saved to {out}"
    )
    return 0


def _fine_tune(
    args: argparse.Namespace,
    fine: tuple[Any, str],
    result: Any,
    prepared: Any,
    validation: list[pl.DataFrame],
    run_dir: Path,
) -> Any:
    """Fine-tune ``result`` in place (kept policy) with validation selection."""
    from ._online import fine_tune_online

    config, reward = fine
    if run_dir.is_dir():  # a resumed run fine-tunes again from the offline checkpoint
        shutil.rmtree(run_dir)
    transform = result.reward_transform
    _say(
        args,
        f"fine-tuning online with {reward} for {config.n_steps} steps on "
        f"{len(prepared.train)} training windows, evaluating on {len(validation)} "
        f"validation windows every {config.eval_interval} steps",
    )
    online = fine_tune_online(
        result,
        [e.trace for e in prepared.train],
        prepared.cluster,
        reward=transform.wrap(reward) if transform is not None else reward,
        run_dir=run_dir,
        config=config,
        predictor=prepared.predictor,
        validation_episodes=validation,
        replay_config=prepared.log_config,
        show_progress=_show(args),
    )
    for row in online.validation.iter_rows(named=True):
        _say(
            args,
            f"  step {row['step']}: validation mean E2E {row['validation_mean_e2e_s']:.4g} s"
            + (" (best so far)" if row["best_so_far"] else ""),
        )
    return online


def _imitation_progress(run_dir: Path) -> bool:
    """Whether an imitation run folder holds work worth resuming (labels or checkpoints)."""
    return any(run_dir.glob("labels-round-*.parquet")) or any(
        _has_checkpoint(d) for d in run_dir.glob("round-*")
    )


def _train_from_lookahead(args: argparse.Namespace, staged: list[Path]) -> int:
    """``routeplay train --from-lookahead``: :func:`imitate_lookahead`, then save_router."""
    from routeplay.offline_rl import ImitationConfig, imitate_lookahead, save_router

    from ._labelling import check_n_workers
    from ._output import Mode, commit_output, plan_output, start_output

    if args.transitions:
        raise ValueError(
            "--from-lookahead labels states by replaying a workload; it does not read "
            "--transitions. Fix: drop --transitions and give --task-mix or --trace NAME."
        )
    if args.algorithm not in (None, "bc"):
        raise ValueError(
            f"--algorithm {args.algorithm!r} with --from-lookahead; the lookahead's labels "
            "train DiscreteBC only. Fix: drop --algorithm (or pass --algorithm bc)."
        )
    names = [b.strip() for b in (args.behaviours or _LOOKAHEAD_BEHAVIOUR).split(",") if b.strip()]
    if len(names) != 1:
        raise ValueError(
            f"--behaviours {args.behaviours!r} with --from-lookahead; expected one heuristic "
            f"to drive the first labelling round, e.g. {_LOOKAHEAD_BEHAVIOUR!r}."
        )
    out: Path = args.out
    mode: Mode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    flags = {
        "label_decisions": "--label-decisions",
        "dagger_rounds": "--dagger-rounds",
        "label_every": "--label-every",
        "horizon_s": "--horizon-s",
        "n_steps": "--n-steps",
        "batch_size": "--batch-size",
        "seed": "--seed",
        "behaviour": "--behaviours",
        "teacher_base": "--teacher-base",
        "tie_break": "--tie-break",
        "tie_tolerance_s": "--tie-tolerance-s",
    }
    try:
        config = ImitationConfig(
            label_decisions=args.label_decisions,
            dagger_rounds=args.dagger_rounds,
            label_every=args.label_every,
            horizon_s=args.horizon_s,
            behaviour=names[0],
            teacher_base=args.teacher_base,
            tie_break=args.tie_break,
            tie_tolerance_s=args.tie_tolerance_s,
            n_steps=args.n_steps,
            batch_size=args.batch_size,
            seed=args.seed,
        )
    except ValueError as exc:
        text = str(exc)
        for field, flag in flags.items():
            text = text.replace(f"ImitationConfig.{field} =", f"{flag}:")
        raise ValueError(text) from None
    n_val = args.validation_episodes
    if isinstance(n_val, bool) or n_val < 0:
        raise ValueError(f"--validation-episodes {n_val!r}; expected an integer >= 0.")
    label_workers = check_n_workers(args.label_workers, "--label-workers")
    prepared = _prepare(args)
    cluster = prepared.cluster
    episodes: list[pl.DataFrame] = [e.trace for e in prepared.train]
    validation: list[pl.DataFrame] | None = None
    if n_val:
        if n_val >= len(episodes):
            raise ValueError(
                f"--validation-episodes {n_val} leaves no training window to label (the "
                f"scenario gives {len(episodes)} training windows); expected fewer."
            )
        episodes, validation = episodes[:-n_val], episodes[-n_val:]
    workload = _workload_settings(args)
    if workload["cluster_sha256"] is None:  # built-in: its full (deterministic) repr
        workload["cluster_sha256"] = _sha256_text(repr(cluster))
    inputs = {
        "from_lookahead": True,
        "validation_episodes": n_val,
        "workload": workload,
    }
    plan = plan_output(out, settings={"config": config.to_dict(), "inputs": inputs}, mode=mode)
    run_dir: Path | None = args.run_dir
    if run_dir is not None and mode == "new" and run_dir.is_dir() and _imitation_progress(run_dir):
        raise ValueError(
            f"--run-dir {str(run_dir)!r} already holds labels or checkpoints; nothing was "
            "changed. Fix: pass --resume to continue it or --overwrite to start over."
        )
    if plan.action == "done":
        print(f"{out} already holds the router these settings train; nothing to do.")
        return 0
    staging = start_output(plan)
    staged.append(staging)
    work = run_dir or staging / "run"
    if mode == "overwrite" and work.is_dir():
        shutil.rmtree(work)
    _say(
        args,
        f"imitating lookahead-oracle (ORACLE teacher: true lengths, future arrivals) on "
        f"{len(episodes)} training episodes: {config.label_decisions} labels x "
        f"{config.dagger_rounds + 1} rounds, driver {config.behaviour} then the student",
    )
    try:
        result = imitate_lookahead(
            config,
            episodes,
            cluster,
            run_dir=work,
            show_progress=_show(args),
            resume=mode != "overwrite",
            validation_episodes=validation,
            say=lambda line: _say(args, line),
            label_workers=label_workers,
        )
        save_router(result.train, staging, layout=result.layout)
    except Exception:
        if not (work.is_dir() and _imitation_progress(work)):
            shutil.rmtree(staging, ignore_errors=True)  # nothing worth resuming
            staged.clear()
        raise
    commit_output(plan)
    last = result.rounds.row(result.selected_round, named=True)
    print(
        f"trained a lookahead imitator ({result.labels.n_labels} labels, "
        f"{config.dagger_rounds} DAgger rounds, kept round {result.selected_round}, student "
        f"hits its target on {last['train_accuracy']:.1%} of them); router saved to {out}"
    )
    return 0


def _evaluate(args: argparse.Namespace, staged: list[Path]) -> int:
    from routeplay.offline_rl import evaluate_scenario, learned_routers

    output: Path | None = args.output
    if output is not None and not output.parent.is_dir():
        raise ValueError(
            f"--output {str(output)!r}: folder {str(output.parent)!r} does not exist; "
            "expected an existing folder. Fix: create it or choose another --output."
        )
    learned = learned_routers(args.router)  # refused files fail before any replay
    prepared = _prepare(args)
    heuristics = [h.strip() for h in args.heuristics.split(",") if h.strip()]
    _say(
        args,
        f"replaying {len(learned) + len(heuristics)} routers on {len(prepared.test)} held-out "
        "episodes (paired)",
    )
    result = evaluate_scenario(
        prepared,
        learned,
        heuristics,
        baseline=args.baseline,
        max_router_wait_s=args.max_router_wait_s,
        fallback=args.fallback,
        sim_slack_s=args.sim_slack_s,
        n_boot=args.n_boot,
        show_progress=_show(args),
    )
    from routeplay.estimator import compute_verdict

    print(compute_verdict(result.comparison, learned=result.learned).to_text())
    print()
    print(result.summary())
    if output is not None:
        tmp = output.with_name(f".{output.name}.{os.getpid()}.tmp")
        try:
            result.to_frame().write_parquet(tmp)
            os.replace(tmp, output)
        finally:
            tmp.unlink(missing_ok=True)
        print(f"table written to {output}", file=sys.stderr)
    return 0
