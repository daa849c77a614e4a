"""The CPU speed appendix (minisd/fast/cpu.py) computes what the readable code (minisd/functional.py) does.

Every public function of ``fast_cpu`` is checked against its readable twin, in float64 and
float32, on one and on two threads, for the phase-aligned shapes it speeds up and for other
shapes (which it hands to the readable code).
"""
import inspect

import numpy as np
import pytest

from minisd import functional
from minisd.fast import cpu as fast_cpu, threads as parallel
import float32_bounds
from gradcheck_utils import randn


CONV_SHAPES = [  # (C, F, k, stride, padding, N, H, W)
    (4, 3, 3, 1, 1, 37, 4, 6),    # aligned, stride 1, F <= C: one unfold of dout
    (3, 4, 3, 1, 1, 9, 6, 5),     # aligned, stride 1, F > C (like the first layer)
    (3, 4, 3, 2, 1, 9, 6, 4),     # aligned, the ResNet's downsampling conv
    (2, 3, 1, 2, 0, 5, 4, 6),     # aligned 1x1 stride 2: odd pixels feed nothing
    (2, 2, 5, 1, 2, 3, 4, 5),     # aligned 5x5 same
    (3, 4, 3, 2, 1, 5, 7, 5),     # NOT aligned (odd sizes): the readable code runs
    (2, 3, 3, 1, 0, 4, 5, 5),     # NOT aligned (no padding)
]


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request):
    before = parallel.get_num_threads()
    parallel.set_num_threads(request.param)
    yield request.param
    parallel.set_num_threads(before)


_close = float32_bounds.assert_twins_equal


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("C,Fo,k,s,p,N,H,W", CONV_SHAPES)
@pytest.mark.parametrize("chunk", [None, 2])
def test_conv2d_equals_readable(C, Fo, k, s, p, N, H, W, chunk, dtype, threads, rng):
    x, w, b = randn(rng, (N, C, H, W), dtype=dtype), randn(rng, (Fo, C, k, k), dtype=dtype), randn(rng, (Fo,), dtype=dtype)
    fast, fcache = fast_cpu.conv2d_forward(x, w, b, s, p, chunk=chunk)
    ref, rcache = functional.conv2d_forward(x, w, b, s, p)
    dout = randn(rng, ref.shape, dtype=dtype)
    bounds = float32_bounds.conv2d(x, w, b, s, p, dout)
    _close(fast, ref, dtype, bounds, "out")
    for a, c, what in zip(fast_cpu.conv2d_backward(dout, fcache, chunk=chunk), functional.conv2d_backward(dout, rcache),
                          ("dx", "dweight", "dbias")):
        _close(a, c, dtype, bounds, what)


@pytest.mark.parametrize("k,s,p,H,W", [(3, 1, 1, 5, 6), (3, 2, 1, 6, 4), (1, 2, 0, 4, 6), (5, 1, 2, 4, 5), (1, 1, 0, 3, 3)])
def test_fast_unfold_and_fold_equal_readable(k, s, p, H, W, rng):
    """im2col_fast / col2im_fast (long copies between zero margins) == functional.im2col / col2im."""
    x = randn(rng, (3, 2, H, W))
    assert fast_cpu._phase_aligned(x.shape, k, s, p)
    np.testing.assert_array_equal(fast_cpu.im2col_fast(x, k, s, p, tag="test"), functional.im2col(x, k, s, p))
    cols = randn(rng, functional.im2col(x, k, s, p).shape)
    expected = functional.col2im(cols, x.shape, k, s, p)
    np.testing.assert_allclose(fast_cpu.col2im_fast(cols.copy(), x.shape, k, s, p, tag="test"), expected,
                               rtol=1e-12, atol=1e-12)


def test_phase_alignment_decides_the_path():
    assert fast_cpu._phase_aligned((2, 3, 32, 32), 3, 1, 1) and fast_cpu._phase_aligned((2, 3, 32, 32), 3, 2, 1)
    assert not fast_cpu._phase_aligned((2, 3, 7, 5), 3, 2, 1) and not fast_cpu._phase_aligned((2, 3, 5, 5), 3, 1, 0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(37, 3, 5, 4), (5, 4, 3, 1), (128, 2, 8, 8)])
