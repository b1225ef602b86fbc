"""Bootstrap intervals of COCO AP over val images (and seeds), computed by pycocotools itself.

pycocotools matches detections to ground truth image by image (``COCOeval.evaluate`` -> ``evalImgs``, one
record per category x area range x image), then ``accumulate`` pools the records of ``params.imgIds``
into precision/recall. A bootstrap resample of the val images is therefore a new ``params.imgIds`` over the
same per-image records: an image drawn twice is two images (new ids) with the same matches, exactly what
evaluating a val set holding that image twice would give. :class:`ImageEval` runs ``evaluate`` once per
detector and ``accumulate`` once per resample; the AP of the full set equals the ``evaluate`` stage's.

Resamples (:func:`draw_resamples`) are shared by every cell of the table, so that differences and ratios
are paired: the pseudo-mask and the GT-mask detector, or two labelers, are scored on the same images (and
the same seed indices) in each draw.
"""

from __future__ import annotations

import contextlib
import copy
import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mal.detection.coco_eval import IOU_TYPES, check_predictions, mean_precision, task_predictions


class ImageEval:
    """One detector's predictions matched per image by pycocotools; AP on any multiset of its images.

    ``ap(idx)``: mask (``task="mask"``) or box AP in percent (IoU .50:.95, all areas, ``max_dets``) on the
    images ``image_ids[idx]`` (``idx``: int array of positions, repeats allowed); ``ap()`` = the whole set.
    """

    def __init__(self, gt: COCO, predictions: list[dict[str, Any]], task: str = "mask", max_dets: int = 100):
        iou_type = IOU_TYPES[task]
        self.image_ids = list(gt.getImgIds())
        self._ev: COCOeval | None = None
        if not predictions:
            return
        check_predictions(gt, predictions, iou_type)
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(task_predictions(predictions, iou_type)), iou_type)
            ev.params.imgIds = self.image_ids
            ev.params.maxDets = [int(max_dets)]
            ev.params.areaRng, ev.params.areaRngLbl = [ev.params.areaRng[0]], ["all"]  # only the headline AP
            ev.evaluate()
        self._ev = ev

    def ap(self, idx: np.ndarray | None = None) -> float:
        if self._ev is None:  # a detector that detects nothing: AP 0 on every resample
            return 0.0
        ev, n_img = self._ev, len(self.image_ids)
        idx = np.arange(n_img) if idx is None else np.asarray(idx, dtype=np.int64)
        n_cat_area = len(ev.evalImgs) // n_img  # evalImgs layout: [category][area][image]
        draw = copy.copy(ev)
        draw.evalImgs = [ev.evalImgs[block * n_img + i] for block in range(n_cat_area) for i in idx.tolist()]
        params = copy.copy(ev._paramsEval)
        params.imgIds = list(range(len(idx)))  # the drawn images, each a distinct image
        draw._paramsEval, draw.params = params, params
        with contextlib.redirect_stdout(io.StringIO()):
            draw.accumulate()
        value = mean_precision(draw)
        return 100.0 * value if value >= 0 else float("nan")


@dataclass(frozen=True)
class Resamples:
    """``images``: ``B x N`` positions into the val images; ``seeds``: ``B x S`` positions into the seed list."""

    images: np.ndarray
    seeds: np.ndarray


def draw_resamples(num_images: int, num_seeds: int, num_draws: int, seed: int,
                   resample_seeds: bool = True) -> Resamples:
    """``num_draws`` bootstrap draws of the val images (with replacement) and, with ``resample_seeds``, of the
    training seeds (a two-level bootstrap: image sampling and training noise); deterministic in ``seed``."""
    if num_images < 1 or num_seeds < 1 or num_draws < 1:
        raise ValueError(f"bootstrap: need >= 1 image, seed and draw (got {num_images}, {num_seeds}, {num_draws})")
    rng = np.random.default_rng(int(seed))
    images = rng.integers(0, num_images, size=(num_draws, num_images))
    if resample_seeds:
        seeds = rng.integers(0, num_seeds, size=(num_draws, num_seeds))
    else:
        seeds = np.tile(np.arange(num_seeds), (num_draws, 1))
    return Resamples(images, seeds)


def seed_mean_draws(evals: list[ImageEval], draws: Resamples) -> np.ndarray:
    """Per draw, the mean AP over the drawn seeds of one cell (``evals[s]``: the detector of seed ``s``)."""
    if len(evals) != draws.seeds.shape[1]:
        raise ValueError(f"bootstrap: {len(evals)} seeds evaluated, the resamples are for {draws.seeds.shape[1]}")
    per_seed = np.array([[e.ap(idx) for idx in draws.images] for e in evals])  # S x B
    return per_seed[draws.seeds, np.arange(len(draws.images))[:, None]].mean(axis=1)


def interval(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval (``level`` central mass) of ``samples``; NaN draws are ignored."""
    s = np.asarray(samples, dtype=float)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    tail = 50.0 * (1.0 - float(level))
    lo, hi = np.percentile(s, [tail, 100.0 - tail])
    return float(lo), float(hi)
