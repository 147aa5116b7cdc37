"""Headline experiment: offline RL routers (CQL, BCQ, BC) vs heuristics, paired by replay.

Setup (issue 5, the Intelligent Router paper's testbed): 4 instances of Llama-2-7B on
V100 (cluster ``v100x4``: the ``llama2-7b/v100-scaled`` preset, realistic iteration
times; ``paper-4xv100`` with the paper's gradients is overloaded at 20 req/s, mean
E2E ~200 s, where every router queues for minutes), the five-task mix at 20 req/s,
2,000-request episodes, a task-aware output-length predictor fitted on a separate
workload seed.

1. Log heuristic behaviour (round-robin, least-connections, jsq-tokens, min-min,
   impact-greedy, each with epsilon 0.1) on training episodes (task-mix seeds
   ``10_000 + k``), reward ``paper-workload-guided``.
2. Train DiscreteCQL, DiscreteBCQ and DiscreteBC (reference) offline.
3. Off-policy estimate (DiscreteFQE) on held-out logs (seeds ``30_000 + k``).
4. Evaluate on held-out episodes (seeds ``20_000 + k``, disjoint) against every
   heuristic, paired, with ``compare_routers`` (Holm, bootstrap CI).
5. The same on Azure 2023 conv: windows of the trace, train on the earlier windows,
   evaluate on the later ones.

Run: ``ROUTEPLAY_DATA_DIR=/work/shared/data .venv/bin/python benchmarks/rl_headline.py
--out /tmp/rl_headline [--quick]``. Writes tables (Parquet + text) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl
from routeplay.datasets import TaskMixConfig, generate_task_mix, load_trace, split_episodes
from routeplay.estimator import fit_length_predictor, get_preset, time_buckets
from routeplay.offline_rl import (
    OPEConfig,
    PolicyRouter,
    TrainConfig,
    build_dataset,
    evaluate_off_policy,
    evaluate_routers,
    train_router,
)
from routeplay.replay import make_cluster, make_router
from routeplay.replay._transitions import default_layout, log_transitions

HEURISTICS = ("round-robin", "least-connections", "jsq-tokens", "min-min", "impact-greedy")
REWARD = "paper-workload-guided"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_setup(
    name: str,
    train_eps: list[pl.DataFrame],
    ope_eps: list[pl.DataFrame],
    test_eps: list[pl.DataFrame],
    cluster_name: str,
    predictor: object,
    out: Path,
    *,
    n_steps: int,
    algorithms: tuple[str, ...],
) -> dict[str, object]:
    cluster = make_cluster(cluster_name)
    layout = default_layout(cluster, None, predictor)  # type: ignore[arg-type]
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    # 1. logs: episodes are split among the behaviour policies (each episode once)
    files = []
    per = max(1, len(train_eps) // len(HEURISTICS))
    for j, h in enumerate(HEURISTICS):
        eps = train_eps[j * per : (j + 1) * per]
        res = log_transitions(
            eps,
            cluster,
            make_router(h),
            reward=REWARD,
            path=folder / f"train-{h}.parquet",
            epsilon=0.1,
            seed=1,
            predictor=predictor,  # type: ignore[arg-type]
            episode_offset=j * per,
        )
        files.append(res.path)
        log(f"{name}: logged {h}: {res.n_episodes} episodes, {res.n_transitions} rows")
    ope_files = []
    for h in HEURISTICS[:2]:
        res = log_transitions(
            ope_eps,
            cluster,
            make_router(h),
            reward=REWARD,
            path=folder / f"heldout-{h}.parquet",
            epsilon=0.1,
            seed=2,
            predictor=predictor,  # type: ignore[arg-type]
        )
        ope_files.append(res.path)
    dataset = build_dataset(files)
    log(f"{name}: dataset\n{dataset.card.summary()}")
    learned = {}
    ope_rows = []
    for algo in algorithms:
        cfg = TrainConfig(
            algorithm=algo,  # type: ignore[arg-type]
            n_steps=n_steps,
            n_steps_per_epoch=min(1000, n_steps),
            checkpoint_every_steps=n_steps,
            target_update_interval=500,
            gamma=0.99,
            seed=0,
        )
        t0 = time.perf_counter()
        result = train_router(cfg, dataset, run_dir=folder / f"run-{algo}")
        log(f"{name}: trained {algo} in {time.perf_counter() - t0:.0f} s")
        learned[algo] = PolicyRouter(result.algo, layout=layout, name=algo)
        if algo != "bc":
            ope = evaluate_off_policy(
                result,
                ope_files,
                config=OPEConfig(n_steps=max(200, n_steps // 2), gamma=0.99, seed=0),
            )
            log(f"{name}: OPE {algo}\n{ope.summary()}")
            ope_rows.append(ope.to_frame().with_columns(pl.lit(algo).alias("policy")))
    t0 = time.perf_counter()
    ev = evaluate_routers(
        learned,
        HEURISTICS,
        test_eps,
        cluster,
        baseline="round-robin",
        predictor=predictor,  # type: ignore[arg-type]
        max_router_wait_s=0.1,
    )
    log(f"{name}: evaluated in {time.perf_counter() - t0:.0f} s\n{ev.summary()}")
    table = ev.to_frame()
    table.write_parquet(folder / "evaluation.parquet")
    (folder / "evaluation.txt").write_text(ev.summary() + "\n\n" + ev.comparison.summary())
    if ope_rows:
        pl.concat(ope_rows, how="diagonal_relaxed").write_parquet(folder / "ope.parquet")
    return {"name": name, "n_train": len(train_eps), "n_test": len(test_eps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/rl_headline"))
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--skip-azure", action="store_true")
    parser.add_argument("--skip-taskmix", action="store_true")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    n_req = 200 if quick else 2000
    n_train = 5 if quick else 40
    n_test = 3 if quick else 20
    n_steps = 100 if quick else 5000
    algorithms = ("cql", "bcq", "bc")
    t_all = time.perf_counter()

    # -- task mix (the paper's setup) --
    scheme = time_buckets(get_preset("llama2-7b/v100-scaled"))
    pred_trace = generate_task_mix(TaskMixConfig(n_requests=4000, seed=999))
    predictor = fit_length_predictor(pred_trace, scheme, features=("task", "prompt_tokens"))

    def mix(seed: int) -> pl.DataFrame:
        return generate_task_mix(TaskMixConfig(n_requests=n_req, rate_per_s=20.0, seed=seed))

    train = [mix(10_000 + k) for k in range(n_train)]
    ope_eps = [mix(30_000 + k) for k in range(2 if quick else 4)]
    test = [mix(20_000 + k) for k in range(n_test)]
    info = []
    if not args.skip_taskmix:
        info.append(
            run_setup(
                "taskmix-v100x4",
                train,
                ope_eps,
                test,
                "v100x4",
                predictor,
                args.out,
                n_steps=n_steps,
                algorithms=algorithms,
            )
        )

    # -- Azure 2023 conv: earlier windows train, later windows test --
    if not args.skip_azure:
        conv = load_trace("azure-2023-conv")
        if quick:
            conv = conv.head(3000)
        windows = [e.trace for e in split_episodes(conv, n_requests=300 if quick else 1000)]
        n = len(windows)
        n_pred = 1
        n_test_w = max(2, round(0.3 * n))
        pred = fit_length_predictor(
            pl.concat(windows[:n_pred]), scheme, features=("prompt_tokens",)
        )
        train_w = windows[n_pred : n - n_test_w - 1]
        ope_w = windows[n - n_test_w - 1 : n - n_test_w]
        test_w = windows[n - n_test_w :]
        info.append(
            run_setup(
                "azure-conv-v100x4",
                train_w,
                ope_w,
                test_w,
                "v100x4",
                pred,
                args.out,
                n_steps=n_steps,
                algorithms=algorithms,
            )
        )
    (args.out / "info.json").write_text(json.dumps(info, indent=2))
    log(f"done in {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
