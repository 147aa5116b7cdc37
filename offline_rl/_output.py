"""The output folder of ``routeplay train``: fingerprinted, built aside, renamed into place.

A training output folder (``--out``) holds ``logs/`` (when behaviour is logged),
``run/`` (config, checkpoints, d3rlpy logs), the router files of
:func:`~routeplay.offline_rl.save_router` and ``train.json``: the run's *settings*
(training config, input files' sha256 or the behaviour-logging settings) and their
sha256, the *fingerprint*.

Rules (:func:`plan_output`), checked before any existing file is touched:

* the work happens in a staging folder beside ``out`` (``.<name>.partial``) that is
  renamed to ``out`` only when the router is saved (:func:`commit_output`), so a killed
  run never leaves a folder at ``out`` that looks complete;
* ``mode="new"`` (no flag): ``out`` and the staging folder must not exist (or ``out``
  is an empty folder); otherwise the call refuses, naming ``--resume`` when the
  existing run has the same fingerprint and ``--overwrite`` when it does not;
* ``mode="resume"``: continues an unfinished staging run with the same fingerprint, or
  does nothing when ``out`` is a finished run with the same fingerprint; a run with
  another fingerprint is refused (naming ``--overwrite`` and the differing settings);
  with nothing there it starts a new run;
* ``mode="overwrite"``: starts over in a fresh staging folder; the old ``out`` is
  replaced only when the new router is complete;
* a path that is not a folder written by ``routeplay train`` (no ``train.json`` or
  ``router.json``, and not empty) is never replaced, whatever the mode.

The Python API uses the same functions (the CLI is a thin caller).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ._files import sha256_json, write_json_atomic

__all__ = ["TRAIN_FILE", "OutputPlan", "commit_output", "plan_output", "start_output"]

#: The settings file of a training output folder.
TRAIN_FILE = "train.json"
_MARKERS = (TRAIN_FILE, "router.json")
_FORMAT = 1

Mode = Literal["new", "resume", "overwrite"]
Action = Literal["new", "continue", "done"]
_FLAG = {"new": "no flag", "resume": "--resume", "overwrite": "--overwrite"}


@dataclass(frozen=True, slots=True, kw_only=True)
class OutputPlan:
    """What a training call will do with its output folder.

    Attributes:
        out: the final folder.
        staging: the folder the work happens in (renamed to ``out`` at the end).
        action: "new" (start in a fresh staging folder), "continue" (resume the
            unfinished run in ``staging``) or "done" (``out`` is a finished run with
            these settings; nothing to do).
        fingerprint: sha256 of ``settings``.
        settings: the run's settings (JSON-ready).
    """

    out: Path
    staging: Path
    action: Action
    fingerprint: str
    settings: dict[str, Any]


def staging_path(out: Path) -> Path:
    """The staging folder of ``out``: ``.<name>.partial`` beside it.

    Example:
        >>> staging_path(Path("runs/cql"))
        PosixPath('runs/.cql.partial')
    """
    return out.parent / f".{out.name}.partial"


def settings_fingerprint(settings: dict[str, Any]) -> str:
    """sha256 of the settings (canonical JSON) plus this file format's version.

    Example:
        >>> settings_fingerprint({"a": 1}) == settings_fingerprint({"a": 1})
        True
    """
    return sha256_json({"format": _FORMAT, "settings": settings})


def _leaves(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_leaves(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: data}


def _differences(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """One line naming the settings that differ, e.g. ``inputs.reward ('a' -> 'b')``."""
    if old is None:
        return "unknown settings (no readable train.json)"
    a, b = _leaves(old), _leaves(new)
    parts = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) != b.get(key):
            x, y = repr(a.get(key)), repr(b.get(key))
            if len(x) + len(y) > 80:
                parts.append(key)
            else:
                parts.append(f"{key} ({x} -> {y})")
    return ", ".join(parts) if parts else "the settings file format"


def _read_train_file(folder: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((folder / TRAIN_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _kind(folder: Path) -> Literal["absent", "empty", "ours", "foreign"]:
    if not folder.exists() and not folder.is_symlink():
        return "absent"
    if not folder.is_dir() or folder.is_symlink():
        return "foreign"
    names = {p.name for p in folder.iterdir()}
    if not names:
        return "empty"
    return "ours" if names & set(_MARKERS) else "foreign"


def plan_output(out: str | Path, *, settings: dict[str, Any], mode: Mode = "new") -> OutputPlan:
    """Decide what to do with ``out`` for a run with ``settings``; touches nothing.

    Args:
        out: the output folder.
        settings: the run's settings (JSON-ready dict; compared key by key).
        mode: "new", "resume" or "overwrite" (see the module docstring).

    Returns:
        The :class:`OutputPlan`.

    Raises:
        ValueError: (one line, naming the flag to use) ``out`` or its staging folder
            holds a run that ``mode`` does not allow to continue or replace, or ``out``
            is not a folder written by ``routeplay train``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     plan = plan_output(Path(d) / "r", settings={"seed": 1})
        ...     (plan.action, plan.staging.name)
        ('new', '.r.partial')
    """
    if mode not in _FLAG:
        raise ValueError(f"mode = {mode!r}; expected one of {list(_FLAG)}.")
    out = Path(out)
    staging = staging_path(out)
    fingerprint = settings_fingerprint(settings)

    def plan(action: Action) -> OutputPlan:
        return OutputPlan(
            out=out, staging=staging, action=action, fingerprint=fingerprint, settings=settings
        )

    out_kind = _kind(out)
    if out_kind == "foreign":
        raise ValueError(
            f"--out {str(out)!r} exists and is not a router folder written by routeplay "
            f"train (no {TRAIN_FILE} or router.json); refusing to touch it. Fix: choose "
            "another --out."
        )
    stage_kind = _kind(staging)
    if stage_kind == "foreign" and staging.exists() and not staging.is_dir():
        raise ValueError(
            f"{str(staging)!r} (the staging path of --out {str(out)!r}) exists and is not a "
            "folder; refusing to touch it. Fix: choose another --out."
        )
    stage_present = stage_kind in ("ours", "foreign")  # an empty one is as good as none
    stage_meta = _read_train_file(staging) if stage_present else None
    out_meta = _read_train_file(out) if out_kind == "ours" else None
    stage_match = stage_meta is not None and stage_meta.get("fingerprint") == fingerprint
    out_match = (
        out_meta is not None
        and out_meta.get("fingerprint") == fingerprint
        and (out / "router.json").is_file()
    )
    if mode == "overwrite":
        return plan("new")
    if mode == "resume":
        if stage_match:
            return plan("continue")
        if out_match:
            return plan("done")
        if stage_present:
            raise ValueError(
                f"--resume: the unfinished run in {str(staging)!r} has other settings "
                f"(differs in: {_differences(_settings(stage_meta), settings)}); refusing to "
                "resume it (nothing was changed). Fix: pass --overwrite to start over."
            )
        if out_kind == "ours":
            raise ValueError(
                f"--resume: --out {str(out)!r} holds a router trained with other settings "
                f"(differs in: {_differences(_settings(out_meta), settings)}); refusing to "
                "resume it (nothing was changed). Fix: pass --overwrite to replace it, or "
                "choose another --out."
            )
        return plan("new")
    # mode == "new"
    if stage_present:
        if stage_match:
            raise ValueError(
                f"an unfinished run with these settings is in {str(staging)!r} (a killed or "
                "failed earlier run); nothing was changed. Fix: pass --resume to continue "
                "it, or --overwrite to start over."
            )
        raise ValueError(
            f"an unfinished run with other settings is in {str(staging)!r} (differs in: "
            f"{_differences(_settings(stage_meta), settings)}); nothing was changed. Fix: "
            "pass --overwrite to discard it and start over."
        )
    if out_kind == "ours":
        if out_match:
            raise ValueError(
                f"--out {str(out)!r} already holds a router trained with these settings; "
                "nothing was changed. Fix: pass --resume to keep it (nothing to do), or "
                "--overwrite to train it again from scratch."
            )
        raise ValueError(
            f"--out {str(out)!r} holds a router trained with other settings (differs in: "
            f"{_differences(_settings(out_meta), settings)}); nothing was changed. Fix: "
            "pass --overwrite to replace it, or choose another --out."
        )
    return plan("new")


def _settings(meta: dict[str, Any] | None) -> dict[str, Any] | None:
    if meta is None or not isinstance(meta.get("settings"), dict):
        return None
    return dict(meta["settings"])


def start_output(plan: OutputPlan) -> Path:
    """Prepare the staging folder of ``plan`` and return it.

    "new": any old staging folder is deleted and a fresh one created with
    ``train.json``. "continue": the staging folder is used as it is.

    Raises:
        ValueError: ``plan.action`` is "done" (there is nothing to start).
    """
    if plan.action == "done":
        raise ValueError(f"{str(plan.out)!r} is finished; there is nothing to start.")
    if plan.action == "new":
        if plan.staging.exists():
            shutil.rmtree(plan.staging)
        plan.staging.mkdir(parents=True)
        write_json_atomic(
            plan.staging / TRAIN_FILE,
            {"format": _FORMAT, "fingerprint": plan.fingerprint, "settings": plan.settings},
        )
    return plan.staging


def commit_output(plan: OutputPlan) -> Path:
    """Rename the finished staging folder to ``plan.out`` (replacing an old one).

    The old folder is first renamed aside (``.<name>.old-<pid>``), then the staging
    folder takes its place, then the old one is deleted: at every moment ``out`` is
    either the old complete folder, absent, or the new complete folder.

    Returns:
        ``plan.out``.
    """
    out = plan.out
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        os.rename(out, old)
    os.rename(plan.staging, out)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return out
