"""Validation of a labeler against GT masks: crop-level predictions pasted into image pixels.

For each GT box (fixed 1.3x crop), the predicted probability map is resampled onto the image pixels of the
crop window, multiplied by the box, thresholded and compared with the GT instance mask (GT pixels outside
the window count as misses). mIoU is reported class-averaged (the paper's metric: mean over categories of
the per-category mean IoU) and instance-averaged; the box-as-mask baseline is computed the same way.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm


def gt_rle(ann: dict[str, Any], height: int, width: int) -> dict[str, Any]:
    """COCO segmentation (polygons / RLE with list or string counts) -> compressed RLE."""
    seg = ann["segmentation"]
    if isinstance(seg, list):
        return mask_utils.merge(mask_utils.frPyObjects(seg, height, width))
    if isinstance(seg.get("counts"), list):
        return mask_utils.frPyObjects(seg, height, width)
    rle = dict(seg)
    if isinstance(rle["counts"], str):
        rle["counts"] = rle["counts"].encode()
    return rle


def window_prediction(
    prob: torch.Tensor, crop: tuple[float, float, float, float], box: list[float], height: int, width: int
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Resample ``prob`` (``M x M`` over the crop window) onto image pixels, times the box.

    Returns ``(probs h x w float32, (u0, v0, u1, v1))``: the window clipped to the image.
    """
    cx0, cy0, cx1, cy1 = crop
    u0, v0 = max(0, int(np.floor(cx0))), max(0, int(np.floor(cy0)))
    u1, v1 = min(width, int(np.ceil(cx1))), min(height, int(np.ceil(cy1)))
    us = np.arange(u0, u1, dtype=np.float32) + 0.5
    vs = np.arange(v0, v1, dtype=np.float32) + 0.5
    gx = torch.from_numpy(2.0 * (us - cx0) / (cx1 - cx0) - 1.0)
    gy = torch.from_numpy(2.0 * (vs - cy0) / (cy1 - cy0) - 1.0)
    grid = torch.stack(torch.meshgrid(gy, gx, indexing="ij")[::-1], dim=-1)[None]
    out = F.grid_sample(
        prob[None, None].float().cpu(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )[0, 0].numpy()
    x, y, w, h = box
    inside_x = (us >= x) & (us < x + w)
    inside_y = (vs >= y) & (vs < y + h)
    if not inside_x.any():  # sub-pixel box: keep the pixel holding its centre
        inside_x = np.abs(us - (x + w / 2)) <= 0.5
    if not inside_y.any():
        inside_y = np.abs(vs - (y + h / 2)) <= 0.5
    return out * (inside_y[:, None] & inside_x[None, :]), (u0, v0, u1, v1)


def window_iou(pred: np.ndarray, window: tuple[int, int, int, int], gt: np.ndarray) -> float:
    """IoU of a window prediction (bool ``h x w``) with a full-image GT mask (bool ``H x W``)."""
    u0, v0, u1, v1 = window
    g = gt[v0:v1, u0:u1]
    inter = float(np.logical_and(pred, g).sum())
    union = float(pred.sum()) + float(gt.sum()) - inter
    return inter / union if union > 0 else 1.0


def summarize(ious: list[float], cats: list[int]) -> tuple[float, float]:
    """(class-averaged mIoU, instance-averaged mIoU)."""
    if not ious:
        return float("nan"), float("nan")
    per_cat: dict[int, list[float]] = defaultdict(list)
    for iou, c in zip(ious, cats, strict=True):
        per_cat[c].append(iou)
    return float(np.mean([np.mean(v) for v in per_cat.values()])), float(np.mean(ious))


@torch.no_grad()
def evaluate_labeler(
    model: nn.Module,
    dataset: Any,
    threshold: float = 0.5,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, float]:
    """mIoU of ``model`` on a val :class:`~mal.labeler.data.BoxCropDataset` (``train=False``) whose
    records carry GT ``segmentation``. Returns ``val_miou``, ``val_miou_instance``, ``val_miou_box``
    (box-as-mask baseline, class-averaged), ``val_boxes``."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    ious, box_ious, cats = [], [], []
    for batch in tqdm(loader, desc="val", disable=not progress, leave=False):
        probs = torch.sigmoid(model(batch["image"].to(device), batch["box_area"].to(device)).float())[:, 0]
        for k, idx in enumerate(batch["index"].tolist()):
            rec = dataset.records[idx]
            ann, im = rec["ann"], rec["image"]
            h, w = int(im["height"]), int(im["width"])
            gt = mask_utils.decode(gt_rle(ann, h, w)).astype(bool)
            crop = tuple(float(v) for v in batch["crop"][k])
            pred, window = window_prediction(probs[k].cpu(), crop, ann["bbox"], h, w)
            ious.append(window_iou(pred >= threshold, window, gt))
            boxm, _ = window_prediction(torch.ones_like(probs[k]).cpu(), crop, ann["bbox"], h, w)
            box_ious.append(window_iou(boxm >= 0.5, window, gt))
            cats.append(int(ann["category_id"]))
    miou, miou_inst = summarize(ious, cats)
    box_miou, _ = summarize(box_ious, cats)
    return {
        "val_miou": miou,
        "val_miou_instance": miou_inst,
        "val_miou_box": box_miou,
        "val_boxes": len(ious),
    }
