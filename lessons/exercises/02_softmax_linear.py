"""Exercise 2 - The classifier head: a linear layer and the softmax cross-entropy loss.

Linear: out = x W^T + b, with x (N, D), W (K, D), b (K,), out (N, K).
Softmax cross-entropy, z = logits (N, K), y (N,) integer labels:
    p_nk = exp(z_nk) / sum_j exp(z_nj),     L = -(1/N) sum_n log p_{n, y_n}.

Derivation to do (on paper first)
  1. With G = dL/dout (N, K), derive dL/dx, dL/dW and dL/db, each written with G, W and x.
     (Write one entry out_nk as a sum and differentiate it; then check that each result has
     the shape of what it differentiates.)
  2. Derive d(-log p_{n, y_n}) / dz_nk, for k = y_n and for k != y_n, in terms of p.
     (Write -log p_{n, y_n} with z_{n, y_n} and log sum_j exp z_nj.)
  3. From 2, derive dL/dz for the loss L, a mean over the batch; and for dout * L, when the
     loss arrives scaled (dL_total/dL = dout, e.g. a loss weight).
  4. Why subtract max_k z_nk from each row before exp? Show that it does not change p, and
     say what exp(1000) gives in float64.

Fill in the four functions below, then run
  python lessons/exercises/02_softmax_linear.py              # checks your functions
  python lessons/exercises/02_softmax_linear.py --hint       # a hint for the first failing case (--hint 2: the next)
  python lessons/exercises/02_softmax_linear.py --solution   # the worked solution
"""
import numpy as np


def linear_forward(x, weight, bias):
    """x (N, D), weight (K, D), bias (K,) -> (out (N, K), cache)."""
    raise NotImplementedError("not written yet")


def linear_backward(dout, cache):
    """dout (N, K) -> (dx (N, D), dweight (K, D), dbias (K,))."""
    raise NotImplementedError("not written yet")


def softmax_cross_entropy_forward(logits, labels):
    """logits (N, K) floats, labels (N,) ints in [0, K) -> (loss: a float, the mean over N; cache)."""
    raise NotImplementedError("not written yet")


def softmax_cross_entropy_backward(dout, cache):
    """dout: a number, dL_total/dloss (1 when the loss is what is minimised) -> dlogits (N, K)."""
    raise NotImplementedError("not written yet")


# ---------------------------------------------------------------------------------------------
# the checks: their cases are in _cases/02_softmax_linear.py, which shows wrong answers and the hints
# ---------------------------------------------------------------------------------------------
from _check import cases_for

cases = cases_for(__file__)

if __name__ == "__main__":
    cases.main(globals())
