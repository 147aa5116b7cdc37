"""System B parity: online DoubleDQN (d3rlpy fit_online) on the heterogeneous cluster.

System B of docs/design.md is online RL on a heterogeneous cluster. Setup: cluster
``hetero-3k5k7k`` (servers of 3000/5000/7000 tokens/s, concurrency 3/5/7), the Azure
2023 code trace cut into windows of ``--window-requests`` requests, reward
``queue-balance``; queueing is included in the response time (E2E from arrival) and
no output-length oracle is used (no predictor: one decode bucket). DoubleDQN (MLP
2x128, lr 3e-4, gamma 0.99) trains online on the earlier 70 % of the windows and is
evaluated, paired, on the later 30 % against round robin, least connections, least
loaded and random, with the mean response time and the share of responses > 2 s.

The workload, split and cluster are a ``routeplay.replay.Scenario``; the evaluation keeps
``evaluate_routers``' defaults (episode ``k`` of the test split replayed with seed ``k``,
no simulated-time guard), which ``evaluate_scenario`` would change (global episode
indices as seeds), moving the published ``random`` row.

Run: ``ROUTEPLAY_DATA_DIR=../shared/data .venv/bin/python benchmarks/rl_hetero_3k5k7k.py
--out runs/rl_hetero_3k5k7k [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from routeplay.offline_rl import (
    OnlineConfig,
    PolicyRouter,
    TrainConfig,
    evaluate_routers,
    fine_tune_online,
)
from routeplay.replay import Scenario, default_layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/rl_hetero_3k5k7k"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--window-requests", type=int, default=500)
    parser.add_argument("--n-steps", type=int, default=20_000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    window = 100 if args.quick else args.window_requests
    prepared = Scenario(
        trace="azure-2023-code",
        first_requests=600 if args.quick else None,
        episode_requests=window,
        drop_partial=False,
        test_fraction=0.3,
        cluster="hetero-3k5k7k",
    ).prepare()
    train, test, cluster = prepared.train, prepared.test, prepared.cluster
    n_steps = 300 if args.quick else args.n_steps
    t0 = time.perf_counter()
    res = fine_tune_online(
        TrainConfig(
            algorithm="double-dqn",
            learning_rate=3e-4,
            gamma=0.99,
            batch_size=64,
            target_update_interval=500,
        ),
        [e.trace for e in train],
        cluster,
        reward="queue-balance",
        run_dir=args.out / "dqn",
        config=OnlineConfig(
            n_steps=n_steps,
            n_steps_per_epoch=min(1000, n_steps),
            update_start_step=min(1000, n_steps // 4),
            epsilon_start=0.5,
            epsilon_end=0.02,
        ),
    )
    print(
        f"online DQN: {res.n_steps_done} steps, {res.n_episodes} episodes in "
        f"{time.perf_counter() - t0:.0f} s",
        flush=True,
    )
    print(res.curve, flush=True)
    layout = default_layout(cluster)
    ev = evaluate_routers(
        {"dqn": PolicyRouter(res.algo, layout=layout, name="dqn")},
        ["round-robin", "least-connections", "least-loaded", "random"],
        [e.trace for e in test],
        cluster,
        baseline="round-robin",
        max_router_wait_s=0.1,
    )
    print(ev.summary(), flush=True)
    ev.to_frame().write_parquet(args.out / "evaluation.parquet")
    (args.out / "evaluation.txt").write_text(ev.summary() + "\n\n" + ev.comparison.summary())
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
