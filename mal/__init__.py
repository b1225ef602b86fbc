"""Mask Auto-Labeler (MAL): ViT box-to-mask labeler and the pipeline around it."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["LabelledMask", "Labeler", "__version__"]


def __getattr__(name: str) -> Any:
    """``mal.Labeler`` / ``mal.LabelledMask`` on first use: ``import mal`` (and every ``mal.common.*``
    import of the stages) stays free of torch."""
    if name in ("Labeler", "LabelledMask"):
        from mal.pseudo import api

        return getattr(api, name)
    raise AttributeError(f"module 'mal' has no attribute {name!r}")
