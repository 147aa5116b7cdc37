"""``routeplay replay``, ``routeplay routers``, ``routeplay clusters`` (and ``routeplay log``).

``routeplay replay --trace azure-2023-conv --cluster a100x4 --router round-robin,llm-d``
replays a trace through each router on the same cluster, prints one summary row per
router and, with ``--out DIR``, writes ``DIR/<router>.parquet`` (per-request results),
``DIR/timelines-<router>.parquet`` and ``DIR/summary.json``. The folder is written
whole or not at all: it is built beside ``DIR`` and renamed into place at the end; an
earlier output in ``DIR`` (it holds ``summary.json``) is replaced, any other non-empty
folder is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _prepare_trace(args: argparse.Namespace, cluster: Any) -> tuple[Any, Any]:
    """Load the trace, apply the requested reshaping, split off predictor training data.

    The predictor's time buckets are those of ``--predictor-preset`` or, by default, of
    the cluster's first instance (as :class:`~routeplay.replay.Scenario` does).
    """
    import polars as pl
    from routeplay.datasets import load_trace, scale_arrival_rate
    from routeplay.estimator import fit_length_predictor, get_preset, time_buckets

    trace = load_trace(args.trace)
    if args.first_requests is not None:
        if args.first_requests < 1:
            raise ValueError(f"--first-requests {args.first_requests}; expected >= 1.")
        trace = trace.head(args.first_requests)
    if args.rate_scale != 1.0:
        trace = scale_arrival_rate(trace, args.rate_scale)
    if args.predictor == "none":
        return trace, None
    if not 0.0 < args.predictor_train_fraction < 1.0:
        raise ValueError(
            f"--predictor-train-fraction {args.predictor_train_fraction}; expected a fraction "
            "in (0, 1): the predictor is fitted on the earliest part of the trace and the rest "
            "is replayed, so evaluation never sees training requests."
        )
    cut = float(trace["arrival_s"].quantile(args.predictor_train_fraction, "lower"))
    train = trace.filter(pl.col("arrival_s") <= cut)
    rest = trace.filter(pl.col("arrival_s") > cut)
    if rest.height == 0:
        raise ValueError("nothing left to replay after the predictor's training split.")
    rest = rest.with_columns(pl.col("arrival_s") - rest["arrival_s"][0])
    latency = (
        get_preset(args.predictor_preset)
        if args.predictor_preset is not None
        else cluster.instances[0].latency
    )
    scheme = time_buckets(latency)
    features = ("task", "prompt_tokens") if "task" in trace.columns else ("prompt_tokens",)
    predictor = fit_length_predictor(train, scheme, features=features)
    print(
        f"predictor: fitted on the first {train.height} requests (t <= {cut:.1f} s); "
        f"replaying the remaining {rest.height}",
        file=sys.stderr,
    )
    return rest, predictor


def _cmd_replay(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from .engine._clusters import load_cluster
    from .engine._engine import run_replay
    from .engine._result import ReplayConfig
    from .routers._registry import make_router

    cluster = load_cluster(args.cluster)
    names = [n.strip() for n in args.router.split(",") if n.strip()]
    if not names:
        raise ValueError("--router is empty; expected one or more names, e.g. round-robin,llm-d.")
    routers = [make_router(n) for n in names]  # fail fast on a bad name
    trace, predictor = _prepare_trace(args, cluster)
    config = ReplayConfig(seed=args.seed, mode=args.mode)
    out = Path(args.out) if args.out else None
    rows: list[tuple[str, dict[str, float]]] = []
    report: dict[str, Any] = {
        "trace": str(args.trace),
        "n_requests": trace.height,
        "cluster": str(args.cluster),
        "seed": args.seed,
        "mode": args.mode,
        "routers": {},
    }
    from routeplay._console import format_router_table, progress_enabled
    from routeplay._files import atomic_folder

    show = progress_enabled(quiet=args.quiet)
    with contextlib.ExitStack() as stack:
        # the whole folder appears at the end, or not at all (a killed rerun used to leave
        # an old summary.json beside new Parquet files)
        tmp = stack.enter_context(atomic_folder(out, marker="summary.json")) if out else None
        for name, router in tqdm(
            list(zip(names, routers, strict=True)), desc="routers", disable=not show
        ):
            result = run_replay(
                trace, cluster, router, config=config, predictor=predictor, show_progress=show
            )
            rows.append((name, result.summary))
            report["routers"][name] = result.to_dict()
            if tmp is not None:
                result.requests.write_parquet(tmp / f"{name}.parquet")
                result.timelines.write_parquet(tmp / f"timelines-{name}.parquet")
        if tmp is not None:
            (tmp / "summary.json").write_text(json.dumps(report, indent=2, default=float))
    if args.json:
        print(json.dumps(report, indent=2, default=float))
    else:
        print(
            f"{trace.height} requests of {args.trace} on {args.cluster} "
            f"({cluster.n_instances} instances), seed {args.seed}, {args.mode} mode"
        )
        print(format_router_table(rows))
        if out is not None:
            print(f"wrote {out}/<router>.parquet and {out}/summary.json")
    return 0


def _cmd_routers(args: argparse.Namespace) -> int:
    from .routers._registry import ROUTERS

    # name, source (built-in or the installed package whose `routeplay.routers` entry
    # point registered it), description
    specs = list(ROUTERS.values())
    width = max(len(spec.source) for spec in specs) + 2
    for spec in specs:
        label = " [oracle]" if spec.oracle else ""
        print(f"{spec.name:<26}{spec.source:<{width}}{spec.description}{label}")
    return 0


def _cmd_clusters(args: argparse.Namespace) -> int:
    from .engine._clusters import list_clusters, make_cluster

    names = list_clusters()
    width = max(len(n) for n in names) + 2
    for name in names:
        cluster = make_cluster(name)
        kinds = sorted({i.latency.name for i in cluster.instances})
        clocks = sorted({i.clock for i in cluster.instances if i.clock is not None})
        timed = f"  (clock: {', '.join(clocks)})" if clocks else ""
        print(f"{name:<{width}}{cluster.n_instances} instances  {', '.join(kinds)}{timed}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``replay``, ``routers``, ``clusters`` (and ``log`` when available)."""
    p = subparsers.add_parser(
        "replay",
        help="replay a trace through one or more routers",
        description="Replay a trace on a cluster under each router and compare them.",
    )
    p.add_argument("--trace", required=True, help="registered trace name or file path")
    p.add_argument("--cluster", required=True, help="built-in cluster name or TOML file")
    p.add_argument("--router", required=True, help="router name(s), comma separated")
    p.add_argument("--seed", type=int, default=0, help="seed handed to the routers")
    p.add_argument("--mode", choices=("fast", "reference"), default="fast")
    p.add_argument("--first-requests", type=int, default=None, help="replay only the first N")
    p.add_argument(
        "--rate-scale", type=float, default=1.0, help="multiply the arrival rate by this factor"
    )
    p.add_argument(
        "--predictor",
        choices=("none", "histogram"),
        default="none",
        help="output-length predictor for routers that use predictions",
    )
    p.add_argument("--predictor-train-fraction", type=float, default=0.2)
    p.add_argument(
        "--predictor-preset",
        default=None,
        help="latency preset of the predictor's time buckets (default: the cluster's first "
        "instance; 'llama2-7b/v100-paper' is the paper's)",
    )
    p.add_argument("--out", default=None, help="directory for Parquet results and summary.json")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (shown only on a terminal anyway)"
    )
    p.set_defaults(func=_cmd_replay)
    r = subparsers.add_parser(
        "routers",
        help="list the routers (built-in and from installed packages)",
        description="List every registered router: name, source (built-in or the installed "
        "package whose 'routeplay.routers' entry point registered it) and description.",
    )
    r.set_defaults(func=_cmd_routers)
    c = subparsers.add_parser("clusters", help="list the built-in clusters")
    c.set_defaults(func=_cmd_clusters)
    try:
        from .rl._cli_log import register_log
    except ModuleNotFoundError as exc:  # the transition logger is optional here
        if exc.name != f"{__package__}._cli_log":
            raise
    else:
        register_log(subparsers)
    from .experiments._cli_sweep import register_sweep

    register_sweep(subparsers)
