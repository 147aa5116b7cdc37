"""Headline experiment: offline RL routers (CQL, BCQ, BC) vs heuristics, paired by replay.

Setup (the Intelligent Router paper's testbed): 4 instances of Llama-2-7B on
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

Run: ``ROUTEPLAY_DATA_DIR=../shared/data .venv/bin/python benchmarks/rl_headline.py
--out runs/rl_headline [--quick]``. Writes tables (Parquet + text) into ``--out``.

Options (defaults reproduce the first run): ``--reward-normalization none|scale|standardize``
and ``--reward-scale`` (``TrainConfig``; statistics from the training logs only),
``--cql-alpha``, ``--gamma``, ``--bcq-flexibility``, ``--target-update``,
``--reward paper-workload-guided|latency-area`` (the logged reward; latency-area:
``routeplay.replay.LatencyAreaReward``),
``--n-steps``, ``--n-train`` / ``--n-test`` (episodes),
``--algorithms``, ``--cluster v100x4|hetero`` (``hetero``: 2 x llama2-7b/a100 +
2 x llama2-7b/v100-scaled, a setting where routing matters), ``--rate`` (req/s),
``--reuse-logs`` (keep transition logs already in ``--out``) and ``--tag`` (subfolder
name of the training runs and evaluation, so variants can share one set of logs).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import polars as pl
from routeplay.datasets import (
    TaskMixConfig,
    generate_task_mix_episodes,
    load_trace,
    split_episodes,
)
from routeplay.estimator import (
    fit_length_predictor,
    fit_task_mix_predictor,
    get_preset,
    time_buckets,
)
from routeplay.offline_rl import (
    OPEConfig,
    PolicyRouter,
    TrainConfig,
    build_dataset,
    evaluate_off_policy,
    evaluate_routers,
    train_router,
)
from routeplay.replay import (
    ClusterConfig,
    default_layout,
    log_transitions,
    make_cluster,
    make_router,
)

HEURISTICS = ("round-robin", "least-connections", "jsq-tokens", "min-min", "impact-greedy")
REWARD = "paper-workload-guided"


def get_cluster(name: str) -> ClusterConfig:
    """A built-in cluster; ``hetero`` is short for ``hetero-a100x2-v100x2``."""
    return make_cluster("hetero-a100x2-v100x2" if name == "hetero" else name)


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
    train_options: dict[str, object] | None = None,
    reuse_logs: bool = False,
    tag: str = "",
    reward: str = REWARD,
) -> dict[str, object]:
    cluster = get_cluster(cluster_name)
    layout = default_layout(cluster, None, predictor)
    folder = out / name
    folder.mkdir(parents=True, exist_ok=True)
    runs = folder / tag if tag else folder
    runs.mkdir(parents=True, exist_ok=True)
    options = dict(train_options or {})
    # 1. logs: episodes are split among the behaviour policies (each episode once)
    files = []
    per = max(1, len(train_eps) // len(HEURISTICS))
    for j, h in enumerate(HEURISTICS):
        eps = train_eps[j * per : (j + 1) * per]
        if reuse_logs and (folder / f"train-{h}.parquet").is_file():
            files.append(folder / f"train-{h}.parquet")
            continue
        res = log_transitions(
            eps,
            cluster,
            make_router(h),
            reward=reward,
            path=folder / f"train-{h}.parquet",
            epsilon=0.1,
            seed=1,
            predictor=predictor,
            episode_offset=j * per,
        )
        files.append(res.path)
        log(f"{name}: logged {h}: {res.n_episodes} episodes, {res.n_transitions} rows")
    ope_files = []
    for h in HEURISTICS[:2]:
        if reuse_logs and (folder / f"heldout-{h}.parquet").is_file():
            ope_files.append(folder / f"heldout-{h}.parquet")
            continue
        res = log_transitions(
            ope_eps,
            cluster,
            make_router(h),
            reward=reward,
            path=folder / f"heldout-{h}.parquet",
            epsilon=0.1,
            seed=2,
            predictor=predictor,
        )
        ope_files.append(res.path)
    dataset = build_dataset(files)
    log(f"{name}: dataset\n{dataset.card.summary()}")
    learned = {}
    ope_rows = []
    for algo in algorithms:
        cfg = TrainConfig(
            algorithm=algo,
            n_steps=n_steps,
            n_steps_per_epoch=min(1000, n_steps),
            checkpoint_every_steps=n_steps,
            seed=0,
            **{"gamma": 0.99, "target_update_interval": 500, **options},
        )
        t0 = time.perf_counter()
        result = train_router(cfg, dataset, run_dir=runs / f"run-{algo}")
        log(
            f"{name}: trained {algo} in {time.perf_counter() - t0:.0f} s "
            f"(reward transform {result.reward_transform})\n{result.losses.tail(2)}"
        )
        learned[algo] = PolicyRouter(result.algo, layout=layout, name=algo)
        if algo != "bc":
            ope = evaluate_off_policy(
                result,
                ope_files,
                config=OPEConfig(n_steps=max(200, n_steps // 2), gamma=cfg.gamma, seed=0),
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
        predictor=predictor,
        max_router_wait_s=0.1,
    )
    log(f"{name}: evaluated in {time.perf_counter() - t0:.0f} s\n{ev.summary()}")
    table = ev.to_frame()
    table.write_parquet(runs / "evaluation.parquet")
    (runs / "evaluation.txt").write_text(ev.summary() + "\n\n" + ev.comparison.summary())
    if ope_rows:
        pl.concat(ope_rows, how="diagonal_relaxed").write_parquet(runs / "ope.parquet")
    return {
        "name": name,
        "tag": tag,
        "cluster": cluster_name,
        "n_train": len(train_eps),
        "n_test": len(test_eps),
        "n_steps": n_steps,
        "train_options": options,
        "reward": reward,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/rl_headline"))
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--skip-azure", action="store_true")
    parser.add_argument("--skip-taskmix", action="store_true")
    parser.add_argument("--cluster", default="v100x4", help="builtin cluster name or 'hetero'")
    parser.add_argument("--rate", type=float, default=20.0, help="task-mix arrival rate, req/s")
    parser.add_argument("--n-train", type=int, default=None, help="training episodes (40)")
    parser.add_argument("--n-test", type=int, default=None, help="held-out episodes (20)")
    parser.add_argument("--n-steps", type=int, default=None, help="gradient steps (5000)")
    parser.add_argument("--algorithms", default="cql,bcq,bc")
    parser.add_argument(
        "--reward-normalization", choices=("none", "scale", "standardize"), default="none"
    )
    parser.add_argument("--reward-scale", type=float, default=1.0)
    parser.add_argument("--cql-alpha", type=float, default=1.0)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--bcq-flexibility", type=float, default=0.3)
    parser.add_argument("--target-update", type=int, default=500, help="steps between syncs")
    parser.add_argument(
        "--reward",
        choices=(REWARD, "latency-area"),
        default=REWARD,
        help="logged reward (latency-area: routeplay.replay.LatencyAreaReward)",
    )
    parser.add_argument("--reuse-logs", action="store_true")
    parser.add_argument("--tag", default="", help="subfolder for runs + evaluation")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    n_req = 200 if quick else 2000
    n_train = args.n_train or (5 if quick else 40)
    n_test = args.n_test or (3 if quick else 20)
    n_steps = args.n_steps or (100 if quick else 5000)
    algorithms = tuple(args.algorithms.split(","))
    train_options: dict[str, object] = {
        "reward_normalization": args.reward_normalization,
        "reward_scale": args.reward_scale,
        "cql_alpha": args.cql_alpha,
        "gamma": args.gamma,
        "bcq_action_flexibility": args.bcq_flexibility,
        "target_update_interval": args.target_update,
    }
    info: list[dict[str, object]] = []
    setup = dict(
        n_steps=n_steps,
        algorithms=algorithms,
        train_options=train_options,
        reuse_logs=args.reuse_logs,
        tag=args.tag,
        reward=args.reward,
    )
    suffix = "" if args.reward == REWARD else f"-{args.reward}"
    t_all = time.perf_counter()

    # -- task mix (the paper's setup) --
    scheme = time_buckets(get_preset("llama2-7b/v100-scaled"))
    predictor = fit_task_mix_predictor(
        "llama2-7b/v100-scaled", TaskMixConfig(n_requests=4000, seed=999)
    )

    def mix(first_seed: int, n: int) -> list[pl.DataFrame]:
        workload = TaskMixConfig(n_requests=n_req, rate_per_s=args.rate, seed=first_seed)
        return generate_task_mix_episodes(workload, n)

    train = mix(10_000, n_train)
    ope_eps = mix(30_000, 2 if quick else 4)
    test = mix(20_000, n_test)
    if not args.skip_taskmix:
        info.append(
            run_setup(
                f"taskmix-{args.cluster}"
                + ("" if args.rate == 20.0 else f"-{args.rate:g}rps")
                + suffix,
                train,
                ope_eps,
                test,
                args.cluster,
                predictor,
                args.out,
                **setup,
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
                f"azure-conv-{args.cluster}{suffix}",
                train_w,
                ope_w,
                test_w,
                args.cluster,
                pred,
                args.out,
                **setup,
            )
        )
    (args.out / "info.json").write_text(json.dumps(info, indent=2))
    log(f"done in {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
