"""Params section ``prefect``: how the Prefect flow runs the DVC stages (no stage depends on it)."""

from __future__ import annotations

from pydantic import Field

from mal.config.base import Section


class PrefectParams(Section):
    retries: int = Field(1, ge=0, description="retries of a failed stage task")
    retry_delay_seconds: float = Field(30, ge=0)
    gpu_tag: str = Field("mal-gpu", min_length=1, description="global concurrency limit held while a GPU stage runs")
    gpu_stages: list[str] = Field(["train_labeler*", "pseudo_label*", "train_detector*", "evaluate*"],
                                  description="stage name patterns that hold the GPU limit")
    gpus_per_worker: int = Field(1, ge=1, description="GPUs per flow run; a GPU stage holds that many slots")
