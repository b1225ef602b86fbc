"""Which per-mask confidence ranks pseudo-masks by their true IoU? (the candidates of mal.pseudo.confidence)

    PYTHONPATH=. python benchmarks/confidence_candidates.py [--gt data/prepared/val_gt.json]
        [--checkpoint models/labeler/vit_tiny/checkpoint.pt] [--threshold T] [--agreement] [--threads 2]

Labels the GT file's boxes with the labelling code itself (``crop_boxes`` -> ``Predictor`` -> ``paste_annotation``:
the masks and the ``score`` that ``label_coco`` writes; ``--threshold`` defaults to the checkpoint's), scores
every candidate on the same crop-level probabilities, and prints per candidate: Spearman(candidate, IoU),
the share of bad masks (IoU < 0.7) among the lowest-scored 20 % and its ratio to chance, and its cost in
% of the end-to-end labelling time (``label_images`` on the same boxes). Box fallbacks score 0 for every
candidate, as in the output. ``--agreement`` adds flip and student-teacher agreement (IoU of the two
thresholded in-box masks): they need a second forward, whose measured cost is printed the same way.
Choose on val; report the choice on train.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import numpy as np
import torch

from mal.common.images import image_path, read_image
from mal.common.masks import segmentation_to_rle
from mal.common.miou import iou_record
from mal.labeler.crops import box_mask_in_crop
from mal.labeler.model import checkpoint_mask_threshold
from mal.pseudo.boxes import plan_annotations
from mal.pseudo.confidence import CANDIDATES, CHOSEN, candidate_scores, mask_confidence, ranking_metrics
from mal.pseudo.engine import fallback_annotation
from mal.pseudo.label import (
    LabelOptions,
    Predictor,
    crop_boxes,
    label_images,
    load_boxes,
    paste_annotation,
)


def _agreement(a: np.ndarray, b: np.ndarray, inbox: np.ndarray, thr: float) -> float:
    """IoU of two ``M x M`` probability maps thresholded inside the box (1 when both are empty)."""
    ma, mb = (a > thr) & (inbox > 0), (b > thr) & (inbox > 0)
    union = int((ma | mb).sum())
    return float((ma & mb).sum() / union) if union else 1.0


def collect(args: argparse.Namespace, pred: Predictor, opts: LabelOptions) -> tuple[dict, list[float], dict]:
    """Per candidate the scores, the IoUs (same order), and seconds spent per extra signal."""
    coco = load_boxes(args.gt)
    images = {im["id"]: im for im in coco["images"]}
    teacher = Predictor(args.checkpoint, "teacher", device="cpu") if args.agreement else None
    scores: dict[str, list[float]] = defaultdict(list)
    ious: list[float] = []
    seconds: dict[str, float] = defaultdict(float)
    for iid, plans in plan_annotations(coco, opts.min_box_side).items():
        im = images[iid]
        h, w = int(im["height"]), int(im["width"])
        model = [p for p in plans if p.action == "model"]
        probs, extra = {}, {}
        if model:
            crops, windows = crop_boxes(read_image(image_path(args.gt, im)), model, opts.expand, pred.crop_size)
            areas = np.array([p.box[2] * p.box[3] for p in model], np.float32)
            probs = dict(zip([p.ann_index for p in model], zip(pred(crops, areas), windows, strict=True), strict=True))
            if args.agreement:
                t = time.perf_counter()
                flip = pred(crops[:, :, ::-1].copy(), areas)[:, :, ::-1]
                seconds["flip_agreement"] += time.perf_counter() - t
                t = time.perf_counter()
                other = teacher(crops, areas)
                seconds["teacher_agreement"] += time.perf_counter() - t
                extra = {p.ann_index: (f, o) for p, f, o in zip(model, flip, other, strict=True)}
        for p in plans:
            a = coco["annotations"][p.ann_index]
            if a.get("iscrowd", 0) or not a.get("segmentation") or p.action == "skip":
                continue
            if p.action == "model":
                prob, win = probs[p.ann_index]
                out = paste_annotation(a, p, prob, win, im, opts.threshold)
            else:
                out = fallback_annotation(a, p, h, w, p.reason)
            ious.append(iou_record(out["segmentation"], segmentation_to_rle(a["segmentation"], h, w), a)["iou"])
            if out["mal"]["source"] != "labeler":
                for name in list(CANDIDATES) + (["flip_agreement", "teacher_agreement"] if args.agreement else []):
                    scores[name].append(0.0)
                continue
            inbox = box_mask_in_crop(p.box, win, prob.shape[-1])
            t = time.perf_counter()
            cands = candidate_scores(prob * inbox, inbox, opts.threshold)
            seconds["all candidates"] += time.perf_counter() - t
            t = time.perf_counter()
            assert out["score"] == mask_confidence(prob * inbox, inbox, opts.threshold)  # what is written
            seconds[CHOSEN] += time.perf_counter() - t
            for name, v in cands.items():
                scores[name].append(v)
            if args.agreement:
                f, o = extra[p.ann_index]
                scores["flip_agreement"].append(_agreement(prob, f, inbox, opts.threshold))
                scores["teacher_agreement"].append(_agreement(prob, o, inbox, opts.threshold))
    return scores, ious, seconds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gt", default="data/prepared/val_gt.json", help="COCO file with boxes and GT masks")
    ap.add_argument("--checkpoint", default="models/labeler/vit_tiny/checkpoint.pt")
    ap.add_argument("--threshold", type=float, default=None, help="default: the checkpoint's")
    ap.add_argument("--agreement", action="store_true", help="also flip / student-teacher agreement")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    thr = checkpoint_mask_threshold(args.checkpoint) if args.threshold is None else args.threshold
    opts = LabelOptions(threshold=thr)
    pred = Predictor(args.checkpoint, "student", device="cpu")
    scores, ious, seconds = collect(args, pred, opts)
    coco = load_boxes(args.gt)
    label_seconds = label_images(coco, args.gt, pred, opts)["stats"]["seconds"]
    print(f"{args.gt}: {len(ious)} masks, threshold {thr}, mIoU {np.mean(ious):.4f}; "
          f"labelling {label_seconds:.2f} s end to end; written score: {CHOSEN}")
    print(f"{'candidate':<26}{'spearman':>9}{'bad share':>10}{'lowest 20%':>11}{'x chance':>9}{'cost %':>8}")
    for name, vals in scores.items():
        r = ranking_metrics(vals, ious)
        cost = seconds.get(name, seconds["all candidates"] / len(CANDIDATES))  # a candidate: its share
        rho = "-" if r["spearman"] is None else f"{r['spearman']:.3f}"
        ratio = "-" if r["ratio_vs_chance"] is None else f"{r['ratio_vs_chance']:.2f}"
        print(f"{name:<26}{rho:>9}{r['bad_share']:>10.3f}{r['bad_share_in_lowest']:>11.3f}{ratio:>9}"
              f"{100 * cost / label_seconds:>8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
