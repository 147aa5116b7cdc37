"""``routeplay datasets list | describe NAME|PATH | validate PATH``."""

from __future__ import annotations

import argparse
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
    describe.set_defaults(func=_cmd_describe)

    validate = commands.add_parser(
        "validate", help="load a trace and check it against the canonical schema"
    )
    validate.add_argument("trace", metavar="NAME|PATH", help="registered name or file path")
    _add_format_options(validate)
    validate.set_defaults(func=_cmd_validate)
