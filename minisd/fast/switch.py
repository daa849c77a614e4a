"""Which code runs a layer: the readable math, or a speed appendix. One switch, here.

Every layer asks :func:`choose` in its ``forward`` and gets a module back:

* :mod:`minisd.functional`, the readable code, for everything inside
  ``with minisd.reference():`` (NumPy and CuPy alike);
* otherwise :mod:`minisd.fast.cpu` for NumPy arrays (the same functions made
  fast on the CPU: threads, cache-sized chunks) and :mod:`minisd.fast.gpu`
  for CuPy arrays (the same functions in fewer GPU kernels: gathers, fused
  kernels).

The three modules have the same function names, so the layer writes
``impl.conv2d_forward(...)`` and tags its cache with ``impl`` (cs231n's way:
the cache says what made it): its ``backward`` calls ``impl``'s twin of the
forward that really ran, no look-up, and :func:`check_backward` refuses, in
one line, a backward in the other mode or on the other device.

The flat-parameter buffers (:mod:`minisd.fast.flat`) are reached here too:
``Module.flatten_parameters`` and ``zero_grad``, and :class:`minisd.SGD`'s
one update per flat array (:func:`flatten_parameters`, :func:`flat_sgd`); and
the BLAS limit of a whole training step (:func:`tuned`, :mod:`minisd.step`).
"""
from __future__ import annotations

import contextlib
import contextvars

import numpy as np

from .. import functional
from ..backend import get_xp
from . import cpu as fast_cpu, dense, flat, gpu as fast_gpu, threads

ROUTES = {"readable": functional, "fast_cpu": fast_cpu, "fast_gpu": fast_gpu}

# A ContextVar, not a global: each thread (and asyncio task) has its own value.
_reference_mode = contextvars.ContextVar("minisd_reference_mode", default=False)


@contextlib.contextmanager
def reference():
    """Run every layer on the readable code of :mod:`minisd.functional` inside this block.

    On NumPy no thread is started, no scratch buffer is used and nothing of
    :mod:`minisd.fast.cpu` runs; on CuPy nothing of :mod:`minisd.fast.gpu`
    runs (one kernel per array operation: slower). Results equal the fast
    paths' to rounding (tests check a whole ResNet step in float64 to 1e-10).

    Threads: the switch holds for the thread that entered the block only (it
    is a :mod:`contextvars` variable); other threads, and threads started
    inside the block, keep the default (fast on NumPy). Nesting is allowed:
    leaving an inner block leaves the outer one in force. A layer must run its
    ``backward`` in the mode its ``forward`` ran in: otherwise the backward
    raises a ``RuntimeError`` saying so.

    Usage::

        with minisd.reference():
            loss = loss_fn.forward(net.forward(x), y)
            net.backward(loss_fn.backward())
    """
    token = _reference_mode.set(True)
    try:
        yield
    finally:
        _reference_mode.reset(token)


def in_reference_mode() -> bool:
    """True inside ``with minisd.reference():`` (in this thread)."""
    return _reference_mode.get()


def choose(x):
    """The module whose functions run a layer on input ``x``: functional, fast_cpu or fast_gpu.

    Inside :func:`reference` the readable functions; outside, fast_cpu for
    NumPy arrays and fast_gpu for CuPy arrays.
    """
    if _reference_mode.get():
        return functional
    return fast_cpu if get_xp(x) is np else fast_gpu


def name_of(impl) -> str:
    """``"readable"``, ``"fast_cpu"`` or ``"fast_gpu"`` for a module returned by :func:`choose`."""
    for name, module in ROUTES.items():
        if module is impl:
            return name
    raise RuntimeError(f"unknown route {impl!r}: expected one of {sorted(ROUTES)}")


def check_backward(ran, label: str, dout=None):
    """Raise one ``RuntimeError`` line unless a backward may run on ``ran``, its cache's tag.

    ``ran`` is the module the forward ran on. ``dout``: the array the backward
    is given; the backward must run where :func:`choose` would send it, i.e.
    in the same mode (inside/outside :func:`reference`) and on the same device.
    Without one (the loss: its cache is on its forward's device) only the mode
    is compared.
    """
    if dout is not None:
        now = choose(dout)
    elif _reference_mode.get():
        now = functional
    else:
        now = ran if ran in (fast_cpu, fast_gpu) else None  # None: "the fast path", device unknown
    if now is not ran:
        raise RuntimeError(f"{label}.backward(): the forward ran on the {name_of(ran)} path but the backward is "
                           f"called on the {'fast' if now is None else name_of(now)} path (inside/outside "
                           "minisd.reference(), or on another device); run forward and backward in the same "
                           "mode, on one device")


# ---------------------------------------------------------------------------
# flat parameters (minisd.fast.flat): Module.flatten_parameters, zero_grad and SGD
# ---------------------------------------------------------------------------


def flatten_parameters(module):
    """Lay ``module``'s parameters out in flat arrays (Torch7's ``getParameters``); see :mod:`minisd.fast.flat`.

    Returns the layout, whose ``zero_grad()`` is one fill per flat array.
    """
    return flat.flatten_parameters(module)


def flat_sgd(params, state, with_momentum):
    """SGD's fast path: ``(updater, rest)``, see :func:`minisd.fast.flat.sgd_groups`.

    ``updater`` (or None) updates the parameters among ``params`` that tile
    flat arrays, one call per run of them; ``rest`` are the ``(name, p, g)``
    triples the optimizer updates one by one.
    """
    return flat.sgd_groups(params, state, with_momentum)


def dense_storage():
    """How a DenseNet block keeps its feature maps in training: ``None``, the readable
    concatenation layer by layer (inside :func:`reference`), or :mod:`minisd.fast.dense`,
    one shared buffer with the first BN and ReLU recomputed in backward (memory linear in
    the layers instead of quadratic)."""
    return None if _reference_mode.get() else dense


# ---------------------------------------------------------------------------
# a whole step's CPU tuning (minisd.fast.threads): minisd.step's train_step and evaluate
# ---------------------------------------------------------------------------

tuned = threads.tuned  # a block (or decorator) inside which BLAS runs on one thread; restored after
