"""Tiny inputs for the review-page tests: a labelled COCO set with scores, and a fake `dvc repro` run folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from PIL import Image

from mal.common.masks import box_rle, encode_mask
from mal.report.render import markdown
from mal.report.table import Table

CATEGORY = "<b>cell</b>"  # markup in a name: the page must show it as text
# (annotation id, image id, score, source/reason): 6 boxes, one without a score, one box fallback
ANNS = [(1, 1, 0.9, "labeler"), (2, 1, 0.15, "labeler"), (3, 1, None, "labeler"),
        (4, 2, 0.0, "too_small"), (5, 2, 0.55, "labeler"), (6, 2, 0.35, "labeler")]
H, W = 64, 80


def _ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (((xx + 0.5 - cx) / rx) ** 2 + ((yy + 0.5 - cy) / ry) ** 2 <= 1).astype(np.uint8)


def write_labelled(root: Path) -> tuple[Path, Path]:
    """``root/images/*.png`` plus ``labelled.json`` (with scores) and ``gt.json``; returns the two JSON paths."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True, exist_ok=True)
    images = []
    for iid in (1, 2):
        pixels = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
        name = f"images/img{iid}.png"
        Image.fromarray(pixels).save(root / name)
        images.append({"id": iid, "file_name": name, "width": W, "height": H})
    labelled, gt = [], []
    for aid, iid, score, source in ANNS:
        cx, cy = 12.0 + 11 * aid, 20.0 + 4 * (aid % 3)
        box = [cx - 8, cy - 6, 16.0, 12.0]
        true = _ellipse(cx, cy, 8, 6)
        base = {"id": aid, "image_id": iid, "category_id": 1, "bbox": box, "iscrowd": 0}
        gt.append({**base, "segmentation": encode_mask(true), "area": int(true.sum())})
        if source == "labeler":
            seg, info = encode_mask(_ellipse(cx + 1, cy, 7, 6)), {"source": "labeler"}
        else:
            seg, info = box_rle(box, H, W), {"source": "box_fallback", "reason": source}
        if score is not None:
            info["score"] = score
        ann: dict[str, Any] = {**base, "segmentation": seg, "area": 0, "mal": info}
        if score is not None:
            ann["score"] = score
        labelled.append(ann)
    cats = [{"id": 1, "name": CATEGORY}]
    for name, anns in (("labelled.json", labelled), ("gt.json", gt)):
        (root / name).write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return root / "labelled.json", root / "gt.json"


def scores_in_order(num: int) -> list[float | None]:
    """What the page must show: ascending scores, score-less last, the first ``num``."""
    scored = sorted(s for _, _, s, _ in ANNS if s is not None)
    return ([*scored] + [None] * sum(s is None for _, _, s, _ in ANNS))[:num]


RUN_DVC_YAML = """stages:
  train_labeler:
    matrix:
      labeler: ${table.labelers}
    cmd: python stages/train_labeler.py --labeler ${item.labeler}
    plots:
      - metrics/tl/${item.labeler}_plots/plots/metrics: {cache: false}
  pseudo_label:
    matrix:
      labeler: ${table.labelers}
    cmd: python stages/pseudo_label.py --labeler ${item.labeler}
    outs: [data/prepared/pseudo.json]
    metrics:
      - metrics/pl/${item.labeler}.json: {cache: false}
  mask_quality:
    matrix:
      labeler: ${table.labelers}
    cmd: python stages/mask_quality.py --pseudo data/prepared/pseudo.json --gt data/prepared/gt.json
    metrics:
      - metrics/mq/${item.labeler}.json: {cache: false}
  evaluate_gt:
    matrix:
      detector: ${table.detectors}
      seed: ${table.seeds}
    cmd: python stages/evaluate.py
    metrics:
      - metrics/detector/gt__${item.detector}__s${item.seed}.json: {cache: false}
  paper_table:
    cmd: python stages/paper_table.py --out-dir reports
    outs:
      - reports/paper_table.md: {cache: false}
      - reports/paper_table.json: {cache: false}
"""


def write_run(root: Path, title: str = "tiny run") -> Path:
    """A fake finished run: params.yaml, dvc.yaml (the path layout the repro page reads) and every file it
    names; returns the params path."""
    lab, det = "lab", "det"
    write_labelled(root / "data" / "prepared")
    (root / "data" / "prepared" / "labelled.json").rename(root / "data" / "prepared" / "pseudo.json")
    params = {"data": {"dataset": "shapes"}, "table": {"labelers": [lab], "detectors": [det], "seeds": [0]},
              "labeler": {"models": {lab: {}}}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    (root / "dvc.yaml").write_text(RUN_DVC_YAML)
    tsv_dir = root / "metrics" / "tl" / f"{lab}_plots" / "plots" / "metrics"
    tsv_dir.mkdir(parents=True)
    for name, values in (("val_miou", [0.5, 0.7, 0.8]), ("train_loss", [1.0, 0.6, 0.4])):
        rows = "".join(f"{i}\t{v}\n" for i, v in enumerate(values))
        (tsv_dir / f"{name}.tsv").write_text(f"step\t{name}\n{rows}")
    sizes = {"miou": 0.8, "miou_small": 0.7, "miou_medium": 0.85, "miou_large": None, "num_instances": 6}
    quality = {**sizes, "per_class": {CATEGORY: {"miou": 0.8, "count": 6}},
               "baselines": {"box": {**sizes, "miou": 0.6, "per_class": {CATEGORY: {"miou": 0.6, "count": 6}}}},
               "confidence": {"spearman": 0.42, "bad_share": 0.2, "bad_share_in_lowest": 0.6, "ratio_vs_chance": 3.0}}
    _write_json(root / "metrics" / "mq" / f"{lab}.json", quality)
    _write_json(root / "metrics" / "pl" / f"{lab}.json", {"boxes_in": 6, "masks_out": 6, "box_fallback": 1})
    row = {"detector": det, "seeds": 2, "mask_AP": 40.0, "mask_AP_sd": 1.0, "mask_AP_lo": 37.0, "mask_AP_hi": 43.0,
           "mask_AP50": 70.0, "mask_AP75": 35.0, "box_AP": 42.0, "box_AP_sd": 1.0}
    rows = [{**row, "masks": "GT (human)", "retention_pct": 100.0, "retention_lo": None, "retention_hi": None,
             "pseudo_mIoU": None},
            {**row, "masks": f"MAL {lab}", "mask_AP": 30.0, "retention_pct": 75.0, "retention_lo": 70.0,
             "retention_hi": 80.0, "pseudo_mIoU": 0.8}]
    meta = {"title": title, "level": 0.95, "resamples": 100, "resample_seeds": True, "seeds": [0, 1],
            "val_images": 3, "val_instances": 6, "detectable_diff_AP": None, "detectable_diff_AP_max": None}
    (root / "reports").mkdir()
    (root / "reports" / "paper_table.md").write_text(markdown(Table(rows, [], meta)))
    _write_json(root / "reports" / "paper_table.json", {"meta": meta, "rows": rows, "comparisons": []})
    return root / "params.yaml"


def _write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
