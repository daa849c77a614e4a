"""One run per folder (issue 29, item 1): minisd.tools.claim, and two real ``python -m minisd.train``
processes started on one --out (or one checkpoint) at once: exactly one trains, the other is refused
with one line, whatever the timing. The forced orders use the test hooks (minisd.tools.signals.test_hook):
a run is held between its folder check and its claim, or while it holds the folder."""
import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from processes import finish, start  # tests/support/processes.py

from minisd.data import files as data_files
from minisd.data.fake import write_fake_cifar10
from minisd.tools import claim as claims
from minisd.tools.claim import CLAIM_FILE, FolderBusy, claim, holder

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="flock and POSIX signals")

REPO = Path(__file__).resolve().parents[1]
WAIT_S = 180  # a loaded 2-core machine
REFUSALS = ("is in use by another minisd process", "already holds a run", "was written by another run",
            "has already run")


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_fake_cifar10(root, n_per_batch=20, seed=0, n_test=20)  # 100 training images
    return root


def args_for(root, out, epochs=1):
    return ["--data-dir", str(root), "--depth", "8", "--epochs", str(epochs), "--batch-size", "16",
            "--limit-train", "32", "--valid-size", "0", "--eval-batch-size", "40", "--device", "cpu",
            "--seed", "1", "--out", str(out), "--no-progress"]




def hold(hooks, point):
    """Ask the process started with ``hooks`` to wait at ``point``."""
    hooks.mkdir(exist_ok=True)
    (hooks / f"pause-{point}").write_text("wait")


def wait_until_at(hooks, point, proc):
    deadline = time.monotonic() + WAIT_S
    while not (hooks / f"at-{point}").exists():
        assert proc.poll() is None, f"the run ended before {point}: {proc.communicate()}"
        assert time.monotonic() < deadline, f"the run did not reach {point}"
        time.sleep(0.01)


def release(hooks, point):
    (hooks / f"go-{point}").touch()


def epochs_in(out):
    return [int(r["epoch"]) for r in csv.DictReader(open(out / "metrics.csv"))]


def one_run_one_refusal(results):
    """Of two finished processes, exactly one trained (exit 0) and one was refused with one line."""
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 1], results
    (_, out, err), = [r for r in results if r[0] == 1]
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and any(r in lines[0] for r in REFUSALS), results
    assert "Traceback" not in err and "epoch 1/" not in out  # the refused one trained nothing
    assert "in use" not in lines[0] or "(pid " in lines[0]  # the holder named
    return lines[0]


# ---------------------------------------------------------------------------
# the claim itself
# ---------------------------------------------------------------------------


def test_a_claim_is_exclusive_and_released(tmp_path):
    held = claim(tmp_path)
    assert (tmp_path / CLAIM_FILE).read_text().strip() == str(os.getpid())
    with pytest.raises(FolderBusy) as e:
        claim(tmp_path)  # another open file, the same lock: refused, even in this process
    assert e.value.pid == os.getpid() and str(tmp_path) in str(e.value) and f"pid {os.getpid()}" in str(e.value)
    held.release()
    assert not (tmp_path / CLAIM_FILE).exists()
    with claim(tmp_path) as again:
        assert again.took_over is None  # released properly: nothing to take over
    assert os.listdir(tmp_path) == []


def dead_pid():
    return int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout)


def test_a_claim_left_by_a_dead_process_is_taken_over(tmp_path):
    gone = dead_pid()
    (tmp_path / CLAIM_FILE).write_text(f"{gone}\n")
    assert holder(tmp_path) is None
    with claim(tmp_path) as held:
        assert held.took_over == gone


def test_a_live_holder_is_seen_and_its_kill_9_frees_the_folder(tmp_path):
    code = ("import sys; from minisd.tools.claim import claim; c = claim(sys.argv[1]); print('held', flush=True); "
            "sys.stdin.read()")
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    try:
        assert proc.stdout.readline().strip() == "held"
        assert holder(tmp_path) == proc.pid
        with pytest.raises(FolderBusy) as e:
            claim(tmp_path)
        assert e.value.pid == proc.pid
    finally:
        proc.kill()
        proc.wait(timeout=WAIT_S)
    assert holder(tmp_path) is None  # the kernel dropped the lock with the process
    with claim(tmp_path) as held:
        assert held.took_over == proc.pid


def test_a_live_pid_that_holds_no_lock_is_no_holder(tmp_path):
    """A claim file whose pid is alive but holds no lock (that pid was reused) is not a holder."""
    (tmp_path / CLAIM_FILE).write_text(f"{os.getppid()}\n")
    assert claims.pid_alive(os.getppid()) and holder(tmp_path) is None


