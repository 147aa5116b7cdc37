"""``routeplay train`` and ``routeplay evaluate``: offline RL routers from the command line.

``routeplay train`` trains a router from transition Parquet files (``--transitions``,
e.g. written by ``routeplay log``) or logs heuristic behaviour on a workload first
(``--trace NAME`` windows or ``--task-mix``), then saves the router folder
(:func:`~routeplay.offline_rl.save_router`).

``routeplay evaluate`` replays a saved router folder against heuristics on held-out
episodes, paired, and prints the comparison (:func:`~routeplay.offline_rl.evaluate_routers`).

Episodes: with ``--trace`` the trace is cut into windows of ``--window-requests``
requests; ``train`` uses the earliest ``1 - test_fraction`` of them, ``evaluate`` the
latest ``test_fraction`` (same flags, so the two never overlap). With ``--task-mix``,
training episodes use seeds ``10000 + k`` and evaluation episodes ``20000 + k``.
The CLI uses no output-length predictor (observations carry one decode bucket).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import polars as pl

_DEFAULT_BEHAVIOURS = "round-robin,least-connections,jsq-tokens,min-min,impact-greedy"
_DEFAULT_HEURISTICS = "round-robin,least-connections,jsq-tokens,least-loaded,min-min,impact-greedy"


def _add_workload(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("workload (when episodes are generated)")
    g.add_argument("--trace", help="registered trace name or path, cut into windows")
    g.add_argument("--task-mix", action="store_true", help="generate the paper's task mix")
    g.add_argument("--window-requests", type=int, default=2000, help="requests per window")
    g.add_argument("--test-fraction", type=float, default=0.3, help="latest windows held out")
    g.add_argument("--n-episodes", type=int, default=10, help="task-mix episodes")
    g.add_argument("--rate", type=float, default=20.0, help="task-mix arrival rate (req/s)")
    g.add_argument("--cluster", default="v100x4", help="built-in cluster name or TOML file")


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


def register(subparsers: Any) -> None:
    """Add ``train`` and ``evaluate`` to the ``routeplay`` parser."""
    p = subparsers.add_parser(
        "train",
        help="train a router offline (d3rlpy) from transition logs or heuristic replays",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--transitions", nargs="+", type=Path, help="transition Parquet files")
    _add_workload(p)
    p.add_argument(
        "--behaviours", default=_DEFAULT_BEHAVIOURS, help="comma-separated heuristics to log"
    )
    p.add_argument("--epsilon", type=float, default=0.1, help="exploration of the logged runs")
    p.add_argument("--reward", default="paper-workload-guided", help="reward of the logs")
    p.add_argument("--algorithm", default="cql", help="cql, bcq, bc or double-dqn")
    p.add_argument("--n-steps", type=int, default=5000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True, help="router folder to write")
    p.add_argument("--run-dir", type=Path, help="training run folder (default OUT/run)")
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
    e.add_argument("--max-router-wait-s", type=float, default=2.0)
    e.add_argument("--n-boot", type=int, default=2000)
    e.add_argument("--output", type=Path, help="write the table as Parquet")
    _add_display(e)
    e.set_defaults(func=_cmd_evaluate)


def _cluster(name: str) -> Any:
    from routeplay.replay import load_cluster, make_cluster

    return load_cluster(name) if name.endswith(".toml") else make_cluster(name)


def _episodes(args: argparse.Namespace, *, held_out: bool) -> list[pl.DataFrame]:
    from routeplay.datasets import (
        TaskMixConfig,
        generate_task_mix,
        load_trace,
        split_train_test,
    )

    if bool(args.trace) == bool(args.task_mix):
        raise ValueError(
            "give exactly one of --trace NAME and --task-mix (the workload to replay)."
        )
    if args.task_mix:
        if args.n_episodes < 2:
            raise ValueError(f"--n-episodes {args.n_episodes}; expected >= 2.")
        base = 20_000 if held_out else 10_000
        return [
            generate_task_mix(
                TaskMixConfig(n_requests=args.window_requests, rate_per_s=args.rate, seed=base + k)
            )
            for k in range(args.n_episodes)
        ]
    trace = load_trace(args.trace)
    train, test = split_train_test(
        trace, test_fraction=args.test_fraction, n_requests=args.window_requests
    )
    chosen = test if held_out else train
    return [e.trace for e in chosen]


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


def _cmd_train(args: argparse.Namespace) -> int:
    from routeplay.offline_rl import TrainConfig, build_dataset, save_router, train_router
    from routeplay.replay import make_router, read_transitions
    from routeplay.replay._transitions import default_layout, log_transitions

    out: Path = args.out
    run_dir = args.run_dir or out / "run"
    if args.transitions:
        files = list(args.transitions)
        _, meta = read_transitions(files)
        layout = _layout_from_names(meta.obs_names, meta.n_instances)
    else:
        cluster = _cluster(args.cluster)
        layout = default_layout(cluster)
        episodes = _episodes(args, held_out=False)
        names = [b.strip() for b in args.behaviours.split(",") if b.strip()]
        logs = out / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        files = []
        for j, name in enumerate(names):
            res = log_transitions(
                episodes,
                cluster,
                make_router(name),
                reward=args.reward,
                path=logs / f"{name}.parquet",
                epsilon=args.epsilon,
                seed=args.seed,
                episode_offset=j * len(episodes),
                show_progress=_show(args),
            )
            files.append(res.path)
            _say(
                args,
                f"[{j + 1}/{len(names)}] logged {res.behaviour}: {res.n_episodes} episodes, "
                f"{res.n_transitions} transitions -> {res.path}",
            )
    dataset = build_dataset(files)
    _say(args, dataset.card.summary())
    config = TrainConfig(
        algorithm=args.algorithm,
        n_steps=args.n_steps,
        n_steps_per_epoch=min(1000, args.n_steps),
        checkpoint_every_steps=min(1000, args.n_steps),
        batch_size=args.batch_size,
        seed=args.seed,
    )
    _say(args, f"training {args.algorithm} for {args.n_steps} steps (seed {args.seed})")
    result = train_router(config, dataset, run_dir=run_dir, show_progress=_show(args))
    save_router(result, out, layout=layout)
    print(
        f"trained {args.algorithm} for {result.n_steps_done} steps in "
        f"{result.wall_time_s:.1f} s; router saved to {out}"
    )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from routeplay.offline_rl import evaluate_routers, load_router

    cluster = _cluster(args.cluster)
    learned = {}
    for folder in args.router:
        router = load_router(folder)
        label = router.name
        k = 2
        while label in learned:
            label = f"{router.name}-{k}"
            k += 1
        learned[label] = router
    episodes = _episodes(args, held_out=True)
    heuristics = [h.strip() for h in args.heuristics.split(",") if h.strip()]
    _say(
        args,
        f"replaying {len(learned) + len(heuristics)} routers on {len(episodes)} held-out "
        "episodes (paired)",
    )
    result = evaluate_routers(
        learned,
        heuristics,
        episodes,
        cluster,
        baseline=args.baseline,
        max_router_wait_s=args.max_router_wait_s,
        n_boot=args.n_boot,
        show_progress=_show(args),
    )
    print(result.summary())
    if args.output is not None:
        result.to_frame().write_parquet(args.output)
        print(f"table written to {args.output}", file=sys.stderr)
    return 0
