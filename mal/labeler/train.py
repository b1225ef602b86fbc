"""The labeler training loop: student + EMA teacher, MIL + CRF losses, AdamW with warm-up + cosine.

Device-agnostic (AMP only on CUDA); data parallel on N processes (NCCL on CUDA, gloo on CPU) under
the project launcher (mal/common/launch.py) or ``torchrun``; a resumable run state every
``save_state_every_steps`` steps and after every epoch (mal/labeler/run_state.py), so that a killed run
resumes, mid-epoch too, to the same weights as an uninterrupted one. Validation is sharded over the processes.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from mal.config.labeler import LabelerTrainParams
from mal.config.load import validate
from mal.config.run import RunTrainLabelerParams
from mal.labeler.data import worker_init
from mal.labeler.distributed import barrier
from mal.labeler.evaluate import evaluate_labeler
from mal.labeler.losses import crf_loss, mil_loss, ramp
from mal.labeler.model import input_norm, normalize, resolve_cfg, save_checkpoint
from mal.labeler.run_state import Run, load_state, save_state, setup_run
from mal.labeler.schedule import lr_at

log = logging.getLogger(__name__)
_POSTFIX_EVERY = 20  # steps between progress-bar loss reads (each read waits for the device)

def labeler_cfgs(params: Any, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model cfg, train cfg)`` of ``labeler.models.<name>`` in validated ``params``
    (:class:`mal.config.Params`): the model's own ``train`` laid over ``labeler.train``, plus
    ``run.train_labeler`` (where and how fast it runs)."""
    if name not in params.labeler.models:
        raise ValueError(f"params: labeler.models has no '{name}' (have: {sorted(params.labeler.models)})")
    train = {**params.labeler.train_for(name).model_dump(), **params.run.train_labeler.model_dump()}
    return params.labeler.models[name].model_cfg(), train


