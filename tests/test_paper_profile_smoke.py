"""profiles/paper.yaml through the real stage code on a 4-image COCO-format set, on CPU.

The paper profile is merged over params.yaml as `python -m mal profile paper` does; only what sets the run
time is overridden (epochs / iterations, batch, workers, val boxes, detector input size) and the weight
files: the labeler reads a random-weight file in MAE's released key layout at the profile's own path
(weights/mae_pretrain_vit_base.pth), the detectors get `detector.pretrained: none` (no download). The
architectures (ViT-B/16 at 512 px, the four model-zoo detectors) are the paper's. The heavy part runs once per
module; each stage's wall time is printed (pytest -s) and kept in the fixture.

    PYTHONPATH=. .venv/bin/python -m pytest -s tests/test_paper_profile_smoke.py
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from pycocotools import mask as mask_utils

from mal.common.profiles import apply_profile
from mal.config.load import merge
from tests.conftest import REPO, load_stage

LABELER = "vit_mae_base"
DETECTORS = ["mask_rcnn_R50_FPN_3x", "mask_rcnn_R101_FPN_3x", "mask_rcnn_X101_FPN_3x", "cascade_mask_rcnn_R50_FPN_3x"]
SIZE = 128  # image side (px)
# (image id, category, box x, y, w, h, mask as "polygon" | "rle"); boxes of 64 px are above the paper's
# min_train_box_area 2048 (the labeler trains on them), 24 px ones are only pseudo-labelled / evaluated
OBJECTS = {
    "train": [(1, 1, 8, 10, 64, 64, "polygon"), (1, 2, 90, 90, 24, 24, "rle"), (2, 2, 20, 30, 24, 24, "polygon")],
    "val": [(3, 1, 30, 20, 64, 64, "polygon"), (3, 2, 4, 96, 24, 24, "rle"), (4, 1, 40, 40, 64, 64, "rle")],
}
# What sets the run time, nothing else (each key must exist in the merged params: see _set)
SMALL = {
    "labeler.train.epochs": 1, "labeler.train.batch_size": 1, "run.train_labeler.num_workers": 0,
    "labeler.train.val_max_boxes": 1, "run.pseudo_label.num_workers": 0,
    "detector.num_workers": 0, "detector.opts.SOLVER.MAX_ITER": 2, "detector.opts.SOLVER.IMS_PER_BATCH": 1,
    "detector.opts.SOLVER.REFERENCE_WORLD_SIZE": 0,  # 8 would make it 8x the iterations (scaling: test_detector.py)
    "detector.pretrained.R50": "none", "detector.pretrained.R101": "none", "detector.pretrained.X101": "none",
}
INPUT_OPTS = {"MIN_SIZE_TRAIN": [64], "MAX_SIZE_TRAIN": 64, "MIN_SIZE_TEST": 64, "MAX_SIZE_TEST": 64}
METRIC_KEYS = {f"{t}_{n}" for t in ("box", "mask") for n in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1",
                                                               "AR10", "AR100", "ARs", "ARm", "ARl")}


# Each stage's path arguments, as dvc.yaml passes them (relative to the work dir, the repository root there)
PREPARE = ["--out", "data/prepared", "--metrics", "metrics/prepare.json"]
TRAIN_LABELER = ["--labeler", LABELER, "--train-boxes", "data/prepared/train_boxes.json", "--val-gt",
                 "data/prepared/val_gt.json", "--checkpoint", f"models/labeler/{LABELER}/checkpoint.pt", "--metrics",
                 f"metrics/train_labeler/{LABELER}.json", "--plots", f"metrics/train_labeler/{LABELER}_plots",
                 "--work-dir", f".work/train_labeler/{LABELER}"]
PSEUDO_JSON = f"data/pseudo/{LABELER}/train_pseudo.json"
PSEUDO_LABEL = ["--labeler", LABELER, "--boxes", "data/prepared/train_boxes.json", "--checkpoint",
                f"models/labeler/{LABELER}/checkpoint.pt", "--images", "data/prepared/images", "--out", PSEUDO_JSON,
                "--metrics", f"metrics/pseudo_label/{LABELER}.json", "--work-dir", f".work/pseudo_label/{LABELER}"]


def cell(detector: str, masks: str) -> str:
    return f"{masks}__{detector}__s0"  # the profile's one seed (table.seeds: [0])


def train_detector_args(detector: str, masks: str) -> list[str]:
    c = cell(detector, masks)
    train = "data/prepared/train_gt.json" if masks == "gt" else PSEUDO_JSON
    return ["--detector", detector, "--masks", masks, "--train-json", train, "--images", "data/prepared/images",
            "--out", f"models/detector/{c}", "--live-dir", f"dvclive/train_detector/{c}", "--work-dir",
            f".work/train_detector/{c}"]


def evaluate_args(detector: str, masks: str) -> list[str]:
    c = cell(detector, masks)
    return ["--model", f"models/detector/{c}", "--val-gt", "data/prepared/val_gt.json", "--predictions",
            f"data/predictions/{c}.json", "--metrics", f"metrics/detector/{c}.json", "--work-dir", f".work/evaluate/{c}"]


def mae_state_dict(depth: int = 12, dim: int = 768, patch: int = 16, grid: int = 14) -> dict[str, torch.Tensor]:
    """Random weights in the key layout of MAE's released ``mae_pretrain_vit_base.pth`` ``["model"]`` (the
    encoder only: pos_embed for 224 px incl. the class token, no head, no decoder)."""
    g = torch.Generator().manual_seed(0)

    def rnd(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    sd = {"cls_token": rnd(1, 1, dim), "pos_embed": rnd(1, grid * grid + 1, dim),
          "patch_embed.proj.weight": rnd(dim, 3, patch, patch), "patch_embed.proj.bias": rnd(dim)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": torch.ones(dim), b + "norm1.bias": rnd(dim),
                   b + "attn.qkv.weight": rnd(3 * dim, dim), b + "attn.qkv.bias": rnd(3 * dim),
                   b + "attn.proj.weight": rnd(dim, dim), b + "attn.proj.bias": rnd(dim),
                   b + "norm2.weight": torch.ones(dim), b + "norm2.bias": rnd(dim),
                   b + "mlp.fc1.weight": rnd(4 * dim, dim), b + "mlp.fc1.bias": rnd(4 * dim),
                   b + "mlp.fc2.weight": rnd(dim, 4 * dim), b + "mlp.fc2.bias": rnd(dim)})
    sd.update({"norm.weight": torch.ones(dim), "norm.bias": rnd(dim)})
    return sd


def write_coco_set(root: Path) -> dict[str, str]:
    """Train/val COCO JSONs + image folders (2 images each) with polygon and RLE masks; the data.coco params."""
    rng = np.random.default_rng(0)
    out = {}
    for split, objects in OBJECTS.items():
        images_dir = root / f"{split}2017"
        images_dir.mkdir(parents=True)
        coco: dict[str, Any] = {"images": [], "annotations": [],
                                "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "blob"}]}
        for image_id in sorted({o[0] for o in objects}):
            pixels = rng.integers(0, 80, (SIZE, SIZE, 3), dtype=np.uint8)
            for ann_id, (img, cat, x, y, w, h, kind) in enumerate(objects, start=1):
                if img != image_id:
                    continue
                m = np.zeros((SIZE, SIZE), np.uint8)
                m[y + 2:y + h - 2, x + 2:x + w - 2] = 1
                pixels[m.astype(bool)] = (200, 60 * cat, 40)
                if kind == "polygon":
                    seg: Any = [[x + 2, y + 2, x + w - 2, y + 2, x + w - 2, y + h - 2, x + 2, y + h - 2]]
                else:
                    rle = mask_utils.encode(np.asfortranarray(m))
                    seg = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
                coco["annotations"].append({"id": image_id * 10 + ann_id, "image_id": image_id, "category_id": cat,
                                            "bbox": [x, y, w, h], "area": float(m.sum()), "iscrowd": 0,
                                            "segmentation": seg})
            name = f"{image_id:012d}.jpg"
            Image.fromarray(pixels).save(images_dir / name, quality=95)
            coco["images"].append({"id": image_id, "file_name": name, "width": SIZE, "height": SIZE})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(coco))
        out[f"{split}_json"] = str(root / "annotations" / f"instances_{split}2017.json")
        out[f"{split}_images"] = str(images_dir)
    return out


def _set(params: dict[str, Any], dotted: str, value: Any) -> None:
    """Override an *existing* key (a key the test invented would be rejected or ignored by the stages)."""
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    assert last in node, f"{dotted}: not in the merged paper params"
    node[last] = value


def paper_params(work: Path, coco: dict[str, str], profile: Path = REPO / "profiles" / "paper.yaml") -> Path:
    """params.yaml with the paper profile applied (as `python -m mal profile paper`), sized for the test."""
    path = work / "params.yaml"
    shutil.copyfile(REPO / "params.yaml", path)
    apply_profile(profile, path)
    params = yaml.safe_load(path.read_text())
    for key, value in SMALL.items():
        _set(params, key, value)
    _set(params, "data.coco", coco)
    params["detector"]["opts"]["INPUT"] = INPUT_OPTS  # detectron2 keys: the input size only
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


class _Warnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def paper_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every stage of the paper profile once, in a work dir holding params.yaml, weights/ and all outputs."""
    work = tmp_path_factory.mktemp("paper")
    coco = write_coco_set(work / "datasets" / "coco")
    params_file = paper_params(work, coco)
    params = yaml.safe_load(params_file.read_text())
    mae = work / params["labeler"]["models"][LABELER]["pretrained"]  # weights/mae_pretrain_vit_base.pth
    mae.parent.mkdir(parents=True)
    torch.save({"model": mae_state_dict()}, mae)
    seconds: dict[str, float] = {}
    warnings = _Warnings()
    logging.getLogger("mal.labeler.encoder").addHandler(warnings)
    p = ["--params", str(params_file)]
    runs = [("prepare", PREPARE), ("train_labeler", TRAIN_LABELER), ("pseudo_label", PSEUDO_LABEL)]
    for det in DETECTORS:
        runs += [("train_detector", train_detector_args(det, LABELER)), ("evaluate", evaluate_args(det, LABELER))]
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)  # the params' paths are relative to the repository root, as under DVC
        try:
            for name, args in runs:
                t0 = time.perf_counter()
                assert load_stage(name).main([*args, *p]) == 0
                seconds[f"{name} {' '.join(args[:2])}".strip()] = round(time.perf_counter() - t0, 1)
        finally:
            logging.getLogger("mal.labeler.encoder").removeHandler(warnings)
    print("\npaper profile smoke, seconds per stage:", json.dumps(seconds, indent=1))
    yield {"work": work, "params": params, "params_file": params_file, "seconds": seconds,
           "encoder_warnings": warnings.messages, "mae": mae}


