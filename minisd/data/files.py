"""The official data files: CIFAR pickles (in a folder or the tarball), SVHN .mat files, downloads.

This is the part of the data code a learner can skip: :mod:`minisd.data` has the
loaders to call (``load_cifar10``, ``load_dataset``, ...), the paper's split and
the normalisation; it reads the files through this module.

* CIFAR: a folder holding ``cifar-10-batches-py/`` (or ``cifar-100-python/``),
  that folder itself, the official tarball (``cifar-10-python.tar.gz``,
  ``cifar-100-python.tar.gz``) or a folder holding the tarball. Tarballs are
  read member by member with :mod:`tarfile`, never extracted. The batches are
  pickles, read with :class:`RestrictedUnpickler`, which builds nothing but
  NumPy arrays, so a doctored file cannot run code (:mod:`minisd.data.pickles`).
* SVHN: ``train_32x32.mat`` and ``test_32x32.mat`` in one folder, and
  ``extra_32x32.mat`` for the paper's runs (SciPy reads them).
* :func:`download` fetches the official files and checks their MD5.

Every failure a user can cause (missing, corrupt or unsafe files, no network)
raises :class:`DataError` with a one-line message that a command line can print.
Generated stand-in files in these formats: :mod:`minisd.data.fake`.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import secrets
import tarfile
import urllib.error
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..tools.claim import claim, pid_alive
from .pickles import RestrictedUnpickler, UnsafePickleError, np_reconstruct, safe_loads  # noqa: F401 (also here)


class DataError(Exception):
    """A data set is missing, corrupt, unsafe or cannot be downloaded (message: one printable line)."""


class DataNotFoundError(DataError):
    """The files of a data set are not where they were looked for."""


class DownloadError(DataError):
    """A download could not be made (offline, HTTP error): the message says where to put the file by hand."""


# ---------------------------------------------------------------------------
# safe unpickling: minisd.data.pickles
# ---------------------------------------------------------------------------


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
class CifarLayout:
    """Where one CIFAR variant keeps its files (names as in the official tarball)."""
    title: str
    folder: str
    tarball: str
    train: tuple
    test: tuple
    meta: str


CIFAR10_LAYOUT = CifarLayout("CIFAR-10", "cifar-10-batches-py", "cifar-10-python.tar.gz",
                        tuple(f"data_batch_{i}" for i in range(1, 6)), ("test_batch",), "batches.meta")
CIFAR100_LAYOUT = CifarLayout("CIFAR-100", "cifar-100-python", "cifar-100-python.tar.gz",
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


def check_root(root):
    """A ``root`` that exists must be a readable folder or a tarball: :class:`DataError` (one line)
    otherwise, so that no download is tried into a file."""
    root = Path(root).expanduser()
    if os.path.isfile(root) and not _is_tarball(root):
        raise DataError(f"{root} is a file, not a folder (nor a .tar.gz of the data set)")
    if os.path.isdir(root) and not os.access(root, os.R_OK | os.X_OK):
        raise DataError(f"cannot read the data folder {root}: permission denied")


def missing_files(dataset, root, svhn_extra=False) -> list:
    """The :class:`Resource` s that :func:`download` would fetch into ``root`` because ``dataset``
    is not there ([] when it is, or when it has no official files); reads no file."""
    parts = [dataset] + (["svhn-extra"] if svhn_extra else [])
    if dataset not in RESOURCES:
        return []
    try:
        if dataset == "svhn":
            svhn_paths(root, [r.filename for part in parts for r in RESOURCES[part]])
        else:
            _locate_cifar(root, CIFAR10_LAYOUT if dataset == "cifar10" else CIFAR100_LAYOUT)
    except DataNotFoundError:
        return [r for part in parts for r in RESOURCES[part]]
    return []


def _locate_cifar(root, layout: CifarLayout):
    """``("dir", folder)`` or ``("tar", tarball)`` for the data set under ``root``."""
    check_root(root)
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


def _read_cifar_files(root, layout: CifarLayout, names) -> dict:
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


def read_cifar(root, dataset="cifar10", label_mode="fine"):
    """``(x_train, y_train, x_test, y_test)`` of CIFAR-10 or CIFAR-100 (``dataset``) from ``root``.

    Images uint8 (N, 3, 32, 32), labels int64 (N,); the training batches are
    concatenated in order. ``label_mode``: ``"fine"``, or ``"coarse"`` for
    CIFAR-100's 20 superclasses. Raises :class:`DataError`.
    """
    if dataset not in _LABEL_MODES:
        raise ValueError(f"dataset must be 'cifar10' or 'cifar100', got {dataset!r}")
    layout = CIFAR10_LAYOUT if dataset == "cifar10" else CIFAR100_LAYOUT
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


def cifar_class_names(root, dataset: str = "cifar10", label_mode: str = "fine") -> list:
    """Class names from the meta file (``batches.meta`` or ``meta``), index = label.

    ``dataset`` is ``"cifar10"`` or ``"cifar100"``; for CIFAR-100,
    ``label_mode`` picks the fine (100) or coarse (20) names.
    """
    if dataset not in _LABEL_MODES:
        raise ValueError(f"dataset must be 'cifar10' or 'cifar100', got {dataset!r}")
    layout = CIFAR10_LAYOUT if dataset == "cifar10" else CIFAR100_LAYOUT
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
    """One SVHN .mat file -> images uint8 as stored (32, 32, 3, N), labels int64 (N,) in 0..9.

    The file holds ``X`` as 32 x 32 x 3 x N (row, column, channel, image) and
    ``y`` as N x 1 with digits 1..9 and 10 for the digit 0. ``X.transpose(3, 2, 0, 1)``
    is the (N, 3, 32, 32) batch.
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
    return x, y