def resolve_train_cfg(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """A train cfg (keys of ``labeler.train`` and ``run.train_labeler``) validated, defaults filled: the plain dict
    the run fingerprints (:mod:`mal.labeler.run_state`)."""
    cfg = dict(cfg or {})
    run = {k: cfg.pop(k) for k in list(cfg) if k in RunTrainLabelerParams.model_fields}
    return {**validate(LabelerTrainParams, cfg, "labeler.train").model_dump(),
            **validate(RunTrainLabelerParams, run, "run.train_labeler").model_dump()}


# ---------------------------------------------------------------- one step
def train_step(
    student: torch.nn.Module,
    teacher: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    step: int,
    cfg: dict[str, Any],
    device: torch.device,
    use_amp: bool,
    norm: tuple[list[float], list[float]] | None = None,
) -> dict[str, torch.Tensor]:
    """Forward + losses for one batch (no optimiser). Returns ``loss`` (with grad) and detached parts.

    ``batch``: ``student`` / ``teacher`` ``B x S x S x 3`` uint8 (normalised here, on the device, with
    ``norm``, default the student's :func:`input_norm`) or ``B x 3 x S x S`` float already normalised;
    ``box_mask`` ``B x 1 x M x M``; ``box_area`` ``B`` (kept on the host: the decoder's size buckets).
    """
    if norm is None:
        norm = input_norm(getattr(student, "module", student).cfg)
    s_img = batch["student"].to(device, non_blocking=True)
    t_img = batch["teacher"].to(device, non_blocking=True)
    if s_img.dtype == torch.uint8:
        s_img, t_img = normalize(s_img, *norm), normalize(t_img, *norm)
    box = batch["box_mask"].to(device, non_blocking=True)
    areas = batch["box_area"]
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
def _loader(run: Run) -> DataLoader:
    """The training loader, built once: workers persist across epochs (the sampler tells them the epoch)."""
    workers = int(run.cfg["num_workers"])
    return DataLoader(
        run.train_ds, batch_size=run.per_rank, sampler=run.sampler, drop_last=run.drop_last,
        num_workers=workers, pin_memory=run.device.type == "cuda", persistent_workers=workers > 0,
        worker_init_fn=worker_init if workers > 0 else None, generator=torch.Generator().manual_seed(run.seed),
    )


def _train_epoch(run: Run, model: torch.nn.Module, loader: DataLoader, state_path: Path, progress: bool,
                 stop_after_step: int | None) -> dict[str, Any] | None:
    """The rest of epoch ``run.epoch`` (from step ``run.epoch_step``); returns the epoch's record (means of
    the losses), or None when stopped by ``stop_after_step`` (a simulated kill)."""
    cfg, norm = run.cfg, input_norm(run.student.cfg)
    every = int(cfg["save_state_every_steps"])
    run.sampler.set_position(run.epoch, run.epoch_step * run.per_rank)
    if run.epoch_sums is None:  # loss sums on the device: read once per epoch, not every step
        run.epoch_sums = torch.zeros(3, dtype=torch.float64, device=run.device)
    model.train()
    t_epoch, steps_run, lr = time.time(), 0, 0.0
    show = progress and run.rank == 0
    bar = tqdm(loader, desc=f"labeler epoch {run.epoch + 1}/{cfg['epochs']}", disable=not show, leave=False)
    for batch in bar:
        lr = lr_at(run.step, cfg["lr_per_sample"] * cfg["batch_size"], run.total_steps, run.warmup_steps,
                   cfg["min_lr_ratio"])
        for g in run.optimizer.param_groups:
            g["lr"] = lr
        out = train_step(model, run.teacher, batch, run.step, cfg, run.device, run.use_amp, norm)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(out["loss"]).backward()
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.ema.update(run.student)
        run.step, run.epoch_step, steps_run = run.step + 1, run.epoch_step + 1, steps_run + 1
        run.epoch_sums += torch.stack([out["loss"].detach(), out["mil"], out["crf"]]).double()
        if show and run.epoch_step % _POSTFIX_EVERY == 0:
            bar.set_postfix(loss=f"{float(out['loss'].detach()):.3f}", lr=f"{lr:.2e}")
        if every and run.step % every == 0 and run.epoch_step < run.steps_per_epoch and run.rank == 0:
            save_state(run, state_path)
        if stop_after_step is not None and run.step >= stop_after_step:
            return None
    sums = (run.epoch_sums / max(1, run.steps_per_epoch)).tolist()
    run.epoch_sums = None
    return {"epoch": run.epoch + 1, "step": run.step, "lr": lr,
            **{f"train_{k}": v for k, v in zip(("loss", "mil", "crf"), sums, strict=True)},
            "seconds_per_step": (time.time() - t_epoch) / max(1, steps_run)}


def _final_metrics(run: Run) -> dict[str, Any]:
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
    stop_after_step: int | None = None,
) -> dict[str, Any]:
    """Train a labeler; returns the final metrics dict (rank 0; other ranks return ``{}``) with the run's
    wall-clock numbers under ``"timings"`` (kept out of the checkpoint).

    ``state_path``: resumable run state rewritten atomically every ``save_state_every_steps`` steps and after
    every epoch; a matching state (same cfgs, data, seed, processes, device type, AMP) is resumed when
    ``resume``. ``out_checkpoint``: the final student+teacher. ``stop_after_epoch`` / ``stop_after_step``:
    return ``{}`` after that many epochs / global steps as if killed (for tests).
    """
    model_cfg, cfg = resolve_cfg(model_cfg), resolve_train_cfg(train_cfg)
    if int(cfg["num_threads"]) > 0:
        torch.set_num_threads(int(cfg["num_threads"]))
    run = setup_run(model_cfg, cfg, train_records, val_records, seed)
    state_path = Path(state_path)
    if resume:
        load_state(run, state_path)
    model = run.student
    if run.world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            run.student, device_ids=[run.device.index] if run.device.type == "cuda" else None)
    live = _open_live(live_dir, run.history) if run.rank == 0 and live_dir else None
    loader = _loader(run)
    t_start = time.time()
    while run.epoch < int(cfg["epochs"]):
        record = _train_epoch(run, model, loader, state_path, progress, stop_after_step)
        if record is None:
            return {}
        last = _end_epoch(run, record, live, state_path)
        if stop_after_epoch is not None and run.epoch >= stop_after_epoch and not last:
            return {}
    if live is not None:
        live.end()
    if run.rank != 0:
        return {}
    return _save_final(run, model_cfg, out_checkpoint, t_start)


def _end_epoch(run: Run, record: dict[str, Any], live: Any, state_path: Path) -> bool:
    """Validate (when due), log and save the run state after an epoch; returns whether it was the last."""
    cfg = run.cfg
    last = run.epoch + 1 == cfg["epochs"]
    if run.val_ds is not None and ((run.epoch + 1) % int(cfg["val_every"]) == 0 or last):
        # every process scores its share of the val boxes (no rank idles at a barrier for minutes)
        record.update(evaluate_labeler(run.student, run.val_ds, cfg["val_threshold"],
                                       max(run.per_rank, 16), run.device, amp=run.use_amp,
                                       distributed=run.world > 1))
        run.student.train()
    run.history.append(record)
    run.epoch, run.epoch_step = run.epoch + 1, 0
    if run.rank == 0:
        log.info("epoch %s", json.dumps(record))
        if live is not None:
            _log_live(live, record)
        save_state(run, state_path)
    barrier()
    return last


def _save_final(run: Run, model_cfg: dict[str, Any], out_checkpoint: str | Path, t_start: float) -> dict[str, Any]:
    """Rank 0: write the checkpoint; the metrics, with the wall-clock numbers apart under ``"timings"``."""
    metrics = _final_metrics(run)
    save_checkpoint(out_checkpoint, run.student, run.teacher, model_cfg, {
        "epoch": int(run.cfg["epochs"]), "step": run.step, "run_id": run.run_id, "metrics": metrics,
        "mask_threshold": float(run.cfg["mask_threshold"]),
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
