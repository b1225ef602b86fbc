"""Image files: where they live and how they are read -- the one reader every phase uses.

Pixels come out in the *displayed* frame: the EXIF orientation is applied exactly as detectron2's
``detection_utils.read_image`` applies it, so pseudo-masks (labeller), training crops (labeler) and the
detector's inputs share one coordinate frame, the one COCO ``width``/``height`` and boxes refer to.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

EXIF_ORIENTATION = 274  # the EXIF 'Orientation' tag
# EXIF orientation -> the transpose that displays the image (detectron2's _apply_exif_orientation table).
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def image_path(json_path: str | Path, image: dict[str, Any], image_root: str | Path | None = None) -> Path:
    """Where an image lives: ``image_root`` if given, else the directory of the COCO JSON, joined with file_name."""
    root = Path(image_root) if image_root is not None else Path(json_path).parent
    return root / image["file_name"]


def exif_orientation(im: Image.Image) -> int | None:
    """The EXIF orientation tag, or None; unreadable EXIF counts as none (as in detectron2)."""
    try:
        return im.getexif().get(EXIF_ORIENTATION)
    except Exception:  # malformed EXIF blocks raise assorted errors; the pixels are still fine
        return None


def apply_exif_orientation(im: Image.Image) -> Image.Image:
    """``im`` as displayed. Not ``ImageOps.exif_transpose``: that also rewrites the EXIF block, which
    raises on some files (the Pillow bug detectron2 works around); the transposes are the same."""
    method = _TRANSPOSE.get(exif_orientation(im))
    return im.transpose(method) if method is not None else im


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of the displayed image, from the header only (no pixel decoding)."""
    with Image.open(path) as im:
        w, h = im.size
        return (w, h) if exif_orientation(im) in (5, 6, 7, 8) else (h, w)


def read_image(path: str | Path) -> np.ndarray:
    """Read any common image as ``H x W x 3`` uint8 RGB in the displayed (EXIF-oriented) frame.

    Gray, 16-bit (percentile-free min/max scaling), palette, RGBA (alpha dropped) and CMYK are converted.
    Raises ``ValueError`` naming the path when the file is missing or does not decode.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            return pil_to_rgb(apply_exif_orientation(im))
    except (OSError, SyntaxError, ValueError) as e:  # PIL raises these for truncated/unknown files
        raise ValueError(f"{path}: image does not decode ({e})") from e


def pil_to_rgb(im: Image.Image) -> np.ndarray:
    """A decoded PIL image (any mode) -> ``H x W x 3`` uint8 RGB, converted as :func:`read_image` describes."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        arr = np.zeros_like(arr) if hi <= lo else (arr - lo) / (hi - lo) * 255.0
        gray = arr.round().astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def as_rgb(image: np.ndarray | Image.Image) -> np.ndarray:
    """An in-memory image -> ``H x W x 3`` uint8 RGB, the frame and conversion of :func:`read_image`.

    ``H x W x 3`` uint8 arrays are taken as RGB unchanged; other arrays (gray ``H x W``, ``H x W x 4``,
    16-bit or float gray) and PIL images go through :func:`pil_to_rgb`; a PIL image's EXIF orientation
    is applied, as for a file. Raises ``ValueError`` for arrays PIL cannot interpret.
    """
    if isinstance(image, Image.Image):
        return pil_to_rgb(apply_exif_orientation(image))
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    try:
        return pil_to_rgb(Image.fromarray(arr))
    except (TypeError, ValueError) as e:
        raise ValueError(f"image must be H x W x 3 uint8 RGB, gray or RGBA, got {arr.dtype} {arr.shape}") from e
