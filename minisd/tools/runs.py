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
this module, which imports neither.
"""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

from .checkpoint import atomic_write

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


def read_config(run_dir):
    """The run's config.json as a dict, or ``None`` when it is missing or unreadable."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


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
