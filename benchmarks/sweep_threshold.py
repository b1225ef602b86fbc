"""Choose the pseudo-mask threshold by measurement: mIoU vs threshold on a held-out GT set.

    python benchmarks/sweep_threshold.py --checkpoint models/labeler/vit_tiny/checkpoint.pt \
        --gt data/prepared/val_gt.json [--thresholds 0.1 0.2 0.3 0.4 0.5 0.6 0.7] [--which student]

Prompts the labeler with the GT boxes of ``--gt`` (default: the validation split, so the training masks
are not used to tune), runs the network once, and evaluates every threshold with the same code as stage
``mask_quality`` (class-averaged mIoU, instance mIoU, box baseline). Prints a table; pick the best
threshold for ``params.yaml`` ``pseudo_label.threshold``.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

from mal.config.pseudo import RunPseudoLabelParams
from mal.config.quality import MaskQualityParams as MQ
from mal.pseudo.label import LabelOptions, Predictor, label_images, load_boxes
from mal.pseudo.quality import evaluate_masks


class CachedPredictor:
    """Runs the labeler once per batch of crops; later thresholds reuse the probabilities."""

    def __init__(self, inner: Predictor):
        self.inner, self.crop_size, self.mask_size = inner, inner.crop_size, inner.mask_size
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, crops: np.ndarray, box_areas: np.ndarray) -> np.ndarray:
        key = hashlib.sha1(crops.tobytes() + box_areas.tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.inner(crops, box_areas)
        return self.cache[key]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--gt", default="data/prepared/val_gt.json")
    ap.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7])
    ap.add_argument("--which", default="student", choices=["student", "teacher", "average"])
    ap.add_argument("--flip-tta", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    gt = load_boxes(args.gt)
    pred = CachedPredictor(Predictor(args.checkpoint, args.which, args.flip_tta))
    rows = []
    for i, thr in enumerate(args.thresholds):
        opts = LabelOptions(threshold=thr, which=args.which, flip_tta=args.flip_tta)
        res = label_images(gt, args.gt, pred, opts, runtime=RunPseudoLabelParams(show_progress=i == 0))
        out = {**gt, "annotations": list(res["annotations"].values())}
        q = evaluate_masks(out, gt, MQ(baselines=["box"], num_overlays=0), show_progress=False)
        rows.append(
            (
                thr,
                q["miou"],
                q["miou_instance"],
                q["baselines"]["box"]["miou"],
                res["stats"].get("fallback_empty_prediction", 0),
            )
        )
    print(f"{Path(args.gt).name}: {len(gt['annotations'])} boxes, {args.which}, flip_tta={args.flip_tta}")
    print("threshold   miou   miou_instance   box_miou   empty->box")
    for thr, m, mi, b, e in rows:
        print(f"{thr:9.2f} {m:7.4f} {mi:14.4f} {b:10.4f} {e:11d}")
    best = max(rows, key=lambda r: r[1])
    print(f"best threshold: {best[0]} (miou {best[1]:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
