"""mal.pseudo.quality: class- vs instance-averaged mIoU, size buckets, baselines, overlays, the stage."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from mal.common.masks import box_rle, encode_mask
from mal.common.miou import summarize
from mal.config.quality import MaskQualityParams as MQ
from mal.pseudo.confidence import ranking_metrics
from mal.pseudo.quality import baseline_subset, evaluate_masks, grabcut_mask, grabcut_rles
from tests.conftest import load_stage

REPO = Path(__file__).resolve().parents[1]


def test_summarize_class_average_differs_from_instance_average() -> None:
    recs = [{"category_id": 1, "gt_area": 100, "iou": 1.0}] * 3 + [
        {"category_id": 2, "gt_area": 5000, "iou": 0.0}
    ]
    s = summarize(recs, {1: "a", 2: "b"})
    assert s["miou"] == pytest.approx(0.5)  # mean of per-class means
    assert s["miou_instance"] == pytest.approx(0.75)
    assert s["miou_small"] == pytest.approx(1.0) and s["miou_medium"] == pytest.approx(0.0)
    assert s["miou_large"] is None
    assert s["per_class"] == {"a": {"miou": 1.0, "count": 3}, "b": {"miou": 0.0, "count": 1}}
    edge = summarize(
        [{"category_id": 1, "gt_area": 32**2, "iou": 0.3}, {"category_id": 1, "gt_area": 96**2, "iou": 0.9}],
        {},
    )
    assert edge["miou_medium"] == pytest.approx(0.3) and edge["miou_large"] == pytest.approx(0.9)
    assert summarize([], {})["miou"] is None


def _boxes_as_pred(gt: dict) -> dict:
    pred = copy.deepcopy(gt)
    ims = {im["id"]: im for im in gt["images"]}
    for a in pred["annotations"]:
        im = ims[a["image_id"]]
        a["segmentation"] = box_rle(a["bbox"], im["height"], im["width"])
    return pred


def test_gt_vs_itself_is_one_and_box_pred_equals_box_baseline(shapes_dir: Path, tmp_path: Path) -> None:
    gt = json.loads((shapes_dir / "train_gt.json").read_text())
    r = evaluate_masks(gt, gt, MQ(num_overlays=2), image_root=shapes_dir, overlay_dir=tmp_path / "ov",
                       show_progress=False)
    assert r["miou"] == pytest.approx(1.0) and r["miou_instance"] == pytest.approx(1.0)
    assert r["num_instances"] == len(gt["annotations"])
    assert set(r["baselines"]) == {"box", "grabcut"}
    assert 0.3 < r["baselines"]["box"]["miou"] < 1.0
    assert 0 <= r["baselines"]["grabcut"]["fallbacks_to_box"] <= len(gt["annotations"])
    assert len(r["overlays"]) == 2 and all(Path(p).is_file() for p in r["overlays"])
    rb = evaluate_masks(_boxes_as_pred(gt), gt, MQ(baselines=["box"], num_overlays=0), show_progress=False)
    assert rb["miou"] == pytest.approx(rb["baselines"]["box"]["miou"])
    assert rb["miou"] == pytest.approx(r["baselines"]["box"]["miou"])


def test_crowd_and_missing_segmentation_not_evaluated_and_missing_pred_is_error(shapes_dir: Path) -> None:
    gt = json.loads((shapes_dir / "train_gt.json").read_text())
    gt["annotations"][0]["iscrowd"] = 1
    del gt["annotations"][1]["segmentation"]
    r = evaluate_masks(gt, gt, MQ(baselines=["box"], num_overlays=0), show_progress=False)
    assert r["not_evaluated"] == {"crowd": 1, "no_gt_segmentation": 1}
    assert r["num_instances"] == len(gt["annotations"]) - 2
    pred = copy.deepcopy(gt)
    pred["annotations"].pop()
    with pytest.raises(ValueError, match="no pseudo-label"):
        evaluate_masks(pred, gt, MQ(baselines=["box"], num_overlays=0), show_progress=False)
    with pytest.raises(ValueError, match="image_root"):
        evaluate_masks(gt, gt, MQ(baselines=["grabcut"], num_overlays=0), show_progress=False)


def test_ranking_metrics_on_a_known_ranking() -> None:
    ious = [0.1, 0.5, 0.6, 0.65, 0.7, 0.8, 0.85, 0.9, 0.95, 0.99]  # 4 bad (< 0.7; 0.7 itself is not)
    scores = [0.1 * (i + 1) for i in range(10)]  # ranks exactly like the IoU
    r = ranking_metrics(scores, ious)
    assert r["spearman"] == pytest.approx(1.0) and r["num"] == 10
    assert r["bad_iou"] == 0.7 and r["lowest_fraction"] == 0.2
    assert r["bad_share"] == pytest.approx(0.4) and r["bad_share_in_lowest"] == pytest.approx(1.0)
    assert r["ratio_vs_chance"] == pytest.approx(2.5)
    rev = ranking_metrics(scores[::-1], ious)  # the best masks scored lowest
    assert rev["spearman"] == pytest.approx(-1.0) and rev["bad_share_in_lowest"] == 0.0
    assert rev["ratio_vs_chance"] == 0.0
    # 3 lowest of 11 (ceil 2.2): a good mask scored lowest + 2 bad; constant scores rank nothing; no bad mask: no ratio
    assert ranking_metrics(scores + [0.0], ious + [1.0])["bad_share_in_lowest"] == pytest.approx(2 / 3)
    assert ranking_metrics([0.5] * 10, ious)["spearman"] is None
    assert ranking_metrics(scores, [0.9] * 10)["ratio_vs_chance"] is None


def test_confidence_ranking_reported_only_for_scored_pseudo_labels(shapes_dir: Path) -> None:
    gt = json.loads((shapes_dir / "train_gt.json").read_text())
    assert "confidence" not in evaluate_masks(gt, gt, MQ(baselines=[], num_overlays=0), show_progress=False)
    pred = copy.deepcopy(gt)
    ims = {im["id"]: im for im in gt["images"]}
    for i, a in enumerate(pred["annotations"]):  # every other mask empty (IoU 0) and scored low
        if i % 2:
            im = ims[a["image_id"]]
            a["segmentation"] = encode_mask(np.zeros((im["height"], im["width"]), np.uint8))
        a["score"] = 0.1 if i % 2 else 0.9
    conf = evaluate_masks(pred, gt, MQ(baselines=[], num_overlays=0), show_progress=False)["confidence"]
    n = len(gt["annotations"])
    assert conf["num"] == n and conf["spearman"] == pytest.approx(1.0)
    assert conf["bad_share"] == pytest.approx((n // 2) / n) and conf["bad_share_in_lowest"] == 1.0


def test_grabcut_finds_a_disc_and_falls_back_on_flat_images() -> None:
    img = np.full((64, 64, 3), 30, np.uint8)
    yy, xx = np.mgrid[:64, :64]
    disc = (yy - 32) ** 2 + (xx - 32) ** 2 <= 12**2
    img[disc] = (220, 180, 40)
    m, (x0, y0, x1, y1) = grabcut_mask(img, [18, 18, 29, 29], iterations=3)
    assert m is not None
    full = np.zeros((64, 64), np.uint8)
    full[y0:y1, x0:x1] = m
    iou = (full.astype(bool) & disc).sum() / (full.astype(bool) | disc).sum()
    assert iou > 0.8
    flat = np.full((64, 64, 3), 100, np.uint8)
    assert (
        grabcut_mask(flat, [0, 0, 64, 64])[0] is None
    )  # no background outside the box: fails, caller falls back
    assert grabcut_mask(flat, [10, 10, 0, 5])[0] is None


def test_mask_quality_stage(shapes_dir: Path, tmp_path: Path) -> None:
    gt = json.loads((shapes_dir / "train_gt.json").read_text())
    pred = _boxes_as_pred(gt)
    for b in pred["annotations"]:
        b["score"] = 1.0
    a = pred["annotations"][0]
    a["score"] = 0.0  # the empty mask, scored lowest
    a["segmentation"] = encode_mask(np.zeros((gt["images"][0]["height"], gt["images"][0]["width"]), np.uint8))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "pseudo.json").write_text(json.dumps(pred))
    params = {
        "mask_quality": {"num_overlays": 1, "baselines": ["box", "grabcut"], "grabcut_iterations": 2},
        "data": {"dataset": "shapes"},  # a built-in set: images beside the GT JSON
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    mod = load_stage("mask_quality")
    assert mod.main(["--labeler", "x", "--pseudo", str(tmp_path / "x" / "pseudo.json"),
                     "--gt", str(shapes_dir / "train_gt.json"), "--metrics", str(tmp_path / "m" / "x.json"),
                     "--overlays", str(tmp_path / "ov" / "x"), "--params", str(tmp_path / "params.yaml")]) == 0
    m = json.loads((tmp_path / "m" / "x.json").read_text())
    for key in ("miou", "miou_instance", "miou_small", "miou_medium", "miou_large", "per_class", "baselines"):
        assert key in m
    assert m["miou"] < m["baselines"]["box"]["miou"]  # one empty mask pulls the box-shaped prediction down
    assert m["confidence"]["num"] == len(pred["annotations"]) and m["confidence"]["spearman"] > 0
    assert len(list((tmp_path / "ov" / "x").glob("*.png"))) == 1


def test_baseline_subset_is_seeded_same_for_every_call_and_skips_crowd(shapes_dir: Path) -> None:
    gt = json.loads((shapes_dir / "train_gt.json").read_text())
    anns = {int(a["id"]): a for a in gt["annotations"]}
    next(iter(anns.values()))["iscrowd"] = 1
    evaluable = {i for i, a in anns.items() if not a.get("iscrowd")}
    sub = baseline_subset(anns, 4, seed=0)
    assert len(sub) == 4 and sub <= evaluable
    assert sub == baseline_subset(copy.deepcopy(anns), 4, seed=0)  # a function of the GT only
    assert baseline_subset(anns, 0) == evaluable == baseline_subset(anns, len(anns) + 5)


def test_grabcut_runs_on_at_most_max_boxes_and_equals_the_full_run_when_max_covers_all(shapes_dir: Path) -> None:
    gt = json.loads((shapes_dir / "train_gt.json").read_text())
    pred, n = _boxes_as_pred(gt), len(gt["annotations"])
    kw = {"image_root": shapes_dir, "show_progress": False}
    full = evaluate_masks(pred, gt, MQ(grabcut_iterations=1, num_overlays=0), **kw)
    assert full == evaluate_masks(pred, gt, MQ(grabcut_iterations=1, num_overlays=0, baseline_max_boxes=n), **kw)
    sub = evaluate_masks(pred, gt, MQ(grabcut_iterations=1, num_overlays=0, baseline_max_boxes=3), **kw)["baselines"]
    assert sub["grabcut"]["num_instances"] == 3 and sub["grabcut"]["subsample_of"] == n
    assert sub["box"] == full["baselines"]["box"]  # the free baseline keeps every box
    assert "subsample_of" not in full["baselines"]["grabcut"]


def test_grabcut_mask_of_a_box_does_not_depend_on_order_subset_or_workers(shapes_dir: Path) -> None:
    gt = json.loads((shapes_dir / "train_gt.json").read_text())
    images = {int(im["id"]): im for im in gt["images"]}
    anns = gt["annotations"]
    full = grabcut_rles(images, anns, shapes_dir, iterations=2, show_progress=False)
    assert len(full) == len(anns)
    assert grabcut_rles(images, anns[::-2], shapes_dir, iterations=2, show_progress=False) == {
        int(a["id"]): full[int(a["id"])] for a in anns[::-2]}
    assert grabcut_rles(images, anns, shapes_dir, iterations=2, num_workers=2, show_progress=False) == full
