"""A NumPy-backed stand-in for CuPy: run minisd's GPU path on a CPU, and count what it would cost.

CI has no GPU, yet minisd's CuPy path must run on every push. This module looks like
``cupy`` for everything minisd calls. Install it as minisd's CuPy with the ``standin``
fixture (tests/conftest.py), ``install()``, or ``python tests/support/run_with_standin.py ...``
for a whole program; then ``device="gpu"`` and ``to_device(x, "gpu")`` give arrays of
this module's :class:`ndarray`, which wraps a NumPy array and behaves as CuPy's does:

* **It refuses NumPy operands**, as CuPy does: ``standin + numpy_array`` and
  ``numpy_array + standin`` raise ``TypeError``; so do ``np.asarray(standin)``
  (``__array__``) and NumPy functions that CuPy has no twin for. Python and NumPy
  scalars are fine. Assigning a NumPy array into a slice raises, as in CuPy (an
  advanced-index assignment uploads it, as CuPy does). Indices may be NumPy arrays
  (uploaded).
* **It returns 0-d arrays where CuPy does**: reductions without an axis
  (``a.sum()``), indexing a single element (``a[3]``), ufuncs on 0-d arrays.
* **It counts** (see :func:`counts`, :func:`reset_counts`, :func:`counting`):

  - *launches*: every operation that would run a GPU kernel or a device-side copy
    or fill: each ufunc or arithmetic operator (in place or not), each reduction,
    ``copy``/``astype``/``fill``, creation with values (``zeros``, ``ones``,
    ``full``, ``arange``; ``empty`` is free), an assignment into a slice, a gather
    or scatter by index arrays (as CuPy does it: one fill and one kernel per index
    array to build a flat index, then the gather), a reshape that must copy,
    random draws. Matrix products follow CuPy's ``matmul``: one GEMM, plus one
    copy per operand that is not C-contiguous (batched) or neither C- nor
    F-contiguous (2-D), three pointer-array kernels when a 2-D operand is
    broadcast over the batch, one copy when ``out`` cannot be written directly.
    Views (slicing, ``reshape`` without a copy, ``transpose``, ``broadcast_to``)
    are free.
  - *syncs* (device -> host): ``float()``, ``int()``, ``bool()``, ``complex()``,
    ``item()``, ``tolist()``, ``get()``, ``asnumpy()``, ``repr``/``str``/``format``,
    a boolean-mask index (CuPy must read the count), ``Stream.synchronize()``,
    ``Device.synchronize()``, ``Event.synchronize()``.
  - *uploads* (host -> device): ``asarray``/``array`` of a NumPy array, list or
    scalar, NumPy index arrays, ``ndarray.set``.

  Each count also records where it came from (``file:line (function)`` of the
  first caller outside this module), so a test can say *which* line syncs.

* ``cuda.Event`` with ``record()``, ``synchronize()``, ``done`` and
  ``cuda.get_elapsed_time(start, end)`` (ms, host clock: the stand-in runs each
  kernel when it is launched). As on a GPU, the elapsed time can be read only once
  the end event has completed, i.e. after some synchronisation; before that it
  raises, as CUDA's ``cudaErrorNotReady`` does.
* ``random.default_rng(seed)``: a CuPy-like ``Generator`` with ``random``,
  ``standard_normal``, ``integers`` and ``uniform`` that returns device arrays. Like
  CuPy's it has **no** ``permutation``, ``shuffle`` or ``choice``, and its
  ``bit_generator.state`` is a method returning a device pointer, not a state that
  could be saved and restored.
* ``get_default_memory_pool()``: ``total_bytes()``
  (the pool's high-water mark since the last ``free_all_blocks()``, as a caching
  pool that never gives memory back would hold), ``free_all_blocks()``.
* ``fuse``: runs the Python function and counts one launch for the whole of it; inside,
  its array arguments can do only what ``cupy.fuse`` compiles (see :func:`fuse`).

What it does **not** mimic: asynchrony (every kernel runs when launched, so race
bugs stay hidden; only the *count* of syncs is checked), CuPy's exact dtype
promotion corner cases (NumPy's rules apply), kernel fusion or compilation
(no ``ElementwiseKernel``, ``RawKernel`` or ``ReductionKernel``: minisd uses none), multiple
devices and streams, memory limits, pinned memory, and most of CuPy's API (only what
minisd, its lessons and benchmarks use, plus a few neighbours of those). Launch counts are
CuPy's as read from its source (13/14), not measured on a GPU: CUB, cuBLAS internals
and memory-pool bookkeeping may add or merge a few.
"""
from __future__ import annotations

import builtins
import contextlib
import functools
import os
import sys
import time
import types
import weakref
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

__version__ = "14.0.0+numpy-standin"

_HERE = os.path.abspath(__file__)
_ROOT = os.path.dirname(os.path.dirname(_HERE))  # the repository, for short file names in sites

# numpy's dtypes and constants that minisd's code may reach as xp.<name>, as cupy re-exports them
from numpy import bool_, dtype, float32, float64, inf, int32, int64, nan, newaxis, uint8  # noqa: E402,F401

# ---------------------------------------------------------------------------
# counting
# ---------------------------------------------------------------------------


