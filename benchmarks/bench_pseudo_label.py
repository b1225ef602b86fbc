"""Benchmark: pseudo-labelling throughput vs the bare encoder forward on the same batches.

    python benchmarks/bench_pseudo_label.py [--checkpoint models/labeler/vit_tiny/checkpoint.pt]
        [--boxes data/prepared/train_boxes.json] [--threads 2] [--max-boxes 256] [--num-workers 0]

Prints
- labelling boxes/s: the whole path (read image, crop, normalise, labeler forward, sigmoid x box,
  paste, threshold, RLE, the mask's confidence ``score``: always on) as run by
  ``mal.pseudo.label.label_images``;
- bare-encoder boxes/s: only ``model.encoder(normalize(crops))`` on the same crops in the same batches;
- the ratio (target >= 0.8) and, for reference, the full labeler forward (encoder + decoder) alone.

Without a checkpoint (or with ``--encoder`` / ``--crop-size`` / ``--encoder-args``) a randomly initialised labeler with the
``params.yaml`` ``labeler.models.<name>`` cfg is used (throughput does not depend on the weights).
No timed assertions: numbers are printed only.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from mal.config.pseudo import RunPseudoLabelParams
from mal.labeler.crops import crop_and_resize, expand_box_fixed
from mal.pseudo.label import LabelOptions, Predictor, label_images, load_boxes, plan_annotations


def _subset(coco: dict, max_boxes: int) -> dict:
    """The first images whose boxes add up to about ``max_boxes``."""
    keep, n = [], 0
    by_image: dict[int, int] = {}
    for a in coco["annotations"]:
        by_image[a["image_id"]] = by_image.get(a["image_id"], 0) + 1
    for im in coco["images"]:
        if n >= max_boxes:
            break
        keep.append(im)
        n += by_image.get(im["id"], 0)
    ids = {im["id"] for im in keep}
    return {**coco, "images": keep, "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}


def _checkpoint(args: argparse.Namespace) -> Path:
    if args.checkpoint and Path(args.checkpoint).is_file() and not (args.encoder or args.crop_size
                                                                     or args.encoder_args):
        return Path(args.checkpoint)
    from mal.config import load_params
    from mal.labeler.model import build_labeler, save_checkpoint

    cfg = load_params(args.params).labeler.models[args.labeler].model_cfg()
    cfg.update({k: v for k, v in (("encoder", args.encoder), ("crop_size", args.crop_size)) if v})
    if args.encoder_args is not None:
        cfg["encoder_args"] = yaml.safe_load(args.encoder_args) or {}
    cfg["pretrained"] = False
    print(f"random labeler (no checkpoint used) with cfg {cfg}")
    torch.manual_seed(0)
    model = build_labeler(cfg)
    path = Path(tempfile.mkdtemp(prefix="bench_pl_")) / "checkpoint.pt"
    save_checkpoint(path, model, model, model.cfg, {})
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labeler", default="vit_tiny")
    ap.add_argument("--checkpoint", default=None, help="default models/labeler/<labeler>/checkpoint.pt")
    ap.add_argument("--boxes", default="data/prepared/train_boxes.json")
    ap.add_argument("--encoder", default=None, help="random labeler, this timm encoder")
    ap.add_argument("--crop-size", type=int, default=None, help="random labeler at this crop size")
    ap.add_argument("--encoder-args", default=None,
                    help="random labeler with these encoder_args (YAML), e.g. '{features_only: true, out_indices: [3]}'")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--max-boxes", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=7, help="interleaved rounds (medians)")
    args = ap.parse_args(argv)
    args.checkpoint = args.checkpoint or f"models/labeler/{args.labeler}/checkpoint.pt"
    torch.set_num_threads(args.threads)
    coco = _subset(load_boxes(args.boxes), args.max_boxes)
    pred = Predictor(_checkpoint(args), "student", device="cpu")
    opts = LabelOptions(threshold=0.5, batch_size=args.batch_size)
    runtime = RunPseudoLabelParams(num_workers=args.num_workers, show_progress=False)
    plans = plan_annotations(coco, opts.min_box_side)
    n_model = sum(p.action == "model" for ps in plans.values() for p in ps)
    print(
        f"device cpu, torch threads {torch.get_num_threads()}, encoder {pred.cfg['encoder']}, "
        f"crop {pred.crop_size}, batch {args.batch_size}, {n_model} boxes on {len(coco['images'])} images"
    )

    # the same crops, in the same batches, as label_images forms them
    from mal.common.images import image_path, read_image

    images = {im["id"]: im for im in coco["images"]}
    crops, areas = [], []
    for iid, ps in plans.items():
        img = read_image(image_path(args.boxes, images[iid]))
        for p in ps:
            if p.action == "model":
                crops.append(crop_and_resize(img, expand_box_fixed(p.box, opts.expand), pred.crop_size))
                areas.append(p.box[2] * p.box[3])
    batches = [
        (np.stack(crops[i : i + args.batch_size]), np.array(areas[i : i + args.batch_size], np.float32))
        for i in range(0, len(crops), args.batch_size)
    ]
    model = pred.models[0]
    from mal.labeler.model import input_norm, normalize

    norm = input_norm(model.cfg)

    @torch.inference_mode()
    def encoder_only() -> None:
        for c, _ in batches:
            model.encoder(normalize(torch.from_numpy(c), *norm))

    @torch.inference_mode()
    def full_forward() -> None:
        for c, a in batches:
            torch.sigmoid(model(normalize(torch.from_numpy(c), *norm), torch.from_numpy(a)))

    def labelling() -> None:
        label_images(coco, args.boxes, pred, opts, plans=plans, runtime=runtime)

    encoder_only()  # warm-up
    labelling()
    rounds: dict[str, list[float]] = {"enc": [], "fwd": [], "lab": []}
    for _ in range(args.repeats):  # interleaved rounds: the CPU is shared, load drifts
        for key, fn in (("enc", encoder_only), ("fwd", full_forward), ("lab", labelling)):
            t = time.perf_counter()
            fn()
            rounds[key].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in rounds.items()}
    # the ratio of each round (its three timings taken back to back), then the median over rounds
    r_enc = float(np.median([e / lab for e, lab in zip(rounds["enc"], rounds["lab"], strict=True)]))
    r_fwd = float(np.median([f / lab for f, lab in zip(rounds["fwd"], rounds["lab"], strict=True)]))
    enc_bps, fwd_bps, lab_bps = n_model / med["enc"], n_model / med["fwd"], n_model / med["lab"]
    print(f"bare encoder forward : {enc_bps:8.1f} boxes/s (median of {args.repeats} rounds)")
    print(f"labeler forward      : {fwd_bps:8.1f} boxes/s (encoder + decoder + sigmoid)")
    print(f"labelling (end to end): {lab_bps:8.1f} boxes/s on {args.threads} CPU threads")
    print(f"ratio labelling / bare encoder = {r_enc:.3f} (target >= 0.8; median of per-round ratios)")
    print(f"ratio labelling / labeler forward = {r_fwd:.3f} (pipeline overhead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