def svhn_paths(root, names):
    """``root / name`` for each SVHN file name; :class:`DataNotFoundError` naming the missing ones."""
    check_root(root)
    root = Path(root).expanduser()
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise DataNotFoundError(f"SVHN not found in {root}: {', '.join(missing)} missing")
    return [root / n for n in names]


def _read_svhn_files(paths, loadmat):
    """The images of several .mat files, one after the other: uint8 (N, 3, 32, 32), int64 (N,),
    and the file each image came from, int64 (N,): 0 for ``paths[0]``, 1 for ``paths[1]``, ...

    The result is allocated once, from the files' headers, and each file is copied straight
    into it: the set is never held twice (with extra: minisd.data.datasets.SVHN_EXTRA_MEMORY).
    """
    sizes = [svhn_file_size(p) for p in paths]
    x_all = np.empty((sum(sizes), 3, 32, 32), dtype=np.uint8)
    y_all = np.empty(sum(sizes), dtype=np.int64)
    start = 0
    for path, n in zip(paths, sizes):
        x, y = _read_svhn_mat(path, loadmat)
        if len(y) != n:
            raise DataError(f"{path}: its header says {n} images but it holds {len(y)}")
        x_all[start:start + n] = x.transpose(3, 2, 0, 1)
        y_all[start:start + n] = y
        start += n
        del x
    return x_all, y_all, np.repeat(np.arange(len(sizes)), sizes)


def svhn_file_size(path) -> int:
    """How many images an SVHN .mat file holds, from its header (the images are not read)."""
    try:
        from scipy.io import whosmat
    except ImportError:
        raise DataError("reading SVHN (.mat files) needs SciPy: pip install scipy") from None
    try:
        shapes = {name: shape for name, shape, _ in whosmat(str(path))}
    except Exception as e:
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e} (corrupt or incomplete? fetch it again)") \
            from None
    if len(shapes.get("X", ())) != 4:
        raise DataError(f"{path}: expected X as 32x32x3xN, found {shapes.get('X')}")
    return int(shapes["X"][3])


