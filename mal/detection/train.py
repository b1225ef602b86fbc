"""Training a detector: detectron2's ``DefaultTrainer`` with AdamW, one rolling checkpoint, resume, and the
loss / lr curves written to dvclive by a training hook (:class:`DvcLiveHook`).

Processes: ``mal.common.launch.launch`` starts one per GPU (or this process alone); each initialises
``torch.distributed`` from the environment (``init_method="env://"``) and detectron2's local process group,
as ``detectron2.engine.launch`` would. Under ``torchrun`` the caller is already one of the processes.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from detectron2.config import CfgNode
from detectron2.engine import DefaultTrainer, HookBase, hooks
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import CommonMetricPrinter, JSONWriter

from mal.common.files import atomic_path, file_sha256, fingerprint, write_json_atomic, write_text_atomic
from mal.common.launch import launch, launched_externally, local_rank, world_size
from mal.config.detector import DetectorParams
from mal.detection.detector import build_cfg, check_checkpoint, register_json, scale_to_world_size

# Besides every ``loss_*`` part detectron2 reports (Cascade's are per stage: loss_cls_stage0..2, ...), so the
# logged parts always add up to total_loss whatever the architecture. No wall-clock key ("time"): the curves are
# tracked files, and an identical re-run must leave them unchanged (seconds per iteration: the timings).
CURVE_KEYS = ("total_loss", "lr")
WRITE_PERIOD = 20  # detectron2's DefaultTrainer writer period: the JSON log and the curves share it
METRICS_LOG = "metrics.json"  # detectron2's JSONWriter file in the work dir (every WRITE_PERIOD iterations)


def curve_keys(record: dict[str, Any]) -> list[str]:
    """The keys of one metrics record that become curves."""
    return [*CURVE_KEYS, *sorted(k for k in record if k.startswith("loss_"))]


class DvcLiveHook(HookBase):
    """Logs ``train/<key>`` curves (:func:`curve_keys`) to a dvclive folder every ``period`` iterations and at the
    last one: the values detectron2's ``JSONWriter(window_size=1)`` writes, at the same steps.

    The folder is started afresh (it is a DVC output, deleted by ``dvc repro`` before the stage runs); a resumed
    run first logs the earlier run's records below its start iteration from the work dir's JSON log, so its
    curves are complete (a repeated iteration keeps this run's values).
    """

    def __init__(self, live_dir: str | Path, metrics_log: str | Path, period: int = WRITE_PERIOD) -> None:
        self._dir, self._log, self._period = Path(live_dir), Path(metrics_log), period
        self._last = -1
        self._live: Any = None

    def before_train(self) -> None:
        from dvclive import Live

        shutil.rmtree(self._dir, ignore_errors=True)
        self._live = Live(dir=str(self._dir), save_dvc_exp=False, dvcyaml=None, report=None, resume=False)
        earlier: dict[int, dict[str, Any]] = {}
        for line in self._log.read_text().splitlines() if self._log.is_file() else []:
            rec = json.loads(line)
            if "iteration" in rec and rec["iteration"] < self.trainer.start_iter:
                earlier[int(rec["iteration"])] = rec
        for it in sorted(earlier):
            self._write(it, earlier[it])

    def after_step(self) -> None:
        it = self.trainer.iter
        if (it + 1) % self._period == 0 or it == self.trainer.max_iter - 1:
            self._flush()

    def after_train(self) -> None:
        self._flush()
        self._live.end()

    def _flush(self) -> None:
        """The storage's values newer than the last write, grouped by iteration (as ``JSONWriter.write``)."""
        by_iter: dict[int, dict[str, float]] = {}
        for key, (value, it) in self.trainer.storage.latest_with_smoothing_hint(1).items():
            if it > self._last:
                by_iter.setdefault(it, {})[key] = value
        for it in sorted(by_iter):
            self._write(it, by_iter[it])
        self._last = max(by_iter, default=self._last)

    def _write(self, step: int, record: dict[str, Any]) -> None:
        self._live.step = step
        for key in curve_keys(record):
            val = record.get(key)
            if isinstance(val, (int, float)) and val == val:  # NaN: no point
                self._live.log_metric(f"train/{key}", float(val))


class MalTrainer(DefaultTrainer):
    """DefaultTrainer with AdamW, a console / JSON-lines progress log (ETA), one rolling checkpoint and, on the
    main process, :class:`DvcLiveHook` when ``live_dir`` is given."""

    def __init__(self, cfg: CfgNode, live_dir: str | Path | None = None) -> None:
        self.live_dir = live_dir  # before super().__init__, which builds the hooks
        super().__init__(cfg)

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: torch.nn.Module) -> torch.optim.Optimizer:
        if cfg.SOLVER.OPTIMIZER.upper() == "ADAMW":
            groups = get_default_optimizer_params(
                model, base_lr=cfg.SOLVER.BASE_LR, weight_decay_norm=cfg.SOLVER.WEIGHT_DECAY_NORM,
                bias_lr_factor=cfg.SOLVER.BIAS_LR_FACTOR, weight_decay_bias=cfg.SOLVER.WEIGHT_DECAY_BIAS)
            opt = torch.optim.AdamW(groups, lr=cfg.SOLVER.BASE_LR, weight_decay=cfg.SOLVER.WEIGHT_DECAY)
            return maybe_add_gradient_clipping(cfg, opt)
        if cfg.SOLVER.OPTIMIZER.upper() != "SGD":
            raise ValueError(f"SOLVER.OPTIMIZER must be SGD or ADAMW, got {cfg.SOLVER.OPTIMIZER!r}")
        return super().build_optimizer(cfg, model)

    def build_hooks(self) -> list:
        ret = super().build_hooks()
        for h in ret:
            if isinstance(h, hooks.PeriodicCheckpointer):
                h.max_to_keep = 1  # resume needs only the latest; keeps the work dir small
        if self.live_dir is not None and comm.is_main_process():  # last: after LRScheduler has put the lr
            ret.append(DvcLiveHook(self.live_dir, Path(self.cfg.OUTPUT_DIR) / METRICS_LOG))
        return ret

    def build_writers(self) -> list:
        # window_size=1: the logged losses are the iteration's own values, not per-key medians over 20
        # iterations, so the loss_* parts of a record sum to its total_loss (the curves stay decomposable).
        return [CommonMetricPrinter(self.max_iter),
                JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, METRICS_LOG), window_size=1)]


