"""Input side of pseudo-labelling: reading a COCO boxes file with clear errors, and the per-box plan.

Each annotation gets one action: ``skip`` (unknown image id, invalid bbox: listed with a reason),
``fallback`` (zero-size / outside the image / too small: kept with an empty or box mask, flagged) or
``model`` (labelled by the network).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mal.common.boxes import box_region, clip_box_xywh
from mal.common.coco_io import check_records, read_coco_json


def load_boxes(path: str | Path) -> dict[str, Any]:
    """Read a COCO boxes file with clear errors (file, record id, field) for structural problems
    (:func:`mal.common.coco_io.check_records`; categories optional, masks ignored).

    Per-annotation problems that the labeller can account for (unknown image id, invalid bbox) are left
    to :func:`plan_annotations`.
    """
    coco = read_coco_json(path, "boxes file")
    check_records(coco, path, with_categories=False)
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
