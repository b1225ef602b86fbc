"""COCO files: loading and validation (writing: :mod:`mal.common.files`, images: :mod:`mal.common.images`).

Every COCO file the project reads goes through :func:`load_coco`, which either raises
:class:`CocoFormatError` naming the file, the record and the field, or fixes the problem in a
counted way (see :class:`ValidationReport`). Nothing is dropped silently.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mal.common.images import image_path, read_image

REQUIRED_IMAGE_KEYS = {"id": int, "file_name": str, "width": int, "height": int}
REQUIRED_ANN_KEYS = {"id": int, "image_id": int, "category_id": int, "bbox": list}
REQUIRED_CAT_KEYS = {"id": int, "name": str}


class CocoFormatError(ValueError):
    """A COCO file that cannot be used; the message names file, record and field."""


@dataclass
class ValidationReport:
    """Counted, non-fatal fixes and observations made while loading a COCO file."""

    path: str
    warnings: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def warn(self, kind: str, message: str) -> None:
        self.warnings[kind] += 1
        self.examples.setdefault(kind, message)

    def as_dict(self) -> dict[str, Any]:
        return {"warnings": dict(self.warnings), "examples": dict(self.examples)}


def _is_type(value: Any, typ: type) -> bool:
    if typ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, typ)


def _check_keys(path: str, section: str, record: Any, idx: int, required: dict[str, type]) -> None:
    if not isinstance(record, dict):
        raise CocoFormatError(f"{path}: {section}[{idx}] is {type(record).__name__}, expected an object")
    rid = record.get("id", f"#{idx}")
    for key, typ in required.items():
        if key not in record:
            raise CocoFormatError(f"{path}: {section} id={rid}: missing field '{key}'")
        if not _is_type(record[key], typ):
            raise CocoFormatError(
                f"{path}: {section} id={rid}: field '{key}' is {type(record[key]).__name__} "
                f"({record[key]!r:.40}), expected {typ.__name__}"
            )


def _decode_check(path: str, ann: dict[str, Any], height: int, width: int) -> None:
    """Raise CocoFormatError if ``ann['segmentation']`` does not decode to an ``height x width`` mask.

    Stricter than the reader (:func:`~mal.common.masks.segmentation_to_rle`), which skips degenerate
    polygons: here every polygon must be well formed.
    """
    from pycocotools import mask as mask_utils

    from mal.common.masks import segmentation_to_rle  # lazy: OpenCV only when masks are checked

    seg = ann["segmentation"]
    where = f"{path}: annotation id={ann['id']}: field 'segmentation'"
    try:
        if isinstance(seg, list):
            if not seg:
                raise ValueError("empty polygon list")
            for poly in seg:
                if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
                    raise ValueError("each polygon must be a flat list of >= 3 x,y pairs")
                if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in poly):
                    raise ValueError("polygon coordinates must be finite numbers")
        rle = segmentation_to_rle(seg, height, width, where="")
        if isinstance(seg, dict) and mask_utils.decode(rle).shape[:2] != (height, width):
            raise ValueError("RLE decodes to the wrong shape")
    except Exception as e:  # pycocotools raises bare Exceptions / TypeErrors on bad input
        raise CocoFormatError(f"{where}: does not decode ({e})") from e


def read_coco_json(path: str | Path, what: str = "COCO file") -> Any:
    """Parse a JSON file; ``CocoFormatError`` naming the file when it is missing, empty or not JSON."""
    path = Path(path)
    if not path.is_file():
        raise CocoFormatError(f"{path}: {what} not found")
    if path.stat().st_size == 0:
        raise CocoFormatError(f"{path}: {what} is empty (expected a COCO JSON object with 'images' and 'annotations')")
    try:
        with path.open() as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoFormatError(f"{path}: not valid JSON ({e})") from e


def check_records(
    coco: Any, path: str | Path, with_categories: bool = True
) -> tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The structural checks every COCO reader shares; returns ``(images by id, categories by id)``.

    Top-level lists; per image id/file_name/width/height (typed, positive, unique); per annotation id and
    image_id (typed, ids unique) -- plus category_id/bbox and the categories list when ``with_categories``.
    What an annotation *refers to* (known image, valid box) is the caller's policy: an error for
    :func:`validate_coco`, an accounted skip for the pseudo-labeller.
    """
    path = str(path)
    if not isinstance(coco, dict):
        raise CocoFormatError(f"{path}: top level is {type(coco).__name__}, expected a COCO object")
    for key in ("images", "annotations") + (("categories",) if with_categories else ()):
        if key not in coco:
            raise CocoFormatError(f"{path}: missing top-level field '{key}'")
        if not isinstance(coco[key], list):
            raise CocoFormatError(f"{path}: top-level field '{key}' is {type(coco[key]).__name__}, expected a list")
    images: dict[int, dict[str, Any]] = {}
    for i, img in enumerate(coco["images"]):
        _check_keys(path, "image", img, i, REQUIRED_IMAGE_KEYS)
        if img["id"] in images:
            raise CocoFormatError(f"{path}: image id={img['id']}: duplicate id")
        if img["width"] <= 0 or img["height"] <= 0:
            raise CocoFormatError(f"{path}: image id={img['id']}: field 'width'/'height' must be positive")
        if not img["file_name"]:
            raise CocoFormatError(f"{path}: image id={img['id']}: field 'file_name' is empty")
        images[img["id"]] = img
    categories: dict[int, dict[str, Any]] = {}
    for i, cat in enumerate(coco["categories"] if with_categories else []):
        _check_keys(path, "category", cat, i, REQUIRED_CAT_KEYS)
        if cat["id"] in categories:
            raise CocoFormatError(f"{path}: category id={cat['id']}: duplicate id")
        categories[cat["id"]] = cat
    ann_keys = REQUIRED_ANN_KEYS if with_categories else {"id": int, "image_id": int}
    seen: set[int] = set()
    for i, ann in enumerate(coco["annotations"]):
        _check_keys(path, "annotation", ann, i, ann_keys)
        if ann["id"] in seen:
            raise CocoFormatError(f"{path}: annotation id={ann['id']}: duplicate id")
        seen.add(ann["id"])
    return images, categories