@dataclass(repr=False)
class Counts:
    """Launches, syncs and uploads, each with a Counter of the code sites that caused them."""
    launches: int = 0
    syncs: int = 0
    uploads: int = 0
    upload_bytes: int = 0
    launch_sites: Counter = field(default_factory=Counter)
    sync_sites: Counter = field(default_factory=Counter)
    upload_sites: Counter = field(default_factory=Counter)

    def __repr__(self):
        return f"Counts(launches={self.launches}, syncs={self.syncs}, uploads={self.uploads})"

    def copy(self) -> "Counts":
        return Counts(self.launches, self.syncs, self.uploads, self.upload_bytes,
                      Counter(self.launch_sites), Counter(self.sync_sites), Counter(self.upload_sites))

    def __sub__(self, other: "Counts") -> "Counts":
        return Counts(self.launches - other.launches, self.syncs - other.syncs, self.uploads - other.uploads,
                      self.upload_bytes - other.upload_bytes, self.launch_sites - other.launch_sites,
                      self.sync_sites - other.sync_sites, self.upload_sites - other.upload_sites)

    def summary(self, top: int = 5) -> str:
        """One line of totals, then the sites of every sync and the ``top`` launch sites."""
        lines = [f"launches {self.launches}, syncs {self.syncs}, uploads {self.uploads} "
                 f"({self.upload_bytes / 2**20:.2f} MB)"]
        lines += [f"  sync   x{n:<5} {site}" for site, n in self.sync_sites.most_common()]
        lines += [f"  launch x{n:<5} {site}" for site, n in self.launch_sites.most_common(top)]
        return "\n".join(lines)


_counts = Counts()
_paused = 0        # > 0 inside a fused function: its inner operations are one launch
_sync_epoch = 0    # bumped by every sync: an event recorded before it has completed


def counts() -> Counts:
    """A snapshot of the counts since the last :func:`reset_counts`."""
    return _counts.copy()


def reset_counts() -> None:
    global _counts
    _counts = Counts()


@contextlib.contextmanager
def counting():
    """``with counting() as c: ...``: ``c`` holds what the block cost once it ends."""
    before = counts()
    result = Counts()
    try:
        yield result
    finally:
        result.__dict__.update((counts() - before).__dict__)


def _site() -> str:
    """``file:line (function)`` of the first frame outside this module."""
    f = sys._getframe(2)
    while f is not None and f.f_code.co_filename == _HERE:
        f = f.f_back
    if f is None:
        return "?"
    code = f.f_code
    name = _short_names.get(code.co_filename)
    if name is None:
        name = code.co_filename
        if name.startswith(_ROOT + os.sep):
            name = os.path.relpath(name, _ROOT)
        _short_names[code.co_filename] = name
    return f"{name}:{f.f_lineno} ({code.co_name})"


_short_names = {}  # file name -> the name shown in sites


def _launch(n: int = 1) -> None:
    if n and not _paused:
        _counts.launches += n
        _counts.launch_sites[_site()] += n


def _sync() -> None:
    global _sync_epoch
    _sync_epoch += 1
    _counts.syncs += 1
    _counts.sync_sites[_site()] += 1


def _upload(nbytes: int) -> None:
    _counts.uploads += 1
    _counts.upload_bytes += int(nbytes)
    _counts.upload_sites[_site()] += 1


# ---------------------------------------------------------------------------
# the memory pool
# ---------------------------------------------------------------------------


class MemoryPool:
    """Bytes of live device arrays, and the high-water mark a caching pool would hold."""

    def __init__(self):
        self._used = 0
        self._total = 0

    def _alloc(self, arr: "ndarray") -> None:
        n = int(arr._a.nbytes)
        if n:
            self._used += n
            self._total = builtins.max(self._total, self._used)
            weakref.finalize(arr, self._free, n)

    def _free(self, n: int) -> None:
        self._used -= n

    def total_bytes(self) -> int:
        return self._total

    def free_all_blocks(self, stream=None) -> None:
        self._total = self._used


_pool = MemoryPool()


def get_default_memory_pool() -> MemoryPool:
    return _pool


# ---------------------------------------------------------------------------
# the array
# ---------------------------------------------------------------------------

_SCALARS = (int, float, bool, complex, np.generic)


def _wrap(a, sources=()):
    """A stand-in array around the NumPy result ``a``: a view of a source when it shares
    its memory, else a new device allocation. NumPy scalars become 0-d arrays."""
    if isinstance(a, np.generic):
        a = np.asarray(a)
    out = object.__new__(ndarray)
    out._a = a
    out._base = None
    for s in sources:
        if isinstance(s, ndarray) and np.may_share_memory(a, s._a):
            out._base = s._base if s._base is not None else s
            return out
    _pool._alloc(out)
    return out


def _operand(x):
    """The NumPy value behind a kernel argument: a stand-in array or a scalar; NumPy arrays are refused."""
    if isinstance(x, ndarray):
        return x._a
    if isinstance(x, _SCALARS):
        return x
    raise TypeError(f"Unsupported type {type(x)}")  # CuPy's words, for numpy arrays and lists alike


def _out_operand(out):
    if out is None:
        return None
    if isinstance(out, tuple):
        if len(out) != 1:
            raise ValueError("The 'out' parameter must have exactly one array value")
        out = out[0]
        if out is None:
            return None
    if not isinstance(out, ndarray):
        raise TypeError("Output arguments type must be cupy.ndarray")
    return out


