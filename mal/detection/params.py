"""The ``detector:`` and ``evaluate:`` params sections: their keys, checked before a stage starts.

A key the stages do not read is an error, not a silent no-op: a profile (profiles/paper.yaml) is merged over
params.yaml, so a key renamed in one of them would otherwise leave the other's value in force unnoticed
(e.g. a misspelt ``max_iter`` trains the model-zoo 270k iterations). No detectron2 import here.
"""

from __future__ import annotations

from typing import Any

from mal.common.params import check_keys

DETECTOR_KEYS = ("gt_json", "pseudo_json", "out_dir", "work_dir", "live_dir", "num_threads", "num_workers",
                 "detections_per_image", "amp", "train", "demo_arch", "pretrained", "opts", "models", "num_gpus")
# detector.train, and what detector.models.<name> may override (plus ``opts``)
SCHEDULE_KEYS = ("max_iter", "ims_per_batch", "base_lr", "weight_decay", "lr_scheduler", "warmup_iters", "steps",
                 "checkpoint_period", "optimizer", "reference_world_size")
DEMO_ARCH_KEYS = ("depth", "freeze_at", "input_size", "anchor_min", "fpn_channels", "box_fc_dim", "mask_conv_dim",
                  "rois_per_image", "rpn_topk_train")
EVALUATE_KEYS = ("val_json", "metrics_dir", "predictions_dir", "max_dets", "num_threads", "evaluator")
# detector.pretrained.<backbone>: a path or URL; null = the zoo's default (a download); NO_PRETRAINED = none
NO_PRETRAINED = "none"


def check_detector_params(dparams: dict[str, Any], backbones: set[str] | None = None) -> None:
    """Raise ``ValueError`` naming ``detector.<section>`` for any unknown key of ``params['detector']``.

    ``backbones``: the known keys of ``detector.pretrained`` (those of the paper detectors).
    """
    check_keys(dparams, DETECTOR_KEYS, "params: detector")
    check_keys(dparams.get("train"), SCHEDULE_KEYS, "params: detector.train")
    check_keys(dparams.get("demo_arch"), DEMO_ARCH_KEYS, "params: detector.demo_arch")
    if backbones is not None:
        check_keys(dparams.get("pretrained"), backbones, "params: detector.pretrained")
    for name, over in (dparams.get("models") or {}).items():
        check_keys(over, (*SCHEDULE_KEYS, "opts"), f"params: detector.models.{name}")


def check_evaluate_params(eparams: dict[str, Any]) -> None:
    """Raise ``ValueError`` for an unknown key of ``params['evaluate']`` or an unknown evaluator."""
    check_keys(eparams, EVALUATE_KEYS, "params: evaluate")
    evaluator = eparams.get("evaluator", "auto")
    if evaluator not in ("auto", "coco", "lvis"):
        raise ValueError(f"params: evaluate.evaluator must be auto, coco or lvis, got {evaluator!r}")
