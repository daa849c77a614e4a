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
    copies, not products. On the CPU, the convolutions of the CIFAR ResNets
    take :func:`_conv2d_forward_cpu` (same result, faster unfolding).
    """
    xp = get_xp(x)
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    if xp is np and _phase_aligned(x.shape, k, stride, padding):
        return _conv2d_forward_cpu(x, weight, bias, stride, padding, chunk)
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
    if xp is np and _phase_aligned(x.shape, k, stride, padding):
        return _conv2d_backward_cpu(dout, cache, chunk)
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


# ---------------------------------------------------------------------------
# convolution: the CPU fast path (NumPy only)
# ---------------------------------------------------------------------------
#
# conv2d_forward / conv2d_backward above hand NumPy arrays to the functions
# below whenever the output is the input subsampled by the stride (Ho = H/s,
# Wo = W/s: every convolution of the CIFAR ResNets). Same results (tests
# check against the naive loop and the reference im2col/col2im); three changes:
#
# 1. im2col with long copies. The reference im2col makes C*k*k*Ho copies of
#    Wo values per image (32, 16 or 8 floats here), and at that length the
#    per-copy overhead, not the memory, sets the speed. :func:`im2col_fast`
#    makes C*k*k copies of Ho*Wo values instead (see there): 2-3x faster.
# 2. Backward of a stride-1 "same" convolution with ONE unfold per chunk
#    instead of two: both dx and dweight come from the columns of dout.
# 3. Chunk sizes by bytes: a chunk's columns take about CONV_CHUNK_BYTES,
#    whatever the layer's shape.

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
    Ho, Wo = conv_output_size(H, k, s, padding), conv_output_size(W, k, s, padding)
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
    """:func:`im2col` for a phase-aligned convolution (see :func:`_phase_aligned`), NumPy only.

    Equal to ``im2col(x, k, stride, padding)``: x (N, C, H, W) -> (N, C*k*k, Ho*Wo).
    Each phase of the input (x[:, :, a::s, b::s]: x itself for stride 1) is
    written flat, Ho*Wo values per channel, between zero margins. Kernel offset
    (di, dj) then needs ONE contiguous run of Ho*Wo values of one phase, shifted
    by qi rows and qj columns (see :func:`_offsets`): one copy per channel and
    offset instead of Ho copies of Wo values. Rows shifted past the top or
    bottom land in the zero margins; pixels shifted past the left or right
    border wrapped around to the neighbouring row, and are set to zero
    afterwards (that is where the zero padding belongs).
    Buffers are this thread's scratch buffers (see :func:`minisd.parallel.scratch`).
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
    """:func:`col2im` for a phase-aligned convolution, NumPy only: the adjoint of :func:`im2col_fast`.

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


def _conv2d_forward_cpu(x, weight, bias, stride, padding, chunk=None):
    """:func:`conv2d_forward` on the CPU for a phase-aligned convolution (same result)."""
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


def _conv2d_backward_cpu(dout, cache, chunk=None):
    """:func:`conv2d_backward` on the CPU for a phase-aligned convolution (same result).

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
#
# What makes them fast:
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


def batchnorm_train_forward_fast(x, weight, bias, eps):
    """Same result as :func:`batchnorm_train_forward`, faster on the CPU (NumPy only).

    Its cache is (x, mean, inv_std, weight): for :func:`batchnorm_train_backward_fast` only.
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
    return out, mean, var, (x, mean, inv_std, weight)


def batchnorm_train_backward_fast(dout, cache):
    """Same result as :func:`batchnorm_train_backward`, faster on the CPU (NumPy only).

    ``cache`` comes from :func:`batchnorm_train_forward_fast`.
    """
    x, mean, inv_std, weight = cache
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


# Bytes per chunk of the elementwise CPU paths (ReLU): large enough that the
# per-task overhead of the thread pool vanishes, small enough that the
# temporaries stay in cache (1-4 MB measured alike on a 2-core EPYC).
ELEMENTWISE_CHUNK_BYTES = 2 << 20


def _elementwise_chunk(x):
    return int(max(1, min(x.shape[0], ELEMENTWISE_CHUNK_BYTES // max(1, x[0].nbytes))))


def relu_forward_fast(x):
    """:func:`relu_forward` a chunk at a time on threads (NumPy only)."""
    out = np.empty_like(x)
    for_each_chunk(lambda lo, hi: np.maximum(x[lo:hi], 0, out=out[lo:hi]), x.shape[0], _elementwise_chunk(x))
    return out, out


def relu_backward_fast(dout, cache):
    """:func:`relu_backward` a chunk at a time on threads (NumPy only)."""
    out, dx = cache, np.empty_like(dout)

    def work(lo, hi):
        mask = scratch("relu", out[lo:hi].shape, bool)
        np.greater(out[lo:hi], 0, out=mask)
        np.multiply(dout[lo:hi], mask, out=dx[lo:hi])

    for_each_chunk(work, dout.shape[0], _elementwise_chunk(dout))
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
