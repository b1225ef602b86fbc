"""Params section ``mask_quality``: pseudo-masks vs GT masks, with the box and GrabCut baselines."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mal.config.base import Section


class MaskQualityParams(Section):
    num_overlays: int = Field(6, ge=0, description="overlay PNGs (GT outlines green, pseudo-masks red)")
    baselines: list[Literal["box", "grabcut"]] = Field(["box", "grabcut"], description="baselines scored beside")
    grabcut_iterations: int = Field(3, ge=1)
    baseline_max_boxes: int = Field(0, ge=0, description="GrabCut on a seeded subsample of this many GT boxes (the "
                                    "same for every labeler); 0 = all")
    baseline_seed: int = Field(0, ge=0)
