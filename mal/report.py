"""The paper-style table (labeler x detector, with the GT-mask baseline per detector).

Reads the flat metrics JSONs written by ``evaluate`` (``<evaluate.metrics_dir>/<masks>__<detector>.json``)
and ``mask_quality`` (``mask_quality.metrics``); writes markdown, CSV and a retention plot.
Retention = mask AP with pseudo masks / mask AP with GT masks, same detector and schedule.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from mal.common.files import atomic_path, write_json_atomic, write_text_atomic
from mal.common.paths import detector_metrics, templated

COLUMNS = ["detector", "masks", "mask_AP", "mask_AP50", "mask_AP75", "box_AP", "retention_pct", "pseudo_mIoU"]


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metrics file missing (did its stage run?)")
    return json.loads(path.read_text())


def build_rows(params: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (detector, mask source) of ``params['table']``; the GT row first, then one per labeler."""
    rows = []
    labelers, detectors = params["table"]["labelers"], params["table"]["detectors"]
    for det in detectors:
        gt = _read_json(detector_metrics(params, "gt", det))
        rows.append({"detector": det, "masks": "GT (human)", "mask_AP": gt["mask_AP"], "mask_AP50": gt["mask_AP50"],
                     "mask_AP75": gt["mask_AP75"], "box_AP": gt["box_AP"], "retention_pct": 100.0,
                     "pseudo_mIoU": None})
        for lab in labelers:
            m = _read_json(detector_metrics(params, lab, det))
            quality = _read_json(templated(params["mask_quality"], ("metrics",), lab)["metrics"])
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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def write_report(params: dict[str, Any]) -> str:
    """Write ``<table.out_dir>/paper_table.{md,csv}``, ``retention.png`` and ``<table.metrics_dir>/paper_table.json``
    (mask AP and retention per cell, for ``dvc metrics diff``); returns the markdown table."""
    table, out_dir = params["table"], Path(params["table"]["out_dir"])
    rows = build_rows(params)
    out_dir.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows, table["title"])
    write_text_atomic(out_dir / "paper_table.md", markdown)
    write_text_atomic(out_dir / "paper_table.csv", to_csv(rows))
    plot_retention(rows, out_dir / "retention.png")
    summary = {f"{r['detector']}.{r['masks'].split()[-1]}.{k}": r[k] for r in rows
               for k in ("mask_AP", "retention_pct") if r[k] is not None}
    write_json_atomic(Path(table["metrics_dir"]) / "paper_table.json", summary, indent=2)
    return markdown
