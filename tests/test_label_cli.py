"""`python -m mal label`: output, skipped report, summary, overlays, strict mode, shards, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mal.__main__ import main as mal_main
from mal.pseudo.cli import main
from tests._pseudo_fixtures import ann, save_image, tiny_checkpoint, write_coco


def _data(tmp_path: Path) -> Path:
    arr = np.zeros((48, 64, 3), np.uint8)
    arr[10:30, 12:40] = (200, 120, 60)
    ims = [
        save_image(tmp_path / "data", 1, arr, size=(64, 48)),
        save_image(tmp_path / "data", 2, mode="L"),
        {"id": 3, "file_name": "imgs/missing.png", "width": 64, "height": 48},
    ]
    gt = [[12, 10, 40, 10, 40, 30, 12, 30]]
    anns = [
        ann(1, 1, [12, 10, 28, 20], segmentation=gt),
        ann(2, 1, [50, 40, 30, 30]),
        ann(3, 2, [5, 5, 0, 3]),
        ann(4, 3, [1, 1, 9, 9]),
        ann(5, 7, [1, 1, 9, 9]),
        ann(6, 2, [4, 4, 12, 12], iscrowd=1),
    ]
    return write_coco(tmp_path / "data", ims, anns)


def test_cli_labels_reports_and_visualizes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    boxes = _data(tmp_path)
    out = tmp_path / "res" / "masks.json"
    rc = mal_main(
        [
            "label",
            "--checkpoint",
            str(tiny_checkpoint()),
            "--images",
            str(boxes.parent),
            "--boxes",
            str(boxes),
            "--out",
            str(out),
            "--visualize",
            str(tmp_path / "viz"),
            "--quiet",
        ]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "boxes in: 6  masks out: 4  skipped: 2" in text
    assert "missing_image 1, unknown_image_id 1" in text and "zero_size 1" in text
    assert "check boxes in == masks out + skipped: ok" in text
    res = json.loads(out.read_text())
    assert [a["id"] for a in res["annotations"]] == [1, 2, 3, 6]
    assert res["annotations"][3]["iscrowd"] == 1
    rep = json.loads((tmp_path / "res" / "masks.json.skipped.json").read_text())
    assert {s["annotation_id"]: s["reason"] for s in rep["skipped_annotations"]} == {
        4: "missing_image",
        5: "unknown_image_id",
    }
    assert len(list((tmp_path / "viz").glob("*.png"))) == 2  # the two usable images


def test_cli_strict_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    boxes = _data(tmp_path)
    ck = str(tiny_checkpoint())
    assert (
        main(
            [
                "--checkpoint",
                ck,
                "--boxes",
                str(boxes),
                "--out",
                str(tmp_path / "o.json"),
                "--strict",
                "--quiet",
            ]
        )
        == 1
    )
    assert "annotation id=5 (image_id=7): unknown_image_id" in capsys.readouterr().err
    empty = tmp_path / "empty.json"
    empty.write_text("")
    assert main(["--checkpoint", ck, "--boxes", str(empty), "--out", str(tmp_path / "o.json")]) == 2
    assert "is empty" in capsys.readouterr().err
    assert main(["--checkpoint", ck, "--boxes", str(boxes)]) == 2
    assert main(["--checkpoint", str(tmp_path / "no.pt"), "--boxes", str(boxes), "--out", "x.json"]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert (
        main(
            [
                "--checkpoint",
                ck,
                "--boxes",
                str(boxes),
                "--images",
                str(tmp_path / "nowhere"),
                "--out",
                "x.json",
            ]
        )
        == 2
    )
    with pytest.raises(SystemExit) as e:
        mal_main(["label", "--help"])
    assert e.value.code == 0


def test_cli_shards_then_merge(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    boxes = _data(tmp_path)
    common = [
        "--checkpoint",
        str(tiny_checkpoint()),
        "--boxes",
        str(boxes),
        "--num-shards",
        "2",
        "--shard-dir",
        str(tmp_path / "shards"),
        "--quiet",
    ]
    out = tmp_path / "merged.json"
    assert main([*common, "--out", str(out), "--merge-only"]) == 2  # nothing labelled yet
    assert main([*common, "--shard-index", "0"]) == 0
    assert main([*common, "--shard-index", "1"]) == 0
    assert main([*common, "--out", str(out), "--merge-only"]) == 0
    assert "boxes in: 6  masks out: 4  skipped: 2" in capsys.readouterr().out
    assert [a["id"] for a in json.loads(out.read_text())["annotations"]] == [1, 2, 3, 6]


@pytest.mark.parametrize("recorded, flag, expected", [(0.37, None, 0.37), (0.37, "0.8", 0.8), (None, None, 0.5)])
def test_cli_threshold_defaults_to_the_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recorded: float | None, flag: str | None, expected: float
) -> None:
    """Without --threshold the CLI labels at the threshold the checkpoint records (the pipeline's), 0.5 if none."""
    import torch

    import mal.pseudo.shards as shards

    ckpt = tmp_path / "ckpt.pt"
    state = torch.load(tiny_checkpoint(), weights_only=True)
    if recorded is not None:
        state["mask_threshold"] = recorded
    torch.save(state, ckpt)
    used = []
    real = shards.resolve_options

    def spy(*args, **kwargs):  # the one place the threshold is resolved, for every front end
        out = real(*args, **kwargs)
        used.append(out.threshold)
        return out

    monkeypatch.setattr(shards, "resolve_options", spy)
    boxes = _data(tmp_path)
    argv = ["--checkpoint", str(ckpt), "--boxes", str(boxes), "--out", str(tmp_path / "o.json"), "--quiet"]
    assert main(argv + (["--threshold", flag] if flag else [])) == 0
    assert used == [expected]
