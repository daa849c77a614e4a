"""Exercise 1 - ReLU: forward and backward.

Derivation to do (on paper first)
  out = max(x, 0), element by element. Each out_i depends on x_i alone, so the Jacobian is
  diagonal and the chain rule is element-wise:

      dL/dx_i = dL/dout_i * d out_i / d x_i,   d out_i / d x_i = 1 if x_i > 0, 0 if x_i < 0.

  At x_i = 0 ReLU has no derivative; take 0 there, as minisd (and PyTorch) do.
  1. What must the forward keep in its cache for the backward? (Is ``out`` enough?)
  2. Why must the forward not write into ``x`` (think of a residual block: who else reads x?)

Fill in the two functions below, then run
  python lessons/exercises/01_relu.py              # checks your functions
  python lessons/exercises/01_relu.py --solution   # the same checks on lessons/solutions/01_relu.py
"""
import numpy as np

from minisd import functional as F
from _check import EXACT_TOL, Cases


def relu_forward(x):
    """x: any shape -> (out, cache); out = max(x, 0), same shape as x; x itself unchanged."""
    raise NotImplementedError("not written yet")


def relu_backward(dout, cache):
    """dout: the gradient of the loss w.r.t. out (shape of x) -> dx (shape of x)."""
    raise NotImplementedError("not written yet")


# ---------------------------------------------------------------------------------------------
# the checks (run this file)
# ---------------------------------------------------------------------------------------------

cases = Cases("relu_forward", "relu_backward")


def away_from_zero(rng, shape):
    """Normal numbers with |x| >= 0.1, so that x +- h never crosses the kink at 0."""
    x = rng.standard_normal(shape)
    return x + 0.1 * np.sign(x)


@cases.case("forward of a (5, 4) array", hint="out = np.maximum(x, 0) keeps the shape; the cache can be out itself")
def _(impl, check):
    x = away_from_zero(check.rng, (5, 4))
    out, _ = impl.relu_forward(x)
    check.close("out", out, F.relu_forward(x)[0], tol=EXACT_TOL)


@cases.case("the forward leaves x alone", hint="x[x < 0] = 0 writes into the caller's array: build a new one")
def _(impl, check):
    x = away_from_zero(check.rng, (6,))
    before = x.copy()
    impl.relu_forward(x)
    check.exact("x after relu_forward(x)", x, before)


@cases.case("backward with a random dout", hint="dx = dout * (x > 0): the mask alone is the gradient of sum(out), not of the loss")
def _(impl, check):
    x, dout = away_from_zero(check.rng, (4, 3)), check.rng.standard_normal((4, 3))
    out, cache = impl.relu_forward(x)
    dx = impl.relu_backward(dout, cache)
    num = check.numgrad(lambda: impl.relu_forward(x)[0], x, dout)
    check.close("dx", dx, num, mistakes={"the mask (x > 0) without dout": (x > 0) * 1.0,
                                         "dout, not masked": dout})


@cases.case("a 4-D input (N, C, H, W)", hint="nothing in ReLU depends on the number of axes: no reshape needed")
def _(impl, check):
    x, dout = away_from_zero(check.rng, (2, 3, 2, 2)), check.rng.standard_normal((2, 3, 2, 2))
    out, cache = impl.relu_forward(x)
    check.close("out", out, F.relu_forward(x)[0], tol=EXACT_TOL)
    check.close("dx", impl.relu_backward(dout, cache), check.numgrad(lambda: impl.relu_forward(x)[0], x, dout))


@cases.case("x exactly 0: gradient 0 there", hint="use x > 0 (strict), not x >= 0: at the kink minisd passes no gradient")
def _(impl, check):
    x = np.array([-1.0, 0.0, 2.0, 0.0, -0.5])
    dout = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    _, cache = impl.relu_forward(x)
    check.exact("dx", impl.relu_backward(dout, cache), np.array([0.0, 0.0, 3.0, 0.0, 0.0]))


if __name__ == "__main__":
    cases.main(globals())
