"""Stage ``paper_table``: the paper-style table (labeler x detector, with the GT-mask baseline per detector).

Reads the flat metrics JSONs written by ``evaluate`` (``metrics/detector/<source>__<detector>.json``) and
``mask_quality`` (``metrics/mask_quality/<labeler>.json``); writes markdown, CSV and a retention plot.
Retention = mask AP with pseudo masks / mask AP with GT masks, same detector and schedule.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from mal.common.coco_io import write_json_atomic
from mal.common.params import load_params

COLUMNS = ["detector", "masks", "mask_AP", "mask_AP50", "mask_AP75", "box_AP", "retention_pct", "pseudo_mIoU"]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metrics file missing (did its stage run?)")
    return json.loads(path.read_text())


def detector_metrics_path(metrics_dir: Path, source: str, detector: str) -> Path:
    return metrics_dir / "detector" / f"{source}__{detector}.json"


def build_rows(labelers: list[str], detectors: list[str], metrics_dir: Path) -> list[dict[str, Any]]:
    """One row per (detector, mask source); the GT row first, then one per labeler."""
    rows = []
    for det in detectors:
        gt = _read_json(detector_metrics_path(metrics_dir, "gt", det))
        rows.append({"detector": det, "masks": "GT (human)", "mask_AP": gt["mask_AP"], "mask_AP50": gt["mask_AP50"],
                     "mask_AP75": gt["mask_AP75"], "box_AP": gt["box_AP"], "retention_pct": 100.0,
                     "pseudo_mIoU": None})
        for lab in labelers:
            m = _read_json(detector_metrics_path(metrics_dir, lab, det))
            quality = _read_json(metrics_dir / "mask_quality" / f"{lab}.json")
            retention = 100.0 * m["mask_AP"] / gt["mask_AP"] if gt["mask_AP"] > 0 else float("nan")
            rows.append({"detector": det, "masks": f"MAL {lab}", "mask_AP": m["mask_AP"], "mask_AP50": m["mask_AP50"],
                         "mask_AP75": m["mask_AP75"], "box_AP": m["box_AP"], "retention_pct": retention,
                         "pseudo_mIoU": quality["miou"]})
    return rows


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    return f"{value:.1f}" if isinstance(value, float) and abs(value) >= 1.5 else (
        f"{value:.3f}" if isinstance(value, float) else str(value))


def to_markdown(rows: list[dict[str, Any]], title: str) -> str:
    header = ["Detector", "Masks", "mask AP", "AP50", "AP75", "box AP", "retention %", "pseudo-mask mIoU"]
    lines = [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt(r[c]) for c in COLUMNS) + " |")
    lines += ["", "Retention = mask AP (pseudo masks) / mask AP (GT masks), same detector and schedule. "
              "pseudo-mask mIoU: class-averaged IoU of the pseudo masks vs GT masks on the train boxes."]
    return "\n".join(lines) + "\n"


def to_csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def plot_retention(rows: list[dict[str, Any]], path: Path) -> None:
    """Bar chart of retention per (detector, labeler) cell, with the 100% line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [r for r in rows if r["masks"] != "GT (human)"]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.2 * len(cells) + 2), 3.2))
    ax.bar([f"{r['detector']}\n{r['masks']}" for r in cells], [r["retention_pct"] for r in cells], color="#4c72b0")
    ax.axhline(100, color="k", lw=0.8, ls="--")
    ax.set_ylabel("retention % (pseudo / GT mask AP)")
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python stages/paper_table.py", description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    table, out_dir = params["table"], Path(params["table"]["out_dir"])
    rows = build_rows(table["labelers"], table["detectors"], Path(table["metrics_dir"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_text(out_dir / "paper_table.md", to_markdown(rows, table["title"]))
    _write_text(out_dir / "paper_table.csv", to_csv(rows))
    plot_retention(rows, out_dir / "retention.png")
    summary = {f"{r['detector']}.{r['masks'].split()[-1]}.{k}": r[k] for r in rows
               for k in ("mask_AP", "retention_pct") if r[k] is not None}
    write_json_atomic(Path(table["metrics_dir"]) / "paper_table.json", summary, indent=2)
    print(to_markdown(rows, table["title"]))
    return 0
