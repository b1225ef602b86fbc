"""Stage `prepare`: dataset builders, their counts, determinism, and DVC caching of the stage."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from mal.common.coco_io import load_coco
from mal.common.files import write_json_atomic
from mal.config import load_params
from mal.config.data import DataParams
from mal.config.load import validate
from mal.datasets.prepare import prepare
from tests.conftest import REPO, copy_repo, tool_env


def _params(tmp_path: Path, dataset: str, **overrides) -> tuple[DataParams, Path]:
    """The repository's ``data`` params with another dataset / options, and a prepared folder in tmp_path."""
    data = load_params(REPO / "params.yaml").data.model_dump()
    data["dataset"] = dataset
    data.setdefault(dataset, {}).update(overrides)
    return validate(DataParams, data, "params: data"), tmp_path / "prepared"


def _prepare(params: tuple[DataParams, Path], metrics_path: Path) -> dict:
    """What the stage does: prepare, then write the metrics."""
    metrics = prepare(*params)
    write_json_atomic(metrics_path, metrics, indent=2)
    return metrics


def test_nuclei_counts_and_contiguous_split(tmp_path):
    metrics = _prepare(_params(tmp_path, "nuclei"), tmp_path / "prepare.json")
    # 35 slices with >= 3 nuclei (z19..z53); first 70% (24 slices, z19..z42) train, z43..z53 validate.
    assert (metrics["train"]["images"], metrics["train"]["boxes"]) == (24, 445)
    assert (metrics["val"]["images"], metrics["val"]["boxes"]) == (11, 140)
    assert metrics["train_z"] == [19, 42] and metrics["val_z"] == [43, 53]
    train, _ = load_coco(tmp_path / "prepared" / "train_gt.json", check_images="decode")
    boxes, _ = load_coco(tmp_path / "prepared" / "train_boxes.json")
    assert all("segmentation" not in a for a in boxes["annotations"])
    assert [a["bbox"] for a in boxes["annotations"]] == [a["bbox"] for a in train["annotations"]]
    val, _ = load_coco(tmp_path / "prepared" / "val_gt.json")
    assert not {i["z"] for i in train["images"]} & {i["z"] for i in val["images"]}
    assert json.loads((tmp_path / "prepare.json").read_text()) == metrics


def test_shapes_is_deterministic_and_valid(tmp_path):
    outs = []
    for run in ("a", "b"):
        _prepare(_params(tmp_path / run, "shapes", num_train=4, num_val=2, image_size=64), tmp_path / f"{run}.json")
        outs.append(tmp_path / run / "prepared")
    for rel in ["train_gt.json", "val_gt.json", "train_boxes.json", "images/train/00001.png", "images/val/00006.png"]:
        assert (outs[0] / rel).read_bytes() == (outs[1] / rel).read_bytes(), rel
    coco, report = load_coco(outs[0] / "train_gt.json", check_images="decode", require_masks=True)
    assert len(coco["images"]) == 4 and len(coco["annotations"]) >= 4 and not report.warnings
    _prepare(_params(tmp_path / "c", "shapes", num_train=4, num_val=2, image_size=64, seed=5), tmp_path / "c.json")
    assert (tmp_path / "c/prepared/train_gt.json").read_bytes() != (outs[0] / "train_gt.json").read_bytes()


def test_coco_dataset_is_referenced_and_validated(tmp_path, shapes_dir):
    params = _params(tmp_path, "coco", train_json=str(shapes_dir / "train_gt.json"), train_images=str(shapes_dir),
                     val_json=str(shapes_dir / "val_gt.json"), val_images=str(shapes_dir))
    metrics = _prepare(params, tmp_path / "m.json")
    src = json.loads((shapes_dir / "train_gt.json").read_text())
    assert metrics["train"]["boxes"] == len(src["annotations"])
    out = json.loads((tmp_path / "prepared" / "train_boxes.json").read_text())
    # referenced in place, not copied; file_names stay relative to the user's image folder (no absolute path)
    assert [im["file_name"] for im in out["images"]] == [im["file_name"] for im in src["images"]]
    assert [p.name for p in (tmp_path / "prepared" / "images").iterdir()] == ["REFERENCED.txt"]
    assert str(tmp_path) not in (tmp_path / "prepared" / "train_boxes.json").read_text()
    load_coco(tmp_path / "prepared" / "train_boxes.json", image_root=shapes_dir, check_images="exists")


