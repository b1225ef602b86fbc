"""The labeler training loop: student + EMA teacher, MIL + CRF losses, AdamW with warm-up + cosine.

Device-agnostic (AMP only on CUDA); multi-process data parallel when launched by ``torchrun`` (NCCL on
CUDA, gloo on CPU); a resumable run state after every epoch (model, teacher, optimiser, scaler, step,
RNG states, history) so that a killed run resumes to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from mal.common.files import fingerprint
from mal.common.params import with_defaults
from mal.labeler.data import BoxCropDataset
from mal.labeler.distributed import barrier, dist_setup, rng_state, seed_everything, set_rng_state
from mal.labeler.evaluate import evaluate_labeler
from mal.labeler.losses import crf_loss, mil_loss, ramp
from mal.labeler.model import (
    DEFAULT_MASK_THRESHOLD,
    build_labeler,
    input_norm,
    read_checkpoint,
    resolve_cfg,
    save_checkpoint,
)
from mal.labeler.schedule import EMATeacher, build_optimizer, lr_at

log = logging.getLogger(__name__)

DEFAULT_TRAIN: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 32,  # total over all processes
    "lr_per_sample": 1.5e-6,  # peak lr = lr_per_sample * batch_size (paper: 4.8e-5 at 32)
    "betas": [0.9, 0.9],
    "weight_decay": 5e-4,
    "warmup_epochs": 1.0,
    "min_lr_ratio": 0.2,
    "ema_momentum": 0.996,
    "mil_weight": 4.0,
    "crf_weight": 0.5,
    "mil_warmup_steps": 1000,
    "crf_warmup_steps": 4000,
    "crf_iterations": 100,
    "crf_sigma": 0.1,
    "crf_clamp": [0.1, 0.9],
    "crf_normalize_affinity": False,  # paper: the sum of k_ij-weighted logits; true: their mean (mal.labeler.losses)
    "val_threshold": 0.5,
    # Recorded in the checkpoint as the threshold to label with (the CLI's default); not used in training.
    "mask_threshold": DEFAULT_MASK_THRESHOLD,
    "val_every": 1,
    "val_max_boxes": 0,  # 0 = every val box; else an evenly spaced subset (large sets, e.g. COCO)
    "num_workers": 0,
    "num_threads": 0,  # torch CPU threads; 0 = torch default
    "image_cache": 256,
    "amp": True,  # used only on CUDA
    "aug": {},
}


def resolve_train_cfg(cfg: dict[str, Any] | None) -> dict[str, Any]:
    cfg = with_defaults(cfg, DEFAULT_TRAIN, "labeler train cfg")
    if not 0.0 <= float(cfg["mask_threshold"]) < 1.0:
        raise ValueError(f"labeler train cfg: mask_threshold must be in [0, 1), got {cfg['mask_threshold']}")
    return cfg


# ---------------------------------------------------------------- one step
def train_step(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    step: int,
    cfg: dict[str, Any],
    device: torch.device,
    use_amp: bool,
) -> dict[str, torch.Tensor]:
    """Forward + losses for one batch (no optimiser). Returns ``loss`` (with grad) and detached parts."""
    s_img = batch["student"].to(device, non_blocking=True)
    t_img = batch["teacher"].to(device, non_blocking=True)
    box = batch["box_mask"].to(device, non_blocking=True)
    areas = batch["box_area"].to(device, non_blocking=True)
    with torch.autocast(device_type=device.type, enabled=use_amp):
        s_logits = student(s_img, areas)
        with torch.no_grad():
            t_logits = teacher(t_img, areas)
    p_s = torch.sigmoid(s_logits.float())
    p_t = torch.sigmoid(t_logits.float())
    mil = mil_loss(p_s, box).mean()
    image_small = F.interpolate(
        s_img.float(), size=p_s.shape[-2:], mode="bilinear", align_corners=False, antialias=True
    )
    crf, _ = crf_loss(
        p_s, p_t, image_small, box, cfg["crf_iterations"], cfg["crf_sigma"], tuple(cfg["crf_clamp"]),
        bool(cfg["crf_normalize_affinity"]),
    )
    crf = crf.mean()
    w_mil = cfg["mil_weight"] * ramp(step, cfg["mil_warmup_steps"])
    w_crf = cfg["crf_weight"] * ramp(step, cfg["crf_warmup_steps"])
    loss = w_mil * mil + w_crf * crf
    return {"loss": loss, "mil": mil.detach(), "crf": crf.detach()}


# ---------------------------------------------------------------- the run
@dataclass
class _Run:
    """Everything one training process holds: models, optimiser state, data, schedule."""

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
    sampler: DistributedSampler
    per_rank: int
    drop_last: bool
    total_steps: int
    warmup_steps: int
    seed: int
    run_id: str
    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


def _setup(model_cfg: dict[str, Any], cfg: dict[str, Any], train_records: list[dict[str, Any]],
           val_records: list[dict[str, Any]] | None, seed: int) -> _Run:
    """Process group, models (seeded), optimiser, datasets and the step schedule of one process."""
    rank, world, device = dist_setup()
    if cfg["batch_size"] % world:
        raise ValueError(f"labeler.train.batch_size {cfg['batch_size']} is not divisible by {world} processes")
    per_rank = cfg["batch_size"] // world
    if not train_records:
        raise ValueError("labeler training: no training boxes (check data.min_train_box_* params)")
    boxes = [(r["ann"]["id"], r["ann"]["bbox"], r["path"]) for r in train_records]
    # mask_threshold is metadata only: changing it must not discard a resumable run.
    run_id = fingerprint(model_cfg, {k: v for k, v in cfg.items() if k != "mask_threshold"}, seed, world, boxes)
    use_amp = bool(cfg["amp"]) and device.type == "cuda"

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
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    drop_last = len(train_ds) // world >= per_rank
    steps_per_epoch = (len(sampler) // per_rank) if drop_last else -(-len(sampler) // per_rank)
    return _Run(
        model_cfg, cfg, rank, world, device, use_amp, student, teacher, EMATeacher(teacher, cfg["ema_momentum"]),
        build_optimizer(student, cfg["weight_decay"], cfg["betas"]),
        torch.amp.GradScaler(device.type, enabled=use_amp), train_ds, val_ds, sampler, per_rank, drop_last,
        total_steps=steps_per_epoch * int(cfg["epochs"]),
        warmup_steps=int(round(cfg["warmup_epochs"] * steps_per_epoch)), seed=seed, run_id=run_id,
    )


def _resume(run: _Run, state_path: Path) -> int:
    """Load a matching run state (same cfgs, data, seed, processes) into ``run``; returns the next epoch."""
    if not state_path.is_file():
        return 0
    state = read_checkpoint(state_path, map_location="cpu")
    if state.get("run_id") != run.run_id:
        if run.rank == 0:
            log.info("%s belongs to another run (cfg/data changed): starting fresh", state_path)
        return 0
    run.student.load_state_dict(state["student"])
    run.teacher.load_state_dict(state["teacher"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    run.step, run.history = int(state["step"]), list(state["history"])
    if run.rank == 0:
        log.info("resuming %s at epoch %d (step %d)", state_path, int(state["epoch"]), run.step)
    return int(state["epoch"])


def _train_epoch(run: _Run, model: torch.nn.Module, epoch: int, progress: bool) -> dict[str, Any]:
    """One pass over this process's share of the boxes; returns the epoch's record (means of the losses)."""
    cfg = run.cfg
    run.sampler.set_epoch(epoch)
    run.train_ds.set_epoch(epoch)
    loader = DataLoader(
        run.train_ds, batch_size=run.per_rank, sampler=run.sampler, drop_last=run.drop_last,
        num_workers=int(cfg["num_workers"]), pin_memory=run.device.type == "cuda",
        generator=torch.Generator().manual_seed(run.seed * 100003 + epoch),
    )
    model.train()
    sums = {"loss": 0.0, "mil": 0.0, "crf": 0.0}
    t_epoch = time.time()
    bar = tqdm(loader, desc=f"labeler epoch {epoch + 1}/{cfg['epochs']}",
               disable=not (progress and run.rank == 0), leave=False)
    lr = 0.0
    for batch in bar:
        lr = lr_at(run.step, cfg["lr_per_sample"] * cfg["batch_size"], run.total_steps, run.warmup_steps,
                   cfg["min_lr_ratio"])
        for g in run.optimizer.param_groups:
            g["lr"] = lr
        out = train_step(model, run.teacher, batch, run.step, cfg, run.device, run.use_amp)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(out["loss"]).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.ema.update(run.student)
        run.step += 1
        for k in sums:
            sums[k] += float(out[k].detach())
        bar.set_postfix(loss=f"{float(out['loss'].detach()):.3f}", lr=f"{lr:.2e}")
    n = max(1, len(loader))
    return {"epoch": epoch + 1, "step": run.step, "lr": lr, **{f"train_{k}": v / n for k, v in sums.items()},
            "seconds_per_step": (time.time() - t_epoch) / n}


def _save_state(run: _Run, state_path: Path, epoch: int) -> None:
    """The resumable run state after ``epoch`` epochs (rank 0; rewritten atomically)."""
    save_checkpoint(state_path, run.student, run.teacher, run.model_cfg, {
        "epoch": epoch, "step": run.step, "run_id": run.run_id, "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(), "rng": rng_state(), "history": run.history,
    })


def _final_metrics(run: _Run) -> dict[str, Any]:
    """The stage's metrics: the last epoch's val mIoU and losses, and the run's shape (no wall-clock number)."""
    final = run.history[-1] if run.history else {}
    metrics = {k: final[k] for k in ("val_miou", "val_miou_instance", "val_miou_box", "val_boxes") if k in final}
    metrics.update({
        "loss": final.get("train_loss"), "loss_mil": final.get("train_mil"), "loss_crf": final.get("train_crf"),
        "epochs": int(run.cfg["epochs"]), "steps": run.step, "batch_size": run.cfg["batch_size"],
        "processes": run.world, "val_threshold": run.cfg["val_threshold"],
        "best_val_miou": max((h["val_miou"] for h in run.history if "val_miou" in h), default=None),
    })
    return metrics


