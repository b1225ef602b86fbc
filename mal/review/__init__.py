"""Review pages: self-contained HTML (inline CSS, images as data URIs, no scripts) for a person to check labels.

* :mod:`mal.review.labelled` -- one labelled COCO file: the least-confident masks first, each with its ids.
* :mod:`mal.review.repro` -- a whole ``dvc repro``: paper table, labeler curves, mIoU, confidence.
* :mod:`mal.review.cli` -- ``python -m mal review``.
"""
