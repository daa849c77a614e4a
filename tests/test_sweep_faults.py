"""A sweep survives what a run survives (issue 29, item 2), as docs/training.md promises: after Ctrl-C,
SIGTERM or kill -9 of the sweep and its runs every grid point is finished, resumable or recognisably
unstarted, and the same command again finishes every point exactly once; a point killed as it finished
gets its summary; a write that fails (a full disk, a read-only folder) is one line, never a traceback.

Real sweeps of tiny runs (ResNet-8, 2 epochs of 32 images); the test hooks
(minisd.tools.signals.test_hook) hold runs at chosen steps so that each fault lands where it is meant to.
"""
import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from minisd.data.fake import write_fake_cifar10
from minisd.tools import launch, runs, sweep
from minisd.tools.claim import CLAIM_FILE, claim

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 180
THREE = ["d8-constant-s0", "d8-linear-p0.5-s0", "d8-uniform-p0.5-s0"]  # p_L 0.5 and 1 x linear and uniform


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_per_batch=20, seed=0, n_test=40)
    return str(root)


def tiny(root, out, *extra, p_last=("0.5", "1")):
    """Three grid points of ResNet-8 (with --rule linear two), 2 epochs of 32 images in batches of 16 (2 steps
    per epoch)."""
    return ["--out", str(out), "--depth", "8", "--p-last", *p_last, "--epochs", "2", "--batch-size", "16",
            "--limit-train", "32", "--valid-size", "0", "--data-dir", root, "--device", "cpu", "--eval-batch-size",
            "40", *extra]


def start_sweep(argv, hooks):
    env = dict(os.environ, MINISD_TEST_HOOKS=str(hooks), PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-m", "minisd.sweep", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=ROOT, env=env, start_new_session=True)


def hold(hooks, *points):
    hooks.mkdir(exist_ok=True)
    for point in points:
        (hooks / f"pause-{point}").write_text("wait")


def wait_for(condition, proc, what):
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert proc is None or proc.poll() is None, f"ended before {what}: {proc.communicate()[0][-3000:]}"
        assert time.monotonic() < deadline, f"not {what}"
        time.sleep(0.05)


def states(out):
    return {n: sweep.run_state(str(out / n)) for n in THREE}


def commands_in_log(run_dir):
    return (run_dir / "train.log").read_text().count(" -m minisd.train ")


def assert_every_point_finished_once(out):
    """Every point's run folder: the whole run, each epoch once, and no claim left behind."""
    for n in THREE:
        rows = list(csv.DictReader(open(out / n / "metrics.csv")))
        assert [int(r["epoch"]) for r in rows] == [1, 2], n
        assert json.load(open(out / n / "summary.json"))["epochs_run"] == 2
        assert not (out / n / CLAIM_FILE).exists()
    assert not (out / CLAIM_FILE).exists()


def again(argv, capsys, code=0):
    """The same sweep command again (in this process): its exit status checked, its output returned."""
    capsys.readouterr()
    assert sweep.main(argv) == code
    return capsys.readouterr().out


def test_a_folder_left_holding_only_config_json_is_started_again(fake_root, tmp_path, capsys):
    """The issue's case: a point killed before its first checkpoint kept only config.json (and train.log)."""
    out = tmp_path / "grid"
    argv = tiny(fake_root, out, "--rule", "linear")
    _, passthrough = sweep.parse(argv)
    point = sweep.grid_points([8], ["linear"], [0.5], [0])[0]
    run_dir = out / point["name"]
    run_dir.mkdir(parents=True)
    runs.write_json(str(run_dir / "config.json"), sweep.expected_config(sweep.train_argv(point, passthrough,
                                                                                          str(run_dir))))
    (run_dir / "train.log").write_text("$ python -m minisd.train ... (killed)\n")
    assert sweep.run_state(str(run_dir)) == "unstarted"
    printed = again(argv, capsys)
    assert "(0 finished before, 2 to run)" in printed and "FAILED" not in printed
    assert "--overwrite: removed the earlier run's config.json" in (run_dir / "train.log").read_text()
    assert sweep.run_state(str(run_dir)) == "done"
    assert "(2 finished before, 0 to run)" in again(argv, capsys)  # and not again: exactly once


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_ctrl_c_or_sigterm_then_the_same_command_finishes_every_point_once(how, fake_root, tmp_path, capsys):
    """Ctrl-C reaches the sweep and its runs (one process group); SIGTERM the sweep only, which passes it on.
    When the signal comes one run is loading its data, one is mid-epoch, the third is not started."""
    out, hooks = tmp_path / "grid", tmp_path / "hooks"
    argv = tiny(fake_root, out, "--jobs", "2")
    hold(hooks, "data", "step-1-1")  # one run waits at each
    proc = start_sweep(argv, hooks)
    wait_for(lambda: (hooks / "at-data").exists() and (hooks / "at-step-1-1").exists(), proc, "both held")
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGTERM)
    logs = [out / n / "train.log" for n in THREE[:2]]
    wait_for(lambda: any("saving a checkpoint at the end of this step" in p.read_text() for p in logs), proc,
             "the signal reached the training run")
    (hooks / "go-step-1-1").touch()
    output, _ = proc.communicate(timeout=WAIT_S)
    assert proc.returncode == (130 if how == "ctrl-c" else 143), output
    assert "Traceback" not in output and "run the same command again" in output.lower()
    left = states(out)
    assert sorted(left.values()) == ["interrupted", "new", "new"] and left[THREE[2]] == "new", left
    loading = next(n for n in THREE[:2] if left[n] == "new")
    assert "before training started: nothing was written" in (out / loading / "train.log").read_text()
    assert os.listdir(out / loading) == ["train.log"]
    printed = again(argv, capsys)
    assert "(0 finished before, 3 to run" in printed and printed.count("resumed from last.npz") == 1
    assert_every_point_finished_once(out)
    assert [commands_in_log(out / n) for n in THREE] == [2, 2, 1]  # stopped and taken on again; started once
    assert "(3 finished before, 0 to run" in again(argv, capsys)


