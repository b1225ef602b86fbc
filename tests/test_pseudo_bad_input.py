"""Bad input for pseudo-labelling: clear errors or accounted skips, never a silently lost box."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mal.common.masks import box_rle, decode_segmentation, rle_area
from mal.config.pseudo import LabelOptions, RunPseudoLabelParams
from mal.pseudo.label import SkipError, load_boxes
from mal.pseudo.shards import label_coco
from tests._pseudo_fixtures import ConstPredictor, ann, save_image, write_coco

OPTS = LabelOptions(threshold=0.5, batch_size=8)
QUIET = RunPseudoLabelParams(show_progress=False)


def _run(tmp_path: Path, images: list, anns: list, options: LabelOptions = OPTS, value: float = 1.0):
    path = write_coco(tmp_path, images, anns)
    ckpt = tmp_path / "dummy.pt"
    ckpt.write_bytes(b"x")  # never loaded: the predictor is injected
    out = tmp_path / "out.json"
    report = label_coco(path, ckpt, out, options, QUIET, predictor=ConstPredictor(value, mask_size=32))
    assert report["boxes_in"] == report["masks_out"] + report["skipped"] == len(anns)
    res = json.loads(out.read_text())
    return report, res, {a["id"]: a for a in res["annotations"]}


@pytest.mark.parametrize(
    "content,match",
    [
        ("", "is empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "top level is list"),
        ('{"images": []}', "field 'annotations'"),
        (
            '{"images": [{"id": 1, "file_name": "a.png", "height": 5}], "annotations": []}',
            "image id=1: missing field 'width'",
        ),
        (
            '{"images": [], "annotations": [{"id": 3, "image_id": 1}, {"id": 3, "image_id": 1}]}',
            "id=3: duplicate",
        ),
        ('{"images": [], "annotations": [{"id": 4, "image_id": "x"}]}', "id=4: field 'image_id'"),
        (
            '{"images": [{"id": 2, "file_name": "", "width": 5, "height": 5}], "annotations": []}',
            "image id=2: field 'file_name' is empty",
        ),
    ],
)
def test_structural_errors_name_file_record_and_field(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "boxes.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=match) as e:
        load_boxes(path)
    assert str(path) in str(e.value)


def test_missing_boxes_file_and_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="boxes file not found"):
        load_boxes(tmp_path / "nope.json")
    path = write_coco(tmp_path, [], [])
    with pytest.raises(ValueError, match="checkpoint not found"):
        label_coco(path, tmp_path / "none.pt", tmp_path / "o.json", OPTS, QUIET)


def test_box_geometry_cases_are_kept_and_flagged(tmp_path: Path) -> None:
    im = save_image(tmp_path, 1, size=(40, 30))
    anns = [
        ann(1, 1, [5, 5, 10, 10]),  # normal
        ann(2, 1, [12, 7, 0, 9]),  # zero width
        ann(3, 1, [30, 20, 25, 25]),  # partly outside: clipped
        ann(4, 1, [100, 100, 5, 5]),  # entirely outside
        ann(5, 1, [3, 3, 1.5, 8]),  # too small to label
        ann(6, 1, [-4, -4, 10, 10], iscrowd=1),  # crowd, partly outside
    ]
    report, res, out = _run(tmp_path, [im], anns)
    assert out[1]["mal"] == {"source": "labeler", "score": 1.0}
    assert out[2]["mal"]["reason"] == "zero_size" and out[2]["area"] == 0
    assert out[3]["mal"]["source"] == "labeler" and out[3]["mal"]["clipped_from"] == [30, 20, 25, 25]
    assert out[3]["bbox"] == [30.0, 20.0, 10.0, 10.0]
    m3 = decode_segmentation(out[3]["segmentation"], 30, 40)
    assert m3[20:, 30:].sum() == out[3]["area"] > 80
    assert out[4]["mal"]["reason"] == "outside_image" and out[4]["area"] == 0
    assert out[5]["mal"]["reason"] == "too_small"
    assert out[5]["segmentation"] == box_rle([3, 3, 1.5, 8], 30, 40) and out[5]["area"] == 16
    assert out[6]["iscrowd"] == 1 and out[6]["mal"]["source"] == "labeler"
    assert report["box_fallback_by_reason"] == {"outside_image": 1, "too_small": 1, "zero_size": 1}
    assert [out[i]["score"] for i in (2, 4, 5)] == [0.0] * 3 == [out[i]["mal"]["score"] for i in (2, 4, 5)]
    assert report["clipped_boxes"] == 3 and report["crowd_boxes"] == 1 and report["skipped"] == 0


def test_unknown_image_ids_invalid_bboxes_and_missing_images_are_skipped_with_reasons(tmp_path: Path) -> None:
    good = save_image(tmp_path, 1)
    gone = {"id": 2, "file_name": "imgs/gone.png", "width": 40, "height": 30}
    broken = {"id": 3, "file_name": "imgs/broken.png", "width": 40, "height": 30}
    (tmp_path / "imgs" / "broken.png").write_bytes(b"\x89PNG not really")
    wrong = save_image(tmp_path, 4, size=(40, 30))
    wrong["width"] = 64  # JSON disagrees with the file
    anns = [
        ann(1, 1, [2, 2, 8, 8]),
        ann(2, 99, [2, 2, 8, 8]),
        ann(3, 1, [float("nan"), 2, 8, 8]),
        ann(4, 1, [2, 2, 8]),
        ann(5, 1, [2, 2, -3, 8]),
        ann(6, 2, [2, 2, 8, 8]),
        ann(7, 2, [1, 1, 0, 0]),
        ann(8, 3, [2, 2, 8, 8]),
        ann(9, 4, [2, 2, 8, 8]),
    ]
    report, res, out = _run(tmp_path, [good, gone, broken, wrong], anns)
    assert list(out) == [1]
    assert report["skipped_by_reason"] == {
        "image_size_mismatch": 1,
        "invalid_bbox": 3,
        "missing_image": 2,
        "unknown_image_id": 1,
        "unreadable_image": 1,
    }
    skipped = {s["annotation_id"]: s for s in report["skipped_annotations"]}
    assert sorted(skipped) == [2, 3, 4, 5, 6, 7, 8, 9]
    assert "gone.png" in skipped[6]["detail"] and "not found" in skipped[6]["detail"]
    assert [im["id"] for im in res["images"]] == [1]  # unusable images leave the output
    assert {s["image_id"] for s in report["skipped_images"]} == {2, 3, 4}
    with pytest.raises(SkipError, match="annotation id=2 .*unknown_image_id"):
        _run(
            tmp_path,
            [good],
            [ann(1, 1, [2, 2, 8, 8]), ann(2, 99, [2, 2, 8, 8])],
            LabelOptions(threshold=0.5, allow_skips=False),
        )


@pytest.mark.parametrize("mode", ["L", "I;16", "RGBA", "CMYK", "P", "LA"])
def test_image_modes(tmp_path: Path, mode: str) -> None:
    arr = np.zeros((30, 40, 3), np.uint8)
    arr[8:20, 10:30] = 200
    im = save_image(tmp_path, 1, arr, mode=mode)
    report, _, out = _run(tmp_path, [im], [ann(1, 1, [8, 6, 24, 16])])
    assert out[1]["mal"] == {"source": "labeler", "score": 1.0} and out[1]["area"] > 200


def test_very_large_image_labels_only_the_box_region(tmp_path: Path) -> None:
    w, h = 4000, 3000
    im = save_image(tmp_path, 1, np.zeros((h, w, 3), np.uint8), mode="L", size=(w, h))
    report, _, out = _run(tmp_path, [im], [ann(1, 1, [3990, 2980, 10, 20]), ann(2, 1, [0, 0, 4000, 3000])])
    assert out[1]["segmentation"]["size"] == [h, w]
    m = decode_segmentation(out[1]["segmentation"], h, w)
    assert m[2980:, 3990:].sum() == out[1]["area"] == rle_area(out[1]["segmentation"]) >= 150
    assert out[2]["area"] > 0.9 * w * h


def test_zero_predictions_fall_back_to_box_masks(tmp_path: Path) -> None:
    im = save_image(tmp_path, 1)
    report, _, out = _run(tmp_path, [im], [ann(1, 1, [4, 4, 10, 10])], value=0.0)
    assert out[1]["mal"] == {"source": "box_fallback", "reason": "empty_prediction", "score": 0.0} and out[1]["area"] == 100
    assert report["box_fallback_by_reason"] == {"empty_prediction": 1}
