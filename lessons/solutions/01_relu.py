"""Solution to exercise 1 - ReLU (checked by ``python lessons/exercises/01_relu.py --solution``).

Derivation
  out_i = max(x_i, 0) depends on x_i only, so dL/dx_i = dL/dout_i * [x_i > 0].
  1. The cache: the mask [x > 0] is all the backward needs, and out > 0 exactly where x > 0,
     so ``out`` itself serves (no extra array).
  2. The forward must return a new array: in a residual block the same x also goes into the
     shortcut, and an in-place ReLU would change what the shortcut adds.
"""
import numpy as np


def relu_forward(x):
    """x: any shape -> (out, cache); out = max(x, 0), same shape as x; x itself unchanged."""
    out = np.maximum(x, 0)      # a new array; x is not touched
    return out, out             # out > 0 exactly where x > 0: out is the mask's source


def relu_backward(dout, cache):
    """dout: the gradient of the loss w.r.t. out (shape of x) -> dx (shape of x)."""
    out = cache
    return dout * (out > 0)     # strict: at x = 0 the gradient is 0
