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


def shortcut_forward(x, out_channels, stride):
    """x (N, C, H, W) -> (out (N, out_channels, ceil(H/stride), ceil(W/stride)), cache)."""
    raise NotImplementedError("not written yet")


def shortcut_backward(dout, cache):
    """dout (N, out_channels, Ho, Wo) -> dx (N, C, H, W)."""
    raise NotImplementedError("not written yet")


# ---------------------------------------------------------------------------------------------
# the checks: their cases are in _cases/05_shortcut.py, which shows wrong answers and the hints
# ---------------------------------------------------------------------------------------------
from _check import cases_for

cases = cases_for(__file__)

if __name__ == "__main__":
    cases.main(globals())
