"""Exercise 5 - The option-A shortcut of the CIFAR ResNets: forward and backward.

The first block of a stage halves the image and doubles the channels, so its input cannot be
added to its output as it is. Option A (He et al. 2016; the stochastic-depth paper's code) has
no parameters: keep every stride-th pixel, then append zero channels.
    x (N, C, H, W) -> out (N, C_out, ceil(H/s), ceil(W/s)),
    out[:, :C] = x[:, :, ::s, ::s],   out[:, C:] = 0.
When nothing changes (s = 1, C_out = C) it is the identity.

Derivation to do (on paper first)
  1. Which entries of x does out[n, c, i, j] depend on, for c < C and for c >= C, and how?
  2. So what is dL/dx[n, c, h, w] when h or w is not a multiple of s? And when both are?
  3. What happens to dout[:, C:], the gradient arriving at the zero channels?
  4. In a residual block the input x reaches the output twice, through the shortcut and
     through the branch. Which of the two still passes a gradient back when the branch is
     dropped, and how much of it?

Fill in the two functions below, then run
  python lessons/exercises/05_shortcut.py              # checks your functions
  python lessons/exercises/05_shortcut.py --hint       # a hint for the first failing case (--hint 2: the next)
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
            hints=["when nothing changes (stride 1, as many channels out as in), the shortcut is the identity: "
                   "what are out and dx then?"])
def _(impl, check):
    check_both(impl, check, (2, 4, 3, 3), 4, 1)


@cases.case("more channels only: stride 1, 2 -> 5",
            hints=["forward: an array of zeros of the output shape, with x copied into its first C channels",
                   "backward: out[:, c] for c < C is x[:, c] itself, so x[:, c] receives exactly the gradient of "
                   "out[:, c]"])
def _(impl, check):
    check_both(impl, check, (2, 2, 3, 3), 5, 1)


@cases.case("a stage transition: stride 2, 2 -> 4 channels, 6x6 -> 3x3",
            hints=["x[:, :, ::s, ::s] keeps pixel (s*i, s*j) as output pixel (i, j). Which pixels of x did not "
                   "influence out at all, and what is their gradient?",
                   "backward: a zero array of the shape of x, with dout[:, :C] written back at [:, :, ::s, ::s]"])
def _(impl, check):
    check_both(impl, check, (2, 2, 6, 6), 4, 2)


@cases.case("an odd size: stride 2 on 5x5 -> 3x3",
            hints=["x[:, :, ::2, ::2] of 5 rows keeps rows 0, 2 and 4: ceil(5/2) = 3; dx keeps the shape of x "
                   "(cache x's shape, not the output's)"])
def _(impl, check):
    check_both(impl, check, (1, 3, 5, 5), 6, 2)


@cases.case("the zero channels send nothing back",
            hints=["out[:, C:] is 0 whatever x is: what does the gradient arriving there contribute to dx?"])
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
