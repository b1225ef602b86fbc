"""Box crops: fixed/random expansion, wrap-around crop + warp, box mask in a crop."""

import numpy as np
import pytest

from mal.labeler.crops import box_mask_in_crop, crop_and_resize, expand_box_fixed, expand_box_random


def test_expand_box_fixed_hand_values():
    assert expand_box_fixed([10, 20, 30, 40], 1.3) == pytest.approx((5.5, 14.0, 44.5, 66.0))
    assert expand_box_fixed([0, 0, 10, 10], 1.0) == pytest.approx((0, 0, 10, 10))


def test_expand_box_random_range_and_mean():
    rng = np.random.default_rng(0)
    box = [50.0, 60.0, 20.0, 10.0]
    fx, fy = [], []
    for _ in range(4000):
        x0, y0, x1, y1 = expand_box_random(box, rng)
        assert x0 <= 50 and y0 <= 60 and x1 >= 70 and y1 >= 70  # the box stays inside its crop
        fx.append((x1 - x0) / 20.0)
        fy.append((y1 - y0) / 10.0)
    assert 1.0 <= min(fx) and max(fx) <= 1.6 + 1e-9
    assert np.mean(fx) == pytest.approx(1.3, abs=0.02) and np.mean(fy) == pytest.approx(1.3, abs=0.02)
    # asymmetric: left and right margins differ
    x0, _, x1, _ = expand_box_random(box, np.random.default_rng(1))
    assert abs((50 - x0) - (x1 - 70)) > 1e-6


def test_expand_box_random_is_seeded():
    a = expand_box_random([1, 2, 3, 4], np.random.default_rng([0, 1, 2]))
    b = expand_box_random([1, 2, 3, 4], np.random.default_rng([0, 1, 2]))
    assert a == b


def test_crop_identity_is_exact():
    img = np.random.default_rng(0).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    assert np.array_equal(crop_and_resize(img, (0, 0, 8, 8), 8), img)
    assert np.array_equal(crop_and_resize(img, (2, 3, 6, 7), 4), img[3:7, 2:6])


def test_crop_wraps_around_outside_the_image():
    img = np.random.default_rng(1).integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    out = crop_and_resize(img, (-4, -2, 4, 6), 8)
    expected = np.take(
        np.take(img, np.arange(-2, 6), axis=0, mode="wrap"), np.arange(-4, 4), axis=1, mode="wrap"
    )
    assert np.array_equal(out, expected)
    assert np.array_equal(out[2:, 4:], img[0:6, 0:4])  # the part inside the image is the image
    assert np.array_equal(out[2:, :4], img[0:6, 4:8])  # left of the image: the right edge, wrapped


def test_crop_bilinear_upsample_and_gray():
    img = np.array([[0, 100], [100, 200]], dtype=np.uint8)
    out = crop_and_resize(img, (0, 0, 2, 2), 4)
    assert out.shape == (4, 4)
    # samples at (0.25, 0.25) and (0.75, 0.75) in pixel-index space
    assert out[1, 1] == 50 and out[2, 2] == 150


def test_crop_errors():
    img = np.zeros((4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="empty crop"):
        crop_and_resize(img, (2, 2, 2, 5), 4)
    with pytest.raises(ValueError, match="size"):
        crop_and_resize(img, (0, 0, 2, 2), 0)
    with pytest.raises(ValueError, match="negative"):
        expand_box_fixed([0, 0, -1, 2])


def test_box_mask_in_crop_pixels():
    # crop 0..16 on a 8-pixel grid: each output pixel is 2 image px; box x 4..10, y 2..6
    m = box_mask_in_crop([4, 2, 6, 4], (0, 0, 16, 16), 8)
    expected = np.zeros((8, 8), np.float32)
    expected[1:3, 2:5] = 1
    assert m.dtype == np.float32 and np.array_equal(m, expected)


def test_box_mask_thin_box_is_never_empty_and_clips():
    m = box_mask_in_crop([5.1, 5.1, 0.2, 0.2], (0, 0, 16, 16), 8)
    assert m.sum() == 1 and m[2, 2] == 1
    m = box_mask_in_crop([-4, -4, 8, 8], (0, 0, 8, 8), 8)  # partly outside the crop
    assert m.sum() == 16 and m[:4, :4].all()


def test_large_image_path_gives_the_same_crops(monkeypatch):
    """Images too large for cv2.remap's fixed-point maps take the numpy path: same samples, same wrap."""
    yy, xx = np.mgrid[0:40, 0:50]
    img = np.stack([xx * 5, yy * 6, (xx + yy) * 2], -1).astype(np.uint8)  # smooth ramps
    windows = [(-10.3, -7.1, 30.2, 25.9), (12.5, 3.25, 61.0, 55.5), (1.0, 2.0, 9.0, 10.0)]
    fast = [crop_and_resize(img, w, 24) for w in windows]
    monkeypatch.setattr("mal.labeler.crops._REMAP_MAX_SIDE", 0)
    exact = [crop_and_resize(img, w, 24) for w in windows]
    for a, b in zip(fast, exact, strict=True):
        assert a.shape == b.shape == (24, 24, 3)
        assert np.abs(a.astype(int) - b).max() <= 2
