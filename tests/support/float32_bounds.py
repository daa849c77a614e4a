"""Rounding budgets for float32 results: each layer function's float64 answer and its error bound.

Every float32 comparison in the tests goes through here: a float32 result (fast CPU path,
GPU path, readable path) is compared with the *same computation in float64* on the same
float32 inputs, within ``minisd.gradcheck.rounding_error_ratio``'s bound  gamma_n * magnitude
(see its docstring for why that bound holds on every machine). The functions below return,
for each output of a layer function, ``(exact, magnitude, n)``:

* bilinear maps (convolution, linear, average pooling): ``magnitude`` is the same map applied
  to the absolute values of the operands, i.e. sum |a b| element by element, and ``n`` the
  number of products summed into one element;
* batch norm: the first-order sum of its steps' bounds, derived in :func:`batchnorm_train`.

All arithmetic here is float64 NumPy on the readable functions (``minisd.functional``).
"""
import numpy as np

import minisd
from minisd import backend, functional as F


def _f64(*arrays):
    return [None if a is None else backend.to_numpy(a).astype(np.float64) for a in arrays]


def ratios(results, bounds):
    """{name: rounding_error_ratio} for the outputs named in both ``results`` and ``bounds``."""
    out = {}
    for name, (exact, magnitude, n) in bounds.items():
        if results.get(name) is not None:
            out[name] = minisd.gradcheck.rounding_error_ratio(backend.to_numpy(results[name]), exact, magnitude, n)
    return out


def assert_within_rounding(results, bounds, what=""):
    """Every float32 result within its rounding budget of the float64 answer (ratio <= 1)."""
    worst = ratios(results, bounds)
    assert worst and max(worst.values()) <= 1.0, f"{what}: rounding budget used {worst}"
    return worst


def assert_twins_equal(fast, ref, dtype, bounds, what):
    """A fast function's result against its readable twin's. float64: equal to 1e-12 (they differ
    only in the order of additions). float32: each within its rounding budget of float64."""
    assert fast.shape == ref.shape and fast.dtype == ref.dtype == np.dtype(dtype), what
    fast, ref = backend.to_numpy(fast), backend.to_numpy(ref)
    if dtype == np.float64:
        assert minisd.relative_error(fast, ref) < 1e-12, (what, minisd.relative_error(fast, ref))
    else:
        assert_within_rounding({what: fast}, {what: bounds[what]}, f"fast {what}")
        assert_within_rounding({what: ref}, {what: bounds[what]}, f"readable {what}")


def conv2d(x, weight, bias, stride, padding, dout):
    """Bounds for conv2d_forward / conv2d_backward: out, dx, dweight, dbias.

    out[n, f, i, j] sums C*k*k products (and the bias); dx[n, c, h, w] at most F*k*k (every
    filter, every window that covers the pixel); dweight and dbias sum N*Ho*Wo products.
    """
    x, weight, bias, dout = _f64(x, weight, bias, dout)
    F_, C, k, _ = weight.shape
    out, cache = F.conv2d_forward(x, weight, bias, stride, padding)
    mag_out, mag_cache = F.conv2d_forward(np.abs(x), np.abs(weight), None if bias is None else np.abs(bias),
                                          stride, padding)
    dx, dw, db = F.conv2d_backward(dout, cache)
    mdx, mdw, mdb = F.conv2d_backward(np.abs(dout), mag_cache)
    N, _, Ho, Wo = out.shape
    bounds = {"out": (out, mag_out, C * k * k + (bias is not None)),
              "dx": (dx, mdx, F_ * k * k), "dweight": (dw, mdw, N * Ho * Wo)}
    if bias is not None:
        bounds["dbias"] = (db, mdb, N * Ho * Wo)
    return bounds


