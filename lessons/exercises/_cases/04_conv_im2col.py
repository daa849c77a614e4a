"""The checks of exercise 4 (lessons/exercises/04_conv_im2col.py): its cases, the wrong answers they
recognise and the hints. They show what the answer is not, and the hints come close to what
it is: solve the exercise first. ``python lessons/exercises/04_conv_im2col.py`` runs them.
"""
import numpy as np

from minisd import functional as F
from _check import EXACT_TOL, Cases

cases = Cases("im2col", "col2im", "conv_forward", "conv_backward")


@cases.case("im2col: 1 image, 1 channel, 3x3 kernel on 4x4, no padding",
            hints=["cols[n, c*k*k + di*k + dj, i*Wo + j] = xpad[n, c, i*s + di, j*s + dj]: write it with loops first "
                   "if you like, then remove them",
                   "for a fixed offset (di, dj), the pixels that all output pixels read form ONE strided slice: "
                   "xpad[:, :, di : di + s*Ho : s, dj : dj + s*Wo : s]. So im2col is k*k slice copies into an array "
                   "(N, C, k, k, Ho, Wo), then one reshape"])
def _(impl, check):
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    cols = impl.im2col(x, 3)
    check.shape("cols", cols, (1, 9, 4))
    check.exact("cols", cols, F.im2col(x, 3))


@cases.case("im2col: stride 2, padding 1, 2 images, 3 channels, 5x5",
            hints=["pad first (np.pad, or a zero array with x copied into its middle); then there are "
                   "Ho = (H + 2p - k) // s + 1 strided rows"])
def _(impl, check):
    x = check.rng.standard_normal((2, 3, 5, 5))
    want = F.im2col(x, 3, stride=2, padding=1)
    cols = impl.im2col(x, 3, stride=2, padding=1)
    check.shape("cols", cols, want.shape)
    check.exact("cols", cols, want)


@cases.case("col2im is the adjoint of im2col: <im2col(x), c> = <x, col2im(c)>",
            hints=["im2col only copies entries of x, some of them several times. The adjoint of a copy sends each "
                   "copy's value back to where it came from, and the copies of one entry add up",
                   "walk the same offsets (di, dj) as im2col, but add (+=) each slice of the columns into a padded "
                   "zero array; then cut the padding off (it is not an input)"])
def _(impl, check):
    for stride, padding in ((1, 0), (1, 1), (2, 1)):
        x = check.rng.standard_normal((2, 2, 5, 5))
        c = check.rng.standard_normal(F.im2col(x, 3, stride, padding).shape)
        back = impl.col2im(c, x.shape, 3, stride, padding)
        check.shape(f"col2im (stride {stride}, padding {padding})", back, x.shape)
        check.close(f"<x, col2im(c)> against <im2col(x), c> (stride {stride}, padding {padding})",
                    np.sum(x * back), np.sum(F.im2col(x, 3, stride, padding) * c), tol=EXACT_TOL)


@cases.case("forward: stride 1, padding 1 (the ResNet's 3x3 convolution)",
            hints=["W2 = weight.reshape(F, -1) has its entries in the order of the rows of cols: W2 @ cols[n] is "
                   "(F, Ho*Wo). A matmul of (F, Ckk) with (N, Ckk, L) does every image at once",
                   "reshape the product to (N, F, Ho, Wo) and add bias[None, :, None, None]"])
def _(impl, check):
    rng = check.rng
    x, w, b = rng.standard_normal((2, 3, 4, 4)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal(4)
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
            hints=["image by image, out[n] = W2 @ cols[n] is exercise 2's linear layer: which products of G[n], W2 "
                   "and cols[n] have the shapes of dW2 (F, Ckk) and dcols[n] (Ckk, L)?",
                   "the weight is shared by all images: dW2 is the SUM over the batch of every image's share; dbias "
                   "sums G over images and pixels",
                   "dW2 = sum over n of G[n] @ cols[n].T, dcols[n] = W2.T @ G[n], dx = col2im(dcols) with the "
                   "same k, stride and padding"])
def _(impl, check):
    rng = check.rng
    check_backward(impl, check, rng.standard_normal((2, 2, 4, 4)), rng.standard_normal((3, 2, 3, 3)),
                   rng.standard_normal(3), 1, 1)


@cases.case("backward: stride 2, padding 1 on an odd 5x5 input",
            hints=["with stride 2 the patches overlap less, but col2im must still use the same strided slices as "
                   "im2col (the same Ho and Wo), and dx keeps the shape of x"])
def _(impl, check):
    rng = check.rng
    check_backward(impl, check, rng.standard_normal((2, 2, 5, 5)), rng.standard_normal((3, 2, 3, 3)),
                   rng.standard_normal(3), 2, 1)


@cases.case("backward: 1x1 kernel, stride 2, no padding",
            hints=["k = 1 with stride 2 reads every second pixel only: what gradient do the others get?"])
def _(impl, check):
    rng = check.rng
    check_backward(impl, check, rng.standard_normal((3, 2, 4, 4)), rng.standard_normal((4, 2, 1, 1)),
                   rng.standard_normal(4), 2, 0)
