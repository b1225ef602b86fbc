"""Masked-autoencoder pre-training of a timm ViT on the training images (an experiment, not a stage).

    .venv/bin/python benchmarks/mae_pretrain.py --boxes data/prepared/train_boxes.json \
        --out models/mae_vit_tiny.pth [--steps 1100] [--batch-size 64] [--crop-size 128]

MAE (He et al. 2022) as the paper's labeler encoder was pre-trained, on the unlabelled training images:
random-resized crops (scale 0.15-1, flip), 75 % of the patches masked, a 2-block decoder (width 128)
predicting the per-patch-normalised pixels of the masked patches; AdamW (0.9, 0.95), wd 0.05, lr 6e-4 at
batch 64 (MAE's 1.5e-4 per 256 samples, x4 for the tiny set), 5 % warm-up, cosine. Writes the encoder's timm
state dict, which a labeler loads with ``labeler.models.<name>.pretrained: <path>``. docs/labeler.md reports
what it did for the shapes set.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import timm
import torch
from timm.models.vision_transformer import Block
from torch import nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mal.common.coco_io import load_coco  # noqa: E402
from mal.common.files import atomic_path  # noqa: E402
from mal.common.images import image_path, read_image  # noqa: E402
from mal.labeler.model import normalize  # noqa: E402


class MAEDecoder(nn.Module):
    """Visible tokens ``B x (1 + K) x C`` + restore order ``B x N`` -> pixel predictions ``B x N x p*p*3``."""

    def __init__(self, enc_dim: int, num_patches: int, patch: int, dim: int = 128, depth: int = 2):
        super().__init__()
        self.embed = nn.Linear(enc_dim, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, num_patches + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, 4) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)
        self.pred = nn.Linear(dim, patch * patch * 3)

    def forward(self, visible: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
        y = self.embed(visible)
        b, n = restore.shape
        masked = self.mask_token.expand(b, n - (y.shape[1] - 1), -1)
        patches = torch.cat([y[:, 1:], masked], 1)
        patches = torch.gather(patches, 1, restore[..., None].expand(-1, -1, y.shape[-1]))
        y = torch.cat([y[:, :1], patches], 1) + self.pos
        return self.pred(self.norm(self.blocks(y)))[:, 1:]


def mae_loss(vit: nn.Module, decoder: MAEDecoder, x: torch.Tensor, mask_ratio: float) -> torch.Tensor:
    """Mean squared error on the masked patches (normalised pixels); ``x``: ``B x 3 x S x S``."""
    b = x.shape[0]
    p = vit.patch_embed.patch_size[0]
    tokens = vit.patch_embed(x) + vit.pos_embed[:, 1:]
    n, c = tokens.shape[1], tokens.shape[2]
    keep = int(n * (1 - mask_ratio))
    shuffle = torch.rand(b, n, device=x.device).argsort(1)
    restore = shuffle.argsort(1)
    tokens = torch.gather(tokens, 1, shuffle[:, :keep, None].expand(-1, -1, c))
    cls = (vit.cls_token + vit.pos_embed[:, :1]).expand(b, -1, -1)
    visible = vit.norm(vit.blocks(torch.cat([cls, tokens], 1)))
    pred = decoder(visible, restore)
    target = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(b, n, -1)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    masked = torch.ones(b, n, device=x.device)
    masked[:, :keep] = 0
    masked = torch.gather(masked, 1, restore)
    return (((pred - target) ** 2).mean(-1) * masked).sum() / masked.sum()


def random_view(img: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Random-resized crop (area 15-100 %, aspect 3/4-4/3) with a horizontal flip, ``size x size x 3``."""
    h, w = img.shape[:2]
    area = rng.uniform(0.15, 1.0) * h * w
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    cw, ch = int(min(w, math.sqrt(area * aspect))), int(min(h, math.sqrt(area / aspect)))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    view = cv2.resize(img[y0 : y0 + ch, x0 : x0 + cw], (size, size), interpolation=cv2.INTER_LINEAR)
    return view[:, ::-1] if rng.random() < 0.5 else view


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boxes", default="data/prepared/train_boxes.json", help="COCO JSON listing the images")
    ap.add_argument("--out", required=True, help="where to write the encoder's timm state dict (.pth)")
    ap.add_argument("--encoder", default="vit_tiny_patch16_224")
    ap.add_argument("--crop-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=1100)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=6e-4)
    ap.add_argument("--mask-ratio", type=float, default=0.75)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    coco, _ = load_coco(args.boxes)
    images = [read_image(image_path(args.boxes, im)) for im in coco["images"]]
    vit = timm.create_model(args.encoder, pretrained=False, num_classes=0, img_size=args.crop_size)
    if getattr(vit, "cls_token", None) is None or not hasattr(vit, "pos_embed"):
        raise SystemExit(f"{args.encoder}: this script pre-trains plain ViTs with a class token only")
    n = (args.crop_size // vit.patch_embed.patch_size[0]) ** 2
    decoder = MAEDecoder(vit.embed_dim, n, vit.patch_embed.patch_size[0])
    params = list(vit.parameters()) + list(decoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.05)
    warmup = max(1, int(0.05 * args.steps))
    t0 = time.time()
    bar = tqdm(range(args.steps), desc="mae", unit="step")
    for step in bar:
        cos = 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = args.lr * min(1.0, (step + 1) / warmup) * cos
        views = np.stack([random_view(images[rng.integers(len(images))], rng, args.crop_size)
                          for _ in range(args.batch_size)])
        loss = mae_loss(vit, decoder, normalize(views), args.mask_ratio)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
    with atomic_path(args.out) as tmp:
        torch.save(vit.state_dict(), tmp)
    print(f"{args.out}: {args.steps} steps x {args.batch_size} views, final loss {loss.item():.3f}, "
          f"{time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
