"""Any COCO-format set (COCO 2017, LVIS v1, a user's own), referenced in place, not copied.

Image ``file_name``s stay relative to the user's image folders (``data.coco.train_images`` / ``val_images``,
see :meth:`mal.config.data.DataParams.image_root`): the prepared JSONs hold no machine-specific path, so a run-cache
entry made on one machine is valid on another where the same params name the same data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mal.common.coco_io import ValidationReport, read_coco_json, validate_coco
from mal.common.files import write_json_atomic
from mal.config.data import PLACEHOLDER as PLACEHOLDER_PATH
from mal.datasets.common import strip_masks

PLACEHOLDER = Path(PLACEHOLDER_PATH).name  # what data.coco.* name with a built-in dataset


def build_coco(out_dir: str | Path, train_json: str | None, train_images: str | None, val_json: str | None,
               val_images: str | None, check_images: str = "exists") -> dict[str, Any]:
    """Validate the user's files and write train_boxes/train_gt/val_gt JSONs; return validation reports."""
    # unset, or still the placeholder params.yaml ships for the built-in sets (DVC needs an existing path)
    missing = [k for k, v in {"train_json": train_json, "train_images": train_images, "val_json": val_json,
                              "val_images": val_images}.items() if not v or Path(v).name == PLACEHOLDER]
    if missing:
        raise ValueError(f"params.yaml: data.coco.{', data.coco.'.join(missing)} must be set for dataset 'coco'")
    for key, value, want_dir in (("train_json", train_json, False), ("train_images", train_images, True),
                                 ("val_json", val_json, False), ("val_images", val_images, True)):
        if want_dir != Path(value).is_dir() or not Path(value).exists():
            raise ValueError(f"params.yaml: data.coco.{key} = {value!r} is not an existing "
                             f"{'folder of images' if want_dir else 'COCO JSON file'}")
    out_dir = Path(out_dir)
    reports: dict[str, ValidationReport] = {}
    train, reports["train"] = _load(train_json, train_images, check_images)
    val, reports["val"] = _load(val_json, val_images, check_images)
    has_train_masks = all("segmentation" in a for a in train["annotations"])
    write_json_atomic(out_dir / "train_gt.json", train)
    write_json_atomic(out_dir / "train_boxes.json", strip_masks(train))
    write_json_atomic(out_dir / "val_gt.json", val)
    # The images stay where they are; this note keeps data/prepared/images (a DVC dep of later stages) present.
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    (out_dir / "images" / "REFERENCED.txt").write_text(
        f"images are referenced in place, not copied (params data.coco):\ntrain: {train_images}\n"
        f"val: {val_images}\n")
    return {"reports": reports, "has_train_masks": has_train_masks}


def _load(path: str, image_root: str, check_images: str) -> tuple[dict[str, Any], ValidationReport]:
    coco = read_coco_json(path)
    lvis_file_names(coco)
    return validate_coco(coco, path, image_root, check_images)


def lvis_file_names(coco: Any) -> int:
    """Give LVIS v1 images (``coco_url``, no ``file_name``) the ``file_name`` ``<split>/<name>.jpg`` taken from
    the URL, as detectron2's LVIS loader does: LVIS val draws on COCO's train2017 *and* val2017 images, so
    ``data.coco.*_images`` name the COCO root that holds both folders. Returns how many were filled in."""
    filled = 0
    for img in coco.get("images", []) if isinstance(coco, dict) else []:
        url = img.get("coco_url") if isinstance(img, dict) else None
        if not img.get("file_name") and isinstance(url, str) and url:
            img["file_name"] = "/".join(urlparse(url).path.split("/")[-2:])
            filled += 1
    return filled
