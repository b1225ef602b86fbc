"""The labeler's validation and pseudo-labelling are one engine: the same boxes get the same masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mal.config.pseudo import LabelOptions, RunPseudoLabelParams
from mal.labeler.data import BoxCropDataset, box_records
from mal.labeler.evaluate import evaluate_labeler
from mal.labeler.model import input_norm, load_labeler
from mal.pseudo.shards import label_coco
from tests._pseudo_fixtures import ann, save_image, tiny_checkpoint, write_coco

THRESHOLD = 0.497  # the random tiny labeler's probabilities sit around 0.49: labels and empty-prediction fallbacks
BOXES = [
    [4, 3, 20, 15],
    [10.5, 6.25, 12, 18],
    [30, 20, 25, 25],  # partly outside: clipped (window, area bucket and paste of the clipped box)
    [-6, -4, 14, 12],  # partly outside at the origin
    [3, 3, 1.5, 8],  # too small: box fallback
    [0, 0, 40, 30],
    [22.3, 1.7, 9.1, 27.6],
]


def _poly(box: list[float]) -> list[list[float]]:
    x, y, w, h = box
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, 40), min(y + h, 30)
    return [[x0 + 1, y0 + 1, x1 - 1, y0 + 1, (x0 + x1) / 2, y1 - 1]]  # a triangle: partial masks score < 1


def test_validation_masks_equal_pseudo_label_masks_box_for_box(tmp_path: Path) -> None:
    images = [save_image(tmp_path, i, np.random.default_rng(i).integers(0, 255, (30, 40, 3), dtype=np.uint8))
              for i in (1, 2)]
    anns = [ann(10 * i + k, i, b, segmentation=_poly(b)) for i in (1, 2) for k, b in enumerate(BOXES)]
    path = write_coco(tmp_path, images, anns)
    ckpt = tiny_checkpoint()

    label_coco(path, ckpt, tmp_path / "pseudo.json", LabelOptions(threshold=THRESHOLD, batch_size=5),
               RunPseudoLabelParams(device="cpu", show_progress=False))
    pseudo = {a["id"]: a for a in json.loads((tmp_path / "pseudo.json").read_text())["annotations"]}

    model, cfg = load_labeler(ckpt, "student")
    ds = BoxCropDataset(box_records(json.loads(path.read_text()), path), cfg["crop_size"], cfg["mask_size"],
                        train=False, norm=input_norm(cfg))
    masks: dict[int, dict] = {}
    val = evaluate_labeler(model, ds, threshold=THRESHOLD, batch_size=3, masks_out=masks)

    assert sorted(masks) == sorted(pseudo) == sorted(a["id"] for a in anns) and val["val_boxes"] == len(anns)
    for ann_id, got in masks.items():
        assert got == pseudo[ann_id]["segmentation"], f"annotation id={ann_id}: validation mask != pseudo-label"
    sources = {(a["mal"]["source"], a["mal"].get("reason")) for a in pseudo.values()}
    assert {("labeler", None), ("box_fallback", "too_small"), ("box_fallback", "empty_prediction")} <= sources
    assert sum("clipped_from" in a["mal"] for a in pseudo.values()) == 4
    assert 0.0 < val["val_miou"] < 1.0
