"""The checks of exercise 1 (lessons/exercises/01_relu.py): its cases, the wrong answers they
recognise and the hints. They show what the answer is not, and the hints come close to what
it is: solve the exercise first. ``python lessons/exercises/01_relu.py`` runs them.
"""
import numpy as np

from minisd import functional as F
from _check import EXACT_TOL, Cases

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
    check.close("dx", dx, num, mistakes={"the gradient of sum(out), not of the loss: dout is left out":
                                         check.numgrad(lambda: impl.relu_forward(x)[0], x),
                                         "dout passed back unchanged everywhere, as if out were x": dout})


@cases.case("a 4-D input (N, C, H, W)",
            hints=["nothing in ReLU depends on the number of axes: element-wise operations need no reshape"])
def _(impl, check):
    x, dout = away_from_zero(check.rng, (2, 3, 2, 2)), check.rng.standard_normal((2, 3, 2, 2))
    out, cache = impl.relu_forward(x)
    check.close("out", out, F.relu_forward(x)[0], tol=EXACT_TOL)
    check.close("dx", impl.relu_backward(dout, cache), check.numgrad(lambda: impl.relu_forward(x)[0], x, dout))


@cases.case("x exactly 0: the gradient at the kink",
            hints=["at the kink x = 0 minisd passes no gradient: which comparison, > or >=, gives 0 there?"])
def _(impl, check):
    x = np.array([-1.0, 0.0, 2.0, 0.0, -0.5])
    dout = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    _, cache = impl.relu_forward(x)
    check.exact("dx", impl.relu_backward(dout, cache), np.array([0.0, 0.0, 3.0, 0.0, 0.0]))
