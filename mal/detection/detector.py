"""Phase 3: Detectron2 Mask R-CNN / Cascade Mask R-CNN trained on (pseudo or human) masks.

With ``timm_backbone`` (a timm encoder as a detectron2 backbone) the only modules of the project that import
detectron2 (installed by ``scripts/install_detectron2.sh``).
It plugs in through detectron2's own registries: datasets via ``register_coco_instances`` (image_root =
the split's image folder, ``mal.common.paths.image_roots``), models via model-zoo yaml configs, training via a small
``DefaultTrainer`` subclass (resume, periodic checkpoints, ``CommonMetricPrinter`` progress/ETA log),
multi-GPU via ``detectron2.engine.launch``. Evaluation: :func:`predict` returns COCO result records scored
by :mod:`mal.detection.coco_eval` (pycocotools, the slow reference implementation, i.e. ``use_fast_impl=False``).

Detectors (:data:`DETECTORS`): the paper profile (``*_FPN_3x``: model-zoo 3x schedule, ImageNet-pretrained
backbone from ``params.detector.pretrained`` — a path or URL) and the CPU demo profile (small input, narrow
heads, AdamW; measured on the 2-core CPU machines, docs/detector.md): ``*_MNv2_demo`` over an ImageNet
MobileNetV2 from the weights stage (the default), ``*_R18_demo`` ResNet-18 + GroupNorm from scratch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog, build_detection_test_loader
from detectron2.data.datasets import register_coco_instances
from detectron2.engine import DefaultTrainer, hooks, launch
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.modeling import build_model
from detectron2.solver.build import get_default_optimizer_params, maybe_add_gradient_clipping
from detectron2.utils import comm
from detectron2.utils.env import seed_all_rng
from detectron2.utils.events import CommonMetricPrinter, JSONWriter
from tqdm import tqdm

from mal.common.files import atomic_path, file_sha256, fingerprint
from mal.detection.params import NO_PRETRAINED
from mal.detection.timm_backbone import add_timm_config
from mal.detection.timm_backbone import data_config as timm_data_config

logger = logging.getLogger(__name__)


class CheckpointError(ValueError):
    """A detector checkpoint that is missing, corrupt or does not fit the model; the message names it."""


@dataclass(frozen=True)
class DetectorSpec:
    """A named detector: model-zoo yaml, profile (``demo`` | ``paper``), backbone key of its weights in
    ``params.detector.pretrained``, and the timm model of a timm backbone (``None``: detectron2's ResNet)."""

    zoo_config: str
    profile: str
    backbone: str
    timm_model: str | None = None


DETECTORS: dict[str, DetectorSpec] = {
    "mask_rcnn_MNv2_demo": DetectorSpec("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", "demo", "MNv2",
                                        "mobilenetv2_100"),
    "cascade_MNv2_demo": DetectorSpec("Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml", "demo", "MNv2", "mobilenetv2_100"),
    "mask_rcnn_R18_demo": DetectorSpec("COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", "demo", "R18"),
    "cascade_R18_demo": DetectorSpec("Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml", "demo", "R18"),
    "mask_rcnn_R50_FPN_3x": DetectorSpec(
        "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", "paper", "R50"),
    "mask_rcnn_R101_FPN_3x": DetectorSpec(
        "COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml", "paper", "R101"),
    "mask_rcnn_X101_FPN_3x": DetectorSpec(
        "COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x.yaml", "paper", "X101"),
    "cascade_mask_rcnn_R50_FPN_3x": DetectorSpec("Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml", "paper", "R50"),
}


def weight_backbones() -> set[str]:
    """The keys ``params.detector.pretrained`` may have: backbones that start from a weights file."""
    return {s.backbone for s in DETECTORS.values() if s.profile == "paper" or s.timm_model}


def get_spec(name: str) -> DetectorSpec:
    if name not in DETECTORS:
        raise KeyError(f"unknown detector {name!r}; known: {', '.join(sorted(DETECTORS))}")
    return DETECTORS[name]


# ---------------------------------------------------------------- datasets
def check_images(json_path: str | Path, image_root: str | Path) -> None:
    """Every image of the JSON exists under ``image_root``; else a clear error naming the JSON, the image id
    and its file_name (before detectron2 fails deep inside a data-loader worker)."""
    path, root = Path(json_path), Path(image_root)
    with path.open() as f:
        images = json.load(f).get("images", [])
    missing = next((im for im in images if not (root / im["file_name"]).is_file()), None)
    if missing is not None:
        raise FileNotFoundError(f"{path}: image id={missing['id']} file_name={missing['file_name']!r} not found "
                                f"under {root}")


def register_json(json_path: str | Path, image_root: str | Path) -> str:
    """Register a COCO JSON whose ``file_name``s are relative to ``image_root`` (idempotent); returns the name.

    The name is derived from the two paths as given (not resolved), so a config that names the dataset is
    the same in every process and in every checkout of the repository.
    """
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO JSON not found")
    key = f"{json_path}|{image_root}"
    name = f"mal_{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    if name not in DatasetCatalog.list():
        check_images(path, image_root)
        register_coco_instances(name, {}, str(path), str(image_root))
    return name


def num_classes(json_path: str | Path) -> int:
    """Number of categories in a COCO JSON (the detector's NUM_CLASSES)."""
    with open(json_path) as f:
        cats = json.load(f).get("categories", [])
    if not cats:
        raise ValueError(f"{json_path}: no 'categories'")
    return len(cats)


# ---------------------------------------------------------------- configs
def base_cfg() -> CfgNode:
    """detectron2's default config plus this project's extra keys (needed to re-read a saved config.yaml)."""
    cfg = get_cfg()
    cfg.SOLVER.OPTIMIZER = "SGD"  # SGD | ADAMW (see MalTrainer.build_optimizer)
    add_timm_config(cfg)
    return cfg


def load_cfg(path: str | Path) -> CfgNode:
    """Read a config.yaml written by :func:`train`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: detector config not found (train the detector first)")
    cfg = base_cfg()
    cfg.merge_from_file(str(path))
    return cfg


def _is_none(weights: Any) -> bool:
    return weights is not None and str(weights).lower() == NO_PRETRAINED


def _apply_timm_backbone(cfg: CfgNode, spec: DetectorSpec, weights: Any) -> None:
    """A timm encoder + FPN (:mod:`mal.detection.timm_backbone`) from a local ImageNet file, RGB input
    normalised as the weights expect (timm's data config of the architecture, 0-255 scale)."""
    if not weights:
        raise ValueError(f"params: detector.pretrained.{spec.backbone}: a local weights file is needed for "
                         f"{spec.timm_model} (e.g. models/weights/{spec.timm_model}.safetensors), or 'none'")
    cfg.MODEL.BACKBONE.NAME = "build_timm_fpn_backbone"
    cfg.MODEL.TIMM.NAME = spec.timm_model
    cfg.MODEL.TIMM.WEIGHTS = "" if _is_none(weights) else str(weights)
    data = timm_data_config(spec.timm_model)
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [round(255.0 * v, 3) for v in data["mean"]]
    cfg.MODEL.PIXEL_STD = [round(255.0 * v, 3) for v in data["std"]]


def _apply_demo(cfg: CfgNode, demo: dict[str, Any], spec: DetectorSpec, weights: Any) -> None:
    """The CPU demo variant: small input, narrow heads, AdamW, GN in the FPN (docs/detector.md); the backbone
    is an ImageNet timm encoder (``*_MNv2_demo``) or ResNet + GN from scratch (``*_R18_demo``)."""
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    if spec.timm_model:
        _apply_timm_backbone(cfg, spec, weights)
        cfg.MODEL.BACKBONE.FREEZE_AT = int(demo["freeze_at"])  # pretrained stem + stride-4 blocks: as the zoo's 2
    else:
        cfg.MODEL.RESNETS.DEPTH = int(demo["depth"])
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if int(demo["depth"]) in (18, 34) else 256
        cfg.MODEL.RESNETS.NORM = "GN"
        cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
        cfg.MODEL.PIXEL_STD = [57.375, 57.120, 58.395]  # from scratch: as the zoo's scratch GN configs
    cfg.MODEL.FPN.NORM = "GN"
    cfg.MODEL.FPN.OUT_CHANNELS = int(demo["fpn_channels"])
    lo, n = float(demo["anchor_min"]), len(cfg.MODEL.ANCHOR_GENERATOR.SIZES)
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[lo * 2**i] for i in range(n)]
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = int(demo["box_fc_dim"])
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = int(demo["mask_conv_dim"])
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = int(demo["rois_per_image"])
    # <= ~30 objects an image: 600 / 300 proposals (the zoo's 2000 / 1000) halve the RPN's NMS time in training
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN, cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = (int(v) for v in demo["rpn_topk_train"])
    size = int(demo["input_size"])
    cfg.INPUT.MIN_SIZE_TRAIN = (size,)
    cfg.INPUT.MAX_SIZE_TRAIN = size
    cfg.INPUT.MIN_SIZE_TEST = size
    cfg.INPUT.MAX_SIZE_TEST = size
    cfg.SOLVER.OPTIMIZER = "ADAMW"


def build_cfg(detector: str, train_json: str | Path | None, output_dir: str | Path,
              params: dict[str, Any], image_root: str | Path | None = None) -> CfgNode:
    """detectron2 config for ``detector`` trained on ``train_json`` (``params`` = params.yaml ``detector:``),
    whose image file_names are relative to ``image_root``.

    Schedule keys come from ``params['train']`` updated by ``params['models'][detector]`` (a missing or null
    key keeps the model-zoo 3x value). Demo detectors take ``params['demo_arch']``; paper detectors take the
    ImageNet backbone from ``params['pretrained'][backbone]`` (path or URL; null keeps the zoo's
    ``detectron2://ImageNetPretrained/...``, a download; ``none`` = random init, for smoke tests).
    ``reference_world_size`` (the zoo's 8 GPUs) is applied by :func:`scale_to_world_size`. ``opts`` (flat
    ``{KEY: value}`` detectron2 options, global then per model) are applied last.
    """
    spec = get_spec(detector)
    model_over = dict((params.get("models") or {}).get(detector) or {})
    opts = {**(params.get("opts") or {}), **(model_over.pop("opts", None) or {})}
    sched = {**(params.get("train") or {}), **model_over}
    cfg = base_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(spec.zoo_config))
    weights = (params.get("pretrained") or {}).get(spec.backbone)
    if spec.profile == "demo":
        _apply_demo(cfg, params["demo_arch"], spec, weights)
    else:
        if _is_none(weights):  # random init: smoke tests, no download
            cfg.MODEL.WEIGHTS = ""
            # Random FrozenBN backbones (nothing normalises) diverge at once, Inf proposals by iteration 2: inputs
            # normalised as the zoo's from-scratch configs (PIXEL_STD 1 suits MSRA weights only), gradients clipped
            cfg.MODEL.PIXEL_STD = [57.375, 57.120, 58.395]
            cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
            cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = "norm"
            cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = 1.0
        elif weights:
            cfg.MODEL.WEIGHTS = str(weights)
    if sched.get("weight_decay") is not None:
        cfg.SOLVER.WEIGHT_DECAY = float(sched["weight_decay"])
    if sched.get("optimizer") is not None:
        cfg.SOLVER.OPTIMIZER = str(sched["optimizer"]).upper()
    for key, cfg_key in (("max_iter", "MAX_ITER"), ("ims_per_batch", "IMS_PER_BATCH"), ("base_lr", "BASE_LR"),
                         ("warmup_iters", "WARMUP_ITERS"), ("checkpoint_period", "CHECKPOINT_PERIOD"),
                         ("lr_scheduler", "LR_SCHEDULER_NAME"), ("reference_world_size", "REFERENCE_WORLD_SIZE")):
        if sched.get(key) is not None:
            setattr(cfg.SOLVER, cfg_key, type(getattr(cfg.SOLVER, cfg_key))(sched[key]))
    if sched.get("steps") is not None:  # fractions of max_iter
        cfg.SOLVER.STEPS = tuple(int(f * cfg.SOLVER.MAX_ITER) for f in sched["steps"])
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.MAX_ITER)
    cfg.SOLVER.CHECKPOINT_PERIOD = min(cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.MAX_ITER)
    cfg.INPUT.MASK_FORMAT = "bitmask"  # handles polygons and RLE (pseudo-labels are RLE)
    cfg.DATALOADER.NUM_WORKERS = int(params.get("num_workers", 0))
    # the stage resolves params.detector.num_gpus (mal.common.devices) into ``device``; others: CUDA if present
    cfg.MODEL.DEVICE = str(params.get("device") or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg.SOLVER.AMP.ENABLED = bool(params.get("amp", False)) and cfg.MODEL.DEVICE.startswith("cuda")  # CUDA only
    cfg.SEED = int(params.get("seed", 0))
    cfg.TEST.EVAL_PERIOD = 0
    cfg.DATASETS.TEST = ()
    cfg.TEST.DETECTIONS_PER_IMAGE = int(params.get("detections_per_image", 100))
    if train_json is not None:
        if image_root is None:
            raise ValueError("build_cfg: a training JSON needs its image_root")
        cfg.DATASETS.TRAIN = (register_json(train_json, image_root),)
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes(train_json)
    cfg.OUTPUT_DIR = str(output_dir)
    if opts:
        cfg.merge_from_list([x for kv in opts.items() for x in (kv[0], str(kv[1]))])
    return cfg


def scale_to_world_size(cfg: CfgNode, world_size: int) -> CfgNode:
    """The schedule for ``world_size`` processes when ``SOLVER.REFERENCE_WORLD_SIZE`` (R) is set (non-zero).

    detectron2's linear scaling (``DefaultTrainer.auto_scale_workers``): images per GPU stay
    ``IMS_PER_BATCH / R``, so the batch and the lr scale by ``world_size / R`` and the iterations (steps,
    warm-up, checkpoint period) by ``R / world_size`` -- the same epochs. The zoo 3x schedule (R = 8, batch 16)
    on 1 GPU is batch 2, lr 0.0025, 2.16M iterations. Applied here, before training, so the published
    config.yaml and train_info.json show the schedule that ran (the trainer's own call is then a no-op).
    """
    ref = int(cfg.SOLVER.REFERENCE_WORLD_SIZE)
    if ref and cfg.SOLVER.IMS_PER_BATCH % ref:
        raise ValueError(f"detector: ims_per_batch {cfg.SOLVER.IMS_PER_BATCH} is not divisible by "
                         f"reference_world_size {ref}")
    return DefaultTrainer.auto_scale_workers(cfg, int(world_size))


# ---------------------------------------------------------------- training
class MalTrainer(DefaultTrainer):
    """DefaultTrainer with AdamW, a console/JSON-lines progress log (ETA) and one rolling checkpoint."""

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
        return ret

    def build_writers(self) -> list:
        # window_size=1: the logged losses are the iteration's own values, not per-key medians over 20
        # iterations, so the loss_* parts of a record sum to its total_loss (the curves stay decomposable).
        return [CommonMetricPrinter(self.max_iter),
                JSONWriter(os.path.join(self.cfg.OUTPUT_DIR, "metrics.json"), window_size=1)]


def _train_worker(cfg: CfgNode, datasets: list[tuple[str, str]], resume: bool, num_threads: int) -> None:
    """Body of one training process (also run by each GPU process under ``launch``); ``datasets`` are the
    ``(json, image_root)`` pairs to register in this process."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    for json_path, root in datasets:
        register_json(json_path, root)
    seed_all_rng(cfg.SEED + comm.get_rank())
    if comm.is_main_process():
        from detectron2.utils.logger import setup_logger

        setup_logger(cfg.OUTPUT_DIR, name="detectron2")
    trainer = MalTrainer(cfg)
    trainer.resume_or_load(resume=resume)
    trainer.train()


def run_fingerprint(cfg: CfgNode, train_json: str | Path) -> str:
    """Fingerprint of the config (less OUTPUT_DIR) and the training JSON's bytes: a run resumes only if both
    match, so new pseudo-labels under an unchanged config never continue an old run."""
    c = copy.deepcopy(cfg)
    c.defrost()
    c.OUTPUT_DIR = ""
    return fingerprint(c.dump(), file_sha256(train_json))


def train(cfg: CfgNode, train_json: str | Path, image_root: str | Path, work_dir: str | Path, num_gpus: int = 1,
          num_machines: int = 1, machine_rank: int = 0, dist_url: str = "auto",
          num_threads: int = 0, resume: bool = True) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train in ``work_dir`` (checkpoints, log.txt, metrics.json).

    Returns ``(info, timings)``: ``info`` is what an identical re-run reproduces (iterations, batch, device),
    ``timings`` the wall-clock numbers (kept apart, out of DVC outputs).

    With ``resume`` and an existing run of the *same* config in ``work_dir`` (fingerprint match), training
    continues from its last checkpoint; a run with a different config is discarded. ``num_gpus > 1`` spawns
    one process per GPU through ``detectron2.engine.launch``.
    """
    work = Path(work_dir)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.OUTPUT_DIR = str(work)
    fp = run_fingerprint(cfg, train_json)
    fp_file = work / "run.fingerprint"
    if work.exists() and (not resume or not fp_file.is_file() or fp_file.read_text().strip() != fp):
        for f in work.glob("*"):
            if f.is_file():
                f.unlink()
    work.mkdir(parents=True, exist_ok=True)
    fp_file.write_text(fp + "\n")
    (work / "config.yaml").write_text(cfg.dump())
    start_iter = 0
    last = work / "last_checkpoint"
    if resume and last.is_file():
        ckpt = check_checkpoint(work / last.read_text().strip())
        start_iter = int(ckpt.get("iteration", -1)) + 1
    datasets = [(str(train_json), str(image_root))]
    t0 = time.perf_counter()
    if num_gpus > 1 or num_machines > 1:
        launch(_train_worker, num_gpus, num_machines=num_machines, machine_rank=machine_rank,
               dist_url=dist_url, args=(cfg, datasets, resume, num_threads))
    else:
        _train_worker(cfg, datasets, resume, num_threads)
    dt = time.perf_counter() - t0
    done = cfg.SOLVER.MAX_ITER - start_iter
    info = {"iterations": int(cfg.SOLVER.MAX_ITER), "ims_per_batch": int(cfg.SOLVER.IMS_PER_BATCH),
            "base_lr": float(cfg.SOLVER.BASE_LR), "world_size": num_gpus * num_machines, "device": cfg.MODEL.DEVICE}
    timings = {"resumed_from_iter": start_iter, "train_time_s": round(dt, 1),
               "s_per_iter": round(dt / max(done, 1), 4)}
    return info, timings


def export_final(work_dir: str | Path, out_path: str | Path) -> None:
    """Write ``model_final.pth`` of a finished run to ``out_path`` with the model weights only (atomic)."""
    src = Path(work_dir) / "model_final.pth"
    ckpt = check_checkpoint(src)
    with atomic_path(out_path) as tmp:
        torch.save({"model": ckpt["model"], "iteration": ckpt.get("iteration", -1)}, tmp)


# ---------------------------------------------------------------- checkpoints + inference
def check_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a detectron2 ``.pth`` checkpoint (``weights_only=True``); :class:`CheckpointError` otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: detector checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, random bytes, pickle of disallowed types ...
        raise CheckpointError(f"{path}: detector checkpoint is corrupt or unreadable ({type(e).__name__}: "
                              f"{str(e)[:200]})") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CheckpointError(f"{path}: not a detectron2 checkpoint (no 'model' state dict)")
    return ckpt


def load_model(cfg: CfgNode, weights: str | Path) -> torch.nn.Module:
    """Build the model of ``cfg`` and load ``weights`` strictly (every key must match)."""
    model = build_model(cfg)
    state = check_checkpoint(weights)["model"]
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when not strict
        raise CheckpointError(f"{weights}: checkpoint does not fit the model of this config "
                              f"({str(e)[:300]})") from e
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(f"{weights}: checkpoint does not fit the model of this config "
                              f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    model.eval()
    return model


def predict(cfg: CfgNode, weights: str | Path, json_path: str | Path, image_root: str | Path,
            num_threads: int = 0, device: str | None = None) -> list[dict[str, Any]]:
    """Run the detector on every image of ``json_path`` (file_names relative to ``image_root``) on ``device``
    (default: CUDA if present): COCO result records (dataset category ids)."""
    if num_threads > 0:
        torch.set_num_threads(num_threads)
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.DEVICE = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_model(cfg, weights)
    name = register_json(json_path, image_root)
    loader = build_detection_test_loader(cfg, name)
    meta = MetadataCatalog.get(name)
    to_dataset_id = {v: k for k, v in meta.thing_dataset_id_to_contiguous_id.items()}
    results: list[dict[str, Any]] = []
    with torch.no_grad():
        for batch in tqdm(loader, desc="detector inference", unit="img"):
            outputs = model(batch)
            for inp, out in zip(batch, outputs, strict=True):
                recs = instances_to_coco_json(out["instances"].to("cpu"), inp["image_id"])
                for r in recs:
                    r["category_id"] = to_dataset_id[r["category_id"]]
                results.extend(recs)
    return results

