"""Build the chosen dataset, validate what was written, write its metrics (the ``prepare`` stage's work).

Outputs in the prepared folder (the stage's ``--out``): ``train_boxes.json`` (masks removed), ``train_gt.json``
(masks kept; only for the GT-mask baseline and for measuring pseudo-mask quality), ``val_gt.json``; images/ for
built-in sets.
"""

from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mal.common.boxes import is_trainable
from mal.common.coco_io import ValidationReport, load_coco
from mal.config.data import DataParams

SPLIT_FILES = {"train": "train_gt.json", "train_boxes": "train_boxes.json", "val": "val_gt.json"}


def _build_nuclei(out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    from mal.datasets.nuclei import build_nuclei

    return build_nuclei(out_dir, **cfg)


def _build_shapes(out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    from mal.datasets.shapes import build_shapes

    return build_shapes(out_dir, **cfg)


def _build_coco(out_dir: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    from mal.datasets.coco import build_coco

    return build_coco(out_dir, **cfg)


BUILDERS: dict[str, Callable[[Path, dict[str, Any]], dict[str, Any]]] = {
    "nuclei": _build_nuclei,
    "shapes": _build_shapes,
    "coco": _build_coco,
}


def split_stats(coco: dict[str, Any], min_area: float, min_side: float) -> dict[str, Any]:
    """Counts for one split: images, boxes, crowd, too small to train on, invalid boxes, per class."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    anns = coco["annotations"]
    per_class = Counter(names[a["category_id"]] for a in anns)
    crowd = sum(1 for a in anns if a["iscrowd"])
    trainable = sum(1 for a in anns if is_trainable(a, min_area, min_side))
    return {
        "images": len(coco["images"]),
        "boxes": len(anns),
        "crowd_boxes": crowd,
        "too_small_to_train": len(anns) - crowd - trainable,
        "trainable_boxes": trainable,
        "invalid_boxes": sum(1 for a in anns if "mal_invalid_box" in a),
        "with_masks": sum(1 for a in anns if a.get("segmentation") is not None),
        "per_class": {name: per_class.get(name, 0) for name in names.values()},
    }


def prepare(data: DataParams, out_dir: str | Path) -> dict[str, Any]:
    """Build ``data.dataset`` into ``out_dir`` (replacing what is there) and return the metrics."""
    name = data.dataset
    out_dir = Path(out_dir)
    if out_dir.exists():  # a clean rebuild: stale images of another dataset must not linger
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    info = BUILDERS[name](out_dir, getattr(data, name).model_dump())
    reports: dict[str, ValidationReport] = info.pop("reports", {})
    metrics: dict[str, Any] = {"dataset": name}
    for split, file_name in SPLIT_FILES.items():
        # Re-read what was written: proves the outputs satisfy the same validation users' files get.
        root = data.image_root("val" if split == "val" else "train", out_dir)
        coco, report = load_coco(out_dir / file_name, image_root=root, check_images="exists")
        if split != "train_boxes":
            metrics[split] = split_stats(coco, data.min_train_box_area, data.min_train_box_side)
        warnings = Counter(report.warnings)
        if split in reports:
            warnings.update(reports[split].warnings)
        if split != "train_boxes":
            metrics[split]["warnings"] = dict(warnings)
    metrics.update({k: v for k, v in info.items() if isinstance(v, (int, float, str, bool, list))})
    return metrics
