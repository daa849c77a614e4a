"""The data of a training run: the data set, its validation split and the normaliser.

What :class:`minisd.train.Run` calls first (``load_data``): the data set found by minisd's one rule
(``cfg.data_dir``, downloaded if missing and allowed; :mod:`minisd.data`), the validation split the
flags ask for (by default the paper's 5,000 images of a full set, a tenth of a smaller one such as
the bundled sample), the normaliser fitted on the training split, and every array on the device.
Every problem is one line; :func:`check_data_folder` finds those of the folder itself before
anything is said.
"""
from __future__ import annotations

import os

from .. import backend, data
from ..data import files as data_files
from .flags import Config
from .runs import TrainingError, check_free_space, nearest_folder
from .signals import test_hook


def load_data(cfg: Config, device, log):
    """Load the data set, hold out the validation set, fit the normaliser; arrays on ``device``.

    Returns ``(train, valid, test, num_classes, normalizer)``, each set a pair (uint8 images,
    labels). Every problem is one line (TrainingError, or DataError from the loaders).
    """
    test_hook("data")
    try:
        x_train, y_train, x_test, y_test, num_classes, files = data.load_dataset(
            cfg.dataset, cfg.data_dir, download=cfg.download, svhn_extra=cfg.svhn_extra, log=log,
            progress=cfg.progress, with_files=True)
    except data_files.DownloadError as e:
        raise TrainingError(f"{e}, or point --data-dir at a folder that holds it, or train on the real "
                            f"CIFAR-10 sample shipped with minisd: --dataset cifar10-sample") from None
    except data.DataNotFoundError as e:
        if cfg.download:
            raise
        raise TrainingError(f"{e.not_found}; --no-download: nothing was fetched. Put {e.where}, or point "
                            f"--data-dir at a folder that holds it, or use --dataset cifar10-sample "
                            f"(shipped with minisd)") from None
    if cfg.limit_train:
        x_train, y_train = x_train[:cfg.limit_train], y_train[:cfg.limit_train]
        files = None if files is None else files[:cfg.limit_train]
    valid_size = cfg.valid_size
    if valid_size is None and not cfg.valid_per_class:  # the data set's default: 5,000 of a full set, else a tenth
        valid_size = data.default_valid_size(cfg.dataset, len(y_train))
        log(f"validation split: {valid_size if valid_size >= 1 else f'a fraction {valid_size:g}'} of the "
            f"{len(y_train)} training images (the default for {'a full' if valid_size >= 1 else 'this'} "
            f"training set; --valid-size to change it)")
    try:
        if cfg.valid_per_class:  # the paper's SVHN split: N of each class from each file
            (x_train, y_train), valid = data.stratified_split(x_train, y_train, cfg.valid_per_class,
                                                              files=files if cfg.svhn_extra else None, seed=cfg.seed)
        else:
            (x_train, y_train), valid = data.train_valid_split(x_train, y_train, valid_size, seed=cfg.seed)
    except ValueError as e:
        raise TrainingError(f"--valid-per-class: {e}" if cfg.valid_per_class else f"--valid-size: {e}; use "
                            f"--valid-size 0 (no validation split) or a fraction such as 0.1") from None
    if len(valid[1]) > len(y_train):
        raise TrainingError(f"--valid-size {valid_size} holds out {len(valid[1])} of the "
                            f"{len(y_train) + len(valid[1])} training images, leaving {len(y_train)} to train on: "
                            f"use --valid-size 0 (no validation split) or a fraction such as 0.1")
    if len(y_train) < cfg.batch_size:
        raise TrainingError(f"only {len(y_train)} training images for a batch of {cfg.batch_size}")
    log(f"data: {cfg.dataset}, {len(y_train)} train / {len(valid[1])} valid / {len(y_test)} test, "
        f"{num_classes} classes")
    normalizer = data.Normalizer.fit(x_train).to(device)
    to = lambda pair: tuple(backend.to_device(a, device) for a in pair)  # noqa: E731 (uint8 stays small)
    return to((x_train, y_train)), to(valid), to((x_test, y_test)), num_classes, normalizer


def check_data_folder(data_dir, dataset, download=True, svhn_extra=False):
    """Can the data set be read from ``data_dir``, or downloaded into it? One line (TrainingError)
    when not, before the loader says anything: a file that is no data set, a folder that cannot
    be read, or, when a download is needed, a folder that cannot be written or a full device."""
    if data_dir is None:
        return  # the loader's default
    try:
        data_files.check_root(data_dir)
        needed = data_files.missing_files(dataset, data_dir, svhn_extra) if download else []
    except data_files.DataError as e:
        raise TrainingError(f"--data-dir: {e}") from None
    if needed:
        folder = nearest_folder(data_dir)
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            raise TrainingError(f"--data-dir {data_dir}: the data set is not there and cannot be downloaded "
                                f"into it ({folder} is not a writable folder); point --data-dir at a folder that "
                                f"holds it, or a writable one")
        check_free_space(folder, "the download into", "--data-dir",
                         needed=sum(data_files.SIZES_MB.get(r.filename, 0) for r in needed) * 10 ** 6)
