"""mal.common.masks: region RLE == full-mask RLE, centre-aligned pasting, box masks, GT decoding, IoU."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mal.common.boxes import box_region, clip_box_xywh
from mal.common.masks import (
    box_mask,
    box_rle,
    decode_segmentation,
    empty_rle,
    encode_mask,
    paste_prob,
    rle_area,
    rle_from_region,
    rle_iou,
    segmentation_to_rle,
)
from mal.labeler.crops import crop_and_resize


def test_rle_from_region_matches_full_encode() -> None:
    rng = np.random.default_rng(0)
    for t in range(200):
        h, w = (int(v) for v in rng.integers(1, 24, 2))
        x0 = int(rng.integers(0, w))
        x1 = int(rng.integers(x0 + 1, w + 1))
        y0, y1 = (0, h) if t % 4 == 0 else (int(rng.integers(0, h)), h)
        y1 = int(rng.integers(y0 + 1, h + 1)) if t % 4 == 1 else y1
        region = rng.random((y1 - y0, x1 - x0)) < rng.random()
        full = np.zeros((h, w), np.uint8)
        full[y0:y1, x0:x1] = region
        rle = rle_from_region(region, (x0, y0, x1, y1), h, w)
        assert isinstance(rle["counts"], str)
        assert rle == encode_mask(full), (t, (x0, y0, x1, y1))
        assert rle_area(rle) == int(full.sum())


def test_empty_and_box_rle() -> None:
    assert rle_area(empty_rle(7, 5)) == 0
    assert mask_utils.decode({"size": [7, 5], "counts": empty_rle(7, 5)["counts"].encode()}).sum() == 0
    m = box_mask([1.5, 2.0, 2.0, 3.0], 7, 5)  # touches columns 1..3, rows 2..4
    assert m.sum() == 9 and m[2:5, 1:4].all()
    assert rle_area(box_rle([1.5, 2.0, 2.0, 3.0], 7, 5)) == 9
    assert box_region([0, 0, 0, 4], 5, 5) == (0, 0, 0, 0)  # zero width: empty
    assert box_region([-3, -3, 5, 5], 4, 4) == (0, 0, 2, 2)  # clipped at the border
    assert clip_box_xywh([-3, 2, 10, 10], 5, 6) == [0.0, 2.0, 5.0, 4.0]


def test_paste_prob_inverts_crop_sampling() -> None:
    """A pattern cropped with mal.labeler.crops and pasted back lands on the same image pixels."""
    img = np.zeros((40, 50, 3), np.uint8)
    img[10:20, 15:35] = 255
    window = (11.0, 6.0, 39.0, 24.0)  # 28 x 18 px, resampled to 56 x 56 (not aspect-preserving)
    crop = crop_and_resize(img, window, 56)[..., 0].astype(np.float32) / 255.0
    region, (x0, y0, x1, y1) = paste_prob(crop, window, 50, 40)
    assert (x0, y0, x1, y1) == (11, 6, 39, 24)
    back = region > 0.5
    want = img[y0:y1, x0:x1, 0] > 0
    assert (back != want).sum() <= 0.02 * want.size


def test_paste_prob_clips_at_borders_and_misses() -> None:
    prob = np.ones((8, 8), np.float32)
    region, reg = paste_prob(prob, (-4.0, -4.0, 4.0, 4.0), 10, 10)
    assert reg == (0, 0, 4, 4) and region.shape == (4, 4)
    region, reg = paste_prob(prob, (20.0, 20.0, 30.0, 30.0), 10, 10)
    assert region.size == 0 and reg == (0, 0, 0, 0)


def test_segmentation_formats_and_iou() -> None:
    poly = [[2, 2, 8, 2, 8, 8, 2, 8]]
    m = decode_segmentation(poly, 10, 12)
    assert 30 <= m.sum() <= 49
    unc = {"size": [10, 12], "counts": mask_utils.encode(np.asfortranarray(m))["counts"].decode()}
    assert rle_iou(segmentation_to_rle(unc, 10, 12), segmentation_to_rle(poly, 10, 12)) == pytest.approx(1.0)
    flat = m.flatten(order="F")
    runs, cur, n = [], 0, 0
    for v in flat:
        if v != cur:
            runs.append(n)
            cur, n = v, 0
        n += 1
    runs.append(n)
    assert rle_area(segmentation_to_rle({"size": [10, 12], "counts": runs}, 10, 12)) == m.sum()
    assert rle_iou(empty_rle(10, 12), empty_rle(10, 12)) == 0.0
    with pytest.raises(ValueError, match="ann 7.*size"):
        segmentation_to_rle({"size": [5, 5], "counts": "00"}, 10, 12, where="ann 7")
    with pytest.raises(ValueError, match="unsupported"):
        segmentation_to_rle(42, 10, 12)
