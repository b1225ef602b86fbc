"""Up-front checks that every annotation of a labelled COCO file can be rendered (exports, review page).

Run before anything is written, so a bad file costs nothing: :func:`check_renderable` looks at every
annotation and raises one :class:`RenderError` with **one line per kind of problem**, each naming the file,
the first annotation id with it and the field (``x.json: annotation id=7: missing field 'segmentation'``),
plus how many others share it. Structural checks (top-level lists, image records, annotation ids) are
:func:`mal.common.coco_io.check_records`'s.

RLE strings are parsed here, in Python, rather than handed to pycocotools: its decoder trusts the counts,
and a corrupt string decodes to a mask of arbitrary memory instead of an error.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from mal.common.coco_io import CocoFormatError, check_records

MAX_IDS = 5  # annotation ids listed per kind of problem


class RenderError(CocoFormatError):
    """Annotations that cannot be rendered; ``str()`` is one line per kind of problem."""

    def __init__(self, lines: list[str]):
        super().__init__("\n".join(lines))
        self.lines = lines


def rle_string_counts(s: str) -> list[int]:
    """The run lengths of a COCO compressed RLE string (pycocotools' ``rleFrString``, with its input checked).

    Raises ``ValueError`` for a character outside the alphabet, a string that ends inside a number, or a
    negative run.
    """
    counts: list[int] = []
    p, n = 0, len(s)
    while p < n:
        x, k, more = 0, 0, True
        while more:
            if p == n:
                raise ValueError("string ends inside a run length")
            c = ord(s[p]) - 48
            if not 0 <= c < 64:
                raise ValueError(f"character {s[p]!r} at {p} is not an RLE character")
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p, k = p + 1, k + 1
            if not more and c & 0x10:
                x |= -1 << (5 * k)
        if len(counts) > 2:  # runs after the second are stored as the difference to the run two back
            x += counts[-2]
        if x < 0:
            raise ValueError(f"run {len(counts)} is negative ({x})")
        counts.append(x)
    return counts


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _rle_problem(seg: dict[str, Any], height: int, width: int) -> tuple[str, str] | None:
    for key in ("size", "counts"):
        if key not in seg:
            return "rle", f"field 'segmentation': RLE has no '{key}'"
    size = seg["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(_is_number(v) for v in size)):
        return "rle", f"field 'segmentation': RLE 'size' {size!r:.40} is not [height, width]"
    if [int(v) for v in size] != [height, width]:
        return "rle size", f"field 'segmentation': RLE size {size} does not match the image's [{height}, {width}]"
    counts = seg["counts"]
    if isinstance(counts, str):
        try:
            runs = rle_string_counts(counts)
        except ValueError as e:
            return "rle", f"field 'segmentation': RLE counts do not decode ({e})"
    elif isinstance(counts, list) and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts):
        runs = counts
    else:
        return "rle", "field 'segmentation': RLE 'counts' is neither a COCO RLE string nor a list of run lengths"
    if sum(runs) != height * width:
        return "rle", f"field 'segmentation': RLE counts cover {sum(runs)} pixels, the image has {height * width}"
    return None


def segmentation_problem(seg: Any, height: int, width: int) -> tuple[str, str] | None:
    """``(kind, message)`` when ``seg`` is not a polygon list or an RLE of an ``height x width`` image.

    ``[]`` is an empty mask (``coco-poly`` writes it for a mask with no foreground).
    """
    if seg is None:
        return "missing segmentation", "missing field 'segmentation'"
    if isinstance(seg, dict):
        return _rle_problem(seg, height, width)
    if not isinstance(seg, list):
        return "segmentation type", (f"field 'segmentation' is {type(seg).__name__}, "
                                     "expected a polygon list or an RLE object")
    for k, poly in enumerate(seg):
        if not isinstance(poly, list) or len(poly) < 6 or len(poly) % 2:
            what = f"{len(poly)} values" if isinstance(poly, list) else type(poly).__name__
            return "polygon", f"field 'segmentation': polygon {k} is {what}, expected a flat list of >= 3 x, y pairs"
        if not all(_is_number(v) for v in poly):
            return "polygon", f"field 'segmentation': polygon {k} has a value that is not a finite number"
    return None


def _category_ids(coco: dict[str, Any], path: str, required: bool) -> set[int] | None:
    """Ids of the categories (each an object with an int id, and a str name when ``required``)."""
    if "categories" not in coco and not required:
        return None
    cats = coco.get("categories")
    if not isinstance(cats, list):
        what = "missing" if cats is None else f"{type(cats).__name__}, expected a list"
        raise CocoFormatError(f"{path}: top-level field 'categories' is {what}")
    ids: set[int] = set()
    for i, c in enumerate(cats):
        if not isinstance(c, dict) or not (isinstance(c.get("id"), int) and not isinstance(c["id"], bool)):
            raise CocoFormatError(f"{path}: categories[{i}]: missing or non-integer field 'id'")
        if required and not isinstance(c.get("name"), str):
            raise CocoFormatError(f"{path}: category id={c['id']}: missing or non-string field 'name'")
        ids.add(c["id"])
    return ids


def _annotation_problem(a: dict[str, Any], images: dict[int, dict[str, Any]], cats: set[int] | None,
                        category: bool, score: bool, bbox: bool) -> tuple[str, str] | None:
    im = images.get(a["image_id"])
    if im is None:
        return "image_id", f"field 'image_id' = {a['image_id']} is not an image id"
    if category or "category_id" in a:
        cid = a.get("category_id")
        if cid is None:
            return "category_id", "missing field 'category_id'"
        if not isinstance(cid, int) or isinstance(cid, bool):
            return "category_id", f"field 'category_id' is {type(cid).__name__} ({cid!r:.40}), expected int"
        if cats is not None and cid not in cats:
            return "category_id", f"field 'category_id' = {cid} is not a category id"
    problem = segmentation_problem(a.get("segmentation"), im["height"], im["width"])
    if problem is not None:
        return problem
    if score:
        for where, s in (("score", a.get("score")), ("mal.score", (a.get("mal") or {}).get("score"))):
            if s is not None and not _is_number(s):
                return "score", f"field '{where}' is {type(s).__name__} ({s!r:.40}), expected a finite number"
    box = a.get("bbox")
    if bbox and box is not None and not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
        return "bbox", f"field 'bbox' {box!r:.60} is not 4 finite numbers [x, y, w, h]"
    return None


def check_renderable(coco: Any, path: str | Path, *, category: bool = True, score: bool = True,
                     bbox: bool = False) -> tuple[dict[int, dict[str, Any]], set[int] | None]:
    """Raise :class:`RenderError` (or ``CocoFormatError`` for a structural problem) unless every annotation
    can be rendered; returns ``(images by id, category ids or None)``.

    Every annotation needs a known ``image_id`` and a ``segmentation`` (polygons or an RLE of its image's
    size that decodes). ``category``: ``category_id`` must name one of ``categories`` (else it is checked
    only when present). ``score``: ``score`` / ``mal.score``, when present, must be finite numbers.
    ``bbox``: ``bbox``, when present, must be 4 finite numbers (the review page crops around it).
    """
    path = str(path)
    images, _ = check_records(coco, path, with_categories=False)
    cats = _category_ids(coco, path, category)
    found: dict[str, tuple[str, list[Any]]] = {}  # kind -> (first message, annotation ids)
    for a in coco["annotations"]:
        problem = _annotation_problem(a, images, cats, category, score, bbox)
        if problem is not None:
            kind, message = problem
            found.setdefault(kind, (message, []))[1].append(a["id"])
    if found:
        raise RenderError([_line(path, message, ids) for message, ids in found.values()])
    return images, cats


def _line(path: str, message: str, ids: list[Any]) -> str:
    line = f"{path}: annotation id={ids[0]}: {message}"
    if len(ids) > 1:
        shown = ", ".join(map(str, ids[:MAX_IDS])) + (", ..." if len(ids) > MAX_IDS else "")
        line += f" ({len(ids)} annotations like this: ids {shown})"
    return line


__all__ = ["RenderError", "check_renderable", "rle_string_counts", "segmentation_problem"]
