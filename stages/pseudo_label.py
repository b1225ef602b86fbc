"""DVC stage `pseudo_label`: masks for every training box from a trained labeler.

    python stages/pseudo_label.py --labeler vit_tiny [--num-shards N --shard-index I] [--params params.yaml]

Reads params ``pseudo_label`` (paths may contain ``{labeler}``): ``boxes_json`` + ``checkpoint`` ->
``out_json`` (the input COCO dict with RLE masks) + ``metrics`` (counts: boxes in / masks out / fallbacks
by reason / skips). With ``--shard-index`` only that shard is labelled into ``shard_dir`` (scale-out);
without it every shard not already done is labelled, then all are merged.
"""

from __future__ import annotations

import mal.common.runtime  # noqa: F401  (first: OpenMP's wait policy must be set before torch loads)

# isort: split
import argparse
import sys
from pathlib import Path
from typing import Any

import torch

from mal.common.devices import log_device, resolve_device
from mal.common.files import write_json_atomic
from mal.common.params import check_keys, load_params
from mal.common.paths import image_roots, templated, timings_path
from mal.labeler.model import checkpoint_mask_threshold
from mal.pseudo.label import LabelOptions
from mal.pseudo.shards import label_coco, run_shard_processes

OPTION_KEYS = (
    "threshold",
    "expand",
    "which",
    "flip_tta",
    "batch_size",
    "num_workers",
    "paste_threads",
    "min_box_side",
    "device",
    "allow_skips",
)
PATH_KEYS = ("boxes_json", "checkpoint", "out_json", "metrics", "shard_dir")
# wall-clock numbers of the report: written apart from the metrics (an identical re-run leaves git clean)
# and how many shards this run labelled vs reused from .work/ (depends on what an earlier run left there)
TIMING_KEYS = ("model_seconds", "seconds", "shards_run", "shards_reused")


def options_from_params(
    cfg: dict[str, Any], show_progress: bool = True, checkpoint: str | Path | None = None
) -> LabelOptions:
    """``params['pseudo_label']`` -> :class:`LabelOptions` (unknown option keys are ignored).

    A missing or null ``threshold`` is the one ``checkpoint`` records (as the user CLI does).
    """
    opts = {k: cfg[k] for k in OPTION_KEYS if cfg.get(k) is not None}
    if "threshold" not in opts and checkpoint is not None:
        opts["threshold"] = checkpoint_mask_threshold(checkpoint)
    return LabelOptions(**opts, show_progress=show_progress)


def shard_processes(cfg: dict[str, Any], device: torch.device, num_shards: int) -> int:
    """How many shard processes the stage runs at once: ``pseudo_label.shard_processes``, or with 0 (auto) one
    per GPU when the device is plain ``cuda`` and there are several GPUs (else 1: shards run in this process)."""
    want = int(cfg.get("shard_processes", 0) or 0)
    if want <= 0:
        want = torch.cuda.device_count() if device.type == "cuda" and device.index is None else 1
    return max(min(want, num_shards), 1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labeler", required=True, help="labeler name (key of params labeler.models)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--num-shards", type=int, default=None, help="default: params pseudo_label.num_shards")
    ap.add_argument("--shard-index", type=int, default=None)
    args = ap.parse_args(argv)
    params = load_params(args.params)
    cfg = params["pseudo_label"]
    check_keys(cfg, (*OPTION_KEYS, *PATH_KEYS, "num_shards", "num_threads", "shard_processes"), "params: pseudo_label")
    paths = templated(cfg, PATH_KEYS, args.labeler)
    if int(cfg.get("num_threads", 0) or 0) > 0:
        torch.set_num_threads(int(cfg["num_threads"]))
    options = options_from_params(cfg, checkpoint=paths["checkpoint"])
    device = resolve_device(options.device, "pseudo_label.device")  # a GPU asked for but absent fails here
    log_device("pseudo_label", device, amp=True)
    num_shards = int(args.num_shards if args.num_shards is not None else cfg.get("num_shards", 1))
    processes = shard_processes(cfg, device, num_shards)
    if args.shard_index is None and processes > 1:  # label the shards concurrently, then merge them below
        run_shard_processes(lambda i: [sys.executable, __file__, *(argv or sys.argv[1:]), "--num-shards",
                                       str(num_shards), "--shard-index", str(i)], num_shards, processes)
    report = label_coco(
        paths["boxes_json"],
        paths["checkpoint"],
        paths["out_json"],
        options,
        image_root=image_roots(params["data"])["train"],  # file_names stay relative to it, in and out
        num_shards=num_shards,
        shard_index=args.shard_index,
        shard_dir=paths["shard_dir"],
    )
    if args.shard_index is not None:
        print(f"shard {args.shard_index}/{num_shards} done: {report}")
        return 0
    timings = {k: report.pop(k) for k in TIMING_KEYS}
    timings["boxes_per_s"] = (
        round(report["model_boxes"] / timings["model_seconds"], 2) if timings["model_seconds"] > 0 else None
    )
    metrics = {k: v for k, v in report.items() if k not in ("skipped_annotations", "skipped_images")}
    metrics["labeler"] = args.labeler
    write_json_atomic(paths["metrics"], metrics, indent=2)
    write_json_atomic(timings_path(params, "pseudo_label", args.labeler), timings, indent=2)
    print(
        f"{paths['out_json']}: {report['masks_out']} masks ({report['labeler_masks']} labeler, "
        f"{report['box_fallback']} box fallback {report['box_fallback_by_reason']}), "
        f"skipped {report['skipped']}; {timings}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
