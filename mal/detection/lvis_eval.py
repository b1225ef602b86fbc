"""LVIS (federated) evaluation with the LVIS API (``lvis`` package), and the choice COCO vs LVIS.

LVIS v1 is annotated *federated*: per image, ``neg_category_ids`` are verified absent and
``not_exhaustive_category_ids`` are present but not every instance is labelled. The LVIS API therefore
ignores a detection of a category that is neither in the image's GT nor in its negative list, and an
unmatched detection of a not-exhaustive category -- both are false positives for COCOeval, which would
punish a detector for finding unlabelled objects. It also reports AP by category frequency: APr / APc / APf
(rare / common / frequent, from ``categories[].frequency``).

Metrics: the flat keys of :mod:`mal.detection.coco_eval` (``{box,mask}_{AP,AP50,...}``, percent) plus
``{task}_APr/APc/APf``. LVIS computes recall at one detection budget only (``max_dets``; LVIS's official
value is 300, so set ``evaluate.max_dets`` and ``detector.detections_per_image`` to 300 for LVIS): it is
``AR100`` (the last budget, as for COCO), while ``AR1`` / ``AR10`` are null.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO

from mal.detection.coco_eval import (
    IOU_TYPES,
    STAT_NAMES,
    check_predictions,
    evaluate_predictions,
    load_gt,
    percent,
    task_predictions,
)

FREQUENCY_NAMES = ("APr", "APc", "APf")
# LVISEval.results key -> our stat name ("@{max_dets}" is appended to the AR keys)
LVIS_STATS = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "APs": "APs", "APm": "APm", "APl": "APl",
              "APr": "APr", "APc": "APc", "APf": "APf", "AR": "AR100", "ARs": "ARs", "ARm": "ARm", "ARl": "ARl"}
EVALUATORS = ("auto", "coco", "lvis")


def is_lvis(data: dict[str, Any]) -> bool:
    """Whether a COCO-format dict is LVIS-style (federated): category ``frequency`` or per-image negative /
    not-exhaustive category lists."""
    return any("frequency" in c for c in data.get("categories", [])) or any(
        "neg_category_ids" in im or "not_exhaustive_category_ids" in im for im in data.get("images", []))


def _check_lvis(data: dict[str, Any], where: str) -> None:
    """The fields LVISEval needs, with a clear error naming the first image / category lacking one."""
    for c in data["categories"]:
        if c.get("frequency") not in ("r", "c", "f"):
            raise ValueError(f"{where}: LVIS category id={c['id']}: 'frequency' must be r, c or f, "
                             f"got {c.get('frequency')!r}")
    for im in data["images"]:
        for key in ("neg_category_ids", "not_exhaustive_category_ids"):
            if not isinstance(im.get(key), list):
                raise ValueError(f"{where}: LVIS image id={im['id']}: missing list '{key}'")


@contextlib.contextmanager
def _numpy_float_alias() -> Iterator[None]:
    """lvis 0.5.3 (its last release) calls ``np.float``, which NumPy 1.24 removed; aliased to ``float`` only
    while LVISEval runs."""
    added = "float" not in np.__dict__
    if added:
        np.float = float  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if added:
            del np.float


def evaluate_lvis(gt: str | Path | dict[str, Any] | COCO, predictions: list[dict[str, Any]],
                  tasks: tuple[str, ...] = ("box", "mask"), max_dets: int = 300) -> dict[str, Any]:
    """LVIS-evaluate ``predictions`` (COCO result records) against LVIS-format ``gt``: flat metrics in percent.

    Same contract as :func:`mal.detection.coco_eval.evaluate_predictions` (no predictions -> 0.0 AP), plus
    ``{task}_APr/APc/APf``; ``{task}_AR1/AR10`` are null (see the module docstring).
    """
    from lvis import LVIS, LVISEval, LVISResults  # imported here: it pulls in matplotlib

    coco_gt = gt if isinstance(gt, COCO) else load_gt(gt)  # area / iscrowd filled in as for COCO
    where = str(gt) if isinstance(gt, (str, Path)) else "<dict>"
    _check_lvis(coco_gt.dataset, where)
    lvis_gt = LVIS.__new__(LVIS)  # LVIS() only reads a path; the dict is already loaded and normalised
    lvis_gt.logger, lvis_gt.dataset = logging.getLogger("lvis.lvis"), coco_gt.dataset
    lvis_gt._create_index()
    out: dict[str, Any] = {
        "num_predictions": len(predictions),
        "num_gt_instances": len(coco_gt.dataset["annotations"]),
        "num_val_images": len(coco_gt.dataset["images"]),
    }
    for task in tasks:
        if task not in IOU_TYPES:
            raise ValueError(f"unknown evaluation task {task!r}; expected one of {sorted(IOU_TYPES)}")
        out.update({f"{task}_{n}": None for n in ("AR1", "AR10")})
        if not predictions:
            out.update({f"{task}_{n}": 0.0 for n in (*STAT_NAMES, *FREQUENCY_NAMES) if n not in ("AR1", "AR10")})
            continue
        iou_type = IOU_TYPES[task]
        check_predictions(coco_gt, predictions, iou_type)
        lvis_dt = LVISResults(lvis_gt, task_predictions(predictions, iou_type), max_dets=max_dets)
        ev = LVISEval(lvis_gt, lvis_dt, iou_type)
        ev.params.max_dets = max_dets
        with _numpy_float_alias():
            ev.run()
        res = ev.get_results()
        for key, name in LVIS_STATS.items():
            value = res[key if key.startswith("AP") else f"{key}@{max_dets}"]
            out[f"{task}_{name}"] = percent(value)
    return out


def choose_evaluator(data: dict[str, Any], evaluator: str = "auto") -> str:
    """``coco`` | ``lvis`` for a GT dict: ``auto`` = ``lvis`` when :func:`is_lvis`, else ``coco``."""
    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {EVALUATORS}, got {evaluator!r}")
    if evaluator == "auto":
        return "lvis" if is_lvis(data) else "coco"
    return evaluator


def evaluate_val(gt_path: str | Path, predictions: list[dict[str, Any]], evaluator: str = "auto",
                 max_dets: int = 100) -> tuple[str, dict[str, Any]]:
    """Score ``predictions`` on the val JSON with the COCO or LVIS API (see :func:`choose_evaluator`);
    returns ``(evaluator used, flat metrics)``."""
    path = Path(gt_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ground-truth COCO file not found")
    data = json.loads(path.read_text())
    which = choose_evaluator(data, evaluator)
    score = evaluate_lvis if which == "lvis" else evaluate_predictions
    return which, score(data, predictions, max_dets=max_dets)
