"""Params sections of the prepare and weights stages: ``data`` (which dataset, how to read it) and ``weights``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from mal.config.base import Section

PLACEHOLDER = "data/no_user_data.md"  # DVC deps need an existing path; the built-in sets name this file


class NucleiParams(Section):
    min_instances: int = Field(3, ge=1, description="z-slices with fewer nuclei are left out")
    train_fraction: float = Field(0.7, gt=0, lt=1, description="slices sorted by z: the first fraction trains")
    low_percentile: float = Field(0.5, ge=0, lt=100, description="16-bit -> 8-bit window, low percentile")
    high_percentile: float = Field(99.8, gt=0, le=100, description="16-bit -> 8-bit window, high percentile")


class ShapesParams(Section):
    num_train: int = Field(24, ge=1, description="synthetic train images")
    num_val: int = Field(8, ge=1, description="synthetic val images")
    image_size: int = Field(128, ge=32, description="side of the square images (px)")
    min_objects: int = Field(2, ge=1, description="objects per image, at least")
    max_objects: int = Field(5, ge=1, description="objects per image, at most")
    seed: int = Field(0, ge=0, description="the set is a pure function of this seed")


class CocoDataParams(Section):
    """Any COCO-format set referenced in place (COCO 2017, LVIS v1, your own): DVC deps of every stage that reads
    images. With a built-in dataset they point at a placeholder (DVC needs an existing path)."""

    train_json: str = Field(PLACEHOLDER, description="train boxes (masks optional)")
    train_images: str = Field(PLACEHOLDER, description="folder the train file_names are relative to")
    val_json: str = Field(PLACEHOLDER, description="val GT (masks needed for mask AP)")
    val_images: str = Field(PLACEHOLDER, description="folder the val file_names are relative to")


class DataParams(Section):
    dataset: Literal["nuclei", "shapes", "coco"] = Field("nuclei", description="which dataset prepare builds")
    min_train_box_area: float = Field(16.0, ge=0, description="boxes of at most this area (px^2) are not trained on "
                                      "(paper: 2048)")
    min_train_box_side: float = Field(2.0, ge=0, description="boxes with a side below this (px) are not trained on")
    nuclei: NucleiParams = Field(default_factory=NucleiParams, description="dataset: nuclei (embedded)")
    shapes: ShapesParams = Field(default_factory=ShapesParams, description="dataset: shapes (synthetic)")
    coco: CocoDataParams = Field(default_factory=CocoDataParams, description="dataset: coco (the user's files)")

    def image_root(self, split: Literal["train", "val"], prepared_dir: str | Path) -> Path:
        """The folder a split's image ``file_name``s are relative to: built-in sets write their images under the
        prepared folder; a COCO-format set is referenced in place, in the user's image folders."""
        if self.dataset == "coco":
            return Path(self.coco.train_images if split == "train" else self.coco.val_images)
        return Path(prepared_dir)


class WeightsParams(Section):
    encoders: list[str] = Field(["dinov2_vits14_imgfocus", "efficientnet_lite0", "mobilenetv2_100"], min_length=1,
                                description="encoder files the weights stage writes (names of mal.weights.sources)")
