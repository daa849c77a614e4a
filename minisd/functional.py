"""The math of every layer: forward/backward pairs, written next to each other.

Each ``*_forward`` returns ``(out, cache)``: its output and the few arrays its
backward needs. Each ``*_backward`` takes ``(dout, cache)``: the gradient of
the loss with respect to ``out``, and that cache; it returns the gradients
with respect to the inputs and parameters. The loss is no exception: its
``dout`` is the gradient arriving at the loss itself, 1 when it is what we
minimise. Arrays are NCHW: N images, C channels, H rows, W columns. Nothing
here keeps state: the stateful classes in :mod:`minisd.layers` wrap these pairs.

This module is the readable code, and it is what runs inside
``with minisd.reference():``, on NumPy and CuPy alike (``--reference`` on the
training CLI and the lessons). Every function is written once for NumPy and
CuPy through ``xp = get_xp(x)``. Outside ``reference()`` the layers call a
speed appendix with the same function names instead - :mod:`minisd.fast.cpu`
on the CPU (threads, reused buffers, long copies), :mod:`minisd.fast.gpu` on
the GPU (fewer, fused kernels) - each function tested equal to its twin here.
Nothing in this file is there for speed.

Convolution comes twice: ``conv2d_naive_*`` is the textbook loop over output
pixels (slow, obvious); ``conv2d_*`` unfolds the patches with im2col and does
one matrix product for the whole batch. Tests check they agree.
"""
from __future__ import annotations

from typing import NamedTuple

from .backend import get_xp

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output length along one spatial axis: floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel_size) // stride + 1


def pad_hw(x, padding: int):
    """Zero-pad the two spatial axes of an (N, C, H, W) array by ``padding``."""
    if padding == 0:
        return x
    xp = get_xp(x)
    N, C, H, W = x.shape
    out = xp.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=x.dtype)
    out[:, :, padding:padding + H, padding:padding + W] = x
    return out


# ---------------------------------------------------------------------------
# convolution: the naive loop, for teaching and as the reference
# ---------------------------------------------------------------------------


def conv2d_naive_forward(x, weight, bias, stride=1, padding=0):
    """Convolution as the definition says: one dot product per output pixel.

    x: (N, C, H, W), weight: (F, C, k, k), bias: (F,) or None
    returns out: (N, F, Ho, Wo), cache
    """
    xp = get_xp(x)
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    xpad = pad_hw(x, padding)
    out = xp.zeros((N, F, Ho, Wo), dtype=x.dtype)
    for i in range(Ho):
        for j in range(Wo):
            patch = xpad[:, :, i * stride:i * stride + k, j * stride:j * stride + k]  # (N, C, k, k)
            out[:, :, i, j] = xp.tensordot(patch, weight, axes=([1, 2, 3], [1, 2, 3]))  # (N, F)
    if bias is not None:
        out += bias[None, :, None, None]
    return out, (x, weight, bias is not None, stride, padding)


def conv2d_naive_backward(dout, cache):
    """Backward of :func:`conv2d_naive_forward`, pixel by pixel.

    Each output pixel (i, j) was ``patch . weight``; so it sends ``dout * weight``
    back to its patch and ``dout * patch`` to the weight.
    dout: (N, F, Ho, Wo); returns dx (N, C, H, W), dweight (F, C, k, k), dbias (F,) or None
    """
    x, weight, has_bias, stride, padding = cache
    xp = get_xp(dout)
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    _, _, Ho, Wo = dout.shape
    xpad = pad_hw(x, padding)
    dxpad = xp.zeros_like(xpad)
    dweight = xp.zeros_like(weight)
    for i in range(Ho):
        for j in range(Wo):
            rows, cols = slice(i * stride, i * stride + k), slice(j * stride, j * stride + k)
            g = dout[:, :, i, j]  # (N, F)
            dxpad[:, :, rows, cols] += xp.tensordot(g, weight, axes=([1], [0]))  # (N, C, k, k)
            dweight += xp.tensordot(g, xpad[:, :, rows, cols], axes=([0], [0]))  # (F, C, k, k)
    dx = dxpad[:, :, padding:padding + H, padding:padding + W]
    dbias = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dweight, dbias


# ---------------------------------------------------------------------------
# convolution: im2col + one matrix product for the whole batch
# ---------------------------------------------------------------------------


