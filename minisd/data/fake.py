"""Generated stand-in data sets, written in the official file formats.

For the tests, for the lessons when the real CIFAR-10 is not there (they say
so), and for trying the command line without a download:
``write_fake_cifar10(folder)`` writes ``folder/cifar-10-batches-py/`` that
:func:`minisd.data.load_cifar10` reads like the real thing. The images are
class-dependent colours and stripes plus noise: easy to learn, useless as
evidence about CIFAR.
"""
from __future__ import annotations

import pickle
import struct
from pathlib import Path

import numpy as np

from .files import (CIFAR10_CLASSES, CIFAR10_LAYOUT, CIFAR100_LAYOUT, SVHN_FILES, DataError,
                         np_reconstruct)


class _Py2Pickler(pickle._Pickler):
    """Pickles as Python 2 ``cPickle`` wrote the CIFAR files (protocol 2).

    Python 3 pickles ``bytes`` at protocol 2 as a call to ``_codecs.encode``,
    which the official files do not contain and :class:`~minisd.data.files.RestrictedUnpickler`
    refuses. Here ``bytes`` become Python 2 strings (SHORT_BINSTRING /
    BINSTRING, read back as ``bytes`` with ``encoding="bytes"``) and the array
    reconstructor is named ``numpy.core.multiarray._reconstruct`` as in the
    originals, so the generated files import exactly the same three globals
    and load the same way (they are not byte-identical: memo opcodes and
    NumPy's own dtype arguments differ).
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        n = len(obj)
        if n < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([n]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", n) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str

    def save_global(self, obj, name=None):
        if obj is np_reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def write_cifar_pickle(path, obj) -> None:
    """Write ``obj`` (dicts with ``bytes`` keys, lists, ints, uint8 arrays) as an official-format pickle
    to ``path``, a file name or a binary file object."""
    if hasattr(path, "write"):
        _Py2Pickler(path, protocol=2).dump(obj)
        return
    with open(path, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def fake_images(labels, num_classes: int, seed: int = 0, noise_rng=None):
    """Class-dependent stand-in images, uint8 (N, 3, 32, 32), for ``labels`` (N,).

    Each class gets a colour and a stripe pattern (fixed by ``seed`` and
    ``num_classes``, so train and test files agree), plus Gaussian noise
    drawn from ``noise_rng``: easy for a network to learn, useless as
    evidence about CIFAR.
    """
    t = np.random.default_rng([seed, num_classes])
    colour = t.uniform(60, 200, size=(num_classes, 3, 1, 1))
    freq = t.uniform(0.2, 1.2, size=(num_classes, 2))
    r, c = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    stripes = np.sin(freq[:, :1, None] * r + freq[:, 1:, None] * c)  # (K, 32, 32)
    templates = colour + 40 * stripes[:, None]                        # (K, 3, 32, 32)
    noise_rng = np.random.default_rng([seed, len(labels)]) if noise_rng is None else noise_rng
    noise = noise_rng.normal(0, 25, size=(len(labels), 3, 32, 32))
    return np.clip(templates[np.asarray(labels)] + noise, 0, 255).astype(np.uint8)


def _fake_labels(rng, n, num_classes):
    return rng.permutation(np.arange(n) % num_classes)  # every class present when n >= num_classes


def write_fake_cifar10(folder, n_per_batch: int = 100, seed=0, n_test=None) -> Path:
    """Write generated images as ``folder/cifar-10-batches-py/`` in the official layout; returns that folder.

    Five ``data_batch_*`` files of ``n_per_batch`` images, a ``test_batch`` of
    ``n_test`` (default ``n_per_batch``) and ``batches.meta`` with the real class names.
    """
    out = Path(folder) / CIFAR10_LAYOUT.folder
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_test = n_per_batch if n_test is None else n_test
    for i, name in enumerate(CIFAR10_LAYOUT.train + CIFAR10_LAYOUT.test):
        n, train = (n_per_batch, True) if i < 5 else (n_test, False)
        y = _fake_labels(rng, n, 10)
        x = fake_images(y, 10, seed, noise_rng=rng)
        label = f"training batch {i + 1} of 5" if train else "testing batch 1 of 1"
        write_cifar_pickle(out / name, {b"batch_label": label.encode(), b"labels": [int(v) for v in y],
                                        b"data": x.reshape(n, 3072)})
    write_cifar_pickle(out / CIFAR10_LAYOUT.meta, {b"num_cases_per_batch": n_per_batch,
                                             b"label_names": [s.encode() for s in CIFAR10_CLASSES],
                                             b"num_vis": 3072})
    return out


def write_fake_cifar100(folder, n_per_batch: int = 200, seed=0, n_test=None) -> Path:
    """Write generated images as ``folder/cifar-100-python/`` (``train``, ``test``, ``meta``); returns that folder.

    ``train`` holds ``n_per_batch`` images, ``test`` ``n_test`` (default the
    same). Coarse label = fine label // 5 and the names are ``fine_NN`` /
    ``coarse_NN`` (the real superclass mapping is not reproduced).
    """
    out = Path(folder) / CIFAR100_LAYOUT.folder
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_test = n_per_batch if n_test is None else n_test
    for i, (name, n) in enumerate((("train", n_per_batch), ("test", n_test))):
        y = _fake_labels(rng, n, 100)
        x = fake_images(y, 100, seed, noise_rng=rng)
        write_cifar_pickle(out / name, {b"batch_label": f"{'training' if i == 0 else 'testing'} batch 1 of 1".encode(),
                                        b"fine_labels": [int(v) for v in y],
                                        b"coarse_labels": [int(v) // 5 for v in y],
                                        b"data": x.reshape(n, 3072)})
    write_cifar_pickle(out / CIFAR100_LAYOUT.meta, {b"fine_label_names": [f"fine_{k:02d}".encode() for k in range(100)],
                                              b"coarse_label_names": [f"coarse_{k:02d}".encode() for k in range(20)]})
    return out


def write_fake_svhn(folder, n_train: int = 100, n_test=None, seed=0, n_extra: int = 0) -> Path:
    """Write generated ``train_32x32.mat`` / ``test_32x32.mat`` in SVHN's layout into ``folder`` (needs SciPy).

    ``n_test`` defaults to ``n_train``. ``n_extra > 0`` also writes
    ``extra_32x32.mat`` with that many images (the real one has 531,131).
    Labels cycle through the ten digits, so each class gets ``n // 10``
    or one more of a file's ``n`` images.
    """
    try:
        from scipy.io import savemat
    except ImportError:
        raise DataError("writing SVHN (.mat files) needs SciPy: pip install scipy") from None
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = [(SVHN_FILES["train"], n_train), (SVHN_FILES["test"], n_train if n_test is None else n_test)]
    if n_extra:
        files.append((SVHN_FILES["extra"], n_extra))
    for name, n in files:
        digits = _fake_labels(rng, n, 10)
        x = fake_images(digits, 10, seed, noise_rng=rng)                  # (N, 3, 32, 32)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # (N, 1), digit 0 stored as 10
        savemat(str(out / name), {"X": x.transpose(2, 3, 1, 0), "y": y})  # X: 32 x 32 x 3 x N
    return out
