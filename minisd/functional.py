"""The math of every layer: forward/backward pairs, written next to each other.

Each ``*_forward`` returns its output and a ``cache`` (the few arrays its
backward needs); each ``*_backward`` takes the upstream gradient ``dout`` and
that cache and returns the gradients. Arrays are NCHW:
N images, C channels, H rows, W columns. Nothing here keeps state: the
stateful classes in :mod:`minisd.layers` wrap these pairs.

All functions are written once for NumPy and CuPy through ``xp = get_xp(x)``.

Convolution comes twice: ``conv2d_naive_*`` is the textbook loop over output
pixels (slow, obvious, for teaching and testing); ``conv2d_*`` is the fast
im2col + matrix product version that the network uses. Tests check they agree.
"""
from __future__ import annotations

import numpy as np

from .backend import get_xp
from .parallel import for_each_chunk, scratch

# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """Output length along one spatial axis: floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel_size) // stride + 1


def channel_sum(x):
    """Sum an (N, C, H, W) array over N, H and W: shape (C,).

    Summing the contiguous H*W rows first and then the batch is much faster
    than ``x.sum(axis=(0, 2, 3))``, which strides across memory.
    """
    N, C = x.shape[:2]
    return x.reshape(N, C, -1).sum(axis=2).sum(axis=0)


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
# convolution: im2col + one matrix product per chunk of images
# ---------------------------------------------------------------------------


def im2col(x, kernel_size: int, stride: int = 1, padding: int = 0, out=None, pad_buffer=None):
    """Unfold every k x k receptive field of ``x`` into a column.

    x: (N, C, H, W) -> cols: (N, C*k*k, Ho*Wo), where column (h, w) of image n
    holds the patch that output pixel (h, w) sees. Built with k*k strided slice
    copies (one per kernel offset), never a loop over pixels.
    ``out`` (N, C, k, k, Ho, Wo) and ``pad_buffer`` (N, C, H+2p, W+2p, with a zero
    border) are optional reusable buffers (see :func:`minisd.parallel.scratch`).
    """
    xp = get_xp(x)
    N, C, H, W = x.shape
    k, s = kernel_size, stride
    Ho, Wo = conv_output_size(H, k, s, padding), conv_output_size(W, k, s, padding)
    if padding and pad_buffer is not None:
        pad_buffer[:, :, padding:padding + H, padding:padding + W] = x  # the border stays zero
        xpad = pad_buffer
    else:
        xpad = pad_hw(x, padding)
    cols = xp.empty((N, C, k, k, Ho, Wo), dtype=x.dtype) if out is None else out
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


def _unfold(x, k, stride, padding, tag):
    """im2col into this thread's reusable buffers (NumPy), or a fresh array (CuPy)."""
    if get_xp(x) is not np:
        return im2col(x, k, stride, padding)
    N, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    out = scratch(tag + "-cols", (N, C, k, k, Ho, Wo), x.dtype)
    pad = scratch(f"{tag}-pad{padding}", (N, C, H + 2 * padding, W + 2 * padding), x.dtype, zero=True) if padding else None
    return im2col(x, k, stride, padding, out=out, pad_buffer=pad)


def _chunk_size(xp, N, chunk):
    """Images per chunk: small on the CPU (columns stay in cache), the whole batch on the GPU."""
    return N if xp is not np else (chunk or CONV_CHUNK)


# Images per im2col chunk on the CPU: a chunk's columns stay in the CPU cache
# while the matrix product reads them, which is far faster than one huge product.
CONV_CHUNK = 8


def conv2d_forward(x, weight, bias, stride=1, padding=0, chunk=None):
    """Fast convolution: ``out[n] = W2 @ im2col(x)[n]`` with W2 = weight as (F, C*k*k).

    x: (N, C, H, W), weight: (F, C, k, k), bias: (F,) or None
    returns out: (N, F, Ho, Wo), cache = (x, weight, ...)

    The batch is cut into chunks of a few images (run on threads on the CPU,
    see :mod:`minisd.parallel`). Only ``x`` is cached, not its columns (k*k
    times larger): the backward pass unfolds each chunk again, which costs
    copies, not products.
    """
    xp = get_xp(x)
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    w2 = weight.reshape(F, -1)
    out = xp.empty((N, F, Ho * Wo), dtype=x.dtype)

    def work(lo, hi):
        cols = _unfold(x[lo:hi], k, stride, padding, "x")  # (n, C*k*k, Ho*Wo)
        xp.matmul(w2, cols, out=out[lo:hi])                 # (F, Ckk) @ (n, Ckk, HoWo)

    for_each_chunk(work, N, _chunk_size(xp, N, chunk), xp)
    out = out.reshape(N, F, Ho, Wo)
    if bias is not None:
        out += bias[None, :, None, None]
    return out, (x, weight, bias is not None, stride, padding)


