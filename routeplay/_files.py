"""Output folders that appear whole or not at all.

A command that writes several files (``routeplay replay --out``) builds them in a
temporary sibling folder and renames it into place only when everything was written,
so a killed run never leaves an old ``summary.json`` beside new Parquet files. The
rename is atomic on one filesystem (POSIX ``rename``); replacing an earlier output
moves it aside first, so there is no moment at which a reader sees a mix of both.

This module imports nothing from the library, so every package may use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_folder"]


@contextlib.contextmanager
def atomic_folder(final: str | Path, *, marker: str) -> Iterator[Path]:
    """Yield an empty temporary folder that replaces ``final`` when the block succeeds.

    ``final`` may be missing, empty, or an earlier output of the same command (it holds
    ``marker``, e.g. ``summary.json``): then it is replaced whole. A non-empty folder
    without ``marker`` is someone else's: refused, nothing touched. If the block raises
    (or the process is killed), ``final`` is left as it was and the temporary folder is
    removed (or, after a kill, left as ``.tmp-<name>-<pid>`` beside it).

    Args:
        final: the output folder.
        marker: a file every complete output of this command holds.

    Yields:
        The temporary folder to write into.

    Raises:
        FileExistsError: if ``final`` is a file, or a non-empty folder without ``marker``.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp()) / "run"
        >>> with atomic_folder(out, marker="summary.json") as tmp:
        ...     _ = (tmp / "summary.json").write_text("{}")
        >>> sorted(p.name for p in out.iterdir())
        ['summary.json']
        >>> with atomic_folder(out, marker="summary.json") as tmp:
        ...     raise RuntimeError("killed half-way")
        Traceback (most recent call last):
        ...
        RuntimeError: killed half-way
        >>> sorted(p.name for p in out.parent.iterdir())  # the earlier output is untouched
        ['run']
    """
    out = Path(final)
    if out.exists():
        if not out.is_dir():
            raise FileExistsError(
                f"output folder {out} is a file; expected a folder. Fix: pass another --out."
            )
        if any(out.iterdir()) and not (out / marker).exists():
            raise FileExistsError(
                f"output folder {out} is not empty and holds no {marker}, so it is not an "
                "earlier output of this command; refusing to replace it. Fix: pass a new or "
                "empty folder to --out."
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".tmp-{out.name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        old = out.parent / f".old-{out.name}-{os.getpid()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old)
    else:
        os.rename(tmp, out)
