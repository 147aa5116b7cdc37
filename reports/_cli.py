"""``routeplay report [JOB] --out DIR``: run a report job file.

``JOB`` is a TOML job file or the name of a built-in job (``default``, ``paper``,
``azure-conv``, ``hetero-3k5k7k``); see ``docs/reports.md``.

What it prints:

* on a terminal, stage lines and progress bars (with ETA) on stderr while it works;
  not on a terminal (cron), only warnings on stderr; with ``--quiet``, nothing;
* on success (unless ``--quiet``), on stdout: the verdict, the table of routers, the
  report's path, and as the last line the run folder's path (so
  ``routeplay report ... | tail -n 1`` names the folder);
* on failure, one line ``routeplay report: error: ...`` on stderr, exit 2 for a bad
  job file, arguments or files, 1 otherwise (then with the path of the run's
  ``job.log`` when one was written).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

__all__ = ["register"]


def _cmd_report(args: argparse.Namespace) -> int:
    import logging

    from routeplay._console import one_line, progress_enabled, stage_lines

    from ._job import load_job
    from ._job_run import run_job

    show = progress_enabled(quiet=args.quiet)
    job = None
    try:
        job = load_job(args.job)
        # stage lines on a terminal; warnings (e.g. left-over folders of killed runs) also
        # under cron, where stderr is mailed; nothing with --quiet
        with stage_lines(
            "report", enabled=not args.quiet, level=logging.INFO if show else logging.WARNING
        ):
            result = run_job(
                job,
                args.out,
                run_id=args.run_id,
                overwrite=args.overwrite,
                show_progress=show,
            )
    except (ValueError, OSError, KeyError) as exc:
        print(f"routeplay report: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI turns any failure into one line
        logs = (
            sorted(Path(args.out).glob(f".tmp-{job.name}-*-{os.getpid()}/job.log")) if job else []
        )
        where = f" (details in {logs[0]})" if logs else ""
        print(
            f"routeplay report: error: {type(exc).__name__}: {one_line(exc)}{where}",
            file=sys.stderr,
        )
        return 1
    if not args.quiet:
        print(_run_summary(result.run_dir))
        print(result.run_dir)
    return 0


def _run_summary(run_dir: Path) -> str:
    """The verdict, the router table and the report's path, read back from summary.json."""
    import json

    from routeplay._console import format_router_table

    summary = json.loads((run_dir / "summary.json").read_text())
    lines = []
    verdict = summary.get("verdict")
    if verdict:
        lines += [verdict["headline"], *(f"  {line}" for line in verdict["lines"]), ""]
    rows = summary.get("tables", {}).get("router_summary", {}).get("rows", [])
    if rows:
        lines += [format_router_table([(row["router"], row) for row in rows]), ""]
    lines.append(f"report: {run_dir / 'report.html'}")
    return "\n".join(lines)


def register(subparsers: Any) -> None:
    """Add the ``report`` sub-command."""
    p = subparsers.add_parser(
        "report",
        help="run a report job (replay routers, compare them, write an HTML report)",
        description=(
            "Run a report job file and write <out>/<job name>-<run id>/ atomically: "
            "report.html (opens offline), summary.json, tables/*.parquet, images/, job.log."
        ),
    )
    p.add_argument(
        "job",
        nargs="?",
        default="default",
        help="job TOML file or built-in job name (default: the built-in 'default' job)",
    )
    p.add_argument("--out", required=True, help="folder that receives the dated run folder")
    p.add_argument(
        "--run-id",
        default=None,
        help="run folder suffix (default: UTC time, e.g. 20260101T120000Z)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder")
    p.add_argument("--quiet", action="store_true", help="no progress and no output on success")
    p.set_defaults(func=_cmd_report)
