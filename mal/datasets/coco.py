"""Any COCO-format set (COCO 2017, LVIS v1, a user's own), referenced in place, not copied.

Image ``file_name`` entries are rewritten to absolute paths so the prepared JSONs follow the
project's image-path rule (``dirname(json) / file_name`` — an absolute file_name wins).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mal.common.coco_io import ValidationReport, load_coco, write_json_atomic
from mal.datasets.common import strip_masks


def _absolute(coco: dict[str, Any], image_root: Path) -> dict[str, Any]:
    out = dict(coco)
    out["images"] = [dict(img, file_name=str((image_root / img["file_name"]).resolve())) for img in coco["images"]]
    return out


def build_coco(out_dir: str | Path, train_json: str | None, train_images: str | None, val_json: str | None,
               val_images: str | None, check_images: str = "exists") -> dict[str, Any]:
    """Validate the user's files and write train_boxes/train_gt/val_gt JSONs; return validation reports."""
    missing = [k for k, v in {"train_json": train_json, "train_images": train_images, "val_json": val_json,
                              "val_images": val_images}.items() if not v]
    if missing:
        raise ValueError(f"params.yaml: data.coco.{', data.coco.'.join(missing)} must be set for dataset 'coco'")
    out_dir = Path(out_dir)
    reports: dict[str, ValidationReport] = {}
    train, reports["train"] = load_coco(train_json, image_root=train_images, check_images=check_images)
    val, reports["val"] = load_coco(val_json, image_root=val_images, check_images=check_images)
    train, val = _absolute(train, Path(train_images)), _absolute(val, Path(val_images))
    has_train_masks = all("segmentation" in a for a in train["annotations"])
    write_json_atomic(out_dir / "train_gt.json", train)
    write_json_atomic(out_dir / "train_boxes.json", strip_masks(train))
    write_json_atomic(out_dir / "val_gt.json", val)
    # The images stay where they are; this note keeps data/prepared/images (a DVC dep of later stages) present.
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "images" / "REFERENCED.txt").write_text(
        f"images are referenced in place, not copied:\ntrain: {Path(train_images).resolve()}\n"
        f"val: {Path(val_images).resolve()}\n")
    return {"reports": reports, "has_train_masks": has_train_masks}
