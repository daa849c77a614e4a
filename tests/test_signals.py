"""Ctrl-C, SIGTERM and kill -9 sent to a real training process (``python -m minisd.train``).

Nothing here sleeps and hopes: ``MINISD_TEST_HOOKS`` (``minisd.tools.signals.test_hook``)
makes the run stop at a chosen point - a step boundary, inside a checkpoint
save, while the data loads - and wait there until the test has sent its
signals. Every interrupted run is then resumed and must end bit-exactly where
an uninterrupted run ends. Timeouts are generous (a loaded 2-core machine).
"""
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from processes import finish, start  # tests/support/processes.py

from minisd.tools.checkpoint import TEMP_PREFIX, load_checkpoint
from minisd.data.fake import write_fake_cifar10

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 180  # for a process to reach a point, or to finish


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_per_batch=20, seed=0, n_test=20)  # 100 training images: 6 steps of 16
    return root


def args_for(root, out, epochs=2):
    return ["--data-dir", str(root), "--depth", "8", "--epochs", str(epochs), "--batch-size", "16",
            "--valid-size", "0", "--device", "cpu", "--seed", "1", "--out", str(out), "--no-progress"]




def run(args):
    code, out, err = finish(start(args))
    assert code == 0, err
    return out


def pause_at(hooks, point, mode="wait"):
    hooks.mkdir(exist_ok=True)
    (hooks / f"pause-{point}").write_text(mode)


def wait_until_at(hooks, point, proc):
    deadline = time.monotonic() + WAIT_S
    while not (hooks / f"at-{point}").exists():
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {point}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"the run did not reach {point}"
        time.sleep(0.01)


def release(hooks, point):
    (hooks / f"go-{point}").touch()


def model_state(path):
    arrays, meta = load_checkpoint(path)
    return {k: v for k, v in arrays.items() if k.startswith(("model/", "optim/"))}, meta


def assert_same_run(a, b):
    x, meta_x = model_state(a)
    y, meta_y = model_state(b)
    assert x.keys() == y.keys()
    for k in x:
        np.testing.assert_array_equal(x[k], y[k], err_msg=k)
    assert meta_x["rng"] == meta_y["rng"] and meta_x["epoch"] == meta_y["epoch"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "epoch_seconds"} for r in rows]  # noqa: E731
    assert strip(meta_x["metrics"]) == strip(meta_y["metrics"])


def temp_files(folder):
    return [n for n in os.listdir(folder) if n.startswith(TEMP_PREFIX)]


@pytest.fixture(scope="module")
def straight(fake_root, tmp_path_factory):
    """last.npz of the run without interruptions (2 epochs)."""
    out = tmp_path_factory.mktemp("straight") / "run"
    run(args_for(fake_root, out))
    return out / "last.npz"


def interrupt_and_resume(fake_root, tmp_path, point, signals, between=0.0, release_first=False):
    """Run, send ``signals`` once the run is at ``point``, let it go on; then resume. Returns
    (exit status, stdout, stderr, the checkpoint's meta at the interruption, the run folder)."""
    out, hooks = tmp_path / "run", tmp_path / "hooks"
    pause_at(hooks, point)
    proc = start(args_for(fake_root, out), hooks)
    wait_until_at(hooks, point, proc)
    if release_first:
        release(hooks, point)
    for i, s in enumerate(signals):
        if i and between:
            time.sleep(between)
        proc.send_signal(s)
    release(hooks, point)
    code, stdout, stderr = finish(proc)
    _, meta = model_state(out / "last.npz")
    assert "Traceback" not in stderr, stderr
    assert temp_files(out) == []
    resumed = run(["--resume", str(out / "last.npz")])
    assert "resumed from" in resumed
    return code, stdout, stderr, meta, out


