"""``routeplay estimator presets``, ``fit-presets`` and ``fit-clock`` (``--profiling-dir DIR``)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]


def _cmd_presets(args: argparse.Namespace) -> int:
    from ._presets import list_presets, preset_info

    if args.name:
        print(preset_info(args.name).describe())
        return 0
    print(f"{'name':<24}{'kind':<11}{'R^2':>8}{'held-out MAPE':>15}{'n':>7}  sources")
    for name in list_presets():
        info = preset_info(name)
        r2 = f"{info.r_squared:.4f}" if info.r_squared is not None else "-"
        mape = f"{info.heldout_mape:.2%}" if info.heldout_mape is not None else "-"
        n = str((info.n_train or 0) + (info.n_test or 0)) if info.n_train else "-"
        sources = ", ".join(f"{p} ({h[:12]})" for p, h in info.sources) or (
            "published gradients, see notes" if info.kind == "paper" else "see notes"
        )
        print(f"{name:<24}{info.kind:<11}{r2:>8}{mape:>15}{n:>7}  {sources}")
    print(f"regenerate with: {preset_info(list_presets()[0]).command}")
    return 0


def _cmd_fit_presets(args: argparse.Namespace) -> int:
    from ._presets import (
        _presets_path,
        build_presets_document,
        preset_document_differences,
        write_presets_document,
    )

    document = build_presets_document(args.profiling_dir)
    if args.check:
        target = args.out or _presets_path()
        with open(target, encoding="utf-8") as f:
            committed = json.load(f)
        # round-trip through JSON so both sides have the same float representation
        fresh = json.loads(json.dumps(document))
        diffs = preset_document_differences(committed, fresh)
        if diffs:
            print(
                f"{target} differs from a fresh fit of {args.profiling_dir} in "
                f"{diffs[:5]}; rerun without --check to regenerate it.",
                file=sys.stderr,
            )
            return 1
        print(f"ok: {target} matches a fresh fit")
        return 0
    path = write_presets_document(document, args.out)
    for name, entry in document["presets"].items():
        fit = entry["fit"]
        stats = (
            f"R^2 {fit['r_squared']:.4f}, held-out MAPE {fit['heldout_mape']:.2%}"
            if fit
            else {"paper": "published gradients", "scaled": "scaled by datasheet ratios"}.get(
                entry["kind"], entry["kind"]
            )
        )
        print(f"{name:<24}{stats}")
    print(f"wrote {path}")
    return 0


def _cmd_fit_clock(args: argparse.Namespace) -> int:
    from ._clock import (
        builtin_clock_path,
        builtin_clock_sources,
        check_clock_file,
        fit_vidur_clock,
        save_clock,
    )

    sources = builtin_clock_sources()
    if args.out is not None and len(sources) != 1:  # pragma: no cover - one built-in today
        raise ValueError("--out needs exactly one built-in clock to regenerate.")
    status = 0
    for name, (gpu, model) in sources.items():
        fresh = fit_vidur_clock(args.profiling_dir, gpu=gpu, model=model, name=name)
        target = args.out or builtin_clock_path(name)
        if args.check:
            diffs = check_clock_file(target, fresh)
            if diffs:
                print(
                    f"{target} differs from a fresh fit of {args.profiling_dir} in {diffs}; "
                    "rerun without --check to regenerate it.",
                    file=sys.stderr,
                )
                status = 1
            else:
                print(f"ok: {target} matches a fresh fit")
            continue
        save_clock(fresh, target)
        print(f"{name:<30}{fresh.decode_ms.shape} decode, {fresh.prefill_ms.shape} prefill cells")
        print(f"wrote {target}")
    return status


def register(subparsers: Any) -> None:
    """Add the ``estimator`` command and its sub-commands to the ``routeplay`` CLI."""
    parser = subparsers.add_parser("estimator", help="latency presets and their calibration")
    commands = parser.add_subparsers(dest="estimator_command", metavar="SUBCOMMAND")
    parser.set_defaults(func=lambda _args: parser.print_help() or 2)

    presets = commands.add_parser(
        "presets", help="list the latency presets with their provenance (or show one)"
    )
    presets.add_argument("name", nargs="?", default=None, help="show this preset in full")
    presets.set_defaults(func=_cmd_presets)

    fit = commands.add_parser(
        "fit-presets",
        help="refit the Vidur-based presets and write the preset file (the only way to "
        "change the committed coefficients)",
    )
    fit.add_argument(
        "--profiling-dir",
        dest="profiling_dir",
        required=True,
        help="folder laid out like Vidur's data/profiling, e.g. ../shared/data/vidur_profiling",
    )
    fit.add_argument(
        "--out",
        default=None,
        help="write here instead of the package's estimator/_data/presets.json",
    )
    fit.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the preset file differs from a fresh fit (date ignored)",
    )
    fit.set_defaults(func=_cmd_fit_presets)

    clock = commands.add_parser(
        "fit-clock",
        help="refit the built-in iteration clocks (Vidur's random forests, tabulated) and "
        "write them (needs scikit-learn: pip install 'routeplay[vidur]')",
    )
    clock.add_argument(
        "--profiling-dir",
        dest="profiling_dir",
        required=True,
        help="folder laid out like Vidur's data/profiling, e.g. ../shared/data/vidur_profiling",
    )
    clock.add_argument(
        "--out", default=None, help="write here instead of the package's estimator/_data/"
    )
    clock.add_argument(
        "--check",
        action="store_true",
        help="do not write; exit 1 if the clock file differs from a fresh fit",
    )
    clock.set_defaults(func=_cmd_fit_clock)