def _ufunc(uf, inputs, kwargs):
    """Run NumPy ufunc ``uf`` as one CuPy elementwise kernel."""
    if builtins.any(isinstance(x, _FusedVar) for x in (*inputs, kwargs.get("out"))):
        return _fused_ufunc(uf, inputs, kwargs)
    out = _out_operand(kwargs.pop("out", None))
    args = [_operand(x) for x in inputs]
    n = 1
    if out is not None:  # CuPy copies an input that overlaps the output without being it
        n += builtins.sum(1 for x in inputs if isinstance(x, ndarray) and x is not out and x._a is not out._a
                 and np.may_share_memory(x._a, out._a))
        uf(*args, out=out._a, **kwargs)
        _launch(n)
        return out
    res = uf(*args, **kwargs)
    _launch(n)
    return _wrap(res)


def _index(key):
    """(NumPy key, number of index arrays, whether one is a boolean mask) for a CuPy-style index."""
    if not isinstance(key, tuple):
        key = (key,)
    out, arrays, mask = [], 0, False
    for k in key:
        if isinstance(k, ndarray):
            k = k._a
        elif isinstance(k, (np.ndarray, list)):
            k = np.asarray(k)
            _upload(k.nbytes)
        if isinstance(k, np.ndarray):
            arrays += 1
            mask = mask or k.dtype == np.bool_
        out.append(k)
    return tuple(out), arrays, mask


def _index_launches(arrays: int, mask: bool) -> int:
    """Kernels CuPy runs to gather or scatter with ``arrays`` index arrays (besides the gather itself)."""
    if mask:
        return 1           # the scan that counts the True entries (and a sync to read it)
    if arrays >= 2:
        return 1 + arrays  # fill a flat index with 0, then one kernel per index array
    return 0