def im2col(x, kernel_size: int, stride: int = 1, padding: int = 0):
    """Unfold every k x k receptive field of ``x`` into a column.

    x: (N, C, H, W) -> cols: (N, C*k*k, Ho*Wo), where column (h, w) of image n
    holds the patch that output pixel (h, w) sees. Built with k*k strided slice
    copies (one per kernel offset), never a loop over pixels: for offset
    (di, dj), the pixels every output pixel reads form one strided slice of
    the padded input.
    """
    xp = get_xp(x)
    N, C, H, W = x.shape
    k, s = kernel_size, stride
    Ho, Wo = conv_output_size(H, k, s, padding), conv_output_size(W, k, s, padding)
    xpad = pad_hw(x, padding)
    cols = xp.empty((N, C, k, k, Ho, Wo), dtype=x.dtype)
    for di in range(k):
        for dj in range(k):
            cols[:, :, di, dj] = xpad[:, :, di:di + s * Ho:s, dj:dj + s * Wo:s]
    return cols.reshape(N, C * k * k, Ho * Wo)


def col2im(cols, x_shape, kernel_size: int, stride: int = 1, padding: int = 0):
    """The adjoint of :func:`im2col`: add every column back onto its patch.

    cols: (N, C*k*k, Ho*Wo) -> (N, C, H, W). Overlapping patches add up, which
    is what the chain rule asks for. k*k strided slice-adds: ``np.add.at``
    would do the same about ten times slower.
    """
    xp = get_xp(cols)
    N, C, H, W = x_shape
    k, s = kernel_size, stride
    Ho, Wo = conv_output_size(H, k, s, padding), conv_output_size(W, k, s, padding)
    cols = cols.reshape(N, C, k, k, Ho, Wo)
    dxpad = xp.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for di in range(k):
        for dj in range(k):
            dxpad[:, :, di:di + s * Ho:s, dj:dj + s * Wo:s] += cols[:, :, di, dj]
    return dxpad[:, :, padding:padding + H, padding:padding + W]


def conv2d_forward(x, weight, bias, stride=1, padding=0):
    """Convolution as one matrix product: ``out[n] = W2 @ im2col(x)[n]``.

    x: (N, C, H, W), weight: (F, C, k, k), bias: (F,) or None
    returns out: (N, F, Ho, Wo), cache = (x, weight, has_bias, stride, padding)

    W2 is the weight as an (F, C*k*k) matrix: row f is filter f, unrolled in
    the same order as a column of im2col. Only ``x`` is cached, not its
    columns (k*k = 9 times larger): the backward pass unfolds ``x`` again,
    which costs copies, not products.
    """
    xp = get_xp(x)
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    cols = im2col(x, k, stride, padding)                  # (N, C*k*k, Ho*Wo)
    out = xp.matmul(weight.reshape(F, -1), cols)          # (F, Ckk) @ (N, Ckk, HoWo) -> (N, F, HoWo)
    out = out.reshape(N, F, Ho, Wo)
    if bias is not None:
        out += bias[None, :, None, None]
    return out, (x, weight, bias is not None, stride, padding)


def conv2d_backward(dout, cache):
    """Backward of :func:`conv2d_forward`.

    With cols = im2col(x) and out[n] = W2 @ cols[n], the chain rule gives
      dW2   = sum over n of dout[n] @ cols[n].T    (every image adds its share)
      dcols = W2.T @ dout[n]                       (for each image)
      dx    = col2im(dcols)                        (overlapping patches add up)
      dbias = dout summed over N, Ho, Wo
    dout: (N, F, Ho, Wo); returns dx (N, C, H, W), dweight (F, C, k, k), dbias (F,) or None
    """
    x, weight, has_bias, stride, padding = cache
    xp = get_xp(dout)
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    cols = im2col(x, k, stride, padding)                  # (N, Ckk, L), L = Ho*Wo
    d3 = dout.reshape(N, F, -1)                           # (N, F, L)
    # sum over images n and pixels l of d3[n, f, l] * cols[n, j, l]: one product over the batch
    dweight = xp.tensordot(d3, cols, axes=([0, 2], [0, 2])).reshape(weight.shape)
    dcols = xp.matmul(weight.reshape(F, -1).T, d3)        # (Ckk, F) @ (N, F, L) -> (N, Ckk, L)
    dx = col2im(dcols, x.shape, k, stride, padding)
    dbias = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dweight, dbias


