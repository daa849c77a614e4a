"""Tests for the augmentation in minisd.step: zero-fill translation by up to 4 pixels and horizontal flips."""
import numpy as np
import pytest

from minisd import backend
from minisd.step import augment_batch, draw_augmentation, translate_flip


def _reference(x, seed, pad=4, flip=True):
    """The plain per-image loop: zero-pad, crop at a random corner, maybe flip.

    Draws in the documented order: crop corners (N, 2) first, then flips.
    """
    rng = np.random.default_rng(seed)
    n, _, h, w = x.shape
    corners = rng.integers(0, 2 * pad + 1, size=(n, 2)) if pad else np.zeros((n, 2), int)
    flips = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    out = np.empty_like(x)
    for i in range(n):
        padded = np.pad(x[i], ((0, 0), (pad, pad), (pad, pad)))  # zeros
        a, b = corners[i]
        img = padded[:, a:a + h, b:b + w]
        out[i] = img[:, :, ::-1] if flips[i] else img
    return out


def _batch(n=16, c=3, h=32, w=32, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal((n, c, h, w)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_shape_dtype_device(xp, device, dtype):
    x = xp.asarray(_batch(dtype=dtype))
    out = augment_batch(x, np.random.default_rng(0))
    assert out.shape == x.shape and out.dtype == dtype
    assert backend.device_of(out) == backend.resolve_device(device)


@pytest.mark.parametrize("pad, flip", [(4, True), (4, False), (0, True), (2, True)])
def test_matches_per_image_loop(xp, pad, flip):
    x = _batch(n=64, h=8, w=12)  # non-square, so rows and columns cannot be mixed up
    got = augment_batch(xp.asarray(x), np.random.default_rng(7), pad=pad, flip=flip)
    assert np.array_equal(backend.to_numpy(got), _reference(x, 7, pad, flip))


def test_flip_probability_is_one_half():
    n = 4000
    x = np.broadcast_to(np.arange(8, dtype=np.float32), (n, 1, 2, 8)).copy()
    out = augment_batch(x, np.random.default_rng(1), pad=0, flip=True)
    flipped = np.all(out == x[..., ::-1], axis=(1, 2, 3))
    kept = np.all(out == x, axis=(1, 2, 3))
    assert np.all(flipped ^ kept)              # each image is either flipped or untouched
    assert abs(flipped.mean() - 0.5) < 0.04    # 0.5 +- 5 standard deviations (0.008)


def test_translation_content_and_zero_border():
    x = _batch(n=3, c=2, h=32, w=32) + 10  # no zeros inside the images
    corners = np.array([[0, 0], [8, 8], [4, 4]])  # down-right by 4, up-left by 4, no shift
    out = translate_flip(x, corners, np.zeros(3, bool), pad=4)
    assert np.all(out[0, :, :4, :] == 0) and np.all(out[0, :, :, :4] == 0)
    assert np.array_equal(out[0, :, 4:, 4:], x[0, :, :-4, :-4])
    assert np.all(out[1, :, -4:, :] == 0) and np.all(out[1, :, :, -4:] == 0)
    assert np.array_equal(out[1, :, :-4, :-4], x[1, :, 4:, 4:])
    assert np.array_equal(out[2], x[2])
    # a flip after the shift: image 0 moved right by 4, then mirrored, has its zero band on the right
    out_f = translate_flip(x[:1], corners[:1], np.ones(1, bool), pad=4)
    assert np.all(out_f[0, :, :, -4:] == 0) and np.array_equal(out_f[0, :, 4:, :-4], x[0, :, :-4, :-4][..., ::-1])


def test_random_translations_cover_all_81_offsets_and_keep_the_rest():
    n = 2000
    ones = np.ones((n, 1, 32, 32), np.float32)
    out = augment_batch(ones, np.random.default_rng(3), pad=4, flip=False)
    rows_in = out[:, 0].any(axis=2)  # (N, 32): which rows still hold image
    cols_in = out[:, 0].any(axis=1)
    dy = np.where(rows_in[:, 0], -(32 - rows_in.sum(1)), 32 - rows_in.sum(1))  # zero band at the top: moved down
    dx = np.where(cols_in[:, 0], -(32 - cols_in.sum(1)), 32 - cols_in.sum(1))
    assert np.abs(dy).max() == 4 and np.abs(dx).max() == 4
    assert len(set(zip(dy.tolist(), dx.tolist()))) == 81
    assert np.array_equal(out.sum(axis=(1, 2, 3)), (32 - np.abs(dy)) * (32 - np.abs(dx)))  # zero fill, no wrap


def test_no_pad_no_flip_is_identity_and_draws_nothing(xp):
    x = xp.asarray(_batch())
    rng = np.random.default_rng(0)
    state = rng.bit_generator.state
    out = augment_batch(x, rng, pad=0, flip=False)
    assert out is not x and np.array_equal(backend.to_numpy(out), backend.to_numpy(x))
    assert rng.bit_generator.state == state


def test_draws_are_seeded():
    a = draw_augmentation(np.random.default_rng(5), 10)
    b = draw_augmentation(np.random.default_rng(5), 10)
    assert all(np.array_equal(u, v) for u, v in zip(a, b))
    assert a[0].dtype == np.int64 and a[0].min() >= 0 and a[0].max() <= 8 and a[1].dtype == bool


def test_bad_input():
    with pytest.raises(ValueError, match="N, C, H, W"):
        augment_batch(np.zeros((3, 32, 32), np.float32), np.random.default_rng(0))
    with pytest.raises(ValueError, match="pad"):
        augment_batch(_batch(n=2), np.random.default_rng(0), pad=-1)
