"""Exercise 1 - ReLU: forward and backward.

out = max(x, 0), element by element.

Derivation to do (on paper first)
  1. Which entries of x does out_i depend on? So what shape has the Jacobian d out / d x?
  2. Derive dL/dx_i from dL/dout_i and x_i. At x_i = 0 ReLU has no derivative: which
     values would be defensible there, and why? (The last case checks minisd's choice.)
  3. What must the forward keep in its cache for the backward? (Is ``out`` enough?)
  4. Why must the forward not write into ``x``? (Think of a residual block: who else reads x?)

Fill in the two functions below, then run
  python lessons/exercises/01_relu.py              # checks your functions (the first failing case in detail)
  python lessons/exercises/01_relu.py --hint       # a hint for the first failing case (--hint 2: the next)
  python lessons/exercises/01_relu.py --solution   # the same checks on lessons/solutions/01_relu.py
"""
import numpy as np


def relu_forward(x):
    """x: any shape -> (out, cache); out = max(x, 0), same shape as x; x itself unchanged."""
    raise NotImplementedError("not written yet")


def relu_backward(dout, cache):
    """dout: the gradient of the loss w.r.t. out (shape of x) -> dx (shape of x)."""
    raise NotImplementedError("not written yet")


# ---------------------------------------------------------------------------------------------
# the checks: their cases are in _cases/01_relu.py, which shows wrong answers and the hints
# ---------------------------------------------------------------------------------------------
from _check import cases_for

cases = cases_for(__file__)

if __name__ == "__main__":
    cases.main(globals())
