"""README's results block and docs/pseudo_labels.md's quality block are rendered from reports/ and metrics/: the
committed docs agree with the committed metrics, and a figure that differs (edited in README, or changed in
metrics/) fails the check."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from mal.report.readme import END, markers
from tests.conftest import REPO


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_render_readme", REPO / "scripts" / "render_readme.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _block(text: str, name: str = "results") -> str:
    begin, end = markers(name)
    return text.split(begin, 1)[1].split(end, 1)[0]


def _run_copy(tmp_path: Path) -> Path:
    """dvc.yaml, params.yaml, README and the files the block reads, copied to ``tmp_path``."""
    (tmp_path / "docs").mkdir()
    for name in ("dvc.yaml", "params.yaml", "README.md", "docs/pseudo_labels.md"):
        shutil.copy(REPO / name, tmp_path / name)
    shutil.copytree(REPO / "metrics", tmp_path / "metrics")
    (tmp_path / "reports").mkdir()
    shutil.copy(REPO / "reports" / "paper_table.json", tmp_path / "reports" / "paper_table.json")
    return tmp_path


def test_committed_readme_matches_the_committed_metrics(capsys: pytest.CaptureFixture[str]) -> None:
    assert _script().main(["--check"]) == 0, capsys.readouterr().out
    block = _block((REPO / "README.md").read_text())
    rows = json.loads((REPO / "reports" / "paper_table.json").read_text())["rows"]
    assert f"{rows[0]['mask_AP']:.1f} ± {rows[0]['mask_AP_sd']:.1f}" in block  # the table's first cell, say


def test_an_edited_readme_figure_fails_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    readme = tmp_path / "README.md"
    text = (REPO / "README.md").read_text()
    rows = json.loads((REPO / "reports" / "paper_table.json").read_text())["rows"]
    figure = f"{rows[1]['pseudo_mIoU']:.3f}"
    block = _block(text)
    assert figure in block
    readme.write_text(text.replace(block, block.replace(figure, "0.999", 1)))
    assert _script().main(["--check", "--readme", str(readme)]) == 1
    out = capsys.readouterr()
    assert "-" in out.out and "0.999" in out.out and "figures differ from reports/ and metrics/" in out.err
    assert _script().main(["--readme", str(readme)]) == 0  # rewrite: the figure from the metrics again
    assert readme.read_text() == text


def test_a_changed_metric_fails_the_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _run_copy(tmp_path)
    quality = root / "metrics" / "mask_quality" / "vit_tiny.json"
    data = json.loads(quality.read_text())
    data["confidence"]["spearman"] = 0.123
    quality.write_text(json.dumps(data))
    assert _script().main(["--check", "--root", str(root)]) == 1
    out = capsys.readouterr()
    assert "+" in out.out and "README.md: figures differ" in out.err and "pseudo_labels.md: figures differ" in out.err
    assert _script().main(["--root", str(root)]) == 0
    assert "0.123" in _block((root / "README.md").read_text())
    assert "0.123" in _block((root / "docs" / "pseudo_labels.md").read_text(), "quality")
    assert _script().main(["--check", "--root", str(root)]) == 0


def test_missing_markers_and_files_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _run_copy(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace(END, ""))
    assert _script().main(["--check", "--root", str(root)]) == 2
    assert "expected one line" in capsys.readouterr().err
    shutil.copy(REPO / "README.md", readme)
    (root / "metrics" / "pseudo_label" / "vit_tiny.json").unlink()
    assert _script().main(["--check", "--root", str(root)]) == 2
    assert "metrics/pseudo_label/vit_tiny.json: missing" in capsys.readouterr().err
