"""What the ``routeplay`` commands show a person at a terminal.

One policy for every long command (``report``, ``train``, ``evaluate``, ``sweep``,
``replay``):

* **progress** (tqdm bars with an ETA, and one line per stage of the work) goes to
  stderr, and only when stderr is a terminal; ``--quiet`` turns it off, and
  ``--progress`` (where a command offers it) turns it on without a terminal;
* the **result** (the summary table, the verdict, where the files are) goes to stdout;
* stage lines are the library's own ``logging`` records (logger ``routeplay``, level
  INFO), so a run folder's ``job.log`` and the terminal tell the same story. Records
  logged with ``extra={"console": False}`` (e.g. one line per replay, which the
  progress bar already counts) stay out of the terminal.

Nothing here is imported by the library packages: it belongs to the command line.
"""

from __future__ import annotations

import contextlib
import logging
import math
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TextIO

__all__ = [
    "format_router_table",
    "format_table",
    "one_line",
    "progress_enabled",
    "stage_lines",
]


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (a ``KeyError``'s without the quotes).

    Example:
        >>> one_line(ValueError("bad value" + chr(10) + "  expected a number"))
        'bad value expected a number'
        >>> one_line(KeyError("unknown router 'rr'"))
        "unknown router 'rr'"
        >>> one_line(PermissionError(13, "Permission denied", "t.csv"))
        "[Errno 13] Permission denied: 't.csv'"
    """
    text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    return " ".join(text.split()) or type(exc).__name__


def progress_enabled(*, quiet: bool, force: bool = False, stream: TextIO | None = None) -> bool:
    """Whether a command shows progress: on a terminal unless ``quiet``; always if ``force``.

    Args:
        quiet: the command's ``--quiet`` flag (wins over ``force``).
        force: the command's ``--progress`` flag (progress without a terminal).
        stream: where progress goes (default ``sys.stderr``).

    Returns:
        True when bars and stage lines should be shown.

    Example:
        >>> import io
        >>> progress_enabled(quiet=False, stream=io.StringIO())  # not a terminal
        False
        >>> progress_enabled(quiet=False, force=True, stream=io.StringIO())
        True
        >>> progress_enabled(quiet=True, force=True)
        False
    """
    if quiet:
        return False
    if force:
        return True
    out = sys.stderr if stream is None else stream
    isatty = getattr(out, "isatty", None)
    return bool(isatty is not None and isatty())


class _TqdmSafeHandler(logging.Handler):
    """Writes records through ``tqdm.write`` so they do not break a running bar."""

    def __init__(self, prefix: str, stream: TextIO, start_s: float) -> None:
        super().__init__(level=logging.INFO)
        self._prefix = prefix
        self._stream = stream
        self._start_s = start_s

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "console", True) is False:
            return
        try:
            from tqdm.auto import tqdm

            elapsed = time.perf_counter() - self._start_s
            level = "" if record.levelno < logging.WARNING else f"{record.levelname.lower()}: "
            tqdm.write(
                f"{self._prefix} [{elapsed:6.1f} s] {level}{record.getMessage()}",
                file=self._stream,
            )
        except Exception:  # noqa: BLE001 - a display problem must never stop the work
            self.handleError(record)


@contextlib.contextmanager
def stage_lines(
    command: str, *, enabled: bool, stream: TextIO | None = None, level: int = logging.INFO
) -> Iterator[None]:
    """Show the library's log records as stage lines on stderr while the block runs.

    Args:
        command: the sub-command, shown as ``routeplay <command>`` before each line.
        enabled: when False nothing is attached (the block runs unchanged).
        stream: where lines go (default ``sys.stderr``).
        level: the lowest level shown: INFO for stage lines on a terminal, WARNING to
            show only warnings (e.g. under cron, where stderr is mailed).

    Yields:
        Nothing; the handler is removed and the logger's level restored on exit.

    Example:
        >>> import io, logging
        >>> buf = io.StringIO()
        >>> with stage_lines("demo", enabled=True, stream=buf):
        ...     logging.getLogger("routeplay.demo").info("loading %d requests", 5)
        >>> line = buf.getvalue().rstrip()
        >>> line.startswith("routeplay demo [") and line.endswith("] loading 5 requests")
        True
    """
    if not enabled:
        yield
        return
    root = logging.getLogger("routeplay")
    handler = _TqdmSafeHandler(
        f"routeplay {command}", sys.stderr if stream is None else stream, time.perf_counter()
    )
    handler.setLevel(level)
    previous = root.level
    root.addHandler(handler)
    if root.getEffectiveLevel() > level:
        root.setLevel(level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: first column left-aligned, the others right-aligned.

    Args:
        header: column titles.
        rows: rows of already formatted cells, each as long as ``header``.

    Returns:
        The table, a rule under the header, no trailing newline.

    Raises:
        ValueError: if a row's length differs from the header's.

    Example:
        >>> print(format_table(["router", "E2E mean s"], [["rr", "1.250"], ["min-min", "0.980"]]))
        router   E2E mean s
        -------  ----------
        rr            1.250
        min-min       0.980
    """
    table = [list(header), *(list(r) for r in rows)]
    for row in table:
        if len(row) != len(header):
            raise ValueError(
                f"format_table: row {row} has {len(row)} cells; expected {len(header)} "
                f"(one per header column {list(header)})."
            )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in table
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


#: Columns of a router table: (summary key, header, scale, format).
ROUTER_TABLE_COLUMNS: tuple[tuple[str, str, float, str], ...] = (
    ("e2e_s_mean", "E2E mean s", 1.0, "{:.3f}"),
    ("e2e_s_p50", "p50", 1.0, "{:.3f}"),
    ("e2e_s_p99", "p99", 1.0, "{:.3f}"),
    ("ttft_s_mean", "TTFT mean s", 1.0, "{:.3f}"),
    ("tbt_mean_s_mean", "TBT mean ms", 1000.0, "{:.1f}"),
    ("throughput_req_per_s", "req/s", 1.0, "{:.2f}"),
    ("utilisation_cv", "util CV", 1.0, "{:.3f}"),
    ("n_preemptions", "preempt", 1.0, "{:.0f}"),
)


def format_router_table(rows: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """One line per router with its summary metrics (``replay`` and ``report`` print it).

    Args:
        rows: (router label, summary) pairs; a summary maps the keys of
            :data:`ROUTER_TABLE_COLUMNS` (``ReplayResult.summary`` or a row of the
            report's ``router_summary`` table) to numbers; missing or null is ``nan``.

    Returns:
        The table (see :func:`format_table`).

    Example:
        >>> print(format_router_table([("rr", {"e2e_s_mean": 1.25, "tbt_mean_s_mean": 0.02})]))
        router  E2E mean s  p50  p99  TTFT mean s  TBT mean ms  req/s  util CV  preempt
        ------  ----------  ---  ---  -----------  -----------  -----  -------  -------
        rr           1.250  nan  nan          nan         20.0    nan      nan      nan
    """
    body = []
    for name, summary in rows:
        cells = [name]
        for key, _, scale, fmt in ROUTER_TABLE_COLUMNS:
            value = summary.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                cells.append("nan")
            else:
                cells.append(fmt.format(float(value) * scale))
        body.append(cells)
    return format_table(["router", *(h for _, h, _, _ in ROUTER_TABLE_COLUMNS)], body)
