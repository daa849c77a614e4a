"""One minisd process at a time in a folder: a run folder, a sweep folder, a data folder while it downloads.

:func:`claim` takes a folder for this process until :meth:`Claim.release` (or the end of a
``with`` block). Another minisd process that asks for the same folder meanwhile is refused at
once (:class:`FolderBusy`, one line naming the holder's pid) or, with ``wait=True``, waits its
turn. Asking and taking are one step, so two processes started at the same instant cannot
both get the folder, however their steps interleave.

How: the folder holds a file ``.minisd-claim`` (:data:`CLAIM_FILE`) with the holder's pid,
and the holder keeps an exclusive ``flock`` on it. The kernel drops that lock when the process
ends in any way, ``kill -9`` included, so a claim never outlives its process: the file a
killed process leaves behind is unlocked, and the next claim takes it over (and reports the
dead pid, for one line). The pid in the file is for messages and for :func:`holder`; the lock
decides. Where ``fcntl`` is missing (Windows) the file is created with ``O_EXCL`` instead, and
one whose pid no longer runs counts as left behind.

Why this module sits here: the run (:mod:`minisd.tools.runs`), the sweep
(:mod:`minisd.tools.sweep`) and the download (:mod:`minisd.data.files`) all use it, so it
imports nothing from minisd: any of them may import it without a cycle, and none imports back
up the tree to reach it. It lives in ``minisd/tools/`` because the top of ``minisd/`` holds
only the readable core and the loop (tests/test_imports.py); ``data -> tools.claim`` is an
import of a leaf, never of the tools that use data.
"""
from __future__ import annotations

import os
import time

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

CLAIM_FILE = ".minisd-claim"


class FolderBusy(Exception):
    """Another live process holds the folder; ``pid``: its pid (None when it could not be read)."""

    def __init__(self, folder, pid):
        self.folder, self.pid = folder, pid
        holder_ = f" (pid {pid})" if pid else ""
        super().__init__(f"{folder} is in use by another minisd process{holder_}")


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` may still run (True when in doubt: its files are then left alone)."""
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would terminate the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's live process (or we cannot tell): leave its file alone
    return True


def _read_pid(path):
    """The pid written in a claim file, or None (no file, empty, not a number)."""
    try:
        with open(path) as f:
            return int(f.read().strip() or 0) or None
    except (OSError, ValueError):
        return None


def _holder_pid(path):
    """The pid in a claim file held by another process: it writes it just after it locks, so a
    moment's wait may be needed (None if it is still not there)."""
    for _ in range(20):
        pid = _read_pid(path)
        if pid is not None:
            return pid
        time.sleep(0.01)
    return None


class Claim:
    """``folder``, held by this process; ``took_over``: the pid of a process that ended holding
    it (its claim file was left behind), else None."""

    def __init__(self, folder, fd, took_over):
        self.folder, self.path, self.fd, self.took_over = folder, os.path.join(folder, CLAIM_FILE), fd, took_over

    def release(self):
        """Give the folder back: the file goes first, while it is still locked, so that a process
        that opened it meanwhile finds it gone (it then starts again on a new file)."""
        if self.fd is None:
            return
        try:
            os.remove(self.path)
        except OSError:
            pass
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


def claim(folder, wait=False, on_wait=None) -> Claim:
    """Take ``folder`` (it must exist) for this process; returns a :class:`Claim`.

    Raises :class:`FolderBusy` while another process holds it, or, with ``wait``, first calls
    ``on_wait(pid)`` and waits until it is released. ``OSError`` when the claim file cannot be
    written (a read-only folder, a full disk); ``FileNotFoundError`` when the folder is gone.
    """
    path = os.path.join(folder, CLAIM_FILE)
    while True:
        if fcntl is None:  # pragma: no cover - Windows
            fd = _claim_without_locks(folder, path, wait, on_wait)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            if not _lock(fd, path, folder, wait, on_wait):
                continue
        try:
            before = os.read(fd, 32).decode(errors="replace").strip()
            os.lseek(fd, 0, os.SEEK_SET)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except BaseException:
            os.close(fd)
            raise
        previous = int(before) if before.isdigit() and int(before) != os.getpid() else None
        return Claim(folder, fd, previous)


def _lock(fd, path, folder, wait, on_wait):
    """Lock the open claim file ``fd``: True when it is ours, False when the file was replaced
    while we waited (open the new one). FolderBusy when held and not ``wait``."""
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise FolderBusy(folder, _holder_pid(path)) from None
            if on_wait is not None:
                on_wait(_holder_pid(path))
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:  # the holder removes the file before it unlocks: a lock on a removed file is no claim
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return True
        except FileNotFoundError:
            pass
    except BaseException:
        os.close(fd)
        raise
    os.close(fd)
    return False


def _claim_without_locks(folder, path, wait, on_wait):  # pragma: no cover - Windows
    """Where there is no ``flock``: create the file with O_EXCL; one of a dead pid is removed."""
    waited = False
    while True:
        try:
            return os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            pid = _read_pid(path)
            if pid is not None and not pid_alive(pid):
                os.remove(path)
                continue
            if not wait:
                raise FolderBusy(folder, pid) from None
            if on_wait is not None and not waited:
                on_wait(pid)
            waited = True
            time.sleep(0.5)


def holder(folder):
    """The pid of a live process that holds ``folder``, or None (free, or left by a process that
    ended). For reports (a sweep listing its points): a process that holds the folder keeps its
    lock, so the lock is only tried, and at once let go, when the pid in the file is alive."""
    path = os.path.join(folder, CLAIM_FILE)
    pid = _read_pid(path)
    if pid is None or pid == os.getpid() or not pid_alive(pid):
        return None
    if fcntl is None:  # pragma: no cover - Windows
        return pid
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None  # released meanwhile
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return None  # nobody holds it: that pid is another process by now
    except BlockingIOError:
        return pid
    finally:
        os.close(fd)
