"""One mIoU: the labeler's validation and the mask_quality stage score the same masks identically."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mal.common.masks import empty_rle, encode_mask, rle_iou
from mal.common.miou import iou_record, summarize
from mal.config.quality import MaskQualityParams as MQ
from mal.labeler.data import BoxCropDataset, box_records
from mal.labeler.evaluate import evaluate_labeler
from mal.pseudo.quality import evaluate_masks


class Disc(torch.nn.Module):
    """Logits of a centred disc whose radius grows with the box area: partial, instance-dependent masks."""

    def forward(self, images: torch.Tensor, areas: torch.Tensor) -> torch.Tensor:
        m = 8
        c = torch.arange(m, dtype=torch.float32) + 0.5 - m / 2
        dist = (c[None, :] ** 2 + c[:, None] ** 2).sqrt()
        radius = 1.5 + 2.0 * (areas.float() / areas.float().max()).view(-1, 1, 1, 1)
        return 4.0 * (radius - dist[None, None])


def test_validation_and_mask_quality_agree_on_the_same_masks(shapes_dir: Path) -> None:
    val_path = shapes_dir / "val_gt.json"
    gt = json.loads(val_path.read_text())
    records = box_records(gt, val_path, lambda a: not a.get("iscrowd", 0) and "segmentation" in a)
    ds = BoxCropDataset(records, 32, 8, train=False)

    masks: dict[int, dict] = {}
    val = evaluate_labeler(Disc(), ds, threshold=0.5, batch_size=4, masks_out=masks)
    pred = copy.deepcopy(gt)
    for a in pred["annotations"]:
        a["segmentation"] = masks[a["id"]]
    quality = evaluate_masks(pred, gt, MQ(baselines=["box"], num_overlays=0), show_progress=False)

    assert quality["num_instances"] == val["val_boxes"] == len(records) > 1
    assert 0.05 < val["val_miou"] < 0.95  # partial masks: the comparison is not trivially 0 or 1
    assert val["val_miou"] == pytest.approx(quality["miou"], abs=1e-12)
    assert val["val_miou_instance"] == pytest.approx(quality["miou_instance"], abs=1e-12)
    assert val["val_miou_box"] == pytest.approx(quality["baselines"]["box"]["miou"], abs=1e-12)


def test_iou_record_matches_numpy_and_empty_pairs_score_zero() -> None:
    a, b = np.zeros((10, 12), np.uint8), np.zeros((10, 12), np.uint8)
    a[2:6, 3:9], b[4:8, 3:5] = 1, 1
    r = iou_record(encode_mask(a), encode_mask(b), {"id": 7, "category_id": 3})
    expected = (a & b).sum() / (a | b).sum()
    assert r == {"id": 7, "category_id": 3, "gt_area": 8, "iou": pytest.approx(expected)}
    assert rle_iou(empty_rle(10, 12), empty_rle(10, 12)) == 0.0  # the documented convention
    s = summarize([r, {**r, "category_id": 4, "iou": 1.0}, {**r, "category_id": 4, "iou": 0.0}], {})
    assert s["miou"] == pytest.approx((expected + 0.5) / 2)