def test_profile_keys_exist_in_params() -> None:
    """Every key the paper profile sets exists in params.yaml (a rename in one file alone would merge into a
    new key the stages never read), except the open name maps ``*.models`` and ``data.coco``'s values."""
    def walk(over: dict[str, Any], base: dict[str, Any], where: str) -> list[str]:
        bad = []
        for key, value in over.items():
            if key not in base:
                bad.append(f"{where}{key}")
            elif isinstance(value, dict) and isinstance(base[key], dict) and key != "models":
                bad += walk(value, base[key], f"{where}{key}.")
        return bad

    base = yaml.safe_load((REPO / "params.yaml").read_text())
    assert walk(yaml.safe_load((REPO / "profiles" / "paper.yaml").read_text()), base, "") == []
    merged = merge(base, yaml.safe_load((REPO / "profiles" / "paper.yaml").read_text()))
    assert merged["table"]["labelers"][0] == LABELER and merged["table"]["detectors"] == DETECTORS


def test_mae_file_loads_with_no_missing_encoder_keys(tmp_path: Path) -> None:
    """timm's ViT checkpoint_filter_fn reads MAE's {"model": ...} layout and resamples the 224 px
    pos_embed (14 x 14 + cls) to 512 px (32 x 32 + cls)."""
    import timm

    from mal.common.timm_weights import load_local_weights

    path = tmp_path / "mae_pretrain_vit_base.pth"
    sd = mae_state_dict()
    torch.save({"model": sd}, path)
    model = timm.create_model("vit_base_patch16_224.mae", pretrained=False, num_classes=0, img_size=512)
    missing, unexpected = load_local_weights(model, path)
    assert missing == [] and unexpected == []
    assert model.pos_embed.shape == (1, 32 * 32 + 1, 768)
    assert torch.equal(model.blocks[11].attn.qkv.weight, sd["blocks.11.attn.qkv.weight"])
    assert torch.equal(model.pos_embed[0, 0], sd["pos_embed"][0, 0])  # the class token's embedding is kept


