"""Choose the main job's learned-router settings on validation windows, then test them.

The main job (``routeplay report --out runs/``, ``reports/jobs/default.toml``) trains
a router offline on logs of its 6 earlier (training) windows and replays it beside the
heuristics on its 6 later (test) windows. This script chooses the ``[training]``
settings without looking at the test windows:

1. **Validation split.** The job's scenario cut to its training windows only
   (``first_requests`` = the training windows' requests, ``test_fraction`` =
   ``--n-val`` of them): the first windows are logged and fit the predictor, the last
   ``--n-val`` training windows are the validation episodes. The script checks that
   these are exactly the job's training windows (same request ids, same arrivals).
2. **Grid.** Each candidate (:data:`CANDIDATES`: the job's former settings
   :data:`FORMER_JOB_TRAINING`, reward standardisation, frequent target syncs, gamma
   0.9, logs of the strongest heuristics only, BC vs CQL) is trained with
   :func:`routeplay.offline_rl.train_scenario` for every ``--val-seeds`` seed and replayed with
   :func:`routeplay.reports.evaluate_job_routers` (the report job's own evaluation) on the
   validation windows. Its score
   is the learned router's mean E2E relative to the best heuristic on the same
   windows (the report's verdict: :func:`routeplay.estimator.compute_verdict`),
   averaged over the seeds; the lowest wins. "Strongest heuristics" are ranked by
   their mean E2E on the logging windows (training side), not on any later window.
3. **Test.** The winner is trained on the job's real split (all 6 training windows)
   with each ``--test-seeds`` seed and replayed on the 6 test windows, as the job does;
   per seed the script prints the verdict line of the report (mean E2E, change vs the
   best heuristic with its bootstrap CI and paired t-test p).

Run (about 14 min on the shared 2-core machine; ``--quick`` is a ~30-second smoke run)::

    ROUTEPLAY_DATA_DIR=../shared/data nohup .venv/bin/python benchmarks/rl_main_job.py \\
        --out runs/rl_main_job > rl_main_job.log 2>&1 &

Writes ``validation.jsonl`` (one line per candidate and seed; a rerun skips lines
already there), ``test.jsonl`` and ``summary.json`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import polars as pl
from routeplay.estimator import compute_verdict
from routeplay.offline_rl import LearningConfig, train_scenario
from routeplay.replay import (
    OBSERVATION_LAYOUT_VERSION,
    PreparedScenario,
    make_router,
    replay_scenario,
)
from routeplay.reports import (
    ReportJobConfig,
    compare_job_routers,
    evaluate_job_routers,
    load_job,
    router_summary_table,
)

#: Placeholder in a candidate's ``behaviours``: the top-k heuristics by mean E2E on the
#: logging windows (``"strongest-3"``), resolved per run on training-side data only.
STRONGEST = "strongest-"

#: The grid's starting point: the main job's ``[training]`` before issue 12 (CQL on the
#: raw paper reward, logs of four heuristics incl. round robin, target sync every 1,000
#: steps). Fixed here so a rerun scores the same grid whatever the job file says now.
FORMER_JOB_TRAINING = LearningConfig(
    behaviours=("round-robin", "least-connections", "jsq-tokens", "min-min"),
    epsilon=0.1,
    reward="paper-workload-guided",
    algorithms=("cql",),
    n_steps=5000,
    n_steps_per_epoch=100,
    batch_size=256,
    learning_rate=3e-4,
    gamma=0.99,
    target_update_interval=1000,
    reward_normalization="none",
)

#: Validation grid: name -> overrides of :data:`FORMER_JOB_TRAINING`. Why each:
#: ``job`` is today's setting (raw paper reward, target sync every 1,000 steps, i.e. 5
#: syncs); ``std`` standardises the reward (the CQL collapse diagnosis: Huber TD loss
#: on raw rewards of ~1e3 never fits); ``std-sync100`` adds frequent target syncs (the
#: largest single gain in that diagnosis); ``-g0.9`` a shorter horizon (helped a little
#: there); ``strong3`` logs only the three best heuristics of the logging windows (a
#: dataset nearer to the best policy), ``-10k`` with twice the steps (the job's wall
#: time allows it); ``top1`` logs only the best one of the logging windows, ``minmin``
#: only min-min (the paper's strongest heuristic), ``mtl`` only ``min-total-latency`` (the
#: strongest deployable heuristic of docs/notes/headroom.md), ``eps0.2`` with more exploration;
#: ``bc-*`` imitation, the reference CQL should match.
CANDIDATES: dict[str, dict[str, Any]] = {
    "cql-job": {},
    "cql-std": {"reward_normalization": "standardize"},
    "cql-std-sync100": {"reward_normalization": "standardize", "target_update_interval": 100},
    "cql-std-sync100-g0.9": {
        "reward_normalization": "standardize",
        "target_update_interval": 100,
        "gamma": 0.9,
    },
    "cql-std-sync100-strong3": {
        "reward_normalization": "standardize",
        "target_update_interval": 100,
        "behaviours": (f"{STRONGEST}3",),
    },
    "cql-std-sync100-strong3-g0.9": {
        "reward_normalization": "standardize",
        "target_update_interval": 100,
        "gamma": 0.9,
        "behaviours": (f"{STRONGEST}3",),
    },
    "cql-std-sync100-strong3-10k": {
        "reward_normalization": "standardize",
        "target_update_interval": 100,
        "behaviours": (f"{STRONGEST}3",),
        "n_steps": 10_000,
    },
    "cql-std-sync100-top1": {
        "reward_normalization": "standardize",
        "target_update_interval": 100,
        "behaviours": (f"{STRONGEST}1",),
    },
    "cql-std-sync100-minmin": {
        "reward_normalization": "standardize",
        "target_update_interval": 100,
        "behaviours": ("min-min",),
    },
    "cql-std-sync100-minmin-eps0.2": {
        "reward_normalization": "standardize",
        "target_update_interval": 100,
        "behaviours": ("min-min",),
        "epsilon": 0.2,
    },
    "cql-std-sync100-g0.9-mtl": {
        "reward_normalization": "standardize",
        "target_update_interval": 100,
        "gamma": 0.9,
        "behaviours": ("min-total-latency",),
    },
    "bc-mtl": {"algorithms": ("bc",), "behaviours": ("min-total-latency",)},
    "bc-strong3": {"algorithms": ("bc",), "behaviours": (f"{STRONGEST}3",)},
    "bc-top1": {"algorithms": ("bc",), "behaviours": (f"{STRONGEST}1",)},
    "bc-minmin": {"algorithms": ("bc",), "behaviours": ("min-min",)},
}
QUICK_CANDIDATES = ("cql-job", "cql-std-sync100-strong3")


def log(message: str) -> None:
    """A time-stamped progress line on stdout."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def validation_scenario(
    job: ReportJobConfig, n_val: int
) -> tuple[PreparedScenario, PreparedScenario]:
    """The job's training windows only, the last ``n_val`` of them held out.

    Returns:
        ``(validation, job_prepared)``: the validation split and the job's own
        prepared scenario (for the check and for the test runs).

    Raises:
        ValueError: when the job has no episode-count windows or too few training
            windows, or the validation windows are not the job's training windows.
    """
    scenario = job.scenario
    full = scenario.prepare()
    n_train = len(full.train)
    if scenario.episode_requests is None or n_train < n_val + 1:
        raise ValueError(
            f"job {job.name!r}: {n_train} training windows (episode_requests "
            f"{scenario.episode_requests!r}); expected windows of a request count and at least "
            f"{n_val + 1} training windows. Fix: lower --n-val."
        )
    val = dataclasses.replace(
        scenario,
        first_requests=n_train * scenario.episode_requests,
        test_fraction=n_val / n_train,
        max_test_episodes=None,
    ).prepare()
    if len(val.test) != n_val or len(val.train) != n_train - n_val:
        raise ValueError(
            f"validation split has {len(val.train)} logging + {len(val.test)} validation "
            f"windows; expected {n_train - n_val} + {n_val}."
        )
    for mine, theirs in zip((*val.train, *val.test), full.train, strict=True):
        if mine.index != theirs.index or not mine.trace.equals(theirs.trace):
            raise ValueError(
                f"validation window {mine.index} differs from the job's training window "
                f"{theirs.index}; the validation split must reuse the training windows."
            )
    test_ids = {int(r) for e in full.test for r in e.trace["request_id"]}
    seen = {int(r) for e in val.episodes for r in e.trace["request_id"]}
    if test_ids & seen:
        raise ValueError("validation split overlaps the job's test windows.")
    return val, full


