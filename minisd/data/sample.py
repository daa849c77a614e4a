"""The small real CIFAR-10 sample shipped inside minisd: ``load_dataset("cifar10-sample")``.

``cifar-10-sample.tar.gz`` (beside this file, 9.5 MB) holds the first 500 images of each of the
official ``data_batch_1`` ... ``data_batch_5`` (2,500 training images) and the first 1,000 of
``test_batch``, with their labels, in the official layout (``cifar-10-batches-py/``, Python 2
pickles), so :func:`minisd.data.files.read_cifar` reads it as it reads the full download.
Provenance, counts and checksums: ``cifar-10-sample.md`` beside it. CIFAR-10: Krizhevsky,
"Learning Multiple Layers of Features from Tiny Images", 2009.

It is there so that the quick start, the lessons and the tests train on real images with no
download and no folder outside the clone. 2,500 images are 5% of the training set: enough to
see a network learn (and over-fit), not to measure the paper's error rates.
"""
from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

import numpy as np

from . import files as data_files
from .fake import write_cifar_pickle

NAME = "cifar10-sample"
TARBALL = Path(__file__).resolve().parent / "cifar-10-sample.tar.gz"
TRAIN_PER_BATCH = 500   # the first 500 of each of the five training files: 2,500
TEST_IMAGES = 1000      # the first 1,000 of test_batch
# Its default validation split: a fraction, so that most images are trained on (the paper's
# 5,000 held-out images are a tenth of the full set, and more than the sample holds).
VALID_FRACTION = 0.1


def load_cifar10_sample():
    """``(x_train, y_train, x_test, y_test)`` of the bundled sample: uint8 (2500, 3, 32, 32) and
    (1000, 3, 32, 32), int64 labels 0..9; as :func:`minisd.data.load_cifar10` returns them."""
    return data_files.read_cifar(TARBALL, "cifar10", "fine")


def make_sample(source, tarball=TARBALL, per_batch=TRAIN_PER_BATCH, n_test=TEST_IMAGES):
    """Write the sample from a CIFAR-10 copy ``source`` (the full download or any copy holding at
    least ``per_batch`` images per training file and ``n_test`` test images, in the official
    order): the first images of each file, official layout, gzipped tar with fixed metadata (the
    same input gives the same bytes). How ``cifar-10-sample.tar.gz`` was made::

        python -c "from minisd.data.sample import make_sample; make_sample('../shared/data')"
    """
    layout = data_files.CIFAR10_LAYOUT
    raw = data_files._read_cifar_files(source, layout, layout.train + layout.test + (layout.meta,))
    members = {}
    for name, count in [(n, per_batch) for n in layout.train] + [(n, n_test) for n in layout.test]:
        batch = data_files.safe_loads(raw[name])
        if len(batch[b"labels"]) < count:
            raise ValueError(f"{name} in {source} holds {len(batch[b'labels'])} images, fewer than {count}")
        what = "training batch" if name in layout.train else "testing batch"
        members[name] = {b"batch_label": f"{what} {name[-1] if name in layout.train else 1} of "
                                         f"{len(layout.train) if name in layout.train else 1} "
                                         f"(minisd's sample: the first {count} images)".encode(),
                         b"labels": list(batch[b"labels"][:count]),
                         b"data": np.ascontiguousarray(batch[b"data"][:count])}
    buffer = io.BytesIO()
    # mtime=0 in the gzip header and in every member: the bytes depend on the images only
    with gzip.GzipFile(fileobj=buffer, mode="wb", compresslevel=9, mtime=0) as gz:
        with tarfile.open(fileobj=gz, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name in layout.train + layout.test + (layout.meta,):
                if name == layout.meta:
                    payload = raw[name]  # the class names, unchanged
                else:
                    f = io.BytesIO()
                    write_cifar_pickle(f, members[name])
                    payload = f.getvalue()
                info = tarfile.TarInfo(f"{layout.folder}/{name}")
                info.size, info.mtime, info.mode = len(payload), 0, 0o644
                tar.addfile(info, io.BytesIO(payload))
    Path(tarball).write_bytes(buffer.getvalue())
    return Path(tarball)