@pytest.mark.slow
def test_labeler_trains_from_the_mae_file(paper_run: dict[str, Any]) -> None:
    work = paper_run["work"]
    assert paper_run["encoder_warnings"] == []  # no missing / unexpected encoder keys were logged
    metrics = json.loads((work / "metrics" / "train_labeler" / f"{LABELER}.json").read_text())
    assert metrics["steps"] == 1 and metrics["train_boxes"] == 1
    ckpt = torch.load(work / "models" / "labeler" / LABELER / "checkpoint.pt", map_location="cpu",
                      weights_only=True)
    assert ckpt["cfg"]["crop_size"] == 512 and ckpt["cfg"]["encoder"] == "vit_base_patch16_224.mae"
    assert ckpt["mask_threshold"] == pytest.approx(0.1)  # the paper's labelling threshold


@pytest.mark.slow
def test_pseudo_labels_cover_every_train_box(paper_run: dict[str, Any]) -> None:
    pseudo = json.loads((paper_run["work"] / PSEUDO_JSON).read_text())
    assert len(pseudo["annotations"]) == len(OBJECTS["train"])
    assert all(isinstance(a["segmentation"], dict) for a in pseudo["annotations"])  # RLE


@pytest.mark.slow
@pytest.mark.parametrize("detector", DETECTORS)
def test_detector_trains_and_is_evaluated(paper_run: dict[str, Any], detector: str) -> None:
    work, c = paper_run["work"], cell(detector, LABELER)
    info = json.loads((work / "models" / "detector" / c / "train_info.json").read_text())
    assert (info["ims_per_batch"], info["iterations"], info["world_size"]) == (1, 2, 1)
    cfg = yaml.safe_load((work / "models" / "detector" / c / "config.yaml").read_text())
    assert cfg["MODEL"]["WEIGHTS"] == "" and cfg["INPUT"]["MIN_SIZE_TEST"] == 64
    assert cfg["SOLVER"]["BASE_LR"] == 0.02 and cfg["SOLVER"]["LR_SCHEDULER_NAME"] == "WarmupMultiStepLR"  # zoo's
    metrics = json.loads((work / "metrics" / "detector" / f"{c}.json").read_text())
    assert METRIC_KEYS <= set(metrics) and metrics["num_val_images"] == 2


