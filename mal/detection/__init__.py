"""Phase 3, detection: detectron2 Mask R-CNN / Cascade trained on (pseudo or human) masks, and their scoring.

``detector`` (configs, checkpoints), ``train`` (trainer, dvclive hook), ``evaluation`` (detectron2's evaluators)
and ``timm_backbone`` import detectron2; ``coco_eval`` (pycocotools helpers the paper table shares) does not.
"""
