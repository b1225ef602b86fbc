"""Validation of a labeler against GT masks: the pseudo-label stage's paste, the mask_quality stage's mIoU.

For each GT box (fixed 1.3x crop), the predicted probability map is pasted onto the image pixels of the crop
window and kept to the pixels the box touches (:func:`mal.common.masks.paste_in_box`, as for pseudo-labels),
thresholded (``prob > threshold``) and scored against the GT instance mask by :mod:`mal.common.miou` (the
code of the mask_quality stage): class-averaged (the paper's metric: mean over categories of the
per-category mean IoU) and instance-averaged; the box-as-mask baseline is scored the same way.
Under a process group every process scores a strided share of the boxes and the per-box records are
gathered in box order, so the numbers equal a single process's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from mal.common.masks import box_rle, paste_in_box, rle_from_region, segmentation_to_rle
from mal.common.miou import iou_record, summarize
from mal.labeler.distributed import all_gather_objects, world_info
from mal.labeler.model import normalize


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
    amp: bool = False,
    distributed: bool = False,
) -> dict[str, float]:
    """mIoU of ``model`` on a val :class:`~mal.labeler.data.BoxCropDataset` (``train=False``) whose
    records carry GT ``segmentation``. Returns ``val_miou``, ``val_miou_instance``, ``val_miou_box``
    (box-as-mask baseline, class-averaged; NaN without boxes), ``val_boxes``. ``masks_out``, if given,
    receives the predicted full-image RLE of every box (of this process's share) by annotation id.
    ``amp``: autocast the forward (CUDA). ``distributed``: every process of the group must call this; each
    scores boxes ``rank::world`` and all return the numbers of the whole set.
    """
    model.eval()
    device = torch.device(device)
    rank, world = world_info() if distributed else (0, 1)
    share = Subset(dataset, range(rank, len(dataset), world)) if world > 1 else dataset
    loader = DataLoader(share, batch_size=batch_size, shuffle=False, num_workers=0)
    scored: list[tuple[int, dict[str, Any], dict[str, Any]]] = []  # (dataset index, labeler, box) records
    for batch in tqdm(loader, desc="val", disable=not progress, leave=False):
        images = normalize(batch["image"].to(device, non_blocking=True), *dataset.norm)
        with torch.autocast(device_type=device.type, enabled=amp):
            logits = model(images, batch["box_area"])
        probs = torch.sigmoid(logits.float())[:, 0].cpu().numpy()  # one copy per batch
        for k, idx in enumerate(batch["index"].tolist()):
            ann, im = dataset.records[idx]["ann"], dataset.records[idx]["image"]
            h, w = int(im["height"]), int(im["width"])
            crop = tuple(float(v) for v in batch["crop"][k])
            pred = rle_from_region(*paste_in_box(probs[k], crop, ann["bbox"], w, h, threshold), h, w)
            gt = segmentation_to_rle(ann["segmentation"], h, w, f"val annotation id={ann['id']} field 'segmentation'")
            scored.append((idx, iou_record(pred, gt, ann), iou_record(box_rle(ann["bbox"], h, w), gt, ann)))
            if masks_out is not None:
                masks_out[int(ann["id"])] = pred
    if world > 1:  # box order, as one process scores them: the same float sums
        scored = sorted((s for part in all_gather_objects(scored) for s in part), key=lambda s: s[0])
    labeler = summarize([s[1] for s in scored], {})
    box = summarize([s[2] for s in scored], {})
    return {
        "val_miou": _nan_if_none(labeler["miou"]),
        "val_miou_instance": _nan_if_none(labeler["miou_instance"]),
        "val_miou_box": _nan_if_none(box["miou"]),
        "val_boxes": len(scored),
    }
