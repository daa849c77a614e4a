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
run's own output. The sweep is resumable: run the same command again and
each point goes on from the state its folder is in (:data:`STATES`): a finished
run is skipped, an interrupted one (a last.npz) continues with ``--resume``, one
stopped before its first checkpoint starts again, and the rest start; however the
sweep and its runs were stopped (Ctrl-C, SIGTERM, ``kill -9``), every point
finishes exactly once. A folder trained with other settings stops the sweep before
anything runs, with one line that names the difference. A sweep holds its folder
while it runs (:mod:`minisd.tools.claim`), each run its own; no write that fails
(a full disk, a read-only folder) ends in a traceback. Figure 8: :mod:`minisd.tools.fig8`.
"""
from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from dataclasses import asdict

from . import launch
from .checkpoint import CheckpointError, check_run_checkpoint, read_meta
from .claim import FolderBusy, claim, holder
from .fig8 import plot_main
from .flags import OneLineParser, build_parser as train_parser, check_config, config_from_args
from .runs import (RUN_FILES, TrainingError, check_free_space, is_finished, nearest_folder, read_config, read_json,
                   summarize, write_json, write_metrics)

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
    parser = train_parser()
    parser.error = _raise_sweep_error
    args = parser.parse_args(argv)
    try:
        cfg = config_from_args(args, argv)
        check_config(cfg)
    except TrainingError as e:
        raise SweepError(str(e), code=2) from None
    return json.loads(json.dumps(asdict(cfg)))


def _raise_sweep_error(message):
    raise SweepError(f"training flags: {message}", code=2)


STATES = {  # what a grid point's folder says, and what the sweep does with it
    "done": "summary.json counts every epoch of config.json: skipped",
    "running": "another live process holds the folder (minisd.tools.claim): left to it",
    "trained": "last.npz holds every epoch, the summary is missing (stopped as it ended): written from last.npz",
    "interrupted": "a last.npz to continue from: resumed with --resume",
    "unstarted": "files of a start that saved no checkpoint (config.json, ...): started again with --overwrite",
    "new": "no file of a run: started",
}


def run_state(run_dir):
    """The state of the grid point in ``run_dir``: one of :data:`STATES`."""
    if is_finished(run_dir):
        return "done"
    if holder(run_dir):
        return "running"
    last = os.path.join(run_dir, "last.npz")
    if os.path.exists(last):
        try:
            meta = read_meta(last)
            trained = meta["epoch"] >= (read_config(run_dir) or meta["config"])["epochs"]
        except (CheckpointError, KeyError, TypeError):
            trained = False  # minisd.train says what is wrong with it
        return "trained" if trained else "interrupted"
    if any(os.path.lexists(os.path.join(run_dir, n)) for n in RUN_FILES):
        return "unstarted"
    return "new"


def command(argv, run_dir, state):
    """The ``minisd.train`` arguments that take a point in ``state`` on: resume, start again, or start."""
    if state == "interrupted":
        return resume_argv(argv, run_dir)
    return argv + ["--overwrite"] * (state == "unstarted")


def write_summary(run_dir):
    """A run stopped between its last checkpoint and its summary ('trained'): metrics.csv and
    summary.json from last.npz, which holds every metrics row; the folder claimed meanwhile."""
    last = os.path.join(run_dir, "last.npz")
    with claim(run_dir):
        meta = read_meta(last)
        check_run_checkpoint({}, meta)
        write_metrics(os.path.join(run_dir, "metrics.csv"), meta["metrics"])
        write_json(os.path.join(run_dir, "summary.json"), summarize(meta["metrics"]))


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

    ``dry_run`` lists the runs, their state and their commands; ``print_commands`` prints one shell
    line per pending run and nothing else; ``slurm`` writes a job-array script of the whole grid
    there. To run, the sweep holds ``out`` (minisd.tools.claim): a second sweep on it is refused.
    """
    if dry_run or print_commands or slurm:
        return show_grid(plan(points, passthrough, out), out, log, dry_run, print_commands, slurm)
    with claim_sweep_folder(out, log):
        return run_plans(plan(points, passthrough, out), out, log, jobs, devices)


