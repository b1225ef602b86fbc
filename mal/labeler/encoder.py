"""Image encoder: any timm backbone as a ``B x C x h x w`` feature grid.

Plain ViTs give their last-layer patch tokens (prefix/class tokens dropped) reshaped to the patch grid;
hierarchical backbones (ConvNeXt: NCHW, Swin: NHWC) give their last feature map.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz", ".npy")


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


def _is_path_like(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(WEIGHT_SUFFIXES)


def load_local_weights(model: nn.Module, path: str | Path) -> tuple[list[str], list[str]]:
    """Load a local weights file (safetensors / pth / npz) into a timm model, non-strictly.

    The model family's ``checkpoint_filter_fn`` (timm) adapts the file, e.g. resamples ViT positional
    embeddings to the crop size (bicubic, antialias off). ``torch.load`` runs with ``weights_only=True``.
    Returns ``(missing_keys, unexpected_keys)`` and logs them; raises ``ValueError`` naming the path when
    the file is missing or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: pretrained weights file not found")
    module = sys.modules.get(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None and "antialias" in inspect.signature(filter_fn).parameters:
        # Resample pos-embeds as DINOv2 / HF / their ONNX exports do: bicubic without antialias (timm's default
        # antialias only differs when shrinking, e.g. 518 px DINOv2 -> a 224 px crop, by up to 0.4).
        filter_fn = functools.partial(filter_fn, antialias=False)
    try:
        result = timm.models.load_checkpoint(
            model, str(path), use_ema=False, strict=False, filter_fn=filter_fn, weights_only=True
        )
    except Exception as e:  # noqa: BLE001 - re-raised with the path named
        raise ValueError(f"{path}: could not load encoder weights ({type(e).__name__}: {e})") from e
    missing = list(getattr(result, "missing_keys", []) or [])
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if missing:
        log.warning(
            "%s: %d encoder keys missing from the weights file, e.g. %s", path, len(missing), missing[:5]
        )
    if unexpected:
        log.warning("%s: %d unexpected keys ignored, e.g. %s", path, len(unexpected), unexpected[:5])
    return missing, unexpected


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
            if _is_path_like(pretrained):
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
        if not self.features_only:
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
