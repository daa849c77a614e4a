"""CPU speed helpers: split a batch into chunks run on threads, reuse scratch buffers.

Why threads in Python? NumPy releases the GIL inside its copies and matrix
products, so two threads working on two halves of a batch really run at
once. One BLAS thread per Python thread with the batch split across
threads beats one Python thread with multi-threaded BLAS: small per-chunk products parallelise badly inside BLAS, while whole
chunks (unfold + product + fold) parallelise perfectly across threads.
So while minisd's kernels run it asks BLAS for one thread each (through
threadpoolctl); :func:`set_num_threads` is the one switch of minisd's own threads.

Why scratch buffers? A fresh multi-megabyte NumPy array is fresh memory from
the operating system, and touching it the first time page-faults. The im2col
columns of a chunk are needed only for a moment, so each thread keeps one
buffer per shape and reuses it. For the activations kept for the backward
pass, :func:`_keep_freed_memory` asks the C allocator (glibc) to reuse freed
blocks up to 32 MB instead of returning them to the system after every step
(the gain is in benchmarks/RESULTS.md); a little like PyTorch's caching
allocator, with no cache of our own.

A good guest: minisd often runs inside someone else's process (a notebook's
kernel), whose own NumPy work must keep its BLAS threads and its allocator. So
BLAS is limited only inside :func:`tuned` blocks - around each CPU kernel and
around a whole training step or evaluation - and restored when the outermost
ends; the allocator is tuned only by :func:`tune_process`, which a process
that is minisd's own may call (the lessons do when run as scripts).

On the GPU (CuPy) none of this applies: chunks are the whole batch and CuPy's
memory pool already reuses allocations.
"""
from __future__ import annotations

import contextlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_num_threads = None  # decided on first use: min(os.cpu_count(), 8)
_pool = None
_local = threading.local()


def get_num_threads() -> int:
    global _num_threads
    if _num_threads is None:
        env = os.environ.get("MINISD_NUM_THREADS")
        _num_threads = int(env) if env else max(1, min(os.cpu_count() or 1, 8))
    return _num_threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for minisd's batch-parallel CPU kernels (1: no threads).

    Whatever ``n``, BLAS runs on one thread per caller while minisd's kernels run (see :func:`tuned`).
    """
    global _num_threads, _pool
    if n < 1:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    if _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _num_threads = int(n)


# --- BLAS on one thread while minisd works; freed memory kept where minisd owns the process ---

_tuning_lock = threading.Lock()
_open_blocks = 0          # tuned() blocks open now, in any thread
_undo_blas = None         # gives BLAS back the thread count it had when the first block opened
_blas = None              # threadpoolctl's view of the loaded BLAS libraries, found once
_process_block = None     # tune_process's tuned() block, kept open (and referenced: a dropped one closes)


@contextlib.contextmanager
def tuned():
    """Inside this block BLAS runs on one thread; when the outermost block ends it gets back
    the thread count it had, so the caller's own NumPy work runs as it did before minisd.

    :func:`for_each_chunk` opens one around each CPU kernel and :mod:`minisd.step` around
    a whole training step or evaluation (one switch per step instead of one per kernel).
    Blocks nest and may be open in several threads at once: the first to open limits BLAS,
    the last to close restores it. Also a decorator: ``@tuned()``.

    Why one BLAS thread even when minisd itself runs on one: a multi-threaded BLAS busy-waits
    between products, and where cores are shared that makes every other process on the
    machine (and this one) crawl. The limit is per process: while a block is open, a NumPy
    product in another thread of this process gets one BLAS thread too.
    """
    global _open_blocks, _undo_blas
    with _tuning_lock:
        if _open_blocks == 0:
            _undo_blas = _one_blas_thread()
        _open_blocks += 1
    try:
        yield
    finally:
        with _tuning_lock:
            _open_blocks -= 1
            if _open_blocks == 0:
                _undo_blas()


def tune_process():
    """For a process that is minisd's own (a script, not a notebook's kernel): BLAS on one
    thread from now on, and glibc keeps freed memory (:func:`_keep_freed_memory`).

    Kept freed memory is what spares each training step its page faults; it holds for
    the whole process because the memory must survive from one step to the next, so minisd
    never does it uninvited: the lessons call this when run as scripts (lessons/_common.py),
    while in a notebook's kernel glibc keeps its defaults. Calling it again does nothing.
    ``MINISD_MALLOC=default`` leaves the allocator alone here too.
    """
    global _process_block
    if _process_block is None:
        _process_block = tuned()
        _process_block.__enter__()  # never closed
        _keep_freed_memory()


def _one_blas_thread():
    """Limit BLAS to one thread; returns the function that gives back the thread count it had."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas = ThreadpoolController()  # finds the loaded libraries: ~0.3 ms, so only once
        except ImportError:  # still correct, only slower when cores are shared
            _blas = False
    if not _blas:
        return lambda: None
    # Through the controller found once, limiting and restoring cost ~10 us (measured): small
    # beside a kernel, and a step opens one block for all its kernels.
    return _blas.limit(limits=1, user_api="blas").restore_original_limits


