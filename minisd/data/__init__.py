"""Data: the data sets minisd trains on, read from their official files.

* :mod:`minisd.data.datasets`: CIFAR-10/100 and SVHN loaders, the train/validation split,
  per-channel normalisation (what the training loop calls; re-exported here);
* :mod:`minisd.data.sample`: the small real CIFAR-10 sample shipped inside minisd
  (``load_dataset("cifar10-sample")``: 2,500 training and 1,000 test images, no download);
* :mod:`minisd.data.files`: the file formats, safe unpickling, downloads with MD5 checks;
* :mod:`minisd.data.fake`: generated files in the official layouts, for tests and lessons
  (generated images are never used unless asked for).

Nothing in the readable core (functional, layers, blocks, model, step, optim) imports this.
"""
from .datasets import (DATASETS, NUM_CLASSES, SVHN_EXTRA_MEMORY, Normalizer, check_valid_size,  # noqa: F401
                       default_data_dir, default_valid_size, load_cifar10, load_cifar100, load_dataset,
                       load_svhn, stratified_split, svhn_file_of_each_image, train_valid_split)
from .files import DataError, DataNotFoundError  # noqa: F401
