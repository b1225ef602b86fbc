"""Mask quality of pseudo-labels against ground-truth masks (the paper's mIoU), plus two baselines.

Pseudo-labels are produced by prompting with the GT boxes, so prediction and GT are matched by annotation
id. Metrics (one dict per method, computed by the same code for the labeler and the baselines):

- ``miou``: class-averaged mIoU = mean over categories of the per-category mean IoU (the paper's number);
- ``miou_instance``: mean IoU over all evaluated instances;
- ``miou_small/medium/large``: instance mIoU by GT mask area (< 32², < 96², >= 96²; ``None`` if empty);
- ``per_class``: ``{name: {"miou": .., "count": ..}}``.

When the pseudo-labels carry a ``score`` (the labeller's confidence), ``confidence`` says how well it ranks
the evaluated masks by their IoU (:func:`mal.pseudo.confidence.ranking_metrics`: Spearman, and the share of
bad masks, IoU < 0.7, among the lowest-scored 20 % against chance).

Crowd GT annotations and GT annotations without a segmentation are not evaluated (counted).
Baselines: the GT box as mask, and OpenCV GrabCut initialised from the box (on a 1.3x context window;
failures or empty results fall back to the box mask and are counted). GrabCut costs 50-450 ms a box (days on
COCO's ~850k train boxes), so it can run on a seeded subsample of the evaluable GT boxes (the same for every
labeler: it depends on the GT file only) and in a process pool; each box reseeds OpenCV's RNG (GrabCut's GMM
init draws from it) with its annotation id, so a box's mask does not depend on which boxes ran before it, on
the subsample or on the number of workers.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from mal.common.boxes import box_region
from mal.common.files import save_png_atomic
from mal.common.images import image_path, read_image
from mal.common.masks import box_rle, decode_segmentation, rle_from_region, segmentation_to_rle
from mal.common.miou import iou_record, summarize
from mal.config.quality import MaskQualityParams
from mal.pseudo.confidence import ranking_metrics


def grabcut_mask(
    image: np.ndarray, box: list[float], iterations: int = 3, context: float = 1.3, seed: int | None = None
) -> tuple[np.ndarray | None, tuple[int, int, int, int]]:
    """GrabCut initialised from ``box`` (xywh) on a ``context``-times window around it; ``seed`` reseeds
    OpenCV's RNG first (without it the result depends on earlier OpenCV calls in this thread).

    Returns ``(region_mask uint8, region)`` for the box region in image coordinates, or ``(None, region)``
    when GrabCut fails or returns an empty mask (the caller falls back to the box mask).
    """
    h, w = image.shape[:2]
    bx0, by0, bx1, by1 = box_region(box, w, h)
    if bx1 <= bx0 or by1 <= by0:
        return None, (bx0, by0, bx1, by1)
    mx = max(int(round((bx1 - bx0) * (context - 1) / 2)), 2)
    my = max(int(round((by1 - by0) * (context - 1) / 2)), 2)
    wx0, wy0 = max(bx0 - mx, 0), max(by0 - my, 0)
    wx1, wy1 = min(bx1 + mx, w), min(by1 + my, h)
    win = np.ascontiguousarray(image[wy0:wy1, wx0:wx1, :3], dtype=np.uint8)
    gc = np.zeros(win.shape[:2], np.uint8)
    rect = (bx0 - wx0, by0 - wy0, bx1 - bx0, by1 - by0)
    if seed is not None:
        cv2.setRNGSeed(int(seed))  # GrabCut's k-means init draws from OpenCV's per-thread RNG
    try:
        cv2.grabCut(
            win,
            gc,
            rect,
            np.zeros((1, 65), np.float64),
            np.zeros((1, 65), np.float64),
            iterations,
            cv2.GC_INIT_WITH_RECT,
        )
    except cv2.error:
        return None, (bx0, by0, bx1, by1)
    fg = ((gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)).astype(np.uint8)
    fg = fg[by0 - wy0 : by1 - wy0, bx0 - wx0 : bx1 - wx0]
    if not fg.any():
        return None, (bx0, by0, bx1, by1)
    return fg, (bx0, by0, bx1, by1)


def _index(coco: dict[str, Any], where: str) -> tuple[dict[int, dict], dict[int, dict]]:
    images = {int(im["id"]): im for im in coco.get("images", [])}
    anns = {}
    for a in coco.get("annotations", []):
        if int(a["id"]) in anns:
            raise ValueError(f"{where}: duplicate annotation id {a['id']}")
        anns[int(a["id"])] = a
    return images, anns


def baseline_subset(gt_anns: dict[int, dict], max_boxes: int, seed: int = 0) -> set[int]:
    """Ids of the evaluable GT annotations (not crowd, with a segmentation) the GrabCut baseline runs on:
    all of them when ``max_boxes <= 0`` or there are no more than that, else a seeded choice of
    ``max_boxes`` (a function of the GT annotations only, so the same for every labeler)."""
    ids = sorted(i for i, a in gt_anns.items() if not a.get("iscrowd", 0) and a.get("segmentation"))
    if max_boxes <= 0 or len(ids) <= max_boxes:
        return set(ids)
    return {int(i) for i in np.random.default_rng(seed).choice(ids, size=int(max_boxes), replace=False)}


def _read_gt_image(im: dict[str, Any], image_root: str | Path, where: str) -> np.ndarray:
    """The GT image record ``im``'s pixels, checked against the size its JSON gives (``where`` names it)."""
    h, w = int(im["height"]), int(im["width"])
    path = image_path(Path(image_root) / "_", im, image_root)
    image = read_image(path)
    if image.shape[:2] != (h, w):
        raise ValueError(f"{where}: image id={im['id']} ({path}) is {image.shape[:2]} on disk, JSON says {(h, w)}")
    return image


