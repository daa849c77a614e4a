"""Every layer: float64 numerical gradient checks (fast and reference paths), naive-vs-im2col agreement,
shapes and errors. The fast CPU functions against the readable ones: tests/test_fast_cpu.py."""
import contextlib

import numpy as np
import pytest

import minisd
from minisd import functional as F
import float32_bounds
from gradcheck_utils import check_layer_gradients, randn

F64 = np.float64


# -- convolution ----------------------------------------------------------------

CONV_CASES = [  # (C, F, k, stride, padding, N, H, W)
    (3, 4, 3, 1, 1, 2, 5, 6),
    (3, 4, 3, 2, 1, 2, 7, 5),
    (2, 3, 3, 1, 0, 1, 5, 5),   # batch 1, no padding
    (2, 3, 3, 2, 0, 2, 6, 7),
    (4, 2, 1, 1, 0, 2, 4, 3),   # 1x1 kernel
    (4, 2, 1, 2, 0, 3, 5, 4),
    (2, 2, 1, 1, 1, 1, 3, 4),   # 1x1 kernel with padding
    # "phase-aligned" (output = input subsampled by the stride), the CPU fast path:
    (4, 3, 3, 1, 1, 2, 4, 6),   # stride-1 same, fewer out than in channels: one unfold of dout
    (3, 4, 3, 2, 1, 2, 6, 4),   # the ResNet's downsampling conv, even sizes
    (4, 2, 1, 2, 0, 2, 6, 4),   # 1x1 stride 2: odd input pixels feed nothing
    (2, 2, 5, 1, 2, 1, 6, 5),   # 5x5 same
]


@pytest.mark.parametrize("C,Fo,k,s,p,N,H,W", CONV_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_conv2d_gradients(C, Fo, k, s, p, N, H, W, bias, rng, device):
    layer = minisd.Conv2d(C, Fo, k, stride=s, padding=p, bias=bias, dtype=F64, rng=rng).to(device)
    xp = minisd.backend.xp_for(device)
    check_layer_gradients(layer, randn(rng, (N, C, H, W), xp), rng)


@pytest.mark.parametrize("C,Fo,k,s,p,N,H,W", CONV_CASES)
def test_conv2d_im2col_equals_naive(C, Fo, k, s, p, N, H, W, rng):
    x = randn(rng, (N, C, H, W))
    w, b = randn(rng, (Fo, C, k, k)), randn(rng, (Fo,))
    out, cache = F.conv2d_forward(x, w, b, s, p)
    naive, ncache = F.conv2d_naive_forward(x, w, b, s, p)
    assert out.shape == naive.shape == (N, Fo, F.conv_output_size(H, k, s, p), F.conv_output_size(W, k, s, p))
    assert minisd.relative_error(out, naive) < 1e-12
    dout = randn(rng, out.shape)
    for a, b_ in zip(F.conv2d_backward(dout, cache), F.conv2d_naive_backward(dout, ncache)):
        assert minisd.relative_error(a, b_) < 1e-12


def test_conv2d_matches_direct_sum(rng):
    """An independent definition: out[n,f,i,j] = sum_{c,a,b} xpad[n,c,i*s+a,j*s+b] w[f,c,a,b] + b[f]."""
    N, C, H, W, Fo, k, s, p = 2, 2, 5, 4, 3, 3, 2, 1
    x, w, b = randn(rng, (N, C, H, W)), randn(rng, (Fo, C, k, k)), randn(rng, (Fo,))
    out, _ = F.conv2d_forward(x, w, b, s, p)
    xpad = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)))
    ref = np.zeros(out.shape)
    for n in range(N):
        for f in range(Fo):
            for i in range(out.shape[2]):
                for j in range(out.shape[3]):
                    ref[n, f, i, j] = (xpad[n, :, i * s:i * s + k, j * s:j * s + k] * w[f]).sum() + b[f]
    assert minisd.relative_error(out, ref) < 1e-12