def _keep_freed_memory():
    """glibc only: serve arrays up to 32 MB from the heap, and keep freed heap memory.

    By default glibc maps each large array straight from the operating system
    and unmaps it when freed, so every training step page-faults its way
    through tens to hundreds of megabytes of fresh memory. Peak memory stays the same;
    freed blocks are reused by the next step rather than handed back, and stay with
    the process until it ends. Not undone after a step: the next step needs the memory
    kept (with glibc's defaults set back between steps, a ResNet-20 step at batch 128
    page-faulted through ~38 MB, as many as with no tuning at all). So only
    :func:`tune_process` calls it. Set MINISD_MALLOC=default to leave the allocator
    alone; elsewhere than glibc this does nothing.
    """
    if os.environ.get("MINISD_MALLOC") == "default":
        return
    try:
        import ctypes
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # no C library to ask (Windows) or no mallopt (macOS)
        return
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
    mallopt(M_MMAP_THRESHOLD, 32 << 20)  # glibc's maximum on 64-bit systems
    mallopt(M_TRIM_THRESHOLD, 1 << 30)


def _get_pool():
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=get_num_threads(), thread_name_prefix="minisd")
    return _pool


def chunk_bounds(n, chunk, threads=1):
    """Split ``range(n)`` into chunks of at most ``chunk``: a list of (lo, hi).

    With several threads the number of chunks is rounded up to a multiple of
    ``threads`` and the sizes made equal (to within one), so that no thread is
    left with an extra chunk while the others wait: 128 images in chunks of
    at most 28 become 6 chunks of 21-22, not 4 of 28 and one of 16 (3 chunks
    on one thread, 2 on the other). So the order of floating-point sums, and
    the last bits of a result, depend on the thread count: a run resumes bit
    for bit on the same number of threads, and agrees to rounding on another.
    """
    count = -(-n // chunk)
    if threads > 1:
        count = min(n, -(-count // threads) * threads)
    size, extra = divmod(n, count)  # the first ``extra`` chunks get one more
    bounds, lo = [], 0
    for i in range(count):
        hi = lo + size + (i < extra)
        bounds.append((lo, hi))
        lo = hi
    return bounds


def for_each_chunk(work, n, chunk, xp=np):
    """Call ``work(lo, hi)`` for consecutive chunks covering ``range(n)``; return the results.

    Chunks run on the thread pool when minisd uses several threads and the
    arrays are NumPy arrays; otherwise in order, in this thread. ``work`` must
    write only to its own slice ``[lo:hi]`` of any shared output. On NumPy,
    BLAS runs on one thread until the last chunk is done (:func:`tuned`).
    """
    if xp is not np:
        return [work(lo, hi) for lo, hi in chunk_bounds(n, chunk)]
    threads = get_num_threads()
    bounds = chunk_bounds(n, chunk, threads)
    with tuned():
        if threads == 1 or len(bounds) == 1:
            return [work(lo, hi) for lo, hi in bounds]
        pool = _get_pool()
        return [f.result() for f in [pool.submit(work, lo, hi) for lo, hi in bounds]]


def scratch(tag, shape, dtype, zero=False):
    """A per-thread reusable buffer of ``shape`` and ``dtype`` (NumPy only).

    The same (tag, shape, dtype) returns the same array to the same thread, so
    its contents are valid only until that thread asks again. ``zero=True``
    zero-fills it when it is first made (callers that keep a zero border rely on this).
    """
    buffers = getattr(_local, "buffers", None)
    if buffers is None:
        buffers = _local.buffers = {}
    key = (tag, tuple(shape), np.dtype(dtype).str)
    buf = buffers.get(key)
    if buf is None:
        buf = buffers[key] = (np.zeros if zero else np.empty)(shape, dtype=dtype)
    return buf
