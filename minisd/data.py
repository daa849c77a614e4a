"""Data sets for stochastic depth: CIFAR-10, CIFAR-100 and SVHN, the paper's split and normalisation.

Every loader returns NumPy arrays on the CPU::

    x_train, y_train, x_test, y_test = load_cifar10(root)
    # x: uint8 (N, 3, 32, 32), channels R, G, B; y: int64 (N,)

Images stay ``uint8`` until a mini-batch is taken: a full CIFAR training set
is 150 MB as bytes and 600 MB as float32, and the bytes are what travel to
the GPU. The training pipeline is::

    split  = train_valid_split(x_train, y_train, valid_size=5000, seed=0)
    norm   = Normalizer.fit(split_x_train)      # training split only
    batch  = norm.apply(x_uint8[idx])           # float32, per-pixel mean removed, / one scalar std
    batch  = minisd.augment.augment_batch(batch, rng)   # zero fill = the mean pixel

Where the files may be (``root``):

* CIFAR: a folder holding ``cifar-10-batches-py/`` (or ``cifar-100-python/``),
  that folder itself, the official tarball (``cifar-10-python.tar.gz``,
  ``cifar-100-python.tar.gz``) or a folder holding the tarball. Tarballs are
  read member by member with :mod:`tarfile`, never extracted.
* SVHN: a folder holding ``train_32x32.mat`` and ``test_32x32.mat``.

The CIFAR batches are pickles. They are read with :class:`RestrictedUnpickler`,
which builds nothing but NumPy arrays, so a doctored file cannot run code.

Every failure a user can cause (missing, corrupt or unsafe files, no network)
raises :class:`DataError` with a one-line message that a command line can print.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import math
import os
import pickle
import secrets
import struct
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .backend import get_xp, to_numpy, xp_for

try:  # NumPy >= 2 keeps the array reconstructor in numpy._core; older NumPy in numpy.core
    from numpy._core.multiarray import _reconstruct as _np_reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct as _np_reconstruct


class DataError(Exception):
    """A data set is missing, corrupt, unsafe or cannot be downloaded (message: one printable line)."""


class DataNotFoundError(DataError):
    """The files of a data set are not where they were looked for."""


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a Python object that :class:`RestrictedUnpickler` does not allow."""


# ---------------------------------------------------------------------------
# safe unpickling
# ---------------------------------------------------------------------------

