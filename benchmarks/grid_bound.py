"""What mIoU could a perfect labeler reach through a g x g token grid? (an analysis script, not a test)

    .venv/bin/python benchmarks/grid_bound.py --gt data/prepared/val_gt.json [--grids 4 8 16 32]

For every GT instance: the fixed 1.3x crop of its mask at ``--crop-size``, area-averaged down to g x g (the
best a grid of that size can say: the object fraction of every cell), bilinearly resized back, threshold 0.5,
IoU against the crop-size mask. Prints the class-averaged and per-class mean IoU per grid. A ViT/16 at 128 px
crops has an 8 x 8 token grid, a ViT/8 a 16 x 16 one: this bounds what the encoder's resolution alone allows.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mal.common.coco_io import load_coco  # noqa: E402
from mal.common.masks import decode_segmentation  # noqa: E402
from mal.labeler.crops import crop_and_resize, expand_box_fixed  # noqa: E402


def grid_bound(gt_json: str, grids: list[int], crop_size: int = 128) -> dict[int, dict[str, float]]:
    """``{grid: {"miou": class-averaged, <class name>: per-class mean IoU}}`` over the non-crowd GT masks."""
    coco, _ = load_coco(gt_json, require_masks=True)
    images = {im["id"]: im for im in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    ious: dict[int, dict[str, list[float]]] = {g: {} for g in grids}
    for a in coco["annotations"]:
        if a.get("iscrowd", 0):
            continue
        im = images[a["image_id"]]
        mask = decode_segmentation(a["segmentation"], im["height"], im["width"]).astype(np.uint8) * 255
        crop = crop_and_resize(mask, expand_box_fixed(a["bbox"], 1.3), crop_size).astype(np.float32) / 255.0
        ref = crop > 0.5
        for g in grids:
            cells = cv2.resize(crop, (g, g), interpolation=cv2.INTER_AREA)
            back = cv2.resize(cells, (crop_size, crop_size), interpolation=cv2.INTER_LINEAR) > 0.5
            iou = float((back & ref).sum()) / max(1.0, float((back | ref).sum()))
            ious[g].setdefault(names[a["category_id"]], []).append(iou)
    out: dict[int, dict[str, float]] = {}
    for g, per in ious.items():
        per_class = {k: float(np.mean(v)) for k, v in per.items()}
        out[g] = {"miou": float(np.mean(list(per_class.values()))) if per_class else 0.0, **per_class}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gt", default="data/prepared/val_gt.json")
    ap.add_argument("--grids", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--crop-size", type=int, default=128)
    args = ap.parse_args(argv)
    for g, res in grid_bound(args.gt, args.grids, args.crop_size).items():
        per = "  ".join(f"{k} {v:.3f}" for k, v in res.items() if k != "miou")
        print(f"grid {g:2d} x {g:<2d}: mIoU {res['miou']:.3f}   {per}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
