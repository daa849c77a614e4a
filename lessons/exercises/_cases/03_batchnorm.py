"""The checks of exercise 3 (lessons/exercises/03_batchnorm.py): its cases, the wrong answers they
recognise and the hints. They show what the answer is not, and the hints come close to what
it is: solve the exercise first. ``python lessons/exercises/03_batchnorm.py`` runs them.
"""
import numpy as np

from minisd import functional as F
from _check import EXACT_TOL, Cases, Check

cases = Cases("batchnorm_forward", "batchnorm_backward")


def data(rng, shape, gamma=None):
    """An input with per-channel offsets and scales, gamma, beta and a random dout."""
    C = shape[1]
    scale, offset = rng.uniform(0.5, 3, C)[None, :, None, None], rng.normal(0, 3, C)[None, :, None, None]
    x = rng.standard_normal(shape) * scale + offset
    g = np.ones(C) if gamma is None else gamma
    return x, g, rng.standard_normal(C), rng.standard_normal(shape)


def forgetting(x, gamma, beta, dout, eps, h, forget):
    """dx (N, C, H, W) of a backward that forgets the paths through the statistics in ``forget``
    (a subset of {"mean", "var"}): central differences of batch norm with those statistics held
    at their values, so that moving x no longer moves them. forget=() gives the right dx."""
    axes = (0, 2, 3)
    mu0, var0 = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)   # copies, not views

    def f():
        mu = mu0 if "mean" in forget else x.mean(axis=axes, keepdims=True)
        var = var0 if "var" in forget else ((x - mu) ** 2).mean(axis=axes, keepdims=True)
        return gamma[None, :, None, None] * (x - mu) / np.sqrt(var + eps) + beta[None, :, None, None]
    return Check.numgrad(f, x, dout, h=h)


def wrong_dx(x, gamma, beta, dout, eps, h):
    """What dx would be with a path through the statistics missing, or m miscounted: {description: dx}.

    Built from central differences of batch norm with statistics held constant, so that no
    formula for dx is written here."""
    right = forgetting(x, gamma, beta, dout, eps, h, ())
    direct = forgetting(x, gamma, beta, dout, eps, h, ("mean", "var"))
    hw = x.shape[2] * x.shape[3]   # m = N instead of N*H*W makes both corrections H*W times larger
    return {"dx with the mean and the variance treated as constants": direct,
            "dx without the term through the mean (the mean treated as a constant)":
                forgetting(x, gamma, beta, dout, eps, h, ("mean",)),
            "dx without the term through the variance (the variance treated as a constant)":
                forgetting(x, gamma, beta, dout, eps, h, ("var",)),
            "dx with m = N, not N*H*W: the terms through the mean and the variance are H*W times too large":
                direct + hw * (right - direct)}


def check_all(impl, check, x, gamma, beta, dout, eps=1e-5, h=1e-5):
    """Forward against minisd, the three gradients against central differences (step h)."""
    out, cache = impl.batchnorm_forward(x, gamma, beta, eps)
    check.close("out", out, F.batchnorm_train_forward(x, gamma, beta, eps)[0], tol=EXACT_TOL)
    dx, dgamma, dbeta = impl.batchnorm_backward(dout, cache)
    f = lambda: impl.batchnorm_forward(x, gamma, beta, eps)[0]
    check.close("dx", dx, check.numgrad(f, x, dout, h=h), mistakes=wrong_dx(x, gamma, beta, dout, eps, h))
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
            hints=["start with dbeta and dgamma: out_i = gamma xhat_i + beta; every value of the channel adds its "
                   "share",
                   "dx = gamma * s * dout treats mu and var as constants. Use d mu / d x_j = 1/m and "
                   "d var / d x_j = 2 (x_j - mu) / m to find dL/dmu and dL/dvar, then add the three paths into dx_j",
                   "with d_i = gamma g_i: dL/dvar = -(s^2 / 2) sum_i d_i xhat_i, and dL/dmu = -s sum_i d_i (its term "
                   "through var is 0, since sum_i (x_i - mu) = 0)",
                   "collected, dx_j is gamma s / m times: m g_j, minus one sum over the channel (the mean's path), "
                   "minus xhat_j times another (the variance's path). Both sums are already computed: dbeta and "
                   "dgamma"])
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
