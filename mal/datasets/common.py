"""Helpers shared by the dataset builders: mask -> COCO annotation, PNG writing, split writing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

from mal.common.files import write_json_atomic


def mask_to_annotation(mask: np.ndarray, ann_id: int, image_id: int, category_id: int) -> dict[str, Any]:
    """COCO annotation (RLE with string counts, tight bbox, mask area) for a binary ``H x W`` mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": category_id,
        "bbox": [float(x0), float(y0), float(x1 - x0), float(y1 - y0)],
        "area": float(mask.sum()),
        "iscrowd": 0,
        "segmentation": rle,
    }


def save_png(array: np.ndarray, path: Path) -> None:
    """Write an 8-bit gray (H x W) or RGB (H x W x 3) PNG, creating parent folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def strip_masks(coco: dict[str, Any]) -> dict[str, Any]:
    """What a box-supervised user has: the same COCO dict without any ``segmentation``."""
    out = dict(coco)
    out["annotations"] = [{k: v for k, v in a.items() if k != "segmentation"} for a in coco["annotations"]]
    return out


def write_splits(out_dir: Path, train: dict[str, Any], val: dict[str, Any]) -> None:
    """Write train_gt.json, train_boxes.json (masks removed) and val_gt.json atomically."""
    write_json_atomic(out_dir / "train_gt.json", train)
    write_json_atomic(out_dir / "train_boxes.json", strip_masks(train))
    write_json_atomic(out_dir / "val_gt.json", val)