def plan(points, passthrough, out):
    """``(point, run folder, train arguments, state)`` of every grid point; every folder checked first."""
    plans = []
    for pt in points:
        run_dir = os.path.join(out, pt["name"])
        argv = train_argv(pt, passthrough, run_dir)
        check_folder(run_dir, expected_config(argv))  # every folder checked before any work
        plans.append((pt, run_dir, argv, run_state(run_dir)))
    return plans


def show_grid(plans, out, log, dry_run, print_commands, slurm):
    """--dry-run, --print-commands, --slurm: the plan, and nothing run."""
    n = len(plans)
    pending = [(run_dir, command(argv, run_dir, state)) for _, run_dir, argv, state in plans if state in TO_RUN]
    if print_commands:
        for line in launch.shell_lines(pending):
            log(line)
        return 0
    if slurm:
        try:
            launch.slurm_script([(run_dir, argv, without_flag(argv, "--recipe")) for _, run_dir, argv, _ in plans],
                                slurm, out)
        except OSError as e:
            raise SweepError(f"cannot write {slurm}: {e.strerror or e}") from None
        log(f"wrote {slurm}: a SLURM job array of {n} runs ({n - len(pending)} finished before); "
            f"submit it with: sbatch {slurm}")
        return 0
    log(f"sweep: {n} runs in {out} ({n - len(pending)} finished before, {len(pending)} to run); dry run")
    for k, (pt, run_dir, argv, state) in enumerate(plans, 1):
        log(f"[{k}/{n}] {pt['name']} ({state}): python -m minisd.train {' '.join(command(argv, run_dir, state))}")
    return 0


TO_RUN = ("interrupted", "unstarted", "new")  # the states a minisd.train process takes on


def claim_sweep_folder(out, log):
    """Create ``out`` and hold it for this sweep; one line (SweepError) when another sweep holds it
    or it cannot be written (a file, read-only, a full disk)."""
    try:
        check_free_space(nearest_folder(out), "the sweep folder", "--out")
        os.makedirs(out, exist_ok=True)
        held = claim(out)
    except TrainingError as e:
        raise SweepError(str(e)) from None
    except FolderBusy as e:
        raise SweepError(f"{e}: another sweep runs in it; wait for it to end, or choose another --out") from None
    except OSError as e:
        raise SweepError(f"cannot write to the sweep folder {out}: {e.strerror or e}") from None
    if held.took_over:
        log(f"took over {out} from pid {held.took_over}, a sweep that ended without giving it back")
    return held


