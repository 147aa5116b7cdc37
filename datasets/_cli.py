"""``routeplay datasets list | describe NAME|PATH | validate PATH``.

``describe`` and ``validate`` check the trace (``describe`` as it streams): bad input
gets one line ``routeplay datasets: error: ...`` on stderr and exit status 2, never a
traceback, and nothing is written. Warnings (e.g. a hash pinned on first use) are
printed as one ``note:``/``warning:`` line each.
"""

from __future__ import annotations

import argparse
import sys
import warnings
import zlib
from collections.abc import Callable
from typing import Any

__all__ = ["register"]


def _parse_columns(text: str | None) -> dict[str, str] | None:
    if not text:
        return None
    mapping: dict[str, str] = {}
    for item in text.split(","):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ValueError(
                f"--columns item {item!r} is not CANONICAL=FILE_COLUMN; expected e.g. "
                "--columns arrival_s=ts,prompt_tokens=in,output_tokens=out"
            )
        mapping[key.strip()] = value.strip()
    return mapping


def _options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    columns = _parse_columns(getattr(args, "columns", None))
    if columns is not None:
        options["columns"] = columns
    if getattr(args, "time_unit", None):
        options["time_unit"] = args.time_unit
    if getattr(args, "drop_zero_tokens", False):
        options["drop_zero_tokens"] = True
    return options


def _cmd_list(args: argparse.Namespace) -> int:
    from ._registry import list_traces

    for info in list_traces():
        rows = f"{info.n_rows:,}" if info.n_rows is not None else "?"
        shipped = " (embedded)" if info.embedded_path else ""
        print(f"{info.name:<28}{info.format:<10}{rows:>12} rows  {info.license}{shipped}")
    return 0


#: Errors of reading a bad file that are reported in one line (never a traceback).
_READ_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,  # TraceSchemaError, UnicodeDecodeError, bad options
    OSError,  # FileNotFoundError, PermissionError, gzip.BadGzipFile
    EOFError,  # a truncated gzip stream
    KeyError,
    zlib.error,
)


def _one_line(exc: BaseException) -> str:
    import polars as pl

    if isinstance(exc, pl.exceptions.PolarsError):
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot read the trace ({type(exc).__name__}: {detail})"
    message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return " ".join(str(message).split()) or type(exc).__name__


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Run a command: bad input gets one line on stderr and exit status 2, notes stay short."""

    def run(args: argparse.Namespace) -> int:
        import polars as pl

        from ._registry import HashPinnedWarning

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if getattr(args, "repin", False):
                    from ._registry import _BY_NAME, fetch

                    if args.trace not in _BY_NAME:
                        raise ValueError(
                            f"--repin applies to registered traces; {args.trace!r} is not one "
                            "(see `routeplay datasets list`). Fix: drop --repin."
                        )
                    fetch(args.trace, repin=True)
                status = command(args)
            except _READ_ERRORS + (pl.exceptions.PolarsError,) as exc:
                if getattr(args, "debug", False):  # `routeplay --debug`: show the traceback
                    raise
                status = 2
                error: BaseException | None = exc
            else:
                error = None
        for item in caught:
            kind = "note" if issubclass(item.category, HashPinnedWarning) else "warning"
            print(f"routeplay datasets: {kind}: {_one_line(item.message)}", file=sys.stderr)  # type: ignore[arg-type]
        if error is not None:
            print(f"routeplay datasets: error: {_one_line(error)}", file=sys.stderr)
        return status

    return run


def _cmd_describe(args: argparse.Namespace) -> int:
    from ._describe import describe_trace
    from ._loaders import scan_trace

    description = describe_trace(scan_trace(args.trace, format=args.format, **_options(args)))
    print(description.to_json() if args.json else str(description))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from ._loaders import load_trace

    trace = load_trace(args.trace, format=args.format, **_options(args))
    print(f"ok: {trace.height} requests")
    return 0


def _add_format_options(parser: argparse.ArgumentParser) -> None:
    from ._loaders import FORMATS

    parser.add_argument("--format", choices=FORMATS, default=None, help="file format")
    parser.add_argument(
        "--columns",
        default=None,
        help="for --format table: CANONICAL=FILE_COLUMN pairs, comma separated",
    )
    parser.add_argument(
        "--time-unit",
        dest="time_unit",
        choices=("s", "ms", "us", "ns", "datetime"),
        default=None,
        help="for --format table: unit of the arrival column",
    )
    parser.add_argument(
        "--drop-zero-tokens",
        action="store_true",
        help="drop rows with 0 prompt or output tokens (warns with counts)",
    )
    parser.add_argument(
        "--repin",
        action="store_true",
        help="for a registered trace without a published sha256: accept its current "
        "content and pin its hash again",
    )


def register(subparsers: Any) -> None:
    """Add the ``datasets`` command and its sub-commands to the ``routeplay`` CLI."""
    parser = subparsers.add_parser("datasets", help="list, describe and validate request traces")
    commands = parser.add_subparsers(dest="datasets_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)

    listing = commands.add_parser("list", help="list the registered public traces")
    listing.set_defaults(func=_cmd_list)

    describe = commands.add_parser(
        "describe", help="counts, span, rates, burstiness and token percentiles of a trace"
    )
    describe.add_argument("trace", metavar="NAME|PATH", help="registered name or file path")
    describe.add_argument("--json", action="store_true", help="print JSON instead of text")
    _add_format_options(describe)
    describe.set_defaults(func=_guarded(_cmd_describe))

    validate = commands.add_parser(
        "validate", help="load a trace and check it against the canonical schema"
    )
    validate.add_argument("trace", metavar="NAME|PATH", help="registered name or file path")
    _add_format_options(validate)
    validate.set_defaults(func=_guarded(_cmd_validate))
