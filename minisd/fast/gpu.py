"""The GPU speed appendix: the functions of :mod:`minisd.functional`, in fewer CuPy kernels.

Read :mod:`minisd.functional` first: that is the algorithm. On a GPU the
arithmetic of a CIFAR ResNet is quick; what costs is the host, which spends
5-10 microseconds launching each kernel, and the readable code launches one
per array operation: about 12,000 in one ResNet-110 training step (batch 128),
60-120 ms of host time against a few ms of GPU work. This module computes the
same results with fewer launches (read it with lesson 10):

* **convolution as one gather and one matrix product.** The im2col columns
  come from ONE ``xp.take`` with an index array made once per shape (instead
  of zeros + copy for the padding and k*k slice copies), laid out so that one
  plain matrix product serves the whole batch (no per-image pointer arrays).
  The backward gathers the columns of ``dout`` the same way: ``dx`` is one
  more matrix product (the transposed convolution: no col2im), and for
  stride 1 the weight gradient comes from those same columns.
* **batch norm in fused kernels**: the mean, the variance and the
  normalisation are one kernel each, and so are ``sum(dout * xhat)`` and
  ``dx`` in the backward (``xhat`` is recomputed inside them from the cached
  ``x``, which is not written at all).
* **batch norm's running statistics** as one fused update each.
* **ReLU backward as one kernel.**

With these and the flat SGD update (:mod:`minisd.fast.flat`), a training step
launches a fifth of the kernels the readable code does (``python
tests/test_gpu_path.py`` counts them on the CuPy stand-in; the counts are in
benchmarks/RESULTS.md).

Fused kernels are written with :func:`minisd.backend.fuse`: the decorated
function's body is plain array code - it runs as written on NumPy (the tests
compare it with its readable twin there and on the CuPy stand-in) and
``cupy.fuse`` compiles it into one kernel on the GPU. Only elementwise
operations and one reduction at the end go inside.

Layout: a convolution's output is returned as an ``(N, F, Ho, Wo)`` view of
memory ordered ``(F, Ho, Wo, N)`` (what the matrix product gives; copying it
to NCHW order would be one more kernel per convolution). Every operation
after it accepts any strides.

Every public function here has the name, arguments and results of its
readable twin in :mod:`minisd.functional` (docstrings say which; caches may
differ, as each backward takes its own forward's cache), and
``tests/test_fast_gpu.py`` checks each pair equal. Functions with no faster
version are :mod:`minisd.functional`'s own, imported below, so a layer can
call ``impl.<name>`` whichever module :mod:`minisd.fast.switch` chose.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..backend import fuse, get_xp
from ..functional import conv_output_size

# No faster version of these: the readable functions serve as they are.
from ..functional import (avg_pool_backward, avg_pool_forward, concat_backward, concat_forward,  # noqa: F401
                         conv1x1_backward, conv1x1_forward)
from ..functional import (batchnorm_eval_backward, batchnorm_eval_forward, global_avg_pool_backward,  # noqa: F401
                         global_avg_pool_forward, linear_backward, linear_forward, relu_forward, shortcut_backward,
                         shortcut_forward, softmax_cross_entropy_backward, softmax_cross_entropy_forward)

# ---------------------------------------------------------------------------
# convolution: a gather and a matrix product
# ---------------------------------------------------------------------------
#
# An image batch a (N, C, H, W) is first copied into a buffer of C*H*W + 1 rows
# and N columns: row c*H*W + h*W + w holds pixel (c, h, w) of every image, and
# the last row is zero. A patch entry is then one row number: the pixel it
# reads, or the zero row where it falls in the padding. The columns of the
# convolution, (C*k*k, Ho*Wo*N), are ONE gather of rows of that buffer, and
# weight (F, C*k*k) @ columns is the whole batch's output, (F, Ho*Wo*N).

_buffers = {}  # (array module, shape, dtype, tag) -> the buffer of _gather_source (zero last row)
_rows = {}     # (array module, geometry) -> row numbers of _forward_rows / _backward_rows


def _gather_source(a, tag):
    """``a`` (N, C, H, W) as rows of a reused (C*H*W + 1, N) buffer whose last row is zero: one copy kernel.

    The buffer for each shape is made once (the zero row with it) and reused
    by every call: its contents are only valid until the next call with the
    same shape and ``tag``.
    """
    xp = get_xp(a)
    N, C, H, W = a.shape
    key = (xp, (C * H * W + 1, N), a.dtype, tag)
    if key not in _buffers:
        _buffers[key] = xp.zeros(key[1], dtype=a.dtype)
    source = _buffers[key]
    source[:-1].reshape(C, H, W, N)[...] = a.transpose(1, 2, 3, 0)
    return source


def _forward_rows(xp, C, H, W, k, stride, padding):
    """(C*k*k, Ho*Wo) row numbers into :func:`_gather_source`: the patch of every output pixel.

    Entry ((c, di, dj), (i, j)) reads input pixel (c, i*stride + di - padding,
    j*stride + dj - padding), or the zero row when that lies in the padding.
    Made with NumPy on the host and copied to the device once per shape.
    """
    key = (xp, "forward", C, H, W, k, stride, padding)
    if key not in _rows:
        Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
        c, di, dj, i, j = np.ix_(range(C), range(k), range(k), range(Ho), range(Wo))
        h, w = i * stride + di - padding, j * stride + dj - padding
        inside = (0 <= h) & (h < H) & (0 <= w) & (w < W)
        _rows[key] = xp.asarray(np.where(inside, (c * H + h) * W + w, C * H * W).reshape(C * k * k, Ho * Wo))
    return _rows[key]


def _backward_rows(xp, F, Ho, Wo, H, W, k, stride, padding):
    """(F*k*k, H*W) row numbers into :func:`_gather_source` of ``dout``: the transposed convolution.

    Input pixel (h, w) was seen by kernel offset (di, dj) of output pixel
    ((h + padding - di) / stride, (w + padding - dj) / stride) when both are
    whole numbers inside the output: entry ((f, di, dj), (h, w)) reads that
    pixel of channel f of dout, or the zero row.
    """
    key = (xp, "backward", F, Ho, Wo, H, W, k, stride, padding)
    if key not in _rows:
        f, di, dj, h, w = np.ix_(range(F), range(k), range(k), range(H), range(W))
        i, i_rest = np.divmod(h + padding - di, stride)
        j, j_rest = np.divmod(w + padding - dj, stride)
        inside = (i_rest == 0) & (j_rest == 0) & (0 <= i) & (i < Ho) & (0 <= j) & (j < Wo)
        _rows[key] = xp.asarray(np.where(inside, (f * Ho + i) * Wo + j, F * Ho * Wo).reshape(F * k * k, H * W))
    return _rows[key]


def _gather(source, rows):
    """Rows ``rows`` (R, P) of ``source`` (S, N) as an (R, P*N) matrix: one ``take`` kernel."""
    xp = get_xp(source)
    return xp.take(source, rows, axis=0).reshape(rows.shape[0], -1)


def conv2d_forward(x, weight, bias, stride=1, padding=0):
    """Equals :func:`minisd.functional.conv2d_forward` (same cache); three kernels.

    columns = one gather (the im2col, (C*k*k, Ho*Wo*N)); out = weight (F, C*k*k)
    @ columns, one matrix product for the batch, returned as an (N, F, Ho, Wo)
    view (memory ordered (F, Ho, Wo, N)). Plus one for a bias.
    """
    xp = get_xp(x)
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    Ho, Wo = conv_output_size(H, k, stride, padding), conv_output_size(W, k, stride, padding)
    cols = _gather(_gather_source(x, "x"), _forward_rows(xp, C, H, W, k, stride, padding))
    out = (weight.reshape(F, -1) @ cols).reshape(F, Ho, Wo, N).transpose(3, 0, 1, 2)
    if bias is not None:
        out += bias[None, :, None, None]
    return out, (x, weight, bias is not None, stride, padding)


def conv2d_backward(dout, cache):
    """Equals :func:`minisd.functional.conv2d_backward`; six or seven kernels.

    With G = the columns of dout for the transposed convolution (one copy, one
    gather: :func:`_backward_rows`), G[(f, di, dj), (h, w, n)] = the dout value
    that input pixel (h, w) of image n sent through weight [f, :, di, dj]:
      dx[c]      = sum over f, di, dj of weight[f, c, di, dj] * G[(f, di, dj)]
                   (one matrix product: no col2im; the weight reordered (C, F*k*k), a small copy)
      dweight    = dout (F, Ho*Wo*N) @ columns(x).T           (any stride)
      dweight[f, c, di, dj] = (G @ x (C, H*W*N).T)[(f, di, dj), c]   (stride 1: no columns of x)
    The stride-1 line is the first one read the other way round: weight
    [f, c, di, dj] links input pixel p with output pixel p - offset, and G holds
    exactly those pairs. dx and dweight are returned as views (no reordering
    copies); the layer adds dweight into its gradient.
    """
    x, weight, has_bias, stride, padding = cache
    xp = get_xp(dout)
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    _, _, Ho, Wo = dout.shape
    dout_rows = _gather_source(dout, "dout")                  # (F*Ho*Wo + 1, N)
    g = _gather(dout_rows, _backward_rows(xp, F, Ho, Wo, H, W, k, stride, padding))  # (F*k*k, H*W*N)
    if stride == 1:
        x2 = _gather_source(x, "x")[:-1].reshape(C, -1)        # (C, H*W*N), a view of the buffer
        dweight = (g @ x2.T).reshape(F, k, k, C).transpose(0, 3, 1, 2)
    else:
        cols = _gather(_gather_source(x, "x"), _forward_rows(xp, C, H, W, k, stride, padding))
        dweight = (dout_rows[:-1].reshape(F, -1) @ cols.T).reshape(weight.shape)
    w_t = weight.transpose(1, 0, 2, 3).reshape(C, -1)        # (C, F*k*k): a copy
    dx = (w_t @ g).reshape(C, H, W, N).transpose(3, 0, 1, 2)
    dbias = dout.sum(axis=(0, 2, 3)) if has_bias else None
    return dx, dweight, dbias


# ---------------------------------------------------------------------------
# batch normalisation (training mode; eval mode is the readable affine map)
# ---------------------------------------------------------------------------
#
# The readable pair's formulas, each line a fused kernel. Per-channel arrays
# enter the kernels as (1, C, 1, 1) views, so that they broadcast as in the
# readable code. The forward caches x instead of xhat (the same bytes, and
# one batch-sized write less); the backward recomputes xhat in its kernels.


class GpuBatchNormCache(NamedTuple):
    """The cache of :func:`batchnorm_train_forward`. Like the readable cache it carries the
    batch ``mean`` and ``var`` (C,) for the layer's running statistics."""
    x: object       # (N, C, H, W) the input
    mean: object    # (C,)
    var: object     # (C,) biased batch variance
    weight: object  # (C,) gamma
    eps: float


