"""The labelling engine: boxes on images -> pseudo-masks. Every front end drives it.

    session = LabelSession(coco, where, predictor, options)     # options: threshold resolved
    jobs = session.select()                                     # per image: its boxes' plans (skips recorded)
    session.label(image_item(job, pixels, ...) for job in jobs)  # or load_item(job, path, ...) from files
    result = session.result()                                   # LabelResult: masks, skips, counts

Front ends: :func:`mal.pseudo.label.label_images` (files; stage and ``mal label`` through
:func:`mal.pseudo.shards.label_coco`), :class:`mal.Labeler` (in-memory images) and the labeler's validation
(:func:`mal.labeler.evaluate.evaluate_labeler`), so a box gets the same mask on every path.

Per box (paper, "Pseudo-labels"): the clipped box's fixed ``expand`` window -> crop + warp to ``S x S``
(wrap-around outside the image) -> labeler (batched, conditioned on the clipped box area) -> probabilities
``M x M`` x the box mask in the crop -> pasted onto the window's image pixels (clipped at the borders)
-> kept to the pixels the box touches -> ``> threshold`` -> COCO RLE; an empty result falls back to the box
mask. Each output annotation carries ``"mal": {"source": "labeler" | "box_fallback", "reason", "score"}``.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from mal.common.images import image_size, read_image
from mal.common.masks import box_rle, empty_rle, paste_in_box, rle_area, rle_from_region
from mal.config.pseudo import LabelOptions
from mal.labeler.crops import box_mask_in_crop, crop_and_resize, expand_box_fixed
from mal.pseudo.boxes import BoxPlan, plan_annotations
from mal.pseudo.confidence import mask_confidence

Window = tuple[float, float, float, float]


class SkipError(ValueError):
    """Raised instead of skipping when ``allow_skips`` is False."""


class BoxPredictor(Protocol):
    """What the engine needs of a labeler (:class:`mal.pseudo.predictor.Predictor`, or a test double)."""

    crop_size: int

    def __call__(self, crops: np.ndarray, box_areas: np.ndarray) -> np.ndarray:
        """``crops`` ``B x S x S x 3`` uint8, ``box_areas`` ``B`` -> probabilities ``B x M x M``."""


@dataclass(frozen=True)
class ImageJob:
    """One image to label: its COCO record and the plans of its boxes that get a mask (input order)."""

    image: dict[str, Any]
    plans: list[BoxPlan]

    @property
    def model_plans(self) -> list[BoxPlan]:
        """The plans the labeler predicts (the others are box / empty fallbacks)."""
        return [p for p in self.plans if p.action == "model"]


@dataclass(frozen=True)
class ImageItem:
    """A loaded :class:`ImageJob`: ``crops`` ``N x S x S x 3`` uint8 and ``windows`` (N crop windows
    ``(x0, y0, x1, y1)``) of its N model plans, in order; or ``error`` ``(reason, detail)`` when the image
    cannot be used (every box is then skipped with that reason)."""

    job: ImageJob
    crops: np.ndarray | None = None
    windows: list[Window] = field(default_factory=list)
    error: tuple[str, str] | None = None


@dataclass
class LabelResult:
    """``annotations``: annotation id -> labelled annotation; ``skipped``: ``[{annotation_id, image_id, reason,
    detail}]``; ``skipped_images``: ``[{image_id, file_name, reason, detail}]``; ``stats``: counts + seconds."""

    annotations: dict[int, dict[str, Any]]
    skipped: list[dict[str, Any]]
    skipped_images: list[dict[str, Any]]
    stats: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """The JSON form a shard file holds (annotations as a list)."""
        return {"annotations": list(self.annotations.values()), "skipped": self.skipped,
                "skipped_images": self.skipped_images, "stats": self.stats}


def resolve_options(options: LabelOptions, checkpoint: str | Path) -> LabelOptions:
    """``options`` for labelling with ``checkpoint``: a None ``threshold`` becomes the one the checkpoint
    records (0.5 if none). The one place a front end's threshold is decided; raises ``ValueError`` naming
    a missing or unreadable checkpoint."""
    if not Path(checkpoint).is_file():
        raise ValueError(f"{checkpoint}: labeler checkpoint not found")
    if options.threshold is not None:
        return options
    from mal.labeler.model import checkpoint_mask_threshold

    return options.model_copy(update={"threshold": checkpoint_mask_threshold(checkpoint)})


# ----------------------------------------------------------------------------------------------- items


def crop_boxes(image: np.ndarray, plans: Sequence[BoxPlan], expand: float, crop_size: int) -> tuple[np.ndarray, list]:
    """The labeler's inputs for ``plans`` on ``image`` (``H x W x 3`` uint8): ``(crops N x S x S x 3 uint8,
    windows [(x0, y0, x1, y1)] of the fixed ``expand`` context around each clipped box)``."""
    windows = [expand_box_fixed(p.box, expand) for p in plans]
    return np.stack([crop_and_resize(image, win, crop_size) for win in windows]), windows


def image_item(job: ImageJob, pixels: np.ndarray, expand: float, crop_size: int) -> ImageItem:
    """The item of ``job`` from its decoded ``pixels`` (``H x W x 3`` uint8 RGB, sized as the record says)."""
    model = job.model_plans
    if not model:
        return ImageItem(job)
    crops, windows = crop_boxes(pixels, model, expand, crop_size)
    return ImageItem(job, crops, windows)


def load_item(job: ImageJob, path: Path, expand: float, crop_size: int) -> ImageItem:
    """The item of ``job`` from the image file ``path``; a missing, unreadable or wrongly sized file is an
    item with ``error`` (a file with only fallback boxes is checked, not decoded)."""
    im = job.image
    want = (int(im["height"]), int(im["width"]))
    try:
        if job.model_plans:
            pixels = read_image(path)
            size = pixels.shape[:2]
        else:
            if not path.is_file():
                raise ValueError(f"{path}: image file not found")
            size = image_size(path)  # as displayed, like read_image
    except (ValueError, OSError) as e:
        return ImageItem(job, error=("missing_image" if not path.is_file() else "unreadable_image", str(e)))
    if tuple(size) != want:
        detail = f"{path}: image is {size[1]}x{size[0]}, JSON says {want[1]}x{want[0]} (image id={im['id']})"
        return ImageItem(job, error=("image_size_mismatch", detail))
    return image_item(job, pixels, expand, crop_size) if job.model_plans else ImageItem(job)


# ----------------------------------------------------------------------------------------------- masks


def _with_mask(ann: dict, plan: BoxPlan, rle: dict, source: str, reason: str | None, area: int | None = None,
               score: float = 0.0) -> dict[str, Any]:
    out = dict(ann)
    out["segmentation"] = rle
    out["area"] = float(rle_area(rle) if area is None else area)
    out["score"] = score
    if plan.clipped:
        out["bbox"] = [float(v) for v in plan.box]
    info: dict[str, Any] = {"source": source}
    if reason:
        info["reason"] = reason
    if plan.clipped:
        info["clipped_from"] = [float(v) for v in ann["bbox"]]
    info["score"] = score
    out["mal"] = info
    return out


def fallback_annotation(ann: dict, plan: BoxPlan, h: int, w: int, reason: str) -> dict[str, Any]:
    """``ann`` with the fallback mask for ``reason``: empty for zero-size / outside boxes, else the box."""
    rle = empty_rle(h, w) if reason in ("zero_size", "outside_image") else box_rle(plan.box, h, w)
    return _with_mask(ann, plan, rle, "box_fallback", reason, score=0.0)  # no prediction to trust


def paste_annotation(ann: dict, plan: BoxPlan, prob: np.ndarray, window: Window, im: dict,
                     threshold: float) -> dict[str, Any]:
    """Crop-level probability ``M x M`` -> ``ann`` with its thresholded full-image RLE (box fallback when
    empty) and its confidence from the same in-box probabilities (``M^2`` floats: negligible)."""
    h, w = int(im["height"]), int(im["width"])
    inbox = box_mask_in_crop(plan.box, window, prob.shape[-1])
    prob = prob * inbox
    mask, region = paste_in_box(prob, window, plan.box, w, h, threshold)
    area = int(mask.sum())
    if area == 0:
        return fallback_annotation(ann, plan, h, w, "empty_prediction")
    rle = rle_from_region(mask, region, h, w)
    return _with_mask(ann, plan, rle, "labeler", None, area, mask_confidence(prob, inbox, threshold))


# ----------------------------------------------------------------------------------------------- session


class LabelSession:
    """One labelling run over a COCO dict (see the module docstring for the protocol).

    ``where`` names the input in errors; ``predictor`` may be None when no box needs the labeler;
    ``options.threshold`` must be resolved (:func:`resolve_options`). ``paste_threads``: threads pasting and
    RLE-encoding batches beside the next forward (results land by annotation id: the count cannot change
    the output). Raises :class:`SkipError` on the first skip when ``options.allow_skips`` is False.
    """

    def __init__(self, coco: dict[str, Any], where: str | Path, predictor: BoxPredictor | None,
                 options: LabelOptions, paste_threads: int = 1, show_progress: bool = False) -> None:
        if options.threshold is None:
            raise ValueError("LabelSession: options.threshold is None; resolve it with resolve_options()")
        self.coco, self.where, self.predictor, self.options = coco, str(where), predictor, options
        self.anns = coco["annotations"]
        self.images = {im["id"]: im for im in coco["images"]}
        self.paste_threads, self.show_progress = int(paste_threads), show_progress
        self.done: dict[int, dict] = {}
        self.skipped: list[dict[str, Any]] = []
        self.skipped_images: list[dict[str, Any]] = []
        self.stats: Counter = Counter()
        self.jobs: list[ImageJob] = []
        self._pending: list[tuple[ImageJob, BoxPlan, np.ndarray, Window]] = []
        self._pasting: deque[Future] = deque()  # batches being pasted beside the next forward
        self._model_seconds = 0.0
        self._t0 = time.perf_counter()

    @property
    def crop_size(self) -> int:
        """The labeler's crop side (0 without a predictor: only fallbacks)."""
        return int(self.predictor.crop_size) if self.predictor is not None else 0

    def skip(self, plan: BoxPlan, reason: str, detail: str) -> None:
        """Account for a box that gets no mask (an error unless ``allow_skips``)."""
        a = self.anns[plan.ann_index]
        if not self.options.allow_skips:
            raise SkipError(f"{self.where}: annotation id={a['id']} (image_id={a['image_id']}): {reason}: {detail}")
        self.skipped.append({"annotation_id": a["id"], "image_id": a["image_id"], "reason": reason, "detail": detail})
        self.stats[f"skipped_{reason}"] += 1

    def select(self, image_ids: Iterable[int] | None = None,
               plans: dict[int, list[BoxPlan]] | None = None) -> list[ImageJob]:
        """The jobs of ``image_ids`` (default: every image id the annotations name, unknown ones included):
        boxes of unknown images and invalid boxes are skipped here. ``plans``: precomputed
        :func:`~mal.pseudo.boxes.plan_annotations` of this COCO dict."""
        plans = plan_annotations(self.coco, self.options.min_box_side) if plans is None else plans
        ids = list(plans) if image_ids is None else [i for i in image_ids if i in plans]
        self.stats["boxes_in"] += sum(len(plans[i]) for i in ids)
        for iid in ids:
            if iid not in self.images:
                for p in plans[iid]:
                    self.skip(p, p.reason or "unknown_image_id", f"image_id {iid} is not in 'images'")
                continue
            ok = []
            for p in plans[iid]:
                if p.action == "skip":
                    self.skip(p, p.reason or "invalid", f"bbox={self.anns[p.ann_index].get('bbox')!r}")
                else:
                    ok.append(p)
            if ok:
                self.jobs.append(ImageJob(self.images[iid], ok))
        n_model = sum(len(j.model_plans) for j in self.jobs)
        if n_model and self.predictor is None:
            raise ValueError(f"{self.where}: {n_model} boxes need the labeler but no predictor was given")
        self.stats["model_boxes"] = n_model
        return self.jobs

    def label(self, items: Iterable[ImageItem]) -> None:
        """Label the loaded ``items`` (one per selected job, any order); results accumulate."""
        bar = tqdm(total=sum(len(j.plans) for j in self.jobs), desc="pseudo-labels", unit="box",
                   disable=not self.show_progress)
        with ThreadPoolExecutor(max_workers=self.paste_threads, thread_name_prefix="mal-paste") as paster:
            for item in items:
                bar.update(self._add(item, paster))
            self._flush(paster)
            self._collect(keep=0)
        bar.close()

    def result(self) -> LabelResult:
        """The masks so far, the skips, and the counts (per source / reason, clipped, crowd, seconds)."""
        stats = Counter(self.stats)
        for a in self.done.values():
            stats[f"source_{a['mal']['source']}"] += 1
            if "reason" in a["mal"]:
                stats[f"fallback_{a['mal']['reason']}"] += 1
            stats["clipped"] += int("clipped_from" in a["mal"])
            stats["crowd"] += int(bool(a.get("iscrowd", 0)))
        stats["masks_out"] = len(self.done)
        stats["model_seconds"] = self._model_seconds
        stats["seconds"] = time.perf_counter() - self._t0
        return LabelResult(self.done, self.skipped, self.skipped_images, dict(stats))

    def _add(self, item: ImageItem, paster: ThreadPoolExecutor) -> int:
        """One loaded image: skip its boxes if it failed to load, else box fallbacks now and model crops
        queued; returns the number of boxes handled."""
        job, im = item.job, item.job.image
        if item.error is not None:
            reason, detail = item.error
            self.skipped_images.append(
                {"image_id": im["id"], "file_name": im["file_name"], "reason": reason, "detail": detail})
            for p in job.plans:
                self.skip(p, reason, detail)
            return len(job.plans)
        h, w = int(im["height"]), int(im["width"])
        for p in job.plans:
            if p.action == "fallback":
                self.done[self.anns[p.ann_index]["id"]] = fallback_annotation(self.anns[p.ann_index], p, h, w, p.reason)
        model = job.model_plans
        for p, crop, win in zip(model, item.crops if model else [], item.windows, strict=True):
            self._pending.append((job, p, crop, win))
            if len(self._pending) >= self.options.batch_size:
                self._flush(paster)
        return len(job.plans)

    def _flush(self, paster: ThreadPoolExecutor) -> None:
        """Run the labeler on the pending crops; paste them in the background."""
        if not self._pending:
            return
        crops = np.stack([c for _, _, c, _ in self._pending])
        areas = np.array([p.box[2] * p.box[3] for _, p, _, _ in self._pending], dtype=np.float32)
        t = time.perf_counter()
        probs = self.predictor(crops, areas)
        self._model_seconds += time.perf_counter() - t
        # cv2/numpy/pycocotools work of this batch overlaps the next forward (which leaves gaps on the cores);
        # at most paste_threads + 1 batches wait, bounding memory
        self._collect(keep=self.paste_threads)
        self._pasting.append(paster.submit(self._paste_batch, list(self._pending), probs))
        self._pending.clear()

    def _paste_batch(self, batch: list[tuple[ImageJob, BoxPlan, np.ndarray, Window]], probs: np.ndarray) -> list[dict]:
        return [paste_annotation(self.anns[plan.ann_index], plan, prob, win, job.image, self.options.threshold)
                for (job, plan, _, win), prob in zip(batch, probs, strict=True)]

    def _collect(self, keep: int) -> None:
        """Wait for pasted batches until at most ``keep`` are in flight."""
        while len(self._pasting) > keep:
            for a in self._pasting.popleft().result():
                self.done[a["id"]] = a
