"""The checks of exercise 5 (lessons/exercises/05_shortcut.py): its cases, the wrong answers they
recognise and the hints. They show what the answer is not, and the hints come close to what
it is: solve the exercise first. ``python lessons/exercises/05_shortcut.py`` runs them.
"""
import numpy as np

from minisd import functional as F
from _check import EXACT_TOL, Cases

cases = Cases("shortcut_forward", "shortcut_backward")


def check_both(impl, check, x_shape, out_channels, stride):
    """Forward against minisd's option A, dx against central differences with a random dout."""
    x = check.rng.standard_normal(x_shape)
    want = F.shortcut_forward(x, out_channels, stride, "subsample")[0]
    out, cache = impl.shortcut_forward(x, out_channels, stride)
    check.shape("out", out, want.shape)
    check.close("out", out, want, tol=EXACT_TOL)
    dout = check.rng.standard_normal(want.shape)
    dx = impl.shortcut_backward(dout, cache)
    check.close("dx", dx, check.numgrad(lambda: impl.shortcut_forward(x, out_channels, stride)[0], x, dout))


@cases.case("identity: stride 1, 4 -> 4 channels",
            hints=["when nothing changes (stride 1, as many channels out as in), the shortcut is the identity: "
                   "what are out and dx then?"])
def _(impl, check):
    check_both(impl, check, (2, 4, 3, 3), 4, 1)


@cases.case("more channels only: stride 1, 2 -> 5",
            hints=["forward: an array of zeros of the output shape, with x copied into its first C channels",
                   "backward: out[:, c] for c < C is x[:, c] itself, so x[:, c] receives exactly the gradient of "
                   "out[:, c]"])
def _(impl, check):
    check_both(impl, check, (2, 2, 3, 3), 5, 1)


@cases.case("a stage transition: stride 2, 2 -> 4 channels, 6x6 -> 3x3",
            hints=["x[:, :, ::s, ::s] keeps pixel (s*i, s*j) as output pixel (i, j). Which pixels of x did not "
                   "influence out at all, and what is their gradient?",
                   "backward: a zero array of the shape of x, with dout[:, :C] written back at [:, :, ::s, ::s]"])
def _(impl, check):
    check_both(impl, check, (2, 2, 6, 6), 4, 2)


@cases.case("an odd size: stride 2 on 5x5 -> 3x3",
            hints=["x[:, :, ::2, ::2] of 5 rows keeps rows 0, 2 and 4: ceil(5/2) = 3; dx keeps the shape of x "
                   "(cache x's shape, not the output's)"])
def _(impl, check):
    check_both(impl, check, (1, 3, 5, 5), 6, 2)


@cases.case("the zero channels send nothing back",
            hints=["out[:, C:] is 0 whatever x is: what does the gradient arriving there contribute to dx?"])
def _(impl, check):
    x = check.rng.standard_normal((2, 2, 4, 4))
    _, cache = impl.shortcut_forward(x, 4, 2)
    dout = np.zeros((2, 4, 2, 2))
    dout[:, 2:] = check.rng.standard_normal((2, 2, 2, 2))   # gradient on the appended channels only
    dx = impl.shortcut_backward(dout, cache)
    check.shape("dx", dx, x.shape)
    check.exact("dx", dx, np.zeros_like(x))
