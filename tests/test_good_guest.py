"""minisd is a good guest in someone else's process (a notebook's kernel): after its work, the
process's BLAS thread count and C allocator are as they were (minisd/fast/threads.py).

Each check runs in a fresh interpreter (``sys.executable``): the BLAS limit and the allocator's
settings belong to the whole process, and pytest's own process may have been tuned already
(the CuPy stand-in tunes it, as a process that is minisd's own may).
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("threadpoolctl")

# Runs in the child. The learner's own setting first: 3 BLAS threads (not the default, not 1),
# so "as before" cannot hold by accident.
PROBES = textwrap.dedent('''
    import ctypes, json, sys
    import numpy as np
    import threadpoolctl
    import minisd
    from minisd.data import Normalizer
    from minisd.fast import threads
    from minisd.step import evaluate, train_step

    threadpoolctl.threadpool_limits(limits=3, user_api="blas")

    def blas_threads():
        return sorted({i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"})

    class MallInfo2(ctypes.Structure):  # glibc >= 2.33
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

    try:
        mallinfo2 = ctypes.CDLL(None).mallinfo2
        mallinfo2.restype = MallInfo2
    except (OSError, AttributeError, TypeError):
        mallinfo2 = None

    def allocator():
        """(is a fresh 1 MiB array mapped straight from the system, is freed heap memory handed back)
        - both True under glibc's defaults, both False once minisd's tuning holds."""
        if mallinfo2 is None:
            return None
        mapped_before = mallinfo2().hblks
        big = np.ones(1 << 20, np.uint8)
        mapped = mallinfo2().hblks > mapped_before
        del big
        small = [np.ones(100_000, np.uint8) for _ in range(40)]  # 4 MB from the heap
        del small
        return [mapped, mallinfo2().keepcost < (1 << 20)]

    def state():
        return {"blas": blas_threads(), "allocator": allocator()}

    seen = {"before": state()}
    gen = np.random.default_rng(0)
    x = gen.integers(0, 256, size=(16, 3, 32, 32), dtype=np.uint8)
    y = gen.integers(0, 10, size=16)
    norm = Normalizer.fit(x)
    net = minisd.ResNet(8, 10, p_last=0.5, seed=0)  # tiny: 3 blocks
    opt = minisd.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        train_step(net, opt, x, y, norm, gen,
                   after_backward=lambda net: seen.setdefault("inside_step", blas_threads()))
    seen["after_steps"] = state()
    evaluate(net, x, y, norm)
    net.forward(norm.apply(x, dtype=np.float32))  # the layers called by hand: each kernel on its own
    seen["after_evaluate_and_forward"] = state()
    if sys.argv[1:] == ["tune_process"]:
        threads.tune_process()
        seen["after_tune_process"] = state()
    print(json.dumps(seen))
''')


def run_probes(*args):
    # glibc's thresholds fixed at their defaults (128 KiB) by the learner's environment: glibc
    # then does not raise them by itself as arrays are freed, so any change is minisd's.
    env = {**os.environ, "MINISD_MALLOC": "", "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072"}
    out = subprocess.run([sys.executable, "-c", PROBES, *args], capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_blas_threads_and_allocator_are_as_before_after_minisd_steps():
    seen = run_probes()
    assert seen["before"]["blas"] == [3]
    assert seen["inside_step"] == [1], "inside a step minisd's kernels run BLAS on one thread"
    assert seen["after_steps"] == seen["before"]
    assert seen["after_evaluate_and_forward"] == seen["before"]
    if seen["before"]["allocator"] is not None:  # glibc: the probe can see the tuning
        assert seen["before"]["allocator"] == [True, True], "glibc's defaults before minisd runs"


def test_tune_process_is_the_one_opt_in_and_the_probes_see_it():
    """The same probes see both tunings after the opt-in call: they can fail."""
    seen = run_probes("tune_process")
    assert seen["after_tune_process"]["blas"] == [1]
    if seen["before"]["allocator"] is not None:
        assert seen["after_tune_process"]["allocator"] == [False, False]
