"""`python -m mal review --repro` takes every file from the run's dvc.yaml (DVC resolves the matrix): move a path
in dvc.yaml and the page follows it; a stage dvc.yaml lacks is a named gap; the table comes from the rows."""

from __future__ import annotations

import shutil
from pathlib import Path

from mal.report.layout import StageOutputs
from mal.review.repro import build_repro_page, default_out
from tests._review_fixtures import write_run


def test_stage_outputs_resolve_the_matrix(tmp_path: Path) -> None:
    write_run(tmp_path)
    outs = StageOutputs(tmp_path)
    assert outs.paths("mask_quality@lab", "metrics") == ["metrics/mq/lab.json"]
    assert outs.paths("train_labeler@lab", "plots") == ["metrics/tl/lab_plots/plots/metrics"]
    assert outs.paths("evaluate_gt@det-0", "metrics") == ["metrics/detector/gt__det__s0.json"]
    assert outs.arg("mask_quality@lab", "--gt") == "data/prepared/gt.json"
    assert outs.named("paper_table", "paper_table.json") == "reports/paper_table.json"
    assert outs.paths("no_such_stage") == [] and outs.arg("no_such_stage", "--gt") is None
    assert default_out(tmp_path / "params.yaml") == tmp_path / "reports" / "review.html"


def test_the_page_follows_a_path_moved_in_dvc_yaml(tmp_path: Path) -> None:
    params = write_run(tmp_path)
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("metrics/mq/", "elsewhere/quality/"))
    (tmp_path / "elsewhere").mkdir()
    shutil.move(tmp_path / "metrics" / "mq", tmp_path / "elsewhere" / "quality")
    html, missing = build_repro_page(params, 2)
    assert missing == [] and "Mask quality (pseudo masks vs GT, train boxes)" in html
    assert "MAL lab" in html and "75.0 [70.0, 80.0]" in html  # the table, rendered from paper_table.json's rows


def test_without_dvc_yaml_everything_is_a_named_gap(tmp_path: Path) -> None:
    params = write_run(tmp_path)
    (tmp_path / "dvc.yaml").unlink()
    html, missing = build_repro_page(params, 2)
    assert missing[0].endswith("dvc.yaml (the pipeline: no stage found)")
    assert "stage paper_table (not in dvc.yaml)" in missing and "stage mask_quality@lab (not in dvc.yaml)" in missing
    assert "No paper table and no detector metrics yet." in html
