"""Figures from run folders: ``python -m minisd.plot RUN`` or ``python -m minisd.plot RUN_A RUN_B -o FILE.png``.

Draws test error (solid), validation error (dotted, when the run has a
validation split) and training error (dashed) against the epoch for each
run, as in the paper's Figure 3: constant depth vs stochastic depth on one
figure. Each run is labelled from its config.json. The run folder's files
are read with minisd.tools.runs. One run's figure goes into its folder
(``RUN/curves.png``); for several runs, ``-o`` says where.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

from .runs import epoch_end_rows, read_config, read_metrics

SHORT_CURVE = 40  # epochs: curves this short get a marker on every point


def run_label(run_dir):
    """'ResNet-110, stochastic depth p_L=0.5 (linear), seed 0' (or 'constant depth' when p_L = 1), from config.json."""
    cfg = read_config(run_dir)
    if cfg is None:
        return os.path.basename(os.path.normpath(run_dir))
    depth = f"ResNet-{cfg.get('depth', '?')}"
    p = cfg.get("p_last", 1.0)
    label = f"{depth}, constant depth" if p >= 1 else f"{depth}, stochastic depth p_L={p:g} ({cfg.get('rule')})"
    return label + (f", seed {cfg['seed']}" if "seed" in cfg else "")


def plot_runs(run_dirs, out_path, title=None):
    """Plot the error curves of ``run_dirs`` into ``out_path`` (a PNG). Returns the path.

    Raises FileNotFoundError for a run folder without metrics and ValueError
    for a metrics.csv that cannot be read.
    """
    import matplotlib
    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    curves = []
    for run in run_dirs:
        rows = epoch_end_rows(read_metrics(os.path.join(run, "metrics.csv")))  # one point per epoch
        if not rows:
            raise FileNotFoundError(f"{run}: no metrics.csv with any epoch in it")
        curves.append((run, rows))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    has_valid = False
    for i, (run, rows) in enumerate(curves):
        epochs = [r["epoch"] for r in rows]  # numbered from 1, as on the console
        style = dict(color=f"C{i}", marker="o" if len(rows) <= SHORT_CURVE else None, ms=4)
        label = run_label(run)
        ax.plot(epochs, [100 * r["test_error"] for r in rows], label=f"{label}: test", **style)
        valid = [100 * r.get("valid_error", math.nan) for r in rows]
        if any(not math.isnan(v) for v in valid):
            has_valid = True
            ax.plot(epochs, valid, ls=":", label=f"{label}: validation", **style)
        ax.plot(epochs, [100 * r["train_error"] for r in rows], ls="--", alpha=0.7, label=f"{label}: train",
                **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title(title or ("Test (solid), validation (dotted) and training error (dashed)" if has_valid
                           else "Test error (solid) and training error (dashed)"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def output_path(runs, out):
    """Where the figure goes: ``out`` (a file, or a folder to hold curves.png), else RUN/curves.png for one run.

    Several runs and no ``out``: None (the caller asks for -o).
    """
    if out:
        return os.path.join(out, "curves.png") if os.path.isdir(out) or out.endswith(("/", os.sep)) else out
    if len(runs) == 1:
        return os.path.join(runs[0], "curves.png")
    return None


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="python -m minisd.plot",
        description="Error curves (test, validation, training) of training runs against the epoch, from their "
                    "run folders. One run: the figure goes to RUN/curves.png. Several runs, on one figure: "
                    "say where with -o FILE.png.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (each with metrics.csv and config.json)")
    p.add_argument("-o", "--out", default=None,
                   help="output PNG (default for one run: RUN/curves.png; needed for several runs)")
    p.add_argument("--title", default=None, help="figure title (default: says which line is which)")
    args = p.parse_args(argv)
    path = output_path(args.runs, args.out)
    if path is None:
        print(f"error: {len(args.runs)} runs on one figure: say where to write it with -o FILE.png",
              file=sys.stderr)
        return 1
    try:
        plot_runs(args.runs, path, args.title)
    except ImportError as e:
        print(f"error: plotting needs matplotlib (pip install matplotlib): {e}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:  # FileNotFoundError included: a folder without metrics
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
