"""Checkpoints as plain ``.npz`` files, written atomically, read without pickle.

A checkpoint holds named arrays (weights, BN statistics, optimizer buffers,
the normaliser) and one JSON document of metadata (epoch, RNG state,
config). NumPy's ``.npz`` stores arrays and strings without pickle, and
``np.load(..., allow_pickle=False)`` refuses anything else, so opening a
checkpoint cannot run code.

Writing goes to a temporary file in the same folder, which is flushed to
disk and then renamed over the target: a crash mid-write leaves the old
checkpoint intact, never a half file that looks complete.
"""
from __future__ import annotations

import json
import os
import tempfile
import zipfile

import numpy as np

from .backend import to_numpy

META_KEY = "__meta__"


class CheckpointError(Exception):
    """A checkpoint is missing, truncated or not one of ours."""


def save_checkpoint(path, arrays: dict, meta: dict) -> None:
    """Write ``arrays`` ({name: array}, NumPy or CuPy) and ``meta`` (JSON-able) to ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = {name: to_numpy(a) for name, a in arrays.items()}
    if META_KEY in payload:
        raise ValueError(f"{META_KEY!r} is reserved for the metadata")
    payload[META_KEY] = np.array(json.dumps(meta))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`: returns (arrays, meta)."""
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files if k != META_KEY}
            meta = json.loads(str(data[META_KEY]))
    except (zipfile.BadZipFile, KeyError, ValueError, OSError, EOFError) as e:
        raise CheckpointError(f"{path} is not a readable minisd checkpoint ({e})") from None
    return arrays, meta


def prefixed(prefix: str, arrays: dict) -> dict:
    """{name: a} -> {prefix/name: a}, to keep model, optimizer and data arrays apart."""
    return {f"{prefix}/{k}": v for k, v in arrays.items()}


def unprefixed(prefix: str, arrays: dict) -> dict:
    """The inverse of :func:`prefixed` for one prefix."""
    start = prefix + "/"
    return {k[len(start):]: v for k, v in arrays.items() if k.startswith(start)}
