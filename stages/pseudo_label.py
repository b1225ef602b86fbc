"""DVC stage `pseudo_label`: masks for every training box from a trained labeler.

    python stages/pseudo_label.py --labeler vit_tiny [--num-shards N --shard-index I] [--params params.yaml]

Reads params ``pseudo_label`` (paths may contain ``{labeler}``): ``boxes_json`` + ``checkpoint`` ->
``out_json`` (the input COCO dict with RLE masks) + ``metrics`` (counts: boxes in / masks out / fallbacks
by reason / skips). With ``--shard-index`` only that shard is labelled into ``shard_dir`` (scale-out);
without it every shard not already done is labelled, then all are merged.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import torch

from mal.common.coco_io import write_json_atomic
from mal.common.params import load_params
from mal.pseudo.label import LabelOptions
from mal.pseudo.shards import label_coco

OPTION_KEYS = (
    "threshold",
    "expand",
    "which",
    "flip_tta",
    "batch_size",
    "num_workers",
    "min_box_side",
    "device",
    "allow_skips",
)


def options_from_params(cfg: dict[str, Any], show_progress: bool = True) -> LabelOptions:
    """``params['pseudo_label']`` -> :class:`LabelOptions` (unknown option keys are ignored)."""
    return LabelOptions(**{k: cfg[k] for k in OPTION_KEYS if k in cfg}, show_progress=show_progress)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labeler", required=True, help="labeler name (key of params labeler.models)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--num-shards", type=int, default=None, help="default: params pseudo_label.num_shards")
    ap.add_argument("--shard-index", type=int, default=None)
    args = ap.parse_args(argv)
    cfg = load_params(args.params)["pseudo_label"]
    paths = {
        k: str(cfg[k]).format(labeler=args.labeler)
        for k in ("boxes_json", "checkpoint", "out_json", "metrics", "shard_dir")
    }
    if int(cfg.get("num_threads", 0) or 0) > 0:
        torch.set_num_threads(int(cfg["num_threads"]))
    options = options_from_params(cfg)
    num_shards = int(args.num_shards if args.num_shards is not None else cfg.get("num_shards", 1))
    report = label_coco(
        paths["boxes_json"],
        paths["checkpoint"],
        paths["out_json"],
        options,
        num_shards=num_shards,
        shard_index=args.shard_index,
        shard_dir=paths["shard_dir"],
        rebase_file_names=True,  # images resolve from the output JSON's directory (the project's path rule)
    )
    if args.shard_index is not None:
        print(f"shard {args.shard_index}/{num_shards} done: {report}")
        return 0
    metrics = {k: v for k, v in report.items() if k not in ("skipped_annotations", "skipped_images")}
    metrics["boxes_per_s"] = (
        round(metrics["model_boxes"] / metrics["model_seconds"], 2) if metrics["model_seconds"] > 0 else None
    )
    metrics["labeler"] = args.labeler
    write_json_atomic(paths["metrics"], metrics, indent=2)
    print(
        f"{paths['out_json']}: {report['masks_out']} masks ({report['labeler_masks']} labeler, "
        f"{report['box_fallback']} box fallback {report['box_fallback_by_reason']}), "
        f"skipped {report['skipped']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
