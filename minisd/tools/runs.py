"""The run folder: what ``python -m minisd.train`` writes there, and how it is read back.

A run folder (``--out``) holds

    config.json    the run's Config (every setting), written at the start
    metrics.csv    one row per epoch (and with --eval-every N one every N steps), columns
                   METRIC_FIELDS; epochs numbered from 1 (the row of epoch 1 is written when
                   the first epoch ends); valid_error is an empty cell when the run has no
                   validation split
    last.npz       checkpoint after the latest epoch (or at Ctrl-C / SIGTERM); see minisd.tools.checkpoint
    best.npz       checkpoint at the lowest validation error so far
    summary.json   the paper's number (summarize), written at the end
    curves.png     error curves (minisd.plot)

RUN_FILES names them. Every file is written atomically (minisd.tools.checkpoint.atomic_write).

``minisd.train`` writes these files and ``minisd.plot`` reads them; both import
this module, which imports neither. Also here: the run folder's rules (a new folder, or the
run being resumed, or ``--overwrite``), checked before any data is loaded; :class:`RunFolder`,
which holds the folder for one run at a time (minisd.tools.claim) from that check to the
run's end; and :class:`TrainingError`, the one-line error that stops a run.
"""
from __future__ import annotations

import csv
import errno
import json
import math
import os
import shutil

import numpy as np

from .checkpoint import CheckpointError, atomic_write, file_stamp, load_checkpoint, remove_orphan_temp_files
from .claim import FolderBusy, claim, holder
from .signals import test_hook

class TrainingError(Exception):
    """Stops a run with one clear line (bad flags or data, a NaN loss, an unusable checkpoint or folder)."""


RUN_FILES = ("config.json", "metrics.csv", "last.npz", "best.npz", "summary.json", "curves.png")
METRIC_FIELDS = ["epoch", "iteration", "lr", "train_loss", "train_error", "valid_error", "test_error",
                 "epoch_seconds", "mean_blocks", "expected_blocks"]
# A row is one evaluation: at the end of each epoch, and with --eval-every N also after every
# N-th step. epoch: the epoch the row falls in, from 1; iteration: SGD steps done since the start
# (at an epoch's end: epoch x steps per epoch); train_loss, train_error, epoch_seconds, mean_blocks: the
# epoch so far (the whole epoch at its end); valid_error, test_error: the network at that step.


def read_metrics(path):
    """metrics.csv as a list of dicts of floats (empty if the file does not exist).

    Empty cells (no validation split) and ``nan`` read as NaN. Epochs are
    numbered from 1; a file written by an earlier minisd, whose first epoch
    was 0, is renumbered from 1 as it is read. Raises ``ValueError`` for a
    file that is not a metrics table.
    """
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = []
        for i, row in enumerate(csv.DictReader(f), start=2):
            try:
                rows.append({k: float(v) if v not in ("", "nan", None) else math.nan
                             for k, v in row.items() if k is not None})
            except ValueError:
                raise ValueError(f"{path}, line {i}: not a number in {dict(row)}") from None
    if rows and "epoch" not in rows[0]:
        raise ValueError(f"{path} has no 'epoch' column: not a minisd metrics file")
    if rows and rows[0]["epoch"] == 0:  # written before epochs were numbered from 1
        for r in rows:
            r["epoch"] += 1
    return rows


def _cell(v):
    """A metrics.csv cell: floats to 6 significant digits, NaN as an empty cell, anything else as is."""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def write_metrics(path, rows):
    """Write ``rows`` (dicts with the keys METRIC_FIELDS) as metrics.csv, floats to 6 digits.

    NaN (no validation split) is written as an empty cell. Written to a
    temporary file and renamed, so a crash never leaves half a file.
    """
    def write(f):
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k, "")) for k in METRIC_FIELDS})
    atomic_write(path, write, mode="w")


def read_json(path):
    """The JSON in ``path``, or ``None`` when it is missing or unreadable (a run stopped mid-write)."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def read_config(run_dir):
    """The run's config.json as a dict, or ``None`` when it is missing or unreadable."""
    return read_json(os.path.join(run_dir, "config.json"))


