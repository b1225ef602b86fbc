"""A detectron2 backbone over a timm encoder: ImageNet-initialised demo detectors, offline.

Registered in detectron2's ``BACKBONE_REGISTRY`` as ``build_timm_fpn_backbone`` (``MODEL.BACKBONE.NAME``), so the
model-zoo Mask R-CNN / Cascade configs use it unchanged: the bottom-up network is ``timm.create_model(name,
features_only=True, out_indices=...)`` (stride 4..32 maps ``res2..res5``), topped by detectron2's own ``FPN`` with
``LastLevelMaxPool`` (P2..P6, as the ResNet-FPN configs). Its weights come from a local file (the ``weights``
stage's ``models/weights/<name>.safetensors``, timm's key layout); nothing is downloaded. Config keys
(``MODEL.TIMM``, added by :func:`add_timm_config`):

- ``NAME``: timm model name (``mobilenetv2_100``); ``WEIGHTS``: local weights file ("" = random init);
- ``OUT_INDICES``: the timm feature levels used (4 of them, strides 4, 8, 16, 32);
- ``FREEZE_BN``: BatchNorm frozen (ImageNet statistics kept: a batch of 2 images cannot estimate them), as
  detectron2's ResNets do with ``RESNETS.NORM = FrozenBN``. timm's own ``freeze_batch_norm_2d``: timm fuses the
  activation into its norm layers (``BatchNormAct2d``), which detectron2's ``convert_frozen_batchnorm`` would
  replace by a bare ``FrozenBatchNorm2d``, silently dropping every ReLU6 of the network;
- ``MODEL.BACKBONE.FREEZE_AT`` as for detectron2's ResNets: 1 freezes the stem, 2 the stem and the stride-4
  blocks (``res2``), and so on (EfficientNet/MobileNet-style models: ``conv_stem`` + ``blocks``).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from detectron2.config import CfgNode
from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, FPN, Backbone
from detectron2.modeling.backbone.fpn import LastLevelMaxPool
from timm.layers import freeze_batch_norm_2d

from mal.common.timm_weights import load_local_weights

STAGE_NAMES = ("res2", "res3", "res4", "res5")


def add_timm_config(cfg: CfgNode) -> None:
    """Add ``MODEL.TIMM`` (defaults: random-init MobileNetV2) so a saved config.yaml can be read back."""
    cfg.MODEL.TIMM = CfgNode({"NAME": "mobilenetv2_100", "WEIGHTS": "", "OUT_INDICES": [1, 2, 3, 4],
                              "FREEZE_BN": True})


def data_config(name: str) -> dict:
    """timm's pretrained input config of ``name`` (``mean``/``std`` in 0-1, RGB), resolved from the architecture."""
    return timm.data.resolve_model_data_config(timm.create_model(name, pretrained=False, num_classes=0))


class TimmBackbone(Backbone):
    """``forward(x: B x 3 x H x W, RGB, normalised) -> {"res2": B x C2 x H/4 x W/4, ..., "res5": ... H/32}``."""

    def __init__(self, name: str, out_indices: list[int], weights: str = "", freeze_bn: bool = True,
                 freeze_at: int = 0):
        super().__init__()
        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=tuple(out_indices))
        if weights:
            if not Path(weights).is_file():
                raise FileNotFoundError(f"{weights}: backbone weights not found (MODEL.TIMM.WEIGHTS; run the "
                                        f"weights stage: dvc repro weights)")
            missing, _ = load_local_weights(self.body, weights)
            if missing:
                raise ValueError(f"{weights}: {len(missing)} backbone keys missing from the file, e.g. {missing[:3]} "
                                 f"(is it the weights of {name}?)")
        if freeze_bn:
            self.body = freeze_batch_norm_2d(self.body)
        info = self.body.feature_info
        if len(info.channels()) != len(STAGE_NAMES):
            raise ValueError(f"MODEL.TIMM.OUT_INDICES: {name} must give {len(STAGE_NAMES)} feature maps, "
                             f"got {len(info.channels())}")
        self._out_features = list(STAGE_NAMES)
        self._out_feature_channels = dict(zip(STAGE_NAMES, info.channels(), strict=True))
        self._out_feature_strides = dict(zip(STAGE_NAMES, info.reduction(), strict=True))
        self.freeze(freeze_at)

    def freeze(self, freeze_at: int) -> None:
        """No gradient for the stem (``freeze_at >= 1``) and the blocks up to level ``res<freeze_at>``."""
        if freeze_at <= 0:
            return
        body = self.body
        if not hasattr(body, "conv_stem") or not isinstance(getattr(body, "blocks", None), torch.nn.Sequential):
            raise ValueError(f"MODEL.BACKBONE.FREEZE_AT: {type(body).__name__} has no conv_stem + blocks to freeze")
        frozen: list[torch.nn.Module] = [body.conv_stem, body.bn1]
        if freeze_at >= 2:  # blocks up to the one giving res<freeze_at> (feature_info: "blocks.<i>")
            last = self.body.feature_info.module_name()[min(freeze_at, len(STAGE_NAMES) + 1) - 2]
            frozen += list(body.blocks[: int(last.split(".")[1]) + 1])
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self._out_features, self.body(x), strict=True))

    def output_shape(self) -> dict[str, ShapeSpec]:
        return {k: ShapeSpec(channels=self._out_feature_channels[k], stride=self._out_feature_strides[k])
                for k in self._out_features}


@BACKBONE_REGISTRY.register()
def build_timm_fpn_backbone(cfg: CfgNode, input_shape: ShapeSpec) -> Backbone:
    """detectron2 factory: :class:`TimmBackbone` + FPN (``MODEL.FPN.*``), P2..P6 as ``build_resnet_fpn_backbone``."""
    t = cfg.MODEL.TIMM
    bottom_up = TimmBackbone(t.NAME, list(t.OUT_INDICES), weights=t.WEIGHTS, freeze_bn=t.FREEZE_BN,
                             freeze_at=cfg.MODEL.BACKBONE.FREEZE_AT)
    return FPN(bottom_up=bottom_up, in_features=cfg.MODEL.FPN.IN_FEATURES, out_channels=cfg.MODEL.FPN.OUT_CHANNELS,
               norm=cfg.MODEL.FPN.NORM, top_block=LastLevelMaxPool(), fuse_type=cfg.MODEL.FPN.FUSE_TYPE)