def test_lvis_images_without_file_name_are_found_from_coco_url(tmp_path, shapes_dir):
    """LVIS v1 lists images by ``coco_url`` only, from COCO's train2017 and val2017 folders: prepare reads them
    from the COCO root as ``<split>/<name>`` (detectron2's LVIS loader does the same)."""
    import shutil

    root = tmp_path / "coco"
    lvis = {}
    for split, src_json in (("train", "train_gt.json"), ("val", "val_gt.json")):
        coco = json.loads((shapes_dir / src_json).read_text())
        folder = root / f"{split}2017"
        folder.mkdir(parents=True)
        for im in coco["images"]:
            shutil.copy(shapes_dir / im["file_name"], folder / Path(im["file_name"]).name)
            im["coco_url"] = f"http://images.example.org/{split}2017/{Path(im.pop('file_name')).name}"
            im.update(neg_category_ids=[], not_exhaustive_category_ids=[])
        for cat in coco["categories"]:
            cat["frequency"] = "f"
        lvis[split] = tmp_path / f"lvis_{split}.json"
        lvis[split].write_text(json.dumps(coco))
    params = _params(tmp_path, "coco", train_json=str(lvis["train"]), train_images=str(root),
                     val_json=str(lvis["val"]), val_images=str(root))
    _prepare(params, tmp_path / "m.json")
    val = json.loads((tmp_path / "prepared" / "val_gt.json").read_text())
    assert all(im["file_name"].startswith("val2017/") for im in val["images"])
    assert all("neg_category_ids" in im for im in val["images"])  # kept for the LVIS evaluation
    load_coco(tmp_path / "prepared" / "val_gt.json", image_root=root, check_images="exists")


def test_coco_dataset_paths_must_exist(tmp_path, shapes_dir):
    """The built-in placeholder (or a typo) for a user path is a clear error naming the key."""
    params = _params(tmp_path, "coco", train_json=str(shapes_dir / "train_gt.json"),
                     train_images=str(shapes_dir / "train_gt.json"), val_json=str(shapes_dir / "val_gt.json"),
                     val_images=str(shapes_dir))
    with pytest.raises(ValueError, match=r"data.coco.train_images = '.*train_gt.json' is not an existing folder"):
        _prepare(params, tmp_path / "m.json")


def test_coco_dataset_needs_paths(tmp_path):
    """params.yaml's built-in placeholders are not data: every unset key is named."""
    with pytest.raises(ValueError, match=r"data.coco.train_json, data.coco.train_images, data.coco.val_json"):
        _prepare(_params(tmp_path, "coco"), tmp_path / "m.json")


def test_unknown_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"params: data: dataset: expected 'nuclei', 'shapes' or 'coco', got 'lvis2'"):
        _params(tmp_path, "lvis2")


@pytest.mark.slow
def test_dvc_repro_prepare_then_noop(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    env = tool_env()
    run = lambda *cmd: subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, check=True)  # noqa: E731
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["dataset"] = "shapes"
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    first = run("dvc", "repro", "prepare")
    assert "Running stage 'prepare'" in first.stdout
    second = run("dvc", "repro", "prepare")
    assert "Running stage" not in second.stdout and "didn't change" in second.stdout
    assert "up to date" in run("dvc", "status", "prepare").stdout
    shown = run("dvc", "metrics", "show", "--json").stdout
    assert '"train.boxes"' in shown or '"boxes"' in shown
