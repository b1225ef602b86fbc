"""The top-level params model: one field per params.yaml section."""

from __future__ import annotations

from pydantic import Field

from mal.config.base import Section
from mal.config.data import DataParams, WeightsParams
from mal.config.detector import DetectorParams, EvaluateParams, RunDetectorParams, RunEvaluateParams
from mal.config.labeler import LabelerParams
from mal.config.prefect import PrefectParams
from mal.config.pseudo import PseudoLabelParams, RunPseudoLabelParams
from mal.config.quality import MaskQualityParams
from mal.config.run import RunMaskQualityParams, RunTrainLabelerParams
from mal.config.table import TableParams


class RunParams(Section):
    """Where and how fast each stage runs (no DVC param of any stage: changing it re-runs nothing)."""

    train_labeler: RunTrainLabelerParams = Field(default_factory=RunTrainLabelerParams)
    pseudo_label: RunPseudoLabelParams = Field(default_factory=RunPseudoLabelParams)
    mask_quality: RunMaskQualityParams = Field(default_factory=RunMaskQualityParams)
    train_detector: RunDetectorParams = Field(default_factory=RunDetectorParams)
    evaluate: RunEvaluateParams = Field(default_factory=RunEvaluateParams)


class Params(Section):
    seed: int = Field(0, ge=0, description="seed of the labelers' training (detector seeds: table.seeds)")
    data: DataParams = Field(default_factory=DataParams)
    weights: WeightsParams = Field(default_factory=WeightsParams)
    table: TableParams = Field(default_factory=TableParams)
    labeler: LabelerParams = Field(default_factory=LabelerParams)
    pseudo_label: PseudoLabelParams = Field(default_factory=PseudoLabelParams)
    mask_quality: MaskQualityParams = Field(default_factory=MaskQualityParams)
    detector: DetectorParams = Field(default_factory=DetectorParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    prefect: PrefectParams = Field(default_factory=PrefectParams)
    run: RunParams = Field(default_factory=RunParams)