def test_kill_9_of_the_sweep_and_its_runs_then_the_same_command_finishes_every_point_once(fake_root, tmp_path,
                                                                                         capsys):
    """Three runs killed at once: one before its first checkpoint (config.json only), one in the middle of
    writing it (a temporary file beside nothing), one after it (last.npz)."""
    out, hooks = tmp_path / "grid", tmp_path / "hooks"
    argv = tiny(fake_root, out, "--jobs", "3")
    hold(hooks, "step-1-2", "save-last.npz", "step-2-1")  # the first to get there waits at each
    proc = start_sweep(argv, hooks)
    wait_for(lambda: all((hooks / f"at-{p}").exists() for p in ("step-1-2", "save-last.npz", "step-2-1")), proc,
             "all three held")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=WAIT_S)
    wait_for(lambda: "running" not in states(out).values(), None, "the runs gone")  # (a kill takes a moment)
    left = states(out)
    assert sorted(left.values()) == ["interrupted", "unstarted", "unstarted"], left
    assert all(CLAIM_FILE in os.listdir(out / n) for n in THREE) and (out / CLAIM_FILE).exists()
    assert sum(any(f.startswith(".minisd-tmp-") for f in os.listdir(out / n)) for n in THREE) == 1
    printed = again(argv, capsys)
    assert f"took over {out} from pid {proc.pid}" in printed and "FAILED" not in printed
    assert printed.count("resumed from last.npz") == 1
    for n in THREE:
        assert "took over" in (out / n / "train.log").read_text().split("\n$ ")[-1]  # once each, by its new run
        assert not any(f.startswith(".minisd-tmp-") for f in os.listdir(out / n))
    assert_every_point_finished_once(out)
    assert "(3 finished before, 0 to run" in again(argv, capsys)


def test_runs_left_going_by_a_killed_sweep_are_left_to_them(fake_root, tmp_path, capsys):
    """kill -9 of the sweep alone: its run goes on. The same command meanwhile runs the other points and
    leaves that one alone (exit 1, one line); once it has ended, the command finds every point finished."""
    out, hooks = tmp_path / "grid", tmp_path / "hooks"
    argv = tiny(fake_root, out, "--rule", "linear")
    hold(hooks, "step-1-1")
    proc = start_sweep(argv, hooks)
    wait_for(lambda: (hooks / "at-step-1-1").exists(), proc, "held")
    orphan = int((hooks / "at-step-1-1").read_text())
    proc.kill()  # the sweep only: its run, held at step 1, lives on
    proc.communicate(timeout=WAIT_S)
    printed = again(argv, capsys, code=1)
    first = out / "d8-constant-s0"
    assert f"d8-constant-s0: running in another process (pid {orphan}): left to it" in printed
    assert "still running in other processes: d8-constant-s0" in printed
    assert sweep.run_state(str(out / "d8-linear-p0.5-s0")) == "done" and commands_in_log(first) == 1
    (hooks / "go-step-1-1").touch()
    wait_for(lambda: runs.is_finished(str(first)), None, "the left run finished")
    wait_for(lambda: sweep.run_state(str(first)) == "done" and not (first / CLAIM_FILE).exists(), None, "released")
    assert "(2 finished before, 0 to run)" in again(argv, capsys)


