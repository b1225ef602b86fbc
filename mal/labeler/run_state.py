"""One training process's run: set-up (process group, models, optimiser, data, schedule), its fingerprint,
and the resumable state (rewritten atomically every ``save_state_every_steps`` steps and after every epoch).

A state holds student, teacher, optimiser, AMP scaler, the global step, the epoch and the step inside it,
the epoch's loss sums so far, RNG states and the history; it is resumed only when its fingerprint matches.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mal.common.devices import log_device
from mal.common.files import fingerprint
from mal.labeler.data import BoxCropDataset, EpochSampler
from mal.labeler.distributed import dist_setup, rng_state, seed_everything, set_rng_state
from mal.labeler.model import build_labeler, input_norm, read_checkpoint, save_checkpoint
from mal.labeler.schedule import EMATeacher, build_optimizer

log = logging.getLogger(__name__)

# Train-cfg keys that do not change the weights a run ends with: changing them keeps a run resumable.
# ``amp`` / ``device`` / ``num_gpus`` enter the fingerprint as what they resolve to (use_amp, device type, world).
NOT_FINGERPRINTED = ("mask_threshold", "num_gpus", "device", "amp", "save_state_every_steps", "num_workers",
                     "image_cache")


def run_fingerprint(model_cfg: dict[str, Any], cfg: dict[str, Any], seed: int, world: int,
                    boxes: list[Any], device_type: str, use_amp: bool) -> str:
    """What decides whether a saved state is resumable: cfgs, seed, process count, data, device type, AMP."""
    kept = {k: v for k, v in cfg.items() if k not in NOT_FINGERPRINTED}
    return fingerprint(model_cfg, kept, seed, world, boxes, {"device": device_type, "amp": bool(use_amp)})


def scaler_state_to_load(saved: dict[str, Any] | None, enabled: bool) -> dict[str, Any] | None:
    """The saved GradScaler state to load, or None: a disabled scaler (AMP off, CPU) saves ``{}``, which an
    enabled scaler refuses to load, and an enabled scaler's state means nothing to a disabled one."""
    return dict(saved) if enabled and saved else None


@dataclass
class Run:
    """Everything one training process holds: models, optimiser state, data, schedule, position."""

    model_cfg: dict[str, Any]
    cfg: dict[str, Any]
    rank: int
    world: int
    device: torch.device
    use_amp: bool
    student: torch.nn.Module
    teacher: torch.nn.Module
    ema: EMATeacher
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    train_ds: BoxCropDataset
    val_ds: BoxCropDataset | None
    sampler: EpochSampler
    per_rank: int
    drop_last: bool
    steps_per_epoch: int
    warmup_steps: int
    seed: int
    run_id: str
    step: int = 0
    epoch: int = 0  # completed epochs
    epoch_step: int = 0  # steps done inside the current epoch
    epoch_sums: torch.Tensor | None = None  # float64 [loss, mil, crf] sums of the current epoch (on the device)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def total_steps(self) -> int:
        return self.steps_per_epoch * int(self.cfg["epochs"])


def setup_run(model_cfg: dict[str, Any], cfg: dict[str, Any], train_records: list[dict[str, Any]],
              val_records: list[dict[str, Any]] | None, seed: int) -> Run:
    """Process group, models (seeded), optimiser, datasets and the step schedule of one process."""
    rank, world, device = dist_setup(str(cfg["device"]))
    if cfg["batch_size"] % world:
        raise ValueError(f"labeler.train.batch_size {cfg['batch_size']} is not divisible by {world} processes")
    per_rank = cfg["batch_size"] // world
    if not train_records:
        raise ValueError("labeler training: no training boxes (check data.min_train_box_* params)")
    boxes = [(r["ann"]["id"], r["ann"]["bbox"], r["path"]) for r in train_records]
    use_amp = bool(cfg["amp"]) and device.type == "cuda"
    if rank == 0:
        log_device(f"train_labeler ({world} process(es))", device, amp=use_amp,
                   num_gpus=world if device.type == "cuda" else None)
    run_id = run_fingerprint(model_cfg, cfg, seed, world, boxes, device.type, use_amp)

    seed_everything(seed)
    student = build_labeler(model_cfg).to(device)
    teacher = copy.deepcopy(student)
    crop, mask = model_cfg["crop_size"], model_cfg["mask_size"]
    norm = input_norm(student.cfg)  # resolved from the encoder's pretrained config when params leave it null
    train_ds = BoxCropDataset(train_records, crop, mask, train=True, seed=seed, aug=cfg["aug"],
                              image_cache=cfg["image_cache"], norm=norm)
    if val_records and 0 < int(cfg["val_max_boxes"]) < len(val_records):  # evenly spaced subset (COCO)
        keep = np.linspace(0, len(val_records) - 1, int(cfg["val_max_boxes"])).round().astype(int)
        val_records = [val_records[i] for i in keep]
    val_ds = (BoxCropDataset(val_records, crop, mask, train=False, image_cache=cfg["image_cache"], norm=norm)
              if val_records else None)
    sampler = EpochSampler(train_ds, num_replicas=world, rank=rank, seed=seed)
    drop_last = len(train_ds) // world >= per_rank
    steps_per_epoch = (sampler.num_samples // per_rank) if drop_last else -(-sampler.num_samples // per_rank)
    return Run(
        model_cfg, cfg, rank, world, device, use_amp, student, teacher, EMATeacher(teacher, cfg["ema_momentum"]),
        build_optimizer(student, cfg["weight_decay"], cfg["betas"]),
        torch.amp.GradScaler(device.type, enabled=use_amp), train_ds, val_ds, sampler, per_rank, drop_last,
        steps_per_epoch, warmup_steps=int(round(cfg["warmup_epochs"] * steps_per_epoch)), seed=seed,
        run_id=run_id,
    )


def load_state(run: Run, state_path: Path) -> None:
    """Load a matching run state (same fingerprint) into ``run``: weights, optimiser, position, RNG."""
    if not state_path.is_file():
        return
    state = read_checkpoint(state_path, map_location="cpu")
    if state.get("run_id") != run.run_id:
        if run.rank == 0:
            log.info("%s belongs to another run (cfg/data/device changed): starting fresh", state_path)
        return
    run.student.load_state_dict(state["student"])
    run.teacher.load_state_dict(state["teacher"])
    run.optimizer.load_state_dict(state["optimizer"])
    scaler_state = scaler_state_to_load(state.get("scaler"), run.scaler.is_enabled())
    if scaler_state is not None:
        run.scaler.load_state_dict(scaler_state)
    set_rng_state(state["rng"])
    run.step, run.history = int(state["step"]), list(state["history"])
    run.epoch, run.epoch_step = int(state["epoch"]), int(state.get("epoch_step", 0))
    sums = state.get("epoch_sums")
    run.epoch_sums = None if sums is None else sums.to(run.device)
    if run.rank == 0:
        log.info("resuming %s at epoch %d, step %d of it (global step %d)", state_path, run.epoch,
                 run.epoch_step, run.step)


def save_state(run: Run, state_path: Path) -> None:
    """The resumable run state at the run's position (rank 0; rewritten atomically)."""
    save_checkpoint(state_path, run.student, run.teacher, run.model_cfg, {
        "epoch": run.epoch, "epoch_step": run.epoch_step, "step": run.step, "run_id": run.run_id,
        "epoch_sums": None if run.epoch_sums is None else run.epoch_sums.detach().cpu(),
        "optimizer": run.optimizer.state_dict(), "scaler": run.scaler.state_dict(), "rng": rng_state(),
        "history": run.history,
    })
