"""Data for stochastic depth: load CIFAR-10, CIFAR-100 or SVHN, hold out a validation set, normalise.

Every loader returns NumPy arrays on the CPU::

    x_train, y_train, x_test, y_test = load_cifar10(root)
    # x: uint8 (N, 3, 32, 32), channels R, G, B; y: int64 (N,)

Images stay ``uint8`` until a mini-batch is taken: a full CIFAR training set
is 150 MB as bytes and 600 MB as float32, and the bytes are what travel to
the GPU. The training pipeline is::

    split  = train_valid_split(x_train, y_train, valid_size=5000, seed=0)
             # SVHN as the paper: stratified_split(x, y, [400, 200], files=...), 400 + 200 of each digit
    norm   = Normalizer.fit(split_x_train)      # training split only
    batch  = norm.apply(x_uint8[idx])           # float32, per-pixel mean removed, / one scalar std
    batch  = minisd.step.augment_batch(batch, rng)   # zero fill = the mean pixel

``root`` is a folder holding the official files (``cifar-10-batches-py/``, the
tarball, or SVHN's ``.mat`` files, ``extra_32x32.mat`` included for the
paper's SVHN runs); :func:`default_data_dir` is minisd's one rule for finding it.
``load_dataset("cifar10-sample")`` needs no folder: a small real sample of CIFAR-10 ships
inside minisd (:mod:`minisd.data.sample`).

What is elsewhere: reading the official file formats (CIFAR pickles, safely;
tarballs; SVHN .mat), downloads and their MD5 checks are in
:mod:`minisd.data.files`; generated stand-in files in those formats (tests,
lessons without the real data) in :mod:`minisd.data.fake`.

Every failure a user can cause (missing, corrupt or unsafe files, no network)
raises :class:`DataError` with a one-line message that a command line can print.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from . import files as data_files
from . import sample
from ..backend import get_xp, to_numpy, xp_for
from .files import DataError, DataNotFoundError  # raised here too; callers catch data.DataError


# ---------------------------------------------------------------------------
# loaders
# ---------------------------------------------------------------------------


def load_cifar10(root):
    """CIFAR-10 from ``root`` (a folder, the batches folder, or the tarball).

    Returns ``(x_train, y_train, x_test, y_test)``: images uint8 (N, 3, 32, 32)
    (R, G, B channels), labels int64 (N,) in 0..9. Training images are the
    five ``data_batch_*`` files in order (50,000 in the full set), test images
    ``test_batch`` (10,000). Raises :class:`DataError`.
    """
    return data_files.read_cifar(root, "cifar10", "fine")


def load_cifar100(root, label_mode: str = "fine"):
    """CIFAR-100 from ``root``; like :func:`load_cifar10`.

    ``label_mode="fine"`` gives the 100 classes the paper uses (``fine_labels``),
    ``"coarse"`` the 20 superclasses (``coarse_labels``).
    """
    return data_files.read_cifar(root, "cifar100", label_mode)


# SVHN with extra, computed: 604,388 x 3 x 32 x 32 bytes = 1.86 GB of uint8 training images
# (+ 80 MB of test images); reading the extra file holds its 1.63 GB as well, the train/valid
# split a 1.84 GB training copy. The one statement of it (the CLI's --svhn-extra help says it).
SVHN_EXTRA_MEMORY = ("1.86 GB of uint8 images held throughout (on the GPU with --device gpu), "
                     "about 3.8 GB of host memory at the peak while loading and splitting")


def load_svhn(root, include_extra: bool = False):
    """SVHN (cropped digits) from ``root/train_32x32.mat`` and ``root/test_32x32.mat``.

    Returns ``(x_train, y_train, x_test, y_test)``: uint8 (N, 3, 32, 32), int64
    labels 0..9 (label = digit); 73,257 training and 26,032 test images.
    ``include_extra=True`` appends the 531,131 images of ``extra_32x32.mat``
    to the training set, as the paper did (604,388 in all; which image came
    from which file: :func:`svhn_file_of_each_image`). Needs SciPy.

    Memory with the extra images: :data:`SVHN_EXTRA_MEMORY`.
    """
    return data_files.read_svhn(root, include_extra)[:4]


def svhn_file_of_each_image(root, include_extra: bool = False):
    """For each training image :func:`load_svhn` returns, the file it came from: int64 (N,),
    0 for ``train_32x32.mat``, 1 for ``extra_32x32.mat``. Read from the files' headers alone (no
    images); ``load_dataset(..., with_files=True)`` gives the same array from the images it read."""
    names = ["train"] + (["extra"] if include_extra else [])
    paths = data_files.svhn_paths(root, [data_files.SVHN_FILES[n] for n in names])
    sizes = [data_files.svhn_file_size(p) for p in paths]
    return np.repeat(np.arange(len(sizes)), sizes)


NUM_CLASSES = {"cifar10": 10, sample.NAME: 10, "cifar100": 100, "svhn": 10}
_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "svhn": "SVHN"}
_LOADERS = {"cifar10": load_cifar10, "cifar100": load_cifar100, "svhn": load_svhn}
DATASETS = tuple(NUM_CLASSES)  # what --dataset accepts


def load_dataset(name: str, data_dir=None, download: bool = False, svhn_extra: bool = False, log=print,
                 progress: bool = False, with_files: bool = False):
    """``(x_train, y_train, x_test, y_test, num_classes)`` for ``name`` in cifar10 | cifar10-sample |
    cifar100 | svhn.

    ``cifar10-sample`` is the real CIFAR-10 sample bundled with minisd (2,500 training and
    1,000 test images, :mod:`minisd.data.sample`): ``data_dir`` and ``download`` play no part.

    ``with_files=True`` appends ``files``: for SVHN the file each training image came
    from (int64 (N,), 0: ``train_32x32.mat``, 1: ``extra_32x32.mat``; what the paper's
    per-file split needs), ``None`` for CIFAR.

    ``data_dir`` is the ``root`` of the loaders (``None``: :func:`default_data_dir`'s rule).
    ``svhn_extra`` (SVHN only) adds ``extra_32x32.mat`` to the training set.
    Missing files are fetched into ``data_dir`` when ``download`` is true
    (:func:`minisd.data.files.download`: MD5 checked, moved into place only
    when complete; ``log`` says so, ``progress`` shows a progress bar).
    Otherwise a :class:`DataNotFoundError` says which file to put where; a
    failed download raises :class:`minisd.data.files.DownloadError`, damaged
    files a :class:`DataError`.
    """
    if name not in NUM_CLASSES:
        raise DataError(f"unknown data set {name!r}: choose one of {', '.join(DATASETS)}")
    if svhn_extra and name != "svhn":
        raise DataError(f"svhn_extra (--svhn-extra) is for SVHN, not {name}")
    if name == sample.NAME:
        arrays = sample.load_cifar10_sample()
        return (*arrays, 10, None) if with_files else (*arrays, 10)
    data_dir = default_data_dir(data_dir)
    if name == "svhn":  # read_svhn also says which file each training image came from
        load = lambda root: data_files.read_svhn(root, include_extra=svhn_extra)  # noqa: E731
    else:
        load = lambda root: (*_LOADERS[name](root), None)  # noqa: E731
    parts = [name] + (["svhn-extra"] if svhn_extra else [])  # the keys of data_files.RESOURCES
    try:
        arrays = load(data_dir)
    except DataNotFoundError as e:
        if not download:
            files = " and ".join(data_files.where_to_put(r, data_dir)
                                 for part in parts for r in data_files.RESOURCES[part])
            err = DataNotFoundError(f"{e}. Put {files}, or pass download=True to fetch it")
            err.not_found, err.where = str(e), files  # for callers with words of their own (the CLI)
            raise err from None
        if log:
            log(f"{_TITLES[name]} is not in {data_dir}: downloading the official files")
        for part in parts:
            data_files.download(part, data_dir, log=log, progress=progress)
        arrays = load(data_dir)
    *arrays, files = arrays
    return (*arrays, NUM_CLASSES[name], files) if with_files else (*arrays, NUM_CLASSES[name])


def default_data_dir(given=None) -> Path:
    """The data folder, by minisd's one rule (the CLI, the sweep and the lessons all ask here).

    ``given`` (``--data-dir``) when not ``None``; else ``$MINISD_DATA`` when set; else
    ``./data``, the folder the CLI downloads into. The folder need not exist yet (the CLI
    creates it to download; a lesson then falls back to the bundled sample). No other place
    is looked at.
    """
    if given is None:
        given = os.environ.get("MINISD_DATA") or "data"
    return Path(given).expanduser()


def default_valid_size(dataset: str, n_train: int):
    """The validation split a run holds out when ``--valid-size`` is not given: the paper's 5,000
    images when the training set is a full one (50,000 images or more), else a tenth of it (the
    bundled sample's 2,500 images, or a small copy), so that most images are trained on."""
    if dataset != sample.NAME and n_train >= 50_000:
        return 5000
    return sample.VALID_FRACTION


# ---------------------------------------------------------------------------
# the paper's split and normalisation
# ---------------------------------------------------------------------------


def check_valid_size(valid_size):
    """The one rule for a validation size; raises ``ValueError`` (one line) for anything else.

    An integer is a count (0: none); a float in (0, 1) a fraction; 0.0 is none too. A float
    of 1 or more (is 1.0 one image or all of them?), a negative number, NaN, a bool or a
    string is refused. Returns ``valid_size``.
    """
    ok = not isinstance(valid_size, bool) and (
        isinstance(valid_size, (int, np.integer)) and valid_size >= 0
        or isinstance(valid_size, (float, np.floating)) and (valid_size == 0 or 0 < valid_size < 1))
    if not ok:
        raise ValueError(f"valid_size must be an integer count (e.g. 5000) or a fraction in (0, 1) "
                         f"(e.g. 0.1), got {valid_size!r}")
    return valid_size


def _valid_count(valid_size, n: int) -> int:
    """The number of images to hold out of ``n`` (:func:`check_valid_size`'s rule; a nonzero
    fraction holds out at least one image); ``ValueError`` when none would be left to train on."""
    check_valid_size(valid_size)
    if isinstance(valid_size, (int, np.integer)):
        k = int(valid_size)
    else:
        k = max(1, int(round(float(valid_size) * n))) if valid_size else 0
    if k >= n and k > 0:
        raise ValueError(f"valid_size {valid_size!r} holds out {k} of {n} images, leaving none to train on")
    return k


def train_valid_split(x, y, valid_size, seed=0):
    """Hold out ``valid_size`` random images for validation, as the paper does (5,000 of 50,000).

    ``x`` (N, ...) and ``y`` (N,); ``valid_size`` an int count, a float
    fraction in (0, 1) or 0 (empty validation set); a float of 1 or more is
    an error (a count is an int). The held-out images are
    the first ``k`` of ``np.random.default_rng(seed).permutation(N)``; both
    parts keep the original order of the images, so the split depends on
    ``seed`` only. Returns ``((x_train, y_train), (x_valid, y_valid))``.
    Raises ``ValueError`` for a bad size or one that leaves no training image.
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


def stratified_split(x, y, per_class, files=None, seed=0):
    """Hold out ``per_class[f]`` random images of every class from file ``f``: the paper's SVHN split.

    The paper's SVHN validation set is "400 samples per class from the training
    set and 200 samples per class from the additional set": ``per_class=[400,
    200]`` with ``files`` saying where each image came from (0: train_32x32.mat,
    1: extra_32x32.mat; :func:`svhn_file_of_each_image`), 10 x 600 = 6,000
    images; every other image is trained on. With ``files=None`` all images
    count as file 0, so ``per_class=[500]`` is a class-balanced CIFAR-10
    split of 5,000.

    The draw, with ``rng = np.random.default_rng(seed)``: for each file, then
    each class in label order, ``k`` of its images without replacement
    (``rng.choice``), i.e. the first ``k`` of a random shuffle of that
    class, as the authors' svhn-dataset.lua takes them. Both parts keep the
    original order of the images. Returns ``((x_train, y_train), (x_valid,
    y_valid))``. Raises ``ValueError`` when a file holds fewer than ``k``
    images of some class, or nothing would be left to train on.
    """
    labels = to_numpy(y)
    n = len(labels)
    if len(x) != n:
        raise ValueError(f"x has {len(x)} images but y has {n} labels")
    files = np.zeros(n, dtype=np.int64) if files is None else np.asarray(files)
    if files.shape != (n,):
        raise ValueError(f"files must give one file number per image ({n}), got shape {files.shape}")
    if n and files.max() >= len(per_class):
        raise ValueError(f"images come from {files.max() + 1} files but per_class has {len(per_class)} counts")
    rng = np.random.default_rng(seed)
    held_out = []
    for f, k in enumerate(per_class):
        for c in np.unique(labels):
            members = np.flatnonzero((files == f) & (labels == c))
            if len(members) < k:
                raise ValueError(f"class {c} has {len(members)} images in file {f}, fewer than the {k} to hold out")
            held_out.append(rng.choice(members, size=k, replace=False))
    valid_idx = np.sort(np.concatenate(held_out)) if held_out else np.zeros(0, dtype=np.int64)
    train_idx = np.setdiff1d(np.arange(n), valid_idx)  # sorted, the images not held out
    if len(train_idx) == 0:
        raise ValueError(f"holding out {per_class} per class leaves no image to train on")
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