def test_im2col_col2im_are_adjoint(rng):
    """<im2col(x), c> == <x, col2im(c)>: col2im is exactly the transpose of im2col."""
    x = randn(rng, (2, 3, 6, 5))
    cols = F.im2col(x, 3, 2, 1)
    c = randn(rng, cols.shape)
    lhs = (cols * c).sum()
    rhs = (x * F.col2im(c, x.shape, 3, 2, 1)).sum()
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


def test_conv2d_init_is_he_normal_fan_in():
    """nninit.kaiming in the paper's code: std sqrt(2 / (C_in k k)), not the fan-out."""
    layer = minisd.Conv2d(16, 64, 3, rng=np.random.default_rng(0))
    w = layer.params["weight"]
    assert w.dtype == np.float32 and w.shape == (64, 16, 3, 3)
    assert abs(w.std() - np.sqrt(2 / (16 * 9))) < 0.05 * np.sqrt(2 / (16 * 9))
    assert not layer.params["bias"].any()


# -- batch norm -----------------------------------------------------------------

def test_batchnorm_train_gradients(rng, device):
    xp = minisd.backend.xp_for(device)
    layer = minisd.BatchNorm2d(3, dtype=F64).to(device)
    layer.params["weight"][...] = xp.asarray(rng.standard_normal(3))
    layer.params["bias"][...] = xp.asarray(rng.standard_normal(3))
    check_layer_gradients(layer, randn(rng, (4, 3, 3, 5), xp) * 2 + 1, rng)


def test_batchnorm_batch1_train_gradients(rng):
    layer = minisd.BatchNorm2d(2, dtype=F64)
    check_layer_gradients(layer, randn(rng, (1, 2, 3, 3)), rng)


def test_batchnorm_eval_gradients(rng, device):
    xp = minisd.backend.xp_for(device)
    layer = minisd.BatchNorm2d(3, dtype=F64).to(device)
    layer.running_mean[...] = xp.asarray(rng.standard_normal(3))
    layer.running_var[...] = xp.asarray(rng.random(3) + 0.5)
    layer.params["weight"][...] = xp.asarray(rng.standard_normal(3))
    layer.eval()
    check_layer_gradients(layer, randn(rng, (2, 3, 4, 3), xp), rng)


def test_batchnorm_statistics_like_pytorch(rng):
    """Training normalises with batch statistics; running stats use the unbiased variance."""
    layer = minisd.BatchNorm2d(3, momentum=0.1, dtype=F64)
    x = randn(rng, (4, 3, 5, 5)) * 3 + 2
    out = layer.forward(x)
    np.testing.assert_allclose(out.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    np.testing.assert_allclose(out.var(axis=(0, 2, 3)), 1 / (1 + 1e-5 / x.var(axis=(0, 2, 3))), rtol=1e-10)
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.9 + 0.1 * x.var(axis=(0, 2, 3), ddof=1), rtol=1e-12)
    layer.eval()
    before = layer.running_mean.copy()
    out = layer.forward(x)
    np.testing.assert_array_equal(layer.running_mean, before)  # eval never updates
    ref = (x - layer.running_mean[:, None, None]) / np.sqrt(layer.running_var[:, None, None] + 1e-5)
    assert minisd.relative_error(out, ref) < 1e-12


# -- the small layers ---------------------------------------------------------

def test_relu_gradients(rng, device):
    xp = minisd.backend.xp_for(device)
    check_layer_gradients(minisd.ReLU(), randn(rng, (2, 3, 4, 5), xp), rng)


def test_global_avg_pool_gradients(rng, device):
    xp = minisd.backend.xp_for(device)
    layer = minisd.GlobalAvgPool()
    x = randn(rng, (2, 3, 4, 5), xp)
    assert layer.forward(x).shape == (2, 3)
    check_layer_gradients(layer, x, rng)


