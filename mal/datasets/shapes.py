"""A deterministic synthetic set: textured shapes on textured backgrounds, with exact masks.

Shapes (ellipse, rectangle, triangle, star, ring) get a random colour plus noise/stripe texture and are
painted back-to-front, so later shapes occlude earlier ones; each annotation's mask is the visible part.
The same arguments always give byte-identical images and JSONs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from mal.datasets.common import mask_to_annotation, save_png, write_splits

SHAPES = ["ellipse", "rectangle", "triangle", "star", "ring"]
CATEGORIES = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(SHAPES)]
MIN_VISIBLE_FRACTION = 0.4  # an object mostly hidden by later ones is re-drawn elsewhere


def _texture(rng: np.random.Generator, size: int, base: np.ndarray, strength: float) -> np.ndarray:
    """size x size x 3 float image: a base colour, smooth noise and oriented stripes."""
    noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size, 3)).astype(np.float32), (0, 0), rng.uniform(1, 4))
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    theta, freq = rng.uniform(0, np.pi), rng.uniform(0.05, 0.4)
    stripes = np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * freq)[..., None]
    return base[None, None, :] + strength * (40 * noise / (noise.std() + 1e-6) + 25 * stripes)


def _shape_mask(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    r = rng.uniform(0.08, 0.22) * size
    cx, cy = rng.uniform(r, size - r, 2)
    if kind == "ellipse":
        cv2.ellipse(mask, (int(cx), int(cy)), (int(r), int(r * rng.uniform(0.5, 1.0))),
                    rng.uniform(0, 180), 0, 360, 1, -1)
    elif kind == "rectangle":
        box = ((cx, cy), (2 * r, 2 * r * rng.uniform(0.4, 1.0)), rng.uniform(0, 90))
        cv2.fillPoly(mask, [cv2.boxPoints(box).astype(np.int32)], 1)
    elif kind == "triangle":
        angles = rng.uniform(0, 2 * np.pi) + np.array([0, 2.1, 4.2]) + rng.uniform(-0.3, 0.3, 3)
        pts = np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], 1)
        cv2.fillPoly(mask, [pts.astype(np.int32)], 1)
    elif kind == "star":
        k = np.arange(10)
        rad = np.where(k % 2 == 0, r, r * 0.45)
        ang = k * np.pi / 5 + rng.uniform(0, np.pi)
        cv2.fillPoly(mask, [np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1).astype(np.int32)], 1)
    else:  # ring
        cv2.circle(mask, (int(cx), int(cy)), int(r), 1, -1)
        cv2.circle(mask, (int(cx), int(cy)), int(r * 0.5), 0, -1)
    return mask.astype(bool)


def render_image(rng: np.random.Generator, size: int, n_objects: int) -> tuple[np.ndarray, list[tuple[int, np.ndarray]]]:
    """One RGB image and its visible (category_id, mask) list."""
    image = _texture(rng, size, rng.uniform(60, 200, 3), 0.6)
    owner = np.full((size, size), -1, np.int32)
    objects: list[tuple[int, np.ndarray]] = []
    for _ in range(n_objects):
        for _attempt in range(10):
            cat = int(rng.integers(len(SHAPES)))
            mask = _shape_mask(rng, SHAPES[cat], size)
            if mask.sum() >= 30:
                break
        tex = _texture(rng, size, rng.uniform(0, 255, 3), 0.4)
        image[mask] = tex[mask]
        owner[mask] = len(objects)
        objects.append((cat + 1, mask))
    visible = []
    for idx, (cat, mask) in enumerate(objects):
        vis = owner == idx
        if vis.sum() >= MIN_VISIBLE_FRACTION * mask.sum() and vis.sum() >= 30:
            visible.append((cat, vis))
    return np.clip(image, 0, 255).astype(np.uint8), visible


def _split(rng: np.random.Generator, out_dir: Path, split: str, n_images: int, size: int, min_obj: int,
           max_obj: int, first_image_id: int, first_ann_id: int) -> tuple[dict[str, Any], int]:
    images, anns, ann_id = [], [], first_ann_id
    for i in range(n_images):
        image_id = first_image_id + i
        img, objects = render_image(rng, size, int(rng.integers(min_obj, max_obj + 1)))
        file_name = f"images/{split}/{image_id:05d}.png"
        save_png(img, out_dir / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        for cat, mask in objects:
            anns.append(mask_to_annotation(mask, ann_id, image_id, cat))
            ann_id += 1
    return {"images": images, "annotations": anns, "categories": CATEGORIES}, ann_id


def build_shapes(out_dir: str | Path, num_train: int, num_val: int, image_size: int, min_objects: int,
                 max_objects: int, seed: int) -> dict[str, Any]:
    """Write the synthetic set (images + train_gt/train_boxes/val_gt JSONs) to ``out_dir`` (options and their
    defaults: ``data.shapes``, :class:`mal.config.data.ShapesParams`)."""
    if not 1 <= min_objects <= max_objects:
        raise ValueError(f"shapes: need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    out_dir = Path(out_dir)
    rng = np.random.default_rng(seed)
    train, next_ann = _split(rng, out_dir, "train", num_train, image_size, min_objects, max_objects, 1, 1)
    val, _ = _split(rng, out_dir, "val", num_val, image_size, min_objects, max_objects, num_train + 1, next_ann)
    write_splits(out_dir, train, val)
    return {"seed": seed}