def read_svhn(root, include_extra: bool = False):
    """``(x_train, y_train, x_test, y_test, files)`` of SVHN from the .mat files in ``root``.

    Images uint8 (N, 3, 32, 32), labels int64 0..9 (label = digit);
    ``include_extra`` appends ``extra_32x32.mat`` to the training set (after
    the images of ``train_32x32.mat``); ``files`` int64 (N_train,) says which
    file each training image came from (0: train, 1: extra), counted while reading. Needs SciPy.
    """
    names = [SVHN_FILES["train"], SVHN_FILES["test"]] + ([SVHN_FILES["extra"]] if include_extra else [])
    train_path, test_path, *extra_path = svhn_paths(root, names)
    loadmat = _scipy_loadmat()
    x_test, y_test, _ = _read_svhn_files([test_path], loadmat)
    x_train, y_train, files = _read_svhn_files([train_path] + extra_path, loadmat)
    return x_train, y_train, x_test, y_test, files


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
    # SVHN's 531,131 additional images (1.3 GB), fetched only for --svhn-extra
    "svhn-extra": (Resource("extra_32x32.mat", "http://ufldl.stanford.edu/housenumbers/extra_32x32.mat",
                            "a93ce644f1a588dc4d68dda5feec44a7"),),
}

_CHUNK = 1 << 20


def file_md5(path) -> str:
    """Hex MD5 of a file, read in 1 MiB chunks."""
    h = hashlib.md5(usedforsecurity=False)  # a checksum against damaged downloads, not security
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _download_bar(response, res: Resource, progress):
    """A tqdm bar in bytes for one download (``None`` when ``progress`` is off or tqdm is missing)."""
    if not progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency; a bar is not worth failing for
        return None
    total = getattr(response, "length", None)
    headers = getattr(response, "headers", None)
    if not total and headers is not None:
        try:
            total = int(headers.get("Content-Length") or 0) or None
        except (TypeError, ValueError):
            total = None
    return tqdm(total=total, desc=res.filename, unit="B", unit_scale=True, unit_divisor=1024,
                leave=False, dynamic_ncols=True)


def where_to_put(res: Resource, folder) -> str:
    """'cifar-10-python.tar.gz (MD5 c58f..., from https://...) in data': what to fetch by hand."""
    return f"{res.filename} (MD5 {res.md5}, from {res.url}) in {folder}"


def _fetch_one(res: Resource, folder: Path, urlopen, timeout, log, progress=False):
    """Download ``res`` into ``folder`` atomically.

    Bytes go to a hidden ``.<name>.<pid>-<random>.part`` file in the same
    folder; only when all arrived and the MD5 matches is it renamed to the
    final name (``os.replace``, atomic on one file system). A failure at any
    point removes the part file, so a file under the final name is always
    whole (a part file left by a killed process is removed by the next
    :func:`download`). ``progress``: a progress bar on stderr.
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
    bar = None
    try:
        h, size = hashlib.md5(usedforsecurity=False), 0
        try:
            with out:
                try:
                    with urlopen(res.url, timeout=timeout) as response:
                        bar = _download_bar(response, res, progress)
                        for chunk in iter(lambda: response.read(_CHUNK), b""):
                            try:
                                out.write(chunk)
                            except OSError as e:  # a full disk, not the network
                                raise _disk_error(res, folder, e) from None
                            h.update(chunk)
                            size += len(chunk)
                            if bar is not None:
                                bar.update(len(chunk))
                except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
                    reason = getattr(e, "reason", None) or e
                    raise DownloadError(f"could not download {res.url} ({reason}). If this machine is offline, fetch "
                                        f"it elsewhere and put {res.filename} (MD5 {res.md5}) in {folder}") from None
        except OSError as e:  # the last bytes reach a full disk when the file is closed
            raise _disk_error(res, folder, e) from None
        if h.hexdigest() != res.md5:
            raise DataError(f"download of {res.url} is corrupt: MD5 {h.hexdigest()} ({size} bytes), expected "
                            f"{res.md5}; nothing was saved. Try again, or put {res.filename} in {folder} by hand")
        os.replace(tmp, final)
        ok = True
    finally:
        if bar is not None:
            bar.close()
        if not ok and os.path.exists(tmp):
            os.remove(tmp)
    if log:
        log(f"downloaded {res.filename} ({size / 1e6:.1f} MB, MD5 ok) to {folder}")
    return final


def _disk_error(res: Resource, folder: Path, e: OSError) -> DataError:
    return DataError(f"cannot save {res.filename} in {folder}: {e.strerror or e} (it needs about "
                     f"{SIZES_MB.get(res.filename, '?')} MB); nothing was kept")


# approximate sizes, for the messages
SIZES_MB = {"cifar-10-python.tar.gz": 163, "cifar-100-python.tar.gz": 161, "train_32x32.mat": 182,
             "test_32x32.mat": 64, "extra_32x32.mat": 1330}
_PART_RE = re.compile(r"\.(.+)\.(\d+)-[0-9a-f]{8}\.part")


def _remove_orphan_parts(folder: Path):
    """Delete ``.<name>.<pid>-<random>.part`` files whose process is gone (a download killed midway)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        m = _PART_RE.fullmatch(name)
        if not m or pid_alive(int(m.group(2))):
            continue  # not ours, or that process still runs (perhaps downloading right now)
        try:
            os.remove(folder / name)
        except OSError:
            pass