def test_batchnorm_train_equals_readable(shape, dtype, threads, rng):
    x = randn(rng, shape, dtype=dtype) * 2 + 1
    C = shape[1]
    w, b = randn(rng, (C,), dtype=dtype), randn(rng, (C,), dtype=dtype)
    fast, fcache = fast_cpu.batchnorm_train_forward(x, w, b, 1e-5)
    ref, rcache = functional.batchnorm_train_forward(x, w, b, 1e-5)
    dout = randn(rng, shape, dtype=dtype)
    bounds = float32_bounds.batchnorm_train(x, w, b, 1e-5, dout)
    _close(fast, ref, dtype, bounds, "out")
    _close(fcache.mean, rcache.mean, dtype, bounds, "mean")
    _close(fcache.var, rcache.var, dtype, bounds, "var")
    for a, c, what in zip(fast_cpu.batchnorm_train_backward(dout, fcache),
                          functional.batchnorm_train_backward(dout, rcache), ("dx", "dweight", "dbias")):
        _close(a, c, dtype, bounds, what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(37, 3, 5, 4), (6, 10)])
def test_relu_equals_readable(shape, dtype, threads, rng):
    x, dout = randn(rng, shape, dtype=dtype), randn(rng, shape, dtype=dtype)
    fast, fcache = fast_cpu.relu_forward(x)
    ref, rcache = functional.relu_forward(x)
    np.testing.assert_array_equal(fast, ref)
    np.testing.assert_array_equal(fast_cpu.relu_backward(dout, fcache), functional.relu_backward(dout, rcache))


def test_every_fast_function_names_its_readable_twin():
    """fast_cpu has functional's layer functions; each is functional's own or says which one it equals."""
    layer_functions = [n for n, f in inspect.getmembers(functional, inspect.isfunction)
                       if n.endswith(("_forward", "_backward", "_running_average")) and "naive" not in n]
    for name in layer_functions:
        fast = getattr(fast_cpu, name)  # every layer function exists in both modules
        if fast is getattr(functional, name):
            continue
        assert f"minisd.functional.{name}`" in (fast.__doc__ or ""), f"fast_cpu.{name} does not name its twin"
    own = [n for n, f in inspect.getmembers(fast_cpu, inspect.isfunction)
           if not n.startswith("_") and f.__module__ == "minisd.fast.cpu"]
    assert {"conv2d_forward", "conv2d_backward", "batchnorm_train_forward", "relu_forward"} <= set(own)
    for name in own:
        twin = name.replace("_fast", "")
        assert hasattr(functional, twin), f"fast_cpu.{name} has no readable twin functional.{twin}"
        assert f"minisd.functional.{twin}`" in fast_cpu.__dict__[name].__doc__


def test_functional_holds_no_speed_code():
    """The readable module imports no threads, scratch buffers, ctypes or fast paths."""
    source = inspect.getsource(functional)
    for word in ("parallel", "scratch", "for_each_chunk", "thread", "ctypes", "fast_cpu", "chunk"):
        assert word not in source.split('"""', 2)[2], f"functional.py mentions {word!r} outside its docstring"


@pytest.mark.parametrize("n,chunk,threads_", [(128, 28, 2), (128, 7, 2), (37, 4, 3), (3, 8, 2), (5, 1, 2),
                                              (128, 28, 1), (1, 4, 8)])
def test_chunk_bounds_cover_the_batch_evenly(n, chunk, threads_):
    bounds = parallel.chunk_bounds(n, chunk, threads_)
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(hi == lo2 for (_, hi), (lo2, _) in zip(bounds, bounds[1:]))  # contiguous, in order
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) <= chunk and max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    if len(bounds) < n:  # a multiple of the thread count unless there are fewer images than that
        assert len(bounds) % threads_ == 0