@pytest.mark.parametrize("N", [1, 3])
def test_linear_gradients(N, rng, device):
    xp = minisd.backend.xp_for(device)
    layer = minisd.Linear(5, 4, dtype=F64, rng=rng).to(device)
    check_layer_gradients(layer, randn(rng, (N, 5), xp), rng)


@pytest.mark.parametrize("Cin,Cout,s,H,W", [(3, 3, 1, 4, 5), (2, 4, 2, 5, 6), (2, 5, 2, 4, 4), (3, 3, 2, 5, 5)])
@pytest.mark.parametrize("downsample", ["subsample", "avg"])
def test_shortcut_gradients_and_values(Cin, Cout, s, H, W, downsample, rng, device):
    xp = minisd.backend.xp_for(device)
    layer = minisd.Shortcut(Cin, Cout, s, downsample=downsample)
    x = randn(rng, (2, Cin, H, W), xp)
    out = minisd.to_numpy(layer.forward(x))
    xn = minisd.to_numpy(x)
    Ho, Wo = -(-H // s), -(-W // s)
    assert out.shape == (2, Cout, Ho, Wo)
    if downsample == "subsample":
        np.testing.assert_array_equal(out[:, :Cin], xn[:, :, ::s, ::s])  # subsampled old channels
    else:  # the mean of each s x s window (fewer pixels at an odd border), by a loop
        expected = np.array([[[[xn[n, c, i * s:(i + 1) * s, j * s:(j + 1) * s].mean() for j in range(Wo)]
                               for i in range(Ho)] for c in range(Cin)] for n in range(2)])
        np.testing.assert_allclose(out[:, :Cin], expected, rtol=1e-12)
    assert not out[:, Cin:].any()                                     # new channels are zeros
    check_layer_gradients(layer, x, rng)


def test_shortcut_rejects_unknown_downsample():
    with pytest.raises(ValueError, match="downsample must be one of"):
        minisd.Shortcut(2, 4, 2, downsample="max")


def test_softmax_cross_entropy(rng, device):
    xp = minisd.backend.xp_for(device)
    loss_fn = minisd.SoftmaxCrossEntropy()
    logits = randn(rng, (5, 4), xp)
    labels = xp.asarray(rng.integers(0, 4, 5))
    loss = float(loss_fn.forward(logits, labels))
    ln = minisd.to_numpy(logits)
    lab = minisd.to_numpy(labels)
    ref = np.mean(np.log(np.exp(ln).sum(1)) - ln[np.arange(5), lab])
    assert abs(loss - ref) < 1e-12
    dlogits = loss_fn.backward()
    num = minisd.numerical_gradient(lambda: loss_fn.forward(logits, labels), logits)
    assert minisd.relative_error(num, dlogits) < 1e-6


def test_softmax_cross_entropy_is_stable():
    loss_fn = minisd.SoftmaxCrossEntropy()
    logits = np.array([[1000.0, 0.0], [-1000.0, 0.0]])
    loss = loss_fn.forward(logits, np.array([0, 0]))
    assert np.isfinite(loss) and abs(loss - 500.0) < 1e-9
    assert np.isfinite(loss_fn.backward()).all()


# -- state, accumulation, train/eval -------------------------------------------

def test_backward_accumulates_and_zero_grad_clears(rng):
    layer = minisd.Linear(3, 2, dtype=F64, rng=rng)
    x = randn(rng, (4, 3))
    dout = randn(rng, (4, 2))
    layer.forward(x)
    layer.backward(dout)
    once = layer.grads["weight"].copy()
    layer.forward(x)
    layer.backward(dout)
    np.testing.assert_allclose(layer.grads["weight"], 2 * once)
    layer.zero_grad()
    assert not layer.grads["weight"].any() and not layer.grads["bias"].any()


def test_params_and_grads_have_same_keys_and_shapes():
    for layer in [minisd.Conv2d(2, 3, 3), minisd.BatchNorm2d(4), minisd.Linear(3, 2), minisd.Conv2d(2, 3, 1, bias=False)]:
        assert layer.params.keys() == layer.grads.keys()
        for k in layer.params:
            assert layer.params[k].shape == layer.grads[k].shape
            assert layer.params[k].dtype == layer.grads[k].dtype == np.float32


def test_sequential_chain_gradients(rng):
    net = minisd.Sequential(minisd.Conv2d(2, 3, 3, padding=1, dtype=F64, rng=rng), minisd.BatchNorm2d(3, dtype=F64),
                            minisd.ReLU(), minisd.GlobalAvgPool(), minisd.Linear(3, 2, dtype=F64, rng=rng))
    x = randn(rng, (3, 2, 4, 4))
    dout = randn(rng, (3, 2))
    net.forward(x)
    net.zero_grad()
    dx = net.backward(dout)
    assert minisd.relative_error(minisd.numerical_gradient(lambda: net.forward(x), x, dout), dx) < 1e-6
    for name, p, g in net.parameters():
        assert minisd.relative_error(minisd.numerical_gradient(lambda: net.forward(x), p, dout), g) < 1e-6, name


def test_train_eval_switch_recurses():
    net = minisd.Sequential(minisd.BatchNorm2d(2), minisd.Sequential(minisd.BatchNorm2d(2)))
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


# -- bad input gets one clear error ----------------------------------------------

def test_wrong_rank_and_channels():
    conv = minisd.Conv2d(3, 4, 3)
    with pytest.raises(ValueError, match="4-D input"):
        conv.forward(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="expected 3 input channels"):
        conv.forward(np.zeros((1, 2, 8, 8), np.float32))
    with pytest.raises(ValueError, match="expected 5 input"):
        minisd.Linear(5, 2).forward(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match="smaller than"):
        conv.forward(np.zeros((1, 3, 2, 2), np.float32))


def test_mixed_dtypes_raise():
    with pytest.raises(TypeError, match="dtype float64 does not match"):
        minisd.Conv2d(3, 4, 3).forward(np.zeros((1, 3, 8, 8)))
    with pytest.raises(TypeError, match="dtype"):
        minisd.BatchNorm2d(3, dtype=np.float64).forward(np.zeros((2, 3, 4, 4), np.float32))


def test_backward_before_forward_raises():
    for layer in [minisd.Conv2d(3, 4, 3), minisd.BatchNorm2d(3), minisd.ReLU(), minisd.Linear(2, 2),
                  minisd.GlobalAvgPool(), minisd.Shortcut(2, 4, 2), minisd.SoftmaxCrossEntropy()]:
        with pytest.raises(RuntimeError, match="before forward"):
            layer.backward(np.zeros((1, 4, 2, 2), np.float32))


def test_bad_labels_raise():
    loss_fn = minisd.SoftmaxCrossEntropy()
    with pytest.raises(ValueError, match="labels must lie"):
        loss_fn.forward(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(ValueError, match="labels must be 2 integers"):
        loss_fn.forward(np.zeros((2, 3)), np.array([0.0, 1.0]))


@pytest.mark.gpu
def test_gpu_labels_are_checked_on_request_only(standin):
    """On the GPU the range check would read two numbers back every step (two syncs): off by
    default (the loaders check the files once), on with check_labels=True."""
    logits, y = standin.zeros((2, 3)), standin.asarray(np.array([0, 3]))
    with standin.counting() as c:
        minisd.SoftmaxCrossEntropy().forward(logits, standin.asarray(np.array([0, 2])))
    assert c.syncs == 0
    with pytest.raises(ValueError, match="labels must lie"):
        minisd.SoftmaxCrossEntropy(check_labels=True).forward(logits, y)
    with pytest.raises(ValueError, match="labels must be 2 integers"):
        minisd.SoftmaxCrossEntropy().forward(logits, standin.zeros(2))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError):
        minisd.Conv2d(3, 0, 3)
    with pytest.raises(ValueError):
        minisd.Shortcut(4, 2, 1)


def test_float32_default_and_float64_everywhere(rng):
    for dtype in (np.float32, np.float64):
        net = minisd.Sequential(minisd.Conv2d(3, 4, 3, padding=1, dtype=dtype), minisd.BatchNorm2d(4, dtype=dtype),
                                minisd.ReLU(), minisd.GlobalAvgPool(), minisd.Linear(4, 2, dtype=dtype))
        out = net.forward(rng.standard_normal((2, 3, 5, 5)).astype(dtype))
        assert out.dtype == dtype
        assert net.backward(np.ones_like(out)).dtype == dtype


@pytest.mark.gpu
def test_layers_run_on_gpu_like_cpu(rng, gpu_xp):
    """NumPy and CuPy give the same outputs and gradients (float64; float32 is checked layer
    by layer against float64 in test_float32_layers_within_rounding_of_float64).

    The convolutions have no bias, as in the ResNet: a bias before a batch norm has a true
    gradient of exactly 0, so both devices return rounding noise whose relative error is 1.
    """
    dtype = np.float64
    net = minisd.Sequential(minisd.Conv2d(3, 8, 3, stride=2, padding=1, bias=False, dtype=dtype, rng=rng),
                            minisd.BatchNorm2d(8, dtype=dtype), minisd.ReLU(),
                            minisd.Conv2d(8, 8, 3, padding=1, bias=False, dtype=dtype, rng=rng),
                            minisd.BatchNorm2d(8, dtype=dtype), minisd.GlobalAvgPool(),
                            minisd.Linear(8, 5, dtype=dtype, rng=rng))
    x = rng.standard_normal((4, 3, 9, 7)).astype(dtype)
    dout = rng.standard_normal((4, 5)).astype(dtype)
    out_cpu, dx_cpu = net.forward(x), net.backward(dout)
    grads_cpu = {n: g.copy() for n, _, g in net.parameters()}
    net.zero_grad()
    net.to("gpu")
    out_gpu = net.forward(minisd.to_device(x, "gpu"))
    dx_gpu = net.backward(minisd.to_device(dout, "gpu"))
    assert minisd.relative_error(out_cpu, minisd.to_numpy(out_gpu)) < 1e-10
    assert minisd.relative_error(dx_cpu, minisd.to_numpy(dx_gpu)) < 1e-10
    for n, _, g in net.parameters():
        assert minisd.relative_error(grads_cpu[n], minisd.to_numpy(g)) < 1e-10, n


FLOAT32_LAYERS = {  # name: (layer, input shape); the ResNet's layer kinds and shapes, and odd ones
    "conv3x3": (lambda r: minisd.Conv2d(3, 8, 3, padding=1, bias=False, rng=r), (4, 3, 8, 8)),
    "conv-stride2": (lambda r: minisd.Conv2d(8, 16, 3, stride=2, padding=1, bias=False, rng=r), (4, 8, 8, 8)),
    "conv-bias-odd": (lambda r: minisd.Conv2d(3, 4, 3, stride=2, padding=1, rng=r), (3, 3, 7, 5)),
    "batchnorm": (lambda r: minisd.BatchNorm2d(8, rng=r), (16, 8, 6, 6)),
    "relu": (lambda r: minisd.ReLU(), (4, 8, 5, 5)),
    "pool": (lambda r: minisd.GlobalAvgPool(), (4, 8, 8, 8)),
    "linear": (lambda r: minisd.Linear(64, 10, rng=r), (16, 64)),
}


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["cpu", "reference", "gpu"])
@pytest.mark.parametrize("name", list(FLOAT32_LAYERS))
def test_float32_layers_within_rounding_of_float64(name, path, rng, gpu_xp):
    """Every layer's float32 output and gradients, on each path, lie within the rounding budget
    of the same computation in float64 (tests/float32_bounds.py: derived from float32's unit
    roundoff, the sums' lengths and the operands, so they hold whatever BLAS kernel runs)."""
    make, shape = FLOAT32_LAYERS[name]
    layer = make(np.random.default_rng(7))
    if isinstance(layer, minisd.BatchNorm2d):  # gamma and beta away from their 1 and 0 defaults
        layer.params["weight"][...] = rng.uniform(0.5, 1.5, layer.num_features)
        layer.params["bias"][...] = rng.standard_normal(layer.num_features)
    x = (rng.standard_normal(shape) * 2 + 0.5).astype(np.float32)
    out_shape = layer.forward(x).shape
    dout = rng.standard_normal(out_shape).astype(np.float32)
    bounds = float32_bounds.for_layer(layer, x, dout)
    if path == "gpu":
        layer.to("gpu")
        x, dout = minisd.to_device(x, "gpu"), minisd.to_device(dout, "gpu")
    with (minisd.reference() if path == "reference" else contextlib.nullcontext()):
        results = float32_bounds.layer_results(layer, x, dout)
    assert all(r.dtype == np.float32 for r in results.values() if r is not None)
    worst = float32_bounds.assert_within_rounding(results, bounds, f"{name} on {path}")
    assert {k for k, r in results.items() if r is not None} <= set(worst)  # every output and gradient compared