def is_finished(run_dir):
    """Whether the run in ``run_dir`` has ended: its summary.json counts every epoch of its config.json."""
    cfg = read_config(run_dir)
    try:
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        return bool(cfg) and summary.get("epochs_run", 0) >= cfg.get("epochs", math.inf)
    except (OSError, ValueError, AttributeError, TypeError):
        return False


def write_json(path, obj):
    """Write ``obj`` as indented JSON (config.json, summary.json), atomically."""
    text = json.dumps(obj, indent=2) + "\n"
    atomic_write(path, lambda f: f.write(text), mode="w")


def epoch_end_rows(rows):
    """The last row of each epoch: all of them without --eval-every, the epochs' ends with it."""
    return [r for r, nxt in zip(rows, rows[1:] + [None]) if nxt is None or nxt["epoch"] != r["epoch"]]


def summarize(rows):
    """The paper's number: the test error at the epoch of lowest validation error.

    ``rows``: the metrics rows (dicts, as :func:`read_metrics` returns them;
    epochs numbered from 1). With rows every N steps (--eval-every; the paper's
    SVHN: 200) the test error is taken at the row of lowest validation error
    among all of them. Without a validation set the final test error is
    reported instead (and said so).
    """
    if not rows:
        return {}
    last = rows[-1]
    out = {"epochs_run": int(last["epoch"]), "final_test_error": last["test_error"],
           "final_train_error": last["train_error"],
           "mean_epoch_seconds": float(np.mean([r["epoch_seconds"] for r in epoch_end_rows(rows)]))}
    valid = [r for r in rows if not math.isnan(r.get("valid_error", math.nan))]
    if valid:
        best = min(valid, key=lambda r: r["valid_error"])
        every_epoch = len(epoch_end_rows(rows)) == len(rows)
        out.update(best_epoch=int(best["epoch"]), best_valid_error=best["valid_error"],
                   test_error=best["test_error"],
                   test_error_rule="test error at the epoch of lowest validation error" if every_epoch else
                   "test error at the evaluation (every --eval-every steps and each epoch's end) "
                   "of lowest validation error")
        if not math.isnan(best.get("iteration", math.nan)):
            out["best_iteration"] = int(best["iteration"])
    else:
        out.update(test_error=last["test_error"], test_error_rule="no validation set: final test error")
    return out


# ---------------------------------------------------------------------------
# the run folder's rules
# ---------------------------------------------------------------------------


def same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)


MIN_FREE_BYTES = 1 << 20  # a run folder on a device with less free space is refused: config.json fits,
                          # a checkpoint of even ResNet-8 would not


def free_bytes(folder):
    """Free space, in bytes, for this user on the device holding ``folder`` (a seam: tests fake a full disk)."""
    return shutil.disk_usage(folder).free


def nearest_folder(path):
    """``path`` or its nearest existing ancestor (the folder a new folder would be made in)."""
    path = os.path.abspath(path)
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    return path