# The official CIFAR pickles hold dicts, lists, ints and Python 2 strings (no
# import needed) plus NumPy arrays, which a pickle rebuilds by calling
# numpy.core.multiarray._reconstruct(numpy.ndarray, ...) and numpy.dtype(...).
# Those three globals are all that is ever imported; pickletools on the real
# files shows no other GLOBAL opcode. Both spellings of the module map to the
# reconstructor of the NumPy installed here (NumPy 2 renamed numpy.core).
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
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
    as a call to ``_codecs.encode``; such files are refused too. Use
    :func:`write_cifar_pickle` to write files in the official format.)
    """

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to load global '{module}.{name}': these files may only hold NumPy arrays, "
                f"lists, dicts, numbers and strings (a corrupt or malicious file?)") from None


def safe_loads(data: bytes, encoding: str = "bytes"):
    """Unpickle ``data`` with :class:`RestrictedUnpickler`.

    ``encoding="bytes"`` is what the CIFAR files need: their keys and strings
    were Python 2 ``str`` and come back as ``bytes``.
    """
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def _unpickle(data: bytes, what: str):
    """:func:`safe_loads` with every failure turned into one :class:`DataError` line."""
    try:
        return safe_loads(data)
    except UnsafePickleError as e:
        raise DataError(f"{what}: {e}") from None
    except Exception as e:  # truncated or garbled bytes raise many kinds of errors
        raise DataError(f"cannot read {what}: not a valid pickle ({type(e).__name__}: {e}); "
                        f"the file is corrupt or incomplete, fetch it again") from None


# ---------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class _CifarLayout:
    """Where one CIFAR variant keeps its files (names as in the official tarball)."""
    title: str
    folder: str
    tarball: str
    train: tuple
    test: tuple
    meta: str


_CIFAR10 = _CifarLayout("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta")
_CIFAR100 = _CifarLayout("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz",
                         ("train",), ("test",), "meta")

# label key in the batches, label-names key in the meta file, number of classes
_LABEL_MODES = {
    "cifar10": {"fine": ("labels", "label_names", 10)},
    "cifar100": {"fine": ("fine_labels", "fine_label_names", 100),
                 "coarse": ("coarse_labels", "coarse_label_names", 20)},
}

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def _is_tarball(path: Path) -> bool:
    return path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar"))


def _locate_cifar(root, layout: _CifarLayout):
    """``("dir", folder)`` or ``("tar", tarball)`` for the data set under ``root``."""
    root = Path(root).expanduser()
    marker = layout.test[0]  # a file name every copy of the data set has
    if _is_tarball(root):
        return "tar", root
    if (root / marker).is_file():
        return "dir", root
    if (root / layout.folder / marker).is_file():
        return "dir", root / layout.folder
    if (root / layout.tarball).is_file():
        return "tar", root / layout.tarball
    raise DataNotFoundError(
        f"{layout.title} not found in {root}: expected {root / layout.folder}/ "
        f"({', '.join(layout.train + layout.test + (layout.meta,))}) or {root / layout.tarball}")


def _read_tar_members(tar_path: Path, folder: str, names) -> dict:
    """The bytes of the regular files ``folder/<name>`` in a tarball, in one pass."""
    wanted, found = set(names), {}
    try:
        with tarfile.open(tar_path, "r:*") as tar:
            for member in tar:  # archive order: a .tar.gz is read front to back only once
                parts = member.name.replace("\\", "/").split("/")
                base = parts[-1]
                if (member.isfile() and base in wanted and base not in found
                        and (len(parts) == 1 or parts[-2] == folder)):
                    found[base] = tar.extractfile(member).read()  # bytes only: nothing is extracted
                    if len(found) == len(wanted):
                        break
    except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read {tar_path}: {e} (a corrupt or incomplete download? "
                        f"delete it and fetch it again)") from None
    missing = sorted(wanted - set(found))
    if missing:
        raise DataError(f"{tar_path} lacks {', '.join(f'{folder}/{m}' for m in missing)}: "
                        f"not the official archive, or an incomplete one")
    return found


def _read_cifar_files(root, layout: _CifarLayout, names) -> dict:
    """``{name: bytes}`` for the given file names of a CIFAR data set, from a folder or a tarball."""
    kind, where = _locate_cifar(root, layout)
    if kind == "tar":
        return _read_tar_members(where, layout.folder, names)
    missing = [n for n in names if not (where / n).is_file()]
    if missing:
        raise DataNotFoundError(f"{layout.title} in {where} is incomplete: {', '.join(missing)} missing")
    return {n: (where / n).read_bytes() for n in names}


def _str_keys(d, what):
    """A dict with ``bytes`` keys (Python 2 pickles) or ``str`` keys, as ``str`` keys."""
    if not isinstance(d, dict):
        raise DataError(f"{what}: expected a dict, found {type(d).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in d.items()}


def _parse_batch(obj, what, label_key, num_classes):
    """One CIFAR batch dict -> images uint8 (N, 3, 32, 32), labels int64 (N,).

    A row of ``data`` is one image: 1024 red values, then 1024 green, then
    1024 blue, each a 32 x 32 image stored row by row, so a plain reshape to
    (N, 3, 32, 32) gives channel-first images.
    """
    d = _str_keys(obj, what)
    if "data" not in d or label_key not in d:
        raise DataError(f"{what}: expected the keys 'data' and '{label_key}', found {sorted(d)}")
    x = d["data"]
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        desc = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise DataError(f"{what}: 'data' must be a uint8 array of N x 3072, found {desc}")
    try:
        y = np.asarray(d[label_key], dtype=np.int64).reshape(-1)
    except (TypeError, ValueError):
        raise DataError(f"{what}: '{label_key}' is not a list of integers") from None
    if len(y) != len(x):
        raise DataError(f"{what}: {len(x)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataError(f"{what}: labels must lie in 0..{num_classes - 1}, found {y.min()}..{y.max()}")
    return np.ascontiguousarray(x.reshape(-1, 3, 32, 32)), y


def _load_cifar(root, dataset, label_mode):
    layout = _CIFAR10 if dataset == "cifar10" else _CIFAR100
    modes = _LABEL_MODES[dataset]
    if label_mode not in modes:
        raise ValueError(f"label_mode for {layout.title} must be one of {', '.join(modes)}, got {label_mode!r}")
    label_key, _, num_classes = modes[label_mode]
    files = _read_cifar_files(root, layout, layout.train + layout.test)

    def part(names):
        xs, ys = zip(*(_parse_batch(_unpickle(files[n], f"{layout.title} file {n}"),
                                    f"{layout.title} file {n}", label_key, num_classes) for n in names))
        return np.concatenate(xs), np.concatenate(ys)

    x_train, y_train = part(layout.train)
    x_test, y_test = part(layout.test)
    return x_train, y_train, x_test, y_test


def load_cifar10(root):
    """CIFAR-10 from ``root`` (a folder, the batches folder, or the tarball; see the module doc).

    Returns ``(x_train, y_train, x_test, y_test)``: images uint8 (N, 3, 32, 32)
    (R, G, B channels), labels int64 (N,) in 0..9. Training images are the
    five ``data_batch_*`` files in order (50,000 in the full set), test images
    ``test_batch`` (10,000). Raises :class:`DataError`.
    """
    return _load_cifar(root, "cifar10", "fine")


def load_cifar100(root, label_mode: str = "fine"):
    """CIFAR-100 from ``root``; like :func:`load_cifar10`.

    ``label_mode="fine"`` gives the 100 classes the paper uses (``fine_labels``),
    ``"coarse"`` the 20 superclasses (``coarse_labels``).
    """
    return _load_cifar(root, "cifar100", label_mode)


def cifar_class_names(root, dataset: str = "cifar10", label_mode: str = "fine") -> list:
    """Class names from the meta file (``batches.meta`` or ``meta``), index = label.

    ``dataset`` is ``"cifar10"`` or ``"cifar100"``; for CIFAR-100,
    ``label_mode`` picks the fine (100) or coarse (20) names.
    """
    if dataset not in _LABEL_MODES:
        raise ValueError(f"dataset must be 'cifar10' or 'cifar100', got {dataset!r}")
    layout = _CIFAR10 if dataset == "cifar10" else _CIFAR100
    if label_mode not in _LABEL_MODES[dataset]:
        raise ValueError(f"label_mode must be one of {', '.join(_LABEL_MODES[dataset])}, got {label_mode!r}")
    _, names_key, num_classes = _LABEL_MODES[dataset][label_mode]
    what = f"{layout.title} file {layout.meta}"
    meta = _str_keys(_unpickle(_read_cifar_files(root, layout, [layout.meta])[layout.meta], what), what)
    names = meta.get(names_key)
    if not isinstance(names, list) or len(names) != num_classes:
        raise DataError(f"{what}: expected '{names_key}', a list of {num_classes} names")
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in names]


# ---------------------------------------------------------------------------
# SVHN
# ---------------------------------------------------------------------------

SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat", "extra": "extra_32x32.mat"}


def _scipy_loadmat():
    try:  # SciPy is needed for SVHN only, so it is imported here and not at the top
        from scipy.io import loadmat
    except ImportError:
        raise DataError("reading SVHN (.mat files) needs SciPy: pip install scipy") from None
    return loadmat


def _read_svhn_mat(path: Path, loadmat):
    """One SVHN .mat file -> images uint8 (N, 3, 32, 32), labels int64 (N,) in 0..9.

    The file holds ``X`` as 32 x 32 x 3 x N (row, column, channel, image) and
    ``y`` as N x 1 with digits 1..9 and 10 for the digit 0.
    """
    try:
        m = loadmat(str(path), variable_names=("X", "y"))
    except Exception as e:  # scipy raises several kinds for a damaged file
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e} (corrupt or incomplete? fetch it again)") \
            from None
    if "X" not in m or "y" not in m:
        raise DataError(f"{path}: expected the variables X and y")
    x, y = np.asarray(m["X"]), np.asarray(m["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3) or x.shape[3] != len(y):
        raise DataError(f"{path}: X must be uint8 32x32x3xN with N = len(y), found {x.dtype} {x.shape}")
    y = y.astype(np.int64)
    if len(y) and (y.min() < 1 or y.max() > 10):
        raise DataError(f"{path}: labels must lie in 1..10, found {y.min()}..{y.max()}")
    y[y == 10] = 0  # SVHN writes the digit 0 as class 10
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), y


def load_svhn(root, include_extra: bool = False):
    """SVHN (cropped digits) from ``root/train_32x32.mat`` and ``root/test_32x32.mat``.

    Returns ``(x_train, y_train, x_test, y_test)``: uint8 (N, 3, 32, 32), int64
    labels 0..9 (label = digit). ``include_extra=True`` appends
    ``extra_32x32.mat`` (531,131 images) to the training set, as the paper
    did; it is not part of :func:`download`. Needs SciPy.
    """
    root = Path(root).expanduser()
    names = [SVHN_FILES["train"], SVHN_FILES["test"]] + ([SVHN_FILES["extra"]] if include_extra else [])
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DataNotFoundError(f"SVHN not found in {root}: {', '.join(missing)} missing")
    loadmat = _scipy_loadmat()
    x_train, y_train = _read_svhn_mat(root / SVHN_FILES["train"], loadmat)
    x_test, y_test = _read_svhn_mat(root / SVHN_FILES["test"], loadmat)
    if include_extra:
        x_extra, y_extra = _read_svhn_mat(root / SVHN_FILES["extra"], loadmat)
        x_train, y_train = np.concatenate([x_train, x_extra]), np.concatenate([y_train, y_extra])
    return x_train, y_train, x_test, y_test


# ---------------------------------------------------------------------------
# download
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Resource:
    """One official file: its name on disk, where to fetch it, its MD5."""
    filename: str
    url: str
    md5: str


RESOURCES = {
    "cifar10": (Resource("cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                         "c58f30108f718f92721af3b95e74349a"),),
    "cifar100": (Resource("cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                          "eb9058c3a382ffc7106e4002c42a8d85"),),
    "svhn": (Resource("train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                      "e26dedcc434d2e4c54c9b2d4a06d8373"),
             Resource("test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                      "eb5a983be6a315427106f1b164d9cef3")),
}

_CHUNK = 1 << 20


def file_md5(path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5(usedforsecurity=False)  # a checksum against damaged downloads, not security
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_one(res: Resource, folder: Path, urlopen, timeout, log):
    """Download ``res`` into ``folder`` atomically.

    Bytes go to a hidden ``.<name>.*.part`` file in the same folder; only
    when all arrived and the MD5 matches is it renamed to the final name
    (``os.replace``, atomic on one file system). A failure at any point
    removes the part file, so a file under the final name is always whole.
    """
    final = folder / res.filename
    # a hidden, unique name in the same folder (so os.replace stays on one file system);
    # opened with open() rather than mkstemp so the file gets the usual umask permissions
    tmp = folder / f".{res.filename}.{os.getpid()}-{secrets.token_hex(4)}.part"
    try:
        out = open(tmp, "xb")
    except OSError as e:
        raise DataError(f"cannot write to the data folder {folder}: {e.strerror or e}") from None
    ok = False
    try:
        h, size = hashlib.md5(usedforsecurity=False), 0
        with out:
            try:
                with urlopen(res.url, timeout=timeout) as response:
                    for chunk in iter(lambda: response.read(_CHUNK), b""):
                        out.write(chunk)
                        h.update(chunk)
                        size += len(chunk)
            except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
                reason = getattr(e, "reason", None) or e
                raise DataError(f"could not download {res.url} ({reason}). If this machine is offline, fetch "
                                f"it elsewhere and put {res.filename} (MD5 {res.md5}) in {folder}") from None
        if h.hexdigest() != res.md5:
            raise DataError(f"download of {res.url} is corrupt: MD5 {h.hexdigest()} ({size} bytes), expected "
                            f"{res.md5}; nothing was saved. Try again, or put {res.filename} in {folder} by hand")
        os.replace(tmp, final)
        ok = True
    finally:
        if not ok and os.path.exists(tmp):
            os.remove(tmp)
    if log:
        log(f"downloaded {res.filename} ({size / 1e6:.1f} MB, MD5 ok) to {folder}")
    return final


def download(dataset: str, cache_dir, urlopen=None, timeout: float = 60.0, log=print) -> list:
    """Fetch the official files of ``dataset`` ("cifar10", "cifar100", "svhn") into ``cache_dir``.

    A file already there with the right MD5 is kept (no network use); one
    with a wrong MD5 is fetched again. Files are written atomically and
    checked against the MD5 in :data:`RESOURCES`. ``urlopen`` (default
    ``urllib.request.urlopen``) is called as ``urlopen(url, timeout=...)``
    and must return a context manager with ``read(n)``; tests pass their
    own. ``log`` prints progress lines (``None``: silent).

    Returns the paths of the files. Raises :class:`DataError` when offline,
    on HTTP errors and on a bad MD5, saying where to put the files by hand.
    """
    if dataset not in RESOURCES:
        raise DataError(f"unknown data set {dataset!r}: choose one of {', '.join(RESOURCES)}")
    urlopen = urlopen or urllib.request.urlopen  # looked up now, so monkeypatching urllib works too
    folder = Path(cache_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the data folder {folder}: {e.strerror or e}") from None
    paths = []
    for res in RESOURCES[dataset]:
        path = folder / res.filename
        if path.is_file():
            if file_md5(path) == res.md5:
                paths.append(path)
                continue
            if log:
                log(f"{path} has the wrong MD5 (incomplete or damaged); downloading it again")
        if log:
            log(f"downloading {res.url} to {folder} ...")
        paths.append(_fetch_one(res, folder, urlopen, timeout, log))
    return paths


_fetch = download  # load_dataset has a parameter called ``download``


# ---------------------------------------------------------------------------
# one entry point for the training command line
# ---------------------------------------------------------------------------

NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "svhn": 10}
_LOADERS = {"cifar10": load_cifar10, "cifar100": load_cifar100, "svhn": load_svhn}


def load_dataset(name: str, data_dir, download: bool = False):
    """``(x_train, y_train, x_test, y_test, num_classes)`` for ``name`` in cifar10 | cifar100 | svhn.

    ``data_dir`` is the ``root`` of the loaders (``None``: :func:`default_data_dir`).
    Missing files are fetched into ``data_dir`` when ``download`` is true;
    otherwise, and for damaged files, one :class:`DataError` says where the
    files are expected.
    """
    if name not in _LOADERS:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(_LOADERS)}")
    if data_dir is None:
        data_dir = default_data_dir()
        if data_dir is None:
            raise DataError("no data folder given and none found (set MINISD_DATA or pass a folder)")
    try:
        arrays = _LOADERS[name](data_dir)
    except DataNotFoundError as e:
        if not download:
            raise DataNotFoundError(f"{e}. Use download=True (--download) to fetch "
                                    f"{', '.join(r.url for r in RESOURCES[name])} into {data_dir}, "
                                    f"or put the files there by hand") from None
        _fetch(name, data_dir)
        arrays = _LOADERS[name](data_dir)
    return (*arrays, NUM_CLASSES[name])


def default_data_dir():
    """The shared data folder, or ``None`` when there is none.

    ``$MINISD_DATA`` when set (``None`` if it names no folder), else
    ``<repo root>/../shared/data`` when that folder exists.
    """
    env = os.environ.get("MINISD_DATA")
    if env:
        p = Path(env).expanduser()
        return p.resolve() if p.is_dir() else None
    p = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return p if p.is_dir() else None


# ---------------------------------------------------------------------------
# the paper's split and normalisation
# ---------------------------------------------------------------------------


def _valid_count(valid_size, n: int) -> int:
    """The number of images to hold out: a count (>= 1), a fraction in (0, 1), or 0."""
    if isinstance(valid_size, bool) or not isinstance(valid_size, (int, float, np.integer, np.floating)):
        raise ValueError(f"valid_size must be a count, a fraction in (0, 1) or 0, got {valid_size!r}")
    v = float(valid_size)
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"valid_size must be >= 0, got {valid_size!r}")
    if v < 1:
        k = 0 if v == 0 else max(1, int(round(v * n)))  # a nonzero fraction holds out at least one image
    elif v != int(v):
        raise ValueError(f"valid_size {valid_size!r} >= 1 is a count of images and must be a whole number")
    else:
        k = int(v)
    if k >= n and k > 0:
        raise ValueError(f"valid_size {valid_size!r} holds out {k} of {n} images, leaving none to train on")
    return k


def train_valid_split(x, y, valid_size, seed=0):
    """Hold out ``valid_size`` random images for validation, as the paper does (5,000 of 50,000).

    ``x`` (N, ...) and ``y`` (N,); ``valid_size`` an int count, a float
    fraction in (0, 1) or 0 (empty validation set). The held-out images are
    the first ``k`` of ``np.random.default_rng(seed).permutation(N)``; both
    parts keep the original order of the images, so the split depends on
    ``seed`` only. Returns ``((x_train, y_train), (x_valid, y_valid))``.
    Raises ``ValueError`` for a negative size or one that leaves no training image.
    """
    n = len(y)
    if len(x) != n:
        raise ValueError(f"x has {len(x)} images but y has {n} labels")
    if n == 0:
        raise ValueError("no images to split")
    k = _valid_count(valid_size, n)
    perm = np.random.default_rng(seed).permutation(n)
    valid_idx, train_idx = np.sort(perm[:k]), np.sort(perm[k:])
    xp = get_xp(x)
    pick = lambda a, i: a[xp.asarray(i)] if get_xp(a) is not np else a[i]  # noqa: E731
    return (pick(x, train_idx), pick(y, train_idx)), (pick(x, valid_idx), pick(y, valid_idx))


class Normalizer:
    """Per-pixel mean image and one scalar standard deviation, fitted on the training split.

    * ``mean``: float64 (C, H, W), the mean over training images of each
      pixel and channel: ``mean[c, h, w] = x[:, c, h, w].mean()``.
    * ``std``: one float for all pixels and channels, the root mean square
      of the training pixels after subtracting the mean image,
      ``sqrt(mean over n, c, h, w of (x[n, c, h, w] - mean[c, h, w])**2)``
      (population std, ddof = 0). A zero std (identical images) is replaced by 1.

    ``apply(x)`` gives ``(x - mean) / std``. After it, 0 is the mean pixel,
    which is why the augmentation's zero fill means "fill with the mean".
    """

    def __init__(self, mean, std):
        self.mean = np.asarray(to_numpy(mean), dtype=np.float64)
        self.std = float(std)
        if self.mean.ndim != 3 or not (self.std > 0 and math.isfinite(self.std)):
            raise ValueError(f"mean must be (C, H, W) and std > 0, got {self.mean.shape} and {std!r}")
        self._cache = {}  # (array module, dtype) -> mean image on that device in that dtype

    @classmethod
    def fit(cls, x, chunk: int = 5000):
        """Fit on training images ``x`` (N, C, H, W), usually uint8; sums in float64, ``chunk`` images at a time."""
        if x.ndim != 4 or len(x) == 0:
            raise ValueError(f"fit needs a non-empty (N, C, H, W) batch, got shape {tuple(x.shape)}")
        xp = get_xp(x)
        n = len(x)
        total = xp.zeros(x.shape[1:], dtype=xp.float64)
        for i in range(0, n, chunk):  # chunks keep the float64 copy small (50,000 images: 1.2 GB at once)
            total += x[i:i + chunk].astype(xp.float64).sum(axis=0)
        mean = total / n
        sq = 0.0
        for i in range(0, n, chunk):
            sq += float(((x[i:i + chunk].astype(xp.float64) - mean) ** 2).sum())
        std = math.sqrt(sq / x[0].size / n)
        return cls(to_numpy(mean), std if std > 0 else 1.0)

    def apply(self, x, dtype=np.float32):
        """``(x - mean) / std`` as ``dtype`` on the device of ``x`` (N, C, H, W) -> (N, C, H, W)."""
        xp = get_xp(x)
        mean = self._mean_on(xp, dtype)
        out = x.astype(dtype)  # a fresh array: the subtraction and scaling below work in place
        out -= mean
        out *= np.dtype(dtype).type(1.0 / self.std)
        return out

    def _mean_on(self, xp, dtype):
        key = (xp.__name__, np.dtype(dtype).str)
        if key not in self._cache:
            self._cache[key] = xp.asarray(self.mean.astype(dtype))
        return self._cache[key]

    def to(self, device: str):
        """Put the float32 mean image on ``device`` now (``apply`` would do it on first use); returns self."""
        self._mean_on(xp_for(device), np.float32)
        return self

    def state_dict(self) -> dict:
        """``{"mean": float64 (C, H, W), "std": float64 0-d}``: NumPy arrays, ready for ``np.savez``."""
        return {"mean": self.mean.copy(), "std": np.array(self.std, dtype=np.float64)}

    @classmethod
    def from_state_dict(cls, state: dict):
        """The inverse of :meth:`state_dict`."""
        return cls(state["mean"], float(np.asarray(to_numpy(state["std"]))))

    def __repr__(self):
        return f"Normalizer(mean {self.mean.shape}, {self.mean.mean():.2f} on average, std {self.std:.3f})"


def iterate_minibatches(n: int, batch_size: int, rng=None, drop_last: bool = False):
    """Yield int64 index arrays that cover ``range(n)`` in batches of ``batch_size``.

    With a NumPy ``Generator`` ``rng`` the order is ``rng.permutation(n)``,
    else ``0..n-1``. The last batch may be shorter unless ``drop_last``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    order = rng.permutation(n).astype(np.int64) if rng is not None else np.arange(n, dtype=np.int64)
    stop = n - n % batch_size if drop_last else n
    for i in range(0, stop, batch_size):
        yield order[i:i + batch_size]


