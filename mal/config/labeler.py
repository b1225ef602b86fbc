"""Params section ``labeler``: the training schedule (``labeler.train``) and the labelers (``labeler.models``).

``LabelerModelParams`` is also what a checkpoint records as the model cfg (``mal.labeler.model.resolve_cfg``).
A model's own ``train`` mapping overrides ``labeler.train`` key by key (a pretrained encoder fine-tunes at its own
lr and epochs): :meth:`LabelerParams.train_for` resolves it, and loading checks every model's result.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, ValidationError, model_validator

from mal.config.base import Section

DEFAULT_MASK_THRESHOLD = 0.5


class AugParams(Section):
    """Training augmentation of the labeler's crops (paper values)."""

    max_margin: float = Field(1.2, ge=0, description="random context expansion: per-axis factor in [1, 1 + m/2]")
    flip_p: float = Field(0.5, ge=0, le=1, description="horizontal flip (student and teacher alike)")
    jitter_p: float = Field(0.5, ge=0, le=1, description="colour jitter probability")
    brightness: float = Field(0.4, ge=0)
    contrast: float = Field(0.4, ge=0)
    saturation: float = Field(0.2, ge=0)
    hue: float = Field(0.1, ge=0, le=0.5)
    gray_p: float = Field(0.2, ge=0, le=1, description="grayscale probability")
    blur_p: float = Field(0.5, ge=0, le=1, description="Gaussian blur probability")
    blur_sigma: list[float] = Field([0.1, 2.0], min_length=2, max_length=2, description="blur sigma range")


class LabelerTrainParams(Section):
    """The labeler's schedule and losses (paper values in the descriptions where the demo differs)."""

    epochs: int = Field(10, ge=1, description="paper: 10 (COCO)")
    batch_size: int = Field(32, ge=1, description="total over all processes; paper: 32")
    lr_per_sample: float = Field(1.5e-6, gt=0, description="peak lr = lr_per_sample * batch_size (paper: 4.8e-5 at 32)")
    betas: list[float] = Field([0.9, 0.9], min_length=2, max_length=2, description="AdamW betas")
    weight_decay: float = Field(5.0e-4, ge=0)
    warmup_epochs: float = Field(1.0, ge=0, description="linear warm-up, then cosine to min_lr_ratio * peak")
    min_lr_ratio: float = Field(0.2, ge=0, le=1)
    ema_momentum: float = Field(0.996, ge=0, le=1, description="teacher EMA")
    mil_weight: float = Field(4.0, ge=0)
    crf_weight: float = Field(0.5, ge=0)
    mil_warmup_steps: int = Field(1000, ge=0, description="loss ramp; paper: 1000")
    crf_warmup_steps: int = Field(4000, ge=0, description="loss ramp; paper: 4000")
    crf_iterations: int = Field(100, ge=1)
    crf_sigma: float = Field(0.1, gt=0)
    crf_clamp: list[float] = Field([0.1, 0.9], min_length=2, max_length=2)
    crf_normalize_affinity: bool = Field(False, description="paper: false (sum of weighted logits); true: their mean")
    val_threshold: float = Field(0.5, ge=0, lt=1, description="mask threshold of the per-epoch val mIoU")
    mask_threshold: float = Field(DEFAULT_MASK_THRESHOLD, ge=0, lt=1, description="labelling threshold recorded in "
                                  "the checkpoint (the default of the pseudo_label stage and `mal label`); paper 0.1")
    val_every: int = Field(1, ge=1, description="epochs between val mIoU evaluations (and the last epoch)")
    val_max_boxes: int = Field(0, ge=0, description="0 = every val box; else an evenly spaced subset")
    amp: bool = Field(True, description="mixed precision, only where CUDA is present")
    aug: AugParams = Field(default_factory=AugParams)


class LabelerModelParams(Section):
    """One labeler: encoder + decoder (what its checkpoint records), and its own schedule overrides."""

    encoder: str = Field("vit_tiny_patch16_224", description="any timm model name")
    pretrained: bool | str = Field(False, description="false | timm hub tag (needs network) | local "
                                   ".safetensors/.pth/.npz path")
    crop_size: int = Field(128, ge=16, description="paper: 512")
    mask_size: int | None = Field(None, ge=4, description="null: crop_size // 4 (paper: 128)")
    decoder_dim: int = Field(256, ge=1)
    bucket_rescale: bool = Field(True, description="COCO size-bucket rescale of the grid (x0.5 / x1 / x2)")
    drop_path_rate: float = Field(0.0, ge=0, lt=1)
    encoder_args: dict[str, Any] = Field({}, description="extra timm.create_model kwargs, e.g. {patch_size: 8}")
    norm_mean: list[float] | None = Field(None, min_length=3, max_length=3, description="input mean (RGB, 0-1); "
                                          "null: the encoder's pretrained config, else ImageNet's")
    norm_std: list[float] | None = Field(None, min_length=3, max_length=3, description="input std; as norm_mean")
    train: dict[str, Any] = Field({}, description="overrides of labeler.train for this labeler, key by key")

    def model_cfg(self) -> dict[str, Any]:
        """The model cfg a checkpoint stores (``mask_size`` resolved, no ``train``)."""
        cfg = self.model_dump(exclude={"train"})
        cfg["mask_size"] = int(cfg["mask_size"] or cfg["crop_size"] // 4)
        return cfg


class LabelerParams(Section):
    train: LabelerTrainParams = Field(default_factory=LabelerTrainParams)
    models: dict[str, LabelerModelParams] = Field({"vit_tiny": LabelerModelParams()}, min_length=1)

    def train_for(self, name: str) -> LabelerTrainParams:
        """``labeler.train`` with ``labeler.models.<name>.train`` laid over it."""
        return LabelerTrainParams.model_validate({**self.train.model_dump(), **self.models[name].train})

    @model_validator(mode="after")
    def _check_model_train(self) -> LabelerParams:
        for name in self.models:
            try:
                self.train_for(name)
            except ValidationError as e:  # "@<key path>: ..." -> the loader's line names labeler.models.<name>...
                err = e.errors()[0]
                key = ".".join(str(p) for p in err["loc"])
                what = (f"unknown key (known: {', '.join(sorted(LabelerTrainParams.model_fields))})"
                        if err["type"] == "extra_forbidden" else f"{err['msg']}, got {err.get('input')!r}")
                raise ValueError(f"@models.{name}.train.{key}: {what}") from None
        return self
