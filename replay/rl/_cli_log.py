"""``routeplay log``: replay a trace under a router and write a transition dataset.

``replay/_cli.py`` calls :func:`register_log` from its ``register(subparsers)``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register_log", "run_log"]


def register_log(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``log`` sub-command to the ``routeplay`` parser.

    Example:
        >>> parser = argparse.ArgumentParser(prog="routeplay")
        >>> register_log(parser.add_subparsers(dest="command"))
        >>> args = parser.parse_args(["log", "--trace", "t.parquet", "--cluster", "a100x4",
        ...                           "--router", "round-robin", "--out", "x.parquet"])
        >>> args.epsilon, args.reward, args.func is run_log
        (0.0, 'paper-workload-guided', True)
    """
    p = subparsers.add_parser(
        "log",
        help="log a router's decisions as a transition dataset (Parquet) for offline RL",
        description=(
            "Replay a trace (optionally cut into episodes) on a cluster under a router, with "
            "optional epsilon-random exploration, and write one row per routing decision "
            "(observation, action, reward, next observation, flags, propensity)."
        ),
    )
    p.add_argument("--trace", required=True, help="registered trace name or trace file path")
    p.add_argument("--cluster", required=True, help="built-in cluster name or cluster TOML file")
    p.add_argument("--router", required=True, help="router name (see `routeplay replay`)")
    split = p.add_mutually_exclusive_group()
    split.add_argument(
        "--episodes-requests", type=int, metavar="N", help="episodes of N consecutive requests"
    )
    split.add_argument(
        "--episode-seconds", type=float, metavar="S", help="episodes of S seconds of trace"
    )
    p.add_argument("--epsilon", type=float, default=0.0, help="exploration probability (0)")
    p.add_argument(
        "--reward", default="paper-workload-guided", help="reward name (paper-workload-guided)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of router and exploration (0)")
    p.add_argument("--max-steps", type=int, default=None, help="cut each episode after N steps")
    p.add_argument("--out", required=True, type=Path, help="output .parquet file")
    p.set_defaults(func=run_log)


def run_log(args: argparse.Namespace) -> int:
    """Run ``routeplay log`` with parsed arguments; prints a one-paragraph summary."""
    from routeplay.datasets import load_trace, split_episodes

    from ..engine._clusters import load_cluster, make_cluster
    from ..routers._registry import make_router
    from ._rewards import make_reward
    from ._transitions import log_transitions

    trace = load_trace(args.trace)
    cluster_arg = str(args.cluster)
    if cluster_arg.endswith(".toml") or Path(cluster_arg).is_file():
        cluster = load_cluster(cluster_arg)
    else:
        cluster = make_cluster(cluster_arg)
    router = make_router(args.router)
    reward = make_reward(args.reward)
    if args.episodes_requests is not None:
        episodes = [e.trace for e in split_episodes(trace, n_requests=args.episodes_requests)]
    elif args.episode_seconds is not None:
        episodes = [e.trace for e in split_episodes(trace, duration_s=args.episode_seconds)]
    else:
        episodes = [trace]
    res = log_transitions(
        episodes,
        cluster,
        router,
        reward=reward,
        path=args.out,
        epsilon=args.epsilon,
        seed=args.seed,
        max_steps=args.max_steps,
    )
    m = cluster.n_instances
    actions = ", ".join(f"{'wait' if i == m else i}: {c}" for i, c in enumerate(res.action_counts))
    print(
        f"wrote {res.n_transitions} transitions from {res.n_episodes} episodes "
        f"({res.behaviour}, reward {reward.name}) to {res.path}\n"
        f"actions {{{actions}}}; reward mean {res.reward_mean:.4g}, "
        f"std {res.reward_std:.4g}, min {res.reward_min:.4g}, max {res.reward_max:.4g}\n"
        f"behaviour_markov {str(res.behaviour_markov).lower()} (propensities are the "
        f"policy's probabilities given the state only when true)"
    )
    return 0
