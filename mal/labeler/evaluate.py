"""Validation of a labeler against GT masks: the pseudo-labelling engine's masks, the mask_quality stage's mIoU.

Each GT box goes through the labelling engine (:class:`mal.pseudo.engine.LabelSession`) exactly as
pseudo-labelling does: clipped to the image, its fixed ``expand`` window cropped, the labeler conditioned on
the clipped box area, the probabilities zeroed outside the box, pasted, thresholded, and a box mask where
nothing clears the threshold (or the box is too small). So a checkpoint's val mIoU is the mIoU its
pseudo-labels would get on these boxes. Masks are scored against the GT instance masks by
:mod:`mal.common.miou` (the code of the mask_quality stage): class-averaged (the paper's metric: mean over
categories of the per-category mean IoU) and instance-averaged; the box-as-mask baseline is scored the same
way. Under a process group every process scores a strided share of the boxes and the per-box records are
gathered in box order, so the numbers equal a single process's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mal.common.masks import box_rle, segmentation_to_rle
from mal.common.miou import iou_record, summarize
from mal.config.pseudo import LabelOptions
from mal.labeler.distributed import all_gather_objects, world_info
from mal.pseudo.engine import LabelSession, load_item
from mal.pseudo.predictor import ModelPredictor


def _nan_if_none(value: float | None) -> float:
    return float("nan") if value is None else value


def label_records(records: list[dict[str, Any]], predictor: ModelPredictor, options: LabelOptions,
                  progress: bool = False) -> dict[int, dict[str, Any]]:
    """The engine's labelled annotation (by annotation id) of every box record ``{"ann", "image", "path"}``
    (:func:`mal.labeler.data.box_records`); a box the engine would skip raises."""
    images, paths = {}, {}
    for r in records:
        images.setdefault(r["image"]["id"], r["image"])
        paths.setdefault(r["image"]["id"], Path(r["path"]))
    coco = {"images": list(images.values()), "annotations": [r["ann"] for r in records]}
    session = LabelSession(coco, "val", predictor, options.model_copy(update={"allow_skips": False}),
                           show_progress=progress)
    jobs = session.select()
    session.label(load_item(j, paths[j.image["id"]], options.expand, predictor.crop_size) for j in jobs)
    return session.result().annotations


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
    options: LabelOptions | None = None,
) -> dict[str, float]:
    """mIoU of ``model`` on a val :class:`~mal.labeler.data.BoxCropDataset` (``train=False``) whose
    records carry GT ``segmentation``. Returns ``val_miou``, ``val_miou_instance``, ``val_miou_box``
    (box-as-mask baseline, class-averaged; NaN without boxes), ``val_boxes``. ``masks_out``, if given,
    receives the predicted full-image RLE of every box (of this process's share) by annotation id.
    ``options``: the labelling options (default: the ``pseudo_label`` defaults at ``threshold``, the dataset's
    ``expand`` and ``batch_size``). ``amp``: fp16 autocast of the forward (CUDA). ``distributed``: every process
    of the group must call this; each scores boxes ``rank::world`` and all return the numbers of the whole set.
    """
    options = options or LabelOptions(threshold=float(threshold), expand=float(dataset.expand), batch_size=batch_size)
    predictor = ModelPredictor([model], dataset.crop_size, dataset.norm, device, amp=amp)
    rank, world = world_info() if distributed else (0, 1)
    share = list(range(rank, len(dataset), world))
    labelled = label_records([dataset.records[i] for i in share], predictor, options, progress)
    scored: list[tuple[int, dict[str, Any], dict[str, Any]]] = []  # (dataset index, labeler, box) records
    for idx in share:
        ann, im = dataset.records[idx]["ann"], dataset.records[idx]["image"]
        h, w = int(im["height"]), int(im["width"])
        pred = labelled[ann["id"]]["segmentation"]
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
