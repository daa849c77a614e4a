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