def test_the_download_holds_the_data_folder_and_waits_its_turn(tmp_path, monkeypatch):
    """A download into a folder another process is downloading into waits, then finds the files there."""
    data = tmp_path / "data"
    data.mkdir()
    code = ("import sys, time; from minisd.tools.claim import claim; c = claim(sys.argv[1]); "
            "print('held', flush=True); time.sleep(1.5)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(data)], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert proc.stdout.readline().strip() == "held"
    seen = []

    def fetch(res, folder, *args, **kwargs):  # the download proper: records who holds the folder meanwhile
        seen.append((proc.poll() is not None, (folder / CLAIM_FILE).read_text().strip()))
        return folder / res.filename
    monkeypatch.setattr(data_files, "_fetch_one", fetch)
    lines = []
    data_files.download("cifar10", data, log=lines.append)
    proc.wait(timeout=WAIT_S)
    assert any(f"pid {proc.pid} is downloading into {data}: waiting for it" in l for l in lines), lines
    assert seen == [(True, str(os.getpid()))]  # fetched after the other one ended, holding the folder
    assert not (data / CLAIM_FILE).exists()


# ---------------------------------------------------------------------------
# two runs on one folder
# ---------------------------------------------------------------------------


def test_a_run_held_between_its_check_and_its_claim_is_refused_once_the_other_has_run(fake_root, tmp_path):
    """The issue's race, forced: B has checked that the folder holds no run; A trains into it; B goes on."""
    out, hooks = tmp_path / "run", tmp_path / "hooks-b"
    hold(hooks, "folder")
    b = start(args_for(fake_root, out), hooks)
    wait_until_at(hooks, "folder", b)
    a = finish(start(args_for(fake_root, out)))
    assert a[0] == 0, a
    release(hooks, "folder")
    line = one_run_one_refusal([a, finish(b)])
    assert "already holds a run" in line
    assert epochs_in(out) == [1] and not (out / CLAIM_FILE).exists()


def test_a_second_run_while_the_first_holds_the_folder_is_refused(fake_root, tmp_path):
    out, hooks = tmp_path / "run", tmp_path / "hooks-a"
    hold(hooks, "data")  # A holds the folder (claimed, loading its data)
    a = start(args_for(fake_root, out), hooks)
    wait_until_at(hooks, "data", a)
    b = finish(start(args_for(fake_root, out)))
    release(hooks, "data")
    line = one_run_one_refusal([finish(a), b])
    assert f"is in use by another minisd process (pid {a.pid})" in line and "choose another --out" in line
    assert epochs_in(out) == [1]


def test_a_resume_held_until_another_resume_has_run_is_refused(fake_root, tmp_path):
    """Both read last.npz (epoch 1 of 2); A continues it to the end; B, held until then, must not train again."""
    out, hooks = tmp_path / "run", tmp_path / "hooks-b"
    assert finish(start(args_for(fake_root, out)))[0] == 0
    resume = ["--resume", str(out / "last.npz"), "--epochs", "2", "--no-progress"]
    hold(hooks, "folder")
    b = start(resume, hooks)
    wait_until_at(hooks, "folder", b)  # B has read the checkpoint
    a = finish(start(resume))
    release(hooks, "folder")
    line = one_run_one_refusal([a, finish(b)])
    assert "was written by another run after this one read it" in line
    assert epochs_in(out) == [1, 2]


def test_two_runs_started_together_give_one_run_and_one_refusal_five_times(fake_root, tmp_path):
    """Whatever the timing: two fresh runs on one folder, then two resumes of its checkpoint, five times."""
    for i in range(5):
        out = tmp_path / f"run{i}"
        pair = [start(args_for(fake_root, out)), start(args_for(fake_root, out))]
        one_run_one_refusal([finish(p) for p in pair])
        assert epochs_in(out) == [1]
        resume = ["--resume", str(out / "last.npz"), "--epochs", "2", "--no-progress"]
        pair = [start(resume), start(resume)]
        one_run_one_refusal([finish(p) for p in pair])
        assert epochs_in(out) == [1, 2]  # trained once: no epoch twice
        assert sorted(n for n in os.listdir(out) if n.startswith(".")) == []


def test_a_run_killed_with_9_leaves_a_claim_the_next_takes_over_in_one_line(fake_root, tmp_path):
    out, hooks = tmp_path / "run", tmp_path / "hooks"
    hold(hooks, "step-1-1")
    a = start(args_for(fake_root, out, epochs=2), hooks)
    wait_until_at(hooks, "step-1-1", a)
    a.send_signal(signal.SIGKILL)
    a.communicate(timeout=WAIT_S)
    assert (out / CLAIM_FILE).exists() and not (out / "last.npz").exists()
    code, stdout, err = finish(start(args_for(fake_root, out, epochs=2) + ["--overwrite"]))
    assert code == 0, err
    taken = [l for l in stdout.splitlines() if "took over" in l]
    assert taken == [f"took over {out} from pid {a.pid}, which ended without giving it back"]
    assert epochs_in(out) == [1, 2] and not (out / CLAIM_FILE).exists()
