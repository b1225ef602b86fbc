"""LVIS (federated) evaluation through detectron2's LVISEvaluator and the LVIS API, against COCO on the same
predictions."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mal.detection.coco_eval import gt_as_predictions, load_gt

pytest.importorskip("detectron2")
from mal.detection.evaluation import choose_evaluator, evaluate_predictions, is_lvis  # noqa: E402


def evaluate_lvis(gt: dict[str, Any], preds: list[dict[str, Any]], max_dets: int = 300) -> dict[str, Any]:
    return evaluate_predictions(gt, preds, max_dets=max_dets, evaluator="lvis")

# One instance each; image 1 has category 1 (frequent), image 2 categories 2 (common) and 3 (rare).
BOXES = {1: (1, [4, 4, 20, 20]), 2: (2, [30, 30, 24, 24]), 3: (2, [4, 34, 16, 16])}  # ann id: (image, box)


def _lvis_gt() -> dict[str, Any]:
    def ann(i: int) -> dict[str, Any]:
        image_id, (x, y, w, h) = BOXES[i]
        return {"id": i, "image_id": image_id, "category_id": i, "bbox": [x, y, w, h], "area": float(w * h),
                "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}

    return {
        "images": [
            # image 1: category 3 verified absent; category 2 unknown (neither present nor negative)
            {"id": 1, "file_name": "a.jpg", "width": 64, "height": 64, "neg_category_ids": [3],
             "not_exhaustive_category_ids": []},
            # image 2: category 2 present but not exhaustively labelled
            {"id": 2, "file_name": "b.jpg", "width": 64, "height": 64, "neg_category_ids": [],
             "not_exhaustive_category_ids": [2]},
        ],
        "categories": [{"id": 1, "name": "cup", "frequency": "f"}, {"id": 2, "name": "kite", "frequency": "c"},
                       {"id": 3, "name": "yak", "frequency": "r"}],
        "annotations": [ann(i) for i in BOXES],
    }


def _extra(image_id: int, category_id: int) -> dict[str, Any]:
    """A confident detection far from every GT object (a false positive wherever it is counted)."""
    rec = gt_as_predictions(load_gt({**_lvis_gt(), "annotations": [
        {"id": 9, "image_id": image_id, "category_id": category_id, "bbox": [44, 2, 16, 10],
         "segmentation": [[44, 2, 60, 2, 60, 12, 44, 12]]}]}))[0]
    return {**rec, "score": 0.99}


def test_perfect_predictions_score_100_with_frequency_groups() -> None:
    gt = _lvis_gt()
    m = evaluate_lvis(gt, gt_as_predictions(load_gt(gt), score=0.9), max_dets=300)
    for task in ("box", "mask"):
        for name in ("AP", "AP50", "AP75", "APr", "APc", "APf", "AR100"):
            assert m[f"{task}_{name}"] == pytest.approx(100.0), (task, name, m)
        assert m[f"{task}_AR1"] is None and m[f"{task}_AR10"] is None  # LVIS: one detection budget only
        assert m[f"{task}_APm"] is None  # no medium objects: LVIS cannot compute it either


@pytest.mark.parametrize(("extra", "lvis_ignores"), [
    ((1, 2), True),    # category 2 on image 1: neither in its GT nor its negatives -> not evaluated by LVIS
    ((2, 2), True),    # category 2 on image 2: not exhaustively labelled -> an unmatched detection is ignored
    ((1, 3), False),   # category 3 on image 1: verified absent -> a false positive for LVIS too
])
def test_federated_false_positives_differ_from_coco(extra: tuple[int, int], lvis_ignores: bool) -> None:
    gt = _lvis_gt()
    preds = [*gt_as_predictions(load_gt(gt), score=0.9), _extra(*extra)]
    coco = evaluate_predictions(gt, preds, evaluator="coco")
    lvis = evaluate_lvis(gt, preds)
    for task in ("box", "mask"):
        assert coco[f"{task}_AP"] < 100.0  # COCOeval: the top-scored detection of that category is a FP
        if lvis_ignores:
            assert lvis[f"{task}_AP"] == pytest.approx(100.0), (task, lvis)
        else:
            assert lvis[f"{task}_AP"] < 100.0 and lvis[f"{task}_APr"] < 100.0 == lvis[f"{task}_APf"]


def test_lvis_ranking_uses_max_dets() -> None:
    """Only the top ``max_dets`` detections per image are kept (LVISResults), as the stage's budget says."""
    gt = _lvis_gt()
    perfect = gt_as_predictions(load_gt(gt), score=0.5)
    decoys = [_extra(2, 3) for _ in range(3)]  # rare category 3 on image 2, scored above the true ones
    assert evaluate_lvis(gt, perfect + decoys, max_dets=300)["box_AR100"] == pytest.approx(100.0)
    assert evaluate_lvis(gt, perfect + decoys, max_dets=3)["box_AR100"] < 100.0


def test_no_predictions_and_bad_lvis_files() -> None:
    gt = _lvis_gt()
    m = evaluate_lvis(gt, [])
    assert m["mask_AP"] == 0.0 and m["mask_APr"] == 0.0 and m["num_predictions"] == 0
    bad = copy.deepcopy(gt)
    del bad["images"][1]["neg_category_ids"]
    with pytest.raises(ValueError, match="image id=2: missing list 'neg_category_ids'"):
        evaluate_lvis(bad, gt_as_predictions(load_gt(gt)))


def test_evaluator_choice(tmp_path: Path) -> None:
    gt = _lvis_gt()
    coco = {**gt, "categories": [{k: v for k, v in c.items() if k != "frequency"} for c in gt["categories"]],
            "images": [{k: im[k] for k in ("id", "file_name", "width", "height")} for im in gt["images"]]}
    assert is_lvis(gt) and not is_lvis(coco)
    assert choose_evaluator(gt) == "lvis" and choose_evaluator(coco) == "coco"
    assert choose_evaluator(gt, "coco") == "coco"
    with pytest.raises(ValueError, match="evaluator must be one of"):
        choose_evaluator(gt, "voc")
    path = tmp_path / "val.json"
    path.write_text(json.dumps(gt))
    preds = [*gt_as_predictions(load_gt(gt), score=0.9), _extra(1, 2)]
    m = evaluate_predictions(path, preds)  # auto
    assert m["mask_AP"] == pytest.approx(100.0) and "mask_APr" in m
    m = evaluate_predictions(path, preds, evaluator="coco")
    assert m["mask_AP"] < 100.0 and "mask_APr" not in m
    assert "float" not in np.__dict__ or np.__dict__["float"] is not float  # the lvis shim was undone
