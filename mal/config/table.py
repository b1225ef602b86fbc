"""Params section ``table``: the paper table's matrix (labelers x detectors x seeds) and its bootstrap.

``labelers``, ``detectors`` and ``seeds`` are also the DVC matrix of the labeler and detector stages (dvc.yaml),
so they are checked here, when params are read: DVC itself accepts an empty or repeated list (an empty one
silently drops every detector), and a repeated seed would train the same cell twice.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from mal.config.base import Section


class BootstrapParams(Section):
    """Intervals of the paper_table stage (:mod:`mal.report.bootstrap`, scored by pycocotools)."""

    resamples: int = Field(1000, ge=100, description="draws of the val images (with replacement)")
    seed: int = Field(0, ge=0, description="the draws are deterministic in this seed")
    level: float = Field(0.95, ge=0.5, lt=1, description="central mass of the percentile intervals")
    resample_seeds: bool = Field(True, description="each draw also resamples the seeds: the interval holds the "
                                 "training noise as well")


def _distinct(values: list, what: str, example: str) -> list:
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"duplicate {what} {dupes} ({example})")  # the loader appends "got <list>"
    return values


class TableParams(Section):
    labelers: list[str] = Field(["vit_tiny", "vit_small_dinov2", "efficientnet_lite0"], min_length=1,
                                description="keys of labeler.models: one labeler (and its rows) each")
    detectors: list[str] = Field(["mask_rcnn_MNv2_demo"], min_length=1,
                                 description="keys of detector.models: each trained on GT masks and on every labeler's")
    seeds: list[int] = Field([0, 1], min_length=1, description="detector seeds: each (masks, detector) cell is "
                             "trained once per seed (distinct, >= 0); adding one trains only the new cells")
    bootstrap: BootstrapParams = Field(default_factory=BootstrapParams, description="the table's intervals")

    @field_validator("labelers", "detectors")
    @classmethod
    def _distinct_names(cls, values: list[str]) -> list[str]:
        return _distinct(values, "names", "each names one row of the table")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, seeds: list[int]) -> list[int]:
        negative = [s for s in seeds if s < 0]
        if negative:
            raise ValueError(f"seeds must be >= 0, got {negative}")
        return _distinct(seeds, "seeds", "each seed trains one detector per cell")
