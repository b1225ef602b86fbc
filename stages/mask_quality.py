"""DVC stage `mask_quality`: pseudo-masks vs GT masks (paper mIoU) plus box and GrabCut baselines.

    python stages/mask_quality.py --labeler vit_tiny --pseudo data/pseudo/vit_tiny/train_pseudo.json \
        --gt data/prepared/train_gt.json --metrics metrics/mask_quality/vit_tiny.json \
        --overlays reports/overlays/vit_tiny [--params params.yaml]

Params ``mask_quality`` (baselines, GrabCut, overlays); ``run.mask_quality.num_workers`` GrabCut processes.
Writes --metrics (miou, miou_instance, miou_small/medium/large, per_class, baselines{box, grabcut}, and
``confidence``: how the pseudo-labels' ``score`` ranks masks by IoU, when they carry one) and --overlays (GT
outlines green, pseudo-masks red).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mal.common.files import write_json_atomic
from mal.config import load_params, run_main
from mal.pseudo.quality import evaluate_masks


def _load(path: Path) -> dict:
    if not path.is_file() or path.stat().st_size == 0:
        raise ValueError(f"{path}: file not found or empty")
    with path.open() as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labeler", required=True, help="labeler name (key of params labeler.models)")
    ap.add_argument("--pseudo", type=Path, required=True, help="pseudo-labels (COCO JSON with masks)")
    ap.add_argument("--gt", type=Path, required=True, help="GT train masks (COCO JSON)")
    ap.add_argument("--metrics", type=Path, required=True, help="metrics JSON (written)")
    ap.add_argument("--overlays", type=Path, required=True, help="overlay PNG folder (written)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    result = evaluate_masks(
        _load(args.pseudo), _load(args.gt), params.mask_quality,
        image_root=params.data.image_root("train", args.gt.parent),
        overlay_dir=args.overlays, pred_name=str(args.pseudo), gt_name=str(args.gt),
        num_workers=params.run.mask_quality.num_workers,
    )
    result["labeler"] = args.labeler
    write_json_atomic(args.metrics, result, indent=2)
    base = {k: round(v["miou"], 4) for k, v in result["baselines"].items() if v["miou"] is not None}
    conf = result.get("confidence")
    ranking = "" if conf is None else (
        f"; confidence: spearman {conf['spearman']}, bad masks in lowest {conf['lowest_fraction']:.0%} "
        f"x{conf['ratio_vs_chance']} chance")
    print(f"mask quality {args.labeler}: miou {result['miou']:.4f} (instance {result['miou_instance']:.4f}); "
          f"baselines {base}{ranking}")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
