"""Mask utilities: box masks, pasting crop-level probability maps into images, COCO RLE.

Coordinate convention (same as COCO / detectron2): continuous coordinates, pixel ``(r, c)`` covers
``[c, c+1) x [r, r+1)`` and its centre is ``(c + 0.5, r + 0.5)``. A box ``[x, y, w, h]`` (xywh) covers the
continuous rectangle ``[x, x+w) x [y, y+h)``. Crops are sampled centre-aligned: crop pixel ``i`` of an
``S``-pixel crop spanning ``[x0, x1)`` sits at ``x0 + (i + 0.5) * (x1 - x0) / S``.

Masks of large images are never materialised as full-image float maps: the pasting functions return a
uint8 *region* plus its integer offset, and :func:`rle_from_region` turns a region straight into the RLE of
the full image.
"""

from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from mal.common.boxes import Region, box_region


def box_mask(box: list[float] | tuple[float, ...], height: int, width: int) -> np.ndarray:
    """``height x width`` uint8 mask, 1 on every pixel the box touches (box-as-mask)."""
    m = np.zeros((height, width), dtype=np.uint8)
    x0, y0, x1, y1 = box_region(box, width, height)
    m[y0:y1, x0:x1] = 1
    return m


def paste_prob(
    prob: np.ndarray, crop_xyxy: tuple[float, float, float, float], width: int, height: int
) -> tuple[np.ndarray, Region]:
    """Resample a crop-level probability map onto the image pixels the crop covers.

    Args:
        prob: ``m x m`` (or ``mh x mw``) float map over the crop window ``crop_xyxy`` (continuous coords,
            may extend beyond the image).
        crop_xyxy: the crop window ``(x0, y0, x1, y1)`` in image coordinates.
        width, height: image size.
    Returns:
        ``(region_prob, (rx0, ry0, rx1, ry1))``: float32 ``(ry1-ry0) x (rx1-rx0)`` probabilities for the
        integer image region inside both the crop window and the image (bilinear, centre-aligned).
        The region may be empty (shape ``0 x 0``) when the window misses the image.
    """
    cx0, cy0, cx1, cy1 = (float(v) for v in crop_xyxy)
    mh, mw = prob.shape[:2]
    rx0 = min(max(int(math.floor(cx0)), 0), width)
    ry0 = min(max(int(math.floor(cy0)), 0), height)
    rx1 = min(max(int(math.ceil(cx1)), 0), width)
    ry1 = min(max(int(math.ceil(cy1)), 0), height)
    if rx1 <= rx0 or ry1 <= ry0 or cx1 <= cx0 or cy1 <= cy0:
        return np.zeros((0, 0), dtype=np.float32), (0, 0, 0, 0)
    # image pixel centre u+0.5 -> crop map index (u + 0.5 - cx0) / (cx1 - cx0) * mw - 0.5
    us = (np.arange(rx0, rx1, dtype=np.float64) + 0.5 - cx0) * (mw / (cx1 - cx0)) - 0.5
    vs = (np.arange(ry0, ry1, dtype=np.float64) + 0.5 - cy0) * (mh / (cy1 - cy0)) - 0.5
    map_x = np.broadcast_to(us[None, :].astype(np.float32), (ry1 - ry0, rx1 - rx0))
    map_y = np.broadcast_to(vs[:, None].astype(np.float32), (ry1 - ry0, rx1 - rx0))
    out = cv2.remap(
        np.ascontiguousarray(prob, dtype=np.float32),
        np.ascontiguousarray(map_x),
        np.ascontiguousarray(map_y),
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return out.reshape(ry1 - ry0, rx1 - rx0), (rx0, ry0, rx1, ry1)


def paste_in_box(
    prob: np.ndarray,
    crop_xyxy: tuple[float, float, float, float],
    box: list[float] | tuple[float, ...],
    width: int,
    height: int,
    threshold: float,
) -> tuple[np.ndarray, Region]:
    """A crop-level probability map as a binary mask in image pixels, kept to the pixels ``box`` touches.

    Pastes with :func:`paste_prob`, then foreground = ``prob > threshold`` inside :func:`box_region`.
    Returns ``(region_mask bool, region)`` as :func:`paste_prob` (feed both to :func:`rle_from_region`).
    """
    region_prob, (rx0, ry0, rx1, ry1) = paste_prob(prob, crop_xyxy, width, height)
    bx0, by0, bx1, by1 = box_region(box, width, height)
    mask = np.zeros(region_prob.shape, dtype=bool)
    ix0, iy0, ix1, iy1 = max(bx0, rx0), max(by0, ry0), min(bx1, rx1), min(by1, ry1)
    if ix1 > ix0 and iy1 > iy0:
        sub = region_prob[iy0 - ry0 : iy1 - ry0, ix0 - rx0 : ix1 - rx0]
        mask[iy0 - ry0 : iy1 - ry0, ix0 - rx0 : ix1 - rx0] = sub > threshold
    return mask, (rx0, ry0, rx1, ry1)


def rle_from_region(region_mask: np.ndarray, region: Region, height: int, width: int) -> dict[str, Any]:
    """COCO RLE (string counts) of a full ``height x width`` mask that is zero outside ``region``.

    Built from the run boundaries of the region only, so memory is O(region), not O(image).
    """
    x0, y0, x1, y1 = region
    rm = np.asarray(region_mask, dtype=bool)
    if rm.size == 0 or not rm.any():
        counts = [height * width]
    else:
        if rm.shape != (y1 - y0, x1 - x0):
            raise ValueError(f"region mask shape {rm.shape} does not match region {region}")
        # pad each column (column-major order) with zeros above and below -> transitions = run ends
        colmajor = np.zeros((x1 - x0, y1 - y0 + 2), dtype=np.int8)
        colmajor[:, 1:-1] = rm.T
        d = np.diff(colmajor, axis=1)
        sj, si = np.nonzero(d == 1)  # run starts (column j, row i within region)
        ej, ei = np.nonzero(d == -1)  # run ends (exclusive)
        starts = (x0 + sj).astype(np.int64) * height + y0 + si
        ends = (x0 + ej).astype(np.int64) * height + y0 + ei
        # runs touching across a column boundary (full-height regions) merge
        keep_start = np.ones(len(starts), dtype=bool)
        keep_end = np.ones(len(ends), dtype=bool)
        touching = ends[:-1] == starts[1:]
        keep_end[:-1] &= ~touching
        keep_start[1:] &= ~touching
        starts, ends = starts[keep_start], ends[keep_end]
        bounds = np.empty(2 * len(starts) + 2, dtype=np.int64)
        bounds[0] = 0
        bounds[1:-1:2] = starts
        bounds[2:-1:2] = ends
        bounds[-1] = height * width
        counts = np.diff(bounds).tolist()
        if len(counts) > 1 and counts[-1] == 0:  # mask ends on the last pixel: no trailing zero run
            counts.pop()
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": counts}, height, width)
    return {"size": [int(height), int(width)], "counts": rle["counts"].decode("ascii")}


def encode_mask(mask: np.ndarray) -> dict[str, Any]:
    """COCO RLE with string counts of a full ``H x W`` binary mask."""
    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def empty_rle(height: int, width: int) -> dict[str, Any]:
    """RLE of an all-zero mask."""
    return rle_from_region(np.zeros((0, 0), dtype=bool), (0, 0, 0, 0), height, width)


def box_rle(box: list[float] | tuple[float, ...], height: int, width: int) -> dict[str, Any]:
    """RLE of the box mask (see :func:`box_mask`), without materialising the full image."""
    reg = box_region(box, width, height)
    x0, y0, x1, y1 = reg
    return rle_from_region(np.ones((y1 - y0, x1 - x0), dtype=bool), reg, height, width)


def _to_compressed(rle: dict[str, Any]) -> dict[str, Any]:
    counts = rle["counts"]
    return {
        "size": list(rle["size"]),
        "counts": counts.encode("ascii") if isinstance(counts, str) else counts,
    }


def segmentation_to_rle(segm: Any, height: int, width: int, where: str = "segmentation") -> dict[str, Any]:
    """Any COCO segmentation (polygon list, uncompressed or compressed RLE) -> compressed RLE (bytes counts).

    Raises ``ValueError`` naming ``where`` (no prefix when empty) when the segmentation is malformed or
    has the wrong size.
    """
    prefix = f"{where}: " if where else ""
    try:
        if isinstance(segm, list):
            polys = [p for p in segm if isinstance(p, list) and len(p) >= 6]
            if not polys:
                return mask_utils.frPyObjects(
                    {"size": [height, width], "counts": [height * width]}, height, width
                )
            return mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
        if isinstance(segm, dict) and "counts" in segm and "size" in segm:
            if [int(v) for v in segm["size"]] != [height, width]:
                raise ValueError(f"RLE size {segm['size']} != image size {[height, width]}")
            if isinstance(segm["counts"], list):
                return mask_utils.frPyObjects(segm, height, width)
            return _to_compressed(segm)
    except (TypeError, KeyError) as e:
        raise ValueError(f"{prefix}malformed segmentation ({e})") from e
    except ValueError as e:
        raise ValueError(f"{prefix}{e}") from e
    raise ValueError(f"{prefix}unsupported segmentation type {type(segm).__name__}")


def decode_segmentation(segm: Any, height: int, width: int) -> np.ndarray:
    """Any COCO segmentation -> ``height x width`` uint8 mask."""
    return mask_utils.decode(segmentation_to_rle(segm, height, width)).astype(np.uint8)


def rle_area(rle: dict[str, Any]) -> int:
    """Foreground pixel count of an RLE (string or bytes counts)."""
    return int(mask_utils.area(_to_compressed(rle)))


def rle_iou(a: dict[str, Any], b: dict[str, Any]) -> float:
    """IoU of two same-size RLE masks (0 when both are empty)."""
    ca, cb = _to_compressed(a), _to_compressed(b)
    if rle_area(ca) == 0 and rle_area(cb) == 0:
        return 0.0
    return float(mask_utils.iou([ca], [cb], [0])[0][0])
