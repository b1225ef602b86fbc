"""DVC stage `pseudo_label`: masks for every training box from a trained labeler.

    python stages/pseudo_label.py --labeler vit_tiny --boxes data/prepared/train_boxes.json \
        --checkpoint models/labeler/vit_tiny/checkpoint.pt --images data/prepared/images \
        --out data/pseudo/vit_tiny/train_pseudo.json --metrics metrics/pseudo_label/vit_tiny.json \
        --work-dir .work/pseudo_label/vit_tiny [--shard-index I] [--params params.yaml]

Params ``pseudo_label`` (what the masks are: threshold, null = the checkpoint's; expand, which, ...) and
``run.pseudo_label`` (device, threads, shards, shard processes: where and how fast, not what). The boxes
file's file_names are relative to the prepared folder (the parent of --images) for the built-in sets, to
``data.coco.train_images`` for dataset coco. Writes --out (the input COCO dict with RLE masks) and --metrics
(counts: boxes in / masks out / fallbacks by reason / skips); shard files, done markers and timings.json go
to --work-dir (not DVC outputs: an interrupted run reuses finished shards). With --shard-index only that shard
is labelled (scale-out over machines); without it every shard not already done is labelled, in
``run.pseudo_label.shard_processes`` processes (mal.common.launch), then all are merged.
"""

from __future__ import annotations

import mal.common.runtime  # noqa: F401  (first: OpenMP's wait policy must be set before torch loads)

# isort: split
import argparse
import sys
from pathlib import Path

from mal.common.files import write_json_atomic
from mal.config import load_params, run_main

# wall-clock numbers of the report: written apart from the metrics (an identical re-run leaves git clean)
# and how many shards this run labelled vs reused from the work dir (depends on what an earlier run left there)
TIMING_KEYS = ("model_seconds", "seconds", "shards_run", "shards_reused")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--labeler", required=True, help="labeler name (a key of params labeler.models)")
    ap.add_argument("--boxes", type=Path, required=True, help="COCO boxes JSON to label")
    ap.add_argument("--checkpoint", type=Path, required=True, help="labeler checkpoint.pt")
    ap.add_argument("--images", type=Path, required=True, help="prepared images folder (built-in sets)")
    ap.add_argument("--out", type=Path, required=True, help="COCO JSON with the pseudo-masks")
    ap.add_argument("--metrics", type=Path, required=True, help="counts JSON (a DVC metric)")
    ap.add_argument("--work-dir", type=Path, required=True, help="shard files, done markers, timings.json")
    ap.add_argument("--shard-index", type=int, default=None, help="label only this shard (of run.pseudo_label.num_shards)")
    ap.add_argument("--params", default="params.yaml")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = load_params(args.params)
    import torch

    from mal.common.devices import log_device, resolve_device
    from mal.pseudo.shards import label_coco

    run = params.run.pseudo_label
    if run.num_threads > 0:
        torch.set_num_threads(run.num_threads)
    log_device("pseudo_label", resolve_device(run.device, "run.pseudo_label.device"), amp=True)  # absent GPU: fails here
    report = label_coco(args.boxes, args.checkpoint, args.out, params.pseudo_label, run,
                        image_root=params.data.image_root("train", args.images.parent),  # file_names stay relative
                        shard_index=args.shard_index, shard_dir=args.work_dir)
    if args.shard_index is not None:
        print(f"shard {args.shard_index}/{run.num_shards} done: {report}")
        return 0
    timings = {k: report.pop(k) for k in TIMING_KEYS}
    timings["boxes_per_s"] = (
        round(report["model_boxes"] / timings["model_seconds"], 2) if timings["model_seconds"] > 0 else None
    )
    metrics = {k: v for k, v in report.items() if k not in ("skipped_annotations", "skipped_images")}
    metrics["labeler"] = args.labeler
    write_json_atomic(args.metrics, metrics, indent=2)
    write_json_atomic(args.work_dir / "timings.json", timings, indent=2)
    print(
        f"{args.out}: {report['masks_out']} masks ({report['labeler_masks']} labeler, "
        f"{report['box_fallback']} box fallback {report['box_fallback_by_reason']}), "
        f"skipped {report['skipped']}; {timings}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