def test_a_run_killed_as_it_finished_gets_its_summary_without_training_again(fake_root, tmp_path, capsys):
    out = tmp_path / "grid"
    argv = tiny(fake_root, out, "--rule", "linear", p_last=["0.5"])  # one point
    again(argv, capsys)
    run_dir = out / "d8-linear-p0.5-s0"
    summary = json.load(open(run_dir / "summary.json"))
    (run_dir / "summary.json").unlink()  # killed after last.npz, before summary.json: the last row is in
    lines = (run_dir / "metrics.csv").read_text().splitlines()  # last.npz, metrics.csv may lack it
    (run_dir / "metrics.csv").write_text("\n".join(lines[:-1]) + "\n")
    assert sweep.run_state(str(run_dir)) == "trained"
    printed = again(argv, capsys)
    assert "d8-linear-p0.5-s0: trained before; its summary written now from last.npz" in printed
    assert json.load(open(run_dir / "summary.json")) == summary and commands_in_log(run_dir) == 1
    assert [int(r["epoch"]) for r in csv.DictReader(open(run_dir / "metrics.csv"))] == [1, 2]


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EACCES])
def test_a_log_that_cannot_be_written_stops_the_starts_in_one_line(error, fake_root, tmp_path, capsys, monkeypatch):
    """The second run's log header meets a full disk (or a read-only folder): that run is not started, no
    other starts, no traceback; the same command later finishes the grid, the first point once."""
    out = tmp_path / "grid"
    argv = tiny(fake_root, out, "--rule", "linear")
    real, calls = launch.open_log, []

    def failing(path, args):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(error, os.strerror(error), path)
        return real(path, args)
    monkeypatch.setattr(launch, "open_log", failing)
    printed = again(argv, capsys, code=1)
    said = "no space left on the device" if error == errno.ENOSPC else "Permission denied"
    assert f"d8-linear-p0.5-s0: not started: cannot write {out / 'd8-linear-p0.5-s0' / 'train.log'}: {said}" \
        in printed and f"sweep stopped: cannot write" in printed
    assert states(out)["d8-constant-s0"] == "done" and states(out)["d8-linear-p0.5-s0"] == "new"
    monkeypatch.setattr(launch, "open_log", real)
    printed = again(argv, capsys)
    assert "(1 finished before, 1 to run)" in printed and commands_in_log(out / "d8-constant-s0") == 1


def one_error(capsys):
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_a_sweep_folder_that_cannot_be_written_is_one_line(fake_root, tmp_path, capsys, monkeypatch):
    out = tmp_path / "grid"
    argv = tiny(fake_root, out, "--rule", "linear")
    def read_only(folder):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(sweep, "claim", read_only)
    assert sweep.main(argv) == 1
    assert f"cannot write to the sweep folder {out}: Permission denied" in one_error(capsys)
    monkeypatch.undo()
    monkeypatch.setattr(runs, "free_bytes", lambda folder: 0)
    assert sweep.main(argv) == 1
    assert "the device is full" in one_error(capsys)
    assert not any(p.name.endswith(".log") for p in tmp_path.rglob("*"))


def test_a_second_sweep_on_the_folder_is_refused(fake_root, tmp_path, capsys):
    out = tmp_path / "grid"
    out.mkdir()
    with claim(out):  # another sweep holds it (here: this process; a second claim is refused all the same)
        assert sweep.main(tiny(fake_root, out, "--rule", "linear")) == 1
    line = one_error(capsys)
    assert f"{out} is in use by another minisd process (pid {os.getpid()})" in line and "another sweep" in line
    assert os.listdir(out) == []


def test_figure_and_script_that_cannot_be_written_are_one_line(fake_root, tmp_path, capsys, monkeypatch):
    import matplotlib.figure
    out = tmp_path / "grid"
    again(tiny(fake_root, out, "--rule", "linear"), capsys)

    def full(self, path, *a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    assert sweep.main(["--plot", str(out)]) == 1
    assert f"cannot write {out / 'fig8.png'}: no space left on the device" in one_error(capsys)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert sweep.main(tiny(fake_root, out, "--rule", "linear", "--slurm", str(blocker / "s.sh"))) == 1
    assert f"cannot write {blocker / 's.sh'}" in one_error(capsys)


def test_status_lines_that_cannot_be_written_do_not_stop_the_sweep(fake_root, tmp_path, capsys, monkeypatch):
    import builtins
    real = builtins.print

    def stdout_full(*args, **kwargs):
        if kwargs.get("file") in (None, sys.stdout):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)
    monkeypatch.setattr(builtins, "print", stdout_full)
    out = tmp_path / "grid"
    assert sweep.main(tiny(fake_root, out, "--rule", "linear")) == 0
    assert {sweep.run_state(str(out / n)) for n in ("d8-constant-s0", "d8-linear-p0.5-s0")} == {"done"}


def test_ctrl_c_before_any_run_started_is_one_line(fake_root, tmp_path, capsys, monkeypatch):
    def interrupted(*a, **k):
        raise KeyboardInterrupt
    monkeypatch.setattr(sweep, "plan", interrupted)
    assert sweep.main(tiny(fake_root, tmp_path / "grid", "--rule", "linear")) == 130
    assert "interrupted before any run started" in capsys.readouterr().err
    assert not (tmp_path / "grid" / CLAIM_FILE).exists()
