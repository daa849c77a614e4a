"""Data augmentation of the paper: random translation by up to 4 pixels and horizontal flips.

The paper (following He et al. 2016) pads each 32 x 32 image with 4 zero
pixels on every side and takes a random 32 x 32 crop, then flips it left to
right with probability 0.5. Here that is done for a whole batch at once with
one gather, on the batch's own backend (NumPy or CuPy); the random numbers
are drawn on the CPU from a NumPy ``Generator`` so a seed gives the same
augmentation on either device.

The batch is augmented *after* normalisation (``minisd.data.Normalizer``),
where 0 stands for the per-pixel mean of the training images: the zero fill
of the border is a fill with the mean image, not with black.
"""
from __future__ import annotations

import numpy as np

from .backend import get_xp, to_numpy


def draw_augmentation(rng, n: int, pad: int = 4, flip: bool = True):
    """The random choices for ``n`` images, as NumPy arrays.

    Drawn in this order (fixed, so a seed fixes the augmentation):

    1. ``offsets = rng.integers(0, 2 * pad + 1, size=(n, 2))`` if ``pad > 0``
       (else zeros): the top-left corner (row, column) of the crop in the
       padded image; ``pad`` means no shift.
    2. ``flips = rng.random(n) < 0.5`` if ``flip`` (else all False).

    Returns ``offsets`` int64 (n, 2) and ``flips`` bool (n,).
    """
    if pad > 0:
        offsets = to_numpy(rng.integers(0, 2 * pad + 1, size=(n, 2))).astype(np.int64)
    else:
        offsets = np.zeros((n, 2), dtype=np.int64)
    flips = to_numpy(rng.random(n) < 0.5).astype(bool) if flip else np.zeros(n, dtype=bool)
    return offsets, flips


def translate_flip(x, offsets, flips, pad: int = 4):
    """Crop each zero-padded image at ``offsets`` and flip the ones marked in ``flips``.

    ``x`` (N, C, H, W) on NumPy or CuPy; ``offsets`` (N, 2) crop corners in
    0..2*pad; ``flips`` (N,) bool. For image ``i``, with ``(a, b) = offsets[i]``::

        out[i, :, r, c] = x[i, :, r + a - pad, c' + b - pad]   (0 outside the image)
        c' = W - 1 - c if flips[i] else c

    i.e. pad by ``pad`` zeros, crop H x W at (a, b), then flip left-right.
    Returns a new (N, C, H, W) array of ``x``'s dtype on ``x``'s device.
    """
    xp = get_xp(x)
    n, ch, h, w = x.shape
    offsets = np.asarray(offsets, dtype=np.int64).reshape(n, 2)
    flips = np.asarray(flips, dtype=bool).reshape(n)
    if pad == 0 and not flips.any():
        return x.copy()
    padded = xp.zeros((n, ch, h + 2 * pad, w + 2 * pad), dtype=x.dtype)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    rows = offsets[:, :1] + np.arange(h)                      # (N, H) rows of the padded image
    cols = offsets[:, 1:] + np.arange(w)                      # (N, W) columns
    cols = np.where(flips[:, None], cols[:, ::-1], cols)      # a flip reads the columns backwards
    # One gather: the four index arrays broadcast to (N, C, H, W).
    return padded[xp.asarray(np.arange(n)[:, None, None, None]),
                  xp.asarray(np.arange(ch)[None, :, None, None]),
                  xp.asarray(rows[:, None, :, None]),
                  xp.asarray(cols[:, None, None, :])]


def augment_batch(x, rng, pad: int = 4, flip: bool = True):
    """Random translation by up to ``pad`` pixels (zero fill) and random horizontal flips.

    ``x``: float (N, C, H, W), normalised (zero = the mean pixel), NumPy or
    CuPy; ``rng``: a NumPy ``Generator`` (see :func:`draw_augmentation` for
    what is drawn, in which order). Returns a new (N, C, H, W) array, same
    dtype and device. ``pad=0, flip=False`` returns an unchanged copy and draws nothing.
    """
    if x.ndim != 4:
        raise ValueError(f"augment_batch expects an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    if int(pad) != pad or pad < 0:
        raise ValueError(f"pad must be a whole number >= 0, got {pad!r}")
    offsets, flips = draw_augmentation(rng, x.shape[0], int(pad), flip)
    return translate_flip(x, offsets, flips, int(pad))
