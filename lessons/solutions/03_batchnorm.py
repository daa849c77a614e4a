"""Solution to exercise 3 - batch normalisation (checked by ``python lessons/exercises/03_batchnorm.py --solution``).

Derivation, for one channel with m = N*H*W values, g_i = dL/dout_i:
  1. out_i = gamma xhat_i + beta, so dL/dbeta = sum_i g_i and dL/dgamma = sum_i g_i xhat_i.
  2. Let d_i = dL/dxhat_i = gamma g_i. x_j reaches L through xhat_j directly and through mu and
     var (which every xhat_i uses). With xhat_i = (x_i - mu) s and s = (var + eps)^(-1/2):
       dL/dvar = sum_i d_i (x_i - mu) * (-1/2) (var + eps)^(-3/2) = -(s^2 / 2) sum_i d_i xhat_i
       dL/dmu  = -s sum_i d_i   (+ a term through var, which is 0: sum_i (x_i - mu) = 0)
       dL/dx_j = d_j s + dL/dmu * (1/m) + dL/dvar * 2 (x_j - mu) / m
               = (s / m) * ( m d_j - sum_i d_i - xhat_j sum_i d_i xhat_i )
     and with d = gamma g:  dL/dx_j = (gamma s / m) (m g_j - sum_i g_i - xhat_j sum_i g_i xhat_i).
  3. A shift x -> x + c (one channel) moves mu by c and leaves x - mu, var and so out unchanged:
     for any g, sum_j dL/dx_j = 0. The formula gives it through the mean's term: summed over j,
     m sum g - m sum g - (sum_j xhat_j) sum g xhat = 0, since sum_j xhat_j = 0.
     A scaling about the mean, x - mu -> (1 + t)(x - mu), scales sqrt(var) by (1 + t) too, so
     with eps = 0 xhat and out do not change: sum_j dL/dx_j (x_j - mu) = 0. With x_j - mu =
     xhat_j / s the formula gives (gamma / m) (m sum g xhat - 0 - (sum_j xhat_j^2) sum g xhat),
     and sum_j xhat_j^2 = m when eps = 0: the variance's term cancels it. (With eps > 0,
     sum_j xhat_j^2 = m var / (var + eps): a leftover of relative size eps / var.)
     So a check needs both: with dout = 1 everywhere, sum g xhat = sum xhat = 0 and the
     variance's term vanishes - dx = 0 there tests the mean's term only.
"""
import numpy as np

AXES = (0, 2, 3)  # N, H, W: everything but the channel


def batchnorm_forward(x, gamma, beta, eps=1e-5):
    """x (N, C, H, W), gamma (C,), beta (C,) -> (out (N, C, H, W), cache); batch statistics over N, H, W."""
    mu = x.mean(axis=AXES, keepdims=True)                        # (1, C, 1, 1)
    var = ((x - mu) ** 2).mean(axis=AXES, keepdims=True)         # biased: divided by m
    s = 1.0 / np.sqrt(var + eps)                                 # eps inside, here and in backward
    xhat = (x - mu) * s
    out = gamma[None, :, None, None] * xhat + beta[None, :, None, None]
    return out, (xhat, s, gamma)


def batchnorm_backward(dout, cache):
    """dout (N, C, H, W) -> (dx (N, C, H, W), dgamma (C,), dbeta (C,))."""
    xhat, s, gamma = cache
    m = dout.size // dout.shape[1]                               # N * H * W values per channel
    dbeta = dout.sum(axis=AXES)                                  # (C,)
    dgamma = (dout * xhat).sum(axis=AXES)                        # (C,)
    k = gamma[None, :, None, None] * s / m                       # (1, C, 1, 1)
    dx = k * (m * dout                                           # the direct path
              - dbeta[None, :, None, None]                       # through the mean
              - xhat * dgamma[None, :, None, None])              # through the variance
    return dx, dgamma, dbeta
