"""Stage `paper_table`: seeds, bootstrap intervals, verdicts, the title from the data, loud failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils

from mal.common.params import load_params
from mal.detection.coco_eval import evaluate_predictions, load_gt
from mal.report import build_table, write_report
from mal.report.bootstrap import ImageEval, draw_resamples, interval, seed_mean_draws

SIZE = 64


def _rle(x: int, y: int, w: int, h: int) -> dict:
    m = np.zeros((SIZE, SIZE), np.uint8, order="F")
    m[y:y + h, x:x + w] = 1
    rle = mask_utils.encode(m)
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


def _gt(num_images: int = 12) -> dict:
    """Square objects of varied sizes, 3 per image, with exact masks."""
    rng = np.random.default_rng(0)
    images, anns = [], []
    for i in range(num_images):
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": SIZE, "height": SIZE})
        for j in range(3):
            w = int(rng.integers(8, 16))
            x, y = 20 * j + 1, int(rng.integers(0, SIZE - w))
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": 1, "bbox": [x, y, w, w],
                         "area": w * w, "iscrowd": 0, "segmentation": _rle(x, y, w, w)})
    return {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}


def _predictions(gt: dict, shrink: int, seed: int) -> list[dict]:
    """The GT objects as detections, their masks shrunk by ``shrink`` px per side in a random half of them
    (a worse labeler's masks), with random scores."""
    rng = np.random.default_rng(seed)
    out = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        s = shrink if rng.random() < 0.5 else 0
        out.append({"image_id": a["image_id"], "category_id": 1, "bbox": [x, y, w, h], "score": float(rng.random()),
                    "segmentation": _rle(x + s, y + s, max(w - 2 * s, 1), max(h - 2 * s, 1))})
    return out


def _write_run(tmp_path: Path, shrinks: dict[str, int], seeds: list[int]) -> dict:
    """What evaluate, mask_quality and prepare would have written, and the params that point at it."""
    gt = _gt()
    (tmp_path / "val_gt.json").write_text(json.dumps(gt))
    m, preds = tmp_path / "metrics", tmp_path / "predictions"
    for d in (m / "detector", m / "mask_quality", preds):
        d.mkdir(parents=True, exist_ok=True)
    for masks, shrink in shrinks.items():
        for seed in seeds:
            p = _predictions(gt, shrink, seed)
            (preds / f"{masks}__det__s{seed}.json").write_text(json.dumps(p))
            (m / "detector" / f"{masks}__det__s{seed}.json").write_text(json.dumps(evaluate_predictions(gt, p)))
        if masks != "gt":
            (m / "mask_quality" / f"{masks}.json").write_text(json.dumps({"miou": 0.8}))
    (m / "prepare.json").write_text(json.dumps({"dataset": "squares", "train": {"images": 5, "boxes": 15},
                                                "val": {"images": 12, "boxes": 36}}))
    return {"table": {"labelers": [k for k in shrinks if k != "gt"], "detectors": ["det"], "seeds": seeds,
                      "metrics_dir": str(m), "out_dir": str(tmp_path / "reports"),
                      "bootstrap": {"resamples": 300, "seed": 0, "level": 0.95, "resample_seeds": True}},
            "data": {"metrics": str(m / "prepare.json")},
            "evaluate": {"val_json": str(tmp_path / "val_gt.json"), "metrics_dir": str(m / "detector"),
                         "predictions_dir": str(preds), "max_dets": 100},
            "mask_quality": {"metrics": str(m / "mask_quality" / "{labeler}.json")}}


def test_image_eval_matches_the_evaluate_stage_and_resamples_are_paired() -> None:
    gt = _gt()
    preds = _predictions(gt, 3, 0)
    full = evaluate_predictions(gt, preds)
    ev = ImageEval(load_gt(gt), preds)
    assert ev.ap() == pytest.approx(full["mask_AP"], abs=1e-4)
    twice = np.concatenate([np.arange(12), np.arange(12)])  # every image twice: the same AP
    assert ev.ap(twice) == pytest.approx(full["mask_AP"], abs=1e-4)
    draws = draw_resamples(12, 2, 50, seed=3)
    assert np.array_equal(draws.images, draw_resamples(12, 2, 50, seed=3).images)  # deterministic
    assert ImageEval(load_gt(gt), []).ap(draws.images[0]) == 0.0  # detects nothing


def test_interval_contains_zero_for_identical_detectors_and_excludes_it_for_a_shift() -> None:
    """The interval code's own 'it learns' check: no difference -> 0 inside; a real one -> 0 outside."""
    gt = load_gt(_gt())
    draws = draw_resamples(12, 2, 300, seed=0)
    same = [ImageEval(gt, _predictions(_gt(), 3, s)) for s in (0, 1)]
    diff_same = seed_mean_draws(same, draws) - seed_mean_draws(same, draws)
    lo, hi = interval(diff_same)
    assert lo <= 0 <= hi
    worse = [ImageEval(gt, _predictions(_gt(), 3, s)) for s in (0, 1)]
    better = [ImageEval(gt, _predictions(_gt(), 0, s)) for s in (0, 1)]
    lo, hi = interval(seed_mean_draws(better, draws) - seed_mean_draws(worse, draws))
    assert lo > 0, (lo, hi)


def test_table_rows_intervals_verdicts_and_title(tmp_path: Path) -> None:
    params = _write_run(tmp_path, {"gt": 0, "good": 0, "bad": 3, "bad_too": 3}, seeds=[0, 1])
    result = build_table(params)
    rows = {r["masks"]: r for r in result.rows}
    assert rows["GT (human)"]["seeds"] == 2 and rows["GT (human)"]["retention_pct"] == 100.0
    assert rows["GT (human)"]["retention_lo"] == rows["GT (human)"]["retention_hi"] == 100.0
    gt_ap = [json.loads((tmp_path / "metrics/detector" / f"gt__det__s{s}.json").read_text())["mask_AP"] for s in (0, 1)]
    assert rows["GT (human)"]["mask_AP"] == pytest.approx(np.mean(gt_ap))
    assert rows["GT (human)"]["mask_AP_sd"] == pytest.approx(np.std(gt_ap, ddof=1))
    bad = rows["MAL bad"]
    assert bad["retention_lo"] < bad["retention_pct"] < bad["retention_hi"] < 100.0  # worse masks, shown to be
    assert rows["MAL good"]["retention_lo"] <= 100.0 <= rows["MAL good"]["retention_hi"]  # GT masks again: no loss
    verdicts = {(c["a"], c["b"]): c["verdict"] for c in result.comparisons}
    assert verdicts[("good", "bad")].startswith("good − bad on det: +")
    assert "not distinguishable" in verdicts[("bad", "bad_too")]  # the same predictions (same seeds, same shrink)
    assert result.meta["title"] == ("squares: train 5 images / 15 boxes, val 12 images / 36 boxes; labelers good, bad, "
                                    "bad_too; detectors det; seeds 0, 1 (2 per cell)")
    assert result.meta["detectable_diff_AP"] > 0
    assert build_table(params) == result  # deterministic


def test_report_files(tmp_path: Path) -> None:
    params = _write_run(tmp_path, {"gt": 0, "lab": 3}, seeds=[0, 1])
    md = write_report(params)
    assert md == (tmp_path / "reports" / "paper_table.md").read_text()
    assert "| det | MAL lab | 2 |" in md and "bootstrap" in md
    header = (tmp_path / "reports" / "paper_table.csv").read_text().splitlines()[0]
    assert "retention_lo" in header and "mask_AP_sd" in header
    assert (tmp_path / "reports" / "retention.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "metrics" / "paper_table.json").read_text())
    assert summary["det.lab.retention_lo"] < summary["det.lab.retention_pct"] < summary["det.lab.retention_hi"]


def test_missing_cell_is_named(tmp_path: Path) -> None:
    params = _write_run(tmp_path, {"gt": 0, "lab": 3}, seeds=[0, 1])
    (tmp_path / "metrics" / "detector" / "lab__det__s1.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"lab__det__s1.json: metrics file missing"):
        build_table(params)


@pytest.mark.parametrize("seeds, message", [
    ([], "expected a non-empty list"), (None, "expected a non-empty list"), ("0, 1", "expected a non-empty list"),
    ([0, "1"], "must be an integer, got '1'"), ([0, 1.5], "must be an integer, got 1.5"),
    ([0, 1, 0], r"duplicate seeds \[0\]"), ([-1], ">= 0")])
def test_bad_seeds_stop_at_params_loading(tmp_path: Path, seeds, message) -> None:
    """Every stage loads params first, so a bad table.seeds stops the first stage, before any training."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"table": {"labelers": ["a"], "seeds": seeds}}))
    with pytest.raises(ValueError, match=rf"params.yaml: table.seeds: .*{message}"):
        load_params(path)


def test_a_gt_detector_that_detects_nothing_gives_no_retention(tmp_path: Path) -> None:
    """A 0-AP GT cell (a smoke run) leaves retention undefined (null), and every file is still written."""
    params = _write_run(tmp_path, {"gt": 0, "lab": 3}, seeds=[0])
    gt = json.loads((tmp_path / "val_gt.json").read_text())
    (tmp_path / "predictions" / "gt__det__s0.json").write_text("[]")
    (tmp_path / "metrics" / "detector" / "gt__det__s0.json").write_text(json.dumps(evaluate_predictions(gt, [])))
    write_report(params)
    rows = json.loads((tmp_path / "reports" / "paper_table.json").read_text())["rows"]
    assert rows[1]["retention_pct"] is None and rows[1]["mask_AP_sd"] is None  # one seed: no sd
    assert (tmp_path / "reports" / "retention.png").is_file()


@pytest.mark.parametrize("change, message", [
    ({"title": "fixed"}, r"params: table: unknown keys \['title'\]"),
    ({"bootstrap": {"resamples": 10, "seed": 0, "level": 0.95, "resample_seeds": True}}, "resamples must be >= 100"),
    ({"bootstrap": {"resamples": 1000, "seed": 0, "level": 95, "resample_seeds": True}}, r"level in \[0.5, 1\)"),
    ({"bootstrap": {"resamples": 1000, "seed": 0}}, r"table.bootstrap: missing keys \['level', 'resample_seeds'\]"),
])
def test_bad_table_params_are_named(tmp_path: Path, change: dict, message: str) -> None:
    params = _write_run(tmp_path, {"gt": 0, "lab": 3}, seeds=[0])
    params["table"].update(change)
    with pytest.raises(ValueError, match=message):
        build_table(params)
