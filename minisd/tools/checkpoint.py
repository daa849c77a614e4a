"""Checkpoints as plain ``.npz`` files, written atomically, read without pickle.

A checkpoint holds named arrays (weights, BN statistics, optimizer buffers,
the normaliser) and one JSON document of metadata (epoch, RNG state,
config). NumPy's ``.npz`` stores arrays and strings without pickle, and
``np.load(..., allow_pickle=False)`` refuses anything else, so opening a
checkpoint cannot run code.

Writing goes to a temporary file in the same folder, which is flushed to
disk and then renamed over the target: a crash mid-write leaves the old
checkpoint intact, never a half file that looks complete. Temporary files
are named ``.minisd-tmp-<pid>-<random>-<target name>`` (:data:`TEMP_PREFIX`),
so that one left behind by a killed process (``kill -9`` mid-save) is
recognisable: :func:`remove_orphan_temp_files` deletes those whose process
is gone. Every file of a run folder (minisd.tools.runs) is written this way.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import zipfile

import numpy as np

from ..backend import to_numpy

META_KEY = "__meta__"
TEMP_PREFIX = ".minisd-tmp-"
_TEMP_RE = re.compile(re.escape(TEMP_PREFIX) + r"(\d+)-[0-9a-f]+-")
# temporary files of earlier minisd versions: tempfile.mkstemp(prefix=".tmp-", suffix=".npz"), metrics.csv.tmp
_LEGACY_TEMP_RE = re.compile(r"\.tmp-[a-z0-9_]{8}\.npz|metrics\.csv\.tmp")
_ZIP_MAGIC = b"PK\x03\x04"


class CheckpointError(Exception):
    """A checkpoint is missing, truncated or not one of ours."""


# ---------------------------------------------------------------------------
# atomic files
# ---------------------------------------------------------------------------


def temp_path(path) -> str:
    """A fresh temporary name beside ``path``: ``.minisd-tmp-<pid>-<random>-<name>``."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{name}")


def atomic_write(path, write, mode="wb", on_written=None) -> None:
    """Write ``path`` all at once: ``write(f)`` fills a temporary file, which is synced and renamed.

    A failure (an exception from ``write``, a full disk, a signal turned into
    an exception) removes the temporary file and leaves any earlier ``path``
    as it was. ``on_written(tmp)``, if given, is called after the data is on
    disk and before the rename (tests use it to interrupt a save there).
    """
    tmp = temp_path(path)
    # O_EXCL: a new file; 0o666 and the umask give the usual permissions (mkstemp's are 0o600)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with open(fd, mode, **({} if "b" in mode else {"newline": "", "encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if on_written is not None:
            on_written(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` may still run (True when in doubt: its files are then left alone)."""
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would terminate the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process (or we cannot tell): leave its file alone
    return True


def orphan_temp_files(folder) -> list:
    """Names of temporary files in ``folder`` left by processes that no longer run.

    These are minisd's own temporary names only (:data:`TEMP_PREFIX`, plus the
    names earlier versions used); a file of a process still running is not one.
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for name in names:
        m = _TEMP_RE.match(name)
        if (m and not pid_alive(int(m.group(1)))) or _LEGACY_TEMP_RE.fullmatch(name):
            if os.path.isfile(os.path.join(folder, name)):
                out.append(name)
    return out


def remove_orphan_temp_files(folder) -> list:
    """Delete :func:`orphan_temp_files` in ``folder``; returns the names removed."""
    removed = []
    for name in orphan_temp_files(folder):
        try:
            os.remove(os.path.join(folder, name))
            removed.append(name)
        except FileNotFoundError:
            pass
    return removed


# ---------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------


def _write_npz(f, payload):
    """``np.savez`` into the open file ``f`` (a seam: tests make it fail as a full disk would)."""
    np.savez(f, **payload)


def save_checkpoint(path, arrays: dict, meta: dict, on_written=None) -> None:
    """Write ``arrays`` ({name: array}, NumPy or CuPy) and ``meta`` (JSON-able) to ``path``.

    Atomic (:func:`atomic_write`): on any failure, an earlier file at ``path`` is
    kept unchanged. ``OSError`` (a full disk: ``errno.ENOSPC``) is raised as is.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    payload = {name: to_numpy(a) for name, a in arrays.items()}
    if META_KEY in payload:
        raise ValueError(f"{META_KEY!r} is reserved for the metadata")
    payload[META_KEY] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: _write_npz(f, payload), on_written=on_written)


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`: returns (arrays, meta).

    Raises :class:`CheckpointError` with one line for a missing file, a file that
    is not a minisd checkpoint, and a damaged one.
    """
    if not os.path.exists(path):
        raise CheckpointError(f"no checkpoint at {path}")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder; give the checkpoint file (e.g. {os.path.join(path, 'last.npz')})")
    try:
        f = open(path, "rb")  # opened once: the magic bytes, then the archive from the same handle
    except OSError as e:
        raise CheckpointError(f"cannot read {path}: {e.strerror or e}") from None
    with f:
        if f.read(4) != _ZIP_MAGIC:
            raise CheckpointError(f"{path} is not a minisd checkpoint (not an .npz file; checkpoints are the "
                                  f"last.npz and best.npz that python -m minisd.train writes)")
        f.seek(0)
        try:
            with np.load(f, allow_pickle=False) as data:
                if META_KEY not in data.files:
                    raise CheckpointError(f"{path} is an .npz file but not a minisd checkpoint (it has no "
                                          f"{META_KEY} entry)")
                arrays = {k: data[k] for k in data.files if k != META_KEY}
                meta_text = str(data[META_KEY])
        except CheckpointError:
            raise
        except ValueError as e:  # np.load refuses object arrays (they need pickle, which is never used here)
            what = ("it holds Python objects, which minisd never writes or loads"
                    if "pickle" in str(e) or "object" in str(e).lower() else f"a damaged entry: {e}")
            raise CheckpointError(f"{path} is not a readable minisd checkpoint ({what})") from None
        except (zipfile.BadZipFile, KeyError, OSError, EOFError, zipfile.LargeZipFile) as e:
            raise CheckpointError(f"{path} is damaged or incomplete ({type(e).__name__}: {e}); use another "
                                  f"checkpoint (best.npz, or a copy)") from None
    try:
        meta = json.loads(meta_text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a minisd checkpoint (its metadata is not a JSON object)")
    return arrays, meta


def prefixed(prefix: str, arrays: dict) -> dict:
    """{name: a} -> {prefix/name: a}, to keep model, optimizer and data arrays apart."""
    return {f"{prefix}/{k}": v for k, v in arrays.items()}


def unprefixed(prefix: str, arrays: dict) -> dict:
    """The inverse of :func:`prefixed` for one prefix."""
    start = prefix + "/"
    return {k[len(start):]: v for k, v in arrays.items() if k.startswith(start)}
