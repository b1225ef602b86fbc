"""Pseudo-masks for the boxes of a COCO file: the engine (:mod:`mal.pseudo.engine`) fed from image files.

Guarantees (see docs/pseudo_labels.md): every input annotation comes out, either with a mask or in the
``skipped`` list with a reason. Each output annotation carries ``"mal": {"source": "labeler" |
"box_fallback", "reason": ..., "score": ...}``; ``area`` is the mask area; crowd boxes keep ``iscrowd``.
``score`` (also top-level, where COCO results and Label Studio read it) is the mask's confidence in [0, 1]
(:mod:`mal.pseudo.confidence`); box fallbacks score 0.0, the least trustworthy masks.

Sharding and merging live in :mod:`mal.pseudo.shards`.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from mal.common.images import image_path
from mal.config.pseudo import LabelOptions, RunPseudoLabelParams
from mal.pseudo.boxes import BoxPlan, load_boxes, plan_annotations
from mal.pseudo.engine import (
    BoxPredictor,
    ImageItem,
    ImageJob,
    LabelResult,
    LabelSession,
    SkipError,
    crop_boxes,
    image_item,
    load_item,
    paste_annotation,
    resolve_options,
)
from mal.pseudo.predictor import ModelPredictor, Predictor

__all__ = [
    "BoxPlan",
    "ImageItem",
    "ImageJob",
    "LabelOptions",
    "LabelResult",
    "LabelSession",
    "ModelPredictor",
    "Predictor",
    "SkipError",
    "crop_boxes",
    "file_items",
    "image_item",
    "label_images",
    "load_boxes",
    "paste_annotation",
    "plan_annotations",
    "resolve_options",
]


class _FileItems(torch.utils.data.Dataset):
    """One item per job: :func:`~mal.pseudo.engine.load_item` of its image file (run in loader workers)."""

    def __init__(self, jobs: list[ImageJob], json_path: Path, image_root: Path | None, expand: float,
                 crop_size: int) -> None:
        self.jobs, self.json_path, self.image_root = jobs, json_path, image_root
        self.expand, self.crop_size = expand, crop_size

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, idx: int) -> ImageItem:
        job = self.jobs[idx]
        path = image_path(self.json_path, job.image, self.image_root)
        return load_item(job, path, self.expand, self.crop_size)


def _as_is(item: ImageItem) -> ImageItem:
    return item


def file_items(jobs: list[ImageJob], json_path: str | Path, image_root: str | Path | None, expand: float,
               crop_size: int, num_workers: int = 0) -> Iterable[ImageItem]:
    """The items of ``jobs`` read from files (``image_root / file_name``, default root: the JSON's folder),
    in job order, by ``num_workers`` loader processes (0: this one)."""
    ds = _FileItems(jobs, Path(json_path), Path(image_root) if image_root else None, expand, crop_size)
    return torch.utils.data.DataLoader(ds, batch_size=None, shuffle=False, num_workers=num_workers,
                                       collate_fn=_as_is)


def label_images(
    coco: dict[str, Any],
    json_path: str | Path,
    predictor: BoxPredictor | None,
    options: LabelOptions,
    image_ids: list[int] | None = None,
    image_root: str | Path | None = None,
    plans: dict[int, list[BoxPlan]] | None = None,
    runtime: RunPseudoLabelParams | None = None,
) -> dict[str, Any]:
    """Label the annotations of ``image_ids`` (default: all, incl. unknown image ids) of ``coco``, read from
    ``json_path``, its images from files.

    Returns :class:`~mal.pseudo.engine.LabelResult`'s fields as a dict (``annotations`` by annotation id).
    ``predictor`` may be None when no box needs the model; ``options.threshold`` must be resolved
    (:func:`resolve_options`); ``runtime``: loader workers, paste threads, progress bar. Raises
    :class:`SkipError` on the first skip when ``options.allow_skips`` is False.
    """
    runtime = runtime or RunPseudoLabelParams()
    session = LabelSession(coco, json_path, predictor, options, runtime.paste_threads, runtime.show_progress)
    jobs = session.select(image_ids, plans)
    session.label(file_items(jobs, json_path, image_root, options.expand, session.crop_size, runtime.num_workers))
    return vars(session.result())

