"""Phase 3, detection: Detectron2 Mask R-CNN / Cascade (the only detectron2 import) and COCO evaluation."""
