"""Image encoder: any timm backbone as a ``B x C x h x w`` feature grid.

Plain ViTs give their last-layer patch tokens (prefix/class tokens dropped) reshaped to the patch grid;
hierarchical backbones (ConvNeXt: NCHW, Swin: NHWC) give their last feature map.
"""

from __future__ import annotations

import logging
from typing import Any

import timm
import torch
from torch import nn

from mal.common.timm_weights import is_path_like, load_local_weights

log = logging.getLogger(__name__)


def _create(name: str, img_size: int, pretrained: bool, **kwargs: Any) -> nn.Module:
    """timm.create_model with ``img_size`` where the architecture takes it (ViT, Swin), without otherwise."""
    try:
        return timm.create_model(name, pretrained=pretrained, num_classes=0, img_size=img_size, **kwargs)
    except TypeError as e:  # e.g. ConvNeXt has no img_size argument
        if "img_size" not in str(e):
            raise
        return timm.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)


def drop_unused_head(model: nn.Module) -> list[str]:
    """Replace the classifier-side modules ``forward_features`` never runs (``head``, ``fc_norm``) by
    ``nn.Identity`` where they hold parameters; returns the names replaced.

    ``num_classes=0`` keeps e.g. ConvNeXt's ``head.norm`` (and a ViT's ``fc_norm`` with average pooling):
    parameters without gradients, which DistributedDataParallel rejects on the second step (rather than
    paying for ``find_unused_parameters``). Called after the weights are loaded, so none is reported missing.
    """
    dropped = []
    for attr in ("head", "fc_norm"):
        module = getattr(model, attr, None)
        if isinstance(module, nn.Module) and any(True for _ in module.parameters()):
            setattr(model, attr, nn.Identity())
            dropped.append(attr)
    return dropped


def drop_unused_stages(model: nn.Module) -> int:
    """Cut a ``features_only`` model's ``blocks`` after the last one whose map is returned; returns how many
    were dropped.

    timm's EfficientNet/MobileNet feature models build (and run) every block even when ``out_indices`` stops at
    the stride-16 map; the later blocks then get no gradient, which DistributedDataParallel rejects on the
    second step. Their forward loops over ``blocks`` and collects the maps by stage index, so a shorter
    ``blocks`` gives the same maps. Wrappers that already stop at the last map (``FeatureListNet``) are unchanged.
    """
    blocks = getattr(model, "blocks", None)
    info = getattr(model, "feature_info", None)
    if not isinstance(blocks, nn.Sequential) or info is None:
        return 0
    used = [int(m.split(".")[1]) for m in info.module_name() if m.startswith("blocks.")]
    keep = max(used) + 1 if used else 0
    dropped = len(blocks) - keep
    if dropped > 0:
        model.blocks = blocks[:keep]
    return max(dropped, 0)


class Encoder(nn.Module):
    """timm backbone -> last-layer feature grid.

    ``forward(x: B x 3 x S x S) -> B x C x h x w`` with ``C = out_channels``
    (ViT/16 at S=512: 32 x 32; ConvNeXt/Swin: stride-32 map).
    """

    def __init__(self, name: str, img_size: int, pretrained: bool | str | None = False, **kwargs: Any):
        super().__init__()
        self.name = name
        self.img_size = int(img_size)
        weights_file: str | None = None
        hub = False
        if isinstance(pretrained, str) and pretrained.strip().lower() in ("", "false", "none", "no"):
            pretrained = False
        if pretrained is True:
            hub = True
        elif isinstance(pretrained, str):
            if is_path_like(pretrained):
                weights_file = pretrained
            else:  # a timm hub tag, e.g. "mae" -> vit_base_patch16_224.mae (needs network access)
                name = f"{name.split('.')[0]}.{pretrained}"
                hub = True
        elif pretrained not in (False, None):
            raise ValueError(
                f"pretrained must be false, a timm tag or a weights file path, got {pretrained!r}"
            )
        self.model = _create(name, self.img_size, hub, **kwargs)
        if weights_file is not None:
            load_local_weights(self.model, weights_file)
        # encoder_args {features_only: true, out_indices: [k]}: a ConvNet's stride-16 map instead of its last
        # (stride 32), e.g. 8 x 8 at 128 px like a ViT/16; timm returns the list of the maps asked for
        self.features_only = bool(kwargs.get("features_only"))
        if self.features_only:
            drop_unused_stages(self.model)
        else:
            drop_unused_head(self.model)
        self.num_prefix_tokens = int(getattr(self.model, "num_prefix_tokens", 0))
        self.out_channels = int(
            self.model.feature_info.channels()[-1] if self.features_only else self.model.num_features
        )
        self.output_fmt = str(getattr(self.model, "output_fmt", "NCHW"))
        # The architecture's pretrained input config (mean/std the weights expect), also for local files.
        self.data_config = timm.data.resolve_model_data_config(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.model(x)[-1] if self.features_only else self.model.forward_features(x)
        if feats.ndim == 3:  # ViT tokens: B x (prefix + h*w) x C
            tokens = feats[:, self.num_prefix_tokens :]
            b, n, c = tokens.shape
            gh, gw = self._grid_hw(x, n)
            return tokens.transpose(1, 2).reshape(b, c, gh, gw)
        if feats.ndim != 4:
            raise RuntimeError(f"{self.name}: unexpected forward_features output shape {tuple(feats.shape)}")
        if self.output_fmt == "NHWC":
            feats = feats.permute(0, 3, 1, 2)
        return feats.contiguous()

    def _grid_hw(self, x: torch.Tensor, n: int) -> tuple[int, int]:
        patch = getattr(self.model, "patch_embed", None)
        ps = getattr(patch, "patch_size", None)
        if ps is not None:
            ph, pw = (ps, ps) if isinstance(ps, int) else ps
            gh, gw = x.shape[-2] // ph, x.shape[-1] // pw
            if gh * gw == n:
                return gh, gw
        side = int(round(n**0.5))
        if side * side != n:
            raise RuntimeError(f"{self.name}: cannot reshape {n} tokens into a grid")
        return side, side
