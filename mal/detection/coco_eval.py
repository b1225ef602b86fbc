"""COCO helpers on pycocotools alone (no detectron2): ground truth, result records, the flat metrics keys.

The evaluate stage scores with detectron2's evaluators (:mod:`mal.detection.evaluation`); the paper table's
bootstrap (mal/report) re-scores the saved predictions with pycocotools through these helpers.

Result record (the COCO "results" format, as detectron2's ``instances_to_coco_json`` writes it)::

    {"image_id": int, "category_id": int (the dataset's own id), "bbox": [x, y, w, h], "score": float,
     "segmentation": RLE dict {"size": [h, w], "counts": str}}   # segmentation only for mask results

Flat metrics: ``{prefix}_{name}`` for prefix in ``box``/``mask`` and name in :data:`STAT_NAMES`, in percent
(0-100, like detectron2). A statistic COCO cannot compute (e.g. APl when the set has no large objects) is
``None`` (JSON null), never a made-up number.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

# Order of COCOeval.stats; the "100" of AP/AR100 is the configured ``max_dets`` (COCO's default 100).
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
IOU_TYPES = {"box": "bbox", "mask": "segm"}


def read_gt(gt: str | Path | dict[str, Any] | COCO) -> dict[str, Any]:
    """A COCO ground-truth dict from a path, a dict or a ``COCO`` (copied), with ``area`` (box ``w*h``) and ``iscrowd`` (0)
    filled in where missing (pycocotools needs both)."""
    if isinstance(gt, (str, Path)):
        path = Path(gt)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ground-truth COCO file not found")
        with path.open() as f:
            data = json.load(f)
    else:
        data = copy.deepcopy(gt.dataset if isinstance(gt, COCO) else gt)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            where = gt if isinstance(gt, (str, Path)) else "<dict>"
            raise ValueError(f"ground truth {where}: missing '{key}'")
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    return data


def load_gt(gt: str | Path | dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` object from a path or an in-memory COCO dict (quietly), see :func:`read_gt`."""
    coco = COCO()
    coco.dataset = read_gt(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def gt_as_predictions(gt: COCO, score: float = 1.0) -> list[dict[str, Any]]:
    """The non-crowd ground truth as result records (RLE masks): a perfect detector, for tests."""
    out = []
    for ann in gt.dataset["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        rec = {"image_id": ann["image_id"], "category_id": ann["category_id"],
               "bbox": [float(v) for v in ann["bbox"]], "score": float(score)}
        if "segmentation" in ann:
            rle = gt.annToRLE(ann)
            if isinstance(rle["counts"], bytes):
                rle = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
            rec["segmentation"] = rle
        out.append(rec)
    return out


def check_predictions(gt: COCO, predictions: list[dict[str, Any]], iou_type: str) -> None:
    """Each record has the fields ``iou_type`` needs and ids of the ground truth; else a ValueError naming it."""
    img_ids = set(gt.getImgIds())
    cat_ids = set(gt.getCatIds())
    for i, p in enumerate(predictions):
        for key in ("image_id", "category_id", "bbox", "score"):
            if key not in p:
                raise ValueError(f"prediction #{i}: missing field '{key}'")
        if p["image_id"] not in img_ids:
            raise ValueError(f"prediction #{i}: image_id {p['image_id']} is not in the ground truth")
        if p["category_id"] not in cat_ids:
            raise ValueError(f"prediction #{i}: category_id {p['category_id']} is not in the ground truth")
        if iou_type == "segm" and "segmentation" not in p:
            raise ValueError(f"prediction #{i}: missing field 'segmentation' (needed for mask AP)")


def task_predictions(predictions: list[dict[str, Any]], iou_type: str) -> list[dict[str, Any]]:
    """Copies of ``predictions`` with only ``iou_type``'s geometry (``bbox`` | ``segm``).

    As detectron2's COCOEvaluator: each task sees only its own geometry, so that a detection's area (for
    APs/m/l) is the box area for box AP and the mask area for mask AP.
    """
    preds = copy.deepcopy(predictions)
    for p in preds:
        p.pop("segmentation" if iou_type == "bbox" else "bbox", None)
    return preds


def percent(v: float | None) -> float | None:
    """A 0-1 statistic in percent, 4 decimals; ``None`` where COCO / LVIS could not compute it (-1 or NaN)."""
    return None if (v is None or math.isnan(v) or v < 0) else round(float(v) * 100.0, 4)


def mean_precision(ev: COCOeval, iou: Any = slice(None), area: str = "all") -> float:
    """AP as ``COCOeval.summarize`` computes it from an accumulated ``ev`` (0-1; -1 where undefined): the mean
    precision over IoU thresholds ``iou``, recall points and categories, at area range ``area`` and the last
    of ``params.maxDets``."""
    s = ev.eval["precision"][iou, :, :, ev.params.areaRngLbl.index(area), -1]
    s = s[s > -1]
    return float(np.mean(s)) if s.size else -1.0
