"""One labeler training job from files: read the prepared boxes, train, return (metrics, timings).

What the train_labeler stage runs in each of its processes (:func:`mal.common.launch.launch`), and what a
hand-typed ``torchrun`` runs through the same stage script.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mal.common.boxes import is_trainable
from mal.common.coco_io import load_coco
from mal.labeler.data import box_records
from mal.labeler.distributed import dist_cleanup
from mal.labeler.train import train_labeler

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainJob:
    """Everything one run needs: resolved cfgs (plain dicts: :func:`mal.labeler.train.labeler_cfgs`) and paths."""

    name: str
    model_cfg: dict[str, Any]
    train_cfg: dict[str, Any]
    train_json: Path          # prepared boxes (the labeler never sees train masks)
    val_json: Path | None     # val GT masks (per-epoch val mIoU); None or missing: no validation
    train_root: Path          # folder the train file_names are relative to
    val_root: Path
    min_area: float           # data.min_train_box_area / min_train_box_side: boxes the labeler trains on
    min_side: float
    checkpoint: Path
    state: Path               # resumable run state (not a DVC out)
    plots_dir: Path | None    # dvclive curves
    seed: int = 0
    resume: bool = True


def _records(job: TrainJob) -> tuple[list[dict], list[dict] | None, int]:
    train_coco, _ = load_coco(job.train_json, image_root=job.train_root)
    train = box_records(train_coco, job.train_json, lambda a: is_trainable(a, job.min_area, job.min_side),
                        image_root=job.train_root)
    val = None
    if job.val_json is not None and job.val_json.is_file():
        val_coco, _ = load_coco(job.val_json, image_root=job.val_root)
        val = box_records(val_coco, job.val_json, lambda a: not a.get("iscrowd", 0) and "segmentation" in a,
                          image_root=job.val_root) or None
    return train, val, len(train_coco["annotations"])


def run_job(job: TrainJob) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """Train ``job`` in this process (one of a group, or alone); rank 0 returns ``(metrics, timings)``, the
    other ranks None."""
    t0 = time.time()
    train, val, total = _records(job)
    log.info("labeler %s: %d training boxes (of %d), %d val boxes with masks", job.name, len(train), total,
             len(val or []))
    metrics = train_labeler(job.model_cfg, job.train_cfg, train, val, out_checkpoint=job.checkpoint,
                            state_path=job.state, live_dir=job.plots_dir, seed=job.seed, resume=job.resume)
    dist_cleanup()  # on success only: a barrier after a failed rank would wait for ever
    if not metrics:  # not rank 0
        return None
    timings = {**metrics.pop("timings"), "stage_seconds": round(time.time() - t0, 1)}
    return {**metrics, "labeler": job.name, "train_boxes": len(train)}, timings
