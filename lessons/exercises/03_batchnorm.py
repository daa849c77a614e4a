"""Exercise 3 - Batch normalisation in training mode: forward, and the backward through the batch statistics.

For one channel, over its m = N*H*W values x_i:
    mu = (1/m) sum_i x_i,   var = (1/m) sum_i (x_i - mu)^2,   s = 1 / sqrt(var + eps),
    xhat_i = (x_i - mu) * s,   out_i = gamma * xhat_i + beta.
Arrays are NCHW: each channel c has its own mu, var, gamma, beta; sums run over axes (0, 2, 3).

Derivation to do (on paper first). With g_i = dL/dout_i:
  1. Derive dL/dbeta and dL/dgamma.
  2. dL/dxhat_i = gamma g_i. If mu and var were constants, dL/dx_j would be gamma s g_j. They
     are not: every x_j moves mu and var, and through them every xhat_i. Derive d mu / d x_j
     and d var / d x_j, then dL/dvar and dL/dmu, and add up the three paths by which x_j
     reaches L (directly, through mu, through var) into one expression for dL/dx_j, written
     with g, xhat, gamma, s and m. Which term comes from which path?
  3. Test your expression without a computer: out does not change when a constant is added
     to a whole channel of x, nor (with eps = 0) when a channel is scaled about its mean.
     So, for ANY g, what must sum_j dL/dx_j and sum_j dL/dx_j (x_j - mu) be? Does your
     expression give that, and which of its terms makes each one so?

Fill in the two functions below, then run
  python lessons/exercises/03_batchnorm.py              # checks your functions
  python lessons/exercises/03_batchnorm.py --hint       # a hint for the first failing case (--hint 2: the next)
  python lessons/exercises/03_batchnorm.py --solution   # the worked solution
"""
import numpy as np

from minisd import functional as F
from _check import EXACT_TOL, Cases


def batchnorm_forward(x, gamma, beta, eps=1e-5):
    """x (N, C, H, W), gamma (C,), beta (C,) -> (out (N, C, H, W), cache); batch statistics over N, H, W."""
    raise NotImplementedError("not written yet")


def batchnorm_backward(dout, cache):
    """dout (N, C, H, W) -> (dx (N, C, H, W), dgamma (C,), dbeta (C,))."""
    raise NotImplementedError("not written yet")


# ---------------------------------------------------------------------------------------------
# the checks (run this file)
# ---------------------------------------------------------------------------------------------

cases = Cases("batchnorm_forward", "batchnorm_backward")


def data(rng, shape, gamma=None):
    """An input with per-channel offsets and scales, gamma, beta and a random dout."""
    C = shape[1]
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3, C)[None, :, None, None] + rng.normal(0, 3, C)[None, :, None, None]
    g = np.ones(C) if gamma is None else gamma
    return x, g, rng.standard_normal(C), rng.standard_normal(shape)


def wrong_dx(x, gamma, dout, eps=1e-5):
    """What dx would be with a correction term missing: {description: dx}."""
    axes = (0, 2, 3)
    m = x.size // x.shape[1]
    s = 1 / np.sqrt(x.var(axis=axes) + eps)
    xhat = (x - x.mean(axis=axes, keepdims=True)) * s[None, :, None, None]
    k = (gamma * s / m)[None, :, None, None]
    sum_g, sum_gx = dout.sum(axis=axes, keepdims=True), (dout * xhat).sum(axis=axes, keepdims=True)
    return {"gamma * s * dout: mean and variance treated as constants": k * m * dout,
            "the formula without the mean's term (- sum g)": k * (m * dout - xhat * sum_gx),
            "the formula without the variance's term (- xhat sum g xhat)": k * (m * dout - sum_g),
            "the formula with m = N instead of N*H*W": (gamma * s / x.shape[0])[None, :, None, None]
            * (x.shape[0] * dout - sum_g - xhat * sum_gx)}


def check_all(impl, check, x, gamma, beta, dout, eps=1e-5, h=1e-5):
    """Forward against minisd, the three gradients against central differences (step h)."""
    out, cache = impl.batchnorm_forward(x, gamma, beta, eps)
    check.close("out", out, F.batchnorm_train_forward(x, gamma, beta, eps)[0], tol=EXACT_TOL)
    dx, dgamma, dbeta = impl.batchnorm_backward(dout, cache)
    f = lambda: impl.batchnorm_forward(x, gamma, beta, eps)[0]
    check.close("dx", dx, check.numgrad(f, x, dout, h=h), mistakes=wrong_dx(x, gamma, dout, eps))
    check.close("dgamma", dgamma, check.numgrad(f, gamma, dout))
    check.close("dbeta", dbeta, check.numgrad(f, beta, dout))


