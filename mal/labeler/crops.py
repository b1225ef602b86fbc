"""Box crops: context expansion, wrap-around crop + warp, and the box mask inside a crop.

Coordinates: boxes are COCO ``[x, y, w, h]`` floats in image pixels, crops are ``(x0, y0, x1, y1)`` with a
continuous pixel convention (pixel ``u`` covers ``[u, u+1)``, its centre is ``u + 0.5``).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

Box = Sequence[float]
_REMAP_MAX_SIDE = 32000  # cv2.remap works in 16-bit fixed-point coordinates; larger images take numpy


def _check_box(box_xywh: Box) -> tuple[float, float, float, float]:
    if len(box_xywh) != 4:
        raise ValueError(f"box must be [x, y, w, h], got {list(box_xywh)!r}")
    x, y, w, h = (float(v) for v in box_xywh)
    if not all(np.isfinite([x, y, w, h])):
        raise ValueError(f"box has non-finite values: {list(box_xywh)!r}")
    if w < 0 or h < 0:
        raise ValueError(f"box has negative width/height: {list(box_xywh)!r}")
    return x, y, w, h


def expand_box_fixed(box_xywh: Box, factor: float = 1.3) -> tuple[float, float, float, float]:
    """Symmetric expansion around the box centre: width and height times ``factor``.

    A degenerate side (0 px) is treated as 1 px so that the crop never has zero size.
    Returns ``(x0, y0, x1, y1)`` floats (may lie outside the image).
    """
    x, y, w, h = _check_box(box_xywh)
    cx, cy = x + w / 2.0, y + h / 2.0
    hw, hh = max(w, 1.0) * factor / 2.0, max(h, 1.0) * factor / 2.0
    return cx - hw, cy - hh, cx + hw, cy + hh


def expand_box_random(
    box_xywh: Box, rng: np.random.Generator, max_margin: float = 1.2
) -> tuple[float, float, float, float]:
    """Random asymmetric context expansion (MAL training crops).

    Per axis a margin ``m ~ U(0, max_margin)`` and a gate ``g ~ U(0, 1)``: the left/top side moves out by
    ``m*g*size/2``, the right/bottom side by ``m*(1-g)*size/2``. The overall factor per axis is
    ``1 + m/2`` in ``[1, 1 + max_margin/2]`` (mean 1.3 for the paper's 1.2).
    """
    x, y, w, h = _check_box(box_xywh)
    w, h = max(w, 1.0), max(h, 1.0)
    mx, my = rng.uniform(0.0, max_margin, size=2)
    gx, gy = rng.uniform(0.0, 1.0, size=2)
    x0 = x - mx * gx * w / 2.0
    x1 = x + w + mx * (1.0 - gx) * w / 2.0
    y0 = y - my * gy * h / 2.0
    y1 = y + h + my * (1.0 - gy) * h / 2.0
    return float(x0), float(y0), float(x1), float(y1)


def crop_and_resize(image: np.ndarray, box_xyxy: Box, size: int) -> np.ndarray:
    """Crop ``box_xyxy`` from ``image`` and warp it to ``size x size`` (aspect ratio not kept), bilinear.

    Args:
        image: ``H x W x 3`` uint8 (``H x W`` is accepted and returned as ``size x size``).
        box_xyxy: crop window in image pixels, may extend past the borders.
        size: output side in pixels.
    Returns:
        ``size x size x 3`` uint8. Pixels outside the image are filled by wrap-around (pixel ``u`` outside
        reads pixel ``u mod W``), as in the official MAL code.
    """
    if image.ndim not in (2, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"image must be HxW or HxWxC, got shape {image.shape}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    x0, y0, x1, y1 = (float(v) for v in box_xyxy)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"empty crop window {list(box_xyxy)!r}")
    # sample positions (pixel centres of the output) in image coordinates, centre-of-pixel convention
    t = (np.arange(size, dtype=np.float64) + 0.5) / size
    xs = x0 + t * (x1 - x0) - 0.5
    ys = y0 + t * (y1 - y0) - 0.5
    if max(image.shape[:2]) < _REMAP_MAX_SIDE and (image.ndim == 2 or image.shape[2] <= 4):
        # OpenCV's bilinear remap with wrap-around borders: the same samples, ~10x faster than numpy
        # (it quantises sample positions to 1/32 px: <1 grey level off the float path on average)
        map_x = np.broadcast_to(xs.astype(np.float32)[None, :], (size, size))
        map_y = np.broadcast_to(ys.astype(np.float32)[:, None], (size, size))
        out = cv2.remap(
            np.ascontiguousarray(image), np.ascontiguousarray(map_x), np.ascontiguousarray(map_y),
            interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP,
        )
        return out.reshape((size, size) + image.shape[2:])
    xf, yf = np.floor(xs), np.floor(ys)
    ax, ay = (xs - xf).astype(np.float32), (ys - yf).astype(np.float32)
    xi, yi = xf.astype(np.int64), yf.astype(np.int64)
    rows0 = np.take(image, yi, axis=0, mode="wrap")
    rows1 = np.take(image, yi + 1, axis=0, mode="wrap")
    p00 = np.take(rows0, xi, axis=1, mode="wrap").astype(np.float32)
    p01 = np.take(rows0, xi + 1, axis=1, mode="wrap").astype(np.float32)
    p10 = np.take(rows1, xi, axis=1, mode="wrap").astype(np.float32)
    p11 = np.take(rows1, xi + 1, axis=1, mode="wrap").astype(np.float32)
    wx = ax[None, :] if image.ndim == 2 else ax[None, :, None]
    wy = ay[:, None] if image.ndim == 2 else ay[:, None, None]
    top = p00 * (1.0 - wx) + p01 * wx
    bot = p10 * (1.0 - wx) + p11 * wx
    out = top * (1.0 - wy) + bot * wy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def box_mask_in_crop(box_xywh: Box, crop_xyxy: Box, out_size: int) -> np.ndarray:
    """The box as a binary mask on the ``out_size x out_size`` grid of a crop.

    An output pixel is inside when its centre lies in the box; a box thinner than one output pixel
    still covers the pixel its centre falls in (never an empty mask for a box inside the crop).
    Returns ``out_size x out_size`` float32 in {0, 1}.
    """
    x, y, w, h = _check_box(box_xywh)
    cx0, cy0, cx1, cy1 = (float(v) for v in crop_xyxy)
    if not (cx1 > cx0 and cy1 > cy0):
        raise ValueError(f"empty crop window {list(crop_xyxy)!r}")
    sx, sy = out_size / (cx1 - cx0), out_size / (cy1 - cy0)
    # box edges in output-pixel units; pixel j is inside when j + 0.5 in [a, b)
    ax, bx = (x - cx0) * sx, (x + w - cx0) * sx
    ay, by = (y - cy0) * sy, (y + h - cy0) * sy

    def _span(a: float, b: float) -> tuple[int, int]:
        lo, hi = int(np.ceil(a - 0.5)), int(np.ceil(b - 0.5))
        if hi <= lo:  # thinner than a pixel: take the pixel holding the centre
            lo = int(np.floor((a + b) / 2.0))
            hi = lo + 1
        return max(lo, 0), min(hi, out_size)

    c0, c1 = _span(ax, bx)
    r0, r1 = _span(ay, by)
    mask = np.zeros((out_size, out_size), dtype=np.float32)
    if c1 > c0 and r1 > r0:
        mask[r0:r1, c0:c1] = 1.0
    return mask