@pytest.mark.slow
@pytest.mark.parametrize(("section", "old", "stage_name", "args"), [
    ("labeler.train", "epochs", "train_labeler", TRAIN_LABELER),
    ("pseudo_label", "batch_size", "pseudo_label", PSEUDO_LABEL),
    ("detector", "num_workers", "train_detector", train_detector_args(DETECTORS[0], "gt")),
    ("evaluate", "max_dets", "evaluate", evaluate_args(DETECTORS[0], LABELER)),
    ("data", "min_train_box_area", "prepare", PREPARE),
])
def test_a_key_renamed_in_the_profile_fails_the_stage(paper_run: dict[str, Any], tmp_path: Path, section: str,
                                                      old: str, stage_name: str, args: list[str]) -> None:
    profile = yaml.safe_load((REPO / "profiles" / "paper.yaml").read_text())
    node = profile
    for key in section.split("."):
        node = node.setdefault(key, {})
    node[f"{old}_renamed"] = node.pop(old, 1)
    (tmp_path / "paper.yaml").write_text(yaml.safe_dump(profile))
    # switching to the profile is refused, naming the key, and params.yaml is left as it was
    shutil.copyfile(REPO / "params.yaml", tmp_path / "params.yaml")
    with pytest.raises(ValueError, match=rf"{section}.{old}_renamed: unknown key"):
        apply_profile(tmp_path / "paper.yaml", tmp_path / "params.yaml")
    assert (tmp_path / "params.yaml").read_text() == (REPO / "params.yaml").read_text()
    # a params file merged by hand with the renamed key stops the stage before any work, naming the key
    params = merge(yaml.safe_load(paper_params(tmp_path, paper_run["params"]["data"]["coco"]).read_text()), profile)
    params_file = tmp_path / "merged.yaml"
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(paper_run["work"])
        with pytest.raises(ValueError, match=rf"{old}_renamed: unknown key"):
            load_stage(stage_name).main([*args, "--params", str(params_file)])