def heuristic_means(
    prepared: PreparedScenario, heuristics: Sequence[str], split: str
) -> dict[str, float]:
    """Each heuristic's mean E2E (mean over episodes of the episode mean) on a split."""
    out = replay_scenario(
        prepared, {h: (lambda h=h: make_router(h)) for h in heuristics}, split=split
    )
    per = out.summaries.group_by("router").agg(pl.col("e2e_s_mean").mean())
    return {str(r): float(v) for r, v in per.iter_rows()}


def heuristic_ranking(prepared: PreparedScenario, heuristics: Sequence[str]) -> list[str]:
    """Heuristics ordered by mean E2E (mean over episodes) on the *training* episodes."""
    means = heuristic_means(prepared, heuristics, "train")
    return sorted(heuristics, key=lambda h: (means[h], h))


def resolve(
    base: LearningConfig, overrides: Mapping[str, Any], ranking: Sequence[str], seed: int
) -> LearningConfig:
    """The grid's base with a candidate's overrides and the training seed."""
    values = dict(overrides)
    behaviours = values.get("behaviours")
    if behaviours and str(behaviours[0]).startswith(STRONGEST):
        values["behaviours"] = tuple(ranking[: int(str(behaviours[0])[len(STRONGEST) :])])
    return dataclasses.replace(base, **values, seed=seed)


