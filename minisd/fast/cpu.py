"""The CPU speed appendix: the functions of :mod:`minisd.functional`, faster on NumPy.

Read :mod:`minisd.functional` first: that is the algorithm. This module
computes the same results on the CPU with three tricks that have nothing to
do with stochastic depth or backprop (read it with lesson 10):

* **threads** - the batch is cut into chunks that run on a thread pool
  (NumPy releases the GIL inside copies and products; see :mod:`minisd.fast.threads`);
* **chunks that fit in the CPU cache** - a chunk's temporaries (im2col columns,
  BN temporaries) are read back while still in cache, in reused scratch buffers;
* **fewer, longer memory passes** - im2col with long copies, BN as per-channel
  affine maps, one unfold instead of two in a convolution's backward.

Every public function here has the name, arguments and results of its
readable twin in :mod:`minisd.functional` (the docstrings say which), and
``tests/test_fast_cpu.py`` checks each pair equal, in float32 and float64, on
the shapes this module speeds up and on others. Functions with no faster
version are :mod:`minisd.functional`'s own, imported at the bottom, so a layer
can call ``impl.<name>`` whichever of the two modules ``impl`` is
(:mod:`minisd.fast.switch` chooses, in one place). NumPy only.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .. import functional
from .threads import for_each_chunk, scratch

# No faster version of these: the readable functions serve as they are.
from ..functional import (avg_pool_backward, avg_pool_forward, concat_backward, concat_forward,  # noqa: F401
                         conv1x1_backward, conv1x1_forward)
from ..functional import (batchnorm_eval_backward, batchnorm_eval_forward, batchnorm_running_average,  # noqa: F401
                         global_avg_pool_backward, global_avg_pool_forward, linear_backward, linear_forward,
                         shortcut_backward, shortcut_forward, softmax_cross_entropy_backward,
                         softmax_cross_entropy_forward)

# ---------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------
#
# The convolutions of the CIFAR ResNets are all "phase aligned": the output is
# the input subsampled by the stride (Ho = H/s, Wo = W/s). For those,
# conv2d_forward / conv2d_backward below differ from the readable pair in:
#
# 1. im2col with long copies. The readable im2col makes C*k*k*Ho copies of
#    Wo values per image (32, 16 or 8 floats here), and at that length the
#    per-copy overhead, not the memory, sets the speed. :func:`im2col_fast`
#    makes C*k*k copies of Ho*Wo values instead (see there): 2-3x faster.
# 2. Backward of a stride-1 "same" convolution with ONE unfold per chunk
#    instead of two: both dx and dweight come from the columns of dout.
# 3. Chunks of a few images, on threads, sized by bytes: a chunk's columns
#    take about CONV_CHUNK_BYTES, whatever the layer's shape, and are used
#    while they are still in the cache.
# Other shapes run the readable functions unchanged.

# Bytes of im2col columns per chunk on the CPU (measured on a 2-core EPYC
# with 512 KB L2 per core and a 32 MB L3; 2-8 MB were best).
CONV_CHUNK_BYTES = 4 << 20


def _phase_aligned(x_shape, k, stride, padding):
    """Whether the output is the input subsampled by the stride: Ho = H/s and Wo = W/s.

    True for stride-1 "same" convolutions (k odd, padding (k-1)/2) and for the
    stride-2, 3x3, padding-1 convolutions of even-sized inputs.
    """
    _, _, H, W = x_shape
    s = stride
    Ho, Wo = functional.conv_output_size(H, k, s, padding), functional.conv_output_size(W, k, s, padding)
    return H % s == 0 and W % s == 0 and Ho * s == H and Wo * s == W


def _offsets(k, stride, padding):
    """For each kernel offset d: (q, a) with d - padding = stride*q + a, 0 <= a < stride.

    Output pixel r, kernel offset d reads input pixel stride*r + d - padding =
    stride*(r + q) + a: pixel r + q of the phase-a subsampled input x[a::stride].
    """
    return [divmod(d - padding, stride) for d in range(k)]


def _phase_layout(x_shape, k, stride, padding):
    """Geometry shared by :func:`im2col_fast` and :func:`col2im_fast`."""
    N, C, H, W = x_shape
    Ho, Wo = H // stride, W // stride
    offs = _offsets(k, stride, padding)
    qs = [q for q, _ in offs]
    lo_margin = max(0, -min(qs)) * (Wo + 1)  # zeros before and after each flat phase image
    hi_margin = max(0, max(qs)) * (Wo + 1)
    phases = sorted({a for _, a in offs})
    return Ho, Wo, offs, lo_margin, lo_margin + Ho * Wo + hi_margin, phases


def im2col_fast(x, k, stride, padding, tag="x"):
    """:func:`minisd.functional.im2col` for a phase-aligned convolution (see :func:`_phase_aligned`).

    Equal to ``functional.im2col(x, k, stride, padding)``: x (N, C, H, W) -> (N, C*k*k, Ho*Wo).
    Each phase of the input (x[:, :, a::s, b::s]: x itself for stride 1) is
    written flat, Ho*Wo values per channel, between zero margins. Kernel offset
    (di, dj) then needs ONE contiguous run of Ho*Wo values of one phase, shifted
    by qi rows and qj columns (see :func:`_offsets`): one copy per channel and
    offset instead of Ho copies of Wo values. Rows shifted past the top or
    bottom land in the zero margins; pixels shifted past the left or right
    border wrapped around to the neighbouring row, and are set to zero
    afterwards (that is where the zero padding belongs).
    Buffers are this thread's scratch buffers (see :func:`minisd.fast.threads.scratch`).
    """
    N, C, H, W = x.shape
    s = stride
    Ho, Wo, offs, m0, flat_len, phases = _phase_layout(x.shape, k, s, padding)
    L = Ho * Wo
    flats = {}
    for a in phases:
        for b in phases:
            f = scratch(f"{tag}-phase{a}{b}-{m0}", (N, C, flat_len), x.dtype, zero=True)
            _image_view(f, m0, Ho, Wo)[...] = x if s == 1 else x[:, :, a::s, b::s]  # margins stay zero
            flats[a, b] = f
    cols = scratch(tag + "-cols", (N, C, k, k, L), x.dtype)
    for di, (qi, a) in enumerate(offs):
        for dj, (qj, b) in enumerate(offs):
            start = m0 + qi * Wo + qj
            cols[:, :, di, dj] = flats[a, b][:, :, start:start + L]
    _zero_wrapped(cols.reshape(N, C, k, k, Ho, Wo), offs, Wo)
    return cols.reshape(N, C * k * k, L)


def _zero_wrapped(grid, offs, Wo):
    """Zero the columns of (N, C, k, k, Ho, Wo) whose column shift crossed the border."""
    for dj, (qj, _) in enumerate(offs):
        if qj < 0:
            grid[:, :, :, dj, :, :-qj] = 0
        elif qj > 0:
            grid[:, :, :, dj, :, Wo - qj:] = 0


def col2im_fast(cols, x_shape, k, stride, padding, tag="dx", out=None):
    """:func:`minisd.functional.col2im` for a phase-aligned convolution: the adjoint of :func:`im2col_fast`.

    cols: (N, C*k*k, Ho*Wo) -> (N, C, H, W), written into ``out`` if given.
    ``cols`` is used as scratch (its wrapped-around entries are zeroed).
    Each kernel offset adds one contiguous run onto a flat phase image.
    """
    N, C, H, W = x_shape
    s = stride
    Ho, Wo, offs, m0, flat_len, phases = _phase_layout(x_shape, k, s, padding)
    L = Ho * Wo
    cols = cols.reshape(N, C, k, k, L)
    _zero_wrapped(cols.reshape(N, C, k, k, Ho, Wo), offs, Wo)
    flats = {}
    for a in phases:
        for b in phases:
            f = scratch(f"{tag}-phase{a}{b}-{m0}", (N, C, flat_len), cols.dtype)
            f.fill(0)
            flats[a, b] = f
    for di, (qi, a) in enumerate(offs):
        for dj, (qj, b) in enumerate(offs):
            start = m0 + qi * Wo + qj
            flats[a, b][:, :, start:start + L] += cols[:, :, di, dj]
    if out is None:
        out = np.empty(x_shape, dtype=cols.dtype)
    if s == 1:
        out[...] = _image_view(flats[0, 0], m0, Ho, Wo)
        return out
    if len(phases) < s:  # some input pixels feed no output pixel
        out.fill(0)
    for (a, b), f in flats.items():
        out[:, :, a::s, b::s] = _image_view(f, m0, Ho, Wo)
    return out


def _image_view(flat, start, Ho, Wo):
    """The (N, C, Ho, Wo) view of the flat images that begin at ``start`` (never a copy)."""
    v = flat[:, :, start:start + Ho * Wo]
    v.shape = v.shape[:2] + (Ho, Wo)  # raises rather than copy
    return v


def _cpu_chunk(N, bytes_per_image, chunk):
    """Images per CPU chunk: ``chunk`` if given, else about CONV_CHUNK_BYTES of columns."""
    if chunk:
        return chunk
    return int(max(1, min(N, CONV_CHUNK_BYTES // max(1, bytes_per_image))))


def conv2d_forward(x, weight, bias, stride=1, padding=0, chunk=None):
    """Equals :func:`minisd.functional.conv2d_forward` (same cache); ``chunk``: images per chunk.

    Phase-aligned convolutions (see :func:`_phase_aligned`) unfold with
    :func:`im2col_fast` a chunk at a time on threads; other shapes run the
    readable function.
    """
    if not _phase_aligned(x.shape, weight.shape[2], stride, padding):
        return functional.conv2d_forward(x, weight, bias, stride, padding)
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    Ho, Wo = H // stride, W // stride
    w2 = weight.reshape(F, -1)
    out = np.empty((N, F, Ho * Wo), dtype=x.dtype)

    def work(lo, hi):
        cols = im2col_fast(x[lo:hi], k, stride, padding, "x")  # (n, C*k*k, Ho*Wo)
        np.matmul(w2, cols, out=out[lo:hi])

    for_each_chunk(work, N, _cpu_chunk(N, C * k * k * Ho * Wo * x.itemsize, chunk))
    out = out.reshape(N, F, Ho, Wo)
    if bias is not None:
        out += bias[None, :, None, None]
    return out, (x, weight, bias is not None, stride, padding)


def conv2d_backward(dout, cache, chunk=None):
    """Equals :func:`minisd.functional.conv2d_backward`; ``cache`` from :func:`conv2d_forward`.

    Phase-aligned convolutions only (other shapes run the readable function).

    Stride 1 with F <= C (every convolution inside the ResNet's stages): ONE
    unfold per chunk, of dout, G = im2col(dout), and both gradients from it:
      dx = w_flip @ G                        (the transposed convolution)
      dweight[f, c, di, dj] = sum_n (x[n] @ G[n].T)[c, f, k-1-di, k-1-dj]
    The second line is dW2 = sum_n dout[n] @ im2col(x)[n].T read the other way
    round: a weight connects output pixel q with input pixel q + offset, i.e.
    input pixel q' with output pixel q' - offset, so unfolding dout with the
    mirrored offsets gives the same sums, without unfolding x.
    Otherwise (strided, or more output than input channels, like the first
    layer), the textbook formulas with the fast unfold and fold of x's columns:
      dweight = sum_n dout[n] @ im2col(x)[n].T     dx = col2im(W2.T @ dout)
    """
    x, weight, has_bias, stride, padding = cache
    if not _phase_aligned(x.shape, weight.shape[2], stride, padding):
        return functional.conv2d_backward(dout, cache)
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    Ho, Wo = H // stride, W // stride
    L = Ho * Wo
    dx = np.empty(x.shape, dtype=x.dtype)
    d3 = dout.reshape(N, F, L)

    if stride == 1 and F <= C:
        w_flip = np.ascontiguousarray(weight[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(C, -1)

        def work(lo, hi):
            n = hi - lo
            g_cols = im2col_fast(dout[lo:hi], k, 1, padding, "dout")  # (n, F*k*k, H*W)
            np.matmul(w_flip, g_cols, out=dx[lo:hi].reshape(n, C, L))
            prod = scratch("conv-dw", (n, C, F * k * k), x.dtype)
            np.matmul(x[lo:hi].reshape(n, C, L), g_cols.transpose(0, 2, 1), out=prod)
            return prod.sum(axis=0)  # (C, F*k*k), kernel mirrored

        partial = for_each_chunk(work, N, _cpu_chunk(N, F * k * k * L * x.itemsize, chunk))
        dw_t = sum(partial[1:], partial[0]).reshape(C, F, k, k)
        dweight = np.ascontiguousarray(dw_t[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    else:
        w2 = weight.reshape(F, -1)

        def work(lo, hi):
            n = hi - lo
            cols = im2col_fast(x[lo:hi], k, stride, padding, "x")  # (n, C*k*k, L)
            g = d3[lo:hi]
            prod = scratch("conv-dw", (n, F, C * k * k), x.dtype)
            np.matmul(g, cols.transpose(0, 2, 1), out=prod)
            dw2 = prod.sum(axis=0)
            dcols = scratch("conv-dcols", (n, C * k * k, L), x.dtype)
            np.matmul(w2.T, g, out=dcols)
            col2im_fast(dcols, (n, C, H, W), k, stride, padding, "dx", out=dx[lo:hi])
            return dw2

        partial = for_each_chunk(work, N, _cpu_chunk(N, C * k * k * L * x.itemsize, chunk))
        dweight = sum(partial[1:], partial[0]).reshape(weight.shape)
    dbias = _channel_sum(dout) if has_bias else None
    return dx, dweight, dbias


# ---------------------------------------------------------------------------
# batch normalisation (training mode; eval mode is one affine map: the readable one)
# ---------------------------------------------------------------------------
#
# The same formulas as the readable pair, evaluated a chunk of images at a time
# (on threads), with temporaries that stay in cache instead of batch-sized
# arrays written to and read back from memory:
# * one pass over memory for the statistics: each chunk (small enough to stay
#   in the cache) gives its own mean and centred sum of squares, and the
#   chunks are merged exactly (Chan et al.'s parallel variance formula);
# * sums over rows of H*W values are matrix-vector products with a vector of
#   ones (BLAS), much faster than NumPy's reductions over short rows;
# * the forward keeps ``x`` for the backward instead of writing xhat (same
#   bytes cached, one batch-sized write less); the backward works with
#   x - mean a chunk at a time, in cache;
# * per channel, the formulas are affine maps (out = x * scale + shift, and
#   dx = a * dout + b * x + c): fewer passes over each chunk
#   (measured: BN forward + backward 126 -> 104 ms per ResNet-20 step).

# Bytes of input per chunk. Measured on a 2-core EPYC (512 KB L2 per core, 32 MB
# L3), ResNet-20 step: 1-2 MB best; 256 KB made twice as many thread-pool tasks
# and the BN layers ~1.6x slower.
BN_CHUNK_BYTES = 1 << 20


def _bn_chunk(x):
    N = x.shape[0]
    return int(max(1, min(N, BN_CHUNK_BYTES // max(1, x[0].nbytes))))


def _row_sums(a3, ones):
    """(n, C, M) -> (C,): sums over M by a matrix-vector product, then over n."""
    n, C, M = a3.shape
    return (a3.reshape(n * C, M) @ ones).reshape(n, C).sum(axis=0)


def _as_rows(x):
    """x (N, C, H, W) as (N, C, H*W) (a view when x is contiguous)."""
    N, C = x.shape[:2]
    return x.reshape(N, C, -1)


class FastBatchNormCache(NamedTuple):
    """The cache of :func:`batchnorm_train_forward`: ``x`` instead of xhat (same bytes)."""
    x: np.ndarray        # (N, C, H, W)
    mean: np.ndarray     # (C,) batch mean
    inv_std: np.ndarray  # (C,)
    weight: np.ndarray   # (C,) gamma
    var: np.ndarray      # (C,) biased batch variance


def batchnorm_train_forward(x, weight, bias, eps):
    """Equals :func:`minisd.functional.batchnorm_train_forward`; its cache is a :class:`FastBatchNormCache`.

    Like the readable cache it carries ``mean`` and ``var`` for the layer's running statistics.
    """
    N, C, H, W = x.shape
    m, HW = N * H * W, H * W
    x3 = _as_rows(x)
    ones = np.ones(HW, dtype=x.dtype)

    def chunk_stats(lo, hi):  # count, mean and centred sum of squares of one chunk
        xc, count = x3[lo:hi], (hi - lo) * HW
        mu = _row_sums(xc, ones) / count
        c = scratch("bn", xc.shape, x.dtype)
        np.subtract(xc, mu[None, :, None], out=c)
        np.multiply(c, c, out=c)
        return count, mu, _row_sums(c, ones)

    parts = for_each_chunk(chunk_stats, N, _bn_chunk(x))
    mean = sum(count * mu for count, mu, _ in parts) / m
    var = sum(m2 + count * (mu - mean) ** 2 for count, mu, m2 in parts) / m  # Chan et al.
    inv_std = 1.0 / (var + eps) ** 0.5
    out = np.empty(x.shape, dtype=x.dtype)
    out3 = out.reshape(N, C, HW)
    # (x - mean) * inv_std * gamma + beta as one affine map per channel, two passes
    # instead of four (PyTorch's CPU kernel does the same)
    scale = inv_std * weight
    scale3, shift3 = scale[None, :, None], (bias - mean * scale)[None, :, None]

    def normalise(lo, hi):  # out = x * scale + shift
        o = out3[lo:hi]
        np.multiply(x3[lo:hi], scale3, out=o)
        o += shift3

    for_each_chunk(normalise, N, _bn_chunk(x))
    return out, FastBatchNormCache(x, mean, inv_std, weight, var)


def batchnorm_train_backward(dout, cache):
    """Equals :func:`minisd.functional.batchnorm_train_backward`; ``cache`` from :func:`batchnorm_train_forward`."""
    x, mean, inv_std, weight = cache.x, cache.mean, cache.inv_std, cache.weight
    N, C, H, W = dout.shape
    m, HW = N * H * W, H * W
    x3, d3 = _as_rows(x), _as_rows(dout)
    ones = np.ones(HW, dtype=dout.dtype)
    mean3 = mean[None, :, None]

    def sums(lo, hi):  # sum(dout) and sum(dout * (x - mean)) of one chunk
        prod = scratch("bn", x3[lo:hi].shape, dout.dtype)
        np.subtract(x3[lo:hi], mean3, out=prod)
        prod *= d3[lo:hi]
        return _row_sums(d3[lo:hi], ones), _row_sums(prod, ones)

    partial = for_each_chunk(sums, N, _bn_chunk(dout))
    dbias = sum(p[0] for p in partial)
    dweight = sum(p[1] for p in partial) * inv_std  # sum(dout * xhat)
    # The reference's dx = k * (m * dout - dbias - xhat * dweight), k = gamma * inv_std / m,
    # with xhat = (x - mean) * inv_std, is per channel  a * dout + b * x + c:
    k = weight * inv_std / m
    a3 = (k * m)[None, :, None]
    b = -k * dweight * inv_std
    b3, c3 = b[None, :, None], (-k * dbias - b * mean)[None, :, None]
    dx = np.empty(dout.shape, dtype=dout.dtype)
    dx3 = dx.reshape(N, C, HW)

    def grad_input(lo, hi):  # four passes over a chunk in cache instead of seven
        d = dx3[lo:hi]
        np.multiply(x3[lo:hi], b3, out=d)
        d += c3
        t = scratch("bn", d.shape, dout.dtype)
        np.multiply(d3[lo:hi], a3, out=t)
        d += t

    for_each_chunk(grad_input, N, _bn_chunk(dout))
    return dx, dweight, dbias


# ---------------------------------------------------------------------------
# ReLU
# ---------------------------------------------------------------------------

# Bytes per chunk of the elementwise CPU paths (ReLU): large enough that the
# per-task overhead of the thread pool vanishes, small enough that the
# temporaries stay in cache (1-4 MB measured alike on a 2-core EPYC).
ELEMENTWISE_CHUNK_BYTES = 2 << 20


def _elementwise_chunk(x):
    return int(max(1, min(x.shape[0], ELEMENTWISE_CHUNK_BYTES // max(1, x[0].nbytes))))


def relu_forward(x):
    """Equals :func:`minisd.functional.relu_forward`: (N, C, H, W) inputs a chunk at a time on threads."""
    if x.ndim != 4:
        return functional.relu_forward(x)
    out = np.empty_like(x)
    for_each_chunk(lambda lo, hi: np.maximum(x[lo:hi], 0, out=out[lo:hi]), x.shape[0], _elementwise_chunk(x))
    return out, out


def relu_backward(dout, cache):
    """Equals :func:`minisd.functional.relu_backward`."""
    if dout.ndim != 4:
        return functional.relu_backward(dout, cache)
    out, dx = cache, np.empty_like(dout)

    def work(lo, hi):
        mask = scratch("relu", out[lo:hi].shape, bool)
        np.greater(out[lo:hi], 0, out=mask)
        np.multiply(dout[lo:hi], mask, out=dx[lo:hi])

    for_each_chunk(work, dout.shape[0], _elementwise_chunk(dout))
    return dx


def _channel_sum(x):
    """x.sum(axis=(0, 2, 3)) for an (N, C, H, W) array, summing the contiguous H*W rows first
    (much faster than a reduction that strides across memory)."""
    N, C = x.shape[:2]
    return x.reshape(N, C, -1).sum(axis=2).sum(axis=0)

