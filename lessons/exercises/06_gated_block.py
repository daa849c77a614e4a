"""Exercise 6 - The gated residual block: stochastic depth's forward and backward.

    out = ReLU( shortcut(x) + factor * f(x) )      f = the branch conv-BN-ReLU-conv-BN

In training each block has a gate b, drawn once per mini-batch: open (b = 1) with probability
p, the survival probability. The factor that multiplies the branch:

                      training, gate open    training, gate closed      test time (eval)
  scale = "test"      1                      the branch is NOT RUN      p    (the paper, eq. 5)
  scale = "train"     1 / p                  the branch is NOT RUN      1    ("inverted", timm)

A closed gate is not a multiplication by zero: f is never called, neither forward nor
backward. At test time the gate is ignored: every branch runs.

Derivation to do (on paper first)
  1. The gate b is 1 with probability p. Derive E_b[ b * f(x) ], and show that both columns
     of the table give, at test time, what the branch adds in training on average.
  2. Backward: let g be the gradient after the final ReLU (g = dout where total > 0),
     total = shortcut(x) + factor * f(x). Derive dL/dx with shortcut' and f' (the layers'
     backward passes): what must the branch's backward receive - with the gate open in
     training, and at test time? With the gate closed, what is dL/dx, and what gradient do
     the branch's parameters get?
  3. Why must a closed block not call the branch, beyond the compute it saves? (Think of its
     batch norms: what does a forward in training mode do to their running statistics?)
  ``branch`` and ``shortcut`` are given (minisd layers): ``branch.forward(x)`` returns f(x) and
  ``branch.backward(d)`` returns f'(d) (and adds the branch's parameter gradients), likewise
  ``shortcut``. Write the gate, the factor and the final ReLU.

Fill in the two functions below, then run
  python lessons/exercises/06_gated_block.py              # checks your functions
  python lessons/exercises/06_gated_block.py --hint       # a hint for the first failing case (--hint 2: the next)
  python lessons/exercises/06_gated_block.py --solution   # the worked solution
"""
import numpy as np


def gated_block_forward(x, branch, shortcut, gate, p, training, scale="test"):
    """One block: x (N, C_in, H, W) -> (out (N, C_out, H', W'), cache).

    gate: this mini-batch's draw (bool; ignored at test time), p: survival probability,
    training: bool, scale: "test" or "train". branch/shortcut: layers with .forward/.backward.
    """
    raise NotImplementedError("not written yet")


def gated_block_backward(dout, cache, branch, shortcut):
    """dout (N, C_out, H', W') -> dx (N, C_in, H, W); the branch adds its own parameter gradients."""
    raise NotImplementedError("not written yet")


# ---------------------------------------------------------------------------------------------
# the checks: their cases are in _cases/06_gated_block.py, which shows wrong answers and the hints
# ---------------------------------------------------------------------------------------------
from _check import cases_for

cases = cases_for(__file__)

if __name__ == "__main__":
    cases.main(globals())
