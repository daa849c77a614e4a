"""A training run started as a user starts it (``python -m minisd.train``), for the tests of
signals and folder claims: this checkout's minisd, one thread, test hooks only when asked."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WAIT_S = 180  # for a process to reach a point, or to finish, on a loaded 2-core machine


def start(args, hooks=None):
    """``python -m minisd.train ARGS`` in the background; ``hooks``: the MINISD_TEST_HOOKS folder."""
    env = dict(os.environ, MINISD_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("MINISD_TEST_HOOKS", None)
    if hooks is not None:
        env["MINISD_TEST_HOOKS"] = str(hooks)
    return subprocess.Popen([sys.executable, "-m", "minisd.train", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(proc):
    """``(exit status, stdout, stderr)`` once ``proc`` ends."""
    out, err = proc.communicate(timeout=WAIT_S)
    return proc.returncode, out, err