def _per_channel(a):
    """(C,) -> (1, C, 1, 1): a view that broadcasts against (N, C, H, W)."""
    return a.reshape(1, -1, 1, 1)


@fuse
def _channel_mean(xp, x, m):
    """x.mean(axis=(0, 2, 3)) as one kernel (m = N*H*W values per channel)."""
    return xp.sum(x, axis=(0, 2, 3)) / m


@fuse
def _channel_var(xp, x, mean, m):
    """The biased variance per channel, centred on ``mean`` (1, C, 1, 1): one kernel."""
    centred = x - mean
    return xp.sum(centred * centred, axis=(0, 2, 3)) / m


@fuse
def _normalise(xp, x, mean, var, weight, bias, eps):
    """out = xhat * gamma + beta with xhat = (x - mean) / sqrt(var + eps): one kernel."""
    inv_std = 1.0 / (var + eps) ** 0.5
    xhat = (x - mean) * inv_std
    return xhat * weight + bias


@fuse
def _sum_dout_xhat(xp, dout, x, mean, var, eps):
    """sum(dout * xhat) over N, H, W (the gamma gradient): one kernel."""
    xhat = (x - mean) * (1.0 / (var + eps) ** 0.5)
    return xp.sum(dout * xhat, axis=(0, 2, 3))