def _grabcut_image(job: tuple[dict, str, str, list[tuple[int, list[float]]], int]) -> list[tuple[int, dict | None]]:
    """One image's GrabCut masks (a pool task): ``(image record, image root, where, [(ann id, box)],
    iterations)`` -> ``[(ann id, RLE or None for the box fallback)]``."""
    im, image_root, where, boxes, iterations = job
    h, w = int(im["height"]), int(im["width"])
    image = _read_gt_image(im, image_root, where)
    out = []
    for ann_id, box in boxes:
        m, reg = grabcut_mask(image, box, iterations, seed=ann_id)
        out.append((ann_id, None if m is None else rle_from_region(m, reg, h, w)))
    return out


def grabcut_rles(
    gt_images: dict[int, dict], chosen: list[dict], image_root: str | Path, iterations: int, num_workers: int = 0,
    show_progress: bool = True, gt_name: str = "ground truth",
) -> dict[int, dict | None]:
    """GrabCut RLE (None: failed / empty, the caller uses the box) of every annotation in ``chosen``, one
    task per image, in ``num_workers`` processes (0: in this one). Results do not depend on ``num_workers``."""
    by_image: dict[int, list[tuple[int, list[float]]]] = defaultdict(list)
    for a in chosen:
        by_image[int(a["image_id"])].append((int(a["id"]), a["bbox"]))
    jobs = [(gt_images[i], str(image_root), gt_name, by_image[i], iterations) for i in sorted(by_image)]
    bar = tqdm(total=len(chosen), desc="grabcut baseline", disable=not show_progress)
    out: dict[int, dict | None] = {}
    if num_workers > 0:
        with get_context("spawn").Pool(num_workers) as pool:  # spawn: no fork of a process holding torch
            results = pool.imap(_grabcut_image, jobs, chunksize=max(len(jobs) // (8 * num_workers), 1))
            for res in results:
                out.update(res)
                bar.update(len(res))
    else:
        for job in jobs:
            out.update(_grabcut_image(job))
            bar.update(len(job[3]))
    bar.close()
    return out


def draw_overlay(image: np.ndarray, gt_masks: list[np.ndarray], pred_masks: list[np.ndarray]) -> np.ndarray:
    """RGB image with GT outlines in green and pseudo-mask outlines in red (2x upscaled if small)."""
    scale = 2 if max(image.shape[:2]) < 512 else 1
    out = (
        cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
        if scale > 1
        else image.copy()
    )
    for masks, colour in ((gt_masks, (0, 255, 0)), (pred_masks, (255, 0, 0))):
        for m in masks:
            if scale > 1:
                m = cv2.resize(m, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
            contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(out, contours, -1, colour, 1)
    return out


@dataclass
class _Tally:
    """Per-method IoU records and the counts :func:`evaluate_masks` reports."""

    records: dict[str, list[dict[str, Any]]]
    scored: list[tuple[float, float]] = field(default_factory=list)  # (score, IoU) of masks that carry a score
    not_evaluated: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    grabcut_fallbacks: int = 0


def _score_image(tally: _Tally, anns: list[dict], h: int, w: int, pred_anns: dict[int, dict],
                 grabcut: dict[int, dict | None], names: tuple[str, str], keep_masks: bool
                 ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Score one image's GT annotations (labeler and baselines); returns (GT, pred) masks for its overlay."""
    gt_name, pred_name = names
    ov_gt, ov_pred = [], []
    for a in anns:
        if a.get("iscrowd", 0):
            tally.not_evaluated["crowd"] += 1
            continue
        if not a.get("segmentation"):
            tally.not_evaluated["no_gt_segmentation"] += 1
            continue
        g = segmentation_to_rle(a["segmentation"], h, w, f"{gt_name}: annotation id={a['id']} field 'segmentation'")
        p_ann = pred_anns[int(a["id"])]
        p = segmentation_to_rle(p_ann.get("segmentation"), h, w,
                                f"{pred_name}: annotation id={a['id']} field 'segmentation'")
        tally.records["labeler"].append(iou_record(p, g, a))
        if p_ann.get("score") is not None:
            tally.scored.append((float(p_ann["score"]), tally.records["labeler"][-1]["iou"]))
        if "box" in tally.records:
            tally.records["box"].append(iou_record(box_rle(a["bbox"], h, w), g, a))
        if int(a["id"]) in grabcut:
            gc_rle = grabcut[int(a["id"])]
            if gc_rle is None:
                tally.grabcut_fallbacks += 1
                gc_rle = box_rle(a["bbox"], h, w)
            tally.records["grabcut"].append(iou_record(gc_rle, g, a))
        if keep_masks:
            ov_gt.append(decode_segmentation(g, h, w))
            ov_pred.append(decode_segmentation(p, h, w))
    return ov_gt, ov_pred


def _summary(tally: _Tally, cat_names: dict[int, str], options: MaskQualityParams) -> dict[str, Any]:
    result = summarize(tally.records["labeler"], cat_names)
    if tally.scored:
        result["confidence"] = ranking_metrics([s for s, _ in tally.scored], [i for _, i in tally.scored])
    result["baselines"] = {b: summarize(tally.records[b], cat_names) for b in options.baselines}
    if "grabcut" in options.baselines:
        gc = result["baselines"]["grabcut"]
        gc["fallbacks_to_box"], gc["iterations"] = tally.grabcut_fallbacks, options.grabcut_iterations
        if 0 < options.baseline_max_boxes < len(tally.records["labeler"]):  # subsampled: num_instances of how many
            gc["subsample_of"] = len(tally.records["labeler"])
    result["not_evaluated"] = dict(tally.not_evaluated)
    return result


def evaluate_masks(
    pred: dict[str, Any],
    gt: dict[str, Any],
    options: MaskQualityParams,
    image_root: str | Path | None = None,
    overlay_dir: str | Path | None = None,
    pred_name: str = "pseudo-labels",
    gt_name: str = "ground truth",
    show_progress: bool = True,
    num_workers: int = 0,
) -> dict[str, Any]:
    """Compare pseudo-masks ``pred`` with ``gt`` (COCO dicts, matched by annotation id); ``options``: the
    ``mask_quality`` params section (baselines, GrabCut, overlays).

    ``image_root`` (the GT JSON's directory) is needed for GrabCut and overlays. Every GT annotation is
    either evaluated or counted under ``not_evaluated`` with a reason; a GT annotation missing from
    ``pred`` is an error (pseudo-labelling must return every box). GrabCut runs on
    :func:`baseline_subset` (``baseline_max_boxes``, 0 = all; its size is the baseline's ``num_instances``)
    in ``num_workers`` processes.
    """
    baselines, num_overlays = tuple(options.baselines), options.num_overlays
    gt_images, gt_anns = _index(gt, gt_name)
    _, pred_anns = _index(pred, pred_name)
    cat_names = {int(c["id"]): str(c["name"]) for c in gt.get("categories", [])}
    if ("grabcut" in baselines or num_overlays > 0) and image_root is None:
        raise ValueError("evaluate_masks: image_root is required for the grabcut baseline and overlays")
    by_image: dict[int, list[dict]] = defaultdict(list)
    for a in gt_anns.values():
        by_image[int(a["image_id"])].append(a)
    missing = [aid for aid in gt_anns if aid not in pred_anns]
    if missing:
        raise ValueError(f"{pred_name}: {len(missing)} GT annotations have no pseudo-label (ids {missing[:5]}...)")
    grabcut: dict[int, dict | None] = {}
    if "grabcut" in baselines:
        chosen = baseline_subset(gt_anns, options.baseline_max_boxes, options.baseline_seed)
        unknown = sorted({int(gt_anns[i]["image_id"]) for i in chosen} - set(gt_images))
        if unknown:
            raise ValueError(f"{gt_name}: annotation(s) refer to unknown image_id {unknown[0]}")
        grabcut = grabcut_rles(gt_images, [gt_anns[i] for i in sorted(chosen)], image_root,
                               options.grabcut_iterations, num_workers, show_progress, gt_name)
    tally = _Tally(records={"labeler": [], **{b: [] for b in baselines}})
    overlays_written = []
    image_ids = sorted(by_image)
    overlay_ids = set(image_ids[:: max(len(image_ids) // max(num_overlays, 1), 1)][:num_overlays])
    for image_id in tqdm(image_ids, desc="mask quality", disable=not show_progress):
        if image_id not in gt_images:
            raise ValueError(f"{gt_name}: annotation(s) refer to unknown image_id {image_id}")
        im = gt_images[image_id]
        draw = image_id in overlay_ids and overlay_dir is not None
        image = _read_gt_image(im, image_root, gt_name) if draw else None
        ov_gt, ov_pred = _score_image(tally, by_image[image_id], int(im["height"]), int(im["width"]), pred_anns,
                                      grabcut, (gt_name, pred_name), image_id in overlay_ids)
        if draw:
            out = Path(overlay_dir) / f"{image_id}_{Path(str(im['file_name'])).stem}.png"
            save_png_atomic(out, draw_overlay(image, ov_gt, ov_pred))
            overlays_written.append(str(out))
    result = _summary(tally, cat_names, options)
    result["num_gt_annotations"] = len(gt_anns)
    result["overlays"] = overlays_written
    return result
