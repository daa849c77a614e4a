"""CPU speed helpers: split a batch into chunks run on threads, reuse scratch buffers.

Why threads in Python? NumPy releases the GIL inside its copies and matrix
products, so two threads working on two halves of a batch really run at
once. One BLAS thread per Python thread with the batch split across
threads beats one Python thread with multi-threaded BLAS: small per-chunk products parallelise badly inside BLAS, while whole
chunks (unfold + product + fold) parallelise perfectly across threads.
So when minisd runs more than one thread it asks BLAS for one thread each
(through threadpoolctl): :func:`set_num_threads` is the one switch.

Why scratch buffers? A fresh multi-megabyte NumPy array is fresh memory from
the operating system, and touching it the first time page-faults. The im2col
columns of a chunk are needed only for a moment, so each thread keeps one
buffer per shape and reuses it. For the activations kept for the backward
pass, :func:`_keep_freed_memory` asks the C allocator (glibc) to reuse freed
blocks up to 32 MB instead of returning them to the system after every step
(the gain is in benchmarks/RESULTS.md); a little like PyTorch's caching
allocator, with no cache of our own.

On the GPU (CuPy) none of this applies: chunks are the whole batch and CuPy's
memory pool already reuses allocations.
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_num_threads = None  # decided on first use: min(os.cpu_count(), 8)
_pool = None
_blas_limit = None
_local = threading.local()


def get_num_threads() -> int:
    global _num_threads
    if _num_threads is None:
        env = os.environ.get("MINISD_NUM_THREADS")
        _num_threads = int(env) if env else max(1, min(os.cpu_count() or 1, 8))
    return _num_threads


def set_num_threads(n: int) -> None:
    """Use ``n`` threads for minisd's batch-parallel CPU kernels (1: no threads).

    BLAS is limited to one thread per caller, for the whole process, once minisd runs.
    """
    global _num_threads, _pool
    if n < 1:
        raise ValueError(f"set_num_threads: need n >= 1, got {n}")
    if _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _num_threads = int(n)


def _tune_cpu_once():
    """Once per process, when minisd's CPU kernels first run: keep freed memory (see
    :func:`_keep_freed_memory`) and give BLAS one thread per minisd thread.

    The BLAS limit holds whatever the thread count: with minisd on 1 thread, a multi-threaded
    BLAS that busy-waits makes every other process on the machine (and this
    one) crawl when cores are shared, which is worse than one BLAS thread.
    """
    global _blas_limit
    if _blas_limit is None:
        _keep_freed_memory()
        try:
            from threadpoolctl import threadpool_limits
            _blas_limit = threadpool_limits(limits=1, user_api="blas")
        except ImportError:  # still correct, only slower when cores are shared
            _blas_limit = False


def _keep_freed_memory():
    """glibc only: serve arrays up to 32 MB from the heap, and keep freed heap memory.

    By default glibc maps each large array straight from the operating system
    and unmaps it when freed, so every training step page-faults its way
    through hundreds of megabytes of fresh memory. Peak memory stays the same;
    freed blocks are reused by the next step rather than handed back.
    Set MINISD_MALLOC=default to leave the allocator alone; elsewhere than
    glibc this does nothing.
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
    write only to its own slice ``[lo:hi]`` of any shared output.
    """
    threaded = xp is np and get_num_threads() > 1
    if xp is np:
        _tune_cpu_once()
    bounds = chunk_bounds(n, chunk, get_num_threads() if threaded else 1)
    if not threaded or len(bounds) == 1:
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
