"""``routeplay sweep SWEEP.toml``: run a sweep file on a process pool or on Ray.

The file holds the fields of :class:`~routeplay.replay.SweepGrid`:

.. code-block:: toml

    trace = "azure-2023-code"
    first_requests = 2000
    episode_n_requests = 500
    seeds = [0, 1]
    clusters = ["paper-4xv100"]       # built-in names or TOML paths (relative to this file)

    [routers]
    rr = "round-robin"
    mc = { name = "max-capacity", mode = "best-fit" }

    [[calls]]                          # optional: a registered function (or any, with
    label = "train"                    # --allow-code: then the file is code)
    function = "my_package.jobs:train"
    params = { n_steps = 1000 }
    seeds = [0]

``--out DIR`` keeps every finished cell in ``DIR/cells/`` (rerunning resumes; pass
``--no-resume`` to start over) and writes ``DIR/cells.parquet`` (one row per cell) and
``DIR/requests.parquet`` (per-request rows).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["register_sweep"]


def _join_ray(address: str) -> None:
    """Connect to a running Ray cluster, or say in one line why it failed and what to do."""
    import ray
    import ray.exceptions

    try:
        ray.init(address=address)
    except (ConnectionError, ray.exceptions.AuthenticationError) as exc:
        raise ValueError(
            f"cannot join the Ray cluster at {address}: {' '.join(str(exc).split())[:300]}. "
            "Fix: check the address (ray status on the head prints it); if the cluster uses "
            "token authentication, set RAY_AUTH_MODE=token and the cluster's token "
            "(RAY_AUTH_TOKEN or ~/.ray/auth_token) in this shell; see docs/ray.md."
        ) from exc


def _cmd_sweep(args: argparse.Namespace) -> int:
    import polars as pl

    from routeplay._console import progress_enabled

    from ._sweep import load_sweep, run_sweep

    grid = load_sweep(args.sweep, allow_code=args.allow_code)
    out = Path(args.out) if args.out else None
    if args.ray_address is not None:
        _join_ray(args.ray_address)
    result = run_sweep(
        grid,
        backend="ray" if args.ray_address is not None else args.backend,
        n_workers=args.workers,
        results_dir=out,
        resume=not args.no_resume,
        show_progress=progress_enabled(quiet=args.quiet),
    )
    if out is not None:
        result.cells.write_parquet(out / "cells.parquet")
        result.requests.write_parquet(out / "requests.parquet")
    cells = result.cells
    n_ok = int((cells["status"] == "ok").sum())
    print(
        f"{cells.height} cells: {n_ok} ok, {result.n_failed} failed, "
        f"{result.n_loaded} loaded from earlier runs"
    )
    metric = "e2e_s_mean"
    if metric in cells.columns and n_ok:
        table = (
            cells.filter(pl.col("status") == "ok", pl.col("kind") == "replay")
            .group_by("label", "cluster", maintain_order=True)
            .agg(pl.len().alias("n_cells"), pl.col(metric).mean().alias(f"{metric} (mean)"))
        )
        with pl.Config(
            tbl_rows=100, tbl_hide_dataframe_shape=True, tbl_hide_column_data_types=True
        ):
            print(table)
    for row in result.failed().select("label", "episode", "seed", "error").iter_rows():
        print(f"FAILED {row[0]} episode={row[1]} seed={row[2]}: {row[3]}", file=sys.stderr)
    if out is not None:
        print(f"wrote {out}/cells.parquet, {out}/requests.parquet and {out}/cells/")
    return 1 if result.n_failed else 0


def register_sweep(subparsers: Any) -> None:
    """Add the ``sweep`` sub-command."""
    p = subparsers.add_parser(
        "sweep",
        help="run a sweep (routers x clusters x episodes x seeds) from a TOML file",
        description="Run every cell of a sweep file; results are resumable with --out.",
    )
    p.add_argument("sweep", help="sweep TOML file")
    p.add_argument("--backend", choices=("process", "ray", "serial"), default="process")
    p.add_argument("--workers", type=int, default=None, help="worker processes (default: cores)")
    p.add_argument("--out", default=None, help="results directory (enables resume)")
    p.add_argument("--no-resume", action="store_true", help="rerun cells already in --out")
    p.add_argument(
        "--allow-code",
        action="store_true",
        help="let [[calls]] run any importable function (trust the file like code)",
    )
    p.add_argument(
        "--ray-address", default=None, help="connect to this Ray cluster (implies --backend ray)"
    )
    p.add_argument(
        "--quiet", action="store_true", help="no progress bar (shown only on a terminal anyway)"
    )
    p.set_defaults(func=_cmd_sweep)
