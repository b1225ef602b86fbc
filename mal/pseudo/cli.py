"""`python -m mal label` / `mal-label`: masks for your own COCO boxes with a trained labeler.

Example::

    python -m mal label --checkpoint models/labeler/vit_tiny/checkpoint.pt \\
        --images my_images/ --boxes my_boxes.json --out my_masks.json --visualize overlays/

Every input annotation either comes out with a mask (``segmentation`` RLE, ``area`` = mask area,
``"mal": {"source", "reason"}``) or is listed in ``<out>.skipped.json`` with a reason; the summary
prints both and checks ``boxes in == masks out + skipped``.
Scale-out: run ``--num-shards N --shard-index i --shard-dir D`` on N workers, then the same command
without ``--shard-index`` (add ``--merge-only`` to refuse labelling missing shards) to merge.

Other formats: ``--out`` is always COCO with RLE masks (the lossless source that merges, overlays and
re-exports read); ``--format coco-poly|yolo-seg|labelstudio|cvat`` also writes that format to
``<export-dir>/<out stem><suffix>`` (.poly.json, _yolo/, .labelstudio.json, .cvat.xml; export-dir defaults to
the folder of --out). ``python -m mal export`` converts an existing file the same way.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from mal.common.cli_format import HelpFormatter
from mal.common.files import save_png_atomic, write_json_atomic


def add_label_options(p: argparse.ArgumentParser) -> None:
    """The labelling options: defaults and help from :mod:`mal.config.pseudo` (defined once, there)."""
    from typing import get_args

    from mal.config.pseudo import LabelOptions, RunPseudoLabelParams, Which

    opt, run = LabelOptions.model_fields, RunPseudoLabelParams.model_fields
    p.add_argument("--threshold", type=float, default=None,
                   help="mask threshold on the probability (default: the one the checkpoint records, as the "
                   "pipeline labels with; 0.5 for checkpoints that record none)")
    p.add_argument("--which", choices=get_args(Which), default=opt["which"].default, help=opt["which"].description)
    p.add_argument("--flip-tta", action="store_true", help=opt["flip_tta"].description)
    p.add_argument("--batch-size", type=int, default=opt["batch_size"].default, help=opt["batch_size"].description)
    p.add_argument("--min-box-side", type=float, default=opt["min_box_side"].default,
                   help=opt["min_box_side"].description)
    for flag, key, kind in (("--num-workers", "num_workers", int), ("--paste-threads", "paste_threads", int),
                            ("--device", "device", str), ("--num-shards", "num_shards", int),
                            ("--shard-processes", "shard_processes", int)):
        p.add_argument(flag, type=kind, default=run[key].default, help=run[key].description)


def build_parser() -> argparse.ArgumentParser:
    from mal.pseudo.export import add_export_options

    p = argparse.ArgumentParser(prog="python -m mal label", description=__doc__, formatter_class=HelpFormatter)
    p.add_argument("--checkpoint", required=True, help="labeler checkpoint.pt (from stage train_labeler)")
    p.add_argument("--boxes", required=True, help="COCO JSON with images + annotations (bbox); masks optional")
    p.add_argument(
        "--images",
        default=None,
        help="directory the image file_names are relative to (default: the boxes file's directory)",
    )
    p.add_argument("--out", help="output COCO JSON with RLE masks (required unless --shard-index)")
    p.add_argument(
        "--visualize", default=None, metavar="DIR", help="write overlay PNGs of a few images here (default: none)"
    )
    p.add_argument("--num-visualize", type=int, default=8, help="how many images to visualise")
    add_label_options(p)
    p.add_argument(
        "--shard-index", type=int, default=None, help="label only this shard (needs --shard-dir); default: all, then merge"
    )
    p.add_argument(
        "--shard-dir",
        default=None,
        help="where shard files + done markers live (default: none; then shards are neither kept nor reused)",
    )
    p.add_argument("--merge-only", action="store_true", help="merge finished shards; never label")
    p.add_argument("--strict", action="store_true", help="fail on the first box that would be skipped")
    p.add_argument("--skipped-report", default=None, help="skipped boxes and images (default: <out>.skipped.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_export_options(p)
    p.add_argument("--export-dir", default=None, help="folder for the --format export (default: the folder of --out)")
    return p


def summary_lines(report: dict[str, Any]) -> list[str]:
    """Human summary of a merge report (labelled vs skipped, with reasons)."""

    def fmt(d: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in d.items()) or "none"

    lines = [
        f"boxes in: {report['boxes_in']}  masks out: {report['masks_out']}  skipped: {report['skipped']}",
        f"  labeler masks: {report['labeler_masks']}",
        f"  box-mask fallbacks: {report['box_fallback']} ({fmt(report['box_fallback_by_reason'])})",
        f"  skipped: {report['skipped']} ({fmt(report['skipped_by_reason'])})",
        f"  clipped boxes: {report['clipped_boxes']}  crowd boxes: {report['crowd_boxes']}  "
        f"images skipped: {report['images_skipped']} of {report['images_in']}",
    ]
    for s in report["skipped_images"][:5]:
        lines.append(f"  image id={s['image_id']} {s['file_name']}: {s['reason']} ({s['detail']})")
    ok = report["boxes_in"] == report["masks_out"] + report["skipped"]
    lines.append(f"  check boxes in == masks out + skipped: {'ok' if ok else 'MISMATCH'}")
    return lines


def visualize(
    out_coco: dict[str, Any], in_coco: dict[str, Any], image_root: Path, out_dir: Path, limit: int
) -> list[str]:
    """Overlay PNGs (input masks, if any, in green; pseudo-masks in red) for the first ``limit`` images."""
    from mal.common.images import image_path, read_image
    from mal.common.masks import decode_segmentation
    from mal.pseudo.quality import draw_overlay

    gt_by_id = {a["id"]: a for a in in_coco["annotations"]}
    by_image: dict[int, list[dict]] = {}
    for a in out_coco["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    written = []
    for im in out_coco["images"][: max(limit, 0)]:
        h, w = int(im["height"]), int(im["width"])
        anns = by_image.get(im["id"], [])
        image = read_image(image_path(image_root / "_", im, image_root))
        pred = [decode_segmentation(a["segmentation"], h, w) for a in anns]
        gt = [
            decode_segmentation(gt_by_id[a["id"]]["segmentation"], h, w)
            for a in anns
            if gt_by_id[a["id"]].get("segmentation")
        ]
        path = out_dir / f"{im['id']}_{Path(str(im['file_name'])).stem}.png"
        save_png_atomic(path, draw_overlay(image, gt, pred))
        written.append(str(path))
    return written


def label_options_from_args(args: argparse.Namespace) -> tuple[Any, Any]:
    """``(LabelOptions, RunPseudoLabelParams)`` of the parsed flags (validated there: a bad value is a
    ``ValueError`` naming the option)."""
    from pydantic import ValidationError

    from mal.config.load import format_errors
    from mal.config.pseudo import LabelOptions, RunPseudoLabelParams

    what = {"threshold": args.threshold, "which": args.which, "flip_tta": args.flip_tta,
            "batch_size": args.batch_size, "min_box_side": args.min_box_side, "allow_skips": not args.strict}
    how = {"device": args.device, "num_workers": args.num_workers, "paste_threads": args.paste_threads,
           "num_shards": args.num_shards, "shard_processes": args.shard_processes, "show_progress": not args.quiet}
    out = []
    for model, values in ((LabelOptions, what), (RunPseudoLabelParams, how)):
        try:
            out.append(model.model_validate(values))
        except ValidationError as e:
            raise ValueError(format_errors(e, model, "mal label").replace("\n", "; ")) from None
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mal.pseudo import shards
    from mal.pseudo.engine import SkipError
    from mal.pseudo.label import load_boxes

    if args.shard_index is None and not args.out:
        print("error: --out is required (unless --shard-index is given)", file=sys.stderr)
        return 2
    image_root = Path(args.images) if args.images else Path(args.boxes).parent
    if not image_root.is_dir():
        print(f"error: {image_root}: images directory not found", file=sys.stderr)
        return 2
    try:
        options, runtime = label_options_from_args(args)
        report = shards.label_coco(args.boxes, args.checkpoint, args.out, options, runtime, image_root=image_root,
                                   shard_index=args.shard_index, shard_dir=args.shard_dir,
                                   run_missing=not args.merge_only)
    except SkipError as e:
        print(f"error (--strict): {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.shard_index is not None:
        print(
            f"shard {args.shard_index}/{args.num_shards}: "
            f"{'reused (done marker matches)' if report['shards_reused'] else 'labelled'}; "
            f"{report.get('masks_out', 0)} masks, boxes in {report.get('boxes_in', 0)}"
        )
        return 0
    write_reports(args, report)
    if args.visualize:
        import json

        with open(args.out) as f:
            out_coco = json.load(f)
        written = visualize(
            out_coco, load_boxes(args.boxes), image_root, Path(args.visualize), args.num_visualize
        )
        print(f"overlays: {len(written)} PNGs in {args.visualize} (green: input masks, red: pseudo-masks)")
    if args.format != "coco-rle":
        return write_export(args)
    return 0


def write_reports(args: argparse.Namespace, report: dict[str, Any]) -> None:
    """The skipped report beside --out, and the summary on stdout."""
    skipped_path = Path(args.skipped_report or f"{args.out}.skipped.json")
    write_json_atomic(
        skipped_path,
        {
            "skipped_annotations": report["skipped_annotations"],
            "skipped_images": report["skipped_images"],
            "skipped_by_reason": report["skipped_by_reason"],
        },
        indent=1,
    )
    print(f"wrote {args.out}")
    for line in summary_lines(report):
        print(line)
    print(f"skipped report: {skipped_path}")


def write_export(args: argparse.Namespace) -> int:
    """The --format export of the COCO RLE file just written (which stays, as the source)."""
    from mal.common.coco_io import read_coco_json
    from mal.pseudo.export import default_export_path, export, options_from_args

    try:
        path = default_export_path(args.format, args.out, args.export_dir)
        rep = export(read_coco_json(args.out), args.format, path, options_from_args(args), source=args.out)
    except (OSError, ValueError) as e:  # one line per problem (CocoFormatError is a ValueError)
        for line in str(e).splitlines():
            print(f"error: export {args.format}: {line}", file=sys.stderr)
        return 2
    print(f"export {rep.line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
