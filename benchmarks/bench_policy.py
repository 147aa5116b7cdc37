"""Offline-RL benchmark: decision latency of a loaded policy, training throughput.

Two ways to run it:

- ``python benchmarks/bench_policy.py [--steps N]``: prints

  * per-decision latency (median and p99 over 2,000 decisions) of a loaded
    :class:`~routeplay.offline_rl.PolicyRouter` (TorchScript and .d3), for the whole
    ``route()`` call (``encode_observation`` included) and for the network alone;
  * gradient steps per second of DiscreteCQL (batch 256, 2x128 MLP) through
    :func:`~routeplay.offline_rl.train_router` (checkpoint at the end) versus bare
    ``algo.fit`` of d3rlpy on the same ``MDPDataset``, both with one torch thread.

  * per-decision latency of a loaded learned scheduler
    (:class:`~routeplay.offline_rl.PolicyScheduler`, TorchScript) on router queues of
    10 and 1,000 requests (shortlist, encoding, network and placement);

- ``pytest benchmarks/bench_policy.py -m benchmark --benchmark-enable``: the decision
  latencies and a 200-step training run under pytest-benchmark.

Data: 20,000 random transitions of the paper's 4-instance layout (4 prompt and 5 decode
buckets: 55 features, 5 actions). Speed does not depend on the values.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from routeplay.offline_rl import (
    PolicyRouter,
    RoutingDataset,
    TrainConfig,
    build_dataset,
    load_router,
    save_router,
    train_router,
)
from routeplay.replay import make_cluster
from routeplay.replay._types import RequestView
from routeplay.replay.rl._observation import ObservationLayout
from routeplay.replay.routers._check import make_cluster_state

LAYOUT = ObservationLayout(n_instances=4, n_prompt_buckets=4, n_decode_buckets=5)
#: the cluster the observations are priced on (layout v2 reads each instance's latency model)
CLUSTER = make_cluster("a100x4")
#: the learned scheduler's cluster (the paper's overload regime)
SCHED_CLUSTER = make_cluster("paper-4xv100")


def make_dataset(
    n_rows: int = 20_000, *, episode_len: int = 2_000, seed: int = 0
) -> RoutingDataset:
    """Random transitions in the contract format (episodes of ``episode_len`` rows)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    d = LAYOUT.size
    obs = rng.random((n_rows, d), dtype=np.float32)
    next_obs = np.vstack([obs[1:], np.zeros((1, d), dtype=np.float32)])
    last = (np.arange(n_rows) % episode_len) == episode_len - 1
    next_obs[last] = 0.0
    frame = pl.DataFrame(
        {
            "episode": np.arange(n_rows) // episode_len,
            "step": np.arange(n_rows) % episode_len,
            "obs": obs,
            "action": rng.integers(0, LAYOUT.n_instances + 1, n_rows),
            "reward": rng.normal(size=n_rows),
            "next_obs": next_obs,
            "terminal": last,
            "timeout": np.zeros(n_rows, dtype=bool),
            "behaviour": ["random"] * n_rows,
        },
        schema_overrides={
            "episode": pl.Int64,
            "step": pl.Int64,
            "action": pl.Int64,
            "obs": pl.Array(pl.Float32, d),
            "next_obs": pl.Array(pl.Float32, d),
        },
    )
    return build_dataset(frame, n_actions=LAYOUT.n_instances + 1)


def _decision_inputs(n: int, seed: int = 1) -> list[tuple[RequestView, Any]]:
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    out = []
    for k in range(n):
        state = make_cluster_state(
            4,
            now_s=0.1 * k,
            router_queue_len=int(rng.integers(0, 20)),
            n_running=rng.integers(0, 30, 4),
            n_queued=rng.integers(0, 5, 4),
            kv_used_tokens=rng.integers(0, 50_000, 4),
            prompt_bucket_counts=rng.integers(0, 10, (4, 4)),
            decode_bucket_counts=rng.integers(0, 10, (4, 5)),
        )
        request = RequestView(k, 0.1 * k, int(rng.integers(10, 4000)), predicted_bucket=k % 5)
        out.append((request, state))
    return out


def trained_router_dir(tmp: Path, n_steps: int = 50) -> Path:
    """A CQL policy trained for a few steps and saved as a router folder."""
    from d3rlpy.logging import NoopAdapterFactory

    ds = make_dataset(4_000)
    cfg = TrainConfig(
        algorithm="cql", n_steps=n_steps, n_steps_per_epoch=n_steps, checkpoint_every_steps=n_steps
    )
    res = train_router(cfg, ds, run_dir=tmp / "run", logger_adapter=NoopAdapterFactory())
    return save_router(res, tmp / "router", layout=LAYOUT)