# ---------------------------------------------------------------------------
# generated stand-in data in the official file format (tests, lessons, CLI tests)
# ---------------------------------------------------------------------------


class _Py2Pickler(pickle._Pickler):
    """Pickles as Python 2 ``cPickle`` wrote the CIFAR files (protocol 2).

    Python 3 pickles ``bytes`` at protocol 2 as a call to ``_codecs.encode``,
    which the official files do not contain and :class:`RestrictedUnpickler`
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
        if obj is _np_reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def write_cifar_pickle(path, obj) -> None:
    """Write ``obj`` (dicts with ``bytes`` keys, lists, ints, uint8 arrays) as an official-format pickle."""
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
    out = Path(folder) / _CIFAR10.folder
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_test = n_per_batch if n_test is None else n_test
    for i, name in enumerate(_CIFAR10.train + _CIFAR10.test):
        n, train = (n_per_batch, True) if i < 5 else (n_test, False)
        y = _fake_labels(rng, n, 10)
        x = fake_images(y, 10, seed, noise_rng=rng)
        label = f"training batch {i + 1} of 5" if train else "testing batch 1 of 1"
        write_cifar_pickle(out / name, {b"batch_label": label.encode(), b"labels": [int(v) for v in y],
                                        b"data": x.reshape(n, 3072)})
    write_cifar_pickle(out / _CIFAR10.meta, {b"num_cases_per_batch": n_per_batch,
                                             b"label_names": [s.encode() for s in CIFAR10_CLASSES],
                                             b"num_vis": 3072})
    return out


def write_fake_cifar100(folder, n_per_batch: int = 200, seed=0, n_test=None) -> Path:
    """Write generated images as ``folder/cifar-100-python/`` (``train``, ``test``, ``meta``); returns that folder.

    ``train`` holds ``n_per_batch`` images, ``test`` ``n_test`` (default the
    same). Coarse label = fine label // 5 and the names are ``fine_NN`` /
    ``coarse_NN`` (the real superclass mapping is not reproduced).
    """
    out = Path(folder) / _CIFAR100.folder
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
    write_cifar_pickle(out / _CIFAR100.meta, {b"fine_label_names": [f"fine_{k:02d}".encode() for k in range(100)],
                                              b"coarse_label_names": [f"coarse_{k:02d}".encode() for k in range(20)]})
    return out


def write_fake_svhn(folder, n_train: int = 100, n_test=None, seed=0) -> Path:
    """Write generated ``train_32x32.mat`` / ``test_32x32.mat`` in SVHN's layout into ``folder`` (needs SciPy)."""
    try:
        from scipy.io import savemat
    except ImportError:
        raise DataError("writing SVHN (.mat files) needs SciPy: pip install scipy") from None
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (name, n) in enumerate(((SVHN_FILES["train"], n_train),
                                   (SVHN_FILES["test"], n_train if n_test is None else n_test))):
        digits = _fake_labels(rng, n, 10)
        x = fake_images(digits, 10, seed, noise_rng=rng)                  # (N, 3, 32, 32)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]  # (N, 1), digit 0 stored as 10
        savemat(str(out / name), {"X": x.transpose(2, 3, 1, 0), "y": y})  # X: 32 x 32 x 3 x N
    return out
