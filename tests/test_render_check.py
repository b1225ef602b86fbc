"""mal.common.render_check: the RLE string parser agrees with pycocotools, and corrupt strings are caught
(pycocotools would decode them to a mask of arbitrary memory)."""

from __future__ import annotations

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from mal.common.render_check import rle_string_counts, segmentation_problem


def test_counts_match_pycocotools() -> None:
    rng = np.random.default_rng(0)
    for k in range(200):
        h, w = (int(v) for v in rng.integers(1, 200, 2))
        m = (rng.random((h, w)) < rng.random()).astype(np.uint8)
        m[:] = 0 if k % 7 == 0 else 1 if k % 11 == 0 else m  # all-empty and all-full masks too
        counts = rle_string_counts(mask_utils.encode(np.asfortranarray(m))["counts"].decode("ascii"))
        flat = np.repeat(np.arange(len(counts)) % 2, counts).astype(np.uint8)  # column-major, background first
        assert flat.size == h * w and (flat.reshape(w, h).T == m).all()


@pytest.mark.parametrize(("counts", "why"), [
    ("zz", "character 'z' at 0 is not an RLE character"),
    ("abc", "string ends inside a run length"),
    ("0", "RLE counts cover 0 pixels, the image has 600"),
    ("Xj0", "RLE counts cover"),
    ("O", "run 0 is negative (-1)"),
])  # fmt: skip
def test_corrupt_strings_are_problems(counts: str, why: str) -> None:
    kind, message = segmentation_problem({"size": [20, 30], "counts": counts}, 20, 30)
    assert kind == "rle" and why in message


def test_segmentation_forms() -> None:
    good = mask_utils.encode(np.asfortranarray(np.ones((20, 30), np.uint8)))
    assert segmentation_problem({"size": [20, 30], "counts": good["counts"].decode()}, 20, 30) is None
    assert segmentation_problem({"size": [20, 30], "counts": [100, 500]}, 20, 30) is None
    assert segmentation_problem([[0, 0, 5, 0, 5, 5]], 20, 30) is None
    assert segmentation_problem([], 20, 30) is None  # coco-poly's empty mask
    assert segmentation_problem(None, 20, 30) == ("missing segmentation", "missing field 'segmentation'")
    assert segmentation_problem("x", 20, 30)[0] == "segmentation type"
    assert segmentation_problem([[0, 0, 5, float("nan"), 5, 5]], 20, 30)[0] == "polygon"
    assert segmentation_problem({"size": [30, 20], "counts": [600]}, 20, 30)[0] == "rle size"
    assert segmentation_problem({"counts": [600]}, 20, 30) == ("rle", "field 'segmentation': RLE has no 'size'")