def conv2d_backward(dout, cache, chunk=None):
    """Backward of :func:`conv2d_forward`.

    With cols = im2col(x) and out = W2 @ cols:
      dW2 = sum_n dout[n] @ cols[n].T     dcols = W2.T @ dout     dx = col2im(dcols)
    For a stride-1 "same" convolution, dx is itself a convolution of dout with the
    flipped, transposed kernel (the "transposed convolution"), which is faster
    than folding columns back; the two are equal (tests check).
    dout: (N, F, Ho, Wo); returns dx (N, C, H, W), dweight (F, C, k, k), dbias (F,) or None
    """
    x, weight, has_bias, stride, padding = cache
    xp = get_xp(dout)
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    w2 = weight.reshape(F, -1)
    same = stride == 1 and 2 * padding == k - 1
    if same:  # (C, F*k*k): kernel flipped in space, in and out channels swapped
        w_flip = xp.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(C, -1)
    d3 = dout.reshape(N, F, -1)
    dx = xp.empty(x.shape, dtype=x.dtype)  # C-contiguous, so dx[lo:hi].reshape(...) is a view

    def work(lo, hi):
        cols = _unfold(x[lo:hi], k, stride, padding, "x")  # (n, Ckk, HoWo)
        g = d3[lo:hi]                                       # (n, F, HoWo)
        dw2 = xp.matmul(g, cols.transpose(0, 2, 1)).sum(axis=0)
        if same:
            g_cols = _unfold(dout[lo:hi], k, 1, padding, "dout")  # (n, F*k*k, H*W)
            xp.matmul(w_flip, g_cols, out=dx[lo:hi].reshape(hi - lo, C, H * W))
        else:
            dx[lo:hi] = col2im(xp.matmul(w2.T, g), (hi - lo, C, H, W), k, stride, padding)
        return dw2

    partial = for_each_chunk(work, N, _chunk_size(xp, N, chunk), xp)
    dweight = sum(partial[1:], partial[0]).reshape(weight.shape)
    dbias = channel_sum(dout) if has_bias else None
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


def batchnorm_train_forward(x, weight, bias, eps):
    """Normalise each channel with the statistics of this batch.

    x: (N, C, H, W), weight (gamma), bias (beta): (C,)
    xhat = (x - mean) / sqrt(var + eps), out = gamma * xhat + beta,
    with mean and (biased) var over N, H, W.
    returns out, batch_mean (C,), batch_var (C,) (biased), cache
    """
    N, C, H, W = x.shape
    m = N * H * W
    mean = channel_sum(x) / m
    centred = x - mean[None, :, None, None]
    var = channel_sum(centred * centred) / m
    inv_std = 1.0 / (var + eps) ** 0.5
    xhat = centred
    xhat *= inv_std[None, :, None, None]  # in place: ``centred`` is not needed again
    out = xhat * weight[None, :, None, None] + bias[None, :, None, None]
    return out, mean, var, (xhat, inv_std, weight)


def batchnorm_train_backward(dout, cache):
    """Backward of :func:`batchnorm_train_forward`.

    The mean and variance depend on every input, so besides the direct path
    dx = gamma * inv_std * dout two correction terms remain:
      dx = gamma * inv_std / m * (m * dout - sum(dout) - xhat * sum(dout * xhat))
    returns dx (N, C, H, W), dweight (C,), dbias (C,)
    """
    xhat, inv_std, weight = cache
    N, C, H, W = dout.shape
    m = N * H * W
    dbias = channel_sum(dout)
    dweight = channel_sum(dout * xhat)
    k = (weight * inv_std / m)[None, :, None, None]
    dx = m * dout - dbias[None, :, None, None] - xhat * dweight[None, :, None, None]
    dx *= k
    return dx, dweight, dbias


# The two functions above are the readable reference. On the CPU the layer
# uses the two below: the same formulas, evaluated a chunk of images at a time
# (on threads), with temporaries that stay in cache instead of batch-sized
# arrays written to and read back from memory. Tests check they agree.
BN_CHUNK = 32


def batchnorm_train_forward_fast(x, weight, bias, eps):
    """Same result as :func:`batchnorm_train_forward`, faster on the CPU (NumPy only)."""
    N, C, H, W = x.shape
    m = N * H * W
    chunks = lambda work: for_each_chunk(work, N, BN_CHUNK)

    mean = sum(chunks(lambda lo, hi: channel_sum(x[lo:hi]))) / m
    mean4 = mean[None, :, None, None]

    def centred_square_sum(lo, hi):
        c = scratch("bn", (hi - lo, C, H, W), x.dtype)
        np.subtract(x[lo:hi], mean4, out=c)
        np.multiply(c, c, out=c)
        return channel_sum(c)

    var = sum(chunks(centred_square_sum)) / m
    inv_std = 1.0 / (var + eps) ** 0.5
    xhat, out = np.empty_like(x), np.empty_like(x)

    def normalise(lo, hi):
        np.subtract(x[lo:hi], mean4, out=xhat[lo:hi])
        xhat[lo:hi] *= inv_std[None, :, None, None]
        np.multiply(xhat[lo:hi], weight[None, :, None, None], out=out[lo:hi])
        out[lo:hi] += bias[None, :, None, None]

    chunks(normalise)
    return out, mean, var, (xhat, inv_std, weight)


