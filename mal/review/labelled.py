"""Review page for one labelled COCO file: the least-confident masks first, each with the ids needed to fix it.

A card shows a crop around the box (mask tinted and outlined in red, the box in yellow, the GT mask outlined
in green when a GT file is given), the image id, file name, annotation id, score and source. Cards are
sorted by ``score`` ascending; annotations without a score (files labelled before scores existed) come last.
"""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mal.common.coco_io import CocoFormatError, read_coco_json
from mal.common.images import image_path, read_image
from mal.common.masks import decode_segmentation, rle_iou, segmentation_to_rle
from mal.common.render_check import check_renderable
from mal.review import page

DEFAULT_NUM = 48
CARD_PX = 192  # the crop's longest side on the page
MASK_RGB, GT_RGB, BOX_RGB = (255, 40, 40), (40, 230, 40), (255, 220, 0)


def load_labelled(path: str | Path, what: str = "labelled COCO file") -> dict[str, Any]:
    """A COCO JSON with images and annotations (categories optional) whose every annotation the page can draw.

    Checked up front (:func:`~mal.common.render_check.check_renderable`): a known ``image_id``, a
    ``segmentation`` that decodes at its image's size, an integer ``category_id`` and 4-number ``bbox`` when
    present. Otherwise ``CocoFormatError``: one line per kind of problem naming the file, annotation id, field.
    """
    coco = read_coco_json(path, what)
    check_renderable(coco, path, category=False, score=False, bbox=True)
    return coco


def ann_score(ann: dict[str, Any]) -> float | None:
    """The annotation's confidence (``score``, else ``mal.score``); None when absent or not a number."""
    s = ann.get("score", (ann.get("mal") or {}).get("score"))
    if isinstance(s, bool) or not isinstance(s, (int, float)) or math.isnan(s):
        return None
    return float(s)


def source_of(ann: dict[str, Any]) -> tuple[str, str]:
    """``(source, reason)`` from the labeller's ``mal`` block; ``("unknown", "")`` for other files."""
    info = ann.get("mal") or {}
    return str(info.get("source", "unknown")), str(info.get("reason", ""))


