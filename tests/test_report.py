"""Stage `paper_table`: retention arithmetic, files written, missing cells are loud."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mal.report import build_rows, write_report


def _metrics(root: Path, source: str, det: str, mask_ap: float) -> None:
    path = root / "detector" / f"{source}__{det}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"mask_AP": mask_ap, "mask_AP50": 2 * mask_ap, "mask_AP75": mask_ap / 2,
                                "box_AP": mask_ap + 1}))


def _params(m: Path, tmp_path: Path) -> dict:
    """The params keys the table reads: where evaluate and mask_quality wrote their metrics."""
    return {"table": {"labelers": ["lab"], "detectors": ["det_a", "det_b"], "metrics_dir": str(m),
                      "out_dir": str(tmp_path / "reports"), "title": "T"},
            "evaluate": {"metrics_dir": str(m / "detector")},
            "mask_quality": {"metrics": str(m / "mask_quality" / "{labeler}.json")}}


def _setup(tmp_path: Path) -> Path:
    m = tmp_path / "metrics"
    _metrics(m, "gt", "det_a", 40.0)
    _metrics(m, "lab", "det_a", 30.0)
    _metrics(m, "gt", "det_b", 50.0)
    _metrics(m, "lab", "det_b", 45.0)
    (m / "mask_quality").mkdir()
    (m / "mask_quality" / "lab.json").write_text(json.dumps({"miou": 0.81}))
    return m


def test_rows_and_retention(tmp_path):
    rows = build_rows(_params(_setup(tmp_path), tmp_path))
    assert [(r["detector"], r["masks"]) for r in rows] == [
        ("det_a", "GT (human)"), ("det_a", "MAL lab"), ("det_b", "GT (human)"), ("det_b", "MAL lab")]
    assert rows[1]["retention_pct"] == pytest.approx(75.0)
    assert rows[3]["retention_pct"] == pytest.approx(90.0)
    assert rows[3]["pseudo_mIoU"] == 0.81


def test_report_writes_md_csv_plot_and_summary(tmp_path):
    m = _setup(tmp_path)
    write_report(_params(m, tmp_path))
    md = (tmp_path / "reports" / "paper_table.md").read_text()
    assert "| det_b | MAL lab | 45.0 | 90.0 | 22.5 | 46.0 | 90.0 | 0.810 |" in md
    assert (tmp_path / "reports" / "paper_table.csv").read_text().count("\n") == 5
    assert (tmp_path / "reports" / "retention.png").stat().st_size > 1000
    summary = json.loads((m / "paper_table.json").read_text())
    assert summary["det_a.lab.retention_pct"] == pytest.approx(75.0)


def test_missing_cell_is_named(tmp_path):
    m = _setup(tmp_path)
    (m / "detector" / "lab__det_b.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"lab__det_b.json: metrics file missing"):
        build_rows(_params(m, tmp_path))