@fuse
def _batchnorm_dx(xp, dout, x, mean, var, weight, dbias, dweight, eps, m):
    """The readable dx = gamma * inv_std / m * (m * dout - sum(dout) - xhat * sum(dout * xhat)): one kernel."""
    inv_std = 1.0 / (var + eps) ** 0.5
    xhat = (x - mean) * inv_std
    return weight * inv_std / m * (m * dout - dbias - xhat * dweight)


def batchnorm_train_forward(x, weight, bias, eps):
    """Equals :func:`minisd.functional.batchnorm_train_forward`; its cache is a :class:`GpuBatchNormCache`.

    Three kernels: the mean, the variance, the normalisation.
    """
    N, C, H, W = x.shape
    m = N * H * W
    mean = _channel_mean(x, m)
    var = _channel_var(x, _per_channel(mean), m)
    out = _normalise(x, _per_channel(mean), _per_channel(var), _per_channel(weight), _per_channel(bias), eps)
    return out, GpuBatchNormCache(x, mean, var, weight, eps)


def batchnorm_train_backward(dout, cache):
    """Equals :func:`minisd.functional.batchnorm_train_backward`; ``cache`` from :func:`batchnorm_train_forward`.

    Three kernels: sum(dout), sum(dout * xhat), dx.
    """
    x, mean, var, weight, eps = cache
    N, C, H, W = dout.shape
    m = N * H * W
    mean4, var4 = _per_channel(mean), _per_channel(var)
    dbias = dout.sum(axis=(0, 2, 3))
    dweight = _sum_dout_xhat(dout, x, mean4, var4, eps)
    dx = _batchnorm_dx(dout, x, mean4, var4, _per_channel(weight), _per_channel(dbias), _per_channel(dweight), eps, m)
    return dx, dweight, dbias


@fuse
def _running_average(xp, running, batch, keep, momentum, factor):
    running *= keep
    running += momentum * batch * factor


def batchnorm_running_average(running, batch, momentum, factor=1.0):
    """Equals :func:`minisd.functional.batchnorm_running_average`: one kernel instead of four or five."""
    _running_average(running, batch, 1 - momentum, momentum, factor)


# ---------------------------------------------------------------------------
# ReLU (the forward, xp.maximum, is one kernel already)
# ---------------------------------------------------------------------------


@fuse
def _relu_backward(xp, dout, out):
    return dout * (out > 0)


def relu_backward(dout, cache):
    """Equals :func:`minisd.functional.relu_backward`: dout * (out > 0) as one kernel, not two."""
    return _relu_backward(dout, cache)
