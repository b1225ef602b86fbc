"""Look at what a labeler predicts: one row per GT box (an analysis script, not a test).

    .venv/bin/python benchmarks/show_crops.py --checkpoint models/labeler/vit_tiny/checkpoint.pt \
        --gt data/prepared/val_gt.json --out crops.png [--num 8] [--threshold 0.4] [--scale 0.5]

Columns: the fixed 1.3x crop the labeler sees, the GT mask in it, the student's foreground probability
(black 0, white 1) and that probability times the box mask at ``--threshold`` (what the pseudo-label keeps).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mal.common.coco_io import load_coco  # noqa: E402
from mal.common.images import image_path, read_image  # noqa: E402
from mal.common.masks import decode_segmentation  # noqa: E402
from mal.labeler.crops import box_mask_in_crop, crop_and_resize, expand_box_fixed  # noqa: E402
from mal.labeler.model import load_labeler, normalize  # noqa: E402


def crop_rows(checkpoint: str, gt_json: str, num: int, threshold: float) -> np.ndarray:
    """``(num * S) x (4 * S) x 3`` uint8 RGB, ``S`` = the labeler's crop size."""
    model, cfg = load_labeler(checkpoint)
    coco, _ = load_coco(gt_json, require_masks=True)
    images = {im["id"]: im for im in coco["images"]}
    s = cfg["crop_size"]
    rows = []
    for a in [a for a in coco["annotations"] if not a.get("iscrowd", 0)][:num]:
        im = images[a["image_id"]]
        window = expand_box_fixed(a["bbox"], 1.3)
        crop = crop_and_resize(read_image(image_path(gt_json, im)), window, s)
        gt = decode_segmentation(a["segmentation"], im["height"], im["width"]).astype(np.uint8) * 255
        with torch.no_grad():
            logits = model(normalize(crop[None]), torch.tensor([float(a["bbox"][2] * a["bbox"][3])]))
        prob = cv2.resize(torch.sigmoid(logits)[0, 0].numpy(), (s, s), interpolation=cv2.INTER_LINEAR)
        box = cv2.resize(box_mask_in_crop(a["bbox"], window, s).astype(np.float32), (s, s)) > 0.5
        gt_crop = (crop_and_resize(gt, window, s) > 127) * 255  # binary, as the IoU sees it
        gray = [gt_crop, (prob * 255).astype(np.uint8), ((prob * box) > threshold) * 255]
        rows.append(np.concatenate([crop] + [np.repeat(g.astype(np.uint8)[..., None], 3, 2) for g in gray], 1))
    if not rows:
        raise SystemExit(f"{gt_json}: no non-crowd annotations to show")
    return np.concatenate(rows, 0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--gt", default="data/prepared/val_gt.json")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--num", type=int, default=8)
    ap.add_argument("--threshold", type=float, default=0.4)
    ap.add_argument("--scale", type=float, default=1.0, help="resize the sheet (e.g. 0.5 for docs)")
    args = ap.parse_args(argv)
    sheet = crop_rows(args.checkpoint, args.gt, args.num, args.threshold)
    if args.scale != 1.0:
        sheet = cv2.resize(sheet, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), sheet[..., ::-1])
    print(f"{args.out}: {sheet.shape[0]} x {sheet.shape[1]} px")
    return 0


if __name__ == "__main__":
    sys.exit(main())