class ndarray:
    """A device array: a NumPy array that only device operations may touch (see the module docstring)."""

    __slots__ = ("_a", "_base", "__weakref__")
    __hash__ = None

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        """``cupy.ndarray(shape, dtype)``: an uninitialised array (no kernel)."""
        self._a = np.empty(shape, dtype=dtype, order=order)
        self._base = None
        _pool._alloc(self)

    # -- what CuPy refuses ---------------------------------------------------

    def __array__(self, dtype=None, copy=None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == "__call__":
            return _ufunc(ufunc, inputs, kwargs)
        if method == "reduce" and len(inputs) == 1 and isinstance(inputs[0], ndarray):
            out = _out_operand(kwargs.pop("out", None))
            res = ufunc.reduce(inputs[0]._a, out=None if out is None else out._a, **kwargs)
            _launch()
            return out if out is not None else _wrap(res)
        return NotImplemented

    def __array_function__(self, func, types, args, kwargs):
        ours = globals().get(func.__name__)  # CuPy dispatches np.f(cupy_array) to cupy.f when it has one
        if ours is None or not callable(ours) or not (func.__module__ or "").startswith("numpy"):
            return NotImplemented
        return ours(*args, **kwargs)

    # -- attributes ----------------------------------------------------------

    @property
    def shape(self):
        return self._a.shape

    @shape.setter
    def shape(self, value):
        self._a.shape = value

    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    base = property(lambda self: self._base)
    data = property(lambda self: types.SimpleNamespace(ptr=self._a.__array_interface__["data"][0]))
    T = property(lambda self: _wrap(self._a.T, (self,)))

    def __len__(self):
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self):
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._a)))

    # -- device -> host: every one of these is a sync ------------------------

    def get(self, stream=None, order="C", out=None, blocking=True):
        _sync()
        if out is not None:
            out[...] = self._a
            return out
        return self._a.copy(order=order)

    def item(self):
        _sync()
        return self._a.item()

    def tolist(self):
        _sync()
        return self._a.tolist()

    def __float__(self):
        _sync()
        return float(self._a)

    def __int__(self):
        _sync()
        return int(self._a)

    def __complex__(self):
        _sync()
        return complex(self._a)

    def __bool__(self):
        _sync()
        return bool(self._a)

    def __repr__(self):
        _sync()
        return repr(self._a)

    def __str__(self):
        _sync()
        return str(self._a)

    def __format__(self, spec):
        _sync()
        return format(self._a[()] if self._a.ndim == 0 else self._a, spec)

    def __reduce__(self):
        return array, (self.get(),)

    def set(self, arr, stream=None):
        """Copy host array ``arr`` into this array (an upload)."""
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, got {type(arr)}")
        _upload(arr.nbytes)
        self._a[...] = arr

    # -- indexing ------------------------------------------------------------

    def __getitem__(self, key):
        np_key, arrays, mask = _index(key)
        res = self._a[np_key]
        if isinstance(res, np.generic) and not arrays:  # a single element: a 0-d view, as in CuPy
            res = self._a[np_key + (Ellipsis,)]
        out = _wrap(res, (self,))
        if out._base is None:  # advanced indexing gathered a copy
            _launch(1 + _index_launches(arrays, mask))
            if mask:
                _sync()
        return out

    def __setitem__(self, key, value):
        np_key, arrays, mask = _index(key)
        if isinstance(value, ndarray):
            v = value._a
        elif isinstance(value, np.ndarray) and value.ndim > 0 or isinstance(value, (list, tuple)):
            if not arrays:  # CuPy refuses to fill a slice from host memory (cupy gh-2079)
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
            v = np.asarray(value)
            _upload(v.nbytes)
        else:
            v = _operand(value) if not isinstance(value, np.ndarray) else value[()]
        if not (isinstance(value, ndarray) and value._a is self._a and not arrays):
            self._a[np_key] = v
            _launch(1 + _index_launches(arrays, mask))
            if mask:
                _sync()

    # -- copies and views ----------------------------------------------------

    def copy(self, order="C"):
        _launch()
        return _wrap(self._a.copy(order=order))

    def __copy__(self):
        return self.copy()

    def __deepcopy__(self, memo):
        return self.copy()

    def astype(self, dtype, order="K", casting=None, subok=None, copy=True):
        if not copy and np.dtype(dtype) == self._a.dtype:
            return self
        _launch()
        return _wrap(self._a.astype(dtype, order=order))

    def fill(self, value):
        if isinstance(value, np.ndarray) and value.ndim:
            raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._a.fill(_operand(value) if not isinstance(value, np.ndarray) else value[()])
        _launch()

    def view(self, dtype=None):
        return _wrap(self._a.view() if dtype is None else self._a.view(dtype), (self,))

    def _maybe_copy(self, res):
        out = _wrap(res, (self,))
        if out._base is None and res.size:
            _launch()
        return out

    def reshape(self, *shape, order="C"):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self._maybe_copy(self._a.reshape(shape, order=order))

    def ravel(self, order="C"):
        return self._maybe_copy(self._a.ravel(order=order))

    def flatten(self, order="C"):
        _launch()
        return _wrap(self._a.flatten(order=order))

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return _wrap(self._a.transpose(*axes), (self,))

    def squeeze(self, axis=None):
        return _wrap(self._a.squeeze(axis=axis), (self,))

    def take(self, indices, axis=None, out=None):
        return take(self, indices, axis, out)

    def dot(self, b, out=None):
        return dot(self, b, out)

    def clip(self, min=None, max=None, out=None):
        return clip(self, min, max, out=out)

    def nonzero(self):
        _sync()  # the size of the result must be read back
        _launch(2)
        return tuple(_wrap(i) for i in self._a.nonzero())

    # -- reductions: one kernel, a 0-d array without an axis -----------------

    def _reduce(self, name, kernels, kwargs):
        out = _out_operand(kwargs.pop("out", None))
        res = getattr(self._a, name)(out=None if out is None else out._a, **kwargs)
        _launch(kernels)
        return out if out is not None else _wrap(res)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return self._reduce("sum", 1, dict(axis=axis, dtype=dtype, out=out, keepdims=keepdims))

    def prod(self, axis=None, dtype=None, out=None, keepdims=False):
        return self._reduce("prod", 1, dict(axis=axis, dtype=dtype, out=out, keepdims=keepdims))

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return self._reduce("mean", 1, dict(axis=axis, dtype=dtype, out=out, keepdims=keepdims))

    def var(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return self._reduce("var", 2, dict(axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims))

    def std(self, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
        return self._reduce("std", 3, dict(axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims))

    def max(self, axis=None, out=None, keepdims=False):
        return self._reduce("max", 1, dict(axis=axis, out=out, keepdims=keepdims))

    def min(self, axis=None, out=None, keepdims=False):
        return self._reduce("min", 1, dict(axis=axis, out=out, keepdims=keepdims))

    def argmax(self, axis=None, out=None, keepdims=False):
        return self._reduce("argmax", 1, dict(axis=axis, out=out, keepdims=keepdims))

    def argmin(self, axis=None, out=None, keepdims=False):
        return self._reduce("argmin", 1, dict(axis=axis, out=out, keepdims=keepdims))

    def all(self, axis=None, out=None, keepdims=False):
        return self._reduce("all", 1, dict(axis=axis, out=out, keepdims=keepdims))

    def any(self, axis=None, out=None, keepdims=False):
        return self._reduce("any", 1, dict(axis=axis, out=out, keepdims=keepdims))

    # -- operators: one elementwise kernel each --------------------------------

    def __matmul__(self, other):
        return matmul(self, other)

    def __rmatmul__(self, other):
        return matmul(other, self)


def _binary(uf):
    def op(self, other):
        return _ufunc(uf, (self, other), {})

    def rop(self, other):
        return _ufunc(uf, (other, self), {})

    def iop(self, other):
        return _ufunc(uf, (self, other), {"out": self})

    return op, rop, iop


for _name, _uf in dict(add=np.add, sub=np.subtract, mul=np.multiply, truediv=np.true_divide,
                       floordiv=np.floor_divide, mod=np.remainder, pow=np.power, and_=np.bitwise_and,
                       or_=np.bitwise_or, xor=np.bitwise_xor, lshift=np.left_shift,
                       rshift=np.right_shift).items():
    _name = _name.rstrip("_")
    _op, _rop, _iop = _binary(_uf)
    setattr(ndarray, f"__{_name}__", _op)
    setattr(ndarray, f"__r{_name}__", _rop)
    setattr(ndarray, f"__i{_name}__", _iop)

for _name, _uf in dict(lt=np.less, le=np.less_equal, eq=np.equal, ne=np.not_equal, gt=np.greater,
                       ge=np.greater_equal).items():
    setattr(ndarray, f"__{_name}__", _binary(_uf)[0])

for _name, _uf in dict(neg=np.negative, pos=np.positive, abs=np.absolute, invert=np.invert).items():
    setattr(ndarray, f"__{_name}__", (lambda uf: lambda self: _ufunc(uf, (self,), {}))(_uf))


# ---------------------------------------------------------------------------
# module functions: creation, host <-> device
# ---------------------------------------------------------------------------


def _new(a, kernels=1):
    _launch(kernels)
    return _wrap(a)


def empty(shape, dtype=float, order="C"):
    return _new(np.empty(shape, dtype=dtype, order=order), 0)


def zeros(shape, dtype=float, order="C"):
    return _new(np.zeros(shape, dtype=dtype, order=order))


def ones(shape, dtype=float, order="C"):
    return _new(np.ones(shape, dtype=dtype, order=order))


def full(shape, fill_value, dtype=None, order="C"):
    return _new(np.full(shape, _operand(fill_value), dtype=dtype, order=order))


def _like(a):
    return a._a if isinstance(a, ndarray) else np.asarray(a)


def empty_like(a, dtype=None, order="K", subok=None, shape=None):
    return _new(np.empty_like(_like(a), dtype=dtype, order=order, shape=shape), 0)


def zeros_like(a, dtype=None, order="K", subok=None, shape=None):
    return _new(np.zeros_like(_like(a), dtype=dtype, order=order, shape=shape))


def ones_like(a, dtype=None, order="K", subok=None, shape=None):
    return _new(np.ones_like(_like(a), dtype=dtype, order=order, shape=shape))


def arange(start, stop=None, step=1, dtype=None):
    return _new(np.arange(start, stop, step, dtype=dtype) if stop is not None else np.arange(start, dtype=dtype))


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0):
    if isinstance(obj, ndarray):
        if not copy and (dtype is None or np.dtype(dtype) == obj.dtype) and obj.ndim >= ndmin:
            return obj
        _launch()
        return _wrap(np.array(obj._a, dtype=dtype, order=order, ndmin=ndmin))
    host = np.array(obj, dtype=dtype, order=order, ndmin=ndmin)  # a private copy: later host writes do not leak
    _upload(host.nbytes)
    return _wrap(host)


def asarray(a, dtype=None, order=None, *, blocking=False):
    if isinstance(a, ndarray):
        return a.astype(dtype, copy=False) if dtype is not None else a
    return array(a, dtype=dtype, order=order or "K")


def ascontiguousarray(a, dtype=None):
    if isinstance(a, ndarray):
        if a.flags.c_contiguous and (dtype is None or np.dtype(dtype) == a.dtype):
            return a
        _launch()
        return _wrap(np.ascontiguousarray(a._a, dtype=dtype))
    return array(np.ascontiguousarray(a, dtype=dtype))


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    if isinstance(a, ndarray):
        return a.get(order=order, out=out)
    return np.asarray(a, order=order)


def copy(a, order="K"):
    return a.copy() if isinstance(a, ndarray) else array(a)


# ---------------------------------------------------------------------------
# module functions: elementwise, reductions, shapes, products
# ---------------------------------------------------------------------------


def _make_ufunc(uf):
    def f(*args, out=None, **kwargs):
        return _ufunc(uf, args, dict(kwargs, out=out))
    f.__name__ = f.__qualname__ = uf.__name__
    f.__doc__ = f"numpy.{uf.__name__} as one kernel."
    return f


for _uf in (np.abs, np.absolute, np.negative, np.positive, np.exp, np.expm1, np.log, np.log1p, np.log2, np.sqrt,
            np.square, np.tanh, np.sign, np.floor, np.ceil, np.rint, np.maximum, np.minimum, np.fmax, np.fmin,
            np.add, np.subtract, np.multiply, np.divide, np.true_divide, np.floor_divide, np.power,
            np.greater, np.greater_equal, np.less, np.less_equal, np.equal, np.not_equal, np.logical_and,
            np.logical_or, np.logical_not, np.isfinite, np.isnan, np.isinf, np.invert):
    globals()[_uf.__name__] = _make_ufunc(_uf)
abs = globals()["absolute"]  # noqa: A001  (np.abs is named "absolute")


def where(condition, x, y):
    res = np.where(_operand(condition), _operand(x), _operand(y))
    _launch()
    return _wrap(res)


def clip(a, a_min=None, a_max=None, out=None):
    out = _out_operand(out)
    res = np.clip(_operand(a), _operand(a_min) if a_min is not None else None,
                  _operand(a_max) if a_max is not None else None, out=None if out is None else out._a)
    _launch()
    return out if out is not None else _wrap(res)


def _array_arg(a):
    if not isinstance(a, ndarray):
        raise TypeError(f"Unsupported type {type(a)}")
    return a


def sum(a, axis=None, dtype=None, out=None, keepdims=False):  # noqa: A001
    if isinstance(a, _FusedVar):
        return _fused_reduce("sum", a, axis=axis, dtype=dtype, out=out, keepdims=keepdims)
    return _array_arg(a).sum(axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def mean(a, axis=None, dtype=None, out=None, keepdims=False):
    return _array_arg(a).mean(axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def var(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    return _array_arg(a).var(axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims)


def std(a, axis=None, dtype=None, out=None, ddof=0, keepdims=False):
    return _array_arg(a).std(axis=axis, dtype=dtype, out=out, ddof=ddof, keepdims=keepdims)


def prod(a, axis=None, dtype=None, out=None, keepdims=False):
    if isinstance(a, _FusedVar):
        return _fused_reduce("prod", a, axis=axis, dtype=dtype, out=out, keepdims=keepdims)
    return _array_arg(a).prod(axis=axis, dtype=dtype, out=out, keepdims=keepdims)


def amax(a, axis=None, out=None, keepdims=False):
    if isinstance(a, _FusedVar):
        return _fused_reduce("max", a, axis=axis, out=out, keepdims=keepdims)
    return _array_arg(a).max(axis=axis, out=out, keepdims=keepdims)


def amin(a, axis=None, out=None, keepdims=False):
    if isinstance(a, _FusedVar):
        return _fused_reduce("min", a, axis=axis, out=out, keepdims=keepdims)
    return _array_arg(a).min(axis=axis, out=out, keepdims=keepdims)


max = amax  # noqa: A001
min = amin  # noqa: A001


def argmax(a, axis=None, out=None, keepdims=False):
    return _array_arg(a).argmax(axis=axis, out=out, keepdims=keepdims)


def argmin(a, axis=None, out=None, keepdims=False):
    return _array_arg(a).argmin(axis=axis, out=out, keepdims=keepdims)


def all(a, axis=None, out=None, keepdims=False):  # noqa: A001
    return _array_arg(a).all(axis=axis, out=out, keepdims=keepdims)


def any(a, axis=None, out=None, keepdims=False):  # noqa: A001
    return _array_arg(a).any(axis=axis, out=out, keepdims=keepdims)


def array_equal(a1, a2, equal_nan=False):
    """A 0-d bool array, as in CuPy (an elementwise comparison, then a reduction)."""
    if a1.shape != a2.shape:
        return _new(np.asarray(False))
    res = np.array_equal(_operand(a1), _operand(a2), equal_nan=equal_nan)
    _launch(2)
    return _wrap(np.asarray(res))


def isclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    res = np.isclose(_operand(a), _operand(b), rtol=rtol, atol=atol, equal_nan=equal_nan)
    _launch()
    return _wrap(res)


def allclose(a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """A 0-d bool array, as in CuPy."""
    res = np.allclose(_operand(a), _operand(b), rtol=rtol, atol=atol, equal_nan=equal_nan)
    _launch(2)
    return _wrap(np.asarray(res))


def shape(a):
    return a.shape if isinstance(a, ndarray) else np.shape(a)


def size(a, axis=None):
    return (a.size if axis is None else a.shape[axis]) if isinstance(a, ndarray) else np.size(a, axis)


def reshape(a, newshape, order="C"):
    return _array_arg(a).reshape(newshape, order=order)


def transpose(a, axes=None):
    return _array_arg(a).transpose(axes) if axes is not None else a.transpose()


def squeeze(a, axis=None):
    return _array_arg(a).squeeze(axis)


def ravel(a, order="C"):
    return _array_arg(a).ravel(order)


def broadcast_to(a, shape):
    return _wrap(np.broadcast_to(_array_arg(a)._a, shape), (a,))


def flip(a, axis=None):
    return _wrap(np.flip(_array_arg(a)._a, axis), (a,))


def concatenate(arrays, axis=0, out=None, dtype=None):
    res = np.concatenate([_array_arg(a)._a for a in arrays], axis=axis, dtype=dtype)
    _launch()
    return _wrap(res)


def stack(arrays, axis=0, out=None, dtype=None):
    res = np.stack([_array_arg(a)._a for a in arrays], axis=axis, dtype=dtype)
    _launch()
    return _wrap(res)


def take(a, indices, axis=None, out=None):
    idx = indices._a if isinstance(indices, ndarray) else indices
    if isinstance(idx, (np.ndarray, list)):
        if not isinstance(indices, ndarray):
            _upload(np.asarray(idx).nbytes)
    res = np.take(_array_arg(a)._a, idx, axis=axis)
    _launch()
    return _wrap(res)


def _matmul_launches(a, b, out, ret_dtype):
    """Kernels of CuPy's matmul (cupy/_core/_routines_linalg.pyx): see the module docstring."""
    def plain(x):  # a matrix cuBLAS reads as it is (2-D: C or F order)
        return x.flags.c_contiguous or x.flags.f_contiguous

    nd = builtins.max(a.ndim, b.ndim)
    if nd <= 2:
        n = 1 + builtins.sum(1 for x in (a, b) if x.ndim == 2 and not plain(x))
        if out is not None and not (out.flags.c_contiguous and out.dtype == ret_dtype):
            n += 1
        return n
    n = 1 + builtins.sum(1 for x in (a, b) if not x.flags.c_contiguous)   # ascontiguousarray, then the GEMM
    batch = lambda x: (1,) * (nd - builtins.max(x.ndim, 2)) + x.shape[:-2]  # noqa: E731
    ba, bb = batch(a), batch(b)
    if builtins.any((sa == 1) != (sb == 1) for sa, sb in zip(ba, bb)):     # a 2-D operand broadcast over the batch
        n += 3 * (1 + (nd - 3))                                             # one pointer array per operand and batch axis
    if out is not None and not (out.flags.c_contiguous and out.dtype == ret_dtype
                                and not np.may_share_memory(out._a, a._a) and not np.may_share_memory(out._a, b._a)):
        n += 1
    return n


def matmul(a, b, out=None, **kwargs):
    a, b, out = _array_arg(a), _array_arg(b), _out_operand(out)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError("Scalar operands are not allowed, use '*' instead")
    n = _matmul_launches(a, b, out, np.promote_types(a.dtype, b.dtype))
    res = np.matmul(a._a, b._a, out=None if out is None else out._a)
    _launch(n)
    return out if out is not None else _wrap(res)


def dot(a, b, out=None):
    a, b, out = _array_arg(a), _array_arg(b), _out_operand(out)
    n = 1 + builtins.sum(1 for x in (a, b) if x.ndim >= 2 and not (x.flags.c_contiguous or x.flags.f_contiguous))
    res = np.dot(a._a, b._a, out=None if out is None else out._a)
    _launch(n)
    return out if out is not None else _wrap(res)


def tensordot(a, b, axes=2):
    """One GEMM, plus one copy per operand that is neither C- nor F-contiguous (an approximation)."""
    a, b = _array_arg(a), _array_arg(b)
    n = 1 + builtins.sum(1 for x in (a, b) if not (x.flags.c_contiguous or x.flags.f_contiguous))
    res = np.tensordot(a._a, b._a, axes=axes)
    _launch(n)
    return _wrap(res)


# ---------------------------------------------------------------------------
# kernels: fuse is emulated, CUDA source cannot be
# ---------------------------------------------------------------------------


def fuse(*args, **kwargs):
    """``@cupy.fuse()``: the function runs as written, counted as ONE launch.

    Inside, array arguments are not arrays but fusion variables (:class:`_FusedVar`), as
    in ``cupy.fuse``'s trace: they take part only in what CuPy's kernel fusion compiles -
    operators (in place too, which writes the argument), ``x[...] = y``, ``astype``,
    ``copy``, this module's elementwise functions, and ONE reduction (``sum``, ``prod``,
    ``max``, ``min``) with ``axis`` only, after which only the reduced values and scalars
    may be used. Anything else (indexing, ``reshape``, ``shape``, matrix products, NumPy
    functions, a device array that is not an argument, ``keepdims``, a second reduction)
    raises here, where on a GPU it would fail or silently do something else.
    """
    def decorate(f):
        @functools.wraps(f)
        def fused(*a, **k):
            global _paused
            _paused += 1
            state = _FusionState()
            try:
                out = f(*[_FusedVar(x, state) if isinstance(x, ndarray) else x for x in a], **k)
                out = _unfuse(out, a)
            finally:
                _paused -= 1
            _launch()
            return out
        return fused

    if len(args) == 1 and callable(args[0]) and not kwargs:
        return decorate(args[0])
    return decorate


class _FusionState:
    """One trace of a fused function: whether its reduction has happened yet."""
    reduced = False


class _FusedVar:
    """An array inside a fused function (see :func:`fuse`): what cupy.fuse lets it do, nothing more."""

    __slots__ = ("_v", "_state", "_reduced")
    __array_ufunc__ = None  # NumPy functions refuse it (they would on a GPU too)

    def __init__(self, value, state, reduced=False):
        self._v, self._state, self._reduced = value, state, reduced

    dtype = property(lambda self: self._v.dtype)
    ndim = property(lambda self: self._v.ndim)

    def __array__(self, dtype=None, copy=None):
        raise TypeError("a fused function's argument is not an array (cupy.fuse traces it)")

    def __bool__(self):
        raise TypeError("Can't cast to bool (a value inside cupy.fuse)")

    def __setitem__(self, key, value):
        if key is not Ellipsis and key != slice(None):
            raise ValueError("The fusion supports `[...]` or `[:]`.")
        _fused_ufunc(np.positive, (value,), {"out": self})

    def copy(self):
        return _fused_ufunc(np.positive, (self,), {})

    def astype(self, dtype):
        return _FusedVar(self._v.astype(dtype), self._state, self._reduced)

    def __matmul__(self, other):
        raise TypeError("cupy.fuse compiles elementwise operations and one reduction: no matmul")

    __rmatmul__ = __matmul__


def _fused_operand(x, state):
    if isinstance(x, _FusedVar):
        if x._reduced != state.reduced:
            raise ValueError("Shape mismatch: a fused function used an input array after its reduction")
        return x._v
    if isinstance(x, ndarray):
        raise TypeError(f"Unsupported type {type(x)}: a device array inside a fused function must be an argument")
    return _operand(x)


def _fused_ufunc(uf, inputs, kwargs):
    out = kwargs.pop("out", None)
    state = next(x for x in (*inputs, out) if isinstance(x, _FusedVar))._state
    args = [_operand(_fused_operand(x, state)) for x in inputs]
    if out is not None:
        uf(*args, out=_fused_operand(out, state)._a, **kwargs)
        return out
    return _FusedVar(_wrap(uf(*args, **kwargs)), state, state.reduced)


def _fused_reduce(name, a, axis=None, dtype=None, out=None, keepdims=False):
    state = a._state
    if state.reduced:
        raise NotImplementedError("Multiple reduction is not implemented yet (cupy.fuse)")
    if keepdims or dtype is not None or out is not None:
        raise TypeError("cupy.fuse passes only `axis` to a reduction (keepdims, dtype and out are dropped)")
    value = getattr(_fused_operand(a, state), name)(axis=axis)
    state.reduced = True
    return _FusedVar(value, state, True)


def _unfuse(out, args):
    """A fused function's results as arrays (new ones: a kernel writes its outputs)."""
    if out is None:
        return None
    if isinstance(out, tuple):
        return tuple(_unfuse(o, args) for o in out)
    if not isinstance(out, _FusedVar):
        raise TypeError(f"Fusion function can't return {type(out)}")
    return out._v.copy() if builtins.any(out._v is x for x in args) else out._v


for _name, _uf in dict(add=np.add, sub=np.subtract, mul=np.multiply, truediv=np.true_divide,
                       floordiv=np.floor_divide, mod=np.remainder, pow=np.power).items():
    setattr(_FusedVar, f"__{_name}__", (lambda uf: lambda self, o: _fused_ufunc(uf, (self, o), {}))(_uf))
    setattr(_FusedVar, f"__r{_name}__", (lambda uf: lambda self, o: _fused_ufunc(uf, (o, self), {}))(_uf))
    setattr(_FusedVar, f"__i{_name}__",
            (lambda uf: lambda self, o: _fused_ufunc(uf, (self, o), {"out": self}))(_uf))
for _name, _uf in dict(lt=np.less, le=np.less_equal, eq=np.equal, ne=np.not_equal, gt=np.greater,
                       ge=np.greater_equal).items():
    setattr(_FusedVar, f"__{_name}__", (lambda uf: lambda self, o: _fused_ufunc(uf, (self, o), {}))(_uf))
setattr(_FusedVar, "__neg__", lambda self: _fused_ufunc(np.negative, (self,), {}))
setattr(_FusedVar, "__abs__", lambda self: _fused_ufunc(np.absolute, (self,), {}))


# ---------------------------------------------------------------------------
# cupy.random
# ---------------------------------------------------------------------------


class _BitGenerator:
    """CuPy's bit generators keep their state on the device: ``state()`` is a pointer, nothing to save."""

    def __init__(self, seed=None):
        self._np = np.random.default_rng(seed)

    def state(self):
        return id(self)


class Generator:
    """CuPy's ``Generator``: device arrays from ``random``, ``standard_normal``, ``integers``, ``uniform``.

    Like CuPy's it has no ``permutation``, ``shuffle`` or ``choice``.
    """

    def __init__(self, bit_generator):
        self.bit_generator = bit_generator

    def _draw(self, values):
        _launch()
        return _wrap(np.asarray(values))

    def random(self, size=None, dtype=np.float64, out=None):
        return self._draw(self.bit_generator._np.random(size, dtype=dtype))

    def standard_normal(self, size=None, dtype=np.float64, out=None):
        return self._draw(self.bit_generator._np.standard_normal(size, dtype=dtype))

    def uniform(self, low=0.0, high=1.0, size=None, dtype=np.float64):
        return self._draw(self.bit_generator._np.uniform(low, high, size).astype(dtype))

    def integers(self, low, high=None, size=None, dtype=np.int64, endpoint=False):
        return self._draw(self.bit_generator._np.integers(low, high, size, dtype=dtype, endpoint=endpoint))


random = types.SimpleNamespace(default_rng=lambda seed=None: Generator(_BitGenerator(seed)), Generator=Generator)


# ---------------------------------------------------------------------------
# cupy.cuda: one device, one stream, events
# ---------------------------------------------------------------------------


class Event:
    """``cupy.cuda.Event``: ``record()`` notes the (host) time; it is *done* after the next sync."""

    def __init__(self, block=False, disable_timing=False, interprocess=False):
        self._t = None
        self._epoch = None

    def record(self, stream=None):
        self._t, self._epoch = time.perf_counter(), _sync_epoch

    def synchronize(self):
        _sync()

    @property
    def done(self):
        return self._epoch is not None and _sync_epoch > self._epoch


def get_elapsed_time(start_event: Event, end_event: Event) -> float:
    """Milliseconds between two recorded events; the end event must have completed (as in CUDA)."""
    if start_event._t is None or end_event._t is None:
        raise RuntimeError("cudaErrorInvalidResourceHandle: an event was never recorded")
    if not end_event.done:
        raise RuntimeError("cudaErrorNotReady: the end event has not completed; synchronize it first")
    return 1e3 * (end_event._t - start_event._t)


class Stream:
    null = None

    def synchronize(self):
        _sync()

    def record(self, event=None):
        event = event or Event()
        event.record(self)
        return event

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


Stream.null = Stream()


class Device:
    def __init__(self, device=None):
        self.id = 0 if device is None else int(device)

    def synchronize(self):
        _sync()

    def use(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


class _Runtime:
    @staticmethod
    def getDeviceCount():
        return 1

    @staticmethod
    def getDeviceProperties(device):
        return {"name": b"CuPy stand-in (NumPy on the CPU)", "totalGlobalMem": 80 << 30,
                "multiProcessorCount": 0, "major": 0, "minor": 0}

    @staticmethod
    def runtimeGetVersion():
        return 0

    @staticmethod
    def driverGetVersion():
        return 0


cuda = types.SimpleNamespace(runtime=_Runtime(), Event=Event, Stream=Stream, Device=Device,
                             get_current_stream=lambda device=None: Stream.null,
                             get_elapsed_time=get_elapsed_time, is_available=lambda: True)


# ---------------------------------------------------------------------------
# installing it
# ---------------------------------------------------------------------------


def install(monkeypatch=None):
    """Make this module minisd's CuPy (``minisd.backend._cupy``) and ``sys.modules["cupy"]``.

    With a pytest ``monkeypatch`` both are undone after the test. Returns this module.
    """
    from minisd import backend
    from minisd.fast import threads as parallel

    # The stand-in's kernels are NumPy calls on this thread: give BLAS one thread and keep
    # freed memory, as minisd's own processes do. A busy-waiting multi-threaded BLAS on a
    # shared machine made stand-in steps up to ten times slower.
    parallel.tune_process()
    me = sys.modules[__name__]
    if monkeypatch is not None:
        monkeypatch.setattr(backend, "_cupy", me)
        monkeypatch.setitem(sys.modules, "cupy", me)
    else:
        backend._cupy = me
        sys.modules["cupy"] = me
    return me