def conv2d_flops(x_shape, weight_shape, stride, padding) -> int:
    """Multiply-adds x 2 of one forward convolution (the backward costs twice that)."""
    N, C, H, W = x_shape
    F, _, k, _ = weight_shape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    return 2 * N * F * Ho * Wo * C * k * k


# ---------------------------------------------------------------------------
# batch normalisation
# ---------------------------------------------------------------------------


class BatchNormCache(NamedTuple):
    """What :func:`batchnorm_train_backward` needs, plus the batch statistics (C,) for the layer."""
    xhat: object      # (N, C, H, W): the normalised input
    inv_std: object   # (C,): 1 / sqrt(var + eps)
    weight: object    # (C,): gamma
    mean: object      # (C,): batch mean (the layer folds it into its running mean)
    var: object       # (C,): biased batch variance (likewise)


def batchnorm_train_forward(x, weight, bias, eps):
    """Normalise each channel with the statistics of this batch.

    x: (N, C, H, W), weight (gamma), bias (beta): (C,)
    xhat = (x - mean) / sqrt(var + eps), out = gamma * xhat + beta,
    with mean and (biased) var over N, H, W.
    returns out (N, C, H, W), cache (a :class:`BatchNormCache`, which also
    carries the batch mean and variance for the running statistics)
    """
    mean = x.mean(axis=(0, 2, 3))
    centred = x - mean[None, :, None, None]
    var = (centred * centred).mean(axis=(0, 2, 3))
    inv_std = 1.0 / (var + eps) ** 0.5
    xhat = centred * inv_std[None, :, None, None]
    out = xhat * weight[None, :, None, None] + bias[None, :, None, None]
    return out, BatchNormCache(xhat, inv_std, weight, mean, var)


def batchnorm_train_backward(dout, cache):
    """Backward of :func:`batchnorm_train_forward`.

    The mean and variance depend on every input, so besides the direct path
    dx = gamma * inv_std * dout two correction terms remain:
      dx = gamma * inv_std / m * (m * dout - sum(dout) - xhat * sum(dout * xhat))
    with m = N*H*W values per channel and the sums over N, H, W.
    returns dx (N, C, H, W), dweight (C,), dbias (C,)
    """
    xhat, inv_std, weight = cache.xhat, cache.inv_std, cache.weight
    N, C, H, W = dout.shape
    m = N * H * W
    dbias = dout.sum(axis=(0, 2, 3))
    dweight = (dout * xhat).sum(axis=(0, 2, 3))
    k = (weight * inv_std / m)[None, :, None, None]
    dx = k * (m * dout - dbias[None, :, None, None] - xhat * dweight[None, :, None, None])
    return dx, dweight, dbias


def batchnorm_running_average(running, batch, momentum, factor=1.0):
    """running = (1 - momentum) * running + momentum * batch * factor, in place.

    A batch norm layer's running statistics in training, as PyTorch keeps them:
    ``batch`` is this batch's mean, or its variance with ``factor`` m / (m - 1)
    (the unbiased variance).
    """
    running *= 1 - momentum
    running += momentum * batch * factor


def batchnorm_eval_forward(x, weight, bias, running_mean, running_var, eps):
    """Normalise with the running statistics: a fixed per-channel affine map.

    returns out (N, C, H, W), cache
    """
    inv_std = 1.0 / (running_var + eps) ** 0.5
    scale = weight * inv_std
    shift = bias - running_mean * scale
    out = x * scale[None, :, None, None] + shift[None, :, None, None]
    return out, (x, running_mean, inv_std, weight)


def batchnorm_eval_backward(dout, cache):
    """Backward of :func:`batchnorm_eval_forward` (statistics are constants here)."""
    x, running_mean, inv_std, weight = cache
    xhat = (x - running_mean[None, :, None, None]) * inv_std[None, :, None, None]
    dx = dout * (weight * inv_std)[None, :, None, None]
    return dx, (dout * xhat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))


# ---------------------------------------------------------------------------
# ReLU, pooling, linear
# ---------------------------------------------------------------------------


def relu_forward(x):
    """out = max(x, 0); the cache is ``out`` itself (out > 0 exactly where x > 0)."""
    xp = get_xp(x)
    out = xp.maximum(x, 0)
    return out, out


def relu_backward(dout, cache):
    """The gradient passes where the input was positive, and stops elsewhere."""
    out = cache
    return dout * (out > 0)


