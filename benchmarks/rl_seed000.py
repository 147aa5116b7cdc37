"""Seed 000 parity: online DoubleDQN (d3rlpy fit_online) on the heterogeneous cluster.

Setup: cluster ``seed000-hetero`` (servers of 3000/5000/7000 tokens/s, concurrency
3/5/7), the Azure 2023 code trace cut into windows of ``--window-requests`` requests,
reward ``seed000``; queueing is included in the response time (E2E from arrival) and
no output-length oracle is used (no predictor: one decode bucket). DoubleDQN (MLP
2x128, lr 3e-4, gamma 0.99) trains online on the earlier 70 % of the windows and is
evaluated, paired, on the later 30 % against round robin, least connections, least
loaded and random, with the mean response time and the share of responses > 2 s.

Run: ``ROUTEPLAY_DATA_DIR=../shared/data .venv/bin/python benchmarks/rl_seed000.py
--out runs/rl_seed000 [--quick]``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from routeplay.datasets import load_trace, split_train_test
from routeplay.offline_rl import (
    OnlineConfig,
    PolicyRouter,
    TrainConfig,
    evaluate_routers,
    fine_tune_online,
)
from routeplay.replay import make_cluster
from routeplay.replay._transitions import default_layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/rl_seed000"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--window-requests", type=int, default=500)
    parser.add_argument("--n-steps", type=int, default=20_000)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    trace = load_trace("azure-2023-code")
    if args.quick:
        trace = trace.head(600)
    window = 100 if args.quick else args.window_requests
    train, test = split_train_test(trace, test_fraction=0.3, n_requests=window)
    cluster = make_cluster("seed000-hetero")
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
        reward="seed000",
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
