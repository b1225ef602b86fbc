"""Helpers for the pseudo-label tests: a tiny random labeler checkpoint, fake predictors, tiny COCO sets."""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

TINY_CFG = {"encoder": "vit_tiny_patch16_224", "crop_size": 32, "decoder_dim": 32}


@functools.lru_cache(maxsize=1)
def tiny_checkpoint() -> Path:
    """A randomly initialised ViT-Tiny labeler at 32 px crops (student != teacher), saved once per session."""
    import torch

    from mal.labeler.model import build_labeler, save_checkpoint

    torch.manual_seed(0)
    student = build_labeler(TINY_CFG)
    teacher = build_labeler(TINY_CFG)
    tmp = tempfile.mkdtemp(prefix="mal_tiny_ckpt_")
    atexit.register(shutil.rmtree, tmp, True)
    path = Path(tmp) / "checkpoint.pt"
    save_checkpoint(path, student, teacher, TINY_CFG, {"epoch": 1})
    return path


class ConstPredictor:
    """Stands in for :class:`mal.pseudo.label.Predictor`: every crop gets probability ``value``."""

    def __init__(self, value: float = 1.0, crop_size: int = 16, mask_size: int = 8):
        self.value, self.crop_size, self.mask_size = value, crop_size, mask_size
        self.calls: list[int] = []

    def __call__(self, crops: np.ndarray, box_areas: np.ndarray) -> np.ndarray:
        assert crops.dtype == np.uint8 and crops.shape[1:] == (self.crop_size, self.crop_size, 3)
        assert len(box_areas) == len(crops)
        self.calls.append(len(crops))
        return np.full((len(crops), self.mask_size, self.mask_size), self.value, np.float32)


def write_coco(
    root: Path, images: list[dict[str, Any]], annotations: list[dict[str, Any]], name: str = "boxes.json"
) -> Path:
    """Write a COCO boxes file (one category) to ``root/name``."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    path.write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]})
    )
    return path


def save_image(
    root: Path,
    image_id: int,
    array: np.ndarray | None = None,
    mode: str = "RGB",
    size: tuple[int, int] = (40, 30),
) -> dict[str, Any]:
    """Save an image (``size`` = (w, h)) in PIL ``mode`` and return its COCO image record."""
    name = f"im{image_id}"
    w, h = size
    if array is None:
        rng = np.random.default_rng(image_id)
        array = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(array)
    if mode == "I;16":
        img = Image.fromarray(array[..., 0].astype(np.uint16) * 257)
    elif mode != "RGB":
        img = img.convert(mode)
    ext = ".jpg" if mode == "CMYK" else ".png"
    (root / "imgs").mkdir(parents=True, exist_ok=True)
    img.save(root / "imgs" / f"{name}{ext}")
    return {"id": image_id, "file_name": f"imgs/{name}{ext}", "width": w, "height": h}


def ann(ann_id: int, image_id: int, bbox: list[float], **extra: Any) -> dict[str, Any]:
    return {
        "id": ann_id,
        "image_id": image_id,
        "category_id": 1,
        "bbox": bbox,
        "iscrowd": 0,
        "area": float(bbox[2] * bbox[3]) if len(bbox) == 4 else 0.0,
        **extra,
    }
