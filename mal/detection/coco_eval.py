"""COCO evaluation with pycocotools (no detectron2): box and mask AP as flat JSON-able numbers.

The detector stage turns detectron2 predictions into standard COCO result records (see
:func:`mal.detection.detector.predict`) and scores them here, so the code path that produces the reported numbers is the
one the tests check with perfect predictions (100 AP).

Result record (the COCO "results" format)::

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


def load_gt(gt: str | Path | dict[str, Any]) -> COCO:
    """A pycocotools ``COCO`` object from a path or an in-memory COCO dict (quietly).

    Annotations missing ``area`` get ``w*h`` (box area) and missing ``iscrowd`` get 0 (pycocotools needs
    both).
    """
    if isinstance(gt, (str, Path)):
        path = Path(gt)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ground-truth COCO file not found")
        with path.open() as f:
            data = json.load(f)
    else:
        data = copy.deepcopy(gt)
    for key in ("images", "annotations", "categories"):
        if key not in data:
            where = gt if isinstance(gt, (str, Path)) else "<dict>"
            raise ValueError(f"ground truth {where}: missing '{key}'")
    for ann in data["annotations"]:
        ann.setdefault("iscrowd", 0)
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])
    coco = COCO()
    coco.dataset = data
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


def percent(v: float) -> float | None:
    return None if (v is None or math.isnan(v) or v < 0) else round(float(v) * 100.0, 4)


def mean_precision(ev: COCOeval, iou: Any = slice(None), area: str = "all") -> float:
    """AP as ``COCOeval.summarize`` computes it from an accumulated ``ev`` (0-1; -1 where undefined): the mean
    precision over IoU thresholds ``iou``, recall points and categories, at area range ``area`` and the last
    of ``params.maxDets``."""
    s = ev.eval["precision"][iou, :, :, ev.params.areaRngLbl.index(area), -1]
    s = s[s > -1]
    return float(np.mean(s)) if s.size else -1.0


def summary_stats(ev: COCOeval) -> list[float]:
    """``COCOeval.stats`` (12 numbers, -1 where undefined) at the *last* of ``params.maxDets`` throughout.

    ``COCOeval.summarize`` hard-codes maxDets=100 for the headline AP, which is -1 (null) for any other
    ``max_dets``; the other eleven numbers are computed as it computes them.
    """
    p, rec = ev.params, ev.eval["recall"]  # T x K x A x M (precision: T x R x K x A x M)
    area = {label: i for i, label in enumerate(p.areaRngLbl)}
    t50, t75 = (np.flatnonzero(np.isclose(p.iouThrs, t)) for t in (0.5, 0.75))

    def ap(t: Any = slice(None), a: str = "all") -> float:
        return mean_precision(ev, t, a)

    def ar(m: int = -1, a: str = "all") -> float:
        s = rec[:, :, area[a], m]
        s = s[s > -1]
        return float(np.mean(s)) if s.size else -1.0

    return [ap(), ap(t50), ap(t75), ap(a="small"), ap(a="medium"), ap(a="large"),
            ar(0), ar(1), ar(), ar(a="small"), ar(a="medium"), ar(a="large")]


def evaluate_predictions(gt: str | Path | dict[str, Any] | COCO, predictions: list[dict[str, Any]],
                         tasks: tuple[str, ...] = ("box", "mask"), max_dets: int = 100) -> dict[str, Any]:
    """COCO-evaluate ``predictions`` against ``gt``; flat ``{box_AP: .., mask_AP50: .., ...}`` in percent.

    ``tasks`` is a subset of ``("box", "mask")``. With no predictions every AP/AR is 0.0 (a model that
    detects nothing), not an error. ``num_predictions`` and ``num_gt_instances`` are included.
    """
    coco_gt = gt if isinstance(gt, COCO) else load_gt(gt)
    out: dict[str, Any] = {
        "num_predictions": len(predictions),
        "num_gt_instances": sum(1 for a in coco_gt.dataset["annotations"] if not a.get("iscrowd", 0)),
        "num_val_images": len(coco_gt.getImgIds()),
    }
    for task in tasks:
        if task not in IOU_TYPES:
            raise ValueError(f"unknown evaluation task {task!r}; expected one of {sorted(IOU_TYPES)}")
        iou_type = IOU_TYPES[task]
        if not predictions:
            out.update({f"{task}_{n}": 0.0 for n in STAT_NAMES})
            continue
        check_predictions(coco_gt, predictions, iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_dt = coco_gt.loadRes(task_predictions(predictions, iou_type))
            ev = COCOeval(coco_gt, coco_dt, iou_type)
            ev.params.maxDets = [1, 10, max_dets]
            ev.evaluate()
            ev.accumulate()
        out.update({f"{task}_{n}": percent(v) for n, v in zip(STAT_NAMES, summary_stats(ev), strict=True)})
    return out
