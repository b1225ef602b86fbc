"""Labeler networks: timm encoder, attention decoder, the MaskLabeler and its checkpoints."""

from mal.models.labeler import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    MaskLabeler,
    build_labeler,
    load_labeler,
    normalize,
    save_checkpoint,
)

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MaskLabeler",
    "build_labeler",
    "load_labeler",
    "normalize",
    "save_checkpoint",
]
