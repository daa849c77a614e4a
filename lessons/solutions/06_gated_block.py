"""Solution to exercise 6 - the gated residual block.

Checked by ``python lessons/exercises/06_gated_block.py --solution``.

Derivation
  1. b is 1 with probability p and 0 otherwise, and f(x) does not depend on b, so
     E[b f(x)] = p * 1 * f(x) + (1 - p) * 0 = p f(x). "test" scale: training adds b f, test time
     adds p f = its expectation. "train" scale: training adds (b / p) f, whose expectation is
     (p / p) f = f, which is what test time adds. Same expectation; the two differ only in where
     the factor sits (and so in what SGD with weight decay sees during training).
  2. out = ReLU(total), total = shortcut(x) + c f(x) (c the factor). The chain rule through
     the ReLU gives g = dout * [total > 0]; through the sum, g goes to both terms; through
     c f(x), the branch's backward receives c g: dL/dx = shortcut'(g) + f'(c g). With the gate
     closed the second term is absent from total, so there is nothing to differentiate:
     dL/dx = shortcut'(g), and the branch's parameters receive no gradient (exactly 0).
  3. A forward of the branch in training mode updates its BN running statistics with this
     batch's mean and variance. Multiplying f(x) by 0 gives the same output and gradient, but
     it costs the full branch and moves the running statistics as if the block had run: the
     statistics used at test time would then include batches the block never took part in.
     The same `if` in forward and backward avoids both.
"""
import numpy as np


def gated_block_forward(x, branch, shortcut, gate, p, training, scale="test"):
    """One block: x (N, C_in, H, W) -> (out (N, C_out, H', W'), cache).

    gate: this mini-batch's draw (bool; ignored at test time), p: survival probability,
    training: bool, scale: "test" or "train". branch/shortcut: layers with .forward/.backward.
    """
    total = shortcut.forward(x)
    runs = (not training) or gate             # test time: every branch runs
    factor = None
    if runs:
        if training:
            factor = 1.0 if scale == "test" else 1.0 / p
        else:
            factor = p if scale == "test" else 1.0
        total = total + factor * branch.forward(x)
    # else: the gate is closed, the branch is not called (no compute, no cache, no statistics)
    out = np.maximum(total, 0)
    return out, (out > 0, runs, factor)


def gated_block_backward(dout, cache, branch, shortcut):
    """dout (N, C_out, H', W') -> dx (N, C_in, H, W); the branch adds its own parameter gradients."""
    mask, runs, factor = cache
    g = dout * mask                           # through the final ReLU
    dx = shortcut.backward(g)
    if runs:                                  # the same `if` as in the forward
        dx = dx + branch.backward(factor * g)
    return dx