def run_one(
    job: ReportJobConfig,
    prepared: PreparedScenario,
    learning: LearningConfig,
    run_dir: Path,
) -> dict[str, Any]:
    """Train on ``prepared.train``, replay on ``prepared.test``; the report's verdict."""
    t0 = time.perf_counter()
    trained = train_scenario(prepared, learning, run_dir)
    t_train = time.perf_counter() - t0
    evaluation = evaluate_job_routers(
        dataclasses.replace(job, training=learning), prepared, trained.routers
    )
    comparison = compare_job_routers(job, evaluation.replays.requests)
    summary = router_summary_table(evaluation.replays.summaries)
    verdict = compute_verdict(comparison, summary, learned=tuple(trained.routers))
    (change,) = verdict.learned
    fallbacks = int(evaluation.fallbacks["n_fallback_routes"].sum())
    return {
        "label": change.router,
        "learned_e2e_s": change.router_value_s,
        "best_heuristic": change.reference,
        "best_heuristic_e2e_s": change.reference_value_s,
        "change_pct": 100.0 * (change.router_value_s / change.reference_value_s - 1.0),
        "ci_pct": [-100.0 * change.ci_high, -100.0 * change.ci_low],
        "p_value": change.p_value,
        "outcome": change.outcome(),
        "verdict_line": next(line for line in verdict.lines if line.startswith("Learned router")),
        "n_fallback_routes": fallbacks,
        "n_transitions": trained.card.n_transitions,
        "behaviours": list(learning.behaviours),
        "train_episode_ids": list(trained.train_episode_ids),
        "eval_episode_ids": [int(e.index) for e in prepared.test],
        "train_s": round(t_train, 1),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _append(path: Path, row: Mapping[str, Any]) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Select on validation windows, then test the winner with several seeds.

    Example:
        ``python benchmarks/rl_main_job.py --quick --out runs/rl_main_job_quick``
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job", default="default", help="built-in job name or job file")
    parser.add_argument("--out", type=Path, default=Path("runs/rl_main_job"))
    parser.add_argument("--n-val", type=int, default=2, help="validation windows (last ones)")
    parser.add_argument("--val-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--test-seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--candidates", nargs="+", default=None, help="names from CANDIDATES")
    parser.add_argument("--n-steps", type=int, default=None, help="override every n_steps")
    parser.add_argument(
        "--choose", default=None, help="skip selection and test this candidate (a name)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 candidates, 200 steps")
    args = parser.parse_args(argv)
    names = list(args.candidates or CANDIDATES)
    if args.quick:
        names = list(args.candidates or QUICK_CANDIDATES)
        args.n_steps = args.n_steps or 200
        args.val_seeds, args.test_seeds = args.val_seeds[:1], args.test_seeds[:1]
    unknown = [n for n in [*names, args.choose] if n is not None and n not in CANDIDATES]
    if unknown:
        parser.error(f"unknown candidate(s) {unknown}; expected names from {list(CANDIDATES)}")
    job = load_job(args.job)
    base = dataclasses.replace(
        FORMER_JOB_TRAINING,
        **(
            {}
            if job.training is None
            else {  # the job's replay-side settings; the grid's training settings are fixed
                "max_router_wait_s": job.training.max_router_wait_s,
                "fallback": job.training.fallback,
                "sim_slack_s": job.training.sim_slack_s,
            }
        ),
    )
    if args.n_steps is not None:
        base = dataclasses.replace(base, n_steps=args.n_steps)
    args.out.mkdir(parents=True, exist_ok=True)
    val, full = validation_scenario(job, args.n_val)
    log(
        f"job {job.name}: logging windows {[e.index for e in val.train]}, validation windows "
        f"{[e.index for e in val.test]}, test windows {[e.index for e in full.test]} "
        f"(never used for selection); observation layout v{OBSERVATION_LAYOUT_VERSION}"
    )
    ranking = heuristic_ranking(val, job.routers)
    log(f"heuristics by mean E2E on the logging windows: {ranking}")
    on_val = heuristic_means(val, job.routers, "test")
    log(
        "heuristics' mean E2E on the validation windows: "
        + ", ".join(f"{h} {on_val[h]:.4f} s" for h in sorted(on_val, key=on_val.__getitem__))
    )
    val_file = args.out / "validation.jsonl"
    done = {(r["candidate"], r["seed"], r["n_steps"]) for r in _read_jsonl(val_file)}
    chosen = args.choose
    if chosen is None:
        for name in names:
            for seed in args.val_seeds:
                learning = resolve(base, CANDIDATES[name], ranking, seed)
                if (name, seed, learning.n_steps) in done:
                    continue
                row = run_one(job, val, learning, args.out / "val" / name / f"seed{seed}")
                row = {"candidate": name, "seed": seed, "n_steps": learning.n_steps, **row}
                row["observation_layout_version"] = OBSERVATION_LAYOUT_VERSION
                _append(val_file, row)
                log(f"validation {name} seed {seed}: {row['verdict_line']} ({row['wall_s']} s)")
        rows = [
            r
            for r in _read_jsonl(val_file)
            if r["candidate"] in names and r["seed"] in args.val_seeds
        ]
        scores: dict[str, float] = {}
        print("\n| candidate | " + " | ".join(f"seed {s}" for s in args.val_seeds) + " | mean |")
        print("|---|" + "---|" * (len(args.val_seeds) + 1))
        for name in names:
            mine = {
                r["seed"]: r
                for r in rows
                if r["candidate"] == name and r["n_steps"] == resolve_steps(base, name)
            }
            if len(mine) < len(args.val_seeds):
                continue
            scores[name] = statistics.fmean(mine[s]["change_pct"] for s in args.val_seeds)
            cells = [
                f"{mine[s]['change_pct']:+.2f} % vs {mine[s]['best_heuristic']}"
                for s in args.val_seeds
            ]
            print(f"| {name} | " + " | ".join(cells) + f" | {scores[name]:+.2f} % |")
        chosen = min(scores, key=lambda n: (scores[n], n))
        log(f"chosen on validation: {chosen} ({scores[chosen]:+.2f} % vs the best heuristic)")
    test_file = args.out / "test.jsonl"
    test_rows = []
    for seed in args.test_seeds:
        learning = resolve(base, CANDIDATES[chosen], ranking, seed)
        row = run_one(job, full, learning, args.out / "test" / chosen / f"seed{seed}")
        row = {"candidate": chosen, "seed": seed, "n_steps": learning.n_steps, **row}
        row["observation_layout_version"] = OBSERVATION_LAYOUT_VERSION
        _append(test_file, row)
        test_rows.append(row)
        log(f"test {chosen} seed {seed}: {row['verdict_line']} ({row['wall_s']} s)")
    chosen_config = resolve(base, CANDIDATES[chosen], ranking, args.test_seeds[0]).to_dict()
    (args.out / "summary.json").write_text(
        json.dumps(
            {
                "job": job.name,
                "observation_layout_version": OBSERVATION_LAYOUT_VERSION,
                "logging_windows": [e.index for e in val.train],
                "validation_windows": [e.index for e in val.test],
                "test_windows": [e.index for e in full.test],
                "ranking_on_logging_windows": ranking,
                "heuristics_on_validation_e2e_s": on_val,
                "chosen": chosen,
                "chosen_config": chosen_config,
                "test": test_rows,
            },
            indent=2,
        )
        + "\n"
    )
    print("\n| seed | learned mean E2E (s) | best heuristic | change | 95 % CI | p | verdict |")
    print("|---|---|---|---|---|---|---|")
    for r in test_rows:
        print(
            f"| {r['seed']} | {r['learned_e2e_s']:.3f} | {r['best_heuristic']} "
            f"{r['best_heuristic_e2e_s']:.3f} | {r['change_pct']:+.2f} % | "
            f"[{r['ci_pct'][0]:+.2f}, {r['ci_pct'][1]:+.2f}] | {r['p_value']:.4g} | "
            f"{r['outcome']} |"
        )
    return 0


def resolve_steps(base: LearningConfig, name: str) -> int:
    """The n_steps a candidate trains for (its override or the base's)."""
    return int(CANDIDATES[name].get("n_steps", base.n_steps))


if __name__ == "__main__":
    sys.exit(main())
