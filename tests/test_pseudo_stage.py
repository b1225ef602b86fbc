"""Stage script stages/pseudo_label.py on the tiny shapes set with a tiny random labeler."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import yaml

from mal.common.coco_io import image_path
from tests._pseudo_fixtures import tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]


def test_pseudo_label_stage_writes_output_and_metrics(shapes_dir: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = params["pseudo_label"]
    cfg.update(
        boxes_json=str(shapes_dir / "train_boxes.json"),
        checkpoint=str(tiny_checkpoint()),
        out_json=str(tmp_path / "pseudo" / "{labeler}" / "train_pseudo.json"),
        metrics=str(tmp_path / "metrics" / "{labeler}.json"),
        shard_dir=str(tmp_path / "work" / "{labeler}"),
        show_progress=False,
    )
    cfg["device"] = "cpu"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"pseudo_label": cfg}))
    spec = importlib.util.spec_from_file_location("stage_pl", REPO / "stages" / "pseudo_label.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--labeler", "tiny", "--params", str(tmp_path / "params.yaml")]) == 0
    out = json.loads((tmp_path / "pseudo" / "tiny" / "train_pseudo.json").read_text())
    src = json.loads((shapes_dir / "train_boxes.json").read_text())
    assert [a["id"] for a in out["annotations"]] == [a["id"] for a in src["annotations"]]
    # The output follows the project's image-path rule: file_name resolves from the output's own directory.
    out_dir = tmp_path / "pseudo" / "tiny"
    for im, src_im in zip(out["images"], src["images"], strict=True):
        resolved = image_path(out_dir / "train_pseudo.json", im).resolve()
        assert resolved == image_path(shapes_dir / "train_boxes.json", src_im).resolve()
    m = json.loads((tmp_path / "metrics" / "tiny.json").read_text())
    assert m["boxes_in"] == m["masks_out"] == len(src["annotations"]) and m["skipped"] == 0
    assert m["labeler"] == "tiny" and m["options"]["threshold"] == cfg["threshold"]
    assert (tmp_path / "work" / "tiny").is_dir()
    assert mod.main(["--labeler", "tiny", "--params", str(tmp_path / "params.yaml")]) == 0  # re-run: reuses
    assert json.loads((tmp_path / "metrics" / "tiny.json").read_text())["shards_reused"] == 1