def time_decisions(router: PolicyRouter, inputs: list[tuple[RequestView, Any]]) -> dict[str, float]:
    """Median and p99 microseconds per ``route()`` and per network call."""
    import torch

    torch.set_num_threads(1)
    from routeplay.replay.rl._observation import encode_observation

    router.reset(CLUSTER, np.random.default_rng(0))
    for request, state in inputs[:100]:  # warm-up
        router.route(request, state)
    route_us, net_us = [], []
    obs = [encode_observation(r, s, LAYOUT, cluster=CLUSTER) for r, s in inputs]
    for (request, state), o in zip(inputs, obs, strict=True):
        t = time.perf_counter_ns()
        router.route(request, state)
        route_us.append((time.perf_counter_ns() - t) / 1e3)
        t = time.perf_counter_ns()
        router.action_index(o)
        net_us.append((time.perf_counter_ns() - t) / 1e3)
    q = statistics.quantiles
    return {
        "route_median_us": statistics.median(route_us),
        "route_p99_us": q(route_us, n=100)[98],
        "net_median_us": statistics.median(net_us),
        "net_p99_us": q(net_us, n=100)[98],
    }


def time_training(n_steps: int, repeats: int = 2) -> dict[str, float]:
    """Steps/s of train_router vs bare ``algo.fit`` (DiscreteCQL, same data and config).

    A 100-step warm-up of each comes first (torch's first iterations are ~2x slower);
    then the two alternate ``repeats`` times and the best time of each is kept.
    """
    import d3rlpy
    import torch
    from d3rlpy.logging import NoopAdapterFactory
    from routeplay.offline_rl._train import make_learnable

    ds = make_dataset()

    def ours(steps: int) -> float:
        cfg = TrainConfig(
            algorithm="cql", n_steps=steps, n_steps_per_epoch=steps, checkpoint_every_steps=steps
        )
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            train_router(cfg, ds, run_dir=d, logger_adapter=NoopAdapterFactory())
            return time.perf_counter() - t

    def bare(steps: int) -> float:
        cfg = TrainConfig(algorithm="cql", n_steps=steps)
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            t = time.perf_counter()
            d3rlpy.seed(0)
            algo = make_learnable(cfg, obs_size=ds.obs_size, n_actions=ds.n_actions)
            algo.fit(
                ds.mdp,
                n_steps=steps,
                n_steps_per_epoch=steps,
                logger_adapter=NoopAdapterFactory(),
                show_progress=False,
            )
            return time.perf_counter() - t
        finally:
            torch.set_num_threads(previous)

    ours(100)
    bare(100)
    ours_s, bare_s = [], []
    for _ in range(repeats):
        ours_s.append(ours(n_steps))
        bare_s.append(bare(n_steps))
    return {
        "train_router_steps_per_s": n_steps / min(ours_s),
        "bare_fit_steps_per_s": n_steps / min(bare_s),
        "train_router_s": min(ours_s),
        "bare_fit_s": min(bare_s),
    }


@pytest.fixture(scope="module")
def router_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_router_dir(tmp_path_factory.mktemp("bench_policy"))


@pytest.mark.benchmark
@pytest.mark.parametrize("prefer", ["torchscript", "d3"])
def test_decision_latency(benchmark: Any, router_dir: Path, prefer: str) -> None:
    import torch

    torch.set_num_threads(1)
    router = load_router(router_dir, prefer=prefer, trust=True)  # type: ignore[arg-type]
    router.reset(CLUSTER, np.random.default_rng(0))
    request, state = _decision_inputs(1)[0]
    choice = benchmark(router.route, request, state)
    assert -1 <= choice < 4


def trained_scheduler_dir(tmp: Path, n_steps: int = 50) -> Path:
    """A BC scheduler trained for a few steps on logs of late-binding-spf, saved."""
    from d3rlpy.logging import NoopAdapterFactory
    from routeplay.datasets import TaskMixConfig, generate_task_mix
    from routeplay.replay import SchedulerLayout, log_scheduler_transitions

    layout = SchedulerLayout(n_instances=4)
    trace = generate_task_mix(TaskMixConfig(n_requests=400, rate_per_s=60.0, seed=0))
    frame = log_scheduler_transitions([trace], SCHED_CLUSTER, "late-binding-spf", layout=layout)
    ds = build_dataset(frame, n_actions=layout.n_actions, layout_version="s1")
    cfg = TrainConfig(
        algorithm="bc", n_steps=n_steps, n_steps_per_epoch=n_steps, checkpoint_every_steps=n_steps
    )
    res = train_router(cfg, ds, run_dir=tmp / "srun", logger_adapter=NoopAdapterFactory())
    return save_router(res, tmp / "scheduler", layout=layout)