def global_avg_pool_forward(x):
    """(N, C, H, W) -> (N, C): the mean of each channel map."""
    N, C = x.shape[:2]
    return x.reshape(N, C, -1).mean(axis=2), x.shape


def global_avg_pool_backward(dout, cache):
    """Each of the H*W inputs of a mean receives dout / (H*W). dout: (N, C)."""
    xp = get_xp(dout)
    N, C, H, W = cache
    return xp.broadcast_to((dout / (H * W))[:, :, None, None], (N, C, H, W)).copy()


def avg_pool_forward(x):
    """2x2 average pooling, stride 2 (DenseNet's transitions): (N, C, H, W) -> (N, C, H/2, W/2).

    Each output is the mean of one 2x2 window; H and W must be even.
    """
    N, C, H, W = x.shape
    if H % 2 or W % 2:
        raise ValueError(f"avg_pool_forward: 2x2 windows need an even height and width, got {H}x{W}")
    return x.reshape(N, C, H // 2, 2, W // 2, 2).mean(axis=(3, 5)), x.shape


def avg_pool_backward(dout, cache):
    """Each of a window's 4 inputs receives a quarter of its output's gradient. dout: (N, C, H/2, W/2)."""
    xp = get_xp(dout)
    N, C, H, W = cache
    quarter = (dout / 4)[:, :, :, None, :, None]
    return xp.broadcast_to(quarter, (N, C, H // 2, 2, W // 2, 2)).reshape(N, C, H, W).copy()


def concat_forward(x, new):
    """Channel concatenation, the dense layer's output: x (N, C, H, W), new (N, K, H, W)
    -> (N, C + K, H, W), the input first. cache: C."""
    xp = get_xp(x, new)
    return xp.concatenate([x, new], axis=1), x.shape[1]


def concat_backward(dout, cache):
    """The gradient of a concatenation is a split: each input gets its own channels of dout.

    returns dx (N, C, H, W) = dout[:, :C] and dnew (N, K, H, W) = dout[:, C:]
    """
    C = cache
    return dout[:, :C], dout[:, C:]


def conv1x1_forward(x, weight):
    """A 1x1 convolution is a plain matrix product over the channels, pixel by pixel: no im2col.

    x: (N, C, H, W), weight: (F, C, 1, 1) -> out (N, F, H, W) with
    out[n, :, i, j] = weight[:, :, 0, 0] @ x[n, :, i, j]. No bias (DenseNet has none).
    """
    N, C, H, W = x.shape
    w = weight.reshape(weight.shape[0], C)                 # (F, C)
    out = w @ x.reshape(N, C, H * W)                       # (F, C) @ (N, C, HW) -> (N, F, HW)
    return out.reshape(N, -1, H, W), (x, weight)


def conv1x1_backward(dout, cache):
    """dx = W.T @ dout and dW = sum over images and pixels of dout x^T. returns dx, dweight."""
    x, weight = cache
    N, C, H, W = x.shape
    w = weight.reshape(weight.shape[0], C)
    d3, x3 = dout.reshape(N, -1, H * W), x.reshape(N, C, H * W)
    dx = (w.T @ d3).reshape(x.shape)                       # (C, F) @ (N, F, HW) -> (N, C, HW)
    dweight = (d3 @ x3.transpose(0, 2, 1)).sum(axis=0)     # (N, F, HW) @ (N, HW, C) -> (F, C)
    return dx, dweight.reshape(weight.shape)


def linear_forward(x, weight, bias):
    """out = x @ weight.T + bias. x: (N, D), weight: (K, D), bias: (K,) -> (N, K)."""
    out = x @ weight.T
    if bias is not None:
        out += bias
    return out, (x, weight, bias is not None)


def linear_backward(dout, cache):
    """dx = dout @ W, dW = dout.T @ x, db = sum of dout over the batch."""
    x, weight, has_bias = cache
    return dout @ weight, dout.T @ x, (dout.sum(axis=0) if has_bias else None)


# ---------------------------------------------------------------------------
# the option-A shortcut of the CIFAR ResNets
# ---------------------------------------------------------------------------


DOWNSAMPLES = ("subsample", "avg")


def shortcut_forward(x, out_channels: int, stride: int, downsample: str = "subsample"):
    """The paper's parameter-free shortcut (He et al.'s option A).

    Spatial, when ``stride`` > 1, one of the two versions of the authors' Torch7 code:
      ``"subsample"``: keep every stride-th pixel. The paper's 2016 results came from
        ``SpatialAveragePooling(1, 1, stride, stride)``: a 1x1 "average" with stride s.
      ``"avg"``: the mean of each stride x stride window: the authors' February 2017 fix
        ("Average pooling should be done in stride by stride window"). A window cut by
        an odd border averages the pixels it has.
    Channels: the new ``out_channels - C`` channels are zeros, appended after the
    old ones (``nn.Padding`` in the paper's code).
    x: (N, C, H, W) -> (N, out_channels, ceil(H/s), ceil(W/s)); identity when nothing changes.
    returns out, cache = (x.shape, stride, downsample)
    """
    xp = get_xp(x)
    N, C = x.shape[:2]
    if stride == 1:
        y = x
    elif downsample == "subsample":
        y = x[:, :, ::stride, ::stride]
    else:
        y = _window_sums(x, stride) / _window_sizes(xp, x.shape, stride, x.dtype)
    cache = (x.shape, stride, downsample)
    if out_channels == C:
        return y, cache
    out = xp.zeros((N, out_channels) + y.shape[2:], dtype=x.dtype)
    out[:, :C] = y
    return out, cache


def shortcut_backward(dout, cache):
    """The old channels' gradient goes back to the pixels they came from; the new channels
    got none. ``"subsample"``: to the kept pixels; ``"avg"``: shared equally by the pixels
    of each window (dout / window size to each)."""
    x_shape, stride, downsample = cache
    if tuple(dout.shape) == tuple(x_shape):
        return dout
    xp = get_xp(dout)
    N, C, H, W = x_shape
    d = dout[:, :C]
    if stride == 1:
        return xp.ascontiguousarray(d)
    if downsample == "subsample":
        dx = xp.zeros(x_shape, dtype=dout.dtype)
        dx[:, :, ::stride, ::stride] = d
        return dx
    d = d / _window_sizes(xp, x_shape, stride, dout.dtype)          # (N, C, Ho, Wo)
    Ho, Wo = d.shape[2:]
    spread = xp.broadcast_to(d[:, :, :, None, :, None], (N, C, Ho, stride, Wo, stride))
    return spread.reshape(N, C, Ho * stride, Wo * stride)[:, :, :H, :W].copy()


def _window_sums(x, s):
    """(N, C, H, W) -> (N, C, ceil(H/s), ceil(W/s)): sums over s x s windows (zero-padded at the border)."""
    xp = get_xp(x)
    N, C, H, W = x.shape
    Ho, Wo = -(-H // s), -(-W // s)
    padded = xp.zeros((N, C, Ho * s, Wo * s), dtype=x.dtype)
    padded[:, :, :H, :W] = x
    return padded.reshape(N, C, Ho, s, Wo, s).sum(axis=(3, 5))


def _window_sizes(xp, x_shape, s, dtype):
    """(ceil(H/s), ceil(W/s)): how many real pixels each s x s window holds (s*s inside)."""
    H, W = x_shape[2:]
    rows = xp.minimum(s, H - s * xp.arange(-(-H // s))).astype(dtype)
    cols = xp.minimum(s, W - s * xp.arange(-(-W // s))).astype(dtype)
    return rows[:, None] * cols[None, :]


# ---------------------------------------------------------------------------
# softmax cross-entropy
# ---------------------------------------------------------------------------


def softmax_cross_entropy_forward(logits, labels):
    """Mean negative log-likelihood of ``labels`` under softmax(logits).

    logits: (N, K), labels: (N,) integers in [0, K). Stable: subtract the row
    maximum before exponentiating, so no exp overflows.
    returns loss (0-d array), cache = (probabilities (N, K), labels)
    """
    xp = get_xp(logits)
    N = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = xp.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    log_probs = shifted - xp.log(sum_exp)
    loss = -log_probs[xp.arange(N), labels].mean()
    return loss, (exp / sum_exp, labels)


def softmax_cross_entropy_backward(dout, cache):
    """d(loss)/d(logits) = dout * (softmax - one_hot(labels)) / N.

    ``dout`` is the gradient arriving at the loss: 1 when the loss is what is
    minimised (a Python number or a 0-d array). returns dlogits (N, K)
    """
    xp = get_xp(cache[0])
    probs, labels = cache
    N = probs.shape[0]
    dlogits = probs.copy()
    dlogits[xp.arange(N), labels] -= 1
    dlogits *= dout / N
    return dlogits
