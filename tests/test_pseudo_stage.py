"""Stage script stages/pseudo_label.py on the tiny shapes set with a tiny random labeler."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from pydantic import ValidationError

from mal.common.images import image_path
from mal.config import ParamsError, load_params
from mal.config.load import format_errors, read_mapping
from mal.config.pseudo import PseudoLabelParams, RunPseudoLabelParams
from mal.labeler.model import checkpoint_mask_threshold
from mal.pseudo.shards import shard_processes
from tests._pseudo_fixtures import tiny_checkpoint
from tests.conftest import load_stage

REPO = Path(__file__).resolve().parents[1]


def _params(tmp: Path, **run: object) -> Path:
    """The repository's params.yaml with ``run.pseudo_label`` on the CPU (+ ``run``) at ``tmp/params.yaml``."""
    params = read_mapping(REPO / "params.yaml")
    params["run"]["pseudo_label"].update(device="cpu", **run)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    return tmp / "params.yaml"


def _argv(shapes_dir: Path, run: Path, params: Path) -> list[str]:
    return ["--labeler", "tiny", "--boxes", str(shapes_dir / "train_boxes.json"), "--checkpoint",
            str(tiny_checkpoint()), "--images", str(shapes_dir / "images"), "--out", str(run / "pseudo.json"),
            "--metrics", str(run / "m.json"), "--work-dir", str(run / "work"), "--params", str(params)]


def test_pseudo_label_stage_writes_output_and_metrics(shapes_dir: Path, tmp_path: Path) -> None:
    mod = load_stage("pseudo_label")
    argv = _argv(shapes_dir, tmp_path, _params(tmp_path))
    assert mod.main(argv) == 0
    out = json.loads((tmp_path / "pseudo.json").read_text())
    src = json.loads((shapes_dir / "train_boxes.json").read_text())
    assert [a["id"] for a in out["annotations"]] == [a["id"] for a in src["annotations"]]
    # file_names stay relative to the image root (the parent of --images): no machine-specific path in a DVC output
    assert [im["file_name"] for im in out["images"]] == [im["file_name"] for im in src["images"]]
    assert all(image_path(shapes_dir / "_", im, shapes_dir).is_file() for im in out["images"])
    m = json.loads((tmp_path / "m.json").read_text())
    assert not any("seconds" in k for k in m) and "shards_reused" not in m  # not results
    assert json.loads((tmp_path / "work" / "timings.json").read_text())["seconds"] > 0
    assert m["boxes_in"] == m["masks_out"] == len(src["annotations"]) and m["skipped"] == 0
    assert read_mapping(REPO / "params.yaml")["pseudo_label"]["threshold"] is None  # the checkpoint's
    assert m["labeler"] == "tiny" and m["options"]["threshold"] == checkpoint_mask_threshold(tiny_checkpoint())
    assert mod.main(argv) == 0  # re-run: reuses the shard
    assert json.loads((tmp_path / "work" / "timings.json").read_text())["shards_reused"] == 1


def test_shard_processes_label_concurrently_with_the_same_output(shapes_dir: Path, tmp_path: Path) -> None:
    """3 shards in 2 launched processes (no re-run of the stage script) == the same 3 shards in this process
    == one shard, byte for byte."""
    mod = load_stage("pseudo_label")
    outs = {}
    for shards, procs in ((1, 1), (3, 1), (3, 2)):
        run = tmp_path / f"s{shards}p{procs}"
        params = _params(run, num_shards=shards, shard_processes=procs, num_threads=1)
        assert mod.main(_argv(shapes_dir, run, params)) == 0
        outs[shards, procs] = ((run / "pseudo.json").read_bytes(), (run / "m.json").read_bytes())
        timings = json.loads((run / "work" / "timings.json").read_text())
        assert (timings["shards_run"], timings["shards_reused"]) == ((shards, 0) if procs == 1 else (0, 3))
    assert outs[1, 1] == outs[3, 1] == outs[3, 2]
    run = RunPseudoLabelParams(shard_processes=0)
    assert shard_processes(run, torch.device("cpu"), 3) == 1  # auto: one per GPU (plain cuda only)
    assert shard_processes(RunPseudoLabelParams(shard_processes=8), torch.device("cpu"), 3) == 3


def test_a_bad_option_names_its_key() -> None:
    with pytest.raises(ValidationError) as e:
        PseudoLabelParams.model_validate({"batch_size": "thirty-two"})
    assert format_errors(e.value, PseudoLabelParams, "x") == "x: batch_size: expected a valid integer, got 'thirty-two'"
    with pytest.raises(ParamsError) as e:  # the stage's params, read through the model
        load_params(REPO / "params.yaml", ["pseudo_label.batch_size=thirty-two"])
    assert str(e.value) == f"{REPO / 'params.yaml'}: pseudo_label.batch_size: expected a valid integer, got 'thirty-two'"
    for bad in ({"which": "both"}, {"threshold": 1.0}, {"expand": 0.5}, {"batch_size": 0}, {"device": 1}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            (RunPseudoLabelParams if "device" in bad else PseudoLabelParams).model_validate(bad)
    with pytest.raises(ValidationError, match="num_workers"):  # a run knob is not a pseudo_label key
        PseudoLabelParams.model_validate({"num_workers": 2})