def _train_worker(cfg: CfgNode, datasets: list[tuple[str, str]], resume: bool, num_threads: int,
                  live_dir: str | None) -> None:
    """One training process: joins the process group the launcher's environment describes (several
    processes), registers ``datasets`` (``(json, image_root)`` pairs) in this process and trains."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    distributed = world_size() > 1
    if distributed:
        cuda = cfg.MODEL.DEVICE.startswith("cuda")
        if cuda:
            torch.cuda.set_device(local_rank())
        torch.distributed.init_process_group("nccl" if cuda else "gloo", init_method="env://")
        comm.create_local_process_group(int(os.environ.get("LOCAL_WORLD_SIZE", world_size())))
    try:
        for json_path, root in datasets:
            register_json(json_path, root)
        seed_all_rng(cfg.SEED + comm.get_rank())
        if comm.is_main_process():
            from detectron2.utils.logger import setup_logger

            setup_logger(cfg.OUTPUT_DIR, name="detectron2")
        trainer = MalTrainer(cfg, live_dir=live_dir)
        trainer.resume_or_load(resume=resume)
        trainer.train()
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


def run_fingerprint(cfg: CfgNode, train_json: str | Path) -> str:
    """Fingerprint of the config (less OUTPUT_DIR) and the training JSON's bytes: a run resumes only if both
    match, so new pseudo-labels under an unchanged config never continue an old run."""
    c = copy.deepcopy(cfg)
    c.defrost()
    c.OUTPUT_DIR = ""
    return fingerprint(c.dump(), file_sha256(train_json))


def _prepare_work_dir(cfg: CfgNode, train_json: str | Path, work: Path, resume: bool) -> int:
    """The work dir for this run; returns the iteration it resumes from (0: a fresh run, the folder emptied)."""
    fp = run_fingerprint(cfg, train_json)
    fp_file, last = work / "run.fingerprint", work / "last_checkpoint"
    same = resume and fp_file.is_file() and fp_file.read_text().strip() == fp
    start_iter = 0
    if same and last.is_file():
        start_iter = int(check_checkpoint(work / last.read_text().strip()).get("iteration", -1)) + 1
    elif work.exists():
        for f in work.glob("*"):
            if f.is_file():
                f.unlink()
    work.mkdir(parents=True, exist_ok=True)
    fp_file.write_text(fp + "\n")
    (work / "config.yaml").write_text(cfg.dump())
    return start_iter


@dataclass
class TrainedDetector:
    """A finished run: the config it ran (as published: no weights path), the model weights, and the facts an
    identical re-run reproduces (``info``)."""

    cfg: CfgNode
    weights: dict[str, Any]
    info: dict[str, Any]

    def write(self, out_dir: str | Path) -> None:
        """``out_dir`` as a whole (replaced): model_final.pth (weights only), config.yaml, train_info.json."""
        out = Path(out_dir)
        tmp = out.with_name(f".{out.name}.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        with atomic_path(tmp / "model_final.pth") as path:
            torch.save(self.weights, path)
        cfg = self.cfg.clone()
        cfg.defrost()
        cfg.OUTPUT_DIR = str(out)
        write_text_atomic(tmp / "config.yaml", cfg.dump())
        write_json_atomic(tmp / "train_info.json", self.info, indent=2)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)


def train_detector(detector: str, params: DetectorParams, train_json: str | Path, image_root: str | Path,
                   work_dir: str | Path, live_dir: str | Path | None = None, *, seed: int = 0, num_gpus: int = 0,
                   num_threads: int = 0, resume: bool = True) -> tuple[TrainedDetector, dict[str, Any]]:
    """Train ``detector`` on ``train_json`` (file_names relative to ``image_root``) in ``work_dir`` (checkpoints,
    log.txt, detectron2's metrics.json), with curves in ``live_dir``; returns ``(trained, timings)``.

    ``num_gpus`` processes (0: one, on the CPU); with ``SOLVER.REFERENCE_WORLD_SIZE`` the schedule is scaled to
    the world size first (detectron2's ``auto_scale_workers``). An existing run of the same config and data in
    ``work_dir`` resumes from its last checkpoint (``resume``); any other is discarded. When done, the
    checkpoints are deleted (the weights are in the result); the logs stay.
    """
    work = Path(work_dir)
    cfg = build_cfg(detector, params, train_json=train_json, image_root=image_root, seed=seed,
                    device="cuda" if num_gpus else "cpu", output_dir=work)
    world = world_size() if launched_externally() else max(num_gpus, 1)
    cfg = scale_to_world_size(cfg, world)
    start_iter = _prepare_work_dir(cfg, train_json, work, resume)
    args = (cfg, [(str(train_json), str(image_root))], resume, num_threads, None if live_dir is None else str(live_dir))
    t0 = time.perf_counter()
    if launched_externally() or world == 1:
        _train_worker(*args)
    else:
        launch(_train_worker, world, *args)
    dt = time.perf_counter() - t0
    if launched_externally() and comm.get_rank() != 0:
        return TrainedDetector(cfg, {}, {}), {}
    ckpt = check_checkpoint(work / "model_final.pth")
    published = cfg.clone()
    published.defrost()
    published.MODEL.WEIGHTS = ""
    info = {"iterations": int(cfg.SOLVER.MAX_ITER), "ims_per_batch": int(cfg.SOLVER.IMS_PER_BATCH),
            "base_lr": float(cfg.SOLVER.BASE_LR), "world_size": world, "device": cfg.MODEL.DEVICE}
    timings = {"resumed_from_iter": start_iter, "train_time_s": round(dt, 1),
               "s_per_iter": round(dt / max(cfg.SOLVER.MAX_ITER - start_iter, 1), 4)}
    for f in [*work.glob("model_*.pth"), work / "last_checkpoint"]:
        f.unlink(missing_ok=True)  # only needed to resume an unfinished run
    trained = TrainedDetector(published, {"model": ckpt["model"], "iteration": ckpt.get("iteration", -1)}, info)
    return trained, timings
