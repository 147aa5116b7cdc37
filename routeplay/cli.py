"""The ``routeplay`` command line: one entry point, one sub-command per package.

Each package that offers commands has a ``_cli.py`` module with
``register(subparsers)``; it adds its sub-commands and sets ``func`` on them.
Heavy imports happen inside the command functions, so ``routeplay --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from routeplay import __version__
from routeplay._console import one_line

#: Modules that contribute sub-commands, in the order they appear in ``--help``.
COMMAND_MODULES: tuple[str, ...] = (
    "routeplay.datasets._cli",
    "routeplay.estimator._cli",
    "routeplay.replay._cli",
    "routeplay.offline_rl._cli",
    "routeplay.reports._cli",
)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every available sub-command."""
    parser = argparse.ArgumentParser(
        prog="routeplay",
        description="Offline trace replay and offline RL for routing LLM requests.",
    )
    parser.add_argument("--version", action="version", version=f"routeplay {__version__}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the traceback of an error (default: one line on stderr)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # that package offers no commands (yet)
            raise
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code.

    Every error prints one line ``routeplay <command>: error: ...`` to stderr, never a
    traceback (``routeplay --debug <command>`` re-raises instead):

    * exit 2 for what the user can fix: bad values (``ValueError``, which includes the
      library's schema and config errors), missing or unreadable files (``OSError``),
      unknown names (``KeyError``);
    * exit 1 for anything else, with the exception's type in the line;
    * exit 130 on Ctrl-C; 141 (quietly) when the output pipe closes (``| head``).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"routeplay {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`routeplay routers | head`): stop quietly, as Unix tools
        # do; stdout goes to devnull so Python's exit flush cannot fail again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except (ValueError, OSError, KeyError) as exc:
        if args.debug:
            raise
        print(f"routeplay {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the CLI turns any failure into one line
        if args.debug:
            raise
        print(
            f"routeplay {args.command}: error: {type(exc).__name__}: {one_line(exc)} "
            "(rerun with routeplay --debug for the traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