def train_labeler(
    model_cfg: dict[str, Any],
    train_cfg: dict[str, Any],
    train_records: list[dict[str, Any]],
    val_records: list[dict[str, Any]] | None,
    out_checkpoint: str | Path,
    state_path: str | Path,
    live_dir: str | Path | None = None,
    seed: int = 0,
    resume: bool = True,
    stop_after_epoch: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train a labeler; returns the final metrics dict (rank 0; other ranks return ``{}``) with the run's
    wall-clock numbers under ``"timings"`` (kept out of the checkpoint).

    ``state_path``: resumable run state rewritten atomically after every epoch; a matching state (same
    cfgs, data and seed) is resumed when ``resume``. ``out_checkpoint``: the final student+teacher.
    ``stop_after_epoch``: return after that many epochs as if killed (for tests).
    """
    model_cfg, cfg = resolve_cfg(model_cfg), resolve_train_cfg(train_cfg)
    if int(cfg["num_threads"]) > 0:
        torch.set_num_threads(int(cfg["num_threads"]))
    run = _setup(model_cfg, cfg, train_records, val_records, seed)
    state_path = Path(state_path)
    start_epoch = _resume(run, state_path) if resume else 0
    model = run.student
    if run.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            run.student, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    live = _open_live(live_dir, run.history) if run.rank == 0 and live_dir else None
    t_start = time.time()
    for epoch in range(start_epoch, int(cfg["epochs"])):
        record = _train_epoch(run, model, epoch, progress)
        last = epoch + 1 == cfg["epochs"]
        if run.rank == 0 and run.val_ds is not None and ((epoch + 1) % int(cfg["val_every"]) == 0 or last):
            record.update(evaluate_labeler(run.student, run.val_ds, cfg["val_threshold"], max(run.per_rank, 16),
                                           run.device))
            run.student.train()
        run.history.append(record)
        if run.rank == 0:
            log.info("epoch %s", json.dumps(record))
            if live is not None:
                _log_live(live, record)
            _save_state(run, state_path, epoch + 1)
        barrier()
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and not last:
            return {}
    if live is not None:
        live.end()
    if run.rank != 0:
        return {}
    metrics = _final_metrics(run)
    save_checkpoint(out_checkpoint, run.student, run.teacher, model_cfg, {
        "epoch": int(cfg["epochs"]), "step": run.step, "run_id": run.run_id, "metrics": metrics,
        "mask_threshold": float(cfg["mask_threshold"]),
    })
    # Timings are returned apart: the checkpoint and the metrics must be identical on an identical re-run.
    timings = {"seconds_per_step": (run.history[-1] if run.history else {}).get("seconds_per_step"),
               "train_seconds_this_run": round(time.time() - t_start, 1)}
    return {**metrics, "timings": timings}


def _open_live(live_dir: str | Path, history: list[dict[str, Any]]) -> Any:
    """A dvclive logger that never touches git / DVC experiments; replays ``history`` after a resume."""
    from dvclive import Live

    live = Live(dir=str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None, resume=False)
    for record in history:
        _log_live(live, record)
    return live


# Not curves: counters, and wall-clock time (a tracked curve must not change on an identical re-run).
_NOT_LOGGED = ("epoch", "step", "seconds_per_step")


def _log_live(live: Any, record: dict[str, Any]) -> None:
    for key, value in record.items():
        if key not in _NOT_LOGGED and isinstance(value, (int, float)) and value == value:
            live.log_metric(key, float(value))
    live.next_step()
