"""Files of training runs and router folders: hashes, atomic writes, weights-only loads.

Nothing in ``offline_rl`` unpickles a file unless the caller said it trusts it:

* checkpoints (``run_dir/checkpoint/model.pt``) hold only tensors and plain containers
  (``torch.save`` of the networks' and optimizers' state dicts) and are read with
  ``torch.load(..., weights_only=True)``, which refuses any other pickled object even
  when ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` is set (that variable only changes the
  default of calls that do not pass ``weights_only``);
* metadata is JSON;
* ``policy.pt`` is TorchScript (``torch.jit.load`` reads it with TorchScript's own
  restricted unpickler, which creates no Python objects of arbitrary classes);
* ``model.d3`` (d3rlpy's ``algo.save``) *is* a Python pickle and is read only with
  ``load_router(..., prefer="d3", trust=True)``.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "load_state_dicts",
    "one_line",
    "save_state_dicts",
    "sha256_arrays",
    "sha256_file",
    "sha256_json",
    "write_json_atomic",
]

#: Errors ``torch.load(weights_only=True)`` / ``torch.jit.load`` raise on a bad file.
LOAD_ERRORS: tuple[type[BaseException], ...] = (
    pickle.UnpicklingError,
    RuntimeError,
    EOFError,
    OSError,
    zipfile.BadZipFile,
    ValueError,
    TypeError,
    AttributeError,
    KeyError,
    IndexError,
)


def one_line(text: object, limit: int = 300) -> str:
    r"""``text`` as one line (whitespace runs collapsed), cut to ``limit`` characters.

    Example:
        >>> one_line("Weights only load failed.\n\n  Please file an issue")
        'Weights only load failed. Please file an issue'
        >>> one_line("x" * 10, limit=6)
        'xxx...'
    """
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB chunks).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     p = Path(d) / "x"
        ...     _ = p.write_bytes(b"abc")
        ...     sha256_file(p)[:16]
        'ba7816bf8f01cfea'
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_arrays(*arrays: np.ndarray) -> str:
    """Hex sha256 of numpy arrays' dtypes, shapes and bytes, in order.

    Example:
        >>> a = np.arange(3, dtype=np.int64)
        >>> sha256_arrays(a) == sha256_arrays(a.copy()), sha256_arrays(a) == sha256_arrays(a + 1)
        (True, False)
    """
    digest = hashlib.sha256()
    for arr in arrays:
        a = np.ascontiguousarray(arr)
        digest.update(f"{a.dtype.str}{a.shape}".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()


def sha256_json(data: Any) -> str:
    """Hex sha256 of ``data`` as canonical JSON (sorted keys, no spaces).

    Example:
        >>> sha256_json({"b": 1, "a": [1, 2]}) == sha256_json({"a": [1, 2], "b": 1})
        True
    """
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` via a temporary file and ``os.replace``.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     write_json_atomic(Path(d) / "a.json", {"x": 1})
        ...     sorted(p.name for p in Path(d).iterdir())
        ['a.json']
    """
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def save_state_dicts(path: Path, states: Mapping[str, Any]) -> None:
    """``torch.save`` a dict of state dicts (tensors and plain containers) atomically."""
    import torch

    tmp = path.with_name(path.name + ".tmp")
    torch.save(dict(states), tmp)
    os.replace(tmp, path)


def load_state_dicts(path: Path, *, fix: str) -> dict[str, Any]:
    """Read a file written by :func:`save_state_dicts` without unpickling objects.

    ``torch.load(path, map_location="cpu", weights_only=True)``: only tensors, numbers,
    strings and plain containers are created; a file holding anything else (a planted
    pickle, a d3rlpy ``.d3`` file) is refused before any of its code runs.

    Args:
        path: the file.
        fix: the sentence telling the user what to do instead (ends the error).

    Returns:
        The dict of state dicts.

    Raises:
        ValueError: one line naming the file, why it was refused and ``fix``.
        FileNotFoundError: the file is missing.
    """
    import torch

    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist; expected a checkpoint. {fix}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": not for users
            warnings.simplefilter("ignore", UserWarning)
            data = torch.load(path, map_location="cpu", weights_only=True)
    except LOAD_ERRORS as exc:
        raise ValueError(
            f"{str(path)!r} is not a weights-only checkpoint (tensors and plain containers); "
            f"torch.load(weights_only=True) refused it and nothing in it was run: "
            f"{one_line(exc, 160)} {fix}"
        ) from None
    if not isinstance(data, dict) or not all(isinstance(k, str) for k in data):
        raise ValueError(
            f"{str(path)!r} holds a {type(data).__name__}, expected a dict of state dicts "
            f"keyed by module name. {fix}"
        )
    return data