def test_two_ctrl_c_in_quick_succession_then_a_bit_exact_resume(fake_root, tmp_path, straight):
    code, stdout, stderr, meta, out = interrupt_and_resume(
        fake_root, tmp_path, "step-1-3", [signal.SIGINT, signal.SIGINT])
    assert code == 130
    assert "interrupted (Ctrl-C)" in stdout and f"--resume {out / 'last.npz'}" in stdout
    assert "saving a checkpoint at the end of this step" in stderr
    assert (meta["epoch"], meta["step_in_epoch"]) == (0, 3)  # the step boundary where the signals came
    assert_same_run(out / "last.npz", straight)


def test_two_ctrl_c_20_ms_apart_while_steps_run(fake_root, tmp_path, straight):
    """The issue's case: wherever the two signals land inside a step, the checkpoint is a step boundary."""
    code, stdout, _, meta, out = interrupt_and_resume(
        fake_root, tmp_path, "step-1-1", [signal.SIGINT, signal.SIGINT], between=0.02, release_first=True)
    assert code == 130 and "interrupted (Ctrl-C)" in stdout
    assert (meta["epoch"], meta["step_in_epoch"]) < (2, 0)
    assert_same_run(out / "last.npz", straight)


def test_sigterm_saves_at_the_step_boundary_and_says_how_to_resume(fake_root, tmp_path, straight):
    code, stdout, _, meta, out = interrupt_and_resume(
        fake_root, tmp_path, "step-2-2", [signal.SIGTERM, signal.SIGTERM])
    assert code == 143
    assert "interrupted (SIGTERM)" in stdout and f"--resume {out / 'last.npz'}" in stdout
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 2)
    assert_same_run(out / "last.npz", straight)


def test_signals_during_a_save_wait_until_it_is_written(fake_root, tmp_path, straight):
    """Ctrl-C, SIGTERM, Ctrl-C while last.npz is being written (end of epoch 1): the save completes."""
    code, stdout, _, meta, out = interrupt_and_resume(
        fake_root, tmp_path, "save-last.npz", [signal.SIGINT, signal.SIGTERM, signal.SIGINT])
    assert code == 130 and "at the end of epoch 1" in stdout
    assert (meta["epoch"], meta["step_in_epoch"]) == (1, 0)
    assert_same_run(out / "last.npz", straight)


def test_kill_9_during_a_save_leaves_no_orphan_once_resumed(fake_root, tmp_path, straight):
    out, hooks = tmp_path / "run", tmp_path / "hooks"
    run(args_for(fake_root, out, epochs=1))
    after_epoch_1 = (out / "last.npz").read_bytes()
    pause_at(hooks, "save-last.npz")
    proc = start(["--resume", str(out / "last.npz"), "--epochs", "2"], hooks)
    wait_until_at(hooks, "save-last.npz", proc)  # the new checkpoint is written, not yet renamed
    proc.kill()
    proc.communicate(timeout=WAIT_S)
    assert proc.returncode == -signal.SIGKILL
    (orphan,) = temp_files(out)
    assert orphan.endswith("last.npz") and (out / orphan).stat().st_size > 0
    assert (out / "last.npz").read_bytes() == after_epoch_1  # the previous checkpoint, intact
    stdout = run(["--resume", str(out / "last.npz"), "--epochs", "2"])
    assert "removed 1 unfinished temporary file" in stdout
    assert temp_files(out) == [] and sorted(n for n in os.listdir(out) if n.startswith(".")) == []
    assert_same_run(out / "last.npz", straight)


def test_a_signal_before_training_starts_writes_nothing(fake_root, tmp_path):
    out, hooks = tmp_path / "run", tmp_path / "hooks"
    pause_at(hooks, "data")
    proc = start(args_for(fake_root, out), hooks)
    wait_until_at(hooks, "data", proc)
    proc.send_signal(signal.SIGTERM)
    code, stdout, stderr = finish(proc)
    assert code == 143 and not out.exists()
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert lines == ["interrupted (SIGTERM) before training started: nothing was written"], stderr
