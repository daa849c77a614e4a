"""Exercise 4 - Convolution as one matrix product: im2col, col2im, forward and backward.

x (N, C, H, W), weight (F, C, k, k), bias (F,); stride s, zero padding p;
Ho = (H + 2p - k) // s + 1, likewise Wo. Output pixel (i, j) of image n is a dot product of
the weight with the k x k patch of the padded input starting at row i*s, column j*s.
im2col lays each patch out as a column: cols[n] (C*k*k, Ho*Wo), entry (c, di, dj) of the patch
of output pixel (i, j) in row c*k*k + di*k + dj, column i*Wo + j - the order of a row of
W2 = weight.reshape(F, C*k*k). Then out[n] = W2 @ cols[n] + bias.

Derivation to do (on paper first)
  1. How can im2col be written without a loop over output pixels? (Fix one kernel offset
     (di, dj): which entries of the padded input do all the output pixels read there?)
  2. With G[n] = dL/dout[n] as an (F, Ho*Wo) matrix, derive dL/dW2, dL/dcols[n] and dL/dbias.
     (Each image is exercise 2's linear layer; the weight is shared by all images.)
  3. dx: every entry of x was copied into several columns (the patches overlap). Derive its
     gradient from the gradients of its copies. The map that computes this from dcols is
     col2im, the adjoint of im2col: show that sum(im2col(x) * c) == sum(x * col2im(c)) for
     any x and c is what makes dx = col2im(dcols) right.

Fill in the four functions below, then run
  python lessons/exercises/04_conv_im2col.py              # checks your functions
  python lessons/exercises/04_conv_im2col.py --hint       # a hint for the first failing case (--hint 2: the next)
  python lessons/exercises/04_conv_im2col.py --solution   # the worked solution
"""
import numpy as np


def im2col(x, k, stride=1, padding=0):
    """x (N, C, H, W) -> cols (N, C*k*k, Ho*Wo); row c*k*k + di*k + dj, column i*Wo + j."""
    raise NotImplementedError("not written yet")


def col2im(cols, x_shape, k, stride=1, padding=0):
    """cols (N, C*k*k, Ho*Wo) -> (N, C, H, W) for x_shape = (N, C, H, W): the adjoint of im2col."""
    raise NotImplementedError("not written yet")


def conv_forward(x, weight, bias, stride=1, padding=0):
    """x (N, C, H, W), weight (F, C, k, k), bias (F,) -> (out (N, F, Ho, Wo), cache)."""
    raise NotImplementedError("not written yet")


def conv_backward(dout, cache):
    """dout (N, F, Ho, Wo) -> (dx (N, C, H, W), dweight (F, C, k, k), dbias (F,))."""
    raise NotImplementedError("not written yet")


# ---------------------------------------------------------------------------------------------
# the checks: their cases are in _cases/04_conv_im2col.py, which shows wrong answers and the hints
# ---------------------------------------------------------------------------------------------
from _check import cases_for

cases = cases_for(__file__)

if __name__ == "__main__":
    cases.main(globals())
