"""One array backend for NumPy (CPU) and CuPy (NVIDIA GPU).

This is the only module in minisd that names CuPy. Everything else asks
``xp = get_xp(x)`` for the array module that owns ``x`` and writes
``xp.zeros(...)``, ``xp.matmul(...)`` and so on, so one body of code serves
both devices (the Chainer / DeZero habit).

CuPy is optional: without it, ``device="auto"`` quietly means the CPU, and
``device="gpu"`` raises one error that says why and how to install it.
"""
from __future__ import annotations

import functools

import numpy as np

try:  # CuPy is optional: import it once, here, and nowhere else.
    import cupy as _cupy
except Exception:  # ImportError, or a CuPy that cannot find its CUDA libraries
    _cupy = None

GPU_INSTALL_HINT = (
    "install CuPy for your CUDA version, e.g. `pip install cupy-cuda12x` "
    "(or `pip install -e .[gpu]`), on a machine with an NVIDIA GPU"
)

DEVICES = ("cpu", "gpu", "auto")


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    if _cupy is None:
        return False
    try:
        return _cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device
        return False


def get_xp(*arrays):
    """The array module (``numpy`` or ``cupy``) that owns ``arrays``.

    Plain Python numbers and ``None`` are ignored; with no arrays at all the
    answer is NumPy. Arrays from both devices at once raise a ``ValueError``.
    """
    found = None
    for a in arrays:
        if a is None or isinstance(a, (int, float, bool, np.generic)):
            continue
        xp = _cupy if (_cupy is not None and isinstance(a, _cupy.ndarray)) else np
        if found is not None and xp is not found:
            raise ValueError("arrays live on different devices (a NumPy array mixed with a CuPy array); "
                             "move them with minisd.to_device(x, device) first")
        found = xp
    return np if found is None else found


def resolve_device(device: str) -> str:
    """Turn ``"cpu" | "gpu" | "auto"`` into ``"cpu"`` or ``"gpu"``.

    ``auto`` picks the GPU when CuPy and a CUDA device are present, else the CPU.
    ``gpu`` without them raises a ``RuntimeError`` that says how to install CuPy.
    """
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return "cpu"
    if gpu_available():
        return "gpu"
    if device == "auto":
        return "cpu"
    why = "CuPy is not installed" if _cupy is None else "CuPy found no CUDA device"
    raise RuntimeError(f"device 'gpu' requested but {why}: {GPU_INSTALL_HINT}")


def xp_for(device: str):
    """The array module for a device name (``cpu``, ``gpu`` or ``auto``)."""
    return _cupy if resolve_device(device) == "gpu" else np


def device_of(x) -> str:
    """``"gpu"`` for a CuPy array, ``"cpu"`` for anything else."""
    return "gpu" if get_xp(x) is not np else "cpu"


def to_device(x, device: str):
    """Copy array ``x`` to ``device`` (no copy when it is already there)."""
    if resolve_device(device) == "gpu":
        return _cupy.asarray(x)
    return to_numpy(x)


def to_numpy(x):
    """A NumPy array holding ``x`` (copied from the GPU when needed)."""
    if _cupy is not None and isinstance(x, _cupy.ndarray):
        return _cupy.asnumpy(x)
    return np.asarray(x)


def make_rng(seed=None):
    """A seeded NumPy ``Generator``: random decisions stay on the host, for either device.

    Gates, shuffles and augmentation choices are drawn on the CPU, also for a
    GPU run: CuPy's ``Generator`` has no ``permutation`` or ``choice`` and keeps
    its state on the device (a checkpoint could not save it); a gate read back
    from the device would make the host wait once per block and step; and the
    same seed gives the same run on either device. To draw device arrays, draw
    here and copy with :func:`to_device`, or use ``xp.random``.
    """
    return np.random.default_rng(seed)


def synchronize(xp) -> None:
    """Wait for queued GPU work (a no-op on the CPU): needed before timing."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


def fuse(body):
    """Decorator: ``body`` runs as ONE GPU kernel on CuPy arrays (``cupy.fuse``), as written on NumPy.

    ``body(xp, *args, **constants)`` is plain array code: ``xp`` is the array
    module, ``args`` are arrays, Python numbers or ``None``, and ``constants``
    are Python values the body may branch on (``if nesterov:``). On NumPy the
    body simply runs. On CuPy, ``cupy.fuse`` traces it once per combination
    of argument dtypes and ranks and compiles one kernel: the elementwise
    operations, plus at most one reduction (``xp.sum(..., axis=...)``, no
    ``keepdims``) at the end; arrays updated in place (``w -= ...``) are
    written by the kernel. No indexing, reshaping or matrix products inside.
    Each distinct set of ``constants`` compiles its own kernel, so they must
    be few (flags), never values that change from call to call (those go in
    ``args``). The body is the readable code; the kernel is the same code
    with one launch instead of one per operation.
    """
    kernels = {}

    @functools.wraps(body)
    def call(*args, **constants):
        xp = get_xp(*args)
        if xp is np:
            return body(np, *args, **constants)
        key = (xp, tuple(sorted(constants.items())))
        kernel = kernels.get(key)
        if kernel is None:
            kernel = xp.fuse(kernel_name=body.__name__)(functools.partial(body, xp, **constants))
            kernels[key] = kernel
        return kernel(*args)

    return call