def validate_coco(
    coco: Any,
    path: str | Path = "<memory>",
    image_root: str | Path | None = None,
    check_images: str = "exists",
    require_masks: bool = False,
) -> tuple[dict[str, Any], ValidationReport]:
    """Validate a COCO dict; return a cleaned deep-ish copy and the report of counted fixes.

    Fatal (``CocoFormatError`` naming file, record id and field): missing or ill-typed keys,
    duplicate ids, annotations pointing to unknown images or categories, non-finite or malformed
    boxes, non-positive image sizes, masks that do not decode, missing/unreadable image files
    (``check_images``: "none" | "exists" | "decode").
    Counted (report.warnings): boxes clipped to the image, boxes with zero/negative size after
    clipping (kept, flagged ``"mal_invalid_box"``), defaulted ``iscrowd``/``area``.
    """
    path = str(path)
    report = ValidationReport(path)
    images, categories = check_records(coco, path)
    anns = []
    for ann in coco["annotations"]:
        aid = ann["id"]
        if ann["image_id"] not in images:
            raise CocoFormatError(f"{path}: annotation id={aid}: field 'image_id' = {ann['image_id']} is not an image id")
        if ann["category_id"] not in categories:
            raise CocoFormatError(
                f"{path}: annotation id={aid}: field 'category_id' = {ann['category_id']} is not a category id"
            )
        bbox = ann["bbox"]
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox):
            raise CocoFormatError(f"{path}: annotation id={aid}: field 'bbox' must be 4 numbers [x, y, w, h]")
        if not all(np.isfinite(v) for v in bbox):
            raise CocoFormatError(f"{path}: annotation id={aid}: field 'bbox' has non-finite values {bbox}")
        ann = dict(ann)
        img = images[ann["image_id"]]
        x, y, w, h = (float(v) for v in bbox)
        x0, y0 = max(x, 0.0), max(y, 0.0)
        x1, y1 = min(x + w, float(img["width"])), min(y + h, float(img["height"]))
        if (x0, y0, x1, y1) != (x, y, x + w, y + h) and w > 0 and h > 0:
            report.warn("box_clipped", f"annotation id={aid}: bbox {bbox} clipped to image {img['width']}x{img['height']}")
        cw, ch = max(x1 - x0, 0.0), max(y1 - y0, 0.0)
        ann["bbox"] = [x0, y0, cw, ch] if w > 0 and h > 0 else [x, y, w, h]
        if cw <= 0 or ch <= 0:
            kind = "box_zero_size" if w <= 0 or h <= 0 else "box_outside_image"
            report.warn(kind, f"annotation id={aid}: bbox {bbox} has no area inside the image")
            ann["mal_invalid_box"] = kind
        if "iscrowd" not in ann:
            ann["iscrowd"] = 0
            report.warn("iscrowd_defaulted", f"annotation id={aid}: no 'iscrowd', set to 0")
        elif ann["iscrowd"] not in (0, 1, True, False):
            raise CocoFormatError(f"{path}: annotation id={aid}: field 'iscrowd' must be 0 or 1, got {ann['iscrowd']!r}")
        ann["iscrowd"] = int(ann["iscrowd"])
        if "segmentation" in ann and ann["segmentation"] is not None:
            _decode_check(path, ann, img["height"], img["width"])
        elif require_masks:
            raise CocoFormatError(f"{path}: annotation id={aid}: missing field 'segmentation' (masks are required here)")
        if not isinstance(ann.get("area"), (int, float)):
            ann["area"] = cw * ch
            report.warn("area_defaulted", f"annotation id={aid}: no numeric 'area', set to the box area")
        anns.append(ann)

    if check_images != "none":
        for img in images.values():
            p = image_path(path, img, image_root)
            if not p.is_file():
                raise CocoFormatError(f"{path}: image id={img['id']}: field 'file_name': file {p} not found")
            if check_images == "decode":
                try:
                    shape = read_image(p).shape[:2]
                except ValueError as e:
                    raise CocoFormatError(f"{path}: image id={img['id']}: field 'file_name': {e}") from e
                if shape != (img["height"], img["width"]):  # both in the displayed (EXIF-rotated) frame
                    raise CocoFormatError(
                        f"{path}: image id={img['id']}: field 'width'/'height' {img['width']}x{img['height']}: "
                        f"image {p} is {shape[1]}x{shape[0]} (as displayed, EXIF orientation applied)"
                    )
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations", "categories")}
    out.update(images=list(images.values()), annotations=anns, categories=list(categories.values()))
    return out, report


def load_coco(
    path: str | Path,
    image_root: str | Path | None = None,
    check_images: str = "exists",
    require_masks: bool = False,
) -> tuple[dict[str, Any], ValidationReport]:
    """Read and validate a COCO JSON file (see :func:`validate_coco`)."""
    coco = read_coco_json(path)
    return validate_coco(coco, path, image_root, check_images, require_masks)
