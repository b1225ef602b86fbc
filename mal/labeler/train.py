"""The labeler training loop: student + EMA teacher, MIL + CRF losses, AdamW with warm-up + cosine.

Device-agnostic (AMP only on CUDA); multi-process data parallel when launched by ``torchrun`` (NCCL on
CUDA, gloo on CPU); a resumable run state after every epoch (model, teacher, optimiser, scaler, step,
RNG states, history) so that a killed run resumes to the same weights as an uninterrupted one.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from mal.common.files import fingerprint
from mal.labeler.data import BoxCropDataset
from mal.labeler.evaluate import evaluate_labeler
from mal.labeler.losses import crf_loss, mil_loss, ramp
from mal.labeler.model import (
    DEFAULT_MASK_THRESHOLD,
    build_labeler,
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
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULT_TRAIN))
    if unknown:
        raise ValueError(f"labeler train cfg: unknown keys {unknown} (known: {sorted(DEFAULT_TRAIN)})")
    cfg = {**DEFAULT_TRAIN, **cfg}
    if not 0.0 <= float(cfg["mask_threshold"]) < 1.0:
        raise ValueError(f"labeler train cfg: mask_threshold must be in [0, 1), got {cfg['mask_threshold']}")
    return cfg


# ---------------------------------------------------------------- distributed helpers
def dist_setup() -> tuple[int, int, torch.device]:
    """Init the process group when launched by torchrun; returns (rank, world_size, device)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return rank, world, device


def dist_cleanup() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


