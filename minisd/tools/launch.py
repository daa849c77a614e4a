"""Running a sweep's training runs: one after another, several at once, or by a scheduler.

* :func:`run_many` runs ``python -m minisd.train`` child processes, at most ``jobs`` at a
  time. On the CPU the cores are split between them (``MINISD_NUM_THREADS``); with
  ``devices`` job slot j sees only GPU ``devices[j mod n]`` (``CUDA_VISIBLE_DEVICES``), so the
  first n runs go to devices[0], ..., devices[n-1] and each later run to the GPU that freed
  up. Ctrl-C or a SIGTERM to the sweep (passed on to every child) makes each child save its
  last.npz; the sweep waits for all of them. A log that cannot be written stops the starts.
* :func:`shell_lines` prints one shell line per pending run, for GNU parallel or any scheduler.
* :func:`slurm_script` writes a SLURM job-array script: task i runs grid point i in its own
  folder, resumable, with ``--signal=TERM@120`` so a pre-empted or timed-out task checkpoints
  (and is requeued when SLURM allows it); a requeued or re-submitted task continues from its
  last.npz. The script runs as plain ``bash FILE`` too, with ``SLURM_ARRAY_TASK_ID`` set.
"""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time


def child_env(slot, jobs, devices=None, cores=None):
    """The environment of the child in job slot ``slot``: this checkout's minisd, its share of
    the CPU cores when several jobs run at once, and its GPU when ``devices`` are given."""
    import minisd
    root = os.path.dirname(os.path.dirname(os.path.abspath(minisd.__file__)))
    env = dict(os.environ)  # the child imports the same minisd as this process
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    if jobs > 1:
        share = str(max(1, (cores or os.cpu_count() or 1) // jobs))
        env.update(MINISD_NUM_THREADS=share, OPENBLAS_NUM_THREADS=share, OMP_NUM_THREADS=share)
    if devices:
        env["CUDA_VISIBLE_DEVICES"] = str(devices[slot % len(devices)])
    return env


def open_log(log_path, argv):
    """The run's log, opened for appending, its command written first (a seam: tests fill the disk here)."""
    log = open(log_path, "a")
    try:
        log.write(f"\n$ {sys.executable} -m minisd.train {' '.join(argv)}\n")
        log.flush()
    except BaseException:
        log.close()
        raise
    return log


def run_many(tasks, jobs=1, devices=None, on_start=None, on_done=None, poll_seconds=0.1):
    """Run ``tasks``, ``(key, argv, log_path)`` each, as ``python -m minisd.train ARGV`` children,
    at most ``jobs`` at once, each child's output appended to its log.

    ``on_start(key, slot)`` and ``on_done(key, exit_code, seconds, error)`` report progress;
    a task that could not be started (its log cannot be written: a full disk, a read-only
    folder) is reported with exit code None and the ``OSError``, and no further task starts.
    Ctrl-C or SIGTERM: no new run starts, the signal is passed on to every running child
    (each saves its last.npz), and every one is waited for. Returns the signal's number then,
    else None (every task that could start has ended).
    """
    pending, running, free = list(tasks), {}, list(range(max(1, jobs)))
    stop = {"signal": None, "error": None}

    def forward(signum, frame):  # SIGTERM reaches this process only, Ctrl-C maybe not every child: pass it on
        stop["signal"] = stop["signal"] or signum
        for proc, *_ in running.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if _main_thread() else {}
    try:
        while running or (pending and stop["signal"] is None and stop["error"] is None):  # a stop: no new start
            while pending and free and stop["signal"] is None and stop["error"] is None:
                key, argv, log_path = pending.pop(0)
                slot, log = free.pop(0), None
                try:
                    log = open_log(log_path, argv)
                    proc = subprocess.Popen([sys.executable, "-m", "minisd.train", *argv], stdout=log,
                                            stderr=subprocess.STDOUT, env=child_env(slot, jobs, devices))
                except OSError as e:
                    if log is not None:
                        log.close()
                    free.append(slot)
                    stop["error"] = e
                    if on_done:
                        on_done(key, None, 0.0, e)
                    continue
                running[key] = (proc, log, slot, time.perf_counter())
                if on_start:
                    on_start(key, slot)
            time.sleep(poll_seconds)
            for key in [k for k, (proc, *_) in running.items() if proc.poll() is not None]:
                proc, log, slot, t0 = running.pop(key)
                log.close()
                if proc.returncode in (130, 143):  # a child stopped by a signal: start nothing more
                    stop["signal"] = stop["signal"] or proc.returncode - 128
                free.append(slot)
                free.sort()
                if on_done:
                    on_done(key, proc.returncode, time.perf_counter() - t0, None)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return stop["signal"]


def _main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()


def shell_lines(commands):
    """One line per ``(run_dir, argv)``: make the folder, run, append the output to RUN/train.log."""
    python = shlex.quote(sys.executable)
    return [f"mkdir -p {shlex.quote(run_dir)} && {python} -m minisd.train {shlex.join(argv)} "
            f">> {shlex.quote(os.path.join(run_dir, 'train.log'))} 2>&1" for run_dir, argv in commands]


SLURM_TEMPLATE = r"""#!/bin/bash
# A minisd sweep as a SLURM job array: task i trains grid point i in its own folder.
#   sbatch {name}                      (or: SLURM_ARRAY_TASK_ID=3 bash {name})
# A task stopped by the scheduler gets SIGTERM 120 s before the end (--signal): minisd.train saves
# last.npz and exits 143, and the task asks to be requeued; a requeued or re-submitted task
# continues from its last.npz, and a finished one (summary.json) does nothing.
#SBATCH --job-name=minisd-sweep
#SBATCH --array=0-{last}
#SBATCH --signal=TERM@120
#SBATCH --requeue
#SBATCH --output={out}/slurm-%A_%a.out
{sbatch_extra}
set -u
cd {cwd}
export PYTHONPATH={root}${{PYTHONPATH:+:$PYTHONPATH}}
RUNS=({runs})
START=({start})   # the flags of each run
RESUME=({resume})  # the same without --recipe (the checkpoint holds what it resolved to)
i=${{SLURM_ARRAY_TASK_ID:?set SLURM_ARRAY_TASK_ID to the grid point (0-{last})}}
if [ "$i" -lt 0 ] || [ "$i" -gt {last} ]; then echo "no grid point $i (0-{last})" >&2; exit 2; fi
run=${{RUNS[$i]}}
mkdir -p "$run"
if [ -f "$run/summary.json" ]; then echo "$run: finished before"; exit 0; fi
if [ -f "$run/last.npz" ]; then
    eval "args=(${{RESUME[$i]}} --resume \"\$run/last.npz\")"
elif [ -f "$run/config.json" ]; then  # a start that saved no checkpoint (killed in its first epoch): again
    eval "args=(${{START[$i]}} --overwrite)"
else
    eval "args=(${{START[$i]}})"
fi
launch=()
if [ -n "${{SLURM_JOB_ID:-}}" ] && command -v srun >/dev/null; then launch=(srun --kill-on-bad-exit=1); fi
"${{launch[@]}}" {python} -m minisd.train "${{args[@]}}" >> "$run/train.log" 2>&1
code=$?
if [ "$code" -eq 143 ] && [ -n "${{SLURM_JOB_ID:-}}" ] && command -v scontrol >/dev/null; then
    scontrol requeue "${{SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}}_$i"
fi
exit $code
"""


def slurm_script(points, path, out, sbatch_extra=()):
    """The job-array script of ``points``, ``(run_dir, start_argv, resume_argv)`` each, written to
    ``path``; returns it. ``resume_argv`` is the resumed form without ``--resume`` itself (the
    script adds it when the folder holds a last.npz)."""
    import minisd
    root = os.path.dirname(os.path.dirname(os.path.abspath(minisd.__file__)))
    runs = " ".join(shlex.quote(run_dir) for run_dir, _, _ in points)
    start = " ".join(shlex.quote(shlex.join(argv)) for _, argv, _ in points)  # one quoted string each
    resume = " ".join(shlex.quote(shlex.join(argv)) for _, _, argv in points)
    text = SLURM_TEMPLATE.format(name=os.path.basename(path), last=len(points) - 1, out=shlex.quote(out),
                                 cwd=shlex.quote(os.getcwd()), root=shlex.quote(root), runs=runs, start=start, resume=resume,
                                 python=shlex.quote(sys.executable),
                                 sbatch_extra="\n".join(f"#SBATCH {x}" for x in sbatch_extra))
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)
    return path
