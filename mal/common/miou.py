"""Mask IoU of instances and its summary (the paper's class-averaged mIoU): one implementation for the
labeler's validation (:mod:`mal.labeler.evaluate`) and the pseudo-label quality stage (:mod:`mal.pseudo.quality`).

Per instance, IoU is computed on full-image COCO RLEs by :func:`mal.common.masks.rle_iou`; an instance whose
prediction and GT are both empty scores 0 (an empty GT mask cannot be segmented correctly, and a box with
no mask should not raise the mean).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np

from mal.common.masks import rle_area, rle_iou

SMALL, MEDIUM = 32**2, 96**2  # COCO's area thresholds (pixels of the GT mask)


def iou_record(pred: dict[str, Any], gt: dict[str, Any], ann: dict[str, Any]) -> dict[str, Any]:
    """``{id, category_id, gt_area, iou}`` of one instance: ``pred`` and ``gt`` are same-size RLEs, ``ann``
    the GT annotation (its id and category)."""
    return {
        "id": int(ann["id"]),
        "category_id": int(ann["category_id"]),
        "gt_area": rle_area(gt),
        "iou": rle_iou(pred, gt),
    }


def summarize(records: list[dict[str, Any]], cat_names: dict[int, str]) -> dict[str, Any]:
    """Aggregate per-instance records ``{category_id, gt_area, iou}`` into the metric dict.

    ``miou``: mean over categories of the per-category mean IoU; ``miou_instance``: mean over instances;
    ``miou_small/medium/large``: instance mean by GT area (< 32², < 96², >= 96²); ``per_class``:
    ``{name: {"miou", "count"}}``. Means over no instance are ``None``.
    """

    def mean(vals: list[float]) -> float | None:
        return float(np.mean(vals)) if vals else None

    by_cat: dict[int, list[float]] = defaultdict(list)
    for r in records:
        by_cat[r["category_id"]].append(r["iou"])
    per_class = {
        cat_names.get(c, str(c)): {"miou": float(np.mean(v)), "count": len(v)}
        for c, v in sorted(by_cat.items())
    }
    ious = [r["iou"] for r in records]
    return {
        "miou": mean([float(np.mean(v)) for v in by_cat.values()]),
        "miou_instance": mean(ious),
        "miou_small": mean([r["iou"] for r in records if r["gt_area"] < SMALL]),
        "miou_medium": mean([r["iou"] for r in records if SMALL <= r["gt_area"] < MEDIUM]),
        "miou_large": mean([r["iou"] for r in records if r["gt_area"] >= MEDIUM]),
        "num_instances": len(records),
        "per_class": per_class,
    }
