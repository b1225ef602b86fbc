"""Shared primitives: COCO I/O and validation, images, masks/RLE, atomic files, mIoU, params, paths."""
