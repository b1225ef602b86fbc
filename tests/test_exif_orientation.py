"""Images carrying an EXIF orientation are read in the displayed frame, exactly as detectron2 reads them.

The detector (detectron2's ``read_image``) sees the rotated image, and COCO boxes/width/height refer to it,
so the labeller and the labeler's training crops must see the same pixels, or masks land off the object.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from mal.common.coco_io import CocoFormatError, load_coco
from mal.common.images import EXIF_ORIENTATION, image_size, read_image
from mal.common.masks import decode_segmentation
from mal.pseudo.label import LabelOptions
from mal.pseudo.shards import label_coco
from tests._pseudo_fixtures import ann, write_coco

# How a viewer turns the stored pixels into the displayed image, per EXIF orientation (the EXIF spec).
DISPLAYED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.rot90(a, 2).transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


def _save(path: Path, stored: np.ndarray, orientation: int, **kw) -> Path:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    Image.fromarray(stored).save(path, exif=exif, **kw)
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_read_image_applies_the_exif_orientation_like_detectron2(tmp_path, orientation):
    from detectron2.data.detection_utils import read_image as d2_read_image

    stored = np.random.default_rng(orientation).integers(0, 255, (5, 8, 3), dtype=np.uint8)
    path = _save(tmp_path / "x.png", stored, orientation)  # PNG: lossless, so pixels compare exactly
    out = read_image(path)
    np.testing.assert_array_equal(out, DISPLAYED[orientation](stored))
    np.testing.assert_array_equal(out, d2_read_image(str(path), format="RGB"))
    assert image_size(path) == out.shape[:2]


def _bright_square_coco(root: Path) -> tuple[Path, np.ndarray, list[float]]:
    """A 48x48 JPEG stored rotated (EXIF 8: displayed = stored turned 90° counter-clockwise), with a bright
    square at the displayed frame's top left; its box is given in the displayed frame."""
    shown = np.zeros((48, 48, 3), np.uint8)
    shown[6:22, 4:20] = 255  # the object, displayed rows 6..21, cols 4..19
    stored = np.rot90(shown, -1)  # undo the display rotation: the object sits top right on disk
    _save(root / "sq.jpg", np.ascontiguousarray(stored), 8, quality=95)
    # A non-square image too: its JSON width/height are the displayed ones (stored 30 wide x 20 high).
    _save(root / "wide.jpg", np.zeros((20, 30, 3), np.uint8), 8, quality=95)
    images = [
        {"id": 1, "file_name": "sq.jpg", "width": 48, "height": 48},
        {"id": 2, "file_name": "wide.jpg", "width": 20, "height": 30},
    ]
    box = [2.0, 4.0, 20.0, 20.0]  # around the object, with a dark margin
    return write_coco(root, images, [ann(1, 1, box), ann(2, 2, [1.0, 1.0, 10.0, 10.0])]), shown[..., 0] > 0, box


class BrightnessPredictor:
    """A trivially constructed labeler: the probability of a pixel is its brightness."""

    crop_size, mask_size = 32, 32

    def __call__(self, crops: np.ndarray, box_areas: np.ndarray) -> np.ndarray:
        return np.stack([cv2.resize(c.mean(-1).astype(np.float32) / 255.0, (32, 32)) for c in crops])


def test_labelling_puts_the_mask_on_the_object_in_the_displayed_frame(tmp_path):
    from detectron2.data.detection_utils import read_image as d2_read_image

    path, obj, (x, y, w, h) = _bright_square_coco(tmp_path)
    np.testing.assert_array_equal(read_image(tmp_path / "sq.jpg"), d2_read_image(str(tmp_path / "sq.jpg"), "RGB"))
    ckpt = tmp_path / "dummy.pt"
    ckpt.write_bytes(b"x")  # never loaded: the predictor is injected
    options = LabelOptions(threshold=0.5, allow_skips=False)
    label_coco(path, ckpt, tmp_path / "out.json", options, predictor=BrightnessPredictor())
    out = {a["id"]: a for a in json.loads((tmp_path / "out.json").read_text())["annotations"]}
    assert out[1]["mal"]["source"] == "labeler"  # not the empty-mask box fallback
    mask = decode_segmentation(out[1]["segmentation"], 48, 48).astype(bool)
    assert not mask[:, : int(x)].any() and not mask[: int(y)].any()  # inside the box
    assert not mask[:, int(x + w) :].any() and not mask[int(y + h) :].any()
    iou = (mask & obj).sum() / (mask | obj).sum()
    assert iou > 0.9, f"mask IoU with the object {iou:.2f}"


def test_validation_checks_the_displayed_size(tmp_path):
    path, _, _ = _bright_square_coco(tmp_path)
    load_coco(path, check_images="decode")  # width/height as displayed: fine
    coco = json.loads(path.read_text())
    coco["images"][1].update(width=30, height=20)  # the stored (unrotated) size
    path.write_text(json.dumps(coco))
    with pytest.raises(CocoFormatError, match="image id=2: field 'width'/'height' 30x20"):
        load_coco(path, check_images="decode")
