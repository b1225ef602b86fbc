"""A user's own COCO-format data is a DVC input: real `dvc` in a real git repo, tiny profile.

Editing one box re-runs `prepare` and everything downstream; changing an image's pixels re-runs every stage
that reads training images, even though the prepared JSONs are unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from mal.common.profiles import apply_profile
from tests.conftest import REPO, command_runner, copy_repo, tool_env


def _ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.mark.slow
def test_user_boxes_and_images_are_dvc_inputs(tmp_path: Path) -> None:
    from mal.datasets.shapes import build_shapes

    user = tmp_path / "my_data"  # the user's files, outside the repository, referenced in place
    build_shapes(user, num_train=4, num_val=2, image_size=96, min_objects=2, max_objects=3, seed=3)
    repo = copy_repo(tmp_path / "repo")
    env = tool_env(PYTHONPATH=str(repo))
    run = command_runner(repo, env)

    apply_profile(REPO / "profiles" / "tiny.yaml", repo / "params.yaml")
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["data"]["dataset"] = "coco"
    params["data"]["coco"] = {"train_json": str(user / "train_gt.json"), "train_images": str(user),
                              "val_json": str(user / "val_gt.json"), "val_images": str(user)}
    params["table"]["detectors"] = params["table"]["detectors"][:1]  # one detector is enough here
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    all_stages = set(run("dvc", "stage", "list", "--name-only").split())
    assert _ran(run("dvc", "repro")) == all_stages
    prepared = json.loads((repo / "data" / "prepared" / "train_gt.json").read_text())
    assert not any(Path(im["file_name"]).is_absolute() for im in prepared["images"])

    # One box edited in the user's JSON: prepare and everything downstream of it run again (all but the
    # pretrained-weights stage, which reads no data).
    coco = json.loads((user / "train_gt.json").read_text())
    coco["annotations"][0]["bbox"][2] -= 1.0
    (user / "train_gt.json").write_text(json.dumps(coco))
    assert _ran(run("dvc", "repro")) == all_stages - {"weights"}
    assert "Data and pipelines are up to date." in run("dvc", "status")

    # One image's pixels changed (same name and size, so the prepared JSONs are byte-identical): every stage
    # that reads training images is out of date, not only prepare.
    image = user / coco["images"][0]["file_name"]
    pixels = np.asarray(Image.open(image)).copy()
    Image.fromarray(255 - pixels).save(image)
    status = json.loads(run("dvc", "status", "--json"))
    for stage in ("prepare", "train_labeler@vit_tiny", "pseudo_label@vit_tiny", "mask_quality@vit_tiny"):
        assert stage in status, (stage, sorted(status))
    assert any(s.startswith("train_detector_gt@") for s in status)
