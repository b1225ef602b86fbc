"""Boxes: clipping, the integer pixel region a box covers, and which boxes train the labeler.

Coordinates are COCO's: continuous, ``[x, y, w, h]`` covers ``[x, x+w) x [y, y+h)``.
"""

from __future__ import annotations

import math
from typing import Any

Region = tuple[int, int, int, int]  # integer (x0, y0, x1, y1), x1/y1 exclusive


def clip_box_xywh(box: list[float] | tuple[float, ...], width: int, height: int) -> list[float]:
    """Clip an ``[x, y, w, h]`` box to the image ``[0, width) x [0, height)``; may return w or h == 0."""
    x, y, w, h = (float(v) for v in box)
    x0, y0 = min(max(x, 0.0), width), min(max(y, 0.0), height)
    x1, y1 = min(max(x + w, 0.0), width), min(max(y + h, 0.0), height)
    return [x0, y0, max(x1 - x0, 0.0), max(y1 - y0, 0.0)]


def box_region(box: list[float] | tuple[float, ...], width: int, height: int) -> Region:
    """Integer pixel region covered (even partly) by ``box`` (xywh), clipped to the image; may be empty."""
    x, y, w, h = (float(v) for v in box)
    if not (w > 0 and h > 0):
        return (0, 0, 0, 0)
    x0 = min(max(int(math.floor(x + 1e-6)), 0), width)
    y0 = min(max(int(math.floor(y + 1e-6)), 0), height)
    x1 = min(max(int(math.ceil(x + w - 1e-6)), 0), width)
    y1 = min(max(int(math.ceil(y + h - 1e-6)), 0), height)
    if x1 <= x0 or y1 <= y0:
        return (0, 0, 0, 0)
    return (x0, y0, x1, y1)


def is_trainable(ann: dict[str, Any], min_area: float, min_side: float) -> bool:
    """The labeler trains on non-crowd boxes with w, h > min_side and w*h > min_area (paper: 2, 2048)."""
    _, _, w, h = ann["bbox"]
    return not ann.get("iscrowd", 0) and w > min_side and h > min_side and w * h > min_area
