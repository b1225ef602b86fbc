"""`python -m mal review` without a browser: order, self-containment, escaping, errors, missing run outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from mal.review.cli import main as review_main
from mal.review.labelled import ann_score, review_order
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
    (tmp_path / "reports" / "paper_table.json").unlink()
    (tmp_path / "data" / "prepared" / "pseudo.json").unlink()
    assert review_main(["--repro", "--params", str(params), "--strict"]) == 1
    assert "not found: data/prepared/pseudo.json" in capsys.readouterr().err
    assert review_main(["--repro", "--params", str(params)]) == 0  # default --out: beside paper_table's outs
    html = (tmp_path / "reports" / "review.html").read_text()
    assert "reports/paper_table.json (stage paper_table)" in html
    assert "metrics/detector/gt__det__s0.json (stage evaluate_gt@det-0)" in html  # the per-cell fallback
    assert "Training curves" in html and "Least-confident masks" not in html


BAD_MASKS = {  # what is wrong -> (segmentation of annotation id=5, or None to drop it; the line after "<file>: ")
    "no segmentation": (None, "annotation id=5: missing field 'segmentation'"),
    "bad RLE": ({"size": [64, 80], "counts": "zz{"},
                "annotation id=5: field 'segmentation': RLE counts do not decode (character 'z' at 0 is not an RLE "
                "character)"),
    "RLE size": ({"size": [1, 1], "counts": "0"},
                 "annotation id=5: field 'segmentation': RLE size [1, 1] does not match the image's [64, 80]"),
}


@pytest.mark.parametrize("gt", [False, True])
@pytest.mark.parametrize("bad", list(BAD_MASKS))
def test_unrenderable_mask_is_one_line_and_the_old_page_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bad: str, gt: bool
) -> None:
    """Annotation 5 (the 4th card, so not the first one drawn) is broken in the labelled or the GT file: exit 1,
    one line naming that file, the id and the field, and the page written before is untouched."""
    labelled, gt_json = write_labelled(tmp_path)
    out = tmp_path / "r.html"
    assert review_main(["--labelled", str(labelled), "--gt", str(gt_json), "--out", str(out)]) == 0
    before = out.read_bytes()
    broken = gt_json if gt else labelled
    coco = json.loads(broken.read_text())
    segmentation, message = BAD_MASKS[bad]
    ann = next(a for a in coco["annotations"] if a["id"] == 5)
    if segmentation is None:
        del ann["segmentation"]
    else:
        ann["segmentation"] = segmentation
    broken.write_text(json.dumps(coco))
    capsys.readouterr()
    assert review_main(["--labelled", str(labelled), "--gt", str(gt_json), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"mal review: error: {broken}: {message}"] and captured.out == ""
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt.json", "images", "labelled.json", "r.html"]


def test_unknown_image_and_resized_image(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labelled, _ = write_labelled(tmp_path)
    coco = json.loads(labelled.read_text())
    coco["annotations"][0]["image_id"] = 9
    coco["annotations"][2]["image_id"] = 9
    coco["annotations"][4]["bbox"] = ["x", 0, 1, 1]
    labelled.write_text(json.dumps(coco))
    out = tmp_path / "r.html"
    assert review_main(["--labelled", str(labelled), "--out", str(out)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"mal review: error: {labelled}: annotation id=1: field 'image_id' = 9 is not an image id "
        "(2 annotations like this: ids 1, 3)",
        f"mal review: error: {labelled}: annotation id=5: field 'bbox' ['x', 0, 1, 1] is not 4 finite numbers "
        "[x, y, w, h]",
    ]
    labelled, _ = write_labelled(tmp_path)
    coco = json.loads(labelled.read_text())
    coco["images"][0].update(width=40, height=32)  # the file is 80 x 64; the masks say 40 x 32
    for a in coco["annotations"]:
        a["segmentation"] = {"size": [32, 40], "counts": [32 * 40]} if a["image_id"] == 1 else a["segmentation"]
    labelled.write_text(json.dumps(coco))
    assert review_main(["--labelled", str(labelled), "--out", str(out)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        f"mal review: error: {labelled}: image id=1: field 'width'/'height' 40x32: image "
        f"{tmp_path / 'images' / 'img1.png'} is 80x64"]
    assert not out.exists()
