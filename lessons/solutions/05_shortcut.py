"""Solution to exercise 5 - the option-A shortcut (checked by ``python lessons/exercises/05_shortcut.py --solution``).

Derivation
  1. For c < C, out[n, c, i, j] = x[n, c, i*s, j*s]: one entry of x, with weight 1. For c >= C,
     out is the constant 0: it depends on nothing.
  2. So dL/dx[n, c, h, w] = dout[n, c, h/s, w/s] when s divides both h and w, and 0 otherwise:
     the skipped pixels had no influence on the output.
  3. dout[:, C:] reaches no input: it is dropped.
  4. In a residual block dL/dx = shortcut'(g) + branch'(g). The shortcut's part passes the
     gradient on unchanged (up to the subsampling), so even when the branch is dropped
     (stochastic depth) or its Jacobian is small, the gradient still reaches the early layers.
"""
import numpy as np


def shortcut_forward(x, out_channels, stride):
    """x (N, C, H, W) -> (out (N, out_channels, ceil(H/stride), ceil(W/stride)), cache)."""
    N, C = x.shape[:2]
    y = x[:, :, ::stride, ::stride]                 # every stride-th pixel (a view)
    out = np.zeros((N, out_channels) + y.shape[2:], dtype=x.dtype)
    out[:, :C] = y                                  # the new channels stay zero
    return out, (x.shape, stride)


def shortcut_backward(dout, cache):
    """dout (N, out_channels, Ho, Wo) -> dx (N, C, H, W)."""
    x_shape, stride = cache
    C = x_shape[1]
    dx = np.zeros(x_shape, dtype=dout.dtype)        # skipped pixels: no gradient
    dx[:, :, ::stride, ::stride] = dout[:, :C]      # the zero channels' gradient is dropped
    return dx