def test_to_refuses_to_strand_an_optimizer(monkeypatch):
    """Module.to() after an optimizer was built would leave it updating stale arrays: refused."""
    net = minisd.Sequential(minisd.Conv2d(2, 3, 3), minisd.BatchNorm2d(3))
    assert net.to("cpu") is net  # a move to where it already is stays allowed
    opt = minisd.SGD(net.parameters(), 0.1)
    monkeypatch.setattr(minisd.layers, "resolve_device", lambda device: "gpu")  # pretend a GPU exists
    with pytest.raises(RuntimeError, match="optimizer was built on this model's parameters"):
        net.to("gpu")
    assert all(minisd.backend.device_of(p) == "cpu" for _, p, _ in net.parameters())  # nothing moved
    del opt  # once the optimizer is gone, nothing is stranded
    import gc
    gc.collect()
    monkeypatch.setattr(minisd.layers, "to_device", lambda a, device: a.copy())
    net.to("gpu")


def test_rounding_budget_is_tight_enough_to_catch_a_wrong_term(rng):
    """The float32 check can fail: a convolution missing one of its C*k*k products, or batch
    norm's backward without its mean correction, uses far more than its rounding budget."""
    x, w = rng.standard_normal((4, 8, 6, 6)).astype(np.float32), rng.standard_normal((8, 8, 3, 3)).astype(np.float32)
    out, cache = F.conv2d_forward(x, w, None, 1, 1)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    bounds = float32_bounds.conv2d(x, w, None, 1, 1, dout)
    assert float32_bounds.ratios({"out": out}, bounds)["out"] <= 1
    w_missing = w.copy()
    w_missing[0, 0, 1, 1] = 0  # one product of each output element of filter 0 left out
    assert float32_bounds.ratios({"out": F.conv2d_forward(x, w_missing, None, 1, 1)[0]}, bounds)["out"] > 10

    x = (rng.standard_normal((8, 4, 5, 5)) * 2 + 1).astype(np.float32)
    gamma, beta = np.ones(4, np.float32), np.zeros(4, np.float32)
    _, cache = F.batchnorm_train_forward(x, gamma, beta, 1e-5)
    dout = (rng.standard_normal(x.shape) + 0.5).astype(np.float32)
    bounds = float32_bounds.batchnorm_train(x, gamma, beta, 1e-5, dout)
    dx, _, dbias = F.batchnorm_train_backward(dout, cache)
    assert float32_bounds.ratios({"dx": dx}, bounds)["dx"] <= 1
    m = x.size // x.shape[1]
    no_mean_correction = dx + (gamma * cache.inv_std / m * dbias)[None, :, None, None]
    assert float32_bounds.ratios({"dx": no_mean_correction}, bounds)["dx"] > 10
