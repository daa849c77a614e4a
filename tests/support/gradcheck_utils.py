"""Helpers for the gradient tests: check a layer's backward against central differences."""
import numpy as np

import minisd
from minisd import backend

TOL = 1e-6  # worst relative error allowed between analytic and numerical gradients (float64)


def check_layer_gradients(layer, x, rng, tol=TOL):
    """Compare ``layer.backward`` with numerical gradients for the input and every parameter.

    The scalar checked is sum(forward(x) * dout) for a random ``dout``. On NumPy the check
    runs twice: on the fast CPU path and inside ``minisd.reference()`` (the readable code).
    Returns {name: relative error} of the last check; asserts every error is below ``tol``.
    """
    errors = _check_once(layer, x, rng, tol)
    if backend.get_xp(x) is np:
        with minisd.reference():
            errors = _check_once(layer, x, rng, tol)
    return errors


def _check_once(layer, x, rng, tol):
    xp = backend.get_xp(x)
    out = layer.forward(x)
    dout = xp.asarray(rng.standard_normal(out.shape))
    layer.zero_grad()
    dx = layer.backward(dout)
    errors = {"x": minisd.relative_error(minisd.numerical_gradient(lambda: layer.forward(x), x, dout), dx)}
    for key, p in layer.params.items():
        num = minisd.numerical_gradient(lambda: layer.forward(x), p, dout)
        errors[key] = minisd.relative_error(num, layer.grads[key])
    worst = max(errors.values())
    assert worst < tol, f"{type(layer).__name__}: gradient errors {errors}"
    return errors


def randn(rng, shape, xp=np, dtype=np.float64):
    return xp.asarray(rng.standard_normal(shape).astype(dtype))