@cases.case("forward: every channel comes out with mean 0, std 1",
            hints=["each channel has its own statistics: reduce over axes (0, 2, 3), with keepdims=True so that they "
                   "broadcast against x",
                   "var is the biased one, divided by m (np.var's default), and eps goes inside the square root"])
def _(impl, check):
    x, _, _, _ = data(check.rng, (4, 3, 2, 2))
    out, _ = impl.batchnorm_forward(x, np.ones(3), np.zeros(3))
    check.shape("out", out, x.shape)
    check.small("per-channel mean of out", out.mean(axis=(0, 2, 3)), 1e-12)
    check.close("per-channel variance of out (eps = 1e-5 makes it slightly < 1)", out.var(axis=(0, 2, 3)),
                x.var(axis=(0, 2, 3)) / (x.var(axis=(0, 2, 3)) + 1e-5), tol=EXACT_TOL)


@cases.case("gamma = 1, beta = 0: dx, dgamma, dbeta",
            hints=["start with dbeta and dgamma: out_i = gamma xhat_i + beta; every value of the channel adds its share",
                   "dx = gamma * s * dout treats mu and var as constants. Use d mu / d x_j = 1/m and "
                   "d var / d x_j = 2 (x_j - mu) / m to find dL/dmu and dL/dvar, then add the three paths into dx_j",
                   "with d_i = gamma g_i: dL/dvar = -(s^2 / 2) sum_i d_i xhat_i, and dL/dmu = -s sum_i d_i (its term "
                   "through var is 0, since sum_i (x_i - mu) = 0)",
                   "collected: dx_j = (gamma s / m) * (m g_j - sum_i g_i - xhat_j sum_i g_i xhat_i), the sums over "
                   "(0, 2, 3) of each channel"])
def _(impl, check):
    x, g, _, dout = data(check.rng, (4, 3, 2, 2))
    check_all(impl, check, x, g, np.zeros(3), dout)


@cases.case("gamma and beta random: dx, dgamma, dbeta",
            hints=["gamma multiplies every path into dx: dL/dxhat = gamma * dout, not dout"])
def _(impl, check):
    x, g, b, dout = data(check.rng, (4, 3, 2, 2), gamma=check.rng.uniform(0.5, 2, 3))
    check_all(impl, check, x, g, b, dout)


@cases.case("m = N*H*W, not N: two 3x3 images, 2 channels",
            hints=["each channel is normalised over all N*H*W of its values: how many is m?"])
def _(impl, check):
    x, g, b, dout = data(check.rng, (2, 2, 3, 3), gamma=check.rng.uniform(0.5, 2, 2))
    check_all(impl, check, x, g, b, dout)


@cases.case("a channel with almost no variance (eps matters)",
            hints=["the backward must use the same s = 1 / sqrt(var + eps) as the forward: with var ~ 1e-6, "
                   "1 / sqrt(var) is three times larger. Cache s (or var + eps) in the forward"])
def _(impl, check):
    x, g, b, dout = data(check.rng, (3, 2, 2, 2), gamma=check.rng.uniform(0.5, 2, 2))
    x[:, 1] = 0.7 + 1e-3 * check.rng.standard_normal((3, 2, 2))   # var ~ 1e-6, ten times below eps = 1e-5
    check_all(impl, check, x, g, b, dout, h=1e-6)                  # h well below the spread of x (1e-3)


@cases.case("dx is blind to shifting and to scaling a channel (eps = 0)",
            hints=["out does not change when a constant is added to a whole channel of x. So for any dout, "
                   "sum over the channel of dx must be 0: which term of your dx makes it so?",
                   "with eps = 0, out does not change either when a channel is scaled about its mean: so the sum "
                   "over the channel of dx * (x - mu) must be 0. Which term makes that so?"])
def _(impl, check):
    x, g, b, dout = data(check.rng, (4, 2, 2, 2), gamma=check.rng.uniform(0.5, 2, 2))
    _, cache = impl.batchnorm_forward(x, g, b, 0.0)            # eps = 0: scaling x about mu changes nothing
    dx, _, _ = impl.batchnorm_backward(dout, cache)
    check.shape("dx", dx, x.shape)
    centred = x - x.mean(axis=(0, 2, 3), keepdims=True)
    check.small("sum of dx over each channel (the gradient of a shift)", dx.sum(axis=(0, 2, 3)), 1e-10,
                detail="it must be 0 for any dout: the term through the mean is missing or wrong")
    check.small("sum of dx * (x - mu) over each channel (the gradient of a scaling)",
                (dx * centred).sum(axis=(0, 2, 3)), 1e-10,
                detail="it must be 0 for any dout: the term through the variance is missing or wrong")


if __name__ == "__main__":
    cases.main(globals())