def review_order(anns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Least confident first; score-less annotations last, in (image id, annotation id) order."""
    def key(a: dict[str, Any]) -> tuple:
        s = ann_score(a)
        return (s is None, s if s is not None else 0.0, a["image_id"], a["id"])

    return sorted(anns, key=key)


def crop_overlay(image: np.ndarray, mask: np.ndarray, box: list[float], gt_mask: np.ndarray | None = None) -> np.ndarray:
    """A ``CARD_PX``-sized RGB crop around ``box`` with context: mask tint + outline, GT outline, box."""
    h, w = image.shape[:2]
    bx, by, bw, bh = (float(v) for v in box[:4])
    pad = max(0.3 * max(bw, bh), 6.0)  # enough context to judge the boundary
    x0, y0 = max(int(math.floor(bx - pad)), 0), max(int(math.floor(by - pad)), 0)
    x1, y1 = min(int(math.ceil(bx + bw + pad)), w), min(int(math.ceil(by + bh + pad)), h)
    if x1 <= x0 or y1 <= y0:  # box outside the image: show the whole image
        x0, y0, x1, y1 = 0, 0, w, h
    scale = CARD_PX / max(x1 - x0, y1 - y0)
    size = (max(round((x1 - x0) * scale), 1), max(round((y1 - y0) * scale), 1))
    interp = cv2.INTER_NEAREST if scale >= 1 else cv2.INTER_AREA

    crop = cv2.resize(np.ascontiguousarray(image[y0:y1, x0:x1]), size, interpolation=interp).astype(np.float32)
    m = cv2.resize(mask[y0:y1, x0:x1].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
    crop[m > 0] = 0.65 * crop[m > 0] + 0.35 * np.array(MASK_RGB, np.float32)
    out = np.clip(crop, 0, 255).astype(np.uint8)
    for mm, colour in ((gt_mask, GT_RGB), (mask, MASK_RGB)):
        if mm is None:
            continue
        mm = cv2.resize(mm[y0:y1, x0:x1].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST)
        contours, _ = cv2.findContours(mm, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(out, contours, -1, colour, 1)
    p0 = (round((bx - x0) * scale), round((by - y0) * scale))
    p1 = (round((bx + bw - x0) * scale) - 1, round((by + bh - y0) * scale) - 1)
    cv2.rectangle(out, p0, p1, BOX_RGB, 1)
    return out


class _Images:
    """Reads each image once; a missing file is an error that says where file_names are looked up."""

    def __init__(self, json_path: Path, root: Path | None, images: dict[int, dict[str, Any]]):
        self.json_path, self.root, self.images, self.cache = json_path, root, images, {}

    def get(self, image_id: int) -> np.ndarray:
        if image_id not in self.cache:
            im = self.images[image_id]  # known: load_labelled checked every image_id
            path = image_path(self.json_path, im, self.root)
            if not path.is_file():
                where = f"--images {self.root}" if self.root is not None else f"the JSON's folder {self.json_path.parent}"
                raise FileNotFoundError(f"{path}: image not found (file_names of {self.json_path} are read "
                                        f"relative to {where}; pass --images ROOT)")
            image = read_image(path)
            if image.shape[:2] != (im["height"], im["width"]):  # the masks are that size: they would not fit
                raise CocoFormatError(
                    f"{self.json_path}: image id={image_id}: field 'width'/'height' {im['width']}x{im['height']}: "
                    f"image {path} is {image.shape[1]}x{image.shape[0]}")
            self.cache[image_id] = image
        return self.cache[image_id]


def _card(rank: int, ann: dict[str, Any], im: dict[str, Any], uri: str, cat: str, iou: float | None) -> str:
    score = ann_score(ann)
    source, reason = source_of(ann)
    fields = [("rank", rank), ("score", page.fmt(score)), ("image id", ann["image_id"]),
              ("file", im["file_name"]), ("annotation id", ann["id"]), ("category", cat), ("source", source)]
    fields += [("reason", reason)] if reason else []
    fields += [("IoU vs GT", page.fmt(iou))] if iou is not None else []
    dl = "".join(f"<dt>{page.esc(k)}</dt><dd>{page.esc(v)}</dd>" for k, v in fields)
    cls = "card fallback" if source == "box_fallback" else "card"
    alt = f"image {ann['image_id']} annotation {ann['id']}"
    return (f'<div class="{cls}" id="ann-{page.esc(ann["id"])}" data-ann-id="{page.esc(ann["id"])}" '
            f'data-image-id="{page.esc(ann["image_id"])}" data-score="{page.esc("" if score is None else score)}">'
            f'{page.img(uri, alt, "crop")}<dl>{dl}</dl></div>')


def _masks(ann: dict[str, Any], gt_ann: dict[str, Any] | None, h: int, w: int,
           gt_path: str | Path) -> tuple[np.ndarray, np.ndarray | None, float | None]:
    """``(mask, GT mask or None, IoU or None)`` of a checked annotation (:func:`load_labelled`)."""
    rle = segmentation_to_rle(ann["segmentation"], h, w)
    if gt_ann is None or not gt_ann.get("segmentation"):
        return decode_segmentation(rle, h, w), None, None
    # checked against the GT file's own image; this catches a GT image of another size than the labelled one
    g = segmentation_to_rle(gt_ann["segmentation"], h, w, f"{gt_path}: annotation id={ann['id']}: field 'segmentation'")
    return decode_segmentation(rle, h, w), decode_segmentation(g, h, w), rle_iou(rle, g)


def cards_html(coco: dict[str, Any], json_path: str | Path, images_root: str | Path | None,
               gt: dict[str, Any] | None, num: int, gt_path: str | Path = "GT COCO file") -> tuple[str, int]:
    """The ``num`` least-confident annotations of a :func:`load_labelled` file as overlay cards (``gt``, loaded
    the same way from ``gt_path``, adds the GT outline and IoU); returns ``(html, cards shown)``."""
    images = {int(im["id"]): im for im in coco["images"]}
    cats = {int(c["id"]): str(c.get("name", c["id"])) for c in coco.get("categories") or []}
    gt_anns = {int(a["id"]): a for a in (gt or {}).get("annotations", [])}
    reader = _Images(Path(json_path), Path(images_root) if images_root is not None else None, images)
    chosen = review_order(coco["annotations"])[: max(num, 0)]
    cards = []
    for rank, ann in enumerate(chosen, 1):
        image = reader.get(int(ann["image_id"]))
        h, w = image.shape[:2]
        mask, gt_mask, iou = _masks(ann, gt_anns.get(int(ann["id"])), h, w, gt_path)
        uri = page.rgb_uri(crop_overlay(image, mask, ann.get("bbox") or [0, 0, w, h], gt_mask))
        cat = cats.get(int(ann.get("category_id", -1)), str(ann.get("category_id", "–")))
        cards.append(_card(rank, ann, images[int(ann["image_id"])], uri, cat, iou))
    legend = ('<p class="note legend">Least confident first. <span style="background:rgb(255,40,40)"></span>mask'
              '<span style="background:rgb(255,220,0)"></span>box'
              + ('<span style="background:rgb(40,230,40)"></span>GT mask' if gt is not None else "")
              + ". An orange frame marks a box fallback.</p>")
    return legend + f'<div class="cards">{"".join(cards)}</div>', len(cards)


def skipped_count(labelled_json: str | Path) -> int | None:
    """Boxes ``mal label`` could not label, from its ``<out>.skipped.json`` report; None without one."""
    report = Path(f"{labelled_json}.skipped.json")
    if not report.is_file():
        return None
    return len(read_coco_json(report, "skipped report").get("skipped_annotations") or [])


def summary(coco: dict[str, Any], skipped: int | None = None) -> dict[str, Any]:
    """Counts for the page header: boxes, labeler masks vs fallbacks (by reason), scores, skipped boxes."""
    anns = coco["annotations"]
    sources = Counter(source_of(a)[0] for a in anns)
    reasons = Counter(source_of(a)[1] for a in anns if source_of(a)[0] == "box_fallback")
    scores = [s for s in map(ann_score, anns) if s is not None]
    return {"images": len(coco["images"]), "boxes": len(anns), "sources": dict(sources),
            "fallback_reasons": dict(reasons), "scored": len(scores),
            "score_mean": float(np.mean(scores)) if scores else None,
            "score_min": min(scores) if scores else None, "skipped": skipped}


def summary_html(stats: dict[str, Any]) -> str:
    rows = [("images", stats["images"]), ("boxes (annotations)", stats["boxes"])]
    rows += [(f"source: {k}", v) for k, v in sorted(stats["sources"].items())]
    rows += [(f"box fallback: {k or 'unspecified'}", v) for k, v in sorted(stats["fallback_reasons"].items())]
    rows += [("skipped boxes (<json>.skipped.json)", stats["skipped"]), ("with a score", stats["scored"]),
             ("mean score", stats["score_mean"]), ("lowest score", stats["score_min"])]
    return page.table(["", "count"], rows, cls="summary")


def score_histogram_html(coco: dict[str, Any], title: str) -> str:
    """Histogram of the scores by source, or a note when the file has none."""
    groups: dict[str, list[float]] = {}
    for a in coco["annotations"]:
        s = ann_score(a)
        if s is not None:
            groups.setdefault(source_of(a)[0], []).append(s)
    if not groups:
        return '<p class="warn">No annotation has a score (labelled before scores existed?): cards are in id order.</p>'
    return page.img(page.histogram_uri(groups, title, "score (confidence)"), "score histogram")


def build_labelled_page(labelled_json: str | Path, images_root: str | Path | None = None,
                        gt_json: str | Path | None = None, num: int = DEFAULT_NUM) -> tuple[str, int]:
    """The review page of one labelled file; returns ``(html, cards shown)``."""
    coco = load_labelled(labelled_json)
    gt = load_labelled(gt_json, "GT COCO file") if gt_json is not None else None
    stats = summary(coco, skipped_count(labelled_json))
    cards, shown = cards_html(coco, labelled_json, images_root, gt, num, gt_json or "GT COCO file")
    body = (f"<h2>Summary</h2>{summary_html(stats)}"
            f"<h2>Confidence</h2>{score_histogram_html(coco, Path(labelled_json).name)}"
            f"<h2>Least-confident masks ({shown} of {stats['boxes']})</h2>{cards}")
    sub = f"{labelled_json} · images: {images_root or Path(labelled_json).parent}" + (f" · GT: {gt_json}" if gt_json else "")
    return page.document(f"MAL review: {Path(labelled_json).name}", body, sub), shown