def batchnorm_train(x, weight, bias, eps, dout):
    """Bounds for batchnorm_train_forward / _backward: out, mean, var, dx, dweight, dbias.

    Per channel, with m = N*H*W values, mean mu, biased variance v, sigma = sqrt(v + eps),
    s = 1/sigma, xhat = (x - mu) s, A = mean|x|, B = max|x - mu| and R = max(1, (A + B) / sigma)
    (how large the operands are against the spread they are divided by), n = m + 4 and
    gamma = gamma_n, to first order in u:
      mean:  a sum of m terms, one division:              |d mu|   <= gamma A
      var:   m squares of (x - mu), two-pass or chunks merged (Chan et al.: cross terms
             2 (mu_c - mu) d mu_c) or sum x^2 - m mu^2:   |d v|    <= gamma (v + 4AB) <= gamma 2 sigma^2 R^2
      so     |d sigma / sigma| <= gamma R^2 and, with s A <= R and the final roundings,
             |d xhat| <= gamma 2 R^2 (1 + |xhat|);  out = g xhat + b (or x s g + (b - mu s g)):
      out:   |d out| <= gamma (3 R^2 |g| (1 + |xhat|) + |b|)
      dbias = sum dout:                                   <= gamma sum |dout|
      dweight = sum dout xhat:  sum |dout| |d xhat| + gamma sum |dout xhat| <= gamma 3 R^2 sum |dout| (1 + |xhat|)
      dx = g s (dout - dbias / m - xhat dweight / m): with D = mean(|dout| (1 + |xhat|)),
             the errors of dbias, dweight, xhat and s carried through (or the per-channel
             affine a dout + b x + c, whose cancellation costs u |g| s D (|xhat| + 2R)):
             |d dx| <= gamma |g| s R^2 (7 (1 + |xhat|) D + 2 |dout|)
    """
    x, weight, bias, dout = _f64(x, weight, bias, dout)
    N, C, H, W = x.shape
    m = N * H * W
    out, cache = F.batchnorm_train_forward(x, weight, bias, eps)
    dx, dw, db = F.batchnorm_train_backward(dout, cache)
    ch = (None, slice(None), None, None)  # (C,) -> broadcast over (N, C, H, W)
    mu, v, s = cache.mean, cache.var, cache.inv_std
    sigma = 1 / s
    A = np.abs(x).mean(axis=(0, 2, 3))
    B = np.abs(x - mu[ch]).max(axis=(0, 2, 3))
    R2 = np.maximum(1.0, (A + B) / sigma) ** 2
    g, b = np.abs(weight), np.abs(bias)
    ax = np.abs(cache.xhat)
    adout = np.abs(dout)
    D = (adout * (1 + ax)).mean(axis=(0, 2, 3))
    n = m + 4
    return {
        "out": (out, 3 * R2[ch] * g[ch] * (1 + ax) + b[ch], n),
        "mean": (mu, A, n),
        "var": (v, 2 * sigma ** 2 * R2, n),
        "dx": (dx, (g * s * R2)[ch] * (7 * (1 + ax) * D[ch] + 2 * adout), n),
        "dweight": (dw, 3 * R2 * (adout * (1 + ax)).sum(axis=(0, 2, 3)), n),
        "dbias": (db, adout.sum(axis=(0, 2, 3)), n),
    }


def linear(x, weight, bias, dout):
    """Bounds for linear_forward / _backward: out sums in_features products (and the bias),
    dx out_features, dweight and dbias N."""
    x, weight, bias, dout = _f64(x, weight, bias, dout)
    out, cache = F.linear_forward(x, weight, bias)
    dx, dw, db = F.linear_backward(dout, cache)
    ab = None if bias is None else np.abs(bias)
    mag_out, mag_cache = F.linear_forward(np.abs(x), np.abs(weight), ab)
    mdx, mdw, mdb = F.linear_backward(np.abs(dout), mag_cache)
    N, fan_in = x.shape
    bounds = {"out": (out, mag_out, fan_in + (bias is not None)), "dx": (dx, mdx, weight.shape[0]),
              "dweight": (dw, mdw, N)}
    if bias is not None:
        bounds["dbias"] = (db, mdb, N)
    return bounds


def global_avg_pool(x, dout):
    """Bounds for global_avg_pool_forward / _backward: a mean of H*W values; dout / (H*W)."""
    x, dout = _f64(x, dout)
    H, W = x.shape[2:]
    out, cache = F.global_avg_pool_forward(x)
    return {"out": (out, F.global_avg_pool_forward(np.abs(x))[0], H * W + 1),
            "dx": (F.global_avg_pool_backward(dout, cache), F.global_avg_pool_backward(np.abs(dout), cache), 1)}


def relu(x, dout):
    """ReLU forward and backward are exact (a comparison and a copy): a budget of one rounding
    of nothing, so any difference at all fails."""
    x, dout = _f64(x, dout)
    out, cache = F.relu_forward(x)
    zero = np.zeros_like(x)
    return {"out": (out, zero, 1), "dx": (F.relu_backward(dout, cache), zero, 1)}


def for_layer(layer, x, dout):
    """The bounds of one minisd layer (Conv2d, BatchNorm2d in training mode, Linear,
    GlobalAvgPool, ReLU), keyed like :func:`layer_results`: out, dx and each parameter."""
    p = {k: v for k, v in layer.params.items()}
    if isinstance(layer, minisd.Conv2d):
        return conv2d(x, p["weight"], p.get("bias"), layer.stride, layer.padding, dout)
    if isinstance(layer, minisd.BatchNorm2d):
        return batchnorm_train(x, p["weight"], p["bias"], layer.eps, dout)
    if isinstance(layer, minisd.Linear):
        return linear(x, p["weight"], p.get("bias"), dout)
    if isinstance(layer, minisd.GlobalAvgPool):
        return global_avg_pool(x, dout)
    if isinstance(layer, minisd.ReLU):
        return relu(x, dout)
    raise TypeError(f"no rounding budget written for {type(layer).__name__}")


def layer_results(layer, x, dout):
    """Run ``layer`` forward and backward once: {"out", "dx", "weight" -> its gradient, ...}."""
    out = layer.forward(x)
    layer.zero_grad()
    dx = layer.backward(dout)
    results = {"out": out, "dx": dx}
    results.update({("d" + k): g for k, g in layer.grads.items()})
    return results