def download(dataset: str, cache_dir, urlopen=None, timeout: float = 60.0, log=print, progress=False) -> list:
    """Fetch the official files of ``dataset`` ("cifar10", "cifar100", "svhn", "svhn-extra") into ``cache_dir``.

    A file already there with the right MD5 is kept (no network use); one
    with a wrong MD5 is fetched again. Files are written atomically and
    checked against the MD5 in :data:`RESOURCES`. ``urlopen`` (default
    ``urllib.request.urlopen``) is called as ``urlopen(url, timeout=...)``
    and must return a context manager with ``read(n)``; tests pass their
    own. ``log`` prints progress lines (``None``: silent); ``progress`` shows a
    progress bar (tqdm, on stderr).

    Returns the paths of the files. Raises :class:`DownloadError` when offline
    or on HTTP errors, :class:`DataError` on a bad MD5, saying where to put
    the files by hand.
    """
    if dataset not in RESOURCES:
        raise DataError(f"unknown data set {dataset!r}: choose one of {', '.join(RESOURCES)}")
    urlopen = urlopen or urllib.request.urlopen  # looked up now, so monkeypatching urllib works too
    folder = Path(cache_dir).expanduser()
    created = not folder.exists()
    waiting = lambda pid: log and log(f"pid {pid or '?'} is downloading into {folder}: waiting for it")  # noqa: E731
    try:  # one download at a time per folder (minisd.tools.claim); the next finds the files there
        folder.mkdir(parents=True, exist_ok=True)
        held = claim(folder, wait=True, on_wait=waiting)
    except OSError as e:
        raise DataError(f"cannot write to the data folder {folder}: {e.strerror or e}") from None
    if held.took_over and log:
        log(f"took over {folder} from pid {held.took_over}, a download that ended without giving it back")
    paths = []
    try:
        _remove_orphan_parts(folder)
        for res in RESOURCES[dataset]:
            path = folder / res.filename
            if path.is_file():
                if file_md5(path) == res.md5:
                    paths.append(path)
                    continue
                if log:
                    log(f"{path} has the wrong MD5 (incomplete or damaged); downloading it again")
            if log:
                log(f"downloading {res.url} (about {SIZES_MB.get(res.filename, '?')} MB) to {folder} ...")
            paths.append(_fetch_one(res, folder, urlopen, timeout, log, progress))
    except BaseException:
        held.release()
        if created:  # a failed first download leaves no empty data folder behind
            try:
                folder.rmdir()
            except OSError:
                pass
        raise
    held.release()
    return paths
