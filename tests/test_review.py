"""`python -m mal review` without a browser: order, self-containment, escaping, errors, missing run outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mal.review.cli import main as review_main
from mal.review.labelled import ann_score, review_order
from mal.review.page import markdown_table
from tests._review_fixtures import CATEGORY, scores_in_order, write_labelled, write_run


def _scores(html: str) -> list[float | None]:
    return [float(s) if s else None for s in re.findall(r'data-score="([^"]*)"', html)]


def test_score_lookup_and_order() -> None:
    assert ann_score({"score": 0.25}) == 0.25
    assert ann_score({"mal": {"score": 0.5}}) == 0.5  # only the labeller's block
    assert ann_score({"score": True}) is None and ann_score({"score": float("nan")}) is None
    anns = [{"id": 1, "image_id": 1}, {"id": 2, "image_id": 1, "score": 0.7}, {"id": 3, "image_id": 1, "score": 0.1}]
    assert [a["id"] for a in review_order(anns)] == [3, 2, 1]


def test_labelled_page_is_self_contained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labelled, _ = write_labelled(tmp_path)
    skipped = [{"annotation_id": 9, "image_id": 7, "reason": "unknown_image_id", "detail": ""}] * 2
    Path(f"{labelled}.skipped.json").write_text(json.dumps({"skipped_annotations": skipped}))  # `mal label`'s report
    assert review_main(["--labelled", str(labelled), "--num", "10"]) == 0  # default --out beside the JSON
    out = tmp_path / "labelled.review.html"
    assert f"wrote {out} (6 cards" in capsys.readouterr().out
    html = out.read_text()
    assert _scores(html) == scores_in_order(10) and _scores(html)[-1] is None  # score-less last
    assert "<script" not in html and "http://" not in html and "https://" not in html
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) == 7 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert CATEGORY not in html and "&lt;b&gt;cell&lt;/b&gt;" in html
    assert "<td class=l>skipped boxes (&lt;json&gt;.skipped.json)</td><td>2</td>" in html


def test_num_zero_and_no_scores(tmp_path: Path) -> None:
    labelled, _ = write_labelled(tmp_path)
    coco = json.loads(labelled.read_text())
    for a in coco["annotations"]:
        a.pop("score", None)
        a["mal"].pop("score", None)
    labelled.write_text(json.dumps(coco))
    out = tmp_path / "r.html"
    assert review_main(["--labelled", str(labelled), "--out", str(out), "--num", "3"]) == 0
    html = out.read_text()
    assert _scores(html) == [None] * 3 and "No annotation has a score" in html
    assert re.findall(r'data-ann-id="(\d+)"', html) == ["1", "2", "3"]  # then (image id, annotation id)
    assert review_main(["--labelled", str(labelled), "--out", str(out), "--num", "0"]) == 0
    assert _scores(out.read_text()) == []


def test_missing_inputs_name_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labelled, _ = write_labelled(tmp_path)
    out = tmp_path / "r.html"
    assert review_main(["--labelled", str(tmp_path / "nope.json"), "--out", str(out)]) == 1
    assert f"{tmp_path / 'nope.json'}: labelled COCO file not found" in capsys.readouterr().err
    assert review_main(["--labelled", str(labelled), "--images", str(tmp_path / "elsewhere"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'elsewhere' / 'images' / 'img2.png'}: image not found" in err and "--images" in err
    assert review_main(["--labelled", str(labelled), "--gt", str(tmp_path / "gt_nope.json"), "--out", str(out)]) == 1
    assert "gt_nope.json: GT COCO file not found" in capsys.readouterr().err
    assert review_main(["--repro", "--params", str(tmp_path / "p.yaml"), "--out", str(out)]) == 1
    assert "p.yaml: params file not found" in capsys.readouterr().err
    assert not out.exists()
    with pytest.raises(SystemExit) as e:
        review_main(["--repro", "--images", str(tmp_path)])
    assert e.value.code == 2


def test_repro_page_lists_missing_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    params = write_run(tmp_path)
    (tmp_path / "reports" / "paper_table.md").unlink()
    (tmp_path / "data" / "prepared" / "pseudo.json").unlink()
    assert review_main(["--repro", "--params", str(params), "--strict"]) == 1
    assert "not found: data/prepared/pseudo.json" in capsys.readouterr().err
    assert review_main(["--repro", "--params", str(params)]) == 0  # default --out: <table.out_dir>/review.html
    html = (tmp_path / "reports" / "review.html").read_text()
    assert "reports/paper_table.md (stage report)" in html
    assert "metrics/detector/gt__det__s0.json (stage evaluate gt__det__s0)" in html  # the per-cell fallback
    assert "Training curves" in html and "Least-confident masks" not in html


def test_markdown_table() -> None:
    html = markdown_table("## T <1>\n\n| a | b |\n|---|---|\n| x | 1.5 |\n\nNote & more.\n")
    assert "<h3>T &lt;1&gt;</h3>" in html and "<td class=l>x</td>" in html and "Note &amp; more." in html


def test_malformed_mask_names_the_annotation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labelled, _ = write_labelled(tmp_path)
    coco = json.loads(labelled.read_text())
    coco["annotations"][3]["segmentation"] = {"size": [1, 1], "counts": "0"}  # id 4: the first card
    labelled.write_text(json.dumps(coco))
    assert review_main(["--labelled", str(labelled), "--out", str(tmp_path / "r.html")]) == 1
    assert f"{labelled}: annotation id=4 field 'segmentation': RLE size" in capsys.readouterr().err
