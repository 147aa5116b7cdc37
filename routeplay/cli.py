"""The ``routeplay`` command line: one entry point, one sub-command per package.

Each package that offers commands has a ``_cli.py`` module with
``register(subparsers)``; it adds its sub-commands and sets ``func`` on them.
Heavy imports happen inside the command functions, so ``routeplay --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from routeplay import __version__

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

    Errors the user can fix (bad input, missing files) print one line to stderr and
    exit with status 2, without a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"routeplay {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
