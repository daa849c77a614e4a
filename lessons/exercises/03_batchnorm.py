"""Exercise 3 - Batch normalisation in training mode: forward, and the backward through the batch statistics.

For one channel, over its m = N*H*W values x_i:
    mu = (1/m) sum_i x_i,   var = (1/m) sum_i (x_i - mu)^2,   s = 1 / sqrt(var + eps),
    xhat_i = (x_i - mu) * s,   out_i = gamma * xhat_i + beta.
Arrays are NCHW: each channel c has its own mu, var, gamma, beta; sums run over axes (0, 2, 3).

Derivation to do (on paper first). With g_i = dL/dout_i:
  1. Derive dL/dbeta and dL/dgamma.
  2. dL/dxhat_i = gamma g_i. If mu and var were constants, dL/dx_j would be gamma s g_j. They
     are not: every x_j moves mu and var, and through them every xhat_i. Derive d mu / d x_j
     and d var / d x_j, then dL/dvar and dL/dmu, and add up the three paths by which x_j
     reaches L (directly, through mu, through var) into one expression for dL/dx_j, written
     with g, xhat, gamma, s and m. Which term comes from which path?
  3. Test your expression without a computer: out does not change when a constant is added
     to a whole channel of x, nor (with eps = 0) when a channel is scaled about its mean.
     So, for ANY g, what must sum_j dL/dx_j and sum_j dL/dx_j (x_j - mu) be? Does your
     expression give that, and which of its terms makes each one so?

Fill in the two functions below, then run
  python lessons/exercises/03_batchnorm.py              # checks your functions
  python lessons/exercises/03_batchnorm.py --hint       # a hint for the first failing case (--hint 2: the next)
  python lessons/exercises/03_batchnorm.py --solution   # the worked solution
"""
import numpy as np


def batchnorm_forward(x, gamma, beta, eps=1e-5):
    """x (N, C, H, W), gamma (C,), beta (C,) -> (out (N, C, H, W), cache); batch statistics over N, H, W."""
    raise NotImplementedError("not written yet")


def batchnorm_backward(dout, cache):
    """dout (N, C, H, W) -> (dx (N, C, H, W), dgamma (C,), dbeta (C,))."""
    raise NotImplementedError("not written yet")


# ---------------------------------------------------------------------------------------------
# the checks: their cases are in _cases/03_batchnorm.py, which shows wrong answers and the hints
# ---------------------------------------------------------------------------------------------
from _check import cases_for

cases = cases_for(__file__)

if __name__ == "__main__":
    cases.main(globals())
