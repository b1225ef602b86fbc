"""Phase 3: the detectors — detectron2 model-zoo configs, the project's keys over them, checkpoints.

It plugs in through detectron2's own registries: datasets via ``register_coco_instances`` (``image_root`` = the
split's image folder), models via the model-zoo yaml configs, a timm backbone via ``BACKBONE_REGISTRY``
(:mod:`mal.detection.timm_backbone`). Training: :mod:`mal.detection.train`; scoring: :mod:`mal.detection.evaluation`.

Detectors (:data:`DETECTORS`): the paper profile (``*_FPN_3x``: the zoo 3x schedule, ImageNet backbone from
``detector.pretrained``) and the CPU demo profile (``detector.demo_arch``: small input, narrow heads, AdamW;
docs/detector.md): ``*_MNv2_demo`` over an ImageNet MobileNetV2 from the weights stage, ``*_R18_demo``
ResNet-18 + GroupNorm from scratch. The params' detectron2 keys (``detector.opts``, ``detector.models.<name>``)
are merged last with ``CfgNode.merge_from_list``: one channel for every detectron2 option.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from detectron2 import model_zoo
from detectron2.config import CfgNode, get_cfg
from detectron2.data import DatasetCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import build_model

from mal.config.detector import NO_PRETRAINED, DemoArchParams, DetectorParams, flatten_opts
from mal.detection.timm_backbone import add_timm_config
from mal.detection.timm_backbone import data_config as timm_data_config


class CheckpointError(ValueError):
    """A detector checkpoint that is missing, corrupt or does not fit the model; the message names it."""


class DetectorConfigError(ValueError):
    """A params key that is not a detectron2 config key, or a value of the wrong type; one line naming it."""


@dataclass(frozen=True)
class DetectorSpec:
    """A named detector: model-zoo yaml, profile (``demo`` | ``paper``), backbone key of its weights in
    ``detector.pretrained``, and the timm model of a timm backbone (``None``: detectron2's ResNet)."""

    zoo_config: str
    profile: str
    backbone: str
    timm_model: str | None = None


MASK_RCNN, CASCADE = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_3x.yaml", "Misc/cascade_mask_rcnn_R_50_FPN_3x.yaml"
DETECTORS: dict[str, DetectorSpec] = {
    "mask_rcnn_MNv2_demo": DetectorSpec(MASK_RCNN, "demo", "MNv2", "mobilenetv2_100"),
    "cascade_MNv2_demo": DetectorSpec(CASCADE, "demo", "MNv2", "mobilenetv2_100"),
    "mask_rcnn_R18_demo": DetectorSpec(MASK_RCNN, "demo", "R18"),
    "cascade_R18_demo": DetectorSpec(CASCADE, "demo", "R18"),
    "mask_rcnn_R50_FPN_3x": DetectorSpec(MASK_RCNN, "paper", "R50"),
    "mask_rcnn_R101_FPN_3x": DetectorSpec("COCO-InstanceSegmentation/mask_rcnn_R_101_FPN_3x.yaml", "paper", "R101"),
    "mask_rcnn_X101_FPN_3x": DetectorSpec("COCO-InstanceSegmentation/mask_rcnn_X_101_32x8d_FPN_3x.yaml", "paper",
                                          "X101"),
    "cascade_mask_rcnn_R50_FPN_3x": DetectorSpec(CASCADE, "paper", "R50"),
}


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


def register_json(json_path: str | Path, image_root: str | Path, check: bool = True) -> str:
    """Register a COCO JSON whose ``file_name``s are relative to ``image_root`` (idempotent); returns the name.

    The name is derived from the two paths as given (not resolved), so a config that names the dataset is the
    same in every process and in every checkout. ``check``: every image must exist (not for scoring records).
    """
    path = Path(json_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: COCO JSON not found")
    key = f"{json_path}|{image_root}"
    name = f"mal_{path.stem}_{hashlib.sha1(key.encode()).hexdigest()[:8]}"
    if name not in DatasetCatalog.list():
        if check:
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
    cfg.SOLVER.OPTIMIZER = "SGD"  # SGD | ADAMW (see mal.detection.train.MalTrainer.build_optimizer)
    add_timm_config(cfg)
    return cfg


def load_cfg(path: str | Path) -> CfgNode:
    """Read a config.yaml written by the train_detector stage."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: detector config not found (train the detector first)")
    cfg = base_cfg()
    cfg.merge_from_file(str(path))
    return cfg


def _is_none(weights: str | None) -> bool:
    return weights is not None and weights.lower() == NO_PRETRAINED


def _apply_timm_backbone(cfg: CfgNode, spec: DetectorSpec, weights: str | None) -> None:
    """A timm encoder + FPN from a local ImageNet file, RGB input normalised as the weights expect (timm's
    data config of the architecture, 0-255 scale)."""
    if not weights:
        raise DetectorConfigError(f"detector.pretrained.{spec.backbone}: a local weights file is needed for "
                                  f"{spec.timm_model} (e.g. models/weights/{spec.timm_model}.safetensors), or 'none'")
    cfg.MODEL.BACKBONE.NAME = "build_timm_fpn_backbone"
    cfg.MODEL.TIMM.NAME = spec.timm_model
    cfg.MODEL.TIMM.WEIGHTS = "" if _is_none(weights) else str(weights)
    data = timm_data_config(spec.timm_model)
    cfg.INPUT.FORMAT = "RGB"
    cfg.MODEL.PIXEL_MEAN = [round(255.0 * v, 3) for v in data["mean"]]
    cfg.MODEL.PIXEL_STD = [round(255.0 * v, 3) for v in data["std"]]


def _apply_demo(cfg: CfgNode, demo: DemoArchParams, spec: DetectorSpec, weights: str | None) -> None:
    """The CPU demo variant: small input, narrow heads, AdamW, GN in the FPN (docs/detector.md); the backbone
    is an ImageNet timm encoder (``*_MNv2_demo``) or ResNet + GN from scratch (``*_R18_demo``)."""
    cfg.MODEL.WEIGHTS = ""
    cfg.MODEL.BACKBONE.FREEZE_AT = 0
    if spec.timm_model:
        _apply_timm_backbone(cfg, spec, weights)
        cfg.MODEL.BACKBONE.FREEZE_AT = int(demo.freeze_at)  # pretrained stem + stride-4 blocks: as the zoo's 2
    else:
        cfg.MODEL.RESNETS.DEPTH = int(demo.depth)
        cfg.MODEL.RESNETS.RES2_OUT_CHANNELS = 64 if demo.depth in (18, 34) else 256
        cfg.MODEL.RESNETS.NORM = "GN"
        cfg.MODEL.RESNETS.STRIDE_IN_1X1 = False
        cfg.MODEL.PIXEL_STD = [57.375, 57.120, 58.395]  # from scratch: as the zoo's scratch GN configs
    cfg.MODEL.FPN.NORM = "GN"
    cfg.MODEL.FPN.OUT_CHANNELS = int(demo.fpn_channels)
    lo, n = float(demo.anchor_min), len(cfg.MODEL.ANCHOR_GENERATOR.SIZES)
    cfg.MODEL.ANCHOR_GENERATOR.SIZES = [[lo * 2**i] for i in range(n)]
    cfg.MODEL.ROI_BOX_HEAD.FC_DIM = int(demo.box_fc_dim)
    cfg.MODEL.ROI_MASK_HEAD.CONV_DIM = int(demo.mask_conv_dim)
    cfg.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = int(demo.rois_per_image)
    # <= ~30 objects an image: 600 / 300 proposals (the zoo's 2000 / 1000) halve the RPN's NMS time in training
    cfg.MODEL.RPN.PRE_NMS_TOPK_TRAIN, cfg.MODEL.RPN.POST_NMS_TOPK_TRAIN = (int(v) for v in demo.rpn_topk_train)
    size = int(demo.input_size)
    cfg.INPUT.MIN_SIZE_TRAIN = (size,)
    cfg.INPUT.MAX_SIZE_TRAIN = size
    cfg.INPUT.MIN_SIZE_TEST = size
    cfg.INPUT.MAX_SIZE_TEST = size
    cfg.SOLVER.OPTIMIZER = "ADAMW"


def _apply_paper_weights(cfg: CfgNode, weights: str | None) -> None:
    """A paper detector's ImageNet backbone: a path / URL, null (the zoo's detectron2:// URL) or ``none``."""
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


def apply_opts(cfg: CfgNode, opts: dict[str, Any], where: str) -> None:
    """Merge dotted detectron2 keys into ``cfg`` (``merge_from_list``, one key at a time so an error names it).

    ``None`` leaves a key as it is; an int for a float key is a float (YAML ``1`` for ``BASE_LR``). A key detectron2
    does not have, or a value of another type, raises :class:`DetectorConfigError` naming ``where`` and the key.
    """
    for key, value in opts.items():
        if value is None:
            continue
        node: Any = cfg
        for part in key.split("."):
            if not isinstance(node, CfgNode) or part not in node:
                raise DetectorConfigError(f"{where}: {key}: not a detectron2 config key")
            node = node[part]
        if isinstance(node, CfgNode):
            raise DetectorConfigError(f"{where}: {key}: a group of detectron2 keys, not a value (got {value!r})")
        if isinstance(node, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        try:
            cfg.merge_from_list([key, value])
        except (ValueError, AssertionError, KeyError) as e:
            raise DetectorConfigError(f"{where}: {key}: expected {type(node).__name__} as detectron2's "
                                      f"{node!r}, got {value!r} ({' '.join(str(e).split())[:200]})") from None


def check_params(params: DetectorParams) -> None:
    """Every ``detector.models`` name is a known detector and every detectron2 key of ``detector.opts`` and
    ``detector.models.<name>`` exists, with a value of its type: before any training starts."""
    cfg = base_cfg()
    apply_opts(cfg.clone(), flatten_opts(params.opts), "detector.opts")
    for name, over in params.models.items():
        if name not in DETECTORS:
            raise DetectorConfigError(f"detector.models.{name}: unknown detector; known: {', '.join(sorted(DETECTORS))}")
        apply_opts(cfg.clone(), flatten_opts(over or {}), f"detector.models.{name}")


def build_cfg(detector: str, params: DetectorParams, *, train_json: str | Path | None = None,
              image_root: str | Path | None = None, seed: int = 0, device: str | None = None,
              output_dir: str | Path = "") -> CfgNode:
    """detectron2 config for ``detector`` trained on ``train_json`` (file_names relative to ``image_root``).

    The zoo yaml; then ``demo_arch`` (demo detectors) or the ImageNet backbone of ``pretrained``; then the project's
    fixed keys (bitmask masks: pseudo-labels are RLE; no eval during training); then the detectron2 keys of
    ``detector.opts`` and ``detector.models.<detector>``; then what the run sets (seed, device, AMP on CUDA only,
    workers, dataset, classes). ``SOLVER.REFERENCE_WORLD_SIZE`` is applied by :func:`scale_to_world_size`.
    """
    spec = get_spec(detector)
    cfg = base_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(spec.zoo_config))
    weights = getattr(params.pretrained, spec.backbone, None)
    if spec.profile == "demo":
        _apply_demo(cfg, params.demo_arch, spec, weights)
    else:
        _apply_paper_weights(cfg, weights)
    cfg.INPUT.MASK_FORMAT = "bitmask"  # handles polygons and RLE (pseudo-labels are RLE)
    cfg.TEST.EVAL_PERIOD = 0
    cfg.DATASETS.TEST = ()
    apply_opts(cfg, flatten_opts(params.opts), "detector.opts")
    apply_opts(cfg, flatten_opts(params.models.get(detector) or {}), f"detector.models.{detector}")
    cfg.SOLVER.WARMUP_ITERS = min(cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.MAX_ITER)
    cfg.SOLVER.CHECKPOINT_PERIOD = min(cfg.SOLVER.CHECKPOINT_PERIOD, cfg.SOLVER.MAX_ITER)
    cfg.DATALOADER.NUM_WORKERS = int(params.num_workers)
    cfg.MODEL.DEVICE = str(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cfg.SOLVER.AMP.ENABLED = bool(params.amp) and cfg.MODEL.DEVICE.startswith("cuda")  # CUDA only
    cfg.SEED = int(seed)
    if train_json is not None:
        if image_root is None:
            raise ValueError("build_cfg: a training JSON needs its image_root")
        cfg.DATASETS.TRAIN = (register_json(train_json, image_root),)
        cfg.MODEL.ROI_HEADS.NUM_CLASSES = num_classes(train_json)
    cfg.OUTPUT_DIR = str(output_dir)
    return cfg


def scale_to_world_size(cfg: CfgNode, world_size: int) -> CfgNode:
    """detectron2's own linear scaling (``DefaultTrainer.auto_scale_workers``) to ``world_size`` processes when
    ``SOLVER.REFERENCE_WORLD_SIZE`` (R) is set: images per GPU stay ``IMS_PER_BATCH / R``; batch and lr scale by
    ``world_size / R``, iterations (steps, warm-up, checkpoint period) by ``R / world_size`` -- the same epochs.
    Applied before training so the published config.yaml shows the schedule that ran (the trainer's own call is
    then a no-op: REFERENCE_WORLD_SIZE becomes world_size)."""
    from detectron2.engine import DefaultTrainer

    ref = int(cfg.SOLVER.REFERENCE_WORLD_SIZE)
    if ref and cfg.SOLVER.IMS_PER_BATCH % ref:
        raise DetectorConfigError(f"detector: SOLVER.IMS_PER_BATCH {cfg.SOLVER.IMS_PER_BATCH} is not divisible by "
                                  f"SOLVER.REFERENCE_WORLD_SIZE {ref}")
    return DefaultTrainer.auto_scale_workers(cfg, int(world_size))


# ---------------------------------------------------------------- checkpoints
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
    """Build the model of ``cfg`` and load ``weights`` strictly (every key must match), in eval mode."""
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
