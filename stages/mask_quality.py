"""DVC stage `mask_quality`: pseudo-masks vs GT masks (paper mIoU) plus box and GrabCut baselines.

    python stages/mask_quality.py --labeler vit_tiny [--params params.yaml]

Reads params ``mask_quality`` (paths may contain ``{labeler}``): ``pseudo_json`` vs ``gt_json`` ->
``metrics`` (miou, miou_instance, miou_small/medium/large, per_class, baselines{box, grabcut}, and
``confidence``: how the pseudo-labels' ``score`` ranks masks by IoU, when they carry one) and
``overlay_dir`` (GT outlines green, pseudo-masks red, ``num_overlays`` images).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mal.common.files import write_json_atomic
from mal.common.params import load_params
from mal.common.paths import image_roots, templated
from mal.pseudo.quality import evaluate_masks


def _load(path: str) -> dict:
    p = Path(path)
    if not p.is_file() or p.stat().st_size == 0:
        raise ValueError(f"{p}: file not found or empty")
    with p.open() as f:
        return json.load(f)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labeler", required=True, help="labeler name (key of params labeler.models)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    params = load_params(args.params)
    cfg = params["mask_quality"]
    keys = ("pseudo_json", "gt_json", "metrics", "overlay_dir")
    paths = {k: str(v) for k, v in templated(cfg, keys, args.labeler).items()}
    result = evaluate_masks(
        _load(paths["pseudo_json"]),
        _load(paths["gt_json"]),
        image_root=image_roots(params["data"])["train"],
        grabcut_iterations=int(cfg.get("grabcut_iterations", 3)),
        baselines=tuple(cfg.get("baselines", ["box", "grabcut"])),
        overlay_dir=paths["overlay_dir"],
        num_overlays=int(cfg.get("num_overlays", 6)),
        pred_name=paths["pseudo_json"],
        gt_name=paths["gt_json"],
        baseline_max_boxes=int(cfg.get("baseline_max_boxes", 0) or 0),
        baseline_seed=int(cfg.get("baseline_seed", 0) or 0),
        num_workers=int(cfg.get("num_workers", 0) or 0),
    )
    result["labeler"] = args.labeler
    write_json_atomic(paths["metrics"], result, indent=2)
    base = {k: round(v["miou"], 4) for k, v in result["baselines"].items() if v["miou"] is not None}
    conf = result.get("confidence")
    ranking = "" if conf is None else (
        f"; confidence: spearman {conf['spearman']}, bad masks in lowest {conf['lowest_fraction']:.0%} "
        f"x{conf['ratio_vs_chance']} chance")
    print(
        f"mask quality {args.labeler}: miou {result['miou']:.4f} (instance {result['miou_instance']:.4f}); "
        f"baselines {base}{ranking}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