def scheduler_inputs(queue_len: int, seed: int = 2) -> tuple[tuple[RequestView, ...], Any]:
    """A router queue of ``queue_len`` requests and a state with one free instance."""
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    queue = tuple(
        RequestView(
            k,
            0.01 * k,
            int(rng.integers(10, 4000)),
            predicted_output_tokens=float(rng.integers(1, 1000)),
        )
        for k in range(queue_len)
    )
    state = make_cluster_state(
        4,
        now_s=0.01 * queue_len,
        router_queue_len=queue_len,
        n_running=[8, 8, 8, 3],
        max_running_seqs=[8, 8, 8, 8],
        kv_used_tokens=rng.integers(0, 50_000, 4),
    )
    return queue, state


def time_schedules(scheduler: Any, queue_len: int, n: int = 500) -> dict[str, float]:
    """Median and p99 microseconds per ``schedule()`` on a queue of ``queue_len``."""
    import torch

    torch.set_num_threads(1)
    scheduler.reset(SCHED_CLUSTER, np.random.default_rng(0))
    queue, state = scheduler_inputs(queue_len)
    scheduler.schedule(queue, state)  # warm-up (and the size cache, as in a replay)
    us = []
    for _ in range(n):
        t = time.perf_counter_ns()
        scheduler.schedule(queue, state)
        us.append((time.perf_counter_ns() - t) / 1e3)
    return {
        "schedule_median_us": statistics.median(us),
        "schedule_p99_us": statistics.quantiles(us, n=100)[98],
    }


@pytest.fixture(scope="module")
def scheduler_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return trained_scheduler_dir(tmp_path_factory.mktemp("bench_scheduler"))


@pytest.mark.benchmark
@pytest.mark.parametrize("queue_len", [10, 1000])
def test_scheduler_decision_latency(benchmark: Any, scheduler_dir: Path, queue_len: int) -> None:
    import torch

    torch.set_num_threads(1)
    scheduler = load_router(scheduler_dir)
    scheduler.reset(SCHED_CLUSTER, np.random.default_rng(0))
    queue, state = scheduler_inputs(queue_len)
    index, instance = benchmark(scheduler.schedule, queue, state)  # type: ignore[union-attr]
    assert 0 <= index < queue_len and instance == 3


@pytest.mark.benchmark
def test_train_router_200_steps(benchmark: Any, tmp_path: Path) -> None:
    from d3rlpy.logging import NoopAdapterFactory

    ds = make_dataset(4_000)
    cfg = TrainConfig(
        algorithm="cql", n_steps=200, n_steps_per_epoch=200, checkpoint_every_steps=200
    )
    counter = iter(range(10**6))

    def run() -> int:
        res = train_router(
            cfg, ds, run_dir=tmp_path / str(next(counter)), logger_adapter=NoopAdapterFactory()
        )
        return res.n_steps_done

    assert benchmark.pedantic(run, rounds=3, iterations=1) == 200


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2_000, help="training steps per run")
    parser.add_argument("--decisions", type=int, default=2_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as d:
        folder = trained_router_dir(Path(d))
        inputs = _decision_inputs(args.decisions)
        for prefer in ("torchscript", "d3"):
            stats = time_decisions(load_router(folder, prefer=prefer, trust=True), inputs)  # type: ignore[arg-type]
            print(
                f"decision latency [{prefer}]: "
                + ", ".join(f"{k}={v:.1f}" for k, v in stats.items())
            )
        sched = trained_scheduler_dir(Path(d))
        for queue_len in (10, 1000):
            stats = time_schedules(load_router(sched), queue_len)
            print(
                f"scheduler decision latency [torchscript, queue {queue_len}]: "
                + ", ".join(f"{k}={v:.1f}" for k, v in stats.items())
            )
    train = time_training(args.steps)
    print("training: " + ", ".join(f"{k}={v:.2f}" for k, v in train.items()))
    overhead = train["train_router_s"] / train["bare_fit_s"] - 1
    print(f"train_router wall time vs bare fit: {overhead:+.1%}")


if __name__ == "__main__":
    main()
