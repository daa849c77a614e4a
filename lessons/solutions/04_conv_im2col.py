"""Solution to exercise 4 - convolution via im2col.

Checked by ``python lessons/exercises/04_conv_im2col.py --solution``.

Derivation
  1. out[n, f, i, j] = sum_{c, di, dj} weight[f, c, di, dj] * xpad[n, c, i*s + di, j*s + dj] + bias[f].
     Put the patch of output pixel (i, j) in column i*Wo + j of cols[n], its entry (c, di, dj)
     in row c*k*k + di*k + dj: the order of weight.reshape(F, C*k*k). Then out[n] = W2 @ cols[n].
     For a fixed offset (di, dj), the entries (i, j) -> xpad[.., i*s + di, j*s + dj] form one
     strided slice, so im2col is k*k slice copies, not a loop over pixels.
  2. out[n] = W2 @ cols[n] is a matrix product, so (exercise 2's linear layer, per image)
       dW2      = sum_n G[n] @ cols[n]^T        (F, L)(L, Ckk): every image adds its share
       dcols[n] = W2^T @ G[n]                   (Ckk, F)(F, L)
       dbias    = sum over n and pixels of G
  3. x -> cols is linear: cols = A x for a 0/1 matrix A that copies entries. Its gradient is
     A^T dcols: every column entry is sent back to the pixel it was copied from, and the copies
     of one pixel add up. That is col2im: the same k*k strided slices as im2col, with += instead
     of =, into a zero padded array whose border is then dropped (padding received a gradient
     but is not an input). <A x, c> = <x, A^T c> is the check of adjointness.
"""
import numpy as np


def _out_size(size, k, stride, padding):
    return (size + 2 * padding - k) // stride + 1


def im2col(x, k, stride=1, padding=0):
    """x (N, C, H, W) -> cols (N, C*k*k, Ho*Wo); row c*k*k + di*k + dj, column i*Wo + j."""
    N, C, H, W = x.shape
    s, Ho, Wo = stride, _out_size(H, k, stride, padding), _out_size(W, k, stride, padding)
    xpad = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    cols = np.empty((N, C, k, k, Ho, Wo), dtype=x.dtype)
    for di in range(k):
        for dj in range(k):
            cols[:, :, di, dj] = xpad[:, :, di:di + s * Ho:s, dj:dj + s * Wo:s]   # (N, C, Ho, Wo)
    return cols.reshape(N, C * k * k, Ho * Wo)


def col2im(cols, x_shape, k, stride=1, padding=0):
    """cols (N, C*k*k, Ho*Wo) -> (N, C, H, W) for x_shape = (N, C, H, W): the adjoint of im2col."""
    N, C, H, W = x_shape
    s, Ho, Wo = stride, _out_size(H, k, stride, padding), _out_size(W, k, stride, padding)
    cols = cols.reshape(N, C, k, k, Ho, Wo)
    dxpad = np.zeros((N, C, H + 2 * padding, W + 2 * padding), dtype=cols.dtype)
    for di in range(k):
        for dj in range(k):
            dxpad[:, :, di:di + s * Ho:s, dj:dj + s * Wo:s] += cols[:, :, di, dj]   # copies add up
    return dxpad[:, :, padding:padding + H, padding:padding + W]


def conv_forward(x, weight, bias, stride=1, padding=0):
    """x (N, C, H, W), weight (F, C, k, k), bias (F,) -> (out (N, F, Ho, Wo), cache)."""
    N, C, H, W = x.shape
    F, _, k, _ = weight.shape
    Ho, Wo = _out_size(H, k, stride, padding), _out_size(W, k, stride, padding)
    cols = im2col(x, k, stride, padding)                  # (N, Ckk, L)
    out = weight.reshape(F, -1) @ cols                    # (F, Ckk) @ (N, Ckk, L) -> (N, F, L)
    out = out.reshape(N, F, Ho, Wo) + bias[None, :, None, None]
    return out, (x.shape, cols, weight, stride, padding)


def conv_backward(dout, cache):
    """dout (N, F, Ho, Wo) -> (dx (N, C, H, W), dweight (F, C, k, k), dbias (F,))."""
    x_shape, cols, weight, stride, padding = cache
    N, F = dout.shape[:2]
    k = weight.shape[2]
    G = dout.reshape(N, F, -1)                            # (N, F, L)
    dW2 = np.einsum("nfl,njl->fj", G, cols)               # sum_n G[n] @ cols[n].T: (F, Ckk)
    dcols = weight.reshape(F, -1).T @ G                   # (Ckk, F) @ (N, F, L) -> (N, Ckk, L)
    dx = col2im(dcols, x_shape, k, stride, padding)
    return dx, dW2.reshape(weight.shape), dout.sum(axis=(0, 2, 3))
