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

The checkpoint of a run (``python -m minisd.train``) is laid out field by field
in the table above :func:`check_run_checkpoint`, which checks every field
before a resume uses any: its type, shape, range, and its fit with the run.
"""
from __future__ import annotations

import json
import math
import os
import re
import secrets
import zipfile

import numpy as np

from ..backend import to_numpy
from .claim import pid_alive

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


def orphan_temp_files(folder, held=False) -> list:
    """Names of temporary files in ``folder`` left by processes that no longer run.

    These are minisd's own temporary names only (:data:`TEMP_PREFIX`, plus the
    names earlier versions used); a file of a process still running is not one.
    ``held``: this process holds the folder (minisd.tools.claim), so no other one
    writes there: a file of any other process is left over, whatever its pid says
    (a process killed a moment ago may not be reaped yet).
    """
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    out = []
    for name in names:
        m = _TEMP_RE.match(name)
        pid = int(m.group(1)) if m else None
        if (m and (pid != os.getpid() if held else not pid_alive(pid))) or _LEGACY_TEMP_RE.fullmatch(name):
            if os.path.isfile(os.path.join(folder, name)):
                out.append(name)
    return out


def remove_orphan_temp_files(folder, held=False) -> list:
    """Delete :func:`orphan_temp_files` in ``folder``; returns the names removed."""
    removed = []
    for name in orphan_temp_files(folder, held):
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


def read_meta(path) -> dict:
    """Only the metadata of a checkpoint (epoch, metrics, ...): the arrays are not read. Raises
    :class:`CheckpointError` (one line) as :func:`load_checkpoint` does."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data[META_KEY]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"cannot read the metadata of {path} ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path} is not a minisd checkpoint (its metadata is not a JSON object)")
    return meta


def prefixed(prefix: str, arrays: dict) -> dict:
    """{name: a} -> {prefix/name: a}, to keep model, optimizer and data arrays apart."""
    return {f"{prefix}/{k}": v for k, v in arrays.items()}


def unprefixed(prefix: str, arrays: dict) -> dict:
    """The inverse of :func:`prefixed` for one prefix."""
    start = prefix + "/"
    return {k[len(start):]: v for k, v in arrays.items() if k.startswith(start)}


