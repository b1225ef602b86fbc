"""Box-crop datasets: one sample per box.

Training samples use a random asymmetric context expansion, a shared horizontal flip, student-only
photometric augmentations and an un-jittered teacher view. Evaluation/labelling samples use the fixed 1.3x
expansion. All randomness comes from ``numpy.random.default_rng([seed, epoch, index])``, so a sample is a
pure function of (seed, epoch, index): identical across worker counts, processes and resumed runs.
Crops leave the loader as uint8 (a quarter of float32's bytes through worker queues and host-to-device
copies) and are normalised on the device (:func:`mal.labeler.model.normalize`).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from mal.common.images import image_path, read_image
from mal.config.labeler import AugParams
from mal.config.load import validate
from mal.labeler.crops import box_mask_in_crop, crop_and_resize, expand_box_fixed, expand_box_random
from mal.labeler.model import IMAGENET_MEAN, IMAGENET_STD


def box_records(
    coco: dict[str, Any], json_path: str | Path, keep: Any = None, image_root: str | Path | None = None
) -> list[dict[str, Any]]:
    """``[{"ann": ann, "image": image_dict, "path": image_path}]`` for annotations passing ``keep(ann)``.

    Image paths are ``image_root / file_name`` (default root: the JSON's folder).

    Raises ``ValueError`` naming the file and annotation id when an annotation's image id is unknown.
    """
    images = {im["id"]: im for im in coco["images"]}
    out = []
    for ann in coco["annotations"]:
        if keep is not None and not keep(ann):
            continue
        im = images.get(ann["image_id"])
        if im is None:
            raise ValueError(
                f"{json_path}: annotation id={ann['id']}: field 'image_id' {ann['image_id']} names no image"
            )
        out.append({"ann": ann, "image": im, "path": str(image_path(json_path, im, image_root))})
    return out


def color_jitter(img: np.ndarray, rng: np.random.Generator, aug: dict[str, Any]) -> np.ndarray:
    """Brightness, contrast, saturation, hue jitter (torchvision ColorJitter factors), ``S x S x 3`` uint8."""
    x = img.astype(np.float32)
    b = rng.uniform(1 - aug["brightness"], 1 + aug["brightness"])
    c = rng.uniform(1 - aug["contrast"], 1 + aug["contrast"])
    s = rng.uniform(1 - aug["saturation"], 1 + aug["saturation"])
    h = rng.uniform(-aug["hue"], aug["hue"])
    x = x * b
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - gray.mean()) * c + gray.mean()
    gray = (x @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]
    x = (x - gray) * s + gray
    out = np.clip(x, 0, 255).astype(np.uint8)
    if abs(h) > 1e-6:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = ((hsv[..., 0].astype(np.int32) + int(round(h * 180))) % 180).astype(np.uint8)
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return out


def photometric(img: np.ndarray, rng: np.random.Generator, aug: dict[str, Any]) -> np.ndarray:
    """Student-only augmentations: colour jitter (p), grayscale (p), gaussian blur (p)."""
    draws = rng.uniform(size=3)
    if draws[0] < aug["jitter_p"]:
        img = color_jitter(img, rng, aug)
    if draws[1] < aug["gray_p"]:
        g = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
        img = np.repeat(g[..., None], 3, axis=2)
    if draws[2] < aug["blur_p"]:
        lo, hi = aug["blur_sigma"]
        img = cv2.GaussianBlur(img, (0, 0), sigmaX=float(rng.uniform(lo, hi)))
    return img


class BoxCropDataset(Dataset):
    """One sample per box.

    ``train=True`` items: ``student`` / ``teacher`` SxSx3 uint8 RGB, ``box_mask`` 1xMxM float,
    ``box_area`` (original pixels), ``index``. ``train=False`` items: ``image`` SxSx3 uint8, ``box_mask``,
    ``box_area``, ``crop`` (x0, y0, x1, y1 of the 1.3x window), ``index``. Normalise the images with
    ``normalize(images, *dataset.norm)`` on the device.
    ``norm``: the labeler's input ``(mean, std)`` (:func:`mal.labeler.model.input_norm` of its cfg).
    An item is ``dataset[index]`` (this epoch's sample, :meth:`set_epoch`) or ``dataset[(epoch, index)]``
    (what :class:`EpochSampler` yields: worker processes that outlive an epoch need no ``set_epoch``).
    """

    def __init__(
        self,
        records: list[dict[str, Any]],
        crop_size: int,
        mask_size: int,
        train: bool,
        seed: int = 0,
        aug: dict[str, Any] | None = None,
        expand: float = 1.3,
        image_cache: int = 256,
        norm: tuple[list[float] | tuple[float, ...], list[float] | tuple[float, ...]] = (IMAGENET_MEAN, IMAGENET_STD),
    ):
        self.records = records
        self.crop_size, self.mask_size = int(crop_size), int(mask_size)
        self.train, self.seed, self.expand = bool(train), int(seed), float(expand)
        self.aug = validate(AugParams, aug or {}, "labeler.train.aug").model_dump()
        self.epoch = 0
        self.image_cache = max(0, int(image_cache))
        self.norm = norm  # (mean, std): the labeler cfg's, mal.labeler.model.input_norm
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()

    def _read(self, path: str) -> np.ndarray:
        """``read_image`` with a small per-process LRU cache (``image_cache`` images)."""
        if path in self._cache:
            self._cache.move_to_end(path)
            return self._cache[path]
        img = read_image(path)
        if self.image_cache:
            self._cache[path] = img
            while len(self._cache) > self.image_cache:
                self._cache.popitem(last=False)
        return img

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, Any]:
        epoch, index = key if isinstance(key, tuple) else (self.epoch, key)
        rec = self.records[index]
        box = rec["ann"]["bbox"]
        image = self._read(rec["path"])
        area = float(box[2]) * float(box[3])
        if not self.train:
            crop = expand_box_fixed(box, self.expand)
            pix = crop_and_resize(image, crop, self.crop_size)
            return {
                "image": torch.from_numpy(np.ascontiguousarray(pix)),
                "box_mask": torch.from_numpy(box_mask_in_crop(box, crop, self.mask_size))[None],
                "box_area": torch.tensor(area),
                "crop": torch.tensor(crop),
                "index": index,
            }
        rng = np.random.default_rng([self.seed, epoch, index])
        crop = expand_box_random(box, rng, self.aug["max_margin"])
        teacher = crop_and_resize(image, crop, self.crop_size)
        mask = box_mask_in_crop(box, crop, self.mask_size)
        if rng.uniform() < self.aug["flip_p"]:
            teacher = np.ascontiguousarray(teacher[:, ::-1])
            mask = np.ascontiguousarray(mask[:, ::-1])
        student = photometric(teacher, rng, self.aug)
        return {
            "student": torch.from_numpy(np.ascontiguousarray(student)),
            "teacher": torch.from_numpy(np.ascontiguousarray(teacher)),
            "box_mask": torch.from_numpy(mask)[None],
            "box_area": torch.tensor(area),
            "index": index,
        }


class EpochSampler(DistributedSampler):
    """:class:`DistributedSampler` that yields ``(epoch, index)`` keys and can start mid-epoch.

    :meth:`set_position` ``(epoch, start)``: this process's share of ``epoch`` (the usual seeded shuffle)
    without its first ``start`` samples, so a run resumed after ``k`` steps continues at sample ``k * batch``.
    """

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int = 0):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.start = 0

    def set_position(self, epoch: int, start: int = 0) -> None:
        self.set_epoch(epoch)
        self.start = int(start)

    def __iter__(self):
        epoch = self.epoch
        return iter([(epoch, i) for i in list(super().__iter__())[self.start :]])

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start)


def worker_init(_worker_id: int) -> None:
    """DataLoader workers: OpenCV single-threaded (its pool times the workers oversubscribes the cores)."""
    cv2.setNumThreads(0)
