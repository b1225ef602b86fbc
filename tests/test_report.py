"""Stage `paper_table`: seeds, bootstrap intervals, verdicts, the title from the data, the files, loud failures."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from pycocotools import mask as mask_utils

from mal.config import ParamsError, load_params
from mal.config.table import TableParams
from mal.detection.coco_eval import load_gt
from mal.detection.evaluation import evaluate_predictions
from mal.report import Table, TableInputs, build_table
from mal.report.bootstrap import ImageEval, draw_resamples, interval, seed_mean_draws
from tests.conftest import load_stage

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


def _write_run(tmp_path: Path, shrinks: dict[str, int], seeds: list[int]) -> tuple[TableParams, TableInputs]:
    """What evaluate, mask_quality and prepare would have written, the table params and the inputs' paths."""
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
    table = TableParams(labelers=[k for k in shrinks if k != "gt"], detectors=["det"], seeds=seeds,
                        bootstrap={"resamples": 300, "seed": 0, "level": 0.95, "resample_seeds": True})
    return table, TableInputs(m / "detector", preds, tmp_path / "val_gt.json", m / "prepare.json", m / "mask_quality")


OUTPUTS = [("--rows", "paper_table.json"), ("--csv", "paper_table.csv"), ("--comparisons", "comparisons.csv"),
           ("--markdown", "paper_table.md"), ("--plot", "retention.png")]


def _stage_args(inputs: TableInputs, tmp_path: Path) -> list[str]:
    return ["--detector-metrics", str(inputs.detector_metrics), "--predictions", str(inputs.predictions),
            "--val-json", str(inputs.val_json), "--prepare-metrics", str(inputs.prepare_metrics),
            "--mask-quality", str(inputs.mask_quality), "--metrics", str(tmp_path / "metrics" / "paper_table.json"),
            *(a for flag, name in OUTPUTS for a in (flag, str(tmp_path / "reports" / name)))]


def _run_stage(tmp_path: Path, table: TableParams, inputs: TableInputs) -> None:
    """``stages/paper_table.py`` on a params file holding ``table``."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"table": table.model_dump()}))
    assert load_stage("paper_table").main([*_stage_args(inputs, tmp_path), "--params", str(params)]) == 0


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
    table, inputs = _write_run(tmp_path, {"gt": 0, "good": 0, "bad": 3, "bad_too": 3}, seeds=[0, 1])
    result, _ = build_table(table, inputs)
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
    assert build_table(table, inputs)[0] == result  # deterministic


def test_report_files(tmp_path: Path) -> None:
    """The stage writes the rows once (JSON, CSV); the Markdown is rendered from them."""
    table, inputs = _write_run(tmp_path, {"gt": 0, "lab": 3}, seeds=[0, 1])
    _run_stage(tmp_path, table, inputs)
    reports = tmp_path / "reports"
    rows = Table.from_json(json.loads((reports / "paper_table.json").read_text()))
    assert rows == build_table(table, inputs)[0]
    md = (reports / "paper_table.md").read_text()
    assert md.startswith("## squares: train 5 images") and "bootstrap" in md
    assert re.search(r"^\| det +\| MAL lab +\| +2 \|", md, re.M)
    header = (reports / "paper_table.csv").read_text().splitlines()[0]
    assert "retention_lo" in header and "mask_AP_sd" in header
    assert (reports / "retention.png").stat().st_size > 1000
    summary = json.loads((tmp_path / "metrics" / "paper_table.json").read_text())
    assert summary["det.lab.retention_lo"] < summary["det.lab.retention_pct"] < summary["det.lab.retention_hi"]


def test_missing_cell_is_named(tmp_path: Path) -> None:
    table, inputs = _write_run(tmp_path, {"gt": 0, "lab": 3}, seeds=[0, 1])
    (tmp_path / "metrics" / "detector" / "lab__det__s1.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"lab__det__s1.json: metrics file missing"):
        build_table(table, inputs)


@pytest.mark.parametrize("seeds, message", [
    ([], "at least 1 item"), (None, "expected a valid list"), ("0, 1", "expected a valid list, got '0, 1'"),
    ([0, "1"], "expected a valid integer, got '1'"), ([0, 1.5], "expected a valid integer, got 1.5"),
    ([0, True], "expected a valid integer, got True"),
    ([0, 1, 0], r"duplicate seeds \[0\] \(each seed trains one detector per cell\), got \[0, 1, 0\]"),
    ([-1], r">= 0, got \[-1\]")])
def test_bad_seeds_stop_at_params_loading(tmp_path: Path, seeds, message) -> None:
    """Every stage loads params first, so a bad table.seeds stops the first stage, before any training."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"table": {"labelers": ["a"], "seeds": seeds}}))
    with pytest.raises(ParamsError, match=rf"params.yaml: table.seeds(\.\d)?: .*{message}"):
        load_params(path)


def test_a_gt_detector_that_detects_nothing_gives_no_retention(tmp_path: Path) -> None:
    """A 0-AP GT cell (a smoke run) leaves retention undefined (null), and every file is still written."""
    table, inputs = _write_run(tmp_path, {"gt": 0, "lab": 3}, seeds=[0])
    gt = json.loads((tmp_path / "val_gt.json").read_text())
    (tmp_path / "predictions" / "gt__det__s0.json").write_text("[]")
    (tmp_path / "metrics" / "detector" / "gt__det__s0.json").write_text(json.dumps(evaluate_predictions(gt, [])))
    _run_stage(tmp_path, table, inputs)
    rows = json.loads((tmp_path / "reports" / "paper_table.json").read_text())["rows"]
    assert rows[1]["retention_pct"] is None and rows[1]["mask_AP_sd"] is None  # one seed: no sd
    assert (tmp_path / "reports" / "retention.png").is_file()


@pytest.mark.parametrize("change, message", [
    ({"title": "fixed"}, r"table.title: unknown key"),
    ({"bootstrap": {"resamples": 10}}, "table.bootstrap.resamples: expected greater than or equal to 100, got 10"),
    ({"bootstrap": {"level": 95}}, "table.bootstrap.level: expected less than 1, got 95"),
    ({"bootstrap": {"resample_seeds": "yes"}}, "table.bootstrap.resample_seeds: expected a valid boolean"),
    ({"detectors": ["d", "d"]}, r"table.detectors: duplicate names \['d'\]"),
])
def test_bad_table_params_are_named(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump({"table": {"labelers": ["a"], **change}}))
    with pytest.raises(ParamsError, match=message):
        load_params(path)


def test_table_params_defaults_are_the_demo() -> None:
    """Every key has its default (a profile may give only ``bootstrap: {resamples: 200}``)."""
    table = TableParams.model_validate({"bootstrap": {"resamples": 200}})
    assert table.bootstrap.resamples == 200 and table.bootstrap.level == 0.95 and table.seeds == [0, 1]
    assert all(f.description for f in TableParams.model_fields.values())
