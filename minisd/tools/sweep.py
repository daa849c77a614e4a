"""A grid of training runs, and the paper's Figure 8 from it: ``python -m minisd.sweep``.

The paper's Figure 8 asks how the test error depends on p_L, the survival
probability of the last block: on the left for the linear and the uniform rule
(ResNet-110 on CIFAR-10), on the right as a heat map over depth and p_L. This
module runs such a grid with ``python -m minisd.train``, one run folder per
grid point, and draws the figure from the run folders::

    python -m minisd.sweep --out runs/fig8 --p-last 0.2 0.5 0.8 1 --rule linear uniform \\
        --depth 20 56 110 --epochs 3 --data-dir data --valid-size 0
    python -m minisd.sweep --plot runs/fig8            # runs/fig8/fig8.png

Grid flags: ``--p-last``, ``--rule``, ``--depth``, ``--seed`` (each takes one
or more values). Every other flag goes to ``minisd.train`` unchanged, for every
run (``--epochs``, ``--data-dir``, ``--valid-size``, ``--device``, ...).
p_L = 1 is constant depth whatever the rule, so it is run once per depth and
seed and drawn on both rules' curves.

Run folders are named after their grid point, ``d20-linear-p0.5-s0`` or
``d20-constant-s0``, and hold what ``minisd.train`` writes (config.json,
metrics.csv, last.npz, summary.json, curves.png) plus ``train.log``, the
run's own output. The sweep is resumable: run the same command again and a
finished run (its summary.json counts every epoch) is skipped, an interrupted
one (a last.npz and no complete summary) continues from its checkpoint with
``--resume``, and the rest start. A folder trained with other settings stops
the sweep before anything runs, with one line that names the difference.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import asdict

from . import launch
from ..model import expected_blocks
from .flags import OneLineParser
from .runs import read_config

GRID_FLAGS = ("--p-last", "--rule", "--depth", "--seed")
# config.json keys that do not change what a run learns: a folder may differ in these and still count
IGNORED_KEYS = ("out", "progress", "device", "download", "data_dir", "eval_batch_size", "reference")


class SweepError(Exception):
    """Bad input (exit code 2) or an unusable folder (exit code 1): one printable line."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


# ---------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------


def run_name(depth, rule, p_last, seed):
    """'d20-linear-p0.5-s0'; p_L = 1 is constant depth whatever the rule: 'd20-constant-s0'."""
    if p_last >= 1:
        return f"d{depth}-constant-s{seed}"
    return f"d{depth}-{rule}-p{p_last:g}-s{seed}"


def grid_points(depths, rules, p_lasts, seeds):
    """The runs of the grid in order (depth, seed, then p_L from high to low, then rule), one per
    distinct network: p_L = 1 appears once per depth and seed. Returns a list of dicts."""
    points, seen = [], set()
    for depth in depths:
        for seed in seeds:
            for p in sorted(set(p_lasts), reverse=True):
                for rule in rules:
                    name = run_name(depth, rule, p, seed)
                    if name not in seen:
                        seen.add(name)
                        points.append(dict(name=name, depth=depth, rule="linear" if p >= 1 else rule,
                                           p_last=p, seed=seed))
    return points


def densenet_points(depths, seeds):
    """A DenseNet grid (``--arch densenet`` among the training flags): depth x seed, no p_L or rule."""
    return [dict(name=f"densenet-d{d}-s{s}", depth=d, seed=s, p_last=None, rule=None) for d in depths for s in seeds]


def train_argv(point, passthrough, run_dir):
    """The ``minisd.train`` arguments of one grid point (without --resume)."""
    gates = [] if point["p_last"] is None else ["--p-last", f"{point['p_last']:g}", "--rule", point["rule"]]
    return ["--depth", str(point["depth"]), *gates, "--seed", str(point["seed"]), *passthrough, "--out", run_dir,
            "--no-progress"]


def is_densenet(passthrough):
    return "densenet" in [b for a, b in zip(passthrough, passthrough[1:]) if a == "--arch"] + \
        [a.split("=", 1)[1] for a in passthrough if a.startswith("--arch=")]


