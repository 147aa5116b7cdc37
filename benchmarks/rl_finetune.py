"""Online fine-tuning of the second-pass offline CQL router with the paper's three rewards.

Starts from the second-pass CQL policy of ``benchmarks/rl_headline.py`` (setting B:
standardised rewards, CQL alpha 5, target sync 150, 15,000 steps; run folder
``<--headline-dir>/taskmix-<cluster>/std-a5-t150-15k/run-cql``). Its checkpoint is copied
into ``--out`` and loaded through ``train_router(..., resume=True)`` (0 further steps);
if the run folder is gone, ``train_router`` retrains it there with the same config on the
same logs (the script says which happened). Then, once per reward variant
(``paper-baseline``, ``paper-workload-aware``, ``paper-workload-guided``), the same
offline policy is fine-tuned with :func:`fine_tune_online` (same budget, same seed)
against ``RoutingEnv`` on task-mix TRAINING seeds (``10_000 + k``; the evaluation seeds
``20_000 + k`` are never used for training). Finally the three fine-tuned routers, the
offline CQL and the five heuristics are replayed on the 20 held-out episodes with
:func:`evaluate_routers` (paired, Holm, bootstrap CI) and the table is printed.

Reward units: the offline Q-function was fitted on standardised rewards
``(r - mean) * factor`` (mean/std of the training logs' workload-guided rewards). The online
rewards get the same transform (``RewardTransform.wrap``), so the fine-tuned Q-values
stay in the units the offline policy learned; the learning curves' ``return`` column is in
those transformed units. The replay buffer is NOT seeded with the offline logs: they carry
raw workload-guided rewards, which are neither in transformed units nor the baseline /
workload-aware rewards.

Run: ``ROUTEPLAY_DATA_DIR=../shared/data .venv/bin/python benchmarks/rl_finetune.py
--out runs/rl_finetune [--quick] [--steps N] [--cluster v100x4|hetero]``.
Writes ``learning-curves.parquet`` (all variants), ``ft-<variant>/`` (fine-tuning runs),
``evaluation.parquet`` and ``evaluation.txt`` into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import polars as pl
from routeplay.datasets import TaskMixConfig, generate_task_mix_episodes
from routeplay.estimator import fit_task_mix_predictor
from routeplay.offline_rl import (
    OnlineConfig,
    PolicyRouter,
    TrainConfig,
    build_dataset,
    evaluate_routers,
    fine_tune_online,
    train_router,
)
from routeplay.replay import ClusterConfig, default_layout, make_cluster

#: the heuristics of ``benchmarks/rl_headline.py`` (behaviours and evaluation baselines)
HEURISTICS = ("round-robin", "least-connections", "jsq-tokens", "min-min", "impact-greedy")
VARIANTS = ("paper-baseline", "paper-workload-aware", "paper-workload-guided")
SHORT = {
    "paper-baseline": "ft-baseline",
    "paper-workload-aware": "ft-aware",
    "paper-workload-guided": "ft-guided",
}
TAG = "std-a5-t150-15k"
#: setting B of the second pass (docs/notes/offline-rl-results.md, "Final runs")
CQL_CONFIG = TrainConfig(
    algorithm="cql",
    n_steps=15_000,
    n_steps_per_epoch=1000,
    checkpoint_every_steps=15_000,
    seed=0,
    gamma=0.99,
    target_update_interval=150,
    reward_normalization="standardize",
    reward_scale=1.0,
    cql_alpha=5.0,
    bcq_action_flexibility=0.9,
)


def get_cluster(name: str) -> ClusterConfig:
    """A built-in cluster; ``hetero`` is short for ``hetero-a100x2-v100x2``."""
    return make_cluster("hetero-a100x2-v100x2" if name == "hetero" else name)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/rl_finetune"))
    parser.add_argument(
        "--headline-dir",
        type=Path,
        default=Path("runs/rl_headline"),
        help="--out of benchmarks/rl_headline.py (holds the offline CQL run to start from)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--steps", type=int, default=None, help="env steps per variant (10,000)")
    parser.add_argument("--cluster", default="v100x4", help="builtin cluster name or 'hetero'")
    parser.add_argument(
        "--episode-requests",
        type=int,
        default=None,
        help="requests per training episode (500; evaluation episodes keep 2,000)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    quick = args.quick
    n_steps = args.steps or (300 if quick else 10_000)
    n_req_train = args.episode_requests or (100 if quick else 500)
    n_req_test = 200 if quick else 2000
    n_test = 3 if quick else 20
    t_all = time.perf_counter()

    cluster = get_cluster(args.cluster)
    predictor = fit_task_mix_predictor(
        "llama2-7b/v100-scaled", TaskMixConfig(n_requests=4000, seed=999)
    )
    layout = default_layout(cluster, None, predictor)

    # -- the offline CQL policy (second pass, setting B) --
    logs = args.headline_dir / f"taskmix-{args.cluster}"
    files = [logs / f"train-{h}.parquet" for h in HEURISTICS]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise SystemExit(
            f"training logs missing: {missing}; expected the second-pass logs. Fix: run "
            "benchmarks/rl_headline.py --skip-azure --out runs/rl_headline "
            f"--cluster {args.cluster} first."
        )
    dataset = build_dataset(files)
    src = logs / TAG / "run-cql"
    run = args.out / "offline-cql"
    if (src / "checkpoint" / "state.json").is_file() and not (run / "checkpoint").is_dir():
        shutil.copytree(src / "checkpoint", run / "checkpoint")
    source = "loaded" if (run / "checkpoint" / "state.json").is_file() else "retrained"
    offline = train_router(CQL_CONFIG, dataset, run_dir=run, resume=True)
    tf = offline.reward_transform
    log(
        f"offline CQL {source} from {src if source == 'loaded' else 'the logs'}: "
        f"{offline.n_steps_done} steps (resumed from {offline.n_steps_resumed_from}), "
        f"reward transform shift {tf.shift:.4f} factor {tf.factor:.6f}"
    )

    # -- online fine-tuning, once per reward variant, training seeds only --
    train_eps = generate_task_mix_episodes(
        TaskMixConfig(n_requests=n_req_train, rate_per_s=20.0, seed=10_000), 40
    )
    cfg = OnlineConfig(
        n_steps=n_steps,
        n_steps_per_epoch=min(1000, n_steps),
        epsilon_start=0.1,
        epsilon_end=0.02,
        seed=0,
    )
    learned: dict[str, PolicyRouter] = {
        "cql": PolicyRouter(offline.algo, layout=layout, name="cql"),
    }
    curves = []
    info: dict[str, object] = {
        "cluster": args.cluster,
        "offline": source,
        "online_config": dataclasses.asdict(cfg),
        "train_episode_requests": n_req_train,
        "variants": {},
    }
    for variant in VARIANTS:
        # fresh copy of the offline policy for every variant
        start = train_router(CQL_CONFIG, dataset, run_dir=run, resume=True)
        res = fine_tune_online(
            start,
            train_eps,
            cluster,
            reward=tf.wrap(variant),
            run_dir=args.out / f"ft-{variant}",
            config=cfg,
            predictor=predictor,
        )
        done = res.curve.filter(~pl.col("truncated"))
        log(
            f"fine-tuned {variant}: {res.n_steps_done} steps, {res.n_episodes} episodes "
            f"started, {res.curve.height} finished, {res.wall_time_s:.0f} s; curve\n"
            f"{res.curve.select('step', 'episode', 'return', 'mean_e2e_s', 'epsilon')}"
        )
        info["variants"][variant] = {  # type: ignore[index]
            "n_steps_done": res.n_steps_done,
            "n_episodes": res.n_episodes,
            "n_finished": done.height,
            "wall_time_s": round(res.wall_time_s, 1),
        }
        curves.append(res.curve)
        learned[SHORT[variant]] = PolicyRouter(res.algo, layout=layout, name=SHORT[variant])
    pl.concat(curves).write_parquet(args.out / "learning-curves.parquet")

    # -- paired evaluation on the held-out seeds --
    test = generate_task_mix_episodes(
        TaskMixConfig(n_requests=n_req_test, rate_per_s=20.0, seed=20_000), n_test
    )
    t0 = time.perf_counter()
    ev = evaluate_routers(
        learned,
        HEURISTICS,
        test,
        cluster,
        baseline="round-robin",
        predictor=predictor,
        max_router_wait_s=0.1,
    )
    log(f"evaluated in {time.perf_counter() - t0:.0f} s")
    ev.to_frame().write_parquet(args.out / "evaluation.parquet")
    (args.out / "evaluation.txt").write_text(ev.summary() + "\n\n" + ev.comparison.summary())
    info["wall_time_s"] = round(time.perf_counter() - t_all, 1)
    (args.out / "info.json").write_text(json.dumps(info, indent=2, default=str))
    print(ev.summary(), flush=True)
    log(f"done in {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
