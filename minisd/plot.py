"""Figures from run folders: ``python -m minisd.plot RUN_A RUN_B [-o curves.png]``.

Draws test error (solid) and training error (dashed) against the epoch for
each run, as in the paper's Figure 3: constant depth vs stochastic depth on
one figure. Each run is labelled from its config.json. The run folder's files
are read with minisd.runs.
"""
from __future__ import annotations

import argparse
import os
import sys

from .runs import epoch_end_rows, read_config, read_metrics


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
    """Plot the error curves of ``run_dirs`` into ``out_path`` (a PNG). Returns the path."""
    import matplotlib
    matplotlib.use("Agg")  # files only: works without a display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, run in enumerate(run_dirs):
        rows = epoch_end_rows(read_metrics(os.path.join(run, "metrics.csv")))  # one point per epoch
        if not rows:
            raise FileNotFoundError(f"{run}: no metrics.csv with any epoch in it")
        epochs = [r["epoch"] + 1 for r in rows]
        color = f"C{i}"
        label = run_label(run)
        ax.plot(epochs, [100 * r["test_error"] for r in rows], color=color, label=f"{label}: test")
        ax.plot(epochs, [100 * r["train_error"] for r in rows], color=color, ls="--", alpha=0.7,
                label=f"{label}: train")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title(title or "Test error (solid) and training error (dashed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m minisd.plot", description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run folders (each with metrics.csv and config.json)")
    p.add_argument("-o", "--out", default="curves.png", help="output PNG (default: %(default)s)")
    p.add_argument("--title", default=None)
    args = p.parse_args(argv)
    try:
        path = plot_runs(args.runs, args.out, args.title)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
