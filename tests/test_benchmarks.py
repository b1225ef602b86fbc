"""The shapes analysis scripts run end to end on a tiny set, and their outputs are what they claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mal.labeler.encoder import Encoder
from tests.conftest import REPO

TINY = [
    "--num-train", "4", "--num-val", "2",
    "--set", "labeler.train.epochs=1", "--set", "labeler.train.batch_size=4",
    "--set", "labeler.models.vit_tiny.crop_size=64", "--set", "labeler.train.crf_iterations=5",
]


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def shapes_run(tmp_path_factory) -> tuple[Path, str]:
    run = tmp_path_factory.mktemp("shapes") / "run"
    return run, _run(str(REPO / "benchmarks/shapes_labeler.py"), "--out", str(run), *TINY)


@pytest.mark.slow
def test_shapes_labeler_reports_per_class_against_box(shapes_run):
    run, out = shapes_run
    params = yaml.safe_load((run / "params.yaml").read_text())
    assert params["data"]["dataset"] == "shapes" and (run / "data" / "train_boxes.json").is_file()
    assert params["labeler"]["models"]["vit_tiny"]["crop_size"] == 64  # a --set took effect
    assert (run / "models/vit_tiny/checkpoint.pt").is_file()
    report = json.loads((run / "report.json").read_text())
    assert 0.0 <= report["miou"] <= 1.0 and 0.0 < report["box_miou"] < 1.0
    # every val box is scored once, split over the classes
    prep = json.loads((run / "prepare.json").read_text())
    assert sum(n for _, _, n in report["per_class"].values()) == prep["val"]["boxes"]
    assert f"labeler {report['miou']:.3f}, box {report['box_miou']:.3f}" in out


def test_shapes_labeler_rejects_a_bad_set(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks/shapes_labeler.py"), "--out", str(tmp_path), "--set", "seed"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0 and "expected KEY=VALUE" in proc.stderr


@pytest.mark.slow
def test_mae_weights_load_into_the_labeler_encoder_and_probe(shapes_run, tmp_path):
    run, _ = shapes_run
    weights = tmp_path / "mae.pth"
    out = _run(
        str(REPO / "benchmarks/mae_pretrain.py"), "--boxes", str(run / "data/train_boxes.json"),
        "--out", str(weights), "--steps", "2", "--batch-size", "4", "--crop-size", "64",
    )
    assert "2 steps x 4 views" in out
    state = torch.load(weights, map_location="cpu", weights_only=True)
    enc = Encoder("vit_tiny_patch16_224", 64, str(weights))  # the labeler's `pretrained: <path>` route
    assert torch.equal(enc.model.state_dict()["blocks.0.attn.qkv.weight"], state["blocks.0.attn.qkv.weight"])
    probe = _run(
        str(REPO / "benchmarks/token_probe.py"), "--gt", str(run / "data/val_gt.json"),
        "--crop-size", "64", "--weights", str(weights), str(run / "models/vit_tiny/checkpoint.pt"),
    )
    lines = [ln for ln in probe.splitlines() if "AUC" in ln]
    assert [ln.split()[0] for ln in lines] == ["raw", "random", "mae.pth", "checkpoint.pt"]
    assert all(0.0 <= float(ln.split()[-1]) <= 1.0 for ln in lines)  # NaN fails too


def test_grid_bound_is_exact_for_a_square(tmp_path):
    """A 40 px square in its 1.3x crop: one cell says 'object fraction (1/1.3)^2 > 0.5' -> the whole crop,
    IoU = (1/1.3)^2; a fine grid recovers the square."""
    import cv2
    from pycocotools import mask as mask_utils

    sys.path.insert(0, str(REPO / "benchmarks"))
    from grid_bound import grid_bound

    m = np.zeros((100, 100), np.uint8)
    m[30:70, 30:70] = 1
    rle = mask_utils.encode(np.asfortranarray(m))
    rle["counts"] = rle["counts"].decode("ascii")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((100, 100, 3), np.uint8))
    coco = {
        "images": [{"id": 1, "file_name": "a.png", "width": 100, "height": 100}],
        "categories": [{"id": 1, "name": "square"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [30, 30, 40, 40],
                         "segmentation": rle, "area": 1600, "iscrowd": 0}],
    }
    (tmp_path / "gt.json").write_text(json.dumps(coco))
    res = grid_bound(str(tmp_path / "gt.json"), [1, 32], crop_size=130)
    assert res[1]["miou"] == pytest.approx((1 / 1.3) ** 2, abs=0.01) and res[1]["square"] == res[1]["miou"]
    assert res[32]["miou"] > 0.97


@pytest.mark.slow
def test_show_crops_draws_one_row_per_box(shapes_run, tmp_path):
    import cv2

    run, _ = shapes_run
    out = tmp_path / "sheet.png"
    printed = _run(
        str(REPO / "benchmarks/show_crops.py"), "--checkpoint", str(run / "models/vit_tiny/checkpoint.pt"),
        "--gt", str(run / "data/val_gt.json"), "--out", str(out), "--num", "2",
    )
    sheet = cv2.imread(str(out))
    assert sheet.shape == (2 * 64, 4 * 64, 3) and f"{out}: 128 x 256 px" in printed  # crop size 64, 4 columns
    gt_column = sheet[:, 64:128]
    assert set(np.unique(gt_column)) <= {0, 255} and gt_column.max() == 255  # the binary GT mask is drawn


def test_derived_params_switch_the_dataset_and_keep_outputs_out_of_the_repo(tmp_path):
    sys.path.insert(0, str(REPO / "benchmarks"))
    from shapes_labeler import derive_params

    from mal.config import load_params

    base = load_params(REPO / "params.yaml").model_dump()
    nuclei = derive_params(base, 7, 3, ["labeler.train.crf_weight=0.0"], dataset="nuclei")
    assert nuclei["data"]["dataset"] == "nuclei" and nuclei["data"]["shapes"] == base["data"]["shapes"]
    assert nuclei["labeler"]["train"]["crf_weight"] == 0.0 and base["labeler"]["train"]["crf_weight"] == 0.5
    shapes = derive_params(base, 7, 3, [])
    assert shapes["data"]["dataset"] == "shapes" and shapes["data"]["shapes"]["num_train"] == 7


@pytest.mark.slow
def test_crf_oracle_from_a_box_and_from_a_checkpoint(shapes_run):
    run, _ = shapes_run
    gt = str(run / "data/val_gt.json")
    base = [str(REPO / "benchmarks/crf_oracle.py"), "--gt", gt, "--crop-size", "64", "--sigmas", "0.3"]
    from_box = _run(*base, "--start", "0.9", "--normalize-affinity")
    assert "CRF-from-box IoU" in from_box
    from_net = _run(*base, "--checkpoint", str(run / "models/vit_tiny/checkpoint.pt"), "--clamp", "0.1", "0.7")
    assert "labeler IoU" in from_net and "CRF-target IoU" in from_net
    ious = [float(ln.split("IoU ")[1].split()[0]) for ln in (from_box + from_net).splitlines() if "IoU " in ln]
    assert len(ious) == 5 and all(0.0 <= v <= 1.0 for v in ious)  # box line, sigma line; box, labeler, sigma
    ckpt = str(run / "models/vit_tiny/checkpoint.pt")
    proc = subprocess.run(  # a checkpoint of another crop size is refused, naming it
        [sys.executable, base[0], "--gt", gt, "--crop-size", "128", "--sigmas", "0.3", "--checkpoint", ckpt],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0 and f"{ckpt}: crop size 64, not --crop-size 128" in proc.stderr