# ---------------------------------------------------------------- RNG state (weights_only-safe)
def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": [int(random.getstate()[0]), list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = state["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
    rank, world, device = dist_setup()
    use_amp = bool(cfg["amp"]) and device.type == "cuda"
    if cfg["batch_size"] % world:
        raise ValueError(
            f"labeler.train.batch_size {cfg['batch_size']} is not divisible by {world} processes"
        )
    per_rank = cfg["batch_size"] // world
    if not train_records:
        raise ValueError("labeler training: no training boxes (check data.min_train_box_* params)")
    boxes = [(r["ann"]["id"], r["ann"]["bbox"], r["path"]) for r in train_records]
    # mask_threshold is metadata only: changing it must not discard a resumable run.
    run_id = fingerprint(model_cfg, {k: v for k, v in cfg.items() if k != "mask_threshold"}, seed, world, boxes)

    seed_everything(seed)
    student = build_labeler(model_cfg).to(device)
    teacher = copy.deepcopy(student)
    ema = EMATeacher(teacher, cfg["ema_momentum"])
    optimizer = build_optimizer(student, cfg["weight_decay"], cfg["betas"])
    scaler = torch.amp.GradScaler(device.type, enabled=use_amp)

    train_ds = BoxCropDataset(
        train_records,
        model_cfg["crop_size"],
        model_cfg["mask_size"],
        train=True,
        seed=seed,
        aug=cfg["aug"],
        image_cache=cfg["image_cache"],
    )
    if val_records and int(cfg["val_max_boxes"]) > 0 and len(val_records) > int(cfg["val_max_boxes"]):
        keep = np.linspace(0, len(val_records) - 1, int(cfg["val_max_boxes"])).round().astype(int)
        val_records = [val_records[i] for i in keep]
    val_ds = (
        BoxCropDataset(
            val_records,
            model_cfg["crop_size"],
            model_cfg["mask_size"],
            train=False,
            image_cache=cfg["image_cache"],
        )
        if val_records
        else None
    )
    sampler = DistributedSampler(train_ds, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    drop_last = len(train_ds) // world >= per_rank
    steps_per_epoch = (len(sampler) // per_rank) if drop_last else -(-len(sampler) // per_rank)
    total_steps = steps_per_epoch * int(cfg["epochs"])
    peak_lr = cfg["lr_per_sample"] * cfg["batch_size"]
    warmup_steps = int(round(cfg["warmup_epochs"] * steps_per_epoch))

    start_epoch, step, history = 0, 0, []
    state_path = Path(state_path)
    if resume and state_path.is_file():
        state = read_checkpoint(state_path, map_location="cpu")
        if state.get("run_id") == run_id:
            student.load_state_dict(state["student"])
            teacher.load_state_dict(state["teacher"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            set_rng_state(state["rng"])
            start_epoch, step, history = int(state["epoch"]), int(state["step"]), list(state["history"])
            if rank == 0:
                log.info("resuming %s at epoch %d (step %d)", state_path, start_epoch, step)
        elif rank == 0:
            log.info("%s belongs to another run (cfg/data changed): starting fresh", state_path)

    model = student
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            student, device_ids=[device.index] if device.type == "cuda" else None
        )
    live = _open_live(live_dir, history) if rank == 0 and live_dir else None
    t_start = time.time()
    for epoch in range(start_epoch, int(cfg["epochs"])):
        sampler.set_epoch(epoch)
        train_ds.set_epoch(epoch)
        loader = DataLoader(
            train_ds,
            batch_size=per_rank,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=int(cfg["num_workers"]),
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(seed * 100003 + epoch),
        )
        model.train()
        sums = {"loss": 0.0, "mil": 0.0, "crf": 0.0}
        t_epoch = time.time()
        bar = tqdm(
            loader,
            desc=f"labeler epoch {epoch + 1}/{cfg['epochs']}",
            disable=not (progress and rank == 0),
            leave=False,
        )
        for batch in bar:
            lr = lr_at(step, peak_lr, total_steps, warmup_steps, cfg["min_lr_ratio"])
            for g in optimizer.param_groups:
                g["lr"] = lr
            out = train_step(model, teacher, batch, step, cfg, device, use_amp)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(out["loss"]).backward()
            scaler.step(optimizer)
            scaler.update()
            ema.update(student)
            step += 1
            for k in sums:
                sums[k] += float(out[k].detach())
            bar.set_postfix(loss=f"{float(out['loss'].detach()):.3f}", lr=f"{lr:.2e}")
        n = max(1, len(loader))
        record = {
            "epoch": epoch + 1,
            "step": step,
            "lr": lr,
            **{f"train_{k}": v / n for k, v in sums.items()},
            "seconds_per_step": (time.time() - t_epoch) / n,
        }
        if (
            rank == 0
            and val_ds is not None
            and ((epoch + 1) % int(cfg["val_every"]) == 0 or epoch + 1 == cfg["epochs"])
        ):
            record.update(evaluate_labeler(student, val_ds, cfg["val_threshold"], max(per_rank, 16), device))
            student.train()
        history.append(record)
        if rank == 0:
            log.info("epoch %s", json.dumps(record))
            if live is not None:
                _log_live(live, record)
            save_checkpoint(
                state_path,
                student,
                teacher,
                model_cfg,
                {
                    "epoch": epoch + 1,
                    "step": step,
                    "run_id": run_id,
                    "optimizer": optimizer.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng": rng_state(),
                    "history": history,
                },
            )
        _barrier()
        if stop_after_epoch is not None and epoch + 1 >= stop_after_epoch and epoch + 1 < cfg["epochs"]:
            return {}
    if live is not None:
        live.end()
    if rank != 0:
        return {}
    final = history[-1] if history else {}
    metrics = {
        k: final.get(k) for k in ("val_miou", "val_miou_instance", "val_miou_box", "val_boxes") if k in final
    }
    metrics.update(
        {
            "loss": final.get("train_loss"),
            "loss_mil": final.get("train_mil"),
            "loss_crf": final.get("train_crf"),
            "epochs": int(cfg["epochs"]),
            "steps": step,
            "batch_size": cfg["batch_size"],
            "processes": world,
            "val_threshold": cfg["val_threshold"],
            "best_val_miou": max((h["val_miou"] for h in history if "val_miou" in h), default=None),
        }
    )
    # Timings are returned apart: the checkpoint and the metrics must be identical on an identical re-run.
    timings = {
        "seconds_per_step": final.get("seconds_per_step"),
        "train_seconds_this_run": round(time.time() - t_start, 1),
    }
    save_checkpoint(
        out_checkpoint,
        student,
        teacher,
        model_cfg,
        {"epoch": int(cfg["epochs"]), "step": step, "run_id": run_id, "metrics": metrics,
         "mask_threshold": float(cfg["mask_threshold"])},
    )
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
