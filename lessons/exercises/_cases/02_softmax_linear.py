"""The checks of exercise 2 (lessons/exercises/02_softmax_linear.py): its cases, the wrong answers they
recognise and the hints. They show what the answer is not, and the hints come close to what
it is: solve the exercise first. ``python lessons/exercises/02_softmax_linear.py`` runs them.
"""
import numpy as np

from minisd import functional as F
from _check import EXACT_TOL, Cases

cases = Cases("linear_forward", "linear_backward", "softmax_cross_entropy_forward", "softmax_cross_entropy_backward")


@cases.case("linear: forward and backward, N=4 D=3 K=5",
            hints=["write one entry, out_nk = sum_d x_nd W_kd + b_k, and differentiate it with respect to x_nd, W_kd "
                   "and b_k; then sum over every out_nk that the variable appears in",
                   "check the shapes: dx (N, D), dW (K, D), db (K,). With G (N, K), W (K, D) and x (N, D), only one "
                   "product has each shape",
                   "b_k is added to out_nk for every n: every example adds its share to db (a sum over n, not a mean)"])
def _(impl, check):
    rng = check.rng
    x, W, b = rng.standard_normal((4, 3)), rng.standard_normal((5, 3)), rng.standard_normal(5)
    dout = rng.standard_normal((4, 5))
    out, cache = impl.linear_forward(x, W, b)
    check.close("out", out, F.linear_forward(x, W, b)[0], tol=EXACT_TOL)
    dx, dW, db = impl.linear_backward(dout, cache)
    f = lambda: impl.linear_forward(x, W, b)[0]
    check.close("dx", dx, check.numgrad(f, x, dout))
    check.close("dW", dW, check.numgrad(f, W, dout))
    right_db = check.numgrad(f, b, dout)
    check.close("db", db, right_db, mistakes={"a mean over the batch where a sum belongs": right_db / x.shape[0]})


@cases.case("softmax CE: one example",
            hints=["write -log p_y = -z_y + log sum_j exp z_j, and differentiate each term with respect to z_k",
                   "the derivative of log sum_j exp z_j with respect to z_k is exp z_k / sum_j exp z_j = p_k; "
                   "that of -z_y is -1 for k = y and 0 otherwise"])
def _(impl, check):
    rng = check.rng
    z, y = rng.standard_normal((1, 4)), np.array([2])
    loss, cache = impl.softmax_cross_entropy_forward(z, y)
    check.close("loss", loss, F.softmax_cross_entropy_forward(z, y)[0], tol=EXACT_TOL)
    dz = impl.softmax_cross_entropy_backward(1.0, cache)
    check.close("dlogits", dz, check.numgrad(lambda: np.asarray(impl.softmax_cross_entropy_forward(z, y)[0]), z))


@cases.case("softmax CE: a batch of 6, the mean over N",
            hints=["the loss is a mean over the N examples: what factor does each example's gradient carry?"])
def _(impl, check):
    rng = check.rng
    z, y = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)
    loss, cache = impl.softmax_cross_entropy_forward(z, y)
    check.close("loss", loss, F.softmax_cross_entropy_forward(z, y)[0], tol=EXACT_TOL,
                mistakes={"the sum over the batch, not the mean": 6 * F.softmax_cross_entropy_forward(z, y)[0]})
    dz = impl.softmax_cross_entropy_backward(1.0, cache)
    right = check.numgrad(lambda: np.asarray(impl.softmax_cross_entropy_forward(z, y)[0]), z)
    check.close("dlogits", dz, right, mistakes={"the gradient of the sum over the batch, not of the mean": 6 * right})


@cases.case("softmax CE: logits in the thousands (stability)",
            hints=["np.exp(1000.0) is inf in float64. Show that p does not change when a constant c is subtracted "
                   "from a whole row of z: which c makes every exponent <= 0?",
                   "subtract each row's maximum before np.exp, and take log p = (z - c) - log sum_j exp(z_j - c) "
                   "rather than the log of a ratio that may be 0"])
def _(impl, check):
    rng = check.rng
    z, y = 1000 * rng.standard_normal((3, 4)), np.array([0, 3, 1])
    with np.errstate(all="ignore"):  # an unstable exp overflows: we report nan/inf below instead of a warning
        loss, cache = impl.softmax_cross_entropy_forward(z, y)
        dz = impl.softmax_cross_entropy_backward(1.0, cache)
    check.close("loss", loss, F.softmax_cross_entropy_forward(z, y)[0], tol=EXACT_TOL)
    check.close("dlogits", dz, F.softmax_cross_entropy_backward(1.0, F.softmax_cross_entropy_forward(z, y)[1]),
                tol=EXACT_TOL)


@cases.case("softmax CE: the loss arrives scaled (dout = 2.5)",
            hints=["the backward receives dout = dL_total/dloss: by the chain rule, every entry of your gradient is "
                   "multiplied by it"])
def _(impl, check):
    rng = check.rng
    z, y = rng.standard_normal((5, 3)), rng.integers(0, 3, 5)
    _, cache = impl.softmax_cross_entropy_forward(z, y)
    dz = impl.softmax_cross_entropy_backward(2.5, cache)
    check.close("dlogits", dz, check.numgrad(lambda: 2.5 * np.asarray(impl.softmax_cross_entropy_forward(z, y)[0]), z))


@cases.case("the whole head: x -> linear -> softmax CE, N=8 D=6 K=4",
            hints=["chain them: the dlogits that the loss's backward returns is the dout of linear_backward"])
def _(impl, check):
    rng = check.rng
    x, W, b = rng.standard_normal((8, 6)), 0.5 * rng.standard_normal((4, 6)), rng.standard_normal(4)
    y = rng.integers(0, 4, 8)

    def loss():
        return np.asarray(impl.softmax_cross_entropy_forward(impl.linear_forward(x, W, b)[0], y)[0])

    logits, lin_cache = impl.linear_forward(x, W, b)
    _, ce_cache = impl.softmax_cross_entropy_forward(logits, y)
    dx, dW, db = impl.linear_backward(impl.softmax_cross_entropy_backward(1.0, ce_cache), lin_cache)
    for what, got, wrt in (("dx", dx, x), ("dW", dW, W), ("db", db, b)):
        check.close(what, got, check.numgrad(loss, wrt))
