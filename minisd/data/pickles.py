"""Safe unpickling: the CIFAR batches are pickles, and loading a pickle can run any code it names.

:class:`RestrictedUnpickler` builds NumPy arrays and plain containers, and nothing else;
:func:`safe_loads` unpickles bytes with it. :mod:`minisd.data.files` reads the CIFAR files
through it (and re-exports these names); :mod:`minisd.data.fake` writes pickles that it reads.
"""
from __future__ import annotations

import io
import pickle

import numpy as np

# the function a pickle calls to rebuild a NumPy array (the fake-data writer names it too)
try:  # NumPy >= 2 keeps the array reconstructor in numpy._core; older NumPy in numpy.core
    from numpy._core.multiarray import _reconstruct as np_reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct as np_reconstruct


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a Python object that :class:`RestrictedUnpickler` does not allow."""


# The official CIFAR pickles hold dicts, lists, ints and Python 2 strings (no
# import needed) plus NumPy arrays, which a pickle rebuilds by calling
# numpy.core.multiarray._reconstruct(numpy.ndarray, ...) and numpy.dtype(...).
# Those three globals are all that is ever imported; pickletools on the real
# files shows no other GLOBAL opcode. Both spellings of the module map to the
# reconstructor of the NumPy installed here (NumPy 2 renamed numpy.core).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): np_reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can build NumPy arrays and plain containers, and nothing else.

    ``pickle.load`` imports and calls whatever a file names (``os.system``,
    ``subprocess.Popen`` ...), so a pickle from elsewhere can run any code.
    This one resolves only the globals in ``_ALLOWED_GLOBALS`` and raises
    :class:`UnsafePickleError` (a ``pickle.UnpicklingError``) for any other,
    before anything is called. (Python 3 itself writes ``bytes`` at protocol 2
    as a call to ``_codecs.encode``, and arrays at protocol 5 with
    ``_frombuffer``; such files are refused too, with a message that says to
    re-save them at protocol 3 or 4. :func:`minisd.data.fake.write_cifar_pickle`
    writes files in the official format.)
    """

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(_refusal(module, name)) from None


# what the file is, for the globals that harmless but unsupported pickles name
_RESAVE = "which minisd does not read; re-save the file with pickle protocol 3 or 4"
_KNOWN_REFUSALS = {("_codecs", "encode"): f"Python 3 writes bytes this way at pickle protocol 2, {_RESAVE}",
                   **{(m, "_frombuffer"): f"NumPy arrays at pickle protocol 5, {_RESAVE}"
                      for m in ("numpy._core.numeric", "numpy.core.numeric")}}
_ACCEPTED = ("minisd reads the official CIFAR files (Python 2 pickles) and Python 3 pickles at protocol 3 or 4 "
             "that hold only NumPy arrays, lists, dicts, numbers and strings, because loading a pickle can run "
             "any code it names")


def _refusal(module, name):
    why = _KNOWN_REFUSALS.get((module, name), "a corrupt or malicious file?")
    return f"refused to load global '{module}.{name}' ({why}): {_ACCEPTED}"


def safe_loads(data: bytes, encoding: str = "bytes"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    ``encoding="bytes"`` is what the CIFAR files need: their keys and strings
    were Python 2 ``str`` and come back as ``bytes``.
    """
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
