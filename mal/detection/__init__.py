"""Phase 3, detection: Detectron2 Mask R-CNN / Cascade and COCO evaluation.

``detector`` and ``timm_backbone`` are the only modules that import detectron2.
"""