def file_stamp(path):
    """What changes when ``path`` is written again (atomic writes make a new file): (device, inode,
    size, mtime in ns), or None when there is no file. A resume compares the checkpoint's stamp
    from before it read it with the stamp once it holds the run folder."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


# ---------------------------------------------------------------------------
# the checkpoint of a run (python -m minisd.train), field by field
# ---------------------------------------------------------------------------
#
#   arrays  model/<name>            weights and BN statistics (Module.state_dict), floats
#           optim/lr, optim/num_steps, optim/step/<name>, optim/momentum_buffer/<name>
#                                   SGD.state_dict: a float, counters (integers), float buffers
#           data/mean, data/std     the normaliser of the training split (floats)
#           perm                    the epoch's shuffle order (integers, a permutation of the
#                                   training images); used only to continue mid-epoch
#   meta    epoch, step_in_epoch    where the run stands: epochs done, steps done in the next one
#           best_valid, lr          lowest validation error so far (inf: none yet), the rate
#           rng                     the NumPy generator's state (PCG64: two 128-bit integers)
#           epoch_sums              the epoch so far: loss, wrong, seen, blocks, steps, seconds
#           config, metrics         the run's settings, the metrics rows so far

META_FIELDS = ("epoch", "step_in_epoch", "best_valid", "rng", "epoch_sums", "lr", "config", "metrics")
SUM_FIELDS = {"loss": float, "wrong": int, "seen": int, "blocks": float, "steps": int, "seconds": float}
ROW_FIELDS = ("epoch", "lr", "train_loss", "train_error", "test_error", "epoch_seconds", "mean_blocks",
              "expected_blocks")  # every row has these numbers (valid_error may be NaN, iteration absent)


class RunShape:
    """What a checkpoint must fit to continue a run: ``arrays``, the run's own arrays as it
    would save them now (names, shapes, kinds of number); ``n_train`` images in batches of
    ``batch_size`` for ``epochs``; ``bit_generator``, the name of its NumPy bit generator."""

    def __init__(self, arrays, n_train, batch_size, epochs, bit_generator):
        self.arrays = {k: np.asarray(to_numpy(v)) for k, v in arrays.items()}  # (the optimizer's lr: a float)
        self.n_train, self.batch_size = n_train, batch_size
        self.epochs, self.bit_generator = epochs, bit_generator


def check_run_checkpoint(arrays, meta, run: RunShape = None):
    """Check every field of a checkpoint of ``python -m minisd.train`` before any is used.

    Alone (``run`` None): each field has its type and range (the table above). With ``run``
    also: the arrays are the run's (same names and shapes), the position lies within its
    epochs and steps, and a run stopped mid-epoch left a shuffle order of its training images
    and sums of its batches. Raises :class:`CheckpointError` with one line naming the field.
    """
    _check_meta(meta)
    for name, a in arrays.items():
        _check_array(name, a)
    if run is not None:
        _check_fits(arrays, meta, run)


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _field(ok, what, value):
    """Raise CheckpointError 'its <what>, got <value>' unless ``ok``."""
    if not ok:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        raise CheckpointError(f"its {what}, got {shown}")


def _check_meta(meta):
    missing = [k for k in META_FIELDS if k not in meta]
    _field(not missing, "metadata must hold " + ", ".join(META_FIELDS), f"no {', '.join(missing)}")
    for key in ("epoch", "step_in_epoch"):
        _field(_is_int(meta[key]) and meta[key] >= 0, f"{key} must be an integer >= 0", meta[key])
    best = meta["best_valid"]
    _field(_is_number(best) and (0 <= best <= 1 or best == math.inf), "best_valid must be in [0, 1] or inf", best)
    _field(_is_number(meta["lr"]) and math.isfinite(meta["lr"]) and meta["lr"] > 0, "lr must be a number > 0",
           meta["lr"])
    _field(isinstance(meta["config"], dict), "config must be a JSON object", meta["config"])
    _check_rng(meta["rng"])
    sums = meta["epoch_sums"]
    _field(isinstance(sums, dict) and set(SUM_FIELDS) - {"seconds"} <= set(sums),
           "epoch_sums must hold " + ", ".join(SUM_FIELDS), sums)
    for key, kind in SUM_FIELDS.items():
        v = sums.get(key, 0.0)  # seconds: absent in checkpoints of earlier versions
        good = _is_int(v) if kind is int else _is_number(v) and math.isfinite(v)
        _field(good and v >= 0, f"epoch_sums {key} must be {'an integer' if kind is int else 'a number'} >= 0", v)
    _field(sums["wrong"] <= sums["seen"], "epoch_sums wrong must be <= seen", sums)
    rows = meta["metrics"]
    _field(isinstance(rows, list) and all(isinstance(r, dict) for r in rows), "metrics must be a list of rows",
           type(rows).__name__)
    for i, r in enumerate(rows):
        bad = [k for k in ROW_FIELDS if not (_is_number(r.get(k)) and math.isfinite(r[k]))]
        bad += [k for k in ("valid_error", "iteration") if k in r and not _is_number(r[k])]
        _field(not bad, f"metrics row {i + 1} must hold numbers: {', '.join(bad)}", {k: r.get(k) for k in bad})
    epochs = [r["epoch"] for r in rows]
    _field(epochs == sorted(epochs) and all(0 <= e <= meta["epoch"] + 1 for e in epochs),
           f"metrics epochs must rise, to at most epoch + 1 = {meta['epoch'] + 1}", epochs[-5:])


def _check_rng(state):
    """A generator state as ``bit_generator.state`` gives it; a PCG64 one (default_rng's) in detail."""
    _field(isinstance(state, dict) and isinstance(state.get("bit_generator"), str),
           "rng must be a bit generator's state", state)
    if state["bit_generator"] != "PCG64":
        return  # (the run's own name is compared in _check_fits)
    inner = state.get("state")
    _field(isinstance(inner, dict) and all(_is_int(inner.get(k)) and 0 <= inner[k] < 2 ** 128
                                           for k in ("state", "inc")),
           "rng state and inc must be integers in [0, 2**128)", inner)
    _field(inner["inc"] % 2 == 1, "rng inc must be odd (PCG64 increments are)", inner["inc"])
    _field(state.get("has_uint32") in (0, 1) and not isinstance(state.get("has_uint32"), bool),
           "rng has_uint32 must be 0 or 1", state.get("has_uint32"))
    _field(_is_int(state.get("uinteger")) and 0 <= state["uinteger"] < 2 ** 32,
           "rng uinteger must be an integer in [0, 2**32)", state.get("uinteger"))


def _check_array(name, a):
    """One array alone: a number type; floats finite; counters >= 0; rates, spreads and variances > 0."""
    kind = a.dtype.kind
    _field(kind in "fiu", f"{name} must hold real numbers", str(a.dtype))
    if kind == "f":
        _field(bool(np.isfinite(a).all()), f"{name} must be finite", "NaN or inf")
    if name == "perm" or name.startswith(("optim/num_steps", "optim/step/")):
        _field(kind in "iu" and (a.size == 0 or a.min() >= 0), f"{name} must hold integers >= 0",
               f"{a.dtype} min {a.min() if a.size else '-'}")
    if name.endswith("running_var"):
        _field(bool((a >= 0).all()), f"{name} must be >= 0", f"min {a.min()}")
    if name in ("optim/lr", "data/std"):
        _field(a.size > 0 and bool((a > 0).all()), f"{name} must be > 0", a.tolist())


def _check_fits(arrays, meta, run):
    """The checkpoint against the run that continues it."""
    mine = run.arrays
    missing = sorted(set(mine) - set(arrays))
    extra = sorted(k for k in set(arrays) - set(mine)
                   if k != "perm" and not (k.startswith("optim/momentum_buffer/")
                                           and "model/" + k[len("optim/momentum_buffer/"):] in mine))
    _field(not missing and not extra, "arrays must be this network's", f"missing {missing[:3]}, unexpected "
                                                                         f"{extra[:3]}")
    for name, a in arrays.items():
        if name == "perm":
            continue
        ref = mine.get(name, mine.get("model/" + name[len("optim/momentum_buffer/"):]))
        _field(a.shape == ref.shape and (a.dtype.kind == "f") == (ref.dtype.kind == "f"),
               f"{name} must be {'floats' if ref.dtype.kind == 'f' else 'integers'} of shape {ref.shape}",
               f"{a.dtype} {a.shape}")
    steps = run.n_train // run.batch_size
    _field(meta["epoch"] < run.epochs, f"epoch must be below --epochs {run.epochs}", meta["epoch"])
    _field(meta["step_in_epoch"] <= steps,  # (all of them: stopped while the epoch's end was evaluated)
           f"step_in_epoch must be at most the {steps} steps of an epoch ({run.n_train} images, batches of "
           f"{run.batch_size})", meta["step_in_epoch"])
    _field(meta["rng"]["bit_generator"] == run.bit_generator, f"rng must be a {run.bit_generator} state",
           meta["rng"]["bit_generator"])
    rows = meta["metrics"]
    if rows:
        _field(rows[-1]["epoch"] <= meta["epoch"] + (meta["step_in_epoch"] > 0),
               "metrics must end at the checkpoint's epoch", rows[-1]["epoch"])
    if meta["step_in_epoch"] == 0:
        return  # at an epoch's end the next epoch draws its own order and starts its own sums
    perm, sums = arrays.get("perm"), meta["epoch_sums"]
    _field(perm is not None and perm.shape == (run.n_train,) and perm.dtype.kind in "iu",
           f"shuffle order (perm) must be {run.n_train} integers, one per training image, to continue "
           f"mid-epoch", None if perm is None else f"{perm.dtype} {perm.shape}")
    _field(np.array_equal(np.sort(perm), np.arange(run.n_train)), "shuffle order (perm) must be a permutation "
           f"of 0..{run.n_train - 1}", "repeats")
    _field(sums["steps"] == meta["step_in_epoch"], f"epoch_sums must count the {meta['step_in_epoch']} steps "
           f"done this epoch", sums["steps"])
    _field(sums["seen"] == sums["steps"] * run.batch_size, f"epoch_sums must count batches of {run.batch_size} "
           f"(--batch-size: an epoch stopped midway goes on in the batches it began with)", sums["seen"])
