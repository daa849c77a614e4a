"""One training step of the paper and one evaluation, the only copies: ``minisd.train`` and
the lessons both call them; and the paper's augmentation, which the step applies to its batch.

Read it top to bottom; every line is one step of the recipe::

    normalise -> augment -> draw the gates -> forward -> loss
              -> zero the gradients -> backward -> (look at the gradients) -> SGD update

The step takes one mini-batch that the caller has already picked (the caller
shuffles once per epoch). Random numbers come from one NumPy ``Generator``
in a fixed order - the augmentation first, then the gates - so a seed fixes a
whole run and a resumed run continues bit-exactly.

The step never waits for the device: the loss and the count of wrong
predictions come back as 0-d arrays on the network's device (NumPy or CuPy),
and the caller turns them into Python numbers when it wants them (that
``float(...)`` is where a GPU run waits: ``minisd.train`` reads many steps at
once, every few steps). The caller also checks that the loss is finite; by
then this step's update (and maybe a few more) has been applied, and the run stops.
"""
from __future__ import annotations

import math

import numpy as np

from .backend import get_xp, to_numpy
from .fast import switch
from .layers import SoftmaxCrossEntropy, no_grad


@switch.tuned()  # BLAS on one thread for this step only, then as it was (minisd/fast/threads.py)
def train_step(net, opt, x_uint8, y, normalizer, rng, augment=True, after_backward=None):
    """One SGD step on one mini-batch; returns ``(loss, wrong, blocks)``.

    net: a :class:`minisd.ResNet` in training mode; opt: its :class:`minisd.SGD`.
    x_uint8: (B, 3, 32, 32) uint8 images and y: (B,) integer labels, both on the
    network's device. normalizer: a fitted :class:`minisd.data.Normalizer`.
    rng: a NumPy ``Generator``; the augmentation draws from it first, then the gates.
    augment: translate by up to 4 pixels and flip (the paper); False for neither.
    after_backward: ``None`` or a function ``after_backward(net)``, called when every
    gradient is computed and before the update (lesson 8 reads the gradients there).

    Returns
      loss:   0-d float array on the device, the mean cross-entropy of the batch;
      wrong:  0-d integer array on the device, how many of the B images were misclassified;
      blocks: float, the number of residual blocks that ran (in sample mode, where each
              image has its own gates, the mean over the images, summed over the blocks).
    """
    x = normalizer.apply(x_uint8, dtype=net.dtype)  # mean image removed, / std; uint8 -> float
    if augment:
        x = augment_batch(x, rng)                   # shift by up to 4 pixels, random flips
    gates = net.sample_gates(rng, batch_size=len(y))  # block l runs with probability p_l
    logits = net.forward(x)                         # dropped blocks: shortcut only
    loss_fn = SoftmaxCrossEntropy()
    loss = loss_fn.forward(logits, y)
    wrong = (logits.argmax(axis=1) != y).sum()      # counted before anything reuses the logits
    net.zero_grad()
    net.backward(loss_fn.backward())                # dropped blocks: no work, no gradient
    if after_backward is not None:
        after_backward(net)
    opt.step(inactive=net.inactive_parameter_names())  # SGD; what a dropped block gets: see SGD
    blocks = sum(float(np.mean(g)) for g in gates)  # gates live on the CPU: no wait for the device
    return loss, wrong, blocks


class StopRequested(Exception):
    """Raised between steps or evaluation batches after Ctrl-C or SIGTERM: the run saves and stops."""


@switch.tuned()  # as for train_step
def evaluate(net, x_uint8, y, normalizer, *, batch_size=500, should_stop=None):
    """Error rate and mean loss of ``net`` in eval mode: every block, branch scaled by p_l.

    x_uint8: (N, 3, 32, 32) uint8 images on the network's device, y: (N,) labels,
    ``batch_size`` images at a time. Returns ``(error, loss)`` as floats, or (nan, nan)
    for an empty set. ``should_stop``: called between batches; when it returns true the
    evaluation is abandoned with :class:`StopRequested`. The network is left in training
    mode; it runs inside :func:`minisd.no_grad`, so no layer keeps a cache.
    """
    if len(y) == 0:
        return math.nan, math.nan
    net.eval()
    loss_fn = SoftmaxCrossEntropy()
    wrong, total_loss = 0, 0.0
    try:
        with no_grad():  # no backward comes: no layer keeps its input for one
            for i in range(0, len(y), batch_size):
                if should_stop is not None and should_stop():
                    raise StopRequested
                logits = net.forward(normalizer.apply(x_uint8[i:i + batch_size], dtype=net.dtype))
                yb = y[i:i + batch_size]
                total_loss += float(loss_fn.forward(logits, yb)) * len(yb)
                wrong += int((logits.argmax(axis=1) != yb).sum())
    finally:
        net.train()
    return wrong / len(y), total_loss / len(y)


# --- The augmentation of the paper: random translation by up to 4 pixels and horizontal flips ---
#
# The paper (following He et al. 2016) pads each 32 x 32 image with 4 zero
# pixels on every side and takes a random 32 x 32 crop, then flips it left to
# right with probability 0.5. Here that is done for a whole batch at once with
# one gather, on the batch's own backend (NumPy or CuPy); the random numbers
# are drawn on the CPU from a NumPy ``Generator`` so a seed gives the same
# augmentation on either device.
#
# The batch is augmented *after* normalisation (``minisd.data.Normalizer``),
# where 0 stands for the per-pixel mean of the training images: the zero fill
# of the border is a fill with the mean image, not with black.


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
