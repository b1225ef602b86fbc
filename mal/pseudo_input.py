"""Input side of pseudo-labelling: reading a COCO boxes file with clear errors, and the per-box plan.

Each annotation gets one action: ``skip`` (unknown image id, invalid bbox: listed with a reason),
``fallback`` (zero-size / outside the image / too small: kept with an empty or box mask, flagged) or
``model`` (labelled by the network).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mal.masks import box_region, clip_box_xywh


def load_boxes(path: str | Path) -> dict[str, Any]:
    """Read a COCO boxes file with clear errors (file, record id, field) for structural problems.

    Per-annotation problems that the labeller can account for (unknown image id, invalid bbox) are left
    to :func:`plan_annotations`.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: boxes file not found")
    if path.stat().st_size == 0:
        raise ValueError(
            f"{path}: boxes file is empty (expected a COCO JSON with 'images' and 'annotations')"
        )
    try:
        with path.open() as f:
            coco = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(coco, dict):
        raise ValueError(f"{path}: top level is {type(coco).__name__}, expected a COCO object")
    for key in ("images", "annotations"):
        if not isinstance(coco.get(key), list):
            raise ValueError(f"{path}: missing or non-list field '{key}'")
    seen: set[int] = set()
    for i, im in enumerate(coco["images"]):
        rid = im.get("id", f"#{i}") if isinstance(im, dict) else f"#{i}"
        if not isinstance(im, dict):
            raise ValueError(f"{path}: images[{i}] is not an object")
        for k in ("id", "width", "height"):
            v = im.get(k)
            if not isinstance(v, int) or isinstance(v, bool) or (k != "id" and v <= 0):
                raise ValueError(f"{path}: image id={rid}: field '{k}' missing or invalid ({v!r})")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise ValueError(f"{path}: image id={rid}: field 'file_name' missing or not a string")
        if im["id"] in seen:
            raise ValueError(f"{path}: image id={rid}: duplicate image id")
        seen.add(im["id"])
    seen = set()
    for i, a in enumerate(coco["annotations"]):
        if not isinstance(a, dict):
            raise ValueError(f"{path}: annotations[{i}] is not an object")
        for k in ("id", "image_id"):
            v = a.get(k)
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(
                    f"{path}: annotation id={a.get('id', f'#{i}')}: field '{k}' missing or not an int"
                )
        if a["id"] in seen:
            raise ValueError(f"{path}: annotation id={a['id']}: duplicate annotation id")
        seen.add(a["id"])
    return coco


def _valid_bbox(b: Any) -> bool:
    return (
        isinstance(b, (list, tuple))
        and len(b) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in b)
        and b[2] >= 0
        and b[3] >= 0
    )


@dataclass
class BoxPlan:
    """What happens to one annotation: ``action`` in {"model", "fallback", "skip"}."""

    ann_index: int
    action: str
    reason: str | None
    box: list[float] | None  # clipped xywh
    clipped: bool = False


def plan_annotations(coco: dict[str, Any], min_box_side: float = 2.0) -> dict[int, list[BoxPlan]]:
    """Decide per annotation, grouped by image id (skips of unknown image ids under their own image id).

    Order of checks: unknown image id / invalid bbox (skip) -> zero-size box (empty mask) -> box entirely
    outside the image (empty mask) -> w or h (clipped) below ``min_box_side`` (box mask) -> labeler.
    """
    images = {im["id"]: im for im in coco["images"]}
    plans: dict[int, list[BoxPlan]] = {}
    for i, a in enumerate(coco["annotations"]):
        im = images.get(a["image_id"])
        if im is None:
            p = BoxPlan(i, "skip", "unknown_image_id", None)
        elif not _valid_bbox(a.get("bbox")):
            p = BoxPlan(i, "skip", "invalid_bbox", None)
        else:
            w, h = int(im["width"]), int(im["height"])
            box = clip_box_xywh(a["bbox"], w, h)
            clipped = [round(v, 6) for v in box] != [round(float(v), 6) for v in a["bbox"]]
            x0, y0, x1, y1 = box_region(box, w, h)
            if float(a["bbox"][2]) == 0 or float(a["bbox"][3]) == 0:
                p = BoxPlan(i, "fallback", "zero_size", box, clipped)
            elif x1 <= x0 or y1 <= y0 or box[2] <= 0 or box[3] <= 0:
                p = BoxPlan(i, "fallback", "outside_image", box, clipped)
            elif box[2] < min_box_side or box[3] < min_box_side:
                p = BoxPlan(i, "fallback", "too_small", box, clipped)
            else:
                p = BoxPlan(i, "model", None, box, clipped)
        plans.setdefault(a["image_id"], []).append(p)
    return plans
