"""Stage script stages/pseudo_label.py on the tiny shapes set with a tiny random labeler."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from mal.common.images import image_path
from mal.labeler.model import checkpoint_mask_threshold
from tests._pseudo_fixtures import tiny_checkpoint
from tests.conftest import load_stage

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
    )
    cfg["device"] = "cpu"
    data = {**params["data"], "out_dir": str(shapes_dir)}  # a built-in set: file_names relative to out_dir
    timings = tmp_path / "timings"
    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump({"pseudo_label": cfg, "data": data, "timings_dir": str(timings)})
    )
    mod = load_stage("pseudo_label")
    assert mod.main(["--labeler", "tiny", "--params", str(tmp_path / "params.yaml")]) == 0
    out = json.loads((tmp_path / "pseudo" / "tiny" / "train_pseudo.json").read_text())
    src = json.loads((shapes_dir / "train_boxes.json").read_text())
    assert [a["id"] for a in out["annotations"]] == [a["id"] for a in src["annotations"]]
    # file_names stay relative to the configured image root: no machine-specific path in a DVC output.
    assert [im["file_name"] for im in out["images"]] == [im["file_name"] for im in src["images"]]
    assert all(image_path(shapes_dir / "_", im, shapes_dir).is_file() for im in out["images"])
    assert not any("seconds" in k for k in json.loads((tmp_path / "metrics" / "tiny.json").read_text()))
    assert json.loads((timings / "pseudo_label" / "tiny.json").read_text())["seconds"] > 0
    m = json.loads((tmp_path / "metrics" / "tiny.json").read_text())
    assert m["boxes_in"] == m["masks_out"] == len(src["annotations"]) and m["skipped"] == 0
    assert cfg["threshold"] is None  # params.yaml: the threshold the checkpoint records
    assert m["labeler"] == "tiny" and m["options"]["threshold"] == checkpoint_mask_threshold(tiny_checkpoint())
    assert (tmp_path / "work" / "tiny").is_dir()
    assert mod.main(["--labeler", "tiny", "--params", str(tmp_path / "params.yaml")]) == 0  # re-run: reuses
    assert json.loads((timings / "pseudo_label" / "tiny.json").read_text())["shards_reused"] == 1
    assert "shards_reused" not in json.loads((tmp_path / "metrics" / "tiny.json").read_text())  # not a result


def test_shard_processes_label_concurrently_with_the_same_output(shapes_dir: Path, tmp_path: Path) -> None:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    mod = load_stage("pseudo_label")
    outs = {}
    for procs in (1, 2):  # 1: the shards in this process; 2: two child processes, then the merge here
        run = tmp_path / f"p{procs}"
        cfg = {**params["pseudo_label"], "boxes_json": str(shapes_dir / "train_boxes.json"),
               "checkpoint": str(tiny_checkpoint()), "out_json": str(run / "{labeler}.json"),
               "metrics": str(run / "m.json"), "shard_dir": str(run / "work"), "device": "cpu",
               "num_shards": 3, "shard_processes": procs}
        data = {**params["data"], "out_dir": str(shapes_dir)}
        (run / "params.yaml").parent.mkdir(parents=True)
        (run / "params.yaml").write_text(yaml.safe_dump({"pseudo_label": cfg, "data": data,
                                                         "timings_dir": str(run / "t")}))
        assert mod.main(["--labeler", "tiny", "--params", str(run / "params.yaml")]) == 0
        outs[procs] = ((run / "tiny.json").read_bytes(), (run / "m.json").read_bytes())
        timings = json.loads((run / "t" / "pseudo_label" / "tiny.json").read_text())
        assert (timings["shards_run"], timings["shards_reused"]) == ((3, 0) if procs == 1 else (0, 3))
    assert outs[1] == outs[2]
    assert mod.shard_processes({"shard_processes": 0}, torch.device("cpu"), 3) == 1  # auto: one per GPU (cuda)
    assert mod.shard_processes({"shard_processes": 8}, torch.device("cpu"), 3) == 3
