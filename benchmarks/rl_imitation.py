"""Imitation of the lookahead + DAgger on the hetero cluster.

What it measures: a small network trained with d3rlpy DiscreteBC on
``lookahead-oracle``'s choices (labels from an ORACLE teacher: true output lengths and
future arrivals inside its simulator forks), plus DAgger rounds (the student drives, the
lookahead labels its states, BC retrains on the union), replayed as a deployable
``PolicyRouter`` (plain observations only) against min-min and ``min-total-latency`` on
held-out episodes, paired (``routeplay.offline_rl.evaluate_routers`` ->
``routeplay.estimator.compare_routers``: relative improvement of the mean E2E, 95 %
paired-bootstrap CI over episodes, Holm-adjusted paired t-test).

Regime: 2 x ``llama2-7b/a100`` + 2 x ``llama2-7b/v100-scaled`` (the built-in cluster
``hetero-a100x2-v100x2``), the paper's task mix at ``--rate`` (80) req/s, the
task-mix length predictor of the headroom benchmark (fitted on its own 20,000-request
trace, seed 7). Training episodes: task-mix seeds ``10000 + k`` (500 requests); validation
episodes (which DAgger round's student is kept): seeds ``30000 + k``; held-out
evaluation episodes: seeds ``20000 + k`` (never used for labelling, training or any
choice). BC targets: the lookahead's action, ties broken toward min-min's choice among
the tied actions (``--tie-break``; ``ImitationConfig.tie_break``). Each training seed
runs the whole pipeline (``imitate_lookahead``, the same code as ``routeplay train
--from-lookahead``), saves the router folder and the
evaluation loads it back from ``policy.pt`` (TorchScript), as ``routeplay evaluate`` does.

Round-0 labels are shared between training seeds: the round-0 driver (min-min) and the
lookahead's rollout base (min-min) use no randomness, so those labels do not depend on
the seed (the labelling code seeds them with it all the same); the seed changes the
network's initialisation, its batches, and so the states the DAgger rounds visit.

Run (one command; the lookahead dominates: ~50-150 ms per labelled decision)::

    nohup .venv/bin/python benchmarks/rl_imitation.py --out runs/rl_imitation \\
        > runs/rl_imitation.log 2>&1 &
    .venv/bin/python benchmarks/rl_imitation.py --quick      # smoke run (~1-2 minutes)

Re-running with the same ``--out`` reuses finished labels, checkpoints and routers.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl
import torch
from routeplay.datasets import TaskMixConfig, generate_task_mix_episodes
from routeplay.estimator import compare_routers, fit_task_mix_predictor
from routeplay.offline_rl import (
    ImitationConfig,
    LookaheadLabels,
    evaluate_routers,
    imitate_lookahead,
    load_router,
    save_router,
)
from routeplay.replay import make_cluster

#: The regime's cluster (built in) and the headroom benchmark's task-mix predictor.
CLUSTER = "hetero-a100x2-v100x2"
PREDICTOR_PRESET = "llama2-7b/v100-paper"
PREDICTOR_WORKLOAD = TaskMixConfig(n_requests=20_000, seed=7)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def episodes(base: int, n: int, n_requests: int, rate: float) -> list[pl.DataFrame]:
    workload = TaskMixConfig(n_requests=n_requests, rate_per_s=rate, seed=base)
    return generate_task_mix_episodes(workload, n)


def _pct(x: float) -> str:
    return f"{100.0 * x:+.1f} %"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny smoke run")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="training seeds")
    p.add_argument("--rate", type=float, default=80.0)
    p.add_argument("--requests", type=int, default=None, help="requests per episode")
    p.add_argument("--label-decisions", type=int, default=None, help="labels per round")
    p.add_argument("--dagger-rounds", type=int, default=1)
    p.add_argument("--n-steps", type=int, default=None, help="BC steps per round")
    p.add_argument("--eval-episodes", type=int, default=None, help="held-out episodes")
    p.add_argument("--val-episodes", type=int, default=None, help="validation episodes")
    p.add_argument(
        "--tie-break",
        default="min-min",
        help="BC target among tied actions: min-min|min-total-latency|teacher",
    )
    p.add_argument("--tie-tolerance-s", type=float, default=1e-6, help="rollout-cost tie (s)")
    p.add_argument("--behaviour", default="min-min", help="round-0 driver")
    p.add_argument("--teacher-base", default="min-min", help="the lookahead's rollout router")
    p.add_argument("--no-predictor", action="store_true", help="no length predictor")
    p.add_argument(
        "--label-workers",
        type=int,
        default=1,
        help="processes that label episodes at once (same labels for any count)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/rl_imitation"))
    args = p.parse_args()
    torch.set_num_threads(1)
    quick = args.quick
    seeds = args.seeds or ([0] if quick else [0, 1, 2])
    n_req = args.requests or (100 if quick else 500)
    n_labels = args.label_decisions or (60 if quick else 3000)
    n_steps = args.n_steps or (200 if quick else 5000)
    n_eval = args.eval_episodes or (3 if quick else 10)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    cluster = make_cluster(CLUSTER)
    predictor: Any = (
        None if args.no_predictor else fit_task_mix_predictor(PREDICTOR_PRESET, PREDICTOR_WORKLOAD)
    )
    n_train_eps = max(4, 2 * (args.dagger_rounds + 1) * n_labels // n_req + 2)
    train_eps = episodes(10_000, n_train_eps, n_req, args.rate)
    held_out = episodes(20_000, n_eval, n_req, args.rate)
    n_val = args.val_episodes if args.val_episodes is not None else (1 if quick else 4)
    validation = episodes(30_000, n_val, n_req, args.rate) if n_val else None
    log(
        f"hetero cluster, task mix at {args.rate:g} req/s, {n_req} requests per episode; "
        f"{n_labels} labels x {args.dagger_rounds + 1} rounds per seed, {n_steps} BC steps "
        f"per round; seeds {seeds}; {n_val} validation episodes (seeds 30000+, pick the "
        f"round kept); {n_eval} held-out episodes (seeds 20000+)"
    )

    learned: dict[str, Any] = {}
    rounds: list[pl.DataFrame] = []
    shared0: LookaheadLabels | None = None
    for seed in seeds:
        folder = out / f"router-seed{seed}"
        run_dir = out / f"run-seed{seed}"
        run_dir.mkdir(parents=True, exist_ok=True)
        config = ImitationConfig(
            label_decisions=n_labels,
            dagger_rounds=args.dagger_rounds,
            n_steps=n_steps,
            tie_break=args.tie_break,
            tie_tolerance_s=args.tie_tolerance_s,
            behaviour=args.behaviour,
            teacher_base=args.teacher_base,
            seed=seed,
        )
        t0 = time.perf_counter()
        result = imitate_lookahead(
            config,
            train_eps,
            cluster,
            run_dir=run_dir,
            predictor=predictor,
            validation_episodes=validation,
            initial_labels=shared0,  # round-0 labels do not depend on the seed (docstring)
            say=lambda line, s=seed: log(f"seed {s}: {line}"),
            label_workers=args.label_workers,
        )
        save_router(result.train, folder, layout=result.layout)
        log(f"seed {seed}: trained in {time.perf_counter() - t0:.0f} s -> {folder}")
        if shared0 is None:
            shared0 = result.labels.subset(result.labels.round == 0)
        rounds.append(result.rounds.with_columns(pl.lit(seed).alias("seed")))
        learned[f"imitate-s{seed}"] = load_router(folder, name=f"imitate-s{seed}")

    log("evaluating on held-out episodes")
    t0 = time.perf_counter()
    res = evaluate_routers(
        learned,
        ["round-robin", "min-min", "min-total-latency"],
        held_out,
        cluster,
        baseline="min-min",
        predictor=predictor,
        episode_ids=[20_000 + k for k in range(n_eval)],
    )
    log(f"evaluation took {time.perf_counter() - t0:.0f} s")
    frame = res.replays.requests.select("router", "episode", "e2e_s")
    vs_mm = compare_routers(frame, baseline="min-min", statistics=("mean",), seed=0)
    vs_mtl = compare_routers(frame, baseline="min-total-latency", statistics=("mean",), seed=0)
    means = (
        frame.group_by("router", "episode")
        .agg(pl.col("e2e_s").mean())
        .group_by("router")
        .agg(pl.col("e2e_s").mean())
    )
    mean_of = dict(zip(means["router"].to_list(), means["e2e_s"].to_list(), strict=True))
    fallbacks = res.fallbacks
    lines = [
        f"hetero (2 x A100 + 2 x V100), task mix at {args.rate:g} req/s, {n_eval} held-out "
        f"episodes x {n_req} requests; {n_labels} labels x {args.dagger_rounds + 1} rounds "
        f"per seed; predictor: {'none' if predictor is None else 'task-mix'}",
        "",
        "| router | mean E2E (s) | vs min-min [95 % CI] (Holm p) | vs min-total-latency "
        "[95 % CI] (Holm p) |",
        "|---|---|---|---|",
    ]
    for r in sorted(mean_of, key=lambda x: mean_of[x]):
        cells = [r, f"{mean_of[r]:.3f}"]
        for cmp, base in ((vs_mm, "min-min"), (vs_mtl, "min-total-latency")):
            if r == base:
                cells.append("0")
                continue
            c = cmp.get(r)
            cells.append(
                f"{_pct(c.relative_improvement)} [{_pct(c.ci_low)}, {_pct(c.ci_high)}] "
                f"({c.p_ttest_holm:.1g})"
            )
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text)
    print()
    rounds_frame = pl.concat(rounds)
    with pl.Config(tbl_rows=50, tbl_cols=20, tbl_width_chars=200):
        print(rounds_frame)
        print(fallbacks)
    (out / "table.md").write_text(text + "\n")
    rounds_frame.write_parquet(out / "rounds.parquet")
    res.to_frame().write_parquet(out / "evaluation.parquet")


if __name__ == "__main__":
    main()
