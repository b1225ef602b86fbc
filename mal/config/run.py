"""The ``run`` section: where and how fast each stage runs — threads, processes, devices.

No stage lists it as a DVC param, so changing it re-runs nothing: results do not depend on it (the tests that
compare 1 and N processes or threads pin that). Each stage reads its own sub-section.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from mal.config.base import Section

Device = Literal["auto", "cpu", "cuda"]
NumGpus = Literal["auto"] | int


class RunTrainLabelerParams(Section):
    num_gpus: NumGpus = Field(1, description="training processes the stage starts (data parallel): auto = every "
                              "visible GPU (1 without CUDA); N > visible GPUs or device cpu -> N CPU processes (gloo)")
    device: Device = Field("auto", description="cuda: an error when there are fewer GPUs than processes")
    num_threads: int = Field(0, ge=0, description="torch CPU threads per process; 0 = torch default")
    num_workers: int = Field(0, ge=0, description="data-loader processes per training process (a sample is a pure "
                             "function of seed, epoch, index: results do not depend on it); paper: 8")
    save_state_every_steps: int = Field(0, ge=0, description="resumable state every N steps as well (mid-epoch "
                                        "resume); 0 = after each epoch only. paper: 500")
    image_cache: int = Field(256, ge=0, description="decoded images kept per loader process (paper: 0)")


class RunMaskQualityParams(Section):
    num_workers: int = Field(0, ge=0, description="GrabCut processes (0: in the stage's process)")
