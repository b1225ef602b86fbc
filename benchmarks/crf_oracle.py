"""How much can the CRF alone carve out of a box? (an analysis script, not a test)

    .venv/bin/python benchmarks/crf_oracle.py --gt data/prepared/val_gt.json [--crop-size 128] \
        [--sigmas 0.1 0.3 0.5] [--start 0.6] [--clamp 0.1 0.9] [--normalize-affinity] [--checkpoint CKPT]

For every GT box of ``--gt``: the fixed 1.3x crop, ImageNet-normalised and resized to the mask resolution
(``crop_size / 4``, antialiased, as in training), a uniform foreground start ``--start`` inside the box,
100 iterations of the training code's :func:`mal.labeler.losses.crf_refine`, threshold 0.5; mean IoU against the GT
mask on the same grid, next to the box-as-mask IoU. Also prints the mean 3x3 colour affinity inside objects
and inside background. No network is involved: this is the signal the CRF term can add by itself.
With ``--checkpoint`` the start is instead a trained labeler's probability on the same crops (as the CRF
target is built in training, without the student's photometric jitter): it prints the labeler's own IoU and
that of the target the CRF would train it towards.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mal.common.coco_io import load_coco  # noqa: E402
from mal.common.images import image_path, read_image  # noqa: E402
from mal.common.masks import decode_segmentation  # noqa: E402
from mal.labeler.crops import box_mask_in_crop, crop_and_resize, expand_box_fixed  # noqa: E402
from mal.labeler.losses import crf_refine, neighbour_affinity  # noqa: E402
from mal.labeler.model import load_labeler, normalize  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gt", default="data/prepared/val_gt.json")
    ap.add_argument("--crop-size", type=int, default=128)
    ap.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    ap.add_argument("--start", type=float, default=0.6, help="uniform fg probability inside the box")
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--clamp", type=float, nargs=2, default=[0.1, 0.9])
    ap.add_argument("--normalize-affinity", action="store_true", help="mean, not sum, of weighted logits")
    ap.add_argument("--checkpoint", help="start from this labeler's probabilities instead of --start")
    args = ap.parse_args(argv)
    coco, _ = load_coco(args.gt, require_masks=True)
    images = {im["id"]: im for im in coco["images"]}
    s, m = args.crop_size, args.crop_size // 4
    crops, boxes, gts, areas, cache = [], [], [], [], {}
    for a in coco["annotations"]:
        if a.get("iscrowd", 0):
            continue
        im = images[a["image_id"]]
        if im["id"] not in cache:
            cache = {im["id"]: read_image(image_path(args.gt, im))}
        win = expand_box_fixed(a["bbox"], 1.3)
        crops.append(crop_and_resize(cache[im["id"]], win, s))
        gt = decode_segmentation(a["segmentation"], im["height"], im["width"]).astype(np.uint8) * 255
        gts.append(crop_and_resize(gt, win, m) > 127)
        boxes.append(box_mask_in_crop(a["bbox"], win, m))
        areas.append(float(a["bbox"][2] * a["bbox"][3]))
    batch = normalize(np.stack(crops))
    image = F.interpolate(batch, size=(m, m), mode="bilinear", antialias=True)
    box = torch.from_numpy(np.stack(boxes)).float()[:, None]
    gt = torch.from_numpy(np.stack(gts))[:, None]

    def miou(pred: torch.Tensor) -> float:
        inter = (pred & gt).flatten(1).sum(1).float()
        return float((inter / (pred | gt).flatten(1).sum(1).clamp(min=1).float()).mean())

    print(f"{args.gt}: {len(crops)} boxes, mask grid {m}x{m}; box-as-mask IoU {miou(box > 0.5):.3f}")
    start = torch.full_like(box, args.start)
    if args.checkpoint:
        model, cfg = load_labeler(args.checkpoint)
        if cfg["crop_size"] != s:
            raise SystemExit(f"{args.checkpoint}: crop size {cfg['crop_size']}, not --crop-size {s}")
        with torch.no_grad():
            start = torch.sigmoid(model(batch, torch.tensor(areas)))
        print(f"{args.checkpoint}: labeler IoU {miou(start * box >= 0.5):.3f} (start of the CRF below)")
    what = "target" if args.checkpoint else "from-box"
    for sigma in args.sigmas:
        k = neighbour_affinity(image, sigma)
        k8 = torch.cat([k[:, :4], k[:, 5:]], 1).mean(1, keepdim=True)  # mean over the 8 neighbours
        out = crf_refine(start, image, box, args.iterations, sigma, tuple(args.clamp),
                         args.normalize_affinity)
        print(
            f"sigma {sigma:4.2f}: CRF-{what} IoU {miou(out >= 0.5):.3f}   mean 3x3 affinity "
            f"objects {float(k8[gt].mean()):.2f} background {float(k8[~gt].mean()):.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
