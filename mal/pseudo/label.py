"""Pseudo-masks for COCO boxes with a trained Mask Auto-Labeler.

Per box (paper, "Pseudo-labels"): fixed symmetric 1.3x expansion -> crop + warp to ``S x S`` (wrap-around
outside the image) -> ImageNet normalisation -> labeler forward (batched) -> sigmoid -> x box mask in the
crop -> resample onto the expanded-box region of the image (clipped at the borders; never a full-image
float map) -> restricted to the pixels the box touches -> threshold -> COCO RLE with string counts.

Guarantees (see docs/pseudo_labels.md): every input annotation comes out, either with a mask or in the
``skipped`` list with a reason. Each output annotation carries ``"mal": {"source": "labeler" |
"box_fallback", "reason": ..., "score": ...}``; ``area`` is the mask area; crowd boxes keep ``iscrowd``.
``score`` (also top-level, where COCO results and Label Studio read it) is the mask's confidence in [0, 1]
(:mod:`mal.pseudo.confidence`); box fallbacks score 0.0, the least trustworthy masks.

Sharding and merging live in :mod:`mal.pseudo.shards`.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mal.common.images import image_path, image_size, read_image
from mal.common.masks import box_rle, empty_rle, paste_in_box, rle_area, rle_from_region
from mal.labeler.crops import box_mask_in_crop, crop_and_resize, expand_box_fixed
from mal.pseudo.boxes import BoxPlan, load_boxes, plan_annotations
from mal.pseudo.confidence import mask_confidence

__all__ = [
    "BoxPlan",
    "LabelOptions",
    "Predictor",
    "SkipError",
    "label_images",
    "load_boxes",
    "plan_annotations",
]

WHICH = ("student", "teacher", "average")


@dataclass
class LabelOptions:
    """Labelling options (``params.yaml`` section ``pseudo_label``)."""

    threshold: float = (
        0.5  # on the pasted probability (paper: 0.1; demo value measured, docs/pseudo_labels.md)
    )
    expand: float = 1.3  # fixed context expansion (paper)
    which: str = "student"  # student | teacher | average (of the two probability maps)
    flip_tta: bool = False  # average with the horizontally flipped crop's prediction
    batch_size: int = 32
    num_workers: int = 0  # DataLoader workers reading + cropping images
    paste_threads: int = 1  # threads pasting + RLE-encoding batches beside the forward (cv2 releases the GIL)
    min_box_side: float = 2.0  # boxes with w or h (after clipping) below this get the box mask
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    allow_skips: bool = True  # False: a missing image / unknown image id / invalid bbox is an error
    show_progress: bool = True

    def __post_init__(self) -> None:
        if self.which not in WHICH:
            raise ValueError(f"which must be one of {WHICH}, got {self.which!r}")
        if not 0.0 <= float(self.threshold) < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {self.threshold}")
        if int(self.batch_size) < 1 or int(self.num_workers) < 0 or int(self.paste_threads) < 1:
            raise ValueError(
                f"batch_size must be >= 1, num_workers >= 0 and paste_threads >= 1, got {self.batch_size}, "
                f"{self.num_workers}, {self.paste_threads}"
            )
        if float(self.expand) < 1.0:
            raise ValueError(f"expand must be >= 1, got {self.expand}")

    def identity(self) -> dict[str, Any]:
        """The options that change the output (for the shard input hash)."""
        d = asdict(self)
        for k in ("batch_size", "num_workers", "paste_threads", "device", "show_progress"):
            d.pop(k)
        return d


class SkipError(ValueError):
    """Raised instead of skipping when ``allow_skips`` is False."""


# ----------------------------------------------------------------------------------------------- data


class _ImageCrops(torch.utils.data.Dataset):
    """One item per image: the crops of its "model" boxes, or the reason the image cannot be used."""

    def __init__(
        self,
        items: list[tuple[dict, list[BoxPlan]]],
        json_path: Path,
        image_root: Path | None,
        crop_size: int,
        expand: float,
    ):
        self.items, self.json_path, self.image_root = items, json_path, image_root
        self.crop_size, self.expand = crop_size, expand

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        im, plans = self.items[idx]
        path = image_path(self.json_path, im, self.image_root)
        want = (int(im["height"]), int(im["width"]))
        model = [p for p in plans if p.action == "model"]
        out: dict[str, Any] = {"idx": idx, "error": None, "crops": None, "windows": []}
        try:
            if model:
                image = read_image(path)
                size = image.shape[:2]
            else:  # only fallbacks: check the file without decoding the pixels
                if not path.is_file():
                    raise ValueError(f"{path}: image file not found")
                size = image_size(path)  # as displayed, like read_image
        except (ValueError, OSError) as e:
            out["error"] = ("missing_image" if not path.is_file() else "unreadable_image", str(e))
            return out
        if tuple(size) != want:
            out["error"] = (
                "image_size_mismatch",
                f"{path}: image is {size[1]}x{size[0]}, JSON says {want[1]}x{want[0]} (image id={im['id']})",
            )
            return out
        if model:
            out["crops"], out["windows"] = crop_boxes(image, model, self.expand, self.crop_size)
        return out


def crop_boxes(image: np.ndarray, plans: list[BoxPlan], expand: float, crop_size: int) -> tuple[np.ndarray, list]:
    """The labeler's inputs for ``plans`` on ``image`` (``H x W x 3`` uint8): ``(crops N x S x S x 3 uint8,
    windows [(x0, y0, x1, y1)] of the fixed ``expand`` context)``."""
    windows = [expand_box_fixed(p.box, expand) for p in plans]
    return np.stack([crop_and_resize(image, win, crop_size) for win in windows]), windows


def _first(batch: Any) -> Any:
    return batch


# ----------------------------------------------------------------------------------------------- model


class Predictor:
    """Labeler(s) on a device: ``__call__(crops uint8 B x S x S x 3, box_areas B) -> probs B x M x M``."""

    def __init__(
        self, checkpoint: str | Path, which: str = "student", flip_tta: bool = False, device: str = "auto"
    ):
        from mal.common.devices import resolve_device
        from mal.labeler.model import load_labeler

        self.device = resolve_device(device, "pseudo_label.device")  # a CUDA request without CUDA raises
        names = ["student", "teacher"] if which == "average" else [which]
        self.models = [load_labeler(checkpoint, n, map_location=self.device)[0] for n in names]
        self.cfg = self.models[0].cfg
        self.crop_size, self.mask_size = int(self.cfg["crop_size"]), int(self.cfg["mask_size"])
        self.flip_tta = flip_tta

    @torch.inference_mode()
    def __call__(self, crops: np.ndarray, box_areas: np.ndarray) -> np.ndarray:
        from mal.labeler.model import input_norm, normalize

        x = torch.from_numpy(crops).to(self.device, non_blocking=True)  # uint8 over the bus
        x = normalize(x, *input_norm(self.cfg))
        areas = torch.as_tensor(box_areas, dtype=torch.float32, device=self.device)
        inputs = [(x, False)] + ([(x.flip(-1), True)] if self.flip_tta else [])
        total = None
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.device.type == "cuda"):
            for model in self.models:
                for inp, flipped in inputs:
                    p = torch.sigmoid(model(inp, areas).float())
                    p = p.flip(-1) if flipped else p
                    total = p if total is None else total + p
        probs = total / (len(self.models) * len(inputs))
        return probs[:, 0].cpu().numpy()


# ----------------------------------------------------------------------------------------------- label


def _fallback_ann(ann: dict, plan: BoxPlan, h: int, w: int, reason: str) -> dict[str, Any]:
    rle = empty_rle(h, w) if reason in ("zero_size", "outside_image") else box_rle(plan.box, h, w)
    return _with_mask(ann, plan, rle, "box_fallback", reason, score=0.0)  # no prediction to trust


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


class _Labelling:
    """The state of one :func:`label_images` call: what is done, skipped and counted so far, and the model
    batches waiting for a forward or being pasted."""

    def __init__(self, coco: dict[str, Any], json_path: str | Path, predictor: Predictor | None,
                 options: LabelOptions) -> None:
        self.anns, self.json_path, self.predictor, self.options = coco["annotations"], json_path, predictor, options
        self.images = {im["id"]: im for im in coco["images"]}
        self.done: dict[int, dict] = {}
        self.skipped: list[dict[str, Any]] = []
        self.skipped_images: list[dict[str, Any]] = []
        self.stats: Counter = Counter()
        self.pending: list[tuple[int, BoxPlan, np.ndarray, tuple]] = []  # (item idx, plan, crop, window)
        self.pasting: deque[Future] = deque()  # batches being pasted + RLE-encoded beside the next forward
        self.model_seconds = 0.0
        self.items: list[tuple[dict, list[BoxPlan]]] = []

    def skip(self, plan: BoxPlan, reason: str, detail: str) -> None:
        """Account for a box that gets no mask (an error unless ``allow_skips``)."""
        a = self.anns[plan.ann_index]
        if not self.options.allow_skips:
            raise SkipError(f"{self.json_path}: annotation id={a['id']} (image_id={a['image_id']}): {reason}: {detail}")
        self.skipped.append({"annotation_id": a["id"], "image_id": a["image_id"], "reason": reason, "detail": detail})
        self.stats[f"skipped_{reason}"] += 1

    def select(self, plans: dict[int, list[BoxPlan]], ids: list[int]) -> None:
        """Skip boxes of unknown images and invalid boxes; keep ``(image, plans)`` items for the rest."""
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
                self.items.append((self.images[iid], ok))

    def _paste_batch(self, batch: list[tuple[int, BoxPlan, np.ndarray, tuple]], probs: np.ndarray) -> list[dict]:
        return [_paste_one(self.anns[plan.ann_index], plan, prob, win, self.items[idx][0], self.options)
                for (idx, plan, _, win), prob in zip(batch, probs, strict=True)]

    def collect(self, keep: int) -> None:
        """Wait for pasted batches until at most ``keep`` are in flight."""
        while len(self.pasting) > keep:
            for a in self.pasting.popleft().result():
                self.done[a["id"]] = a

    def flush(self, paster: ThreadPoolExecutor) -> None:
        """Run the labeler on the pending crops; paste them in the background."""
        if not self.pending:
            return
        crops = np.stack([c for _, _, c, _ in self.pending])
        areas = np.array([p.box[2] * p.box[3] for _, p, _, _ in self.pending], dtype=np.float32)
        t = time.perf_counter()
        probs = self.predictor(crops, areas)
        self.model_seconds += time.perf_counter() - t
        # cv2/numpy/pycocotools work of this batch overlaps the labeler's forward on the next one (the
        # forward leaves gaps on the cores between small ops); at most paste_threads + 1 batches wait, bounding
        # memory. Results land in a dict by annotation id, so the thread count cannot change the output.
        self.collect(keep=int(self.options.paste_threads))
        self.pasting.append(paster.submit(self._paste_batch, list(self.pending), probs))
        self.pending.clear()

    def add_image(self, item: dict[str, Any], paster: ThreadPoolExecutor) -> int:
        """One loaded image: skip its boxes if it failed to load, else box fallbacks now and model crops
        queued; returns the number of boxes handled."""
        im, ps = self.items[item["idx"]]
        h, w = int(im["height"]), int(im["width"])
        if item["error"] is not None:
            reason, detail = item["error"]
            self.skipped_images.append(
                {"image_id": im["id"], "file_name": im["file_name"], "reason": reason, "detail": detail})
            for p in ps:
                self.skip(p, reason, detail)
            return len(ps)
        model_plans = [p for p in ps if p.action == "model"]
        for p in ps:
            if p.action == "fallback":
                self.done[self.anns[p.ann_index]["id"]] = _fallback_ann(self.anns[p.ann_index], p, h, w, p.reason)
        for p, crop, win in zip(model_plans, item["crops"] if model_plans else [], item["windows"], strict=True):
            self.pending.append((item["idx"], p, crop, win))
            if len(self.pending) >= self.options.batch_size:
                self.flush(paster)
        return len(ps)

    def label(self, items: Any) -> None:
        """Label the loaded images ``items`` (dicts as :class:`_ImageCrops` yields them); results in
        ``self.done``. Shared by :func:`label_images` and the in-memory :class:`mal.pseudo.api.Labeler`."""
        bar = tqdm(total=sum(len(ps) for _, ps in self.items), desc="pseudo-labels", unit="box",
                   disable=not self.options.show_progress)
        with ThreadPoolExecutor(max_workers=int(self.options.paste_threads), thread_name_prefix="mal-paste") as paster:
            for item in items:
                bar.update(self.add_image(item, paster))
            self.flush(paster)
            self.collect(keep=0)
        bar.close()

    def count(self) -> None:
        """Per-source / per-reason counts of the masks written."""
        for a in self.done.values():
            self.stats[f"source_{a['mal']['source']}"] += 1
            if "reason" in a["mal"]:
                self.stats[f"fallback_{a['mal']['reason']}"] += 1
            self.stats["clipped"] += int("clipped_from" in a["mal"])
            self.stats["crowd"] += int(bool(a.get("iscrowd", 0)))


def label_images(
    coco: dict[str, Any],
    json_path: str | Path,
    predictor: Predictor | None,
    options: LabelOptions,
    image_ids: list[int] | None = None,
    image_root: str | Path | None = None,
    plans: dict[int, list[BoxPlan]] | None = None,
) -> dict[str, Any]:
    """Label the annotations of ``image_ids`` (default: all, incl. unknown image ids).

    Returns ``{"annotations": {ann_id: labelled ann}, "skipped": [{annotation_id, image_id, reason,
    detail}], "skipped_images": [{image_id, file_name, reason, detail}], "stats": {...}}``.
    ``predictor`` may be None when no box needs the model. Raises :class:`SkipError` on the first skip
    when ``options.allow_skips`` is False.
    """
    t0 = time.perf_counter()
    plans = plan_annotations(coco, options.min_box_side) if plans is None else plans
    ids = list(plans) if image_ids is None else [i for i in image_ids if i in plans]
    run = _Labelling(coco, json_path, predictor, options)
    run.select(plans, ids)
    n_model = sum(p.action == "model" for _, ps in run.items for p in ps)
    if n_model and predictor is None:
        raise ValueError("label_images: boxes need the labeler but no predictor was given")
    crop_size = predictor.crop_size if predictor is not None else 0
    ds = _ImageCrops(run.items, Path(json_path), Path(image_root) if image_root else None, crop_size, options.expand)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=None, shuffle=False, num_workers=options.num_workers, collate_fn=_first
    )
    run.label(loader)
    run.count()
    stats = run.stats
    stats["boxes_in"] = sum(len(plans[i]) for i in ids)
    stats["masks_out"] = len(run.done)
    stats["model_boxes"] = n_model
    stats["model_seconds"] = run.model_seconds
    stats["seconds"] = time.perf_counter() - t0
    return {"annotations": run.done, "skipped": run.skipped, "skipped_images": run.skipped_images,
            "stats": dict(stats)}


def _paste_one(ann: dict, plan: BoxPlan, prob: np.ndarray, window: tuple, im: dict, options: LabelOptions):
    """Crop-level probability ``M x M`` -> thresholded full-image RLE (box fallback when empty) + its
    confidence from the same in-box probabilities (``M^2`` floats: negligible next to the paste)."""
    h, w = int(im["height"]), int(im["width"])
    m = prob.shape[-1]
    inbox = box_mask_in_crop(plan.box, window, m)
    prob = prob * inbox
    mask, region = paste_in_box(prob, window, plan.box, w, h, options.threshold)
    area = int(mask.sum())
    if area == 0:
        return _fallback_ann(ann, plan, h, w, "empty_prediction")
    rle = rle_from_region(mask, region, h, w)
    return _with_mask(ann, plan, rle, "labeler", None, area, mask_confidence(prob, inbox, options.threshold))
