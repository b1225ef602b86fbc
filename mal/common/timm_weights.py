"""Local weights files into timm models (the labeler's encoders and the detectors' backbones load them alike)."""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
from pathlib import Path

import timm
from torch import nn

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".npz", ".npy")


def is_path_like(value: str) -> bool:
    """A ``pretrained`` value that names a file (not a timm hub tag)."""
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
