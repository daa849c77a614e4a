"""Exercise 1 - ReLU: forward and backward.

out = max(x, 0), element by element.

Derivation to do (on paper first)
  1. Which entries of x does out_i depend on? So what shape has the Jacobian d out / d x?
  2. Derive dL/dx_i from dL/dout_i and x_i. At x_i = 0 ReLU has no derivative: what should
     the gradient be there? (minisd, like PyTorch, passes none.)
  3. What must the forward keep in its cache for the backward? (Is ``out`` enough?)
  4. Why must the forward not write into ``x``? (Think of a residual block: who else reads x?)

Fill in the two functions below, then run
  python lessons/exercises/01_relu.py              # checks your functions (the first failing case in detail)
  python lessons/exercises/01_relu.py --hint       # a hint for the first failing case (--hint 2: the next)
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


@cases.case("forward of a (5, 4) array",
            hints=["out has the shape of x; np.maximum(x, 0) compares element by element and returns a new array",
                   "for the cache: the backward only needs to know where x > 0. Can out tell you that?"])
def _(impl, check):
    x = away_from_zero(check.rng, (5, 4))
    out, _ = impl.relu_forward(x)
    check.close("out", out, F.relu_forward(x)[0], tol=EXACT_TOL)


@cases.case("the forward leaves x alone",
            hints=["x[x < 0] = 0 (or np.maximum(x, 0, out=x)) writes into the caller's array: build a new one"])
def _(impl, check):
    x = away_from_zero(check.rng, (6,))
    before = x.copy()
    impl.relu_forward(x)
    check.exact("x after relu_forward(x)", x, before)


@cases.case("backward with a random dout",
            hints=["out_i depends on x_i alone: the Jacobian is diagonal, so dL/dx_i = dL/dout_i * (d out_i / d x_i)",
                   "d out_i / d x_i is 1 where x_i > 0 and 0 where x_i < 0",
                   "dx = dout * mask: the mask alone is the gradient of sum(out), not of the loss"])
def _(impl, check):
    x, dout = away_from_zero(check.rng, (4, 3)), check.rng.standard_normal((4, 3))
    out, cache = impl.relu_forward(x)
    dx = impl.relu_backward(dout, cache)
    num = check.numgrad(lambda: impl.relu_forward(x)[0], x, dout)
    check.close("dx", dx, num, mistakes={"the mask (x > 0) without dout": (x > 0) * 1.0,
                                         "dout, not masked": dout})


@cases.case("a 4-D input (N, C, H, W)",
            hints=["nothing in ReLU depends on the number of axes: element-wise operations need no reshape"])
def _(impl, check):
    x, dout = away_from_zero(check.rng, (2, 3, 2, 2)), check.rng.standard_normal((2, 3, 2, 2))
    out, cache = impl.relu_forward(x)
    check.close("out", out, F.relu_forward(x)[0], tol=EXACT_TOL)
    check.close("dx", impl.relu_backward(dout, cache), check.numgrad(lambda: impl.relu_forward(x)[0], x, dout))


@cases.case("x exactly 0: gradient 0 there",
            hints=["at the kink x = 0 minisd passes no gradient: which comparison, > or >=, gives 0 there?"])
def _(impl, check):
    x = np.array([-1.0, 0.0, 2.0, 0.0, -0.5])
    dout = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    _, cache = impl.relu_forward(x)
    check.exact("dx", impl.relu_backward(dout, cache), np.array([0.0, 0.0, 3.0, 0.0, 0.0]))


if __name__ == "__main__":
    cases.main(globals())
