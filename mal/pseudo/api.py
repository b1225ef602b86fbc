"""Python API: masks + confidences for boxes on an in-memory image.

    from mal import Labeler
    labeler = Labeler.from_checkpoint("models/labeler/vit_tiny/checkpoint.pt")
    results = labeler.label(image, [[x, y, w, h], ...])   # one LabelledMask per box, in order

A thin adapter over the labelling engine (:class:`mal.pseudo.engine.LabelSession`): the same planning,
crops, :class:`~mal.pseudo.predictor.Predictor`, paste and score code as ``mal label`` and the pipeline
(one in-memory image instead of a file), so a box gets the same mask and score either way (docs/api.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from mal.common.images import as_rgb
from mal.common.masks import decode_segmentation
from mal.config.pseudo import LabelOptions, RunPseudoLabelParams, Which
from mal.pseudo.engine import BoxPredictor, LabelSession, image_item, resolve_options
from mal.pseudo.predictor import Predictor

_WHERE = "<in-memory image>"
_OPT = LabelOptions.model_fields  # the keyword defaults below are the params' (mal.config.pseudo)


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
    """A trained labeler on a device, labelling boxes on in-memory images. ``options.threshold`` must be
    resolved (:func:`~mal.pseudo.engine.resolve_options`; :meth:`from_checkpoint` does it)."""

    def __init__(self, predictor: BoxPredictor, options: LabelOptions) -> None:
        self.predictor, self.options = predictor, options

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: str = RunPseudoLabelParams.model_fields["device"].default,
        which: Which = _OPT["which"].default,
        threshold: float | None = _OPT["threshold"].default,
        flip_tta: bool = _OPT["flip_tta"].default,
        batch_size: int = _OPT["batch_size"].default,
    ) -> Labeler:
        """Load ``path`` (a labeler checkpoint); ``threshold`` None = the one the checkpoint records, as
        the CLI and the pipeline use. Invalid boxes raise (``allow_skips=False``)."""
        options = LabelOptions(threshold=threshold, which=which, flip_tta=flip_tta, batch_size=batch_size,
                               allow_skips=False)
        options = resolve_options(options, path)
        return cls(Predictor(path, options.which, options.flip_tta, device), options)

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
        session = LabelSession(coco, _WHERE, self.predictor, self.options)
        jobs = session.select()
        session.label(image_item(job, rgb, self.options.expand, session.crop_size) for job in jobs)
        done = session.result().annotations
        out = []
        for a in coco["annotations"]:
            got = done[a["id"]]
            out.append(LabelledMask(mask=decode_segmentation(got["segmentation"], h, w).astype(bool),
                                    score=float(got["score"]), box=a["bbox"], source=got["mal"]["source"],
                                    reason=got["mal"].get("reason")))
        return out
