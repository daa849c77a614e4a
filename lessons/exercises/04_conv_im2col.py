"""Exercise 4 - Convolution as one matrix product: im2col, col2im, forward and backward.

Derivation to do (on paper first)
  x (N, C, H, W), weight (F, C, k, k), bias (F,); stride s, zero padding p;
  Ho = (H + 2p - k) // s + 1, likewise Wo. Output pixel (i, j) of image n is a dot product of
  the weight with the k x k patch of the padded input starting at row i*s, column j*s.
  1. im2col: lay each patch out as a column, cols[n] (C*k*k, Ho*Wo), in the same order as a
     row of W2 = weight.reshape(F, C*k*k). Then out[n] = W2 @ cols[n] + bias.
     (Hint: for a fixed kernel offset (di, dj), the pixels all output pixels read form ONE
     strided slice of the padded input: xpad[:, :, di : di + s*Ho : s, dj : dj + s*Wo : s].)
  2. With G[n] = dL/dout[n] as (F, Ho*Wo): show dW2 = sum_n G[n] @ cols[n]^T,
     dcols[n] = W2^T @ G[n] and dbias = G summed over n and pixels.
  3. dx: every entry of x was copied into several columns (the patches overlap), so its
     gradient is the SUM of the gradients of all its copies. col2im does that: the adjoint of
     im2col, adding each column back onto its patch (and dropping the padding).
     Check of adjointness: sum(im2col(x) * c) == sum(x * col2im(c)) for any x, c.

Fill in the four functions below, then run
  python lessons/exercises/04_conv_im2col.py              # checks your functions
  python lessons/exercises/04_conv_im2col.py --solution   # the worked solution
"""
import numpy as np

from minisd import functional as F
from _check import EXACT_TOL, Cases


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
# the checks (run this file)
# ---------------------------------------------------------------------------------------------

cases = Cases("im2col", "col2im", "conv_forward", "conv_backward")


@cases.case("im2col: 1 image, 1 channel, 3x3 kernel on 4x4, no padding",
            hint="cols[n, c*k*k + di*k + dj, i*Wo + j] = xpad[n, c, i*s + di, j*s + dj]")
def _(impl, check):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    cols = impl.im2col(x, 3)
    check.shape("cols", cols, (1, 9, 4))
    check.exact("cols", cols, F.im2col(x, 3))


@cases.case("im2col: stride 2, padding 1, 2 images, 3 channels, 5x5",
            hint="pad first (np.pad or a zero array), then Ho = (H + 2p - k) // s + 1 strided rows")
def _(impl, check):
    x = check.rng.standard_normal((2, 3, 5, 5))
    want = F.im2col(x, 3, stride=2, padding=1)
    cols = impl.im2col(x, 3, stride=2, padding=1)
    check.shape("cols", cols, want.shape)
    check.exact("cols", cols, want)


@cases.case("col2im is the adjoint of im2col: <im2col(x), c> = <x, col2im(c)>",
            hint="walk the same offsets (di, dj) as im2col but add (+=) the columns into a padded zero array")
def _(impl, check):
    for stride, padding in ((1, 0), (1, 1), (2, 1)):
        x = check.rng.standard_normal((2, 2, 5, 5))
        c = check.rng.standard_normal(F.im2col(x, 3, stride, padding).shape)
        back = impl.col2im(c, x.shape, 3, stride, padding)
        check.shape(f"col2im (stride {stride}, padding {padding})", back, x.shape)
        check.close(f"<x, col2im(c)> against <im2col(x), c> (stride {stride}, padding {padding})",
                    np.sum(x * back), np.sum(F.im2col(x, 3, stride, padding) * c), tol=EXACT_TOL)


@cases.case("forward: stride 1, padding 1 (the ResNet's 3x3 convolution)",
            hint="out = (W2 @ cols).reshape(N, F, Ho, Wo) + bias[None, :, None, None], with W2 = weight.reshape(F, -1)")
def _(impl, check):
    x, w, b = check.rng.standard_normal((2, 3, 4, 4)), check.rng.standard_normal((4, 3, 3, 3)), check.rng.standard_normal(4)
    out, _ = impl.conv_forward(x, w, b, 1, 1)
    check.close("out", out, F.conv2d_naive_forward(x, w, b, 1, 1)[0], tol=EXACT_TOL)


def check_backward(impl, check, x, w, b, stride, padding):
    dout_shape = F.conv2d_naive_forward(x, w, b, stride, padding)[0].shape
    dout = check.rng.standard_normal(dout_shape)
    out, cache = impl.conv_forward(x, w, b, stride, padding)
    check.close("out", out, F.conv2d_naive_forward(x, w, b, stride, padding)[0], tol=EXACT_TOL)
    dx, dw, db = impl.conv_backward(dout, cache)
    f = lambda: impl.conv_forward(x, w, b, stride, padding)[0]
    N = x.shape[0]
    one_image = F.conv2d_naive_backward(dout[:1], F.conv2d_naive_forward(x[:1], w, b, stride, padding)[1])[1]
    check.close("dx", dx, check.numgrad(f, x, dout))
    check.close("dweight", dw, check.numgrad(f, w, dout),
                mistakes={"the first image's share only (sum over the batch)": one_image,
                          f"the mean over the {N} images, not the sum": F.conv2d_naive_backward(
                              dout, F.conv2d_naive_forward(x, w, b, stride, padding)[1])[1] / N})
    check.close("dbias", db, check.numgrad(f, b, dout))


@cases.case("backward: stride 1, padding 1, 2 images",
            hint="dW2 = sum over images of dout[n] @ cols[n].T; dx = col2im(W2.T @ dout[n]); db = dout.sum((0, 2, 3))")
def _(impl, check):
    rng = check.rng
    check_backward(impl, check, rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3)),
                   rng.standard_normal(3), 1, 1)


@cases.case("backward: stride 2, padding 1 on an odd 5x5 input",
            hint="with stride 2 the patches overlap less, but col2im must still use the same strided slices as im2col")
def _(impl, check):
    rng = check.rng
    check_backward(impl, check, rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3)),
                   rng.standard_normal(3), 2, 1)


@cases.case("backward: 1x1 kernel, stride 2, no padding",
            hint="k = 1 is a per-pixel matrix product on every second pixel: the others get no gradient")
def _(impl, check):
    rng = check.rng
    check_backward(impl, check, rng.standard_normal((3, 2, 4, 4)), rng.standard_normal((4, 2, 1, 1)),
                   rng.standard_normal(4), 2, 0)


if __name__ == "__main__":
    cases.main(globals())