def check_out_folder(out, resume=None, overwrite=False, resume_meta=None):
    """Can a run write to ``out``? One line (TrainingError) when not; nothing is created.

    ``out`` must be a folder that exists and is readable and writable, or one that can be
    created, on a device with free space. It must not hold another run (any of RUN_FILES)
    unless that run is the one resumed (``resume`` is a checkpoint in ``out`` that is not behind
    ``out/last.npz``; ``resume_meta``: its meta, already read) or ``overwrite`` is given.
    """
    if os.path.isdir(out):
        if not os.access(out, os.W_OK | os.X_OK):
            raise TrainingError(f"cannot write to the run folder {out}: permission denied (choose another --out)")
        if not os.access(out, os.R_OK):
            raise TrainingError(f"cannot read the run folder {out}: permission denied (choose another --out)")
        busy = holder(out)
        if busy:  # a run trains there now: say so, not what its files look like half-way
            raise TrainingError(f"{FolderBusy(out, busy)}: wait for that run to end, or choose another --out")
        check_free_space(out, "the run folder", "--out")
        existing = [n for n in RUN_FILES if os.path.lexists(os.path.join(out, n))]
        if not existing or overwrite:
            return
        last = os.path.join(out, "last.npz")
        if resume and same_file(os.path.dirname(os.path.abspath(resume)), out):
            check_not_behind(resume, resume_meta, last)
            return
        again = f"continue it with --resume {last}, " if os.path.exists(last) else ""
        raise TrainingError(f"{out} already holds a run ({', '.join(existing)}): {again}pass --overwrite to "
                            f"replace it, or choose another --out")
    if os.path.lexists(out):
        raise TrainingError(f"--out {out} is a file, not a folder")
    parent = nearest_folder(out)
    if not os.path.isdir(parent):
        raise TrainingError(f"cannot create the run folder {out}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TrainingError(f"cannot create the run folder {out}: {parent} is not writable (choose another --out)")
    check_free_space(parent, "the run folder", "--out")


def check_free_space(folder, what, flag, needed=MIN_FREE_BYTES):
    """One line (TrainingError) when the device holding ``folder`` has less than ``needed`` bytes free."""
    try:
        free = free_bytes(folder)
    except OSError:
        return  # cannot tell: the writes will say
    if free < needed:
        raise TrainingError(f"cannot write {what} {folder}: the device is full ({free / 1e6:.1f} MB free"
                            f"{f', {needed / 1e6:.0f} MB needed' if needed > MIN_FREE_BYTES else ''}); "
                            f"free some space or choose another {flag}")


def check_not_behind(resume, mine, last):
    """Resuming from ``resume`` (say best.npz; ``mine``: its meta) in its own folder must not
    replace a ``last`` further along."""
    if not os.path.exists(last) or same_file(resume, last) or mine is None:
        return
    try:
        _, theirs = load_checkpoint(last)
        ahead = (theirs["epoch"], theirs["step_in_epoch"]) > (mine["epoch"], mine["step_in_epoch"])
    except (CheckpointError, KeyError, TypeError):
        return  # a damaged last.npz: resuming from another checkpoint is the way out
    if ahead:
        raise TrainingError(f"{last} is further along (epoch {theirs['epoch'] + (theirs['step_in_epoch'] > 0)}) "
                            f"than {resume} (epoch {mine['epoch'] + (mine['step_in_epoch'] > 0)}): continuing "
                            f"here would replace it; give another --out to branch off, or --overwrite")


class RunFolder:
    """The run folder ``out``, held by this run (:mod:`minisd.tools.claim`) from its check to the end.

    ``with RunFolder(...) as folder:`` checks ``out`` (:func:`check_out_folder`), creates it
    if need be, claims it, and checks it again: from then on no other minisd process can
    start a run in it, so the check and the run's first write are one step. A run started
    beside it is refused with one line, as is a resume whose checkpoint another run changed
    after this one read it (``resume_stamp``: :func:`~minisd.tools.checkpoint.file_stamp`
    from before the read). :meth:`prepare` clears the folder once the run can start. On
    leaving with an exception, what this run wrote is removed unless it left a last.npz, and
    so are the folders it created; the claim is released in every case.
    """

    def __init__(self, out, resume=None, overwrite=False, resume_meta=None, resume_stamp=None, log=print):
        self.out, self.resume, self.overwrite, self.log = out, resume, overwrite, log
        self.resume_meta, self.resume_stamp = resume_meta, resume_stamp
        self.claim, self.created, self.fresh = None, [], False

    def __enter__(self):
        check_out_folder(self.out, self.resume, self.overwrite, self.resume_meta)  # at once, nothing created
        test_hook("folder")  # (tests hold a run here, between the first check and the claim)
        try:
            while self.claim is None:
                self.created = missing_folders(self.out) or self.created
                try:
                    os.makedirs(self.out, exist_ok=True)
                    self.claim = claim(self.out)
                except FileNotFoundError:
                    continue  # a run that failed here removed the folder as we made it: again
            check_out_folder(self.out, self.resume, self.overwrite, self.resume_meta)  # now no other run can start
            if self.resume and self.resume_stamp and file_stamp(self.resume) != self.resume_stamp:
                raise TrainingError(f"{self.resume} was written by another run after this one read it: run the "
                                    f"command again to continue from where it stands now")
            if self.claim.took_over:
                self.log(f"took over {self.out} from pid {self.claim.took_over}, which ended without giving it back")
            self.fresh = not any(os.path.lexists(os.path.join(self.out, n)) for n in RUN_FILES)
        except FolderBusy as e:
            self.__exit__(FolderBusy)
            raise TrainingError(f"{e}: wait for that run to end, or choose another --out") from None  # (as above)
        except OSError as e:  # the folder or its claim file could not be made: a read-only folder, a full disk
            self.__exit__(OSError)
            what = "create" if self.created else "write to"
            raise TrainingError(f"cannot {what} the run folder {self.out}: {e.strerror or e}") from None
        except BaseException:
            self.__exit__(BaseException)
            raise
        return self

    def prepare(self):
        """Once the run can start (data loaded, model built): with ``overwrite`` remove the earlier
        run's files; remove temporary files left by an interrupted save."""
        if self.overwrite:
            old = [n for n in RUN_FILES if os.path.lexists(os.path.join(self.out, n))
                   and not (self.resume and same_file(os.path.join(self.out, n), self.resume))]
            for n in old:
                os.remove(os.path.join(self.out, n))
            if old:
                self.log(f"--overwrite: removed the earlier run's {', '.join(old)} from {self.out}")
            self.fresh = not self.resume or not same_file(os.path.dirname(os.path.abspath(self.resume)), self.out)
        orphans = remove_orphan_temp_files(self.out, held=True)
        if orphans:
            self.log(f"removed {len(orphans)} unfinished temporary file(s) left in {self.out} by an interrupted save")

    def __exit__(self, exc_type, *exc):
        failed = exc_type is not None
        if failed and self.fresh and self.claim and not os.path.exists(os.path.join(self.out, "last.npz")):
            for n in RUN_FILES:  # nothing to resume: what this run wrote goes
                try:
                    os.remove(os.path.join(self.out, n))
                except OSError:
                    pass
            remove_orphan_temp_files(self.out, held=True)
        if self.claim:
            self.claim.release()
        if failed:
            for folder in self.created:  # deepest first; only if empty: files of anyone else stay
                try:
                    os.rmdir(folder)
                except OSError:
                    break
        return False


def missing_folders(path):
    """The folders ``os.makedirs(path)`` would create, deepest first."""
    path, out = os.path.abspath(path), []
    while not os.path.lexists(path):
        out.append(path)
        path = os.path.dirname(path)
    return out


def carry_best_checkpoint(resume, out, best_valid, epoch):
    """Resumed into another folder ``out``: copy the source run's best.npz along when it is this
    run's best (its ``best_valid``, from an epoch not after ``epoch``)."""
    src = os.path.join(os.path.dirname(os.path.abspath(resume)), "best.npz")
    dst = os.path.join(out, "best.npz")
    if not os.path.exists(src) or os.path.exists(dst) or same_file(os.path.dirname(src), out):
        return
    try:
        _, meta = load_checkpoint(src)
        if meta.get("best_valid") != best_valid or meta.get("epoch", math.inf) > epoch:
            return
        with open(src, "rb") as f:
            atomic_write(dst, lambda dst_file: shutil.copyfileobj(f, dst_file))
    except CheckpointError:
        return
    except OSError as e:
        raise TrainingError(write_failed(out, "best.npz", e)) from None


_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def write_failed(out, name, e):
    """The line for a run-folder file that could not be written (a full disk, a lost mount)."""
    path, last = os.path.join(out, name), os.path.join(out, "last.npz")
    reason = "no space left on the device" if e.errno in _DISK_FULL else (e.strerror or str(e))
    if name.endswith(".npz"):
        kept = f"the previous {path} is kept unchanged" if os.path.exists(path) else "no checkpoint was written"
    else:
        kept = "the checkpoints are unchanged"
    again = f"; free some space, then continue with --resume {last}" if os.path.exists(last) else ""
    return f"cannot write {path}: {reason}; {kept}{again}"