def without_flag(argv, flag):
    """``argv`` without ``flag VALUE`` / ``flag=VALUE``."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def resume_argv(argv, run_dir):
    """The arguments that continue an interrupted run: the same flags and --resume RUN/last.npz.
    --recipe is left out: minisd.train refuses it beside --resume, and the checkpoint already holds
    the configuration the recipe resolved to (the grid's own flags still override it, as before)."""
    return without_flag(argv, "--recipe") + ["--resume", os.path.join(run_dir, "last.npz")]


def expected_config(argv):
    """The config.json that ``python -m minisd.train ARGV`` writes, as a dict (raises SweepError)."""
    from .. import train
    parser = train.build_parser()
    parser.error = _raise_sweep_error
    args = parser.parse_args(argv)
    try:
        cfg = train.config_from_args(args, argv)
        train.check_config(cfg)
    except train.TrainingError as e:
        raise SweepError(str(e), code=2) from None
    return json.loads(json.dumps(asdict(cfg)))


def _raise_sweep_error(message):
    raise SweepError(f"training flags: {message}", code=2)


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_state(run_dir):
    """'done' (summary.json counts every epoch of config.json), 'interrupted' (a last.npz to
    resume from) or 'new' (nothing usable: start from scratch)."""
    cfg = read_config(run_dir)
    summary = _read_json(os.path.join(run_dir, "summary.json"))
    if cfg and summary and summary.get("epochs_run", 0) >= cfg.get("epochs", float("inf")):
        return "done"
    if os.path.exists(os.path.join(run_dir, "last.npz")):
        return "interrupted"
    return "new"


def check_folder(run_dir, expected):
    """Stop (SweepError) if ``run_dir`` holds a run made with other settings than ``expected``."""
    found = read_config(run_dir)
    if found is None:
        return
    # a key the folder lacks was written by an older minisd: not counted as a difference
    diff = [f"{k} {found[k]!r} there, {v!r} here" for k, v in expected.items()
            if k not in IGNORED_KEYS and k in found and found[k] != v]
    if diff:
        raise SweepError(f"{run_dir} was trained with other settings ({'; '.join(diff)}): "
                         "use another --out, or delete that folder")


# ---------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------


def last_line(path):
    """The last non-empty line of a text file ('' if none): the child's error message."""
    try:
        with open(path) as f:
            lines = [l.strip() for l in f if l.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def run_grid(points, passthrough, out, dry_run=False, log=print, jobs=1, devices=None, print_commands=False,
             slurm=None):
    """Run every grid point not yet finished (``jobs`` at a time); one line per run. Returns the exit code.

    ``dry_run`` lists the runs and their commands; ``print_commands`` prints one shell line per
    pending run and nothing else; ``slurm`` writes a job-array script of the whole grid there.
    """
    plans = []
    for pt in points:
        run_dir = os.path.join(out, pt["name"])
        argv = train_argv(pt, passthrough, run_dir)
        check_folder(run_dir, expected_config(argv))  # every folder checked before any work
        plans.append((pt, run_dir, argv, run_state(run_dir)))
    n = len(plans)
    pending = [(pt, run_dir, resume_argv(argv, run_dir) if state == "interrupted" else argv, state)
               for pt, run_dir, argv, state in plans if state != "done"]
    if print_commands:
        for line in launch.shell_lines([(run_dir, argv) for _, run_dir, argv, _ in pending]):
            log(line)
        return 0
    if slurm:
        launch.slurm_script([(run_dir, argv, without_flag(argv, "--recipe")) for _, run_dir, argv, _ in plans],
                            slurm, out)
        log(f"wrote {slurm}: a SLURM job array of {n} runs ({n - len(pending)} finished before); "
            f"submit it with: sbatch {slurm}")
        return 0
    log(f"sweep: {n} runs in {out} ({n - len(pending)} finished before, {len(pending)} to run"
        f"{f', {jobs} at a time' if jobs > 1 else ''}); each run's output in RUN/train.log")
    if dry_run:
        for k, (pt, run_dir, argv, state) in enumerate(plans, 1):
            cmd = resume_argv(argv, run_dir) if state == "interrupted" else argv
            log(f"[{k}/{n}] {pt['name']} ({state}): python -m minisd.train {' '.join(cmd)}")
        return 0
    os.makedirs(out, exist_ok=True)
    number = {pt["name"]: k for k, (pt, *_) in enumerate(plans, 1)}
    for k, (pt, run_dir, _, state) in enumerate(plans, 1):
        if state == "done":
            log(f"[{k}/{n}] {pt['name']}: finished before, {_error_text(run_dir)} (skipped)")
    for _, run_dir, _, _ in pending:
        os.makedirs(run_dir, exist_ok=True)
    failed, interrupted, t_sweep = [], [], time.perf_counter()
    states = {pt["name"]: (run_dir, state) for pt, run_dir, _, state in pending}

    def started(name, slot):
        if jobs > 1 or devices:
            where = f"GPU {devices[slot % len(devices)]}" if devices else f"job slot {slot}"
            log(f"[{number[name]}/{n}] {name}: started ({where})")

    def finished(name, code, seconds):
        run_dir, state = states[name]
        k = number[name]
        if code in (130, 143):
            interrupted.append(name)
            kept = ("its last.npz will be resumed" if run_state(run_dir) == "interrupted"
                    else "no checkpoint yet: it will start again")
            log(f"[{k}/{n}] {name}: interrupted after {seconds:.0f} s ({kept}). "
                "Run the same command again to continue.")
        elif code != 0 or run_state(run_dir) != "done":
            failed.append(name)
            log(f"[{k}/{n}] {name}: FAILED after {seconds:.0f} s (exit code {code}): "
                f"{last_line(os.path.join(run_dir, 'train.log'))}")
        else:
            note = ", resumed from last.npz" if state == "interrupted" else ""
            log(f"[{k}/{n}] {name}: {_error_text(run_dir)}, {seconds:.0f} s{note}")

    tasks = [(pt["name"], argv, os.path.join(run_dir, "train.log")) for pt, run_dir, argv, _ in pending]
    outcome = launch.run_many(tasks, jobs=jobs, devices=devices, on_start=started, on_done=finished)
    if outcome == "interrupted" or interrupted:
        if len(interrupted) != 1 or jobs > 1:
            log("sweep interrupted: run the same command again to continue (finished runs are skipped, "
                "interrupted ones resumed)")
        return 130
    log(f"sweep: {n - len(failed)} of {n} runs finished ({time.perf_counter() - t_sweep:.0f} s); "
        f"draw them with: python -m minisd.sweep --plot {out}")
    if failed:
        log(f"failed: {', '.join(failed)} (see their train.log; run the same command again to retry)")
        return 1
    return 0


def _error_text(run_dir):
    s = _read_json(os.path.join(run_dir, "summary.json")) or {}
    if "test_error" not in s:
        return "no test error"
    kind = "best-validation" if "best_epoch" in s else "final"
    return f"test error {100 * s['test_error']:.2f}% ({kind})"


# ---------------------------------------------------------------------------
# Figure 8
# ---------------------------------------------------------------------------


def collect(sweep_dir):
    """The finished runs under ``sweep_dir``: one dict per run (depth, rule, p_last, seed, test_error,
    test_error_rule, epoch_seconds, expected_blocks, blocks, name). Unfinished folders are counted
    in the second value returned."""
    if not os.path.isdir(sweep_dir):
        raise SweepError(f"{sweep_dir} is not a folder")
    runs, unfinished = [], []
    for name in sorted(os.listdir(sweep_dir)):
        run_dir = os.path.join(sweep_dir, name)
        cfg = read_config(run_dir)
        if not os.path.isdir(run_dir) or not cfg:
            continue
        if cfg.get("arch", "resnet") != "resnet":  # Figure 8 is about p_L
            unfinished.append(f"{name} (a DenseNet: no p_L)")
            continue
        if run_state(run_dir) != "done":
            unfinished.append(name)
            continue
        s = _read_json(os.path.join(run_dir, "summary.json"))
        blocks = 3 * ((cfg["depth"] - 2) // 6)
        runs.append(dict(name=name, depth=cfg["depth"], rule=cfg["rule"], p_last=float(cfg["p_last"]),
                         seed=cfg["seed"], test_error=s["test_error"], test_error_rule=s["test_error_rule"],
                         epoch_seconds=s["mean_epoch_seconds"], blocks=blocks,
                         expected_blocks=expected_blocks(blocks, float(cfg["p_last"]), cfg["rule"])))
    if not runs:
        raise SweepError(f"no finished runs in {sweep_dir}"
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


# ---------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------


def _flag_error(message):
    raise SweepError(f"{message} (python -m minisd.sweep --help)", code=2)


def _positive(s):
    try:
        v = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {s!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {s}")
    return v


def _p_last(s):
    try:
        v = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {s!r}") from None
    if not 0 < v <= 1:
        raise argparse.ArgumentTypeError(f"p_L must be in (0, 1], got {s}")
    return v


def build_parser():
    p = OneLineParser(
        prog="python -m minisd.sweep", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run a grid of minisd.train runs (one folder each, resumable) and draw the paper's "
                    "Figure 8 from them.",
        epilog="Every other flag goes to python -m minisd.train, for every run (e.g. --epochs 3\n"
               "--data-dir data --valid-size 0 --device gpu; see python -m minisd.train --help).\n\n"
               "examples:\n"
               "  python -m minisd.sweep --out runs/fig8 --depth 20 --epochs 3 --data-dir data --valid-size 0\n"
               "  python -m minisd.sweep --out runs/fig8 ...        (the same command again: resumes, skips finished runs)\n"
               "  python -m minisd.sweep --plot runs/fig8           (runs/fig8/fig8.png and a table)")
    p.add_argument("--out", metavar="DIR", help="sweep folder: one run folder per grid point, e.g. "
                                                "DIR/d20-linear-p0.5-s0 (required to run a grid)")
    p.add_argument("--p-last", metavar="P", type=_p_last, nargs="+", default=[0.2, 0.5, 0.8, 1.0],
                   help="survival probabilities of the last block; 1 = constant depth (default: 0.2 0.5 0.8 1)")
    p.add_argument("--rule", choices=["linear", "uniform"], nargs="+", default=["linear", "uniform"],
                   help="survival rules (default: linear uniform)")
    # (each architecture's depth rule is checked with the training flags, by expected_config)
    p.add_argument("--depth", metavar="D", type=_positive, nargs="+", default=[110],
                   help="depths: 6N+2 for ResNets (default: 110, the paper's Figure 8 left); with --arch densenet "
                        "a DenseNet grid of --depth x --seed (6n+4, default 100)")
    p.add_argument("--seed", metavar="S", type=int, nargs="+", default=[0],
                   help="seeds; several show the spread (default: 0)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the runs, their state (new, interrupted, done) and their commands; run nothing")
    p.add_argument("--plot", metavar="DIR", help="draw Figure 8 from the finished runs in DIR and print their "
                                                 "table; run nothing")
    p.add_argument("-o", "--figure", metavar="PNG", help="with --plot: the file to write (default: DIR/fig8.png)")
    p.add_argument("--jobs", metavar="N", type=_positive, default=1,
                   help="run N grid points at once, each its own minisd.train process; on the CPU the cores "
                        "are split between them (MINISD_NUM_THREADS) (default: 1)")
    p.add_argument("--devices", metavar="GPU", nargs="+", default=None,
                   help="GPU ids, e.g. 0 1 2 3: job slot j sees only GPU devices[j mod n] "
                        "(CUDA_VISIBLE_DEVICES); give --jobs as many")
    p.add_argument("--print-commands", action="store_true",
                   help="print one shell line per pending grid point (for GNU parallel or a scheduler); run nothing")
    p.add_argument("--slurm", metavar="FILE",
                   help="write a SLURM job-array script to FILE (sbatch FILE): task i runs grid point i in its "
                        "own folder, resumable, checkpointing on SIGTERM 120 s before its time is up; run nothing")
    p.error = _flag_error  # one line, returned by main() as exit status 2
    return p


def parse(argv):
    """(own args, flags for minisd.train); raises SweepError with one line on bad input."""
    args, passthrough = build_parser().parse_known_args(argv)
    if args.plot is not None:
        grid = [a for a in argv if a.split("=", 1)[0] in ("--out", "--dry-run", "--jobs", "--devices",
                                                          "--print-commands", "--slurm") + GRID_FLAGS]
        if grid:
            raise SweepError(f"--plot draws the runs already in DIR; it takes no {grid[0]}", code=2)
        if passthrough:
            raise SweepError(f"--plot takes no training flags, got {' '.join(passthrough)}", code=2)
        return args, []
    if args.figure is not None:
        raise SweepError("-o/--figure goes with --plot DIR", code=2)
    if args.out is None:
        raise SweepError("--out DIR is required: the folder for the run folders (python -m minisd.sweep --help)",
                         code=2)
    names = [flag.split("=", 1)[0] for flag in passthrough]
    if "--resume" in names:
        raise SweepError("--resume is the sweep's job: run the same sweep command again to resume its runs",
                         code=2)
    if "--print-config" in names:
        raise SweepError("--print-config: use --dry-run to see each run's command, or python -m minisd.train "
                         "... --print-config for one of them", code=2)
    if is_densenet(passthrough):  # a DenseNet has no gates: its grid is depth x seed
        given = [a for a in argv if a.split("=", 1)[0] in ("--p-last", "--rule")]
        if given:
            raise SweepError(f"{given[0]}: a DenseNet has no gates; its grid is --depth and --seed", code=2)
        if not any(a.split("=", 1)[0] == "--depth" for a in argv):
            args.depth = [100]
        args.p_last, args.rule = [None], [None]
    # check the training flags once, before any run starts (a typo fails now, not after hours)
    expected_config(train_argv(dict(depth=args.depth[0], p_last=args.p_last[0], rule=args.rule[0],
                                     seed=args.seed[0]), passthrough, os.path.join(args.out, "check")))
    return args, passthrough


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, passthrough = parse(argv)
        if args.plot is not None:
            return plot_main(args.plot, args.figure)
        points = (densenet_points(args.depth, args.seed) if args.p_last == [None]
                  else grid_points(args.depth, args.rule, args.p_last, args.seed))
        return run_grid(points, passthrough, args.out, dry_run=args.dry_run, jobs=args.jobs, devices=args.devices,
                        print_commands=args.print_commands, slurm=args.slurm)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
