"""Do an encoder's patch tokens tell object from background inside a box? (an analysis script, not a test)

    .venv/bin/python benchmarks/token_probe.py --gt data/prepared/val_gt.json \
        [--weights labeler_checkpoint.pt | timm_state_dict.pth ...] [--crop-size 128]

For every GT box of ``--gt``: the fixed 1.3x crop, encoded by ``--encoder`` (random init, then each
``--weights`` file: a labeler checkpoint's student encoder or a plain timm state dict). Score of a token
inside the box = Euclidean distance of its feature to the mean feature of the tokens outside the box
(the context). Printed: the ROC AUC of that score for object tokens (>= 80 % GT) against background tokens
(<= 20 % GT), pooled over boxes; also for the raw mean colour of each patch. 1.0 = the context contrast
alone separates them, 0.5 = no signal.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import timm
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mal.common.coco_io import load_coco  # noqa: E402
from mal.common.images import image_path, read_image  # noqa: E402
from mal.common.masks import decode_segmentation  # noqa: E402
from mal.labeler.crops import box_mask_in_crop, crop_and_resize, expand_box_fixed  # noqa: E402
from mal.labeler.model import normalize  # noqa: E402


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mann-Whitney ROC AUC of ``scores`` for ``labels`` in {0, 1} (ties broken by order); NaN without
    both classes (e.g. a token grid too coarse for any pure background token)."""
    if labels.min(initial=1) == labels.max(initial=0):
        return float("nan")
    ranks = scores.argsort().argsort() + 1.0
    n1 = float(labels.sum())
    n0 = float(len(labels)) - n1
    return float((ranks[labels == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def context_auc(feats: np.ndarray, gt_frac: np.ndarray, in_box: np.ndarray) -> float:
    """``feats``: ``N x g x g x C`` tokens; ``gt_frac`` / ``in_box``: ``N x g x g`` -> AUC (see module doc)."""
    scores, labels = [], []
    for f, t, b in zip(feats, gt_frac, in_box, strict=True):
        inside = b > 0.5
        ctx = f[~inside].mean(0) if (~inside).any() else f.reshape(-1, f.shape[-1]).mean(0)
        keep = inside & ((t >= 0.8) | (t <= 0.2))
        scores.append(np.linalg.norm(f[keep] - ctx, axis=-1))
        labels.append(t[keep] >= 0.8)
    return roc_auc(np.concatenate(labels).astype(int), np.concatenate(scores))


def load_encoder_state(path: str) -> dict[str, torch.Tensor]:
    """A timm state dict from a labeler checkpoint (its student's encoder) or a plain state-dict file."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if "student" in state:
        prefix = "encoder.model."
        return {k[len(prefix) :]: v for k, v in state["student"].items() if k.startswith(prefix)}
    return state.get("model", state)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gt", default="data/prepared/val_gt.json")
    ap.add_argument("--encoder", default="vit_tiny_patch16_224")
    ap.add_argument("--crop-size", type=int, default=128)
    ap.add_argument("--weights", nargs="*", default=[], help="labeler checkpoints or timm state dicts")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    coco, _ = load_coco(args.gt, require_masks=True)
    images = {im["id"]: im for im in coco["images"]}
    size = args.crop_size
    crops, gt_frac, in_box = [], [], []
    model = timm.create_model(args.encoder, pretrained=False, num_classes=0, img_size=size)
    patch = model.patch_embed.patch_size[0]
    grid = size // patch
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0):
            continue
        im = images[ann["image_id"]]
        img = read_image(image_path(args.gt, im))
        window = expand_box_fixed(ann["bbox"], 1.3)
        crops.append(crop_and_resize(img, window, size))
        gt = decode_segmentation(ann["segmentation"], im["height"], im["width"]).astype(np.uint8) * 255
        frac = (crop_and_resize(gt, window, size) > 127).reshape(grid, patch, grid, patch).mean((1, 3))
        gt_frac.append(frac)
        in_box.append(box_mask_in_crop(ann["bbox"], window, grid))
    gt_frac_a, in_box_a = np.stack(gt_frac), np.stack(in_box)
    x = normalize(np.stack(crops))
    colour = x.reshape(len(crops), 3, grid, patch, grid, patch).mean((3, 5)).permute(0, 2, 3, 1).numpy()
    print(f"{len(crops)} boxes, {grid}x{grid} tokens")
    print(f"{'raw patch colour':<40} AUC {context_auc(colour, gt_frac_a, in_box_a):.3f}")
    for name in ["random init"] + list(args.weights):
        if name != "random init":
            missing, _ = model.load_state_dict(load_encoder_state(name), strict=False)
            if missing:
                raise SystemExit(f"{name}: {len(missing)} encoder keys missing, e.g. {missing[:3]}")
        with torch.no_grad():
            tokens = model.forward_features(x)[:, model.num_prefix_tokens :]
        feats = tokens.reshape(len(crops), grid, grid, -1).numpy()
        print(f"{Path(name).name if name != 'random init' else name:<40} AUC {context_auc(feats, gt_frac_a, in_box_a):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
