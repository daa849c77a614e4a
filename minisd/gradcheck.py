"""Numerical gradients by central differences, to check every backward pass.

    df/dx_i ~ (f(x + h e_i) - f(x - h e_i)) / (2h)

The error of this estimate is O(h^2) from the formula plus O(eps/h) from
rounding. In float64 (eps ~ 1e-16) with h = 1e-5 both are ~1e-10 of the
scale of f, so analytic and numerical gradients agree to ~1e-8 relative; in
float32 (eps ~ 1e-7) rounding alone would swamp the comparison. Hence every
gradient check runs in float64.
"""
from __future__ import annotations

from .backend import get_xp


def numerical_gradient(f, x, dout=None, h=1e-5):
    """Central-difference gradient of ``sum(f() * dout)`` with respect to array ``x``.

    ``f`` takes no arguments and reads ``x``, which is perturbed in place (and
    restored) one element at a time, so ``x`` must be C-contiguous. ``dout``
    weights the output (default: ones, the gradient of the sum); a scalar ``f``
    needs none. Works on NumPy and CuPy arrays. Returns an array shaped like ``x``.
    """
    if not x.flags.c_contiguous:
        raise ValueError("numerical_gradient perturbs x in place: pass a C-contiguous array")
    xp = get_xp(x)
    grad = xp.zeros(x.shape, dtype=x.dtype)
    flat, gflat = x.reshape(-1), grad.reshape(-1)

    def weighted():
        out = f()
        return float((out * dout).sum()) if dout is not None else float(out.sum())

    for i in range(flat.size):
        old = float(flat[i])
        flat[i] = old + h
        plus = weighted()
        flat[i] = old - h
        minus = weighted()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def relative_error(a, b, floor=1e-3, tiny=1e-8):
    """Worst element-wise relative error  max_i |a_i - b_i| / max(|a_i| + |b_i|, s).

    ``s = max(floor * max_i(|a_i| + |b_i|), tiny)``: without a floor an entry
    whose true value is 0 (a numerical gradient of 1e-11 against an analytic 0)
    would count as 100% wrong, though it is pure rounding; ``tiny`` does the
    same for an array that is zero as a whole (a conv bias before a batch norm
    has exactly zero gradient). 0 means equal.
    """
    xp = get_xp(a, b)
    a, b = xp.asarray(a, dtype=xp.float64), xp.asarray(b, dtype=xp.float64)
    if a.shape != b.shape:
        raise ValueError(f"relative_error: shapes differ, {a.shape} vs {b.shape}")
    if a.size == 0:
        return 0.0
    size = xp.abs(a) + xp.abs(b)
    s = max(floor * float(size.max()), tiny)
    return float((xp.abs(a - b) / xp.maximum(size, s)).max())


def unit_roundoff(dtype) -> float:
    """u, half the gap between 1 and the next float: 2**-24 in float32, 2**-53 in float64."""
    import numpy as np
    return float(np.finfo(dtype).eps) / 2


def rounding_error_ratio(result, exact, magnitude, terms: int) -> float:
    """How much of its rounding budget a float result used: max_i |result_i - exact_i| / bound_i.

    ``exact`` is the same computation done in float64 on the same (float32) inputs, and
    ``bound = gamma_n * magnitude`` with ``n = terms`` and ``gamma_n = n u / (1 - n u)``.

    Why this bound: a sum of n terms computed in floating point, in *any* order (pairwise,
    blocked BLAS kernels of any CPU, GPU reductions, with or without fused multiply-add),
    differs from the exact sum by at most gamma_n * sum_i |term_i|, and a dot product of
    length n by at most gamma_n * sum_i |a_i b_i| (Higham, *Accuracy and Stability of
    Numerical Algorithms*, 2nd ed., section 3.1). So the bound follows from u, the length of
    the sums and the size of the operands, not from the result alone (a result can be a
    small difference of large terms) and not from what one machine's BLAS happened to do.
    For a bilinear map (convolution, matrix product, pooling) ``magnitude`` is the map
    applied to the operands' absolute values, computed in float64; for a chain of steps
    (batch norm) it is the first-order sum of each step's bound, derived where it is used.

    A ratio <= 1 is within rounding; a wrong index, a missing term or a dropped correction
    is off by a whole term, i.e. by ~1 / (n u) of the budget (~10**5 for n ~ 100 in
    float32). Works on NumPy and CuPy arrays.
    """
    xp = get_xp(result, exact, magnitude)
    dtype = getattr(result, "dtype", None)
    u = unit_roundoff(dtype if dtype is not None and dtype.kind == "f" else "float64")
    if terms * u >= 1:
        raise ValueError(f"rounding_error_ratio: {terms} terms exhaust the precision (n u >= 1)")
    gamma = terms * u / (1 - terms * u)
    result, exact, magnitude = (xp.asarray(a, dtype=xp.float64) for a in (result, exact, magnitude))
    if result.shape != exact.shape:
        raise ValueError(f"rounding_error_ratio: shapes differ, {result.shape} vs {exact.shape}")
    if result.size == 0:
        return 0.0
    error = xp.abs(result - exact)
    # tiny: float32's smallest normal number, so that an exactly-zero magnitude with an
    # exactly-zero error counts as 0 and not as 0/0
    bound = xp.maximum(gamma * xp.broadcast_to(magnitude, result.shape), 1.2e-38)
    return float((error / bound).max())