def batchnorm_train_backward_fast(dout, cache):
    """Same result as :func:`batchnorm_train_backward`, faster on the CPU (NumPy only)."""
    xhat, inv_std, weight = cache
    N, C, H, W = dout.shape
    m = N * H * W
    chunks = lambda work: for_each_chunk(work, N, BN_CHUNK)

    def sums(lo, hi):
        prod = scratch("bn", (hi - lo, C, H, W), dout.dtype)
        np.multiply(dout[lo:hi], xhat[lo:hi], out=prod)
        return channel_sum(dout[lo:hi]), channel_sum(prod)

    partial = chunks(sums)
    dbias = sum(p[0] for p in partial)
    dweight = sum(p[1] for p in partial)
    k = (weight * inv_std / m)[None, :, None, None]
    dx = np.empty_like(dout)

    def grad_input(lo, hi):  # dx = k * (m * dout - dbias - xhat * dweight)
        d = dx[lo:hi]
        np.multiply(xhat[lo:hi], dweight[None, :, None, None], out=d)
        d += dbias[None, :, None, None]
        scaled = scratch("bn", d.shape, d.dtype)
        np.multiply(dout[lo:hi], m, out=scaled)
        np.subtract(scaled, d, out=d)
        d *= k

    chunks(grad_input)
    return dx, dweight, dbias


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
    return dx, channel_sum(dout * xhat), channel_sum(dout)


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


def relu_forward_fast(x):
    """:func:`relu_forward` a chunk at a time on threads (NumPy only)."""
    out = np.empty_like(x)
    for_each_chunk(lambda lo, hi: np.maximum(x[lo:hi], 0, out=out[lo:hi]), x.shape[0], BN_CHUNK)
    return out, out


def relu_backward_fast(dout, cache):
    """:func:`relu_backward` a chunk at a time on threads (NumPy only)."""
    out, dx = cache, np.empty_like(dout)

    def work(lo, hi):
        mask = scratch("relu", out[lo:hi].shape, bool)
        np.greater(out[lo:hi], 0, out=mask)
        np.multiply(dout[lo:hi], mask, out=dx[lo:hi])

    for_each_chunk(work, dout.shape[0], BN_CHUNK)
    return dx


def global_avg_pool_forward(x):
    """(N, C, H, W) -> (N, C): the mean of each channel map."""
    N, C = x.shape[:2]
    return x.reshape(N, C, -1).mean(axis=2), x.shape


def global_avg_pool_backward(dout, cache):
    """Each of the H*W inputs of a mean receives dout / (H*W). dout: (N, C)."""
    xp = get_xp(dout)
    N, C, H, W = cache
    return xp.broadcast_to((dout / (H * W))[:, :, None, None], (N, C, H, W)).copy()


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


def shortcut_forward(x, out_channels: int, stride: int):
    """The paper's parameter-free shortcut (He et al.'s option A).

    Spatial: a 1x1 average pool with stride ``stride`` (the paper's code,
    ``SpatialAveragePooling(1, 1, stride, stride)``), i.e. keep every
    stride-th pixel. Channels: the new ``out_channels - C`` channels are zeros,
    appended after the old ones (``nn.Padding`` in the paper's code).
    x: (N, C, H, W) -> (N, out_channels, ceil(H/s), ceil(W/s)); identity when nothing changes.
    """
    xp = get_xp(x)
    N, C = x.shape[:2]
    y = x[:, :, ::stride, ::stride] if stride > 1 else x
    if out_channels == C:
        return y, (x.shape, stride)
    out = xp.zeros((N, out_channels) + y.shape[2:], dtype=x.dtype)
    out[:, :C] = y
    return out, (x.shape, stride)


def shortcut_backward(dout, cache):
    """The kept pixels of the old channels get their gradient back; the rest got none."""
    x_shape, stride = cache
    if tuple(dout.shape) == tuple(x_shape):
        return dout
    xp = get_xp(dout)
    C = x_shape[1]
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    dx[:, :, ::stride, ::stride] = dout[:, :C]
    return dx


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


def softmax_cross_entropy_backward(cache):
    """d(mean loss)/d(logits) = (softmax - one_hot(labels)) / N."""
    xp = get_xp(cache[0])
    probs, labels = cache
    N = probs.shape[0]
    dlogits = probs.copy()
    dlogits[xp.arange(N), labels] -= 1
    dlogits /= N
    return dlogits
