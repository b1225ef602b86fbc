"""`python -m mal review`: one self-contained HTML page to review labels, least-confident masks first.

Either one labelled COCO file (cards sorted by score, each with its image and annotation id so a person
can fix it) or a whole `dvc repro` (paper table, labeler curves, per-class and S/M/L mIoU, confidence).
The page has no scripts and no external files: open it anywhere, attach it to an issue. Inputs are
checked before anything is written: an annotation the page cannot draw (no `segmentation`, an RLE that does
not decode at its image's size, an unknown `image_id`) is one error line naming the file, id and field.

Example::

    python -m mal review --labelled data/pseudo/vit_tiny/train_pseudo.json --images data/prepared \\
        --gt data/prepared/train_gt.json --out reports/review_labelled.html
    python -m mal review --repro --out reports/review.html
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mal.common.cli_format import HelpFormatter
from mal.common.files import write_text_atomic


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m mal review", description=__doc__, formatter_class=HelpFormatter)
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--labelled", type=Path, metavar="JSON",
                      help="a labelled COCO file, e.g. `python -m mal label` output (required: this or --repro)")
    what.add_argument("--repro", action="store_true",
                      help="review a whole `dvc repro`: paper table, labeler curves, mIoU, confidence")
    ap.add_argument("--images", type=Path, metavar="ROOT",
                    help="--labelled: folder the image file_names are relative to (default: the JSON's folder)")
    ap.add_argument("--gt", type=Path, metavar="JSON",
                    help="--labelled: GT COCO file with masks (same annotation ids) for an IoU per card (default: none)")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"), metavar="YAML",
                    help="--repro: params file of the run; its dvc.yaml (same folder) names every file shown")
    ap.add_argument("--num", type=int, default=None, metavar="N",
                    help="overlay cards, least confident first (default: 48 with --labelled, 12 with --repro)")
    ap.add_argument("--strict", action="store_true", help="--repro: fail when an output of the run is missing")
    ap.add_argument("--screenshot", type=Path, metavar="PNG",
                    help="also open the page in headless Chromium (scripts/install_browser.sh) and save a screenshot "
                    "(default: none)")
    ap.add_argument("--out", type=Path, default=None,
                    help="HTML file to write (default: <JSON>.review.html beside --labelled; "
                    "review.html beside the paper table (dvc.yaml) with --repro)")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.num is not None and args.num < 0:
        ap.error("--num must be >= 0")
    try:
        if args.labelled is not None:
            if args.strict or args.params != Path("params.yaml"):
                ap.error("--params and --strict go with --repro")
            return _labelled(args)
        if args.images is not None or args.gt is not None:
            ap.error("--images and --gt go with --labelled (--repro reads them from dvc.yaml)")
        return _repro(args)
    except (OSError, ValueError) as e:  # missing/invalid inputs: one line per problem naming the file, no traceback
        for line in str(e).splitlines():
            print(f"mal review: error: {line}", file=sys.stderr)
        return 1


def _labelled(args: argparse.Namespace) -> int:
    from mal.review.labelled import DEFAULT_NUM, build_labelled_page

    if args.gt is not None and not args.gt.is_file():
        raise FileNotFoundError(f"{args.gt}: GT COCO file not found (--gt)")
    html, shown = build_labelled_page(args.labelled, args.images, args.gt,
                                      DEFAULT_NUM if args.num is None else args.num)
    out = args.out or args.labelled.with_suffix(".review.html")
    write_text_atomic(out, html)
    print(f"wrote {out} ({shown} cards, {len(html) // 1024} KiB)")
    return _screenshot(out, args.screenshot)


def _repro(args: argparse.Namespace) -> int:
    from mal.review.repro import DEFAULT_NUM, build_repro_page, default_out

    html, missing = build_repro_page(args.params, DEFAULT_NUM if args.num is None else args.num)
    for m in missing:
        print(f"mal review: not found: {m}", file=sys.stderr)
    if missing and args.strict:
        print(f"mal review: error: {len(missing)} output(s) of the run missing (--strict)", file=sys.stderr)
        return 1
    out = args.out or default_out(args.params)
    write_text_atomic(out, html)
    print(f"wrote {out} ({len(html) // 1024} KiB, {len(missing)} missing input(s))")
    return _screenshot(out, args.screenshot)


def _screenshot(html: Path, png: Path | None) -> int:
    if png is None:
        return 0
    from mal.review.browser import screenshot_file

    errors = screenshot_file(html, png)
    print(f"wrote {png}")
    for e in errors:
        print(f"mal review: browser console: {e.get('message')}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
