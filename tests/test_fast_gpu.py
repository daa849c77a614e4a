"""The GPU speed appendix (minisd/fast/gpu.py) computes what the readable code (minisd/functional.py) does.

Every function of ``fast_gpu`` is checked against its readable twin on the GPU path: on the
CuPy stand-in (tests/support/cupy_standin.py: the fused kernels run their Python bodies there) and, on
a machine with a CUDA device, on real CuPy too (the compiled kernels). Float64 and float32;
the convolutions on the ResNet's shapes and on odd ones (strides, no padding, 1x1, 5x5, odd
sizes, more output than input channels, a bias). The kernel counts each function promises are
pinned on the stand-in.
"""
import inspect

import numpy as np
import pytest

import minisd
from minisd import backend, functional
from minisd.fast import gpu as fast_gpu
import float32_bounds
from conftest import REAL_GPU

pytestmark = pytest.mark.gpu


CONV_SHAPES = [  # (C, F, k, stride, padding, N, H, W)
    (4, 4, 3, 1, 1, 5, 6, 6),     # the ResNet's stage convolutions (stride 1, "same")
    (3, 4, 3, 1, 1, 3, 6, 5),     # more output than input channels (the first layer)
    (3, 4, 3, 2, 1, 4, 6, 4),     # the ResNet's downsampling convolution
    (3, 4, 3, 2, 1, 3, 7, 5),     # stride 2 on odd sizes: the last row and column feed nothing
    (2, 3, 1, 2, 0, 3, 4, 6),     # 1x1 stride 2: odd pixels feed nothing
    (2, 2, 5, 1, 2, 2, 4, 5),     # 5x5 "same"
    (2, 3, 3, 1, 0, 3, 5, 5),     # no padding ("valid")
    (2, 3, 3, 3, 2, 2, 8, 7),     # stride 3, padding 2
]


@pytest.fixture(params=["standin", "cuda"])
def gpu(request, monkeypatch):
    """The array module of the GPU path: the stand-in, and real CuPy where there is a CUDA device."""
    if request.param == "cuda":
        if not REAL_GPU:
            pytest.skip("no CUDA device (or MINISD_TEST_STANDIN set): the stand-in instance covers this")
        return backend.xp_for("gpu")
    import cupy_standin
    cupy_standin.install(monkeypatch)
    return cupy_standin


def randn(xp, rng, shape, dtype):
    return xp.asarray(rng.standard_normal(shape).astype(dtype))


