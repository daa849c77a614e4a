"""Solution to exercise 2 - the linear layer and softmax cross-entropy.

Checked by ``python lessons/exercises/02_softmax_linear.py --solution``.

Derivation
  Linear. out_nk = sum_d x_nd W_kd + b_k, so with G = dL/dout:
    dL/dx_nd = sum_k G_nk W_kd        -> dx = G W        (N, K)(K, D) = (N, D)
    dL/dW_kd = sum_n G_nk x_nd        -> dW = G^T x      (K, N)(N, D) = (K, D)
    dL/db_k  = sum_n G_nk             -> db = G.sum(0)   every example adds its share
  Softmax cross-entropy. For one example, -log p_y = -z_y + log sum_j exp z_j, so
    d/dz_k = -[k = y] + exp z_k / sum_j exp z_j = p_k - [k = y].
  L is the mean over N examples, so dL/dz = (p - onehot(y)) / N; and if what we minimise is
  dout * L, every entry is multiplied by dout (the chain rule once more).
  Stability: p is unchanged when a constant c is subtracted from a row (exp(z - c) = exp(z)
  exp(-c), and exp(-c) cancels in the ratio). With c = max_k z_k every exponent is <= 0, so
  exp never overflows (exp(1000) is inf in float64), and log p = (z - c) - log sum exp(z - c)
  is computed without taking the log of a tiny ratio.
"""
import numpy as np


def linear_forward(x, weight, bias):
    """x (N, D), weight (K, D), bias (K,) -> (out (N, K), cache)."""
    return x @ weight.T + bias, (x, weight)


def linear_backward(dout, cache):
    """dout (N, K) -> (dx (N, D), dweight (K, D), dbias (K,))."""
    x, weight = cache
    return dout @ weight, dout.T @ x, dout.sum(axis=0)


def softmax_cross_entropy_forward(logits, labels):
    """logits (N, K) floats, labels (N,) ints in [0, K) -> (loss: a float, the mean over N; cache)."""
    N = logits.shape[0]
    shifted = logits - logits.max(axis=1, keepdims=True)          # every exponent <= 0
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))  # (N, 1)
    log_p = shifted - log_sum                                     # (N, K), log softmax
    loss = -log_p[np.arange(N), labels].mean()
    return loss, (np.exp(log_p), labels)


def softmax_cross_entropy_backward(dout, cache):
    """dout: a number, dL_total/dloss (1 when the loss is what is minimised) -> dlogits (N, K)."""
    p, labels = cache
    N = p.shape[0]
    dlogits = p.copy()                      # p - onehot(y): subtract 1 at each example's label
    dlogits[np.arange(N), labels] -= 1
    return dlogits * (dout / N)
