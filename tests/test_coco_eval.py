"""COCO scoring through detectron2's COCOEvaluator (mal.detection.evaluation) and the pycocotools helpers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mal.common.masks import encode_mask
from mal.detection.coco_eval import STAT_NAMES, gt_as_predictions, load_gt

pytest.importorskip("detectron2")
from mal.detection.evaluation import evaluate_predictions  # noqa: E402


def _val(shapes_dir: Path) -> Path:
    return shapes_dir / "val_gt.json"


def test_perfect_predictions_give_100_ap(shapes_dir: Path) -> None:
    gt = load_gt(_val(shapes_dir))
    preds = gt_as_predictions(gt)
    assert len(preds) == len(gt.dataset["annotations"]) > 0
    m = evaluate_predictions(_val(shapes_dir), preds)
    for task in ("box", "mask"):
        for name in ("AP", "AP50", "AP75", "AR100"):
            assert m[f"{task}_{name}"] == pytest.approx(100.0), (task, name, m)
    assert set(m) >= {f"{t}_{n}" for t in ("box", "mask") for n in STAT_NAMES}
    json.dumps(m, allow_nan=False)  # flat, strict JSON (undefined size buckets are null)


def test_imperfect_predictions_score_lower(shapes_dir: Path) -> None:
    gt = load_gt(_val(shapes_dir))
    preds = gt_as_predictions(gt)
    # Box stays perfect, mask shrinks to its box's top-left quarter: mask AP drops, box AP does not.
    for p in preds:
        h, w = p["segmentation"]["size"]
        x, y, bw, bh = (int(v) for v in p["bbox"])
        m = np.zeros((h, w), np.uint8)
        m[y:y + max(bh // 2, 1), x:x + max(bw // 2, 1)] = 1
        p["segmentation"] = encode_mask(m)
    res = evaluate_predictions(gt, preds)
    assert res["box_AP"] == pytest.approx(100.0)
    assert res["mask_AP"] < 20.0
    # Half of the objects missed: AR100 ~ 50, AP well below 100.
    half = gt_as_predictions(gt)[::2]
    res = evaluate_predictions(gt, half, tasks=("box",))
    assert res["box_AP"] < 75.0 and "mask_AP" not in res


def test_no_predictions_is_zero_not_error(shapes_dir: Path) -> None:
    m = evaluate_predictions(_val(shapes_dir), [])
    assert m["mask_AP"] == 0.0 and m["box_AP"] == 0.0 and m["num_predictions"] == 0


def test_bad_predictions_are_named(shapes_dir: Path) -> None:
    gt = load_gt(_val(shapes_dir))
    preds = gt_as_predictions(gt)
    bad = [dict(preds[0], image_id=10_000)]
    with pytest.raises(ValueError, match="image_id 10000"):
        evaluate_predictions(gt, bad)
    nomask = [{k: v for k, v in preds[0].items() if k != "segmentation"}]
    with pytest.raises(ValueError, match="segmentation"):
        evaluate_predictions(gt, nomask)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_gt(Path("nope.json"))


@pytest.mark.parametrize("max_dets", [50, 300])
def test_headline_ap_honours_max_dets(shapes_dir: Path, max_dets: int) -> None:
    """COCOeval.summarize reads the headline AP at maxDets=100 only: any other max_dets made it null."""
    gt = load_gt(_val(shapes_dir))
    half = gt_as_predictions(gt)[::2]  # < 50 detections per image: every max_dets sees them all
    at_100 = evaluate_predictions(gt, half)
    res = evaluate_predictions(gt, half, max_dets=max_dets)
    for task in ("box", "mask"):
        assert res[f"{task}_AP"] is not None and 0.0 < res[f"{task}_AP"] < 100.0
        for name in ("AP", "AP50", "AP75", "AR1", "AR10", "AR100"):
            assert res[f"{task}_{name}"] == at_100[f"{task}_{name}"], (task, name)


def test_metrics_are_pycocotools_own_stats(shapes_dir: Path) -> None:
    """At COCO's default budget the 12 numbers are COCOeval.summarize's own, in percent."""
    import contextlib
    import io

    from pycocotools.cocoeval import COCOeval

    gt = load_gt(_val(shapes_dir))
    half = gt_as_predictions(gt)[::2]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes([{k: v for k, v in p.items() if k != "segmentation"} for p in half]), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    res = evaluate_predictions(gt.dataset, half, tasks=("box",))
    expected = [None if v < 0 else round(float(v) * 100, 4) for v in ev.stats]
    assert [res[f"box_{n}"] for n in STAT_NAMES] == expected