close = float32_bounds.assert_twins_equal


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("C,Fo,k,s,p,N,H,W", CONV_SHAPES)
def test_conv2d_equals_readable(C, Fo, k, s, p, N, H, W, dtype, gpu, rng):
    x, w = randn(gpu, rng, (N, C, H, W), dtype), randn(gpu, rng, (Fo, C, k, k), dtype)
    b = randn(gpu, rng, (Fo,), dtype) if (C, Fo) == (3, 4) else None
    fast, fcache = fast_gpu.conv2d_forward(x, w, b, s, p)
    ref, rcache = functional.conv2d_forward(x, w, b, s, p)
    dout = randn(gpu, rng, ref.shape, dtype)
    bounds = float32_bounds.conv2d(x, w, b, s, p, dout)
    close(fast, ref, dtype, bounds, "out")
    got, want = fast_gpu.conv2d_backward(dout, fcache), functional.conv2d_backward(dout, rcache)
    for a, c, what in zip(got, want, ("dx", "dweight", "dbias")):
        if c is None:
            assert a is None, what
        else:
            close(a, c, dtype, bounds, what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("shape", [(6, 3, 5, 4), (5, 4, 3, 1), (16, 2, 8, 8)])
def test_batchnorm_train_equals_readable(shape, dtype, gpu, rng):
    x = randn(gpu, rng, shape, dtype) * 2 + 1
    C = shape[1]
    w, b = randn(gpu, rng, (C,), dtype), randn(gpu, rng, (C,), dtype)
    fast, fcache = fast_gpu.batchnorm_train_forward(x, w, b, 1e-5)
    ref, rcache = functional.batchnorm_train_forward(x, w, b, 1e-5)
    dout = randn(gpu, rng, shape, dtype)
    bounds = float32_bounds.batchnorm_train(x, w, b, 1e-5, dout)
    close(fast, ref, dtype, bounds, "out")
    close(fcache.mean, rcache.mean, dtype, bounds, "mean")
    close(fcache.var, rcache.var, dtype, bounds, "var")
    for a, c, what in zip(fast_gpu.batchnorm_train_backward(dout, fcache),
                          functional.batchnorm_train_backward(dout, rcache), ("dx", "dweight", "dbias")):
        close(a, c, dtype, bounds, what)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_batchnorm_takes_a_convolutions_strided_output(dtype, gpu, rng):
    """A convolution returns an (N, F, H, W) view of (F, H, W, N) memory: BN reads it as it is."""
    x = randn(gpu, rng, (4, 3, 6, 5), dtype).transpose(1, 2, 3, 0).copy().transpose(3, 0, 1, 2)
    assert not x.flags.c_contiguous
    w, b = randn(gpu, rng, (3,), dtype), randn(gpu, rng, (3,), dtype)
    fast, fcache = fast_gpu.batchnorm_train_forward(x, w, b, 1e-5)
    ref, rcache = functional.batchnorm_train_forward(x, w, b, 1e-5)
    dout = randn(gpu, rng, x.shape, dtype)
    bounds = float32_bounds.batchnorm_train(x, w, b, 1e-5, dout)
    close(fast, ref, dtype, bounds, "out")
    for a, c, what in zip(fast_gpu.batchnorm_train_backward(dout, fcache),
                          functional.batchnorm_train_backward(dout, rcache), ("dx", "dweight", "dbias")):
        close(a, c, dtype, bounds, what)


@pytest.mark.parametrize("shape", [(5, 3, 4, 4), (6, 10)])
def test_relu_backward_equals_readable(shape, gpu, rng):
    x, dout = randn(gpu, rng, shape, np.float32), randn(gpu, rng, shape, np.float32)
    _, cache = functional.relu_forward(x)
    got, want = fast_gpu.relu_backward(dout, cache), functional.relu_backward(dout, cache)
    np.testing.assert_array_equal(backend.to_numpy(got), backend.to_numpy(want))


def test_a_resnet_step_on_the_gpu_path_equals_the_readable_one(gpu):
    """Whole ResNet-20 training step, float64: logits, loss, every gradient and the running statistics."""
    rng = np.random.default_rng(0)
    x = gpu.asarray(rng.standard_normal((4, 3, 8, 8)))
    y = gpu.asarray(rng.integers(0, 10, 4))
    results = []
    for reference in (False, True):
        net = minisd.ResNet(20, 10, dtype=np.float64, seed=1).to("gpu")
        net.set_gates([True, False, True, True, True, False, True, True, True])
        loss_fn = minisd.SoftmaxCrossEntropy()
        with (minisd.reference() if reference else _nothing()):
            logits = net.forward(x)
            loss = loss_fn.forward(logits, y)
            net.zero_grad()
            net.backward(loss_fn.backward())
        results.append((logits, loss, {n: g.copy() for n, _, g in net.parameters()}, net.state_dict()))
    (l1, loss1, g1, s1), (l2, loss2, g2, s2) = results
    assert minisd.relative_error(backend.to_numpy(l1), backend.to_numpy(l2)) < 1e-10
    assert abs(float(loss1) - float(loss2)) < 1e-12
    for n in g1:
        assert minisd.relative_error(backend.to_numpy(g1[n]), backend.to_numpy(g2[n])) < 1e-10, n
    for n in s1:
        assert minisd.relative_error(backend.to_numpy(s1[n]), backend.to_numpy(s2[n])) < 1e-10, n


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# ---------------------------------------------------------------------------
# kernel counts (stand-in only: it counts)
# ---------------------------------------------------------------------------


def test_kernel_counts_per_function(standin, rng):
    """The launches each function of fast_gpu promises in its docstring (shape caches warm)."""
    x, w = randn(standin, rng, (8, 16, 8, 8), np.float32), randn(standin, rng, (16, 16, 3, 3), np.float32)
    w2, dout2 = randn(standin, rng, (32, 16, 3, 3), np.float32), randn(standin, rng, (8, 32, 4, 4), np.float32)
    gamma, beta = standin.ones(16, dtype=np.float32), standin.zeros(16, dtype=np.float32)
    expected = {
        "conv forward": (lambda: fast_gpu.conv2d_forward(x, w, None, 1, 1), 3),
        "conv backward, stride 1": (lambda: fast_gpu.conv2d_backward(x, (x, w, False, 1, 1)), 6),
        "conv backward, stride 2": (lambda: fast_gpu.conv2d_backward(dout2, (x, w2, False, 2, 1)), 7),
        "bn forward": (lambda: fast_gpu.batchnorm_train_forward(x, gamma, beta, 1e-5), 3),
        "relu backward": (lambda: fast_gpu.relu_backward(x, x), 1),
    }
    for what, (run, launches) in expected.items():
        run()  # index arrays and buffers are made on the first call for a shape
        with standin.counting() as c:
            run()
        assert (c.launches, c.syncs, c.uploads) == (launches, 0, 0), f"{what}: {c.summary()}"
    _, cache = fast_gpu.batchnorm_train_forward(x, gamma, beta, 1e-5)
    with standin.counting() as c:
        fast_gpu.batchnorm_train_backward(x, cache)
    assert c.launches == 3


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_running_average_equals_readable(dtype, gpu, rng):
    batch = randn(gpu, rng, (7,), dtype)
    fast = randn(gpu, rng, (7,), dtype)
    ref = fast.copy()
    fast_gpu.batchnorm_running_average(fast, batch, 0.1, 8 / 7)
    functional.batchnorm_running_average(ref, batch, 0.1, 8 / 7)
    assert fast.dtype == np.dtype(dtype)
    np.testing.assert_allclose(backend.to_numpy(fast), backend.to_numpy(ref), rtol=4 * np.finfo(dtype).eps)


def test_a_batchnorm_layer_updates_its_running_statistics_in_two_kernels(standin, rng):
    bn = minisd.BatchNorm2d(16).to("gpu")
    x = randn(standin, rng, (8, 16, 4, 4), np.float32)
    bn.forward(x)
    with standin.counting() as c:
        bn.forward(x)
    assert c.launches == 3 + 2, c.summary()


# ---------------------------------------------------------------------------
# the module's shape
# ---------------------------------------------------------------------------


def test_every_fast_function_names_its_readable_twin():
    """fast_gpu has functional's layer functions; each is functional's own or says which one it equals,
    with the same arguments."""
    layer_functions = [n for n, f in inspect.getmembers(functional, inspect.isfunction)
                       if n.endswith(("_forward", "_backward", "_running_average")) and "naive" not in n]
    own = []
    for name in layer_functions:
        fast = getattr(fast_gpu, name)
        if fast is getattr(functional, name):
            continue
        own.append(name)
        assert f"minisd.functional.{name}`" in (fast.__doc__ or ""), f"fast_gpu.{name} does not name its twin"
        assert list(inspect.signature(fast).parameters) == list(inspect.signature(getattr(functional, name)).parameters)
    assert set(own) == {"conv2d_forward", "conv2d_backward", "batchnorm_train_forward", "batchnorm_train_backward",
                        "batchnorm_running_average", "relu_backward"}
    public = [n for n, f in inspect.getmembers(fast_gpu, inspect.isfunction)
              if not n.startswith("_") and f.__module__ == "minisd.fast.gpu"]
    assert sorted(public) == sorted(own)


def test_fast_gpu_names_no_cupy():
    """backend.py is the only module that names CuPy: fast_gpu asks get_xp and backend.fuse."""
    source = inspect.getsource(fast_gpu).split('"""', 2)[2]
    assert "import cupy" not in source and "cupy." not in source


# ---------------------------------------------------------------------------
# the stand-in's fuse lets a body do only what cupy.fuse compiles
# ---------------------------------------------------------------------------


def test_standin_fuse_allows_what_cupy_fuse_compiles(standin):
    x, buf, ones = standin.asarray(np.arange(6.0).reshape(2, 3)), standin.zeros((2, 3)), standin.ones((1, 3))

    @backend.fuse
    def update(xp, x, buf, scale):
        buf *= 0.5
        buf += scale * xp.maximum(x, 1.0)

    @backend.fuse
    def column_sums(xp, x, shift):
        return xp.sum((x - shift) * 2.0, axis=0) / 4

    with standin.counting() as c:
        update(x, buf, 2.0)
        sums = column_sums(x, ones)
    assert c.launches == 2
    np.testing.assert_array_equal(backend.to_numpy(buf), 2.0 * np.maximum(np.arange(6.0).reshape(2, 3), 1.0))
    np.testing.assert_array_equal(backend.to_numpy(sums), [0.5, 1.5, 2.5])


@pytest.mark.parametrize("body,error", [
    (lambda xp, x: xp.sum(x, axis=0, keepdims=True), TypeError),          # CuPy would drop keepdims
    (lambda xp, x: xp.sum(xp.sum(x, axis=0), axis=0), NotImplementedError),  # one reduction per kernel
    (lambda xp, x: xp.sum(x, axis=0) + x, ValueError),                     # the input after the reduction
    (lambda xp, x: x[0] * 2, TypeError),                                    # no indexing
    (lambda xp, x: x.reshape(-1), AttributeError),                         # no reshaping
    (lambda xp, x: x @ x, TypeError),                                       # no matrix product
    (lambda xp, x: backend.get_xp(x).exp(x), TypeError),                   # get_xp sees no CuPy array here
])
def test_standin_fuse_refuses_what_cupy_fuse_cannot_do(body, error, standin):
    kernel = backend.fuse(body)
    with pytest.raises(error):
        kernel(standin.ones((2, 2)))