def run_plans(plans, out, log, jobs, devices):
    """Skip the finished points, summarise the trained ones, run the others; the exit code."""
    n = len(plans)
    number = {pt["name"]: k for k, (pt, *_) in enumerate(plans, 1)}
    todo = [(pt, run_dir, command(argv, run_dir, state), state) for pt, run_dir, argv, state in plans
            if state in TO_RUN]
    log(f"sweep: {n} runs in {out} ({sum(st == 'done' for *_, st in plans)} finished before, {len(todo)} to run"
        f"{f', {jobs} at a time' if jobs > 1 else ''}); each run's output in RUN/train.log")
    failed, busy, interrupted, ended, t_sweep = [], [], [], set(), time.perf_counter()
    for k, (pt, run_dir, _, state) in enumerate(plans, 1):
        if state == "done":
            log(f"[{k}/{n}] {pt['name']}: finished before, {_error_text(run_dir)} (skipped)")
        elif state == "running":
            busy.append(pt["name"])
            log(f"[{k}/{n}] {pt['name']}: running in another process (pid {holder(run_dir) or '?'}): left to it")
        elif state == "trained":
            try:
                write_summary(run_dir)
                log(f"[{k}/{n}] {pt['name']}: trained before; its summary written now from last.npz: "
                    f"{_error_text(run_dir)}")
            except (OSError, CheckpointError, FolderBusy) as e:
                failed.append(pt["name"])
                log(f"[{k}/{n}] {pt['name']}: FAILED: its summary could not be written from last.npz: {e}")
    for _, run_dir, _, _ in todo:
        try:
            os.makedirs(run_dir, exist_ok=True)
        except OSError as e:
            raise SweepError(f"cannot create the run folder {run_dir}: {e.strerror or e}") from None
    states = {pt["name"]: (run_dir, state) for pt, run_dir, _, state in todo}
    write_error = []

    def started(name, slot):
        if jobs > 1 or devices:
            where = f"GPU {devices[slot % len(devices)]}" if devices else f"job slot {slot}"
            log(f"[{number[name]}/{n}] {name}: started ({where})")

    def finished(name, code, seconds, error):
        ended.add(name)
        run_dir, state = states[name]
        k = number[name]
        if error is not None:  # its log could not be written: nothing started, nothing more will
            write_error.append(f"cannot write {os.path.join(run_dir, 'train.log')}: {_reason(error)}")
            log(f"[{k}/{n}] {name}: not started: {write_error[-1]}")
        elif code in (130, 143):
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

    tasks = [(pt["name"], argv, os.path.join(run_dir, "train.log")) for pt, run_dir, argv, _ in todo]
    signum = launch.run_many(tasks, jobs=jobs, devices=devices, on_start=started, on_done=finished)
    if signum is not None or interrupted:
        if len(interrupted) != 1 or jobs > 1:
            log("sweep interrupted: run the same command again to continue (finished runs are skipped, "
                "interrupted ones resumed)")
        return 128 + (signum or 2)
    if write_error:
        log(f"sweep stopped: {write_error[0]}; {len(todo) - len(ended)} more runs not started. Free some space "
            f"(or make {out} writable), then run the same command again")
        return 1
    log(f"sweep: {n - len(failed) - len(busy)} of {n} runs finished ({time.perf_counter() - t_sweep:.0f} s); "
        f"draw them with: python -m minisd.sweep --plot {out}")
    if busy:
        log(f"still running in other processes: {', '.join(busy)}; run the same command again once they have ended")
    if failed:
        log(f"failed: {', '.join(failed)} (see their train.log; run the same command again to retry)")
    return 1 if failed or busy else 0


def _reason(e):
    """An OSError in words: a full disk says so."""
    return "no space left on the device" if e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", 0)) \
        else (e.strerror or str(e))


def _error_text(run_dir):
    s = read_json(os.path.join(run_dir, "summary.json")) or {}
    if "test_error" not in s:
        return "no test error"
    kind = "best-validation" if "best_epoch" in s else "final"
    return f"test error {100 * s['test_error']:.2f}% ({kind})"


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


def say(line):
    """The sweep's own lines, on stdout; stdout on a full disk must not stop the runs (their results are
    in their folders), so a line that cannot be written is dropped."""
    try:
        print(line, flush=True)
    except OSError:
        pass


def main(argv=None):
    """The command line; returns the exit status: 0 done, 1 a failed run or an unusable folder (one line
    each), 2 bad flags, 130 / 143 stopped by Ctrl-C / SIGTERM (the same command continues)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args, passthrough = parse(argv)
        if args.plot is not None:
            try:
                return plot_main(args.plot, args.figure, say)
            except ImportError as e:
                raise SweepError(f"drawing Figure 8 needs matplotlib (pip install matplotlib): {e}") from None
            except ValueError as e:  # not a folder, no finished runs
                raise SweepError(str(e)) from None
            except OSError as e:  # the figure cannot be written: a full disk, a read-only folder
                raise SweepError(f"cannot write {e.filename or args.figure or args.plot}: {_reason(e)}") from None
        points = (densenet_points(args.depth, args.seed) if args.p_last == [None]
                  else grid_points(args.depth, args.rule, args.p_last, args.seed))
        return run_grid(points, passthrough, args.out, dry_run=args.dry_run, log=say, jobs=args.jobs,
                        devices=args.devices, print_commands=args.print_commands, slurm=args.slurm)
    except SweepError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:  # before any run started (once runs start, launch.run_many handles signals)
        print("\ninterrupted before any run started: run the same command again", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
