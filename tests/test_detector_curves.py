"""The detector's training curves (dvclive, stages/train_detector.py) decompose total_loss for every architecture."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from tests.conftest import load_stage

REPO = Path(__file__).resolve().parents[1]


def _stage():
    return load_stage("train_detector")


def _curves(live_dir: Path) -> dict[str, dict[int, float]]:
    """``{key: {step: value}}`` from the dvclive ``train/*.tsv`` files."""
    out = {}
    for tsv in (live_dir / "plots" / "metrics" / "train").glob("*.tsv"):
        with tsv.open() as f:
            out[tsv.stem] = {int(r["step"]): float(r[tsv.stem]) for r in csv.DictReader(f, delimiter="\t")}
    return out


def _assert_parts_sum_to_total(curves: dict[str, dict[int, float]]) -> None:
    parts = [k for k in curves if k.startswith("loss_")]
    assert parts and curves["total_loss"]
    for step, total in curves["total_loss"].items():
        logged = sum(curves[k][step] for k in parts)
        assert math.isclose(logged, total, rel_tol=1e-4), f"step {step}: parts {logged} != total_loss {total}"


def test_cascade_stage_losses_are_logged(tmp_path: Path) -> None:
    rec = {"iteration": 0, "total_loss": 1.8, "lr": 0.01, "loss_rpn_cls": 0.1, "loss_rpn_loc": 0.2,
           "loss_mask": 0.6, **{f"loss_{k}_stage{s}": 0.1 + 0.1 * (k == "cls") for k in ("cls", "box_reg")
                                 for s in range(3)}}
    jsonl = tmp_path / "train_log.jsonl"
    jsonl.write_text(json.dumps(rec) + "\n")
    assert _stage().write_curves(jsonl, tmp_path / "live") == 1
    curves = _curves(tmp_path / "live")
    assert {"loss_cls_stage2", "loss_box_reg_stage0", "lr"} <= set(curves)
    _assert_parts_sum_to_total(curves)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mask_rcnn_R18_demo", "cascade_R18_demo"])
def test_trained_curves_add_up(name: str, shapes_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("detectron2")
    from mal.detection import detector as det
    from tests.test_detector import tiny_params

    train_json, work = shapes_dir / "train_gt.json", tmp_path / "work"
    params = tiny_params(max_iter=3)  # >= 3: a median of 3 values is not additive, a mean of 2 is
    params["train"]["checkpoint_period"] = 100
    cfg = det.build_cfg(name, train_json, work, params, image_root=shapes_dir)
    det.train(cfg, train_json, shapes_dir, work, num_threads=1)
    _stage().write_curves(work / "metrics.json", tmp_path / "live")
    _assert_parts_sum_to_total(_curves(tmp_path / "live"))
