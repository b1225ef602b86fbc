"""Params sections ``detector`` and ``evaluate`` (mal/detection), and their ``run`` parts.

The detectors are detectron2 model-zoo configs; what params change in them are **detectron2 config keys
themselves**, nested as in detectron2's yaml files (``opts: {SOLVER: {MAX_ITER: 100}}``), laid over the zoo yaml
(and ``demo_arch`` for the ``*_demo`` detectors): ``detector.opts`` for every detector, then
``detector.models.<name>`` for one. ``null`` keeps the model's own value (the zoo's), so a profile can give a key
back to the zoo. Whether a key exists in detectron2's config, and the value's type, is checked when the config
is built (:func:`mal.detection.detector.check_opts`, before training), as it needs detectron2.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mal.config.base import Section

NumGpus = Literal["auto"] | int
NO_PRETRAINED = "none"  # detector.pretrained.<backbone>: random init (smoke tests: no file, no download)


def flatten_opts(opts: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{SOLVER: {MAX_ITER: 100}}`` -> ``{"SOLVER.MAX_ITER": 100}`` (detectron2's dotted keys; leaves as given)."""
    flat: dict[str, Any] = {}
    for key, value in opts.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_opts(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


class DemoArchParams(Section):
    """The ``*_demo`` detectors: small input, narrow heads, GroupNorm in the FPN (docs/detector.md)."""

    depth: Literal[18, 34, 50, 101] = Field(18, description="*_R18_demo: ResNet depth (+ GroupNorm, from scratch)")
    freeze_at: int = Field(2, ge=0, le=5, description="*_MNv2_demo: frozen stem + stages (detectron2's FREEZE_AT)")
    input_size: int = Field(256, ge=32, description="train and test image side (px)")
    anchor_min: float = Field(12.0, gt=0, description="anchor size on P2; doubled on each level up to P6")
    fpn_channels: int = Field(128, ge=32, description="FPN output channels (GroupNorm 32 groups)")
    box_fc_dim: int = Field(512, ge=1, description="box head FC width")
    mask_conv_dim: int = Field(128, ge=1, description="mask head conv width")
    rois_per_image: int = Field(64, ge=1, description="sampled RoIs per training image")
    rpn_topk_train: list[int] = Field([600, 300], min_length=2, max_length=2,
                                      description="RPN proposals before / after NMS in training (zoo: 2000 / 1000)")


class PretrainedParams(Section):
    """ImageNet backbone of each detector family: a local file, a URL, null (the zoo's detectron2:// URL, a
    download) or ``none`` (random init, for smoke tests)."""

    MNv2: str | None = Field(None, description="*_MNv2_demo: timm MobileNetV2 weights file (the weights stage's)")
    R50: str | None = Field(None, description="null: detectron2://ImageNetPretrained/MSRA/R-50.pkl")
    R101: str | None = Field(None, description="null: detectron2://ImageNetPretrained/MSRA/R-101.pkl")
    X101: str | None = Field(None, description="null: detectron2://ImageNetPretrained/FAIR/X-101-32x8d.pkl")


class DetectorParams(Section):
    """What a trained detector is: its zoo config, detectron2 keys over it, backbone weights, data loading."""

    num_workers: int = Field(0, ge=0, description="data-loader processes (detectron2 seeds each worker by id, so "
                             "the data order may depend on it: a DVC param)")
    amp: bool = Field(True, description="mixed precision where CUDA is present (ignored on CPU)")
    demo_arch: DemoArchParams = Field(default_factory=DemoArchParams)
    pretrained: PretrainedParams = Field(default_factory=PretrainedParams)
    opts: dict[str, Any] = Field({}, description="detectron2 config keys for every detector, nested as in its yaml "
                                 "({SOLVER: {MAX_ITER: 100}}); null keeps the zoo's value. {}: the zoo 3x schedule")
    models: dict[str, dict[str, Any]] = Field(
        {"mask_rcnn_R50_FPN_3x": {}}, min_length=1,
        description="detectors that may be trained (keys of mal.detection.detector.DETECTORS): their own "
                    "detectron2 keys, laid over opts")

    def opts_for(self, name: str) -> dict[str, Any]:
        """The dotted detectron2 keys of detector ``name``: ``opts`` then ``models.<name>`` (nulls kept: the
        config builder skips them)."""
        return {**flatten_opts(self.opts), **flatten_opts(self.models.get(name) or {})}


class EvaluateParams(Section):
    """How a trained detector is scored on the val set (detectron2's COCOEvaluator / LVISEvaluator)."""

    max_dets: int = Field(100, ge=1, description="detections per image scored (COCO's 100; LVIS's official 300, "
                          "with TEST.DETECTIONS_PER_IMAGE)")
    evaluator: Literal["auto", "coco", "lvis"] = Field("auto", description="auto: LVIS when the val JSON is "
                                                       "LVIS-style (category frequency / neg_category_ids)")


class RunDetectorParams(Section):
    """Where train_detector runs (not a DVC param: the results do not depend on it)."""

    num_gpus: NumGpus = Field("auto", description="auto = every GPU torch sees (CPU with a WARNING when NVIDIA "
                              "devices are present but unusable); N = N GPUs, one process each (an error if "
                              "fewer); 0 = CPU")
    num_threads: int = Field(0, ge=0, description="torch CPU threads; 0 = torch default")


class RunEvaluateParams(Section):
    """Where evaluate runs (not a DVC param)."""

    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when torch can use it")
    num_threads: int = Field(0, ge=0, description="torch CPU threads; 0 = torch default")
