"""The ``pseudo_label`` params section (what the masks are) and ``run.pseudo_label`` (where and how fast).

:class:`PseudoLabelParams` is the one definition of the labelling options: the stage validates params.yaml
with it, the ``mal label`` CLI and :class:`mal.Labeler` take their defaults from it, and the engine
(:mod:`mal.pseudo.engine`) receives it as ``LabelOptions``. :class:`RunPseudoLabelParams` holds the knobs
that cannot change an output (devices, threads, workers, shards): no stage lists it as a DVC param, so
changing one re-runs nothing. No torch here: a params typo fails before torch loads.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mal.config.base import Section

Which = Literal["student", "teacher", "average"]


class PseudoLabelParams(Section):
    """params.yaml ``pseudo_label``: every option that changes a pseudo-mask."""

    threshold: float | None = Field(
        None, ge=0.0, lt=1.0,
        description="on the pasted probability; None = the checkpoint's (labeler.train.mask_threshold)")
    expand: float = Field(1.3, ge=1.0, description="fixed symmetric context expansion of each box (paper)")
    which: Which = Field("student", description="weights that predict: student | teacher | average of both maps")
    flip_tta: bool = Field(False, description="average with the horizontally flipped crop's prediction")
    min_box_side: float = Field(2.0, ge=0.0, description="boxes with w or h (clipped, px) below this get the box mask")
    allow_skips: bool = Field(
        True, description="False: a missing image / unknown image id / invalid bbox is an error, not a skip")
    batch_size: int = Field(32, ge=1, description="box crops per labeler forward pass")

    def identity(self) -> dict[str, Any]:
        """The options that change the output, as the metrics and the shard input hash record them."""
        return self.model_dump(exclude={"batch_size"})


LabelOptions = PseudoLabelParams  # the engine's name for the same model


class RunPseudoLabelParams(Section):
    """params.yaml ``run.pseudo_label``: where and how fast labelling runs; outputs do not depend on it."""

    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$",
                        description="auto | cpu | cuda | cuda:N (auto/cuda with several GPUs: shard i on GPU i mod n)")
    num_threads: int = Field(0, ge=0, description="torch CPU threads; 0 = torch's default")
    num_workers: int = Field(0, ge=0, description="DataLoader processes reading + cropping images")
    paste_threads: int = Field(1, ge=1, description="threads pasting + RLE-encoding beside the forward")
    num_shards: int = Field(1, ge=1, description="split the images into this many shards (by image id)")
    shard_processes: int = Field(
        0, ge=0, description="shards labelled at once, one process each; 0 = one per GPU (plain cuda, >1 GPU)")
    show_progress: bool = Field(True, description="a progress bar on stderr")
