"""Exercise 5 - The option-A shortcut of the CIFAR ResNets: forward and backward.

The first block of a stage halves the image and doubles the channels, so its input cannot be
added to its output as it is. Option A (He et al. 2016; the stochastic-depth paper's code) has
no parameters: keep every stride-th pixel, then append zero channels.
    x (N, C, H, W) -> out (N, C_out, ceil(H/s), ceil(W/s)),
    out[:, :C] = x[:, :, ::s, ::s],   out[:, C:] = 0.
When nothing changes (s = 1, C_out = C) it is the identity.

Derivation to do (on paper first)
  1. Which entries of x does out[n, c, i, j] depend on, for c < C and for c >= C?
  2. So what is dL/dx[n, c, h, w] when h or w is not a multiple of s? And when both are?
  3. What happens to dout[:, C:], the gradient arriving at the zero channels?
  4. Why does the shortcut of a residual block matter for the gradient of a deep network?
     (dL/dx = shortcut'(g) + branch'(g): which term survives when the branch is dropped?)

Fill in the two functions below, then run
  python lessons/exercises/05_shortcut.py              # checks your functions
  python lessons/exercises/05_shortcut.py --solution   # the worked solution
"""
import numpy as np

from minisd import functional as F
from _check import EXACT_TOL, Cases


def shortcut_forward(x, out_channels, stride):
    """x (N, C, H, W) -> (out (N, out_channels, ceil(H/stride), ceil(W/stride)), cache)."""
    raise NotImplementedError("not written yet")


def shortcut_backward(dout, cache):
    """dout (N, out_channels, Ho, Wo) -> dx (N, C, H, W)."""
    raise NotImplementedError("not written yet")


# ---------------------------------------------------------------------------------------------
# the checks (run this file)
# ---------------------------------------------------------------------------------------------

cases = Cases("shortcut_forward", "shortcut_backward")


def check_both(impl, check, x_shape, out_channels, stride):
    """Forward against minisd's option A, dx against central differences with a random dout."""
    x = check.rng.standard_normal(x_shape)
    want = F.shortcut_forward(x, out_channels, stride, "subsample")[0]
    out, cache = impl.shortcut_forward(x, out_channels, stride)
    check.shape("out", out, want.shape)
    check.close("out", out, want, tol=EXACT_TOL)
    dout = check.rng.standard_normal(want.shape)
    dx = impl.shortcut_backward(dout, cache)
    check.close("dx", dx, check.numgrad(lambda: impl.shortcut_forward(x, out_channels, stride)[0], x, dout))


@cases.case("identity: stride 1, 4 -> 4 channels",
            hint="when the shapes match, out is x and dx is dout")
def _(impl, check):
    check_both(impl, check, (2, 4, 3, 3), 4, 1)


@cases.case("more channels only: stride 1, 2 -> 5",
            hint="out = zeros((N, C_out, H, W)); out[:, :C] = x. Backward: dx = dout[:, :C]")
def _(impl, check):
    check_both(impl, check, (2, 2, 3, 3), 5, 1)


@cases.case("a stage transition: stride 2, 2 -> 4 channels, 6x6 -> 3x3",
            hint="x[:, :, ::2, ::2] keeps pixel (2i, 2j); in backward put dout[:, :C] back there, zeros elsewhere")
def _(impl, check):
    check_both(impl, check, (2, 2, 6, 6), 4, 2)


@cases.case("an odd size: stride 2 on 5x5 -> 3x3",
            hint="x[:, :, ::2, ::2] of 5 rows keeps rows 0, 2, 4: ceil(5/2) = 3; dx must keep the shape of x")
def _(impl, check):
    check_both(impl, check, (1, 3, 5, 5), 6, 2)


@cases.case("the zero channels send nothing back",
            hint="out[:, C:] is 0 whatever x is: the gradient arriving there is dropped, not added to x")
def _(impl, check):
    x = check.rng.standard_normal((2, 2, 4, 4))
    _, cache = impl.shortcut_forward(x, 4, 2)
    dout = np.zeros((2, 4, 2, 2))
    dout[:, 2:] = check.rng.standard_normal((2, 2, 2, 2))   # gradient on the appended channels only
    dx = impl.shortcut_backward(dout, cache)
    check.shape("dx", dx, x.shape)
    check.exact("dx", dx, np.zeros_like(x))


if __name__ == "__main__":
    cases.main(globals())
