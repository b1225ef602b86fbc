"""Mask Auto-Labeler (MAL): ViT box-to-mask labeler and the pipeline around it."""

__version__ = "0.1.0"
