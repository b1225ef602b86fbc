"""Python API: masks + confidences for boxes on an in-memory image.

    from mal import Labeler
    labeler = Labeler.from_checkpoint("models/labeler/vit_tiny/checkpoint.pt")
    results = labeler.label(image, [[x, y, w, h], ...])   # one LabelledMask per box, in order

The image goes through the same planning, crops, :class:`~mal.pseudo.label.Predictor`, paste and score code
as ``mal label`` / :func:`mal.pseudo.label.label_images` (one in-memory item instead of a file), so a box
gets the same mask and score either way (docs/api.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mal.common.images import as_rgb
from mal.common.masks import decode_segmentation
from mal.pseudo.boxes import plan_annotations
from mal.pseudo.label import LabelOptions, Predictor, _Labelling, crop_boxes

_WHERE = "<in-memory image>"


@dataclass
class LabelledMask:
    """One box's result: ``mask`` ``H x W`` bool in image pixels; ``score`` in [0, 1] (box fallbacks:
    0.0); ``box`` the input ``[x, y, w, h]``; ``source`` "labeler" | "box_fallback" and its ``reason``."""

    mask: np.ndarray
    score: float
    box: list[float]
    source: str
    reason: str | None = None


class Labeler:
    """A trained labeler on a device, labelling boxes on in-memory images."""

    def __init__(self, predictor: Predictor, options: LabelOptions) -> None:
        self.predictor, self.options = predictor, options

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = "auto",
        which: str = "student",
        threshold: float | None = None,
        flip_tta: bool = False,
        batch_size: int = 32,
    ) -> Labeler:
        """Load ``path`` (a labeler checkpoint); ``threshold`` None = the one the checkpoint records, as
        the CLI and the pipeline use."""
        from mal.labeler.model import checkpoint_mask_threshold

        if not Path(path).is_file():
            raise ValueError(f"{path}: labeler checkpoint not found")
        threshold = checkpoint_mask_threshold(path) if threshold is None else threshold
        options = LabelOptions(threshold=threshold, which=which, flip_tta=flip_tta, batch_size=batch_size,
                               device=device, allow_skips=False, show_progress=False)
        return cls(Predictor(path, which, flip_tta, device), options)

    def label(self, image: np.ndarray | Image.Image, boxes: Sequence[Sequence[float]]) -> list[LabelledMask]:
        """Masks for ``boxes`` (``[x, y, w, h]`` in pixels of ``image``, ``H x W x 3`` uint8 RGB, gray, RGBA,
        16-bit or a PIL image): one :class:`LabelledMask` per box, in order. An invalid box (negative or
        non-finite size) raises ``ValueError``; tiny, zero-size and outside boxes come back as flagged
        fallbacks."""
        rgb = as_rgb(image)
        h, w = rgb.shape[:2]
        coco = {
            "images": [{"id": 0, "file_name": _WHERE, "width": w, "height": h}],
            "annotations": [{"id": i, "image_id": 0, "bbox": [float(v) for v in b]} for i, b in enumerate(boxes)],
        }
        if not coco["annotations"]:
            return []
        plans = plan_annotations(coco, self.options.min_box_side)
        run = _Labelling(coco, _WHERE, self.predictor, self.options)  # allow_skips=False: bad boxes raise
        run.select(plans, [0])
        model = [p for p in run.items[0][1] if p.action == "model"]
        item = {"idx": 0, "error": None, "crops": None, "windows": []}
        if model:
            item["crops"], item["windows"] = crop_boxes(rgb, model, self.options.expand, self.predictor.crop_size)
        run.label([item])
        out = []
        for a in coco["annotations"]:
            got = run.done[a["id"]]
            out.append(LabelledMask(mask=decode_segmentation(got["segmentation"], h, w).astype(bool),
                                    score=float(got["score"]), box=a["bbox"], source=got["mal"]["source"],
                                    reason=got["mal"].get("reason")))
        return out
