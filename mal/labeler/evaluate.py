"""Validation of a labeler against GT masks: the pseudo-label stage's paste, the mask_quality stage's mIoU.

For each GT box (fixed 1.3x crop), the predicted probability map is pasted onto the image pixels of the crop
window and kept to the pixels the box touches (:func:`mal.common.masks.paste_in_box`, as for pseudo-labels),
thresholded (``prob > threshold``) and scored against the GT instance mask by :mod:`mal.common.miou` (the
code of the mask_quality stage): class-averaged (the paper's metric: mean over categories of the
per-category mean IoU) and instance-averaged; the box-as-mask baseline is scored the same way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from mal.common.masks import box_rle, paste_in_box, rle_from_region, segmentation_to_rle
from mal.common.miou import iou_record, summarize


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value


@torch.no_grad()
def evaluate_labeler(
    model: nn.Module,
    dataset: Any,
    threshold: float = 0.5,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    progress: bool = False,
    masks_out: dict[int, dict[str, Any]] | None = None,
) -> dict[str, float]:
    """mIoU of ``model`` on a val :class:`~mal.labeler.data.BoxCropDataset` (``train=False``) whose
    records carry GT ``segmentation``. Returns ``val_miou``, ``val_miou_instance``, ``val_miou_box``
    (box-as-mask baseline, class-averaged; NaN without boxes), ``val_boxes``. ``masks_out``, if given,
    receives the predicted full-image RLE of every box by annotation id."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    records, box_records = [], []
    for batch in tqdm(loader, desc="val", disable=not progress, leave=False):
        logits = model(batch["image"].to(device), batch["box_area"].to(device))
        probs = torch.sigmoid(logits.float())[:, 0].cpu().numpy()
        for k, idx in enumerate(batch["index"].tolist()):
            ann, im = dataset.records[idx]["ann"], dataset.records[idx]["image"]
            h, w = int(im["height"]), int(im["width"])
            crop = tuple(float(v) for v in batch["crop"][k])
            pred = rle_from_region(*paste_in_box(probs[k], crop, ann["bbox"], w, h, threshold), h, w)
            gt = segmentation_to_rle(ann["segmentation"], h, w, f"val annotation id={ann['id']} field 'segmentation'")
            records.append(iou_record(pred, gt, ann))
            box_records.append(iou_record(box_rle(ann["bbox"], h, w), gt, ann))
            if masks_out is not None:
                masks_out[int(ann["id"])] = pred
    labeler, box = summarize(records, {}), summarize(box_records, {})
    return {
        "val_miou": _nan_if_none(labeler["miou"]),
        "val_miou_instance": _nan_if_none(labeler["miou_instance"]),
        "val_miou_box": _nan_if_none(box["miou"]),
        "val_boxes": len(records),
    }
