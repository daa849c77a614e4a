"""The run folder: what ``python -m minisd.train`` writes there, and how it is read back.

A run folder (``--out``) holds

    config.json    the run's Config (every setting), written at the start
    metrics.csv    one row per epoch (and with --eval-every N one every N steps), columns METRIC_FIELDS
    last.npz       checkpoint after the latest epoch (or at Ctrl-C); see minisd.checkpoint
    best.npz       checkpoint at the lowest validation error so far
    summary.json   the paper's number (summarize), written at the end
    curves.png     error curves (minisd.plot)

``minisd.train`` writes these files and ``minisd.plot`` reads them; both import
this module, which imports neither.
"""
from __future__ import annotations

import csv
import json
import math
import os

import numpy as np

METRIC_FIELDS = ["epoch", "iteration", "lr", "train_loss", "train_error", "valid_error", "test_error",
                 "epoch_seconds", "mean_blocks", "expected_blocks"]
# A row is one evaluation: at the end of each epoch, and with --eval-every N also after every
# N-th step. epoch: 0-based epoch of the row; iteration: SGD steps done since the start (epoch
# ends: (epoch + 1) x steps per epoch); train_loss, train_error, epoch_seconds, mean_blocks: the
# epoch so far (the whole epoch at its end); valid_error, test_error: the network at that step.


def read_metrics(path):
    """metrics.csv as a list of dicts of floats (empty if the file does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [{k: float(v) if v not in ("", "nan") else math.nan for k, v in row.items()}
                for row in csv.DictReader(f)]


def write_metrics(path, rows):
    """Write ``rows`` (dicts with the keys METRIC_FIELDS) as metrics.csv, floats to 6 digits.

    Written to a temporary file and renamed, so a crash never leaves half a file.
    """
    tmp = path + ".tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=METRIC_FIELDS)
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k, "")) for k in METRIC_FIELDS})
    os.replace(tmp, path)


def _cell(v):
    """A metrics.csv cell: floats to 6 significant digits, anything else as is ("" for a missing column)."""
    return f"{v:.6g}" if isinstance(v, float) else v


def read_config(run_dir):
    """The run's config.json as a dict, or ``None`` when it is missing or unreadable."""
    try:
        with open(os.path.join(run_dir, "config.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_json(path, obj):
    """Write ``obj`` as indented JSON (config.json, summary.json)."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def epoch_end_rows(rows):
    """The last row of each epoch: all of them without --eval-every, the epochs' ends with it."""
    return [r for r, nxt in zip(rows, rows[1:] + [None]) if nxt is None or nxt["epoch"] != r["epoch"]]


def summarize(rows):
    """The paper's number: the test error at the epoch of lowest validation error.

    ``rows``: the metrics rows (dicts, as :func:`read_metrics` returns them).
    With rows every N steps (--eval-every; the paper's SVHN: 200) the test
    error is taken at the row of lowest validation error among all of them.
    Without a validation set the final test error is reported instead (and said so).
    """
    if not rows:
        return {}
    last = rows[-1]
    out = {"epochs_run": int(last["epoch"]) + 1, "final_test_error": last["test_error"],
           "final_train_error": last["train_error"],
           "mean_epoch_seconds": float(np.mean([r["epoch_seconds"] for r in epoch_end_rows(rows)]))}
    valid = [r for r in rows if not math.isnan(r["valid_error"])]
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
