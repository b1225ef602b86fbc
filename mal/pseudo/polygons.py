"""Mask geometry of the exports: outer contours as pixel-corner polygons, multi-part joins, CVAT's mask RLE."""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_EPSILON = 0.5  # px: Douglas-Peucker tolerance; polygons trace pixel corners, so 0.5 px keeps IoU ~1


def mask_polygons(mask: np.ndarray, epsilon: float = DEFAULT_EPSILON) -> tuple[list[np.ndarray], int]:
    """Outer contours of a binary mask as ``k x 2`` float arrays of (x, y) **pixel-corner** coordinates.

    Traced on the 2x nearest-upsampled mask: each upsampled boundary pixel is one quadrant of an original
    pixel, and ``(u + 1) // 2`` maps it to that quadrant's corner, so the polygon runs along pixel edges and
    a continuous-coordinate rasteriser (pycocotools) gives the mask back exactly (before simplification).
    Only the bounding box is upsampled. Returns ``(polygons, dropped)``; holes are not traced.
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return [], 0
    y0, x0 = int(ys.min()), int(xs.min())
    crop = np.ascontiguousarray(mask[y0 : ys.max() + 1, x0 : xs.max() + 1], dtype=np.uint8)
    up = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    contours, _ = cv2.findContours(up, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys, dropped = [], 0
    for c in contours:
        pts = (c.reshape(-1, 1, 2) + 1) // 2
        if epsilon > 0:
            pts = cv2.approxPolyDP(pts.astype(np.int32), epsilon, True)
        pts = pts.reshape(-1, 2).astype(np.float64) + (x0, y0)
        if len(pts) < 3:
            dropped += 1
            continue
        polys.append(pts)
    return polys, dropped


def join_polygons(polys: list[np.ndarray]) -> np.ndarray:
    """One polygon through all parts: part k+1 hangs off part k by a there-and-back bridge between their
    nearest vertices (zero area, so even-odd and non-zero fills give back the union of the parts)."""
    if len(polys) == 1:
        return polys[0]
    head, rest = polys[0], join_polygons(polys[1:])
    d = ((head[:, None, :] - rest[None, :, :]) ** 2).sum(-1)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    rest = np.roll(rest, -j, axis=0)
    head = np.roll(head, -i, axis=0)  # head[0] is the bridge end on this part
    return np.concatenate([head, head[:1], rest, rest[:1]])


def cvat_rle(mask: np.ndarray) -> tuple[list[int], tuple[int, int, int, int]] | None:
    """CVAT mask RLE: run lengths, row-major over the mask's box, starting with background (may be 0).

    Returns ``(counts, (left, top, width, height))``, or None for an empty mask.
    """
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    left, top = int(xs.min()), int(ys.min())
    width, height = int(xs.max()) + 1 - left, int(ys.max()) + 1 - top
    flat = (mask[top : top + height, left : left + width] > 0).ravel().astype(np.int8)
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts.insert(0, 0)
    return counts, (left, top, width, height)


__all__ = ["DEFAULT_EPSILON", "cvat_rle", "join_polygons", "mask_polygons"]
