"""Malformed COCO input: each case is a clear error naming file, record and field, or a counted fix."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mal.common.coco_io import CocoFormatError, load_coco, validate_coco
from mal.common.images import read_image


@pytest.fixture
def coco_file(tmp_path: Path) -> tuple[Path, dict]:
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(tmp_path / "a.png")
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 30, "height": 20}],
        "categories": [{"id": 7, "name": "thing"}],
        "annotations": [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 8], "area": 80, "iscrowd": 0,
             "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]]},
        ],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(coco))
    return path, coco


def _write(path: Path, coco: dict) -> Path:
    path.write_text(json.dumps(coco))
    return path


def _mutated(coco_file, fn) -> Path:
    path, coco = coco_file
    coco = copy.deepcopy(coco)
    fn(coco)
    return _write(path, coco)


def test_valid_file_loads_without_warnings(coco_file):
    coco, report = load_coco(coco_file[0])
    assert len(coco["annotations"]) == 1 and not report.warnings


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda c: c.pop("annotations"), "missing top-level field 'annotations'"),
        (lambda c: c.update(images={}), "'images' is dict, expected a list"),
        (lambda c: c["images"][0].pop("width"), "image id=1: missing field 'width'"),
        (lambda c: c["images"][0].update(height="20"), "image id=1: field 'height' is str"),
        (lambda c: c["annotations"][0].update(bbox="1,2,3,4"), "annotation id=10: field 'bbox' is str"),
        (lambda c: c["annotations"][0].update(bbox=[1, 2, 3]), "annotation id=10: field 'bbox' must be 4 numbers"),
        (lambda c: c["annotations"][0].update(bbox=[1, 2, float("nan"), 3]),
         "annotation id=10: field 'bbox' has non-finite"),
        (lambda c: c["annotations"][0].update(image_id=99),
         "annotation id=10: field 'image_id' = 99 is not an image id"),
        (lambda c: c["annotations"][0].update(category_id=3), "annotation id=10: field 'category_id' = 3"),
        (lambda c: c["annotations"].append(dict(c["annotations"][0])), "annotation id=10: duplicate id"),
        (lambda c: c["images"].append(dict(c["images"][0])), "image id=1: duplicate id"),
        (lambda c: c["categories"].append({"id": 7, "name": "x"}), "category id=7: duplicate id"),
        (lambda c: c["annotations"][0].update(segmentation=[[1, 2, 3]]), "annotation id=10: field 'segmentation'"),
        (lambda c: c["annotations"][0].update(segmentation={"size": [5, 5], "counts": "abc"}),
         "annotation id=10: field 'segmentation': does not decode (RLE size"),
        (lambda c: c["annotations"][0].update(iscrowd=5), "annotation id=10: field 'iscrowd' must be 0 or 1"),
        (lambda c: c["images"][0].update(file_name="missing.png"), "image id=1: field 'file_name': file"),
        (lambda c: c["images"][0].update(width=0), "image id=1: field 'width'/'height' must be positive"),
        (lambda c: c["images"][0].update(file_name=""), "image id=1: field 'file_name' is empty"),
        (lambda c: c["annotations"][0].update(id=True), "field 'id' is bool"),
    ],
)
def test_fatal_errors_name_file_record_and_field(coco_file, mutate, expected):
    path = _mutated(coco_file, mutate)
    with pytest.raises(CocoFormatError) as err:
        load_coco(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_not_json_and_missing_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(CocoFormatError, match="bad.json: not valid JSON"):
        load_coco(bad)
    with pytest.raises(CocoFormatError, match="nope.json: COCO file not found"):
        load_coco(tmp_path / "nope.json")
    with pytest.raises(CocoFormatError, match="top level is list"):
        validate_coco([], "x.json", check_images="none")


def test_unreadable_image_is_an_error_when_decoding(coco_file):
    path, _ = coco_file
    (path.parent / "a.png").write_bytes(b"not a png")
    load_coco(path, check_images="exists")  # existence only: fine
    with pytest.raises(CocoFormatError, match=r"image id=1: field 'file_name': .*does not decode"):
        load_coco(path, check_images="decode")


def test_boxes_outside_image_are_clipped_and_counted(coco_file):
    def mutate(c):
        a = c["annotations"][0]
        c["annotations"] += [
            dict(a, id=11, bbox=[25, 15, 10, 10]),  # sticks out right and bottom -> clipped to 5x5
            dict(a, id=12, bbox=[-5, -5, 3, 3]),  # entirely outside -> no area left, flagged
            dict(a, id=13, bbox=[4, 4, 0, 6]),  # zero width -> flagged, kept
        ]

    coco, report = load_coco(_mutated(coco_file, mutate))
    by_id = {a["id"]: a for a in coco["annotations"]}
    assert len(coco["annotations"]) == 4  # nothing dropped
    assert by_id[11]["bbox"] == [25.0, 15.0, 5.0, 5.0]
    assert by_id[12]["mal_invalid_box"] == "box_outside_image"
    assert by_id[13]["mal_invalid_box"] == "box_zero_size"
    assert report.warnings == {"box_clipped": 2, "box_outside_image": 1, "box_zero_size": 1}


def test_defaults_are_counted(coco_file):
    def mutate(c):
        c["annotations"][0].pop("iscrowd")
        c["annotations"][0].pop("area")

    coco, report = load_coco(_mutated(coco_file, mutate))
    assert coco["annotations"][0]["iscrowd"] == 0 and coco["annotations"][0]["area"] == 80.0
    assert report.warnings == {"iscrowd_defaulted": 1, "area_defaulted": 1}


def test_require_masks(coco_file):
    path = _mutated(coco_file, lambda c: c["annotations"][0].pop("segmentation"))
    load_coco(path)
    with pytest.raises(CocoFormatError, match="annotation id=10: missing field 'segmentation'"):
        load_coco(path, require_masks=True)


@pytest.mark.parametrize("mode, shape", [("L", (8, 9)), ("RGBA", (8, 9, 4)), ("CMYK", (8, 9, 4)), ("I;16", (8, 9))])
def test_read_image_converts_to_rgb_uint8(tmp_path, mode, shape):
    rng = np.random.default_rng(0)
    dtype = np.uint16 if mode == "I;16" else np.uint8
    arr = rng.integers(0, 4000 if mode == "I;16" else 255, shape).astype(dtype)
    path = tmp_path / ("x.tif" if mode == "CMYK" else "x.png")
    Image.fromarray(arr, mode=mode).save(path)
    out = read_image(path)
    assert out.shape == (8, 9, 3) and out.dtype == np.uint8
    if mode == "I;16":  # 16-bit is min/max scaled, not truncated
        assert out.max() == 255 and out.min() == 0
