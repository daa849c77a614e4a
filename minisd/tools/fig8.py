"""The paper's Figure 8 from a sweep's run folders: ``python -m minisd.sweep --plot DIR``.

Test error against p_L for each survival rule (mean over seeds, bars from the lowest to the
highest seed), and beside it a depth x p_L heat map when the sweep has several depths; a
table of the same numbers on the console. Only finished runs are drawn
(:func:`minisd.tools.runs.is_finished`); :mod:`minisd.tools.sweep` runs the grid.
"""
from __future__ import annotations

import os

from ..model import expected_blocks
from .runs import is_finished, read_config, read_json


def collect(sweep_dir):
    """The finished runs under ``sweep_dir``: one dict per run (depth, rule, p_last, seed, test_error,
    test_error_rule, epoch_seconds, expected_blocks, blocks, name). Unfinished folders are counted
    in the second value returned."""
    if not os.path.isdir(sweep_dir):
        raise ValueError(f"{sweep_dir} is not a folder")
    runs, unfinished = [], []
    for name in sorted(os.listdir(sweep_dir)):
        run_dir = os.path.join(sweep_dir, name)
        cfg = read_config(run_dir)
        if not os.path.isdir(run_dir) or not cfg:
            continue
        if cfg.get("arch", "resnet") != "resnet":  # Figure 8 is about p_L
            unfinished.append(f"{name} (a DenseNet: no p_L)")
            continue
        if not is_finished(run_dir):
            unfinished.append(name)
            continue
        s = read_json(os.path.join(run_dir, "summary.json"))
        blocks = 3 * ((cfg["depth"] - 2) // 6)
        runs.append(dict(name=name, depth=cfg["depth"], rule=cfg["rule"], p_last=float(cfg["p_last"]),
                         seed=cfg["seed"], test_error=s["test_error"], test_error_rule=s["test_error_rule"],
                         epoch_seconds=s["mean_epoch_seconds"], blocks=blocks,
                         expected_blocks=expected_blocks(blocks, float(cfg["p_last"]), cfg["rule"])))
    if not runs:
        raise ValueError(f"no finished runs in {sweep_dir}"
                         + (f" ({len(unfinished)} unfinished)" if unfinished else ""))
    return runs, unfinished


def group(runs):
    """{(depth, rule, p_last): [runs over seeds]}; constant-depth runs (p_L = 1) are put under
    every rule that has runs at that depth, since they are the p_L = 1 point of each curve."""
    rules = sorted({r["rule"] for r in runs if r["p_last"] < 1}) or ["linear"]
    out = {}
    for r in runs:
        for rule in (rules if r["p_last"] >= 1 else [r["rule"]]):
            out.setdefault((r["depth"], rule, r["p_last"]), []).append(r)
    return out


def summary_rows(runs):
    """Table rows, one per (depth, rule, p_L), constant depth once per depth: mean / min / max test
    error over seeds, seconds per epoch (and as a share of constant depth's), E[blocks] of L."""
    by = {}
    for r in runs:
        by.setdefault((r["depth"], "constant" if r["p_last"] >= 1 else r["rule"], r["p_last"]), []).append(r)
    mean = lambda v: sum(v) / len(v)
    rows = []
    for (depth, rule, p), rs in sorted(by.items(), key=lambda kv: (kv[0][0], kv[0][1] != "constant", kv[0][1],
                                                                    -kv[0][2])):
        errs = [r["test_error"] for r in rs]
        const = by.get((depth, "constant", 1.0))
        seconds = mean([r["epoch_seconds"] for r in rs])
        rows.append(dict(depth=depth, rule=rule, p_last=p, seeds=len(rs), error=mean(errs), error_min=min(errs),
                         error_max=max(errs), epoch_seconds=seconds,
                         time_vs_constant=seconds / mean([r["epoch_seconds"] for r in const]) if const else None,
                         expected_blocks=rs[0]["expected_blocks"], blocks=rs[0]["blocks"]))
    return rows


def plot_sweep(runs, out_path, title=None):
    """Figure 8 from finished runs: test error vs p_L per rule (mean over seeds, bars from the lowest to
    the highest seed); beside it a depth x p_L heat map (linear rule) when there are several depths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = group(runs)
    depths = sorted({d for d, _, _ in groups})
    rules = sorted({rule for _, rule, _ in groups})
    heat = len(depths) > 1
    fig, axes = plt.subplots(1, 2 if heat else 1, figsize=(12 if heat else 6.5, 4.5), squeeze=False)
    ax = axes[0][0]
    styles = {"linear": ("-", "o"), "uniform": ("--", "s")}
    for i, depth in enumerate(depths):
        for rule in rules:
            pts = sorted((p, rs) for (d, ru, p), rs in groups.items() if d == depth and ru == rule)
            if not pts:
                continue
            ps = [p for p, _ in pts]
            mean = [100 * sum(r["test_error"] for r in rs) / len(rs) for _, rs in pts]
            lo = [m - 100 * min(r["test_error"] for r in rs) for m, (_, rs) in zip(mean, pts)]
            hi = [100 * max(r["test_error"] for r in rs) - m for m, (_, rs) in zip(mean, pts)]
            ls, marker = styles.get(rule, ("-.", "^"))
            ax.errorbar(ps, mean, yerr=[lo, hi], ls=ls, marker=marker, color=f"C{i}", capsize=3,
                        label=f"ResNet-{depth}, {rule}")
    seeds = sorted({r["seed"] for r in runs})
    ax.set_xlabel("p_L (survival probability of the last block)")
    ax.set_ylabel("test error (%)")
    ax.set_title(title or f"Test error vs p_L ({len(seeds)} seed{'s' * (len(seeds) > 1)}: mean, min-max)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if heat:
        ax = axes[0][1]
        rule = "linear" if "linear" in rules else rules[0]
        ps = sorted({p for (_, ru, p) in groups if ru == rule})
        grid = [[float("nan")] * len(ps) for _ in depths]
        for (d, ru, p), rs in groups.items():
            if ru == rule:
                grid[depths.index(d)][ps.index(p)] = 100 * sum(r["test_error"] for r in rs) / len(rs)
        im = ax.imshow(grid, cmap="viridis_r", aspect="auto", origin="lower")
        lo, hi = im.get_clim()
        for y, row in enumerate(grid):
            for x, v in enumerate(row):
                if v == v:  # not nan; dark text on the light (low-error) end of the colour map
                    dark = hi == lo or (v - lo) / (hi - lo) < 0.5
                    ax.text(x, y, f"{v:.1f}", ha="center", va="center", fontsize=8, color="k" if dark else "w")
        ax.set_xticks(range(len(ps)), [f"{p:g}" for p in ps])
        ax.set_yticks(range(len(depths)), [str(d) for d in depths])
        ax.set_xlabel("p_L")
        ax.set_ylabel("depth (layers)")
        ax.set_title(f"test error (%), {rule} rule")
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    fig.savefig(out_path, dpi=120)
    plt.close(fig)
    return out_path


def plot_main(sweep_dir, figure, log=print):
    runs, unfinished = collect(sweep_dir)
    rows = summary_rows(runs)
    log(f"{len(runs)} finished runs in {sweep_dir}" + (f"; left out, unfinished: {', '.join(unfinished)}"
                                                       if unfinished else ""))
    rules = sorted({r["test_error_rule"] for r in runs})
    log(f"test error: {' / '.join(rules)}")
    log(f"{'depth':>5}  {'rule':8}  {'p_L':>4}  {'seeds':>5}  {'test error %':>12}  {'(min-max)':>11}  "
        f"{'s/epoch':>7}  {'vs const':>8}  {'E[blocks]':>9}")
    for r in rows:
        spread = f"({100 * r['error_min']:.1f}-{100 * r['error_max']:.1f})" if r["seeds"] > 1 else ""
        share = f"{100 * r['time_vs_constant']:.0f}%" if r["time_vs_constant"] is not None else "-"
        log(f"{r['depth']:>5}  {r['rule']:8}  {r['p_last']:>4g}  {r['seeds']:>5}  {100 * r['error']:>12.2f}  "
            f"{spread:>11}  {r['epoch_seconds']:>7.1f}  {share:>8}  {r['expected_blocks']:>5.1f}/{r['blocks']}")
    path = plot_sweep(runs, figure or os.path.join(sweep_dir, "fig8.png"))
    log(f"wrote {path}")
    return 0
