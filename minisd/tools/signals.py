"""Ctrl-C and SIGTERM while a run trains: nothing is lost.

Until the run can start (flags checked, data loaded) a signal stops at once: nothing has
been written. From then on a signal only asks the run to stop: the loop saves last.npz at
the next step boundary and the command exits with 128 + the signal number. Also here: the
test hook that lets the tests stop a run at an exact step or save (``MINISD_TEST_HOOKS``).
"""
from __future__ import annotations

import os
import signal
import sys
import threading
import time

SIGNAL_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # SIGTERM exists on Windows too (sent by nothing there)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM before training started (nothing written yet); ``signum`` says which."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


class Signals:
    """SIGINT (Ctrl-C) and SIGTERM (kill, job schedulers, containers) while a run is set up and trained.

    Until :meth:`defer_to` is called - while flags are checked and the data loads - a signal
    stops at once (:class:`Interrupted`). From then on a signal sets ``run.stop_requested``
    (and ``run.stop_signal``): the loop saves last.npz at the next step boundary (or abandons
    an epoch's evaluation). Further signals are recorded the same way, so none can cut a step,
    a save or the exit short. On leaving, the earlier handlers come back - or, with
    ``ignore_further`` (the command is about to exit after a signal), further signals stay ignored.
    """

    def __init__(self):
        self.run, self.previous, self.ignore_further, self.raised = None, {}, False, False

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for s in STOP_SIGNALS:
                self.previous[s] = signal.signal(s, self.handle)
        return self

    def defer_to(self, run):
        self.run = run

    def handle(self, signum, frame):
        run = self.run
        if run is None:
            if not self.raised:  # once: a second signal must not interrupt the first one's way out
                self.raised = True
                raise Interrupted(signum)
            return
        if run.stop_requested:
            return
        run.stop_requested, run.stop_signal = True, signum
        # os.write, not print: a handler may run in the middle of another print
        msg = f"\n{SIGNAL_NAMES.get(signum, signum)}: saving a checkpoint at the end of this step, then stopping\n"
        try:
            os.write(sys.stderr.fileno(), msg.encode())
        except (OSError, ValueError, AttributeError):
            pass

    def __exit__(self, *exc):
        for s, h in self.previous.items():
            signal.signal(s, signal.SIG_IGN if self.ignore_further else h)
        return False


def test_hook(point):
    """For tests only: with $MINISD_TEST_HOOKS naming a folder, stop at ``point`` when asked.

    A file ``pause-<point>`` in that folder asks for it (once): the run creates
    ``at-<point>`` there and, when the pause file says ``wait``, waits until
    ``go-<point>`` appears. Points: ``folder`` (the run folder checked, not yet claimed),
    ``data`` (before the data loads), ``step-<epoch>-<step>`` (a step boundary) and
    ``save-<name>`` (a checkpoint written, not yet renamed into place).
    """
    folder = os.environ.get("MINISD_TEST_HOOKS")
    if not folder:
        return
    trigger = os.path.join(folder, f"pause-{point}")
    try:
        with open(trigger) as f:
            mode = f.read().strip()
        os.remove(trigger)
    except OSError:
        return
    with open(os.path.join(folder, f"at-{point}"), "w") as f:
        f.write(str(os.getpid()))
    deadline = time.monotonic() + 600
    while mode == "wait" and not os.path.exists(os.path.join(folder, f"go-{point}")):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)


test_hook.__test__ = False  # not a pytest test, whatever its name
