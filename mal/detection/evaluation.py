"""Scoring a detector with detectron2: ``inference_on_dataset`` with ``COCOEvaluator`` (the official pycocotools
implementation, ``use_fast_impl=False``, ``max_dets_per_image``) or ``LVISEvaluator`` for an LVIS-style val set.

The adapter keeps what those evaluators compute but do not return, and nothing more:

- the COCO result records (dataset category ids): the predictions file the paper table re-scores;
- every ``COCOeval.stats`` number (detectron2 returns AP..APl; the AR1..ARl are ours too): with
  ``max_dets_per_image`` other than 100 detectron2 summarises with its ``COCOevalMaxDets``, so the headline AP
  is computed at that budget;
- LVIS's recall at its one budget (AR@max_dets, ARs/m/l); detectron2 returns its APs only, so the LVIS
  evaluator's per-task scoring (ids unmapped, LVISResults, LVISEval) is done here with the results kept.

LVIS v1 is annotated *federated* (per image ``neg_category_ids`` verified absent, ``not_exhaustive_category_ids``
not fully labelled): the LVIS API ignores detections COCOeval would count as false positives, and reports AP by
category frequency (APr / APc / APf). LVIS has one detection budget: ``AR100`` is recall at ``max_dets`` and
``AR1`` / ``AR10`` are null. Flat metric keys: :mod:`mal.detection.coco_eval`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from detectron2.config import CfgNode
from detectron2.data import DatasetCatalog, build_detection_test_loader
from detectron2.evaluation import COCOEvaluator, LVISEvaluator, inference_on_dataset
from pycocotools.coco import COCO

from mal.config.detector import EvaluateParams
from mal.detection.coco_eval import IOU_TYPES, STAT_NAMES, check_predictions, load_gt, percent, read_gt, task_predictions
from mal.detection.detector import load_model, register_json

EVALUATORS = ("auto", "coco", "lvis")
FREQUENCY_NAMES = ("APr", "APc", "APf")
# LVISEval.results key -> our stat name ("@{max_dets}" is appended to the AR keys)
LVIS_STATS = {"AP": "AP", "AP50": "AP50", "AP75": "AP75", "APs": "APs", "APm": "APm", "APl": "APl",
              "APr": "APr", "APc": "APc", "APf": "APf", "AR": "AR100", "ARs": "ARs", "ARm": "ARm", "ARl": "ARl"}
TASKS = {v: k for k, v in IOU_TYPES.items()}  # detectron2 task -> our prefix


def is_lvis(data: dict[str, Any]) -> bool:
    """Whether a COCO-format dict is LVIS-style (federated): category ``frequency`` or per-image negative /
    not-exhaustive category lists."""
    return any("frequency" in c for c in data.get("categories", [])) or any(
        "neg_category_ids" in im or "not_exhaustive_category_ids" in im for im in data.get("images", []))


def choose_evaluator(data: dict[str, Any], evaluator: str = "auto") -> str:
    """``coco`` | ``lvis`` for a GT dict: ``auto`` = ``lvis`` when :func:`is_lvis`, else ``coco``."""
    if evaluator not in EVALUATORS:
        raise ValueError(f"evaluator must be one of {EVALUATORS}, got {evaluator!r}")
    if evaluator == "auto":
        return "lvis" if is_lvis(data) else "coco"
    return evaluator


def check_lvis(data: dict[str, Any], where: str) -> None:
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


class _KeepRecords:
    """What both evaluators share: the result records they build, kept with their own fields only (pycocotools'
    ``loadRes`` adds ``area`` / ``id`` / ``iscrowd`` to the bbox task's records in place), and records fed in
    directly (saved predictions, tests) instead of model outputs."""

    records: list[dict[str, Any]]
    _predictions: list[dict[str, Any]]
    _metadata: Any

    def add_records(self, records: list[dict[str, Any]]) -> None:
        """Feed COCO result records (dataset category ids) as if the model had produced them."""
        contiguous = self._metadata.thing_dataset_id_to_contiguous_id
        by_image: dict[int, list[dict[str, Any]]] = {}
        for r in records:
            by_image.setdefault(r["image_id"], []).append({**r, "category_id": contiguous[r["category_id"]]})
        self._predictions.extend({"image_id": i, "instances": recs} for i, recs in by_image.items())

    @staticmethod
    def _gathered(predictions: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[tuple[str, ...]]]:
        records = list(itertools.chain(*[p["instances"] for p in predictions]))
        return records, [tuple(r) for r in records]

    def _keep(self, records: list[dict[str, Any]], fields: list[tuple[str, ...]]) -> None:
        self.records = [{k: r[k] for k in f} for r, f in zip(records, fields, strict=True)]


class FlatCOCOEvaluator(_KeepRecords, COCOEvaluator):
    """detectron2's COCOEvaluator (bbox + segm, official API) keeping the records and all 12 stats per task."""

    def __init__(self, dataset_name: str, max_dets: int = 100, tasks: tuple[str, ...] = ("bbox", "segm")) -> None:
        super().__init__(dataset_name, tasks=tasks, distributed=False, output_dir=None, use_fast_impl=False,
                         max_dets_per_image=max_dets)
        self.records, self.stats = [], {}

    def _eval_predictions(self, predictions: list[dict[str, Any]], img_ids: Any = None) -> None:
        records, fields = self._gathered(predictions)  # the same dicts: detectron2 unmaps their ids in place
        super()._eval_predictions(predictions, img_ids=img_ids)
        self._keep(records, fields)

    def _derive_coco_results(self, coco_eval: Any, iou_type: str, class_names: list[str] | None = None) -> dict:
        if coco_eval is not None:
            self.stats[iou_type] = [float(v) for v in coco_eval.stats]
        return super()._derive_coco_results(coco_eval, iou_type, class_names=class_names)

    def flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for task in self._tasks:
            stats = self.stats.get(task)
            if stats is None:  # no detections at all: every AP / AR is 0
                out.update({f"{TASKS[task]}_{n}": 0.0 for n in STAT_NAMES})
            else:
                out.update({f"{TASKS[task]}_{n}": percent(v) for n, v in zip(STAT_NAMES, stats, strict=True)})
        return out


class FlatLVISEvaluator(_KeepRecords, LVISEvaluator):
    """detectron2's LVISEvaluator (bbox + segm) keeping the records and LVISEval's whole results per task."""

    def __init__(self, dataset_name: str, max_dets: int = 300, tasks: tuple[str, ...] = ("bbox", "segm")) -> None:
        super().__init__(dataset_name, tasks=tasks, distributed=False, output_dir=None, max_dets_per_image=max_dets)
        self.records, self.stats = [], {}

    def _eval_predictions(self, predictions: list[dict[str, Any]]) -> None:
        from lvis import LVISEval, LVISResults  # imported here: it pulls in matplotlib

        records, fields = self._gathered(predictions)
        to_dataset = {v: k for k, v in self._metadata.thing_dataset_id_to_contiguous_id.items()}
        for r in records:
            r["category_id"] = to_dataset[r["category_id"]]
        self._keep(records, fields)
        for task in sorted(self._tasks):
            if not self.records:
                continue
            results = LVISResults(self._lvis_api, task_predictions(self.records, task),
                                  max_dets=self._max_dets_per_image)
            ev = LVISEval(self._lvis_api, results, task)
            ev.params.max_dets = self._max_dets_per_image  # recall at the same budget
            with _numpy_float_alias():
                ev.run()
            self.stats[task] = dict(ev.get_results())

    def flat(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for task in self._tasks:
            prefix, res = TASKS[task], self.stats.get(task)
            out.update({f"{prefix}_{n}": None for n in ("AR1", "AR10")})
            if res is None:
                out.update({f"{prefix}_{n}": 0.0 for n in (*STAT_NAMES, *FREQUENCY_NAMES) if n not in ("AR1", "AR10")})
                continue
            for key, name in LVIS_STATS.items():
                out[f"{prefix}_{name}"] = percent(res[key if key.startswith("AP") else f"{key}@{self._max_dets_per_image}"])
        return out


def make_evaluator(which: str, dataset_name: str, max_dets: int,
                   tasks: tuple[str, ...] = ("bbox", "segm")) -> FlatCOCOEvaluator | FlatLVISEvaluator:
    """The COCO or LVIS evaluator of a registered dataset (``which``: see :func:`choose_evaluator`)."""
    DatasetCatalog.get(dataset_name)  # loads the JSON once: sets the metadata's category id mapping
    cls = FlatLVISEvaluator if which == "lvis" else FlatCOCOEvaluator
    return cls(dataset_name, max_dets, tasks)


def _counts(data: dict[str, Any], which: str, num_predictions: int) -> dict[str, Any]:
    anns = data["annotations"]
    return {"num_predictions": num_predictions,
            "num_gt_instances": len(anns) if which == "lvis" else sum(1 for a in anns if not a.get("iscrowd", 0)),
            "num_val_images": len(data["images"])}


def _prepare(gt: dict[str, Any], evaluator: str, where: str) -> str:
    which = choose_evaluator(gt, evaluator)
    if which == "lvis":
        check_lvis(gt, where)
    return which


def evaluate_predictions(gt: str | Path | dict[str, Any] | COCO, predictions: list[dict[str, Any]],
                         tasks: tuple[str, ...] = ("box", "mask"), max_dets: int = 100,
                         evaluator: str = "auto") -> dict[str, Any]:
    """Score saved COCO result records against ``gt`` through the same evaluators: flat metrics in percent.

    ``tasks`` is a subset of ``("box", "mask")``; no predictions -> every AP / AR 0.0 (a model that detects
    nothing). A record naming an image / category the GT lacks, or without the task's geometry, is an error.
    """
    data = read_gt(gt)
    where = str(gt) if isinstance(gt, (str, Path)) else "<dict>"
    which = _prepare(data, evaluator, where)
    for task in tasks:
        if task not in IOU_TYPES:
            raise ValueError(f"unknown evaluation task {task!r}; expected one of {sorted(IOU_TYPES)}")
        check_predictions(load_gt(data), predictions, IOU_TYPES[task])
    with tempfile.TemporaryDirectory(prefix="mal-gt-") as tmp:
        path = Path(tmp) / "gt.json"  # evaluators read a file: the normalised GT (area / iscrowd filled in)
        path.write_text(json.dumps(data))
        ev = make_evaluator(which, register_json(path, tmp, check=False), max_dets,
                            tuple(IOU_TYPES[t] for t in tasks))
        ev.reset()
        ev.add_records(predictions)
        ev.evaluate()
    return {**_counts(data, which, len(predictions)), **ev.flat()}


@dataclass
class Evaluation:
    """A scored detector: which evaluator, the flat metrics, and the val predictions (COCO result records)."""

    evaluator: str
    metrics: dict[str, Any]
    predictions: list[dict[str, Any]]


def evaluate_detector(cfg: CfgNode, weights: str | Path, val_json: str | Path, image_root: str | Path,
                      params: EvaluateParams, device: str = "cpu",
                      num_threads: int = 0) -> tuple[Evaluation, dict[str, Any]]:
    """Run the detector of ``cfg`` + ``weights`` on every val image (``inference_on_dataset``) and score it with
    the COCO or LVIS evaluator (``params.evaluator``, at ``params.max_dets``); returns ``(evaluation, timings)``."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    t0 = time.perf_counter()
    data = read_gt(val_json)
    which = _prepare(data, params.evaluator, str(val_json))
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = str(device)
    model = load_model(cfg, weights)
    name = register_json(val_json, image_root)
    evaluator = make_evaluator(which, name, params.max_dets)
    inference_on_dataset(model, build_detection_test_loader(cfg, name), evaluator)
    metrics = {**_counts(data, which, len(evaluator.records)), **evaluator.flat()}
    return Evaluation(which, metrics, evaluator.records), {"eval_time_s": round(time.perf_counter() - t0, 1)}
