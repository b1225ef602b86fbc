"""Pseudo-labelling with a (tiny, random) labeler: every box comes out, RLE + area + flags, options."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from mal.common.masks import box_rle, rle_area, rle_iou
from mal.config.pseudo import LabelOptions, RunPseudoLabelParams
from mal.pseudo.label import Predictor, label_images, load_boxes
from mal.pseudo.shards import label_coco
from tests._pseudo_fixtures import ConstPredictor, ann, save_image, tiny_checkpoint, write_coco

QUIET = {"batch_size": 4}
RUN = RunPseudoLabelParams(show_progress=False)


def test_label_coco_every_box_out_in_input_order(shapes_dir: Path, tmp_path: Path) -> None:
    boxes = shapes_dir / "train_boxes.json"
    coco = json.loads(boxes.read_text())
    coco["annotations"][1]["iscrowd"] = 1  # crowd boxes are labelled too and stay crowd
    src = tmp_path / "boxes.json"
    src.write_text(json.dumps(coco))
    out = tmp_path / "out.json"
    report = label_coco(
        src, tiny_checkpoint(), out, LabelOptions(threshold=0.5, **QUIET), RUN, image_root=shapes_dir
    )
    res = json.loads(out.read_text())
    assert [a["id"] for a in res["annotations"]] == [a["id"] for a in coco["annotations"]]
    assert res["images"] == coco["images"] and res["categories"] == coco["categories"]
    assert report["boxes_in"] == report["masks_out"] == len(coco["annotations"]) and report["skipped"] == 0
    assert report["labeler_masks"] + report["box_fallback"] == report["masks_out"]
    assert report["crowd_boxes"] == 1 and res["annotations"][1]["iscrowd"] == 1
    ims = {im["id"]: im for im in res["images"]}
    for a in res["annotations"]:
        seg = a["segmentation"]
        assert isinstance(seg["counts"], str) and seg["size"] == [
            ims[a["image_id"]]["height"],
            ims[a["image_id"]]["width"],
        ]
        assert a["area"] == rle_area(seg) > 0
        assert a["mal"]["source"] in ("labeler", "box_fallback")
        # masks never leave the prompt box
        box = box_rle(a["bbox"], *seg["size"])
        assert rle_iou(seg, box) * rle_area(box) == pytest.approx(rle_area(seg), rel=1e-6)


@pytest.mark.parametrize("which,flip", [("student", True), ("teacher", False), ("average", True)])
def test_which_and_flip_options_run(shapes_dir: Path, which: str, flip: bool) -> None:
    coco = load_boxes(shapes_dir / "train_boxes.json")
    pred = Predictor(tiny_checkpoint(), which=which, flip_tta=flip, device="cpu")
    res = label_images(coco, shapes_dir / "train_boxes.json", pred, LabelOptions(threshold=0.0, **QUIET), runtime=RUN)
    assert res["stats"]["masks_out"] == len(coco["annotations"])
    assert res["stats"]["source_labeler"] == len(coco["annotations"])  # threshold 0: never empty


def test_average_is_mean_of_student_and_teacher_and_flip_tta_is_flip_equivariant() -> None:
    crops = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    areas = np.array([100.0, 2000.0, 20000.0], np.float32)
    avg = Predictor(tiny_checkpoint(), "average")
    student, teacher = copy.copy(avg), copy.copy(avg)
    student.models, teacher.models = avg.models[:1], avg.models[1:]  # no second load
    ps, pt, pa = student(crops, areas), teacher(crops, areas), avg(crops, areas)
    assert ps.shape == (3, 8, 8) and not np.allclose(ps, pt)
    np.testing.assert_allclose(pa, (ps + pt) / 2, atol=1e-5)
    flip_tta = copy.copy(student)
    flip_tta.flip_tta = True
    pf = flip_tta(crops, areas)
    assert not np.allclose(pf, ps)
    np.testing.assert_allclose(flip_tta(crops[:, :, ::-1].copy(), areas), pf[:, :, ::-1], atol=1e-5)


def test_constant_predictions_give_box_masks_or_flagged_fallbacks(tmp_path: Path) -> None:
    im = save_image(tmp_path, 1, size=(50, 40))
    anns = [ann(1, 1, [5, 5, 10, 8]), ann(2, 1, [20.5, 10.5, 15, 20])]
    path = write_coco(tmp_path, [im], anns)
    coco = load_boxes(path)
    ones = ConstPredictor(1.0, mask_size=64)
    res = label_images(coco, path, ones, LabelOptions(threshold=0.5, **QUIET), runtime=RUN)
    for a in anns:
        got = res["annotations"][a["id"]]
        assert got["mal"] == {"source": "labeler", "score": 1.0} and got["score"] == 1.0  # every pixel decided
        assert rle_iou(got["segmentation"], box_rle(a["bbox"], 40, 50)) > 0.9
    zeros = ConstPredictor(0.0)
    res = label_images(coco, path, zeros, LabelOptions(threshold=0.5, **QUIET), runtime=RUN)
    for a in anns:
        got = res["annotations"][a["id"]]
        assert got["mal"] == {"source": "box_fallback", "reason": "empty_prediction", "score": 0.0}
        assert got["score"] == 0.0  # fallbacks rank lowest
        assert got["segmentation"] == box_rle(a["bbox"], 40, 50) and got["area"] == rle_area(
            got["segmentation"]
        )
    assert res["stats"]["fallback_empty_prediction"] == 2


def test_batches_fill_across_images(tmp_path: Path) -> None:
    ims = [save_image(tmp_path, i, size=(30, 30)) for i in (1, 2, 3)]
    anns = [ann(10 * i + k, i, [2 + 5 * k, 3, 4, 6]) for i in (1, 2, 3) for k in range(3)]
    path = write_coco(tmp_path, ims, anns)
    pred = ConstPredictor(1.0)
    label_images(load_boxes(path), path, pred, LabelOptions(threshold=0.5, batch_size=4), runtime=RUN)
    assert pred.calls == [4, 4, 1]


def test_dataloader_workers_give_identical_output(tmp_path: Path) -> None:
    ims = [save_image(tmp_path, i, size=(30, 30)) for i in (1, 2, 3, 4)]
    anns = [ann(10 * i + k, i, [2 + 5 * k, 3, 4, 6]) for i in (1, 2, 3, 4) for k in range(2)]
    path = write_coco(tmp_path, ims, anns)
    coco = load_boxes(path)
    res = [
        label_images(
            coco,
            path,
            ConstPredictor(0.7, mask_size=16),
            LabelOptions(threshold=0.5, batch_size=3),
            runtime=RunPseudoLabelParams(num_workers=n, show_progress=False),
        )
        for n in (0, 2)
    ]
    assert res[0]["annotations"] == res[1]["annotations"] and len(res[0]["annotations"]) == 8


def test_paste_threads_leave_the_output_byte_identical(shapes_dir: Path, tmp_path: Path) -> None:
    src = shapes_dir / "train_boxes.json"
    outs = []
    for threads in (1, 3):
        out = tmp_path / f"out{threads}.json"
        opts = LabelOptions(threshold=0.5, batch_size=2)  # many batches in flight
        label_coco(src, tiny_checkpoint(), out, opts, RunPseudoLabelParams(paste_threads=threads, show_progress=False),
                   image_root=shapes_dir)
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
